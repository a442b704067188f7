import { describe, expect, it } from "vitest";
import { adviseInterval, buildLedger, ledgerCategories, type LedgerInput } from "./goodput.js";

const sum = (t: Record<string, number>) => Object.values(t).reduce((a, b) => a + b, 0);

/**
 * A job at one step per second: attempt 1 launches at t=10 s, steps 1..12 at t=15..26 s, checkpoints at steps 5 and
 * 10 (0.4 s save each), a rank dies at 27.5 s, the supervisor notices at 28 s and stops the gang by 29 s. Attempt 2
 * launches at 31 s from step 10, reports steps 11..20 at 36..45 s, and the job ends at 46 s.
 */
function scenario(): LedgerInput {
  const steps = [
    ...Array.from({ length: 12 }, (_, i) => ({ attempt: 1, step: i + 1, t: 15_000 + i * 1000 })),
    ...Array.from({ length: 10 }, (_, i) => ({ attempt: 2, step: 11 + i, t: 36_000 + i * 1000 })),
  ];
  return {
    createdAt: 0,
    endAt: 46_000,
    attempts: [
      { n: 1, pool: "p", startedAt: 10_000, endedAt: 29_000, resumeStep: null },
      { n: 2, pool: "p", startedAt: 31_000, endedAt: 45_500, resumeStep: 10 },
    ],
    steps,
    checkpoints: [
      { attempt: 1, step: 5, t: 19_400, saveMs: 400 },
      { attempt: 1, step: 10, t: 24_400, saveMs: 400 },
    ],
    incidents: [
      {
        id: 7,
        attempt: 1,
        cause: "killed",
        culpritRank: 1,
        culpritNode: "p-0",
        pool: "p",
        faultAt: 27_500,
        detectedAt: 28_000,
      },
    ],
    waits: [],
  };
}

describe("goodput ledger", () => {
  it("charges every millisecond exactly once", () => {
    const l = buildLedger(scenario());
    expect(l.wallMs).toBe(46_000);
    expect(sum(l.totals)).toBe(46_000);
    expect(Object.keys(l.totals)).toEqual([...ledgerCategories]);
  });

  it("splits the wall time by phase", () => {
    const { totals } = buildLedger(scenario());
    expect(totals.queued).toBe(10_000);
    expect(totals.starting).toBe(5_000); // launch to the first step
    expect(totals.checkpoint).toBe(800);
    expect(totals.detection).toBe(500);
    // step 12 recomputed (1 s; step 11 is the first step after the launch, inside restart) + the step in flight at
    // the fault (1.5 s)
    expect(totals.lost).toBe(2_500);
    // stopping the gang (1 s) + gap (2 s) + launch to first new step (5 s)
    expect(totals.restart).toBe(8_000);
    expect(totals.finishing).toBe(1_000); // last step to attempt end, attempt end to job end
    expect(totals.productive).toBe(46_000 - 10_000 - 5_000 - 800 - 500 - 2_500 - 8_000 - 1_000);
  });

  it("costs each incident: detection, steps lost, time to the first new step", () => {
    const l = buildLedger(scenario());
    expect(l.stepsLost).toBe(2);
    expect(l.incidents).toEqual([
      {
        id: 7,
        cause: "killed",
        culpritRank: 1,
        culpritNode: "p-0",
        pool: "p",
        detectionMs: 500,
        timeToFirstStepMs: 8_000,
        stepsLost: 2,
        degradedMs: 0,
        endedAttempt: true,
        injected: null,
        costMs: 500 + 1_500 + 1_000 + 2_000 + 5_000 + 1_000,
      },
    ]);
    expect(l.byCause).toEqual({ killed: 11_000 });
    expect(l.byNode).toEqual({ "p-0": 11_000 });
  });

  it("charges time without capacity to waiting", () => {
    const input = scenario();
    const l = buildLedger({ ...input, waits: [{ from: 29_500, to: 31_000 }] });
    expect(l.totals.waiting).toBe(1_500);
    expect(sum(l.totals)).toBe(46_000);
  });

  it("still adds up for a running job with odd inputs (reports out of order, a fault before any step)", () => {
    const l = buildLedger({
      createdAt: 0,
      endAt: 5_000,
      attempts: [{ n: 1, pool: "p", startedAt: 1_000, endedAt: null, resumeStep: null }],
      steps: [
        { attempt: 1, step: 2, t: 4_000 },
        { attempt: 1, step: 1, t: 3_000 },
      ],
      checkpoints: [],
      incidents: [],
      waits: [],
    });
    expect(sum(l.totals)).toBe(5_000);
    expect(l.totals.productive).toBe(2_000);
  });
});

