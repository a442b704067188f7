/**
 * The planner's mechanisms beyond independent host failures, each against a closed form: failure domains and cluster
 * outages, checkpoint cost from size and bandwidth with spread, checkpoint tiers, partial recovery, a degraded
 * interconnect, burn-in and repeat offenders, manual handling in and out of working hours, loss-spike rollbacks.
 * Every scenario strips the other costs (saves, restarts) where they would blur the closed form.
 */
import { describe, expect, it } from "vitest";
import { expectedGoodput } from "../core/checkpoint-interval.js";
import { compilePlan } from "./compile.js";
import { planFrom, simulate } from "./test-helpers.js";

const HOUR = 3600;
const DAY = 86_400;

interface Parts {
  fleet?: Record<string, unknown>;
  checkpoint?: Record<string, unknown>;
  recovery?: Record<string, unknown>;
  workload?: Record<string, unknown>;
}

/** 64 nodes of 8 devices, no failures unless given, a year's window, free checkpoints and restarts. */
function plan(parts: Parts) {
  return planFrom({
    scenarios: [
      {
        name: "s",
        fleet: { device: "gpu", devices: 512, devices_per_node: 8, spare_nodes: 0, failures: [], ...parts.fleet },
        workload: parts.workload ?? { window: "365d" },
        checkpoint: parts.checkpoint ?? { interval: "1h", save: "0s" },
        recovery: { restart: "0s", ...parts.recovery },
      },
    ],
  });
}

const perEvent = (total: number, events: number) => total / events;

describe("failure domains and whole-cluster events", () => {
  const switchFailure = (spares: number) =>
    plan({
      fleet: {
        spare_nodes: spares,
        failures: [{ cause: "tor-switch", hosts: 16, per_domain_day: 0.05, detect: "10m", repair: "6h" }],
      },
    });

  it("a switch takes 16 hosts at once: the count follows the domain rate, each event waits for the repair", () => {
    const { summary } = simulate(switchFailure(0), { trials: 200, seed: 1 });
    // 4 domains x 0.05/day = 0.2 events/day of running time; each pauses the clock 10 min + 5 h 50 min.
    const lambda = 0.2 / DAY;
    const expected = (lambda * 365 * DAY) / (1 + lambda * 6 * HOUR);
    expect(Math.abs(summary.interruptions.mean - expected) / expected).toBeLessThan(0.03);
    // The last event of a window may be cut short by its end: within 0.5%.
    const waiting = perEvent(summary.timeS.waiting, summary.interruptions.mean);
    expect(Math.abs(waiting - (6 * HOUR - 10 * 60)) / (6 * HOUR - 10 * 60)).toBeLessThan(0.005);
  });

  it("16 spares absorb a 16-host event; 15 do not (the job needs all 16 back)", () => {
    // With 16 spares the job waits only when a second event comes within the 6 h repair (about 5% of events).
    const enough = simulate(switchFailure(16), { trials: 50, seed: 2 }).summary;
    expect(perEvent(enough.timeS.waiting, enough.interruptions.mean)).toBeLessThan(0.1 * 6 * HOUR);
    const short = simulate(switchFailure(15), { trials: 50, seed: 2 }).summary;
    expect(perEvent(short.timeS.waiting, short.interruptions.mean)).toBeGreaterThan(5.8 * HOUR);
  });

  it("a whole-cluster outage stops the job for its duration, whatever the spares", () => {
    const { summary } = simulate(
      plan({
        fleet: {
          spare_nodes: 64,
          failures: [{ cause: "power", hosts: "all", per_day: 0.02, detect: "5m", repair: "12h" }],
        },
      }),
      { trials: 300, seed: 3 },
    );
    const lambda = 0.02 / DAY;
    const expected = (lambda * 365 * DAY) / (1 + lambda * (12 * HOUR + 300));
    expect(Math.abs(summary.interruptions.mean - expected) / expected).toBeLessThan(0.05);
    const waiting = perEvent(summary.timeS.waiting, summary.interruptions.mean);
    expect(Math.abs(waiting - 12 * HOUR) / (12 * HOUR)).toBeLessThan(0.005);
  });
});

