import { describe, expect, it } from "vitest";
import { GIVE_UP_INTERRUPTIONS, TIME_CATEGORIES } from "./engine.js";
import { planFrom, simulate } from "./test-helpers.js";

const HOUR = 3600;
const DAY = 86_400;

/** A small run: 64 devices in 8 nodes, 1,000 steps of 60 s (16.7 h failure-free). */
function scenario(
  overrides: { fleet?: object; checkpoint?: object; recovery?: object; workload?: object; deadline?: string } = {},
) {
  return {
    name: "small",
    fleet: {
      device: "gpu",
      devices: 64,
      devices_per_node: 8,
      spare_nodes: 2,
      node_replace_time: "1d",
      failures: [
        { cause: "gpu", per_node_day: 0.5, detect: "5m" },
        { cause: "software", per_node_day: 0.25, detect: "1m", replaces_node: false },
      ],
      ...overrides.fleet,
    },
    workload: overrides.workload ?? { steps: 1000, step_time: "60s" },
    checkpoint: { interval: "1h", save: "1m", load: "2m", ...overrides.checkpoint },
    recovery: { restart: "5m", ...overrides.recovery },
    ...(overrides.deadline ? { deadline: overrides.deadline } : {}),
  };
}

const wallOf = (timeS: Record<string, number>) => TIME_CATEGORIES.reduce((sum, c) => sum + (timeS[c] ?? 0), 0);

describe("engine accounting", () => {
  it("without failures takes the failure-free time plus one save per full interval", () => {
    const plan = planFrom({ scenarios: [scenario({ fleet: { failures: [] } })] });
    const { run, summary } = simulate(plan, { trials: 3, seed: 1 });
    // 60,000 s of compute, 16 full 1 h intervals before the end, each followed by a 60 s save.
    expect(run.wallS[0]).toBeCloseTo(60_000 + 16 * 60, 6);
    expect(summary.interruptions.mean).toBe(0);
    expect(summary.timeS.productive).toBeCloseTo(60_000, 6);
  });

  it("charges every second of every trial to exactly one category", () => {
    const plan = planFrom({
      scenarios: [
        scenario({
          fleet: { stragglers: { per_node_day: 1, slowdown: 0.5, detect: "20m" } },
          recovery: { restart: "5m", no_spare: "shrink" },
        }),
      ],
    });
    const { run, summary } = simulate(plan, { trials: 200, seed: 3 });
    const meanWall = run.wallS.reduce((a, b) => a + b, 0) / run.trials;
    expect(wallOf(summary.timeS)).toBeCloseTo(meanWall, 3);
    // Productive time is the failure-free compute, whatever happened.
    expect(summary.timeS.productive).toBeCloseTo(60_000, 3);
  });

  it("is reproducible: the same seed gives the same trials", () => {
    const plan = planFrom({ scenarios: [scenario()] });
    const a = simulate(plan, { trials: 100, seed: 42 });
    const b = simulate(plan, { trials: 100, seed: 42 });
    expect(Array.from(b.run.wallS)).toEqual(Array.from(a.run.wallS));
    expect(b.summary).toEqual(a.summary);
  });

  it("different seeds agree within their stated 95% confidence intervals", () => {
    const plan = planFrom({ scenarios: [scenario({ deadline: "20h" })] });
    const a = simulate(plan, { trials: 400, seed: 1 }).summary;
    const b = simulate(plan, { trials: 400, seed: 2 }).summary;
    expect(a.ettr.mean).not.toBe(b.ettr.mean);
    const halfWidth = (ci: [number, number]) => (ci[1] - ci[0]) / 2;
    // The difference of two independent estimates has a 95% half-width of sqrt(h1^2 + h2^2).
    const within = (x: { mean: number; ci95: [number, number] }, y: { mean: number; ci95: [number, number] }) =>
      Math.abs(x.mean - y.mean) <= Math.hypot(halfWidth(x.ci95), halfWidth(y.ci95));
    expect(within(a.ettr, b.ettr)).toBe(true);
    expect(within(a.interruptions, b.interruptions)).toBe(true);
    if (a.timeToTrain === undefined || b.timeToTrain === undefined) throw new Error("completion mode expected");
    expect(within(a.timeToTrain.mean, b.timeToTrain.mean)).toBe(true);
    if (a.deadline === undefined || b.deadline === undefined) throw new Error("deadline expected");
    const pa = a.deadline.probability;
    expect(pa).toBeGreaterThan(0.05);
    expect(pa).toBeLessThan(0.95);
    expect(b.deadline.probability).toBeGreaterThanOrEqual(a.deadline.ci95[0] - halfWidth(b.deadline.ci95));
    expect(b.deadline.probability).toBeLessThanOrEqual(a.deadline.ci95[1] + halfWidth(b.deadline.ci95));
  });

  it("counts interruptions by cause in proportion to the causes' rates", () => {
    // Plenty of quickly repaired spares, so the job never waits and failures stay a Poisson process.
    const fleet = { spare_nodes: 8, node_replace_time: "1h" };
    const plan = planFrom({ scenarios: [scenario({ fleet, workload: { window: "30d" } })] });
    const { summary } = simulate(plan, { trials: 200, seed: 5 });
    const gpu = summary.interruptions.byCause.gpu ?? 0;
    const software = summary.interruptions.byCause.software ?? 0;
    expect(gpu / (gpu + software)).toBeGreaterThan(0.63);
    expect(gpu / (gpu + software)).toBeLessThan(0.7);
    // Poisson counts: p99 ~ mean + 2.33 sqrt(mean).
    const { mean, p99 } = summary.interruptions;
    expect(p99).toBeGreaterThan(mean + 1.5 * Math.sqrt(mean));
    expect(p99).toBeLessThan(mean + 3.5 * Math.sqrt(mean));
  });
});