describe("goodput ledger edge cases", () => {
  it("a fault-free run whose first step is numbered 0 loses no step", () => {
    const l = buildLedger({
      createdAt: 0,
      endAt: 12_000,
      attempts: [{ n: 1, pool: "p", startedAt: 0, endedAt: 12_000, resumeStep: null }],
      steps: Array.from({ length: 10 }, (_, i) => ({ attempt: 1, step: i, t: 1_000 + i * 1_000 })),
      checkpoints: [],
      incidents: [],
      waits: [],
    });
    expect(l.stepsLost).toBe(0);
    expect(l.totals.lost).toBe(0);
    expect(l.totals.productive).toBe(9_000);
  });

  it("thinned steps (every third one stored, the first and last kept) give the same ledger", () => {
    const full = scenario();
    const thinned: LedgerInput = {
      ...full,
      steps: full.steps.filter((s, i, all) => {
        const same = all.filter((x) => x.attempt === s.attempt);
        const j = same.indexOf(s);
        return j === 0 || j === same.length - 1 || j % 3 === 0;
      }),
    };
    expect(thinned.steps.length).toBeLessThan(full.steps.length);
    const a = buildLedger(full);
    const b = buildLedger(thinned);
    expect(b.stepsLost).toBe(a.stepsLost);
    expect(b.totals).toEqual(a.totals);
    expect(b.incidents).toEqual(a.incidents);
  });
});

describe("interval advice", () => {
  it("derives MTBF from running time per incident and applies Young and Daly", () => {
    const input = scenario();
    const l = buildLedger(input);
    const a = adviseInterval(l, input.checkpoints);
    const running = l.totals.productive + l.totals.degraded + l.totals.lost + l.totals.checkpoint;
    expect(a.mtbfMs).toBe(running);
    expect(a.saveMs).toBe(400);
    expect(a.intervalInUseMs).toBe(5_000);
    expect(a.youngMs).toBeCloseTo(Math.sqrt(2 * 0.4 * (running / 1000)) * 1000, 6);
    expect(a.dalyMs).toBeLessThan(a.youngMs!);
  });
});

/**
 * A run of `faults.length + 1` attempts of 100 s each (one step a second, a checkpoint every 10 steps with a 0.5 s
 * save); each attempt but the last ends with the fault listed for it (a chaos action: injected; null: real), found
 * 1 s after its fault, relaunched 4 s later from the last checkpoint.
 */
function faulty(faults: ReadonlyArray<string | null>): LedgerInput {
  const attempts: LedgerInput["attempts"][number][] = [];
  const steps: LedgerInput["steps"][number][] = [];
  const checkpoints: LedgerInput["checkpoints"][number][] = [];
  const incidents: LedgerInput["incidents"][number][] = [];
  let t = 0;
  let step = 0;
  for (let n = 1; n <= faults.length + 1; n++) {
    const fault = faults[n - 1];
    const startedAt = t;
    for (let i = 1; i <= 100; i++) {
      step++;
      steps.push({ attempt: n, step, t: startedAt + i * 1000 });
      if (step % 10 === 0) checkpoints.push({ attempt: n, step, t: startedAt + i * 1000, saveMs: 500 });
    }
    const faultAt = startedAt + 100_500;
    attempts.push({ n, pool: "p", startedAt, endedAt: faultAt + 2000, resumeStep: n === 1 ? null : step });
    if (fault !== undefined) {
      incidents.push({
        id: 100 + n,
        attempt: n,
        cause: n % 2 ? "killed" : "hang",
        culpritRank: 0,
        culpritNode: "p-0",
        pool: "p",
        faultAt,
        detectedAt: faultAt + 1000,
        ...(fault !== null ? { injected: fault } : {}),
      });
    }
    step -= step % 10 === 0 ? 0 : step % 10; // resume from the last checkpoint
    t = faultAt + 6000;
  }
  return { createdAt: 0, endAt: t - 3000, attempts, steps, checkpoints, incidents, waits: [] };
}