describe("checkpoint cost from size and bandwidth", () => {
  const sized = (storage: Record<string, unknown>) =>
    compilePlan(
      plan({ checkpoint: { interval: "1h", size: "2.3TB", storage: { write_bandwidth: "10GB/s", ...storage } } }),
    ).fleets[0];

  it("save = size / min(storage bandwidth, hosts at once x per-host bandwidth); load likewise from reads", () => {
    const capped = sized({ read_bandwidth: "20GB/s", per_host_bandwidth: "0.5GB/s", hosts_at_once: 16 });
    expect(capped?.saveS).toBeCloseTo(2.3e12 / 8e9, 6); // 16 x 0.5 GB/s = 8 GB/s < 10 GB/s
    expect(capped?.loadS).toBeCloseTo(2.3e12 / 8e9, 6);
    // Every one of the 64 nodes writes at once by default: 32 GB/s of links, so the storage's own bandwidth rules.
    const all = sized({ read_bandwidth: "20GiB/s", per_host_bandwidth: "0.5GB/s" });
    expect(all?.saveS).toBeCloseTo(230, 6);
    expect(all?.loadS).toBeCloseTo(2.3e12 / (20 * 2 ** 30), 6);
  });

  it("BLOOM-176B (published: 2.3 TB saved in about 40 s) implies about 58 GB/s, and the plan gives back 40 s", () => {
    const bloom = sized({ write_bandwidth: "57.5GB/s", read_bandwidth: "57.5GB/s" });
    expect(bloom?.saveS).toBeCloseTo(40, 6);
  });

  it("with spread, saves vary run to run around the mean: sd of n saves = sqrt(n) x mean x cv", () => {
    const cv = 0.5;
    const { run, summary } = simulate(
      plan({
        workload: { steps: 1000, step_time: "36s" }, // 10 h of compute: 9 saves, one per hour
        checkpoint: {
          interval: "1h",
          size: "1TB",
          storage: { write_bandwidth: "10GB/s", read_bandwidth: "10GB/s", spread: cv },
        },
      }),
      { trials: 2000, seed: 4 },
    );
    const saves = 9;
    expect(summary.timeS.checkpoint / saves).toBeGreaterThan(100 * 0.97);
    expect(summary.timeS.checkpoint / saves).toBeLessThan(100 * 1.03);
    const walls = Array.from(run.wallS);
    const mean = walls.reduce((a, b) => a + b, 0) / walls.length;
    const sd = Math.sqrt(walls.reduce((a, w) => a + (w - mean) ** 2, 0) / (walls.length - 1));
    expect(Math.abs(sd - Math.sqrt(saves) * 100 * cv) / (Math.sqrt(saves) * 100 * cv)).toBeLessThan(0.1);
  });
});

describe("checkpoint tiers: in memory, backed by persistent storage", () => {
  const tiered = (survives: "software" | "host" | undefined, failure: Record<string, unknown>) =>
    plan({
      fleet: { spare_nodes: 64, node_replace_time: "1h", failures: [failure] },
      checkpoint: {
        interval: "1h",
        save: "0s",
        load: "5m",
        ...(survives ? { memory: { interval: "5m", save: "0s", load: "10s", survives } } : {}),
      },
    });
  const crash = { cause: "software", per_node_day: 0.01, replaces_node: false };
  const hostLoss = { cause: "gpu", per_node_day: 0.01 };
  // Poisson failures land uniformly inside an interval: half of it is lost on average.
  const lostPerFailure = (p: ReturnType<typeof plan>) => {
    const { summary } = simulate(p, { trials: 100, seed: 5 });
    return {
      lost: summary.timeS.lost / summary.interruptions.mean,
      // Within 0.5%: the window's end may cut the last restart short.
      restart: summary.timeS.restart / summary.interruptions.mean,
    };
  };

  it("a crash rolls back to the last in-memory snapshot (half of 5 min lost), loading from memory", () => {
    const { lost, restart } = lostPerFailure(tiered("software", crash));
    expect(Math.abs(lost - 150) / 150).toBeLessThan(0.08);
    expect(Math.abs(restart - 10) / 10).toBeLessThan(0.005);
  });

  it("without the memory tier the same crash loses half an hour", () => {
    const { lost, restart } = lostPerFailure(tiered(undefined, crash));
    expect(Math.abs(lost - 1800) / 1800).toBeLessThan(0.08);
    expect(Math.abs(restart - 300) / 300).toBeLessThan(0.005);
  });

  it("a host loss takes its in-memory copy along, unless the snapshot is replicated on a peer", () => {
    const local = lostPerFailure(tiered("software", hostLoss));
    expect(Math.abs(local.lost - 1800) / 1800).toBeLessThan(0.08);
    expect(Math.abs(local.restart - 300) / 300).toBeLessThan(0.005);
    const replicated = lostPerFailure(tiered("host", hostLoss));
    expect(Math.abs(replicated.lost - 150) / 150).toBeLessThan(0.08);
  });

  it("a rack of 4 hosts takes the peer copies too: back to persistent storage", () => {
    const rack = lostPerFailure(tiered("host", { cause: "rack", hosts: 4, per_domain_day: 0.04, repair: "1h" }));
    expect(Math.abs(rack.lost - 1800) / 1800).toBeLessThan(0.08);
  });
});