describe("spares, shrinking, stragglers and fallback", () => {
  // 8 nodes failing 0.5 per node-day each with a 7-day repair: spares run out within days.
  const scarce = {
    spare_nodes: 1,
    node_replace_time: "7d",
    failures: [{ cause: "gpu", per_node_day: 0.5, detect: "5m" }],
  };

  it("waits for repaired nodes when spares run out and the job does not shrink", () => {
    const plan = planFrom({ scenarios: [scenario({ fleet: scarce, workload: { window: "30d" } })] });
    const { summary } = simulate(plan, { trials: 50, seed: 7 });
    expect(summary.timeS.waiting).toBeGreaterThan(DAY);
    expect(summary.timeS.degraded).toBe(0);
  });

  it("shrinks instead, down to the floor, and runs degraded", () => {
    const plan = planFrom({
      scenarios: [
        scenario({
          fleet: scarce,
          workload: { window: "30d" },
          recovery: { restart: "5m", no_spare: "shrink", shrink_floor: 0.5 },
        }),
      ],
    });
    const waits = simulate(planFrom({ scenarios: [scenario({ fleet: scarce, workload: { window: "30d" } })] }), {
      trials: 50,
      seed: 7,
    });
    const { summary } = simulate(plan, { trials: 50, seed: 7 });
    expect(summary.timeS.degraded).toBeGreaterThan(DAY);
    expect(summary.timeS.waiting).toBeLessThan(waits.summary.timeS.waiting);
  });

  it("a straggler slows the job until it is detected and removed with a save, not a rollback", () => {
    const stragglers = {
      failures: [],
      spare_nodes: 8,
      node_replace_time: "2h",
      stragglers: { per_node_day: 0.5, slowdown: 0.25, detect: "30m" },
    };
    const plan = planFrom({ scenarios: [scenario({ fleet: stragglers, workload: { window: "30d" } })] });
    const { summary } = simulate(plan, { trials: 50, seed: 9 });
    // About 4 stragglers a day for 30 days, each 30 min at 1/1.25 speed: ~6 min of degraded time each.
    expect(summary.interruptions.stragglerRemovals).toBeGreaterThan(100);
    expect(summary.timeS.degraded / summary.interruptions.stragglerRemovals).toBeGreaterThan(5 * 60);
    expect(summary.timeS.degraded / summary.interruptions.stragglerRemovals).toBeLessThan(7 * 60);
    expect(summary.timeS.lost).toBe(0);
    expect(summary.interruptions.mean).toBe(0);
  });

  it("keeps a detected straggler in the job while no node can replace it", () => {
    const noSpares = {
      failures: [],
      spare_nodes: 0,
      node_replace_time: "2h",
      stragglers: { per_node_day: 0.5, slowdown: 0.25, detect: "30m" },
    };
    const { summary } = simulate(
      planFrom({ scenarios: [scenario({ fleet: noSpares, workload: { window: "30d" } })] }),
      { trials: 20, seed: 9 },
    );
    // Without spares or shrinking the first straggler can never go: the job runs slow from then on.
    expect(summary.interruptions.stragglerRemovals).toBe(0);
    expect(summary.timeS.degraded).toBeGreaterThan(5 * DAY);
  });

  it("removes a kept straggler as soon as a repaired node comes back", () => {
    const oneSpare = {
      failures: [],
      spare_nodes: 1,
      node_replace_time: "6h",
      stragglers: { per_node_day: 0.5, slowdown: 0.25, detect: "30m" },
    };
    const { summary } = simulate(
      planFrom({ scenarios: [scenario({ fleet: oneSpare, workload: { window: "30d" } })] }),
      {
        trials: 50,
        seed: 9,
      },
    );
    // Without the re-check, the second straggler would stay for the rest of the 30 days (no failures, no restarts).
    expect(summary.interruptions.stragglerRemovals).toBeGreaterThan(50);
    const degradedPerRemoval = summary.timeS.degraded / summary.interruptions.stragglerRemovals;
    expect(degradedPerRemoval).toBeGreaterThan(6 * 60);
    expect(degradedPerRemoval).toBeLessThan(6 * HOUR * 0.2);
  });

  it("moves to the fallback fleet after N failures within T and finishes there", () => {
    const unstable = scenario({
      fleet: { failures: [{ cause: "chip", per_node_day: 3, detect: "5m" }], spare_nodes: 8 },
      recovery: { restart: "5m", fallback: { scenario: "stable", after_failures: 3, within: "6h", migrate: "2h" } },
    });
    const stable = { ...scenario({ fleet: { failures: [] } }), name: "stable" };
    const plan = planFrom({ scenarios: [unstable, stable] });
    const { summary } = simulate(plan, { trials: 200, seed: 11 });
    expect(summary.fellBackShare).toBeGreaterThan(0.9);
    expect(summary.timeS.fallback / summary.fellBackShare).toBeCloseTo(2 * HOUR, 3);
    expect(summary.finishedShare).toBe(1);
    // Once on the stable fleet nothing fails, so few interruptions happen overall.
    expect(summary.interruptions.mean).toBeLessThan(10);
  });

  it("gives up on a run that cannot progress and says it never finished", () => {
    const hopeless = scenario({
      fleet: { failures: [{ cause: "chip", per_node_day: 200, detect: "5m", replaces_node: false }] },
      deadline: "30d",
    });
    const { summary } = simulate(planFrom({ scenarios: [hopeless] }), { trials: 5, seed: 1 });
    expect(summary.finishedShare).toBe(0);
    expect(summary.timeToTrain?.p50S).toBe(Infinity);
    expect(summary.deadline?.probability).toBe(0);
  });

  it("stops a hopeless trial after GIVE_UP_INTERRUPTIONS interruptions instead of running for minutes", () => {
    const hopeless = scenario({
      fleet: { failures: [{ cause: "chip", per_node_day: 5000, replaces_node: false }] },
    });
    const { summary } = simulate(planFrom({ scenarios: [hopeless] }), { trials: 2, seed: 1 });
    expect(summary.finishedShare).toBe(0);
    expect(summary.interruptions.mean).toBe(GIVE_UP_INTERRUPTIONS);
  });
});