describe("injected faults (switchyard chaos) and the advisor", () => {
  const real = null;
  it("a job with 2 real and 3 injected failures gets its MTBF from the 2 real ones and says 3 were left out", () => {
    const input = faulty([real, "kill-rank", "hang-rank", real, "nan"]);
    const l = buildLedger(input);
    const a = adviseInterval(l, input.checkpoints);
    const running = l.totals.productive + l.totals.degraded + l.totals.lost + l.totals.checkpoint;
    expect(running).toBeGreaterThan(0);
    expect(a.mtbfMs).toBe(running / 2);
    expect(a.injectedLeftOut).toBe(3);
    expect(a.youngMs).toBeCloseTo(Math.sqrt(2 * 0.5 * (running / 2 / 1000)) * 1000, 6);
    // Counting the drills would have called for checkpoints more often: the advice differs from an all-real run's.
    const allReal = adviseInterval(buildLedger(faulty([real, real, real, real, real])), input.checkpoints);
    expect(allReal.mtbfMs).toBe(running / 5);
    expect(allReal.injectedLeftOut).toBe(0);
    expect(allReal.dalyMs!).toBeLessThan(a.dalyMs!);
    // What the drill rehearsed: the advice as if all five had been real, beside the measured one.
    expect(a.ifInjectedWereReal).toEqual({ mtbfMs: allReal.mtbfMs, youngMs: allReal.youngMs, dalyMs: allReal.dalyMs });
    expect(allReal.ifInjectedWereReal).toBeNull();
  });

  it("the ledger still charges what the injected faults cost, under their cause, marked in the per-incident list", () => {
    const input = faulty([real, "kill-rank", "hang-rank", real, "nan"]);
    const l = buildLedger(input);
    const same = buildLedger(faulty([real, real, real, real, real]));
    // Being a drill changes no charge: the same totals, per-incident costs and causes as real faults.
    expect(l.totals).toEqual(same.totals);
    expect(l.byCause).toEqual(same.byCause);
    expect(sum(l.totals)).toBe(l.wallMs);
    expect(l.incidents.map((i) => [i.id, i.injected])).toEqual([
      [101, null],
      [102, "kill-rank"],
      [103, "hang-rank"],
      [104, null],
      [105, "nan"],
    ]);
    for (const i of l.incidents) expect(i.costMs).toBe(same.incidents.find((s) => s.id === i.id)!.costMs);
    expect(l.incidents.filter((i) => i.injected !== null).every((i) => i.costMs > 0)).toBe(true);
  });

  it("only injected failures: no measured MTBF, and all of them counted as left out", () => {
    const input = faulty(["kill-rank", "kill-rank"]);
    const a = adviseInterval(buildLedger(input), input.checkpoints);
    expect(a).toMatchObject({ mtbfMs: null, injectedLeftOut: 2, youngMs: null, dalyMs: null });
    const running = buildLedger(input).totals;
    expect(a.ifInjectedWereReal?.mtbfMs).toBe(
      (running.productive + running.degraded + running.lost + running.checkpoint) / 2,
    );
  });

  it("an injected slowdown ridden out is no failure either way and is not counted as left out", () => {
    const l = buildLedger(
      steady([
        {
          ...slowLink,
          degraded: { from: 300_000, to: 900_000, speed: 0.5 },
          endedAttempt: false,
          injected: "slow-rank",
        },
      ]),
    );
    expect(l.byCause).toEqual({ network: 300_000 });
    expect(adviseInterval(l, [])).toMatchObject({ mtbfMs: null, injectedLeftOut: 0 });
  });
});