describe("partial recovery: data-parallel replicas", () => {
  // 64 nodes in 8 replicas of 8; 0.1 failures per node-day = 6.4 per day for the job.
  const lambda = (64 * 0.1) / DAY;
  const fleet = { spare_nodes: 64, failures: [{ cause: "gpu", per_node_day: 0.1, detect: "1m" }] };

  it("losing a host stalls the job for the detection, then drops 1/8 of the throughput until the replica rejoins", () => {
    const { summary } = simulate(
      plan({ fleet, recovery: { restart: "10m", partial: { replicas: 8, rejoin: "30m" } } }),
      { trials: 100, seed: 6 },
    );
    const closed = 1 - lambda * (60 + (30 * 60) / 8);
    expect(Math.abs(summary.ettr.mean - closed)).toBeLessThan(0.003);
    expect(summary.timeS.lost).toBe(0); // nothing rolled back
  });

  it("the whole-job restart it replaces follows Daly's complete model (the advisor's code)", () => {
    const { summary } = simulate(plan({ fleet, recovery: { restart: "10m" } }), { trials: 100, seed: 6 });
    const closed = expectedGoodput({ intervalS: 3600, saveS: 0, restartS: 60 + 600, mtbfS: 1 / lambda });
    expect(Math.abs(summary.ettr.mean - closed)).toBeLessThan(0.004);
    const partial = simulate(plan({ fleet, recovery: { restart: "10m", partial: { replicas: 8, rejoin: "30m" } } }), {
      trials: 100,
      seed: 6,
    }).summary;
    expect(partial.ettr.mean - summary.ettr.mean).toBeGreaterThan(0.1);
  });
});

describe("partial recovery and failures that keep their hosts", () => {
  it("a software crash still restarts the whole job: no replica is dropped, nothing runs faster than full speed", () => {
    const { summary } = simulate(
      plan({
        fleet: { spare_nodes: 64, failures: [{ cause: "crash", per_node_day: 0.01, replaces_node: false }] },
        recovery: { restart: "10m", partial: { replicas: 8, rejoin: "30m" } },
      }),
      { trials: 20, seed: 14 },
    );
    expect(summary.timeS.degraded).toBe(0);
    expect(summary.timeS.lost).toBeGreaterThan(0); // rolled back to the last checkpoint
    // A restart cut short by the next failure (0.64 a day: 0.4% of restarts) or the window's end: within 1%.
    const restart = summary.timeS.restart / summary.interruptions.mean;
    expect(Math.abs(restart - 600) / 600).toBeLessThan(0.01);
  });
});

describe("degraded interconnect", () => {
  it("steps slow by sensitivity x the share of degraded links", () => {
    const { summary } = simulate(plan({ fleet: { network: { degraded_share: 0.2, sensitivity: 1.5 } } }), {
      trials: 5,
      seed: 7,
    });
    expect(summary.ettr.mean).toBeCloseTo(1 / 1.3, 9);
    expect(summary.timeS.degraded / (365 * DAY)).toBeCloseTo(1 - 1 / 1.3, 9);
  });

  it("collapse episodes: the share of time in collapse is r d / (1 + r d), steps slowdown x slower then", () => {
    const { summary } = simulate(
      plan({ fleet: { network: { collapses: { per_day: 4, duration: { mean: "30m", cv: 1 }, slowdown: 4 } } } }),
      { trials: 100, seed: 8 },
    );
    const rd = 4 * (30 / 1440);
    const f = rd / (1 + rd);
    expect(Math.abs(summary.ettr.mean - (1 - f + f / 4))).toBeLessThan(0.004);
  });
});

describe("failure rates that change", () => {
  it("burn-in: a fresh host fails m times as often for its first period (renewal: mean life closed form)", () => {
    const r = 1; // per node-day
    const m = 4;
    const period = 0.5; // days
    const { summary } = simulate(
      plan({
        fleet: {
          devices: 32,
          spare_nodes: 64,
          node_replace_time: "1h",
          failures: [{ cause: "gpu", per_node_day: r }],
          burn_in: { period: `${period}d`, multiplier: m },
        },
        workload: { window: "60d" },
      }),
      { trials: 100, seed: 9 },
    );
    // Hazard m r on [0, period), r after: E[life] = (1 - e^(-m r P)) / (m r) + e^(-m r P) / r. The 4 first hosts
    // start burnt in (first failure after 1/r on average): a delayed renewal process.
    const life = (1 - Math.exp(-m * r * period)) / (m * r) + Math.exp(-m * r * period) / r;
    const expected = 4 * (1 + (60 - 1 / r) / life);
    expect(Math.abs(summary.interruptions.mean - expected) / expected).toBeLessThan(0.03);
  });

  it("repeat offenders: a share s of hosts back from repair fail m times as often (mean life (1-s)/r + s/(m r))", () => {
    const r = 0.2;
    const s = 0.5;
    const m = 5;
    const { summary } = simulate(
      plan({
        fleet: {
          devices: 64,
          spare_nodes: 16,
          node_replace_time: "1h",
          failures: [{ cause: "gpu", per_node_day: r }],
          repeat_offenders: { share: s, multiplier: m },
        },
        workload: { window: "400d" },
      }),
      { trials: 40, seed: 10 },
    );
    const life = (1 - s) / r + s / (m * r);
    // The 8 first hosts are sound (first failure after 1/r on average).
    const expected = 8 * (1 + (400 - 1 / r) / life);
    expect(Math.abs(summary.interruptions.mean - expected) / expected).toBeLessThan(0.04);
  });

  it("manual handling: a person answers in 30 min in working hours (9-18, Mon-Fri), in 6 h outside them", () => {
    const manual = (handledBy: string) =>
      plan({
        fleet: {
          spare_nodes: 64,
          node_replace_time: "1h",
          failures: [{ cause: "gpu", per_day: 0.1, detect: "2m", handled_by: handledBy }],
        },
        recovery: { manual: { response: "30m", off_hours_response: "6h" } },
        workload: { window: "2000d" },
      });
    const auto = simulate(manual("auto"), { trials: 20, seed: 11 }).summary;
    expect(perEvent(auto.timeS.detection, auto.interruptions.mean)).toBeCloseTo(120, 6);
    const human = simulate(manual("manual"), { trials: 50, seed: 11 }).summary;
    const workShare = (5 * 9) / (7 * 24);
    const expected = 120 + workShare * 0.5 * HOUR + (1 - workShare) * 6 * HOUR;
    expect(Math.abs(perEvent(human.timeS.detection, human.interruptions.mean) - expected) / expected).toBeLessThan(
      0.03,
    );
  });
});

describe("loss spikes: rollbacks further than the last checkpoint", () => {
  it("rolling back 3 checkpoints loses the work since the last one plus 2 intervals, then waits for the diagnosis", () => {
    const { summary } = simulate(
      plan({ workload: { window: "365d", loss_spikes: { per_day: 0.5, rollback: 3, detect: "2h" } } }),
      { trials: 50, seed: 12 },
    );
    expect(summary.interruptions.byCause["loss-spike"]).toBeCloseTo(summary.interruptions.mean, 9);
    const lost = perEvent(summary.timeS.lost, summary.interruptions.mean);
    expect(Math.abs(lost - 2.5 * HOUR) / (2.5 * HOUR)).toBeLessThan(0.03);
    const detection = perEvent(summary.timeS.detection, summary.interruptions.mean);
    expect(Math.abs(detection - 2 * HOUR) / (2 * HOUR)).toBeLessThan(0.005);
    // Spikes come per day of compute: 0.5 x (365 d minus the time stopped).
    const expected = (0.5 * 365) / (1 + 0.5 * (2 / 24));
    expect(Math.abs(summary.interruptions.mean - expected) / expected).toBeLessThan(0.03);
  });

  it("the spike clock runs in compute time only, so saves with spread do not thin out the spikes", () => {
    const { summary } = simulate(
      plan({
        workload: { window: "60d", loss_spikes: { per_day: 0.14, rollback: 2, detect: "2h" } },
        checkpoint: { interval: "2h", save: { mean: "15m", cv: 0.3 } },
      }),
      { trials: 400, seed: 13 },
    );
    // Compute time: productive plus the work recomputed (lost), all of it in compute phases here.
    const computeDays = (summary.timeS.productive + summary.timeS.lost) / DAY;
    const expected = 0.14 * computeDays;
    expect(Math.abs(summary.interruptions.mean - expected) / expected).toBeLessThan(0.06);
  });
});