/** One attempt stepping once a second from t=1 s to t=1200 s (20 minutes), the job ending at 1201 s. */
function steady(incidents: LedgerInput["incidents"], endedAt: number | null = 1_201_000): LedgerInput {
  return {
    createdAt: 0,
    endAt: 1_201_000,
    attempts: [{ n: 1, pool: "ascend", startedAt: 0, endedAt, resumeStep: null }],
    steps: Array.from({ length: 1200 }, (_, i) => ({ attempt: 1, step: i + 1, t: 1_000 + i * 1_000 })),
    checkpoints: [],
    incidents,
    waits: [],
  };
}

const slowLink = {
  id: 3,
  attempt: 1,
  cause: "network",
  culpritRank: null,
  culpritNode: "a2",
  pool: "ascend",
  faultAt: 300_000,
  detectedAt: 330_000,
};

describe("degraded time", () => {
  it("a run at half speed for 10 minutes lost 5, charged to the incident, its node and pool; the ledger adds up", () => {
    const healthy = buildLedger(steady([]));
    const l = buildLedger(
      steady([{ ...slowLink, degraded: { from: 300_000, to: 900_000, speed: 0.5 }, endedAttempt: false }]),
    );
    expect(sum(l.totals)).toBe(l.wallMs);
    expect(l.totals.degraded).toBe(300_000);
    expect(l.totals.productive).toBe(healthy.totals.productive - 300_000);
    expect(l.totals.detection + l.totals.restart + l.totals.lost).toBe(0); // the run went on: nothing else charged
    expect(l.incidents).toEqual([
      expect.objectContaining({ id: 3, cause: "network", culpritNode: "a2", degradedMs: 300_000, costMs: 300_000 }),
    ]);
    expect(l.incidents[0]!.detectionMs).toBe(30_000);
    expect(l.byCause).toEqual({ network: 300_000 });
    expect(l.byNode).toEqual({ a2: 300_000 });
    expect(l.byPool).toEqual({ ascend: 300_000 });
    // A slowdown ridden out is not a failure: no MTBF from it.
    expect(adviseInterval(l, []).mtbfMs).toBeNull();
  });

  it("a slowdown still going (to: null) is charged up to now; odd shares still add up to the millisecond", () => {
    const l = buildLedger(
      steady([{ ...slowLink, degraded: { from: 300_001, to: null, speed: 1 / 3 }, endedAttempt: false }], null),
    );
    expect(sum(l.totals)).toBe(l.wallMs);
    expect(l.totals.degraded).toBe(Math.round((1_201_000 - 300_001) * (2 / 3)));
  });

  it("a slowdown that ends in an eviction: the slow share until detection, then detection and restart", () => {
    const input = steady([{ ...slowLink, degraded: { from: 300_000, to: 330_000, speed: 0.25 } }], 332_000);
    const l = buildLedger({
      ...input,
      attempts: [...input.attempts, { n: 2, pool: "ascend", startedAt: 335_000, endedAt: 1_201_000, resumeStep: 300 }],
      steps: [
        ...input.steps.filter((s) => s.t <= 329_000),
        ...Array.from({ length: 800 }, (_, i) => ({ attempt: 2, step: 301 + i, t: 340_000 + i * 1_000 })),
      ],
    });
    expect(sum(l.totals)).toBe(l.wallMs);
    // 300 s .. 329 s (the last step before detection) ran at a quarter of the pace.
    expect(l.totals.degraded).toBe(29_000 * 0.75);
    expect(l.totals.detection).toBe(1_000); // last step to detection
    const cost = l.incidents[0]!;
    expect(cost).toMatchObject({ endedAttempt: true, degradedMs: 29_000 * 0.75 });
    expect(cost.costMs).toBe(l.totals.degraded + l.totals.detection + l.totals.restart + l.totals.lost);
    expect(adviseInterval(l, []).mtbfMs).not.toBeNull();
  });

  it("degradation outside the attempt's productive time changes nothing", () => {
    const l = buildLedger(steady([{ ...slowLink, degraded: { from: 2_000_000, to: 3_000_000, speed: 0.5 } }]));
    expect(l.totals.degraded).toBe(0);
    expect(sum(l.totals)).toBe(l.wallMs);
  });
});
