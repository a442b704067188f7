import { describe, expect, it } from "vitest";
import { mulberry32 } from "./random.js";
import {
  baselineOf,
  judgeSlowdown,
  slowdownBaselineAdmitExponent,
  type ProgressSample,
  type SlowdownVerdict,
} from "./slowdown.js";
import { slowdownDefaults, type SlowdownPolicy } from "./spec.js";

const policy: SlowdownPolicy = { ...slowdownDefaults };

interface Series {
  samples: ProgressSample[];
  checkpointSteps: number[];
}

/**
 * A char-GPT-like run: steps of `stepS` (±20% jitter, seeded), a checkpoint every `ckptEvery` steps (the save adds
 * 1.5 s to the next step and 0.3 s to the one after), an eval step every `evalEvery` steps (3 s longer), and from
 * `slowFromS` on every step takes `slowFactor` times as long. `pace(tS)`, when given, scales every step by the machine's
 * load at that time (seconds since launch).
 */
function run(o: {
  seconds: number;
  stepS?: number;
  ckptEvery?: number;
  evalEvery?: number;
  slowFromS?: number;
  slowUntilS?: number;
  slowFactor?: number;
  extra?: (step: number) => number;
  pace?: (tS: number) => number;
  seed?: number;
}): Series {
  const rnd = mulberry32(o.seed ?? 7);
  const stepS = o.stepS ?? 0.3;
  const samples: ProgressSample[] = [];
  const checkpointSteps: number[] = [];
  let t = 4_000; // launch + imports
  for (let step = 1; t < o.seconds * 1000; step++) {
    let dur = stepS * (0.8 + 0.4 * rnd()) * (o.pace?.(t / 1000) ?? 1);
    const slow = o.slowFromS !== undefined && t >= o.slowFromS * 1000 && t < (o.slowUntilS ?? Infinity) * 1000;
    if (slow) dur *= o.slowFactor ?? 2;
    if (o.ckptEvery && step > 1 && (step - 1) % o.ckptEvery === 0) dur += 1.5;
    if (o.ckptEvery && step > 2 && (step - 2) % o.ckptEvery === 0) dur += 0.3;
    if (o.evalEvery && step % o.evalEvery === 0) dur += 3;
    dur += o.extra?.(step) ?? 0;
    t += dur * 1000;
    samples.push({ step, t: Math.round(t) });
    if (o.ckptEvery && step % o.ckptEvery === 0) checkpointSteps.push(step);
  }
  return { samples, checkpointSteps };
}

/** The verdicts a supervisor ticking every second would get over the run. */
function tick(series: Series, p: SlowdownPolicy = policy): Array<{ now: number; v: SlowdownVerdict }> {
  const out: Array<{ now: number; v: SlowdownVerdict }> = [];
  const end = Math.max(...series.samples.map((s) => s.t));
  for (let now = 1000; now <= end; now += 1000) {
    const samples = series.samples.filter((s) => s.t <= now);
    const checkpointSteps = series.checkpointSteps.filter((c) => samples.some((s) => s.step === c));
    out.push({ now, v: judgeSlowdown({ samples, checkpointSteps, now, policy: p }) });
  }
  return out;
}

const firstFire = (vs: Array<{ now: number; v: SlowdownVerdict }>) => vs.find((x) => x.v.slow);

describe("slowdown detection", () => {
  it("never fires on a healthy run with checkpoint saves and eval steps (10 minutes, every second)", () => {
    const series = run({ seconds: 600, ckptEvery: 20, evalEvery: 50 });
    const verdicts = tick(series);
    expect(firstFire(verdicts)).toBeUndefined();
    const last = verdicts.at(-1)!.v;
    expect(last.baselineStepS).toBeGreaterThan(0.27);
    expect(last.baselineStepS).toBeLessThan(0.33);
    expect(last.factor).toBeLessThan(1.2);
  });

  it("does not fire when checkpoints are not left out: the save steps are what it skips", () => {
    // The same run with saves so long (8 s every 10 steps) that they would be a majority of the time: still quiet,
    // because the intervals touching a save are not step times at all.
    const series = run({ seconds: 300, ckptEvery: 10, extra: (s) => (s > 1 && (s - 1) % 10 === 0 ? 8 : 0) });
    expect(firstFire(tick(series))).toBeUndefined();
  });

  it("catches a 2x slowdown within a minute and dates it from its onset", () => {
    const series = run({ seconds: 240, ckptEvery: 20, evalEvery: 50, slowFromS: 90, slowFactor: 2 });
    const verdicts = tick(series);
    const fire = firstFire(verdicts);
    expect(fire).toBeDefined();
    expect(fire!.now).toBeGreaterThan(90_000 + policy.sustainSeconds * 1000);
    expect(fire!.now - 90_000).toBeLessThan(60_000);
    expect(fire!.v.factor).toBeGreaterThan(1.8);
    expect(fire!.v.factor).toBeLessThan(2.3);
    expect(Math.abs(fire!.v.since! - 90_000)).toBeLessThan(5_000);
    expect(fire!.v.baselineStepS).toBeCloseTo(0.3, 1);
    expect(fire!.v.recentStepS).toBeCloseTo(0.6, 1);
    expect(fire!.v.reason).toMatch(/recent step 0\.\d\d s against a baseline of 0\.\d\d s \(\d\.\d\dx; slow from 2x\)/);
    // Once slow, it stays slow while the slowdown lasts (the baseline is the fastest block, not a running mean).
    expect(verdicts.filter((x) => x.now > fire!.now).every((x) => x.v.slow)).toBe(true);
  });

  it("catches a collapse (40x, as a 100 Mbit/s link under an all-reduce) within 90 s, with the factor measured", () => {
    // 12 s steps: a window needs 3 slow steps of its 5 (36 s), then the 15 s sustain.
    const fire = firstFire(tick(run({ seconds: 240, ckptEvery: 20, slowFromS: 90, slowFactor: 40 })));
    expect(fire).toBeDefined();
    expect(fire!.now - 90_000).toBeLessThan(90_000);
    expect(fire!.v.factor).toBeGreaterThan(30);
  });

  it("does not fire on a 1.3x slowdown", () => {
    const verdicts = tick(run({ seconds: 300, ckptEvery: 20, evalEvery: 50, slowFromS: 90, slowFactor: 1.3 }));
    expect(firstFire(verdicts)).toBeUndefined();
    expect(verdicts.at(-1)!.v.factor).toBeGreaterThan(1.2);
    expect(verdicts.at(-1)!.v.factor).toBeLessThan(1.45);
  });

  it("does not fire on a single long eval step (30 s), nor on a 2x blip shorter than the window", () => {
    expect(firstFire(tick(run({ seconds: 240, extra: (s) => (s === 300 ? 30 : 0) })))).toBeUndefined();
    expect(firstFire(tick(run({ seconds: 240, slowFromS: 100, slowUntilS: 110, slowFactor: 2 })))).toBeUndefined();
  });

  it("a slowdown must last sustainSeconds", () => {
    const series = run({ seconds: 240, slowFromS: 90, slowFactor: 3 });
    const quick = firstFire(tick(series, { ...policy, sustainSeconds: 0 }))!;
    const patient = firstFire(tick(series, { ...policy, sustainSeconds: 40 }))!;
    expect(patient.now - quick.now).toBeGreaterThanOrEqual(39_000);
  });

  it("has no verdict before a baseline exists, and a run slow from its start has no fast baseline to fire against", () => {
    const early = judgeSlowdown({ samples: run({ seconds: 10 }).samples, now: 10_000, policy });
    expect(early).toMatchObject({ slow: false, baselineStepS: null, factor: null });
    expect(early.reason).toMatch(/^no baseline yet: needs 10 warm-up steps/);
    expect(firstFire(tick(run({ seconds: 200, slowFromS: 0, slowFactor: 40 })))).toBeUndefined();
  });

  it("works on thinned samples (every 5th step stored) and ignores duplicate and out-of-order reports", () => {
    const series = run({ seconds: 240, slowFromS: 90, slowFactor: 2 });
    const thinned = series.samples.filter((s) => s.step % 5 === 0);
    const shuffled = [...thinned].reverse();
    shuffled.push({ ...thinned[10]!, t: thinned[10]!.t + 50 }); // a later duplicate of a step: first report wins
    const fire = firstFire(tick({ samples: shuffled, checkpointSteps: [] }));
    expect(fire).toBeDefined();
    expect(fire!.now - 90_000).toBeLessThan(60_000);
    expect(fire!.v.factor).toBeGreaterThan(1.8);
  });

  it("slow steps (30 s each) use at least 5 of them per window", () => {
    const fire = firstFire(tick(run({ seconds: 1500, stepS: 30, slowFromS: 500, slowFactor: 2 })));
    expect(fire).toBeDefined();
    expect(fire!.v.baselineStepS).toBeGreaterThan(25);
    expect(fire!.v.factor).toBeGreaterThan(1.8);
  });

  it("one outlier-fast block among ordinary ones does not set the baseline: ordinary steps after it are not slow", () => {
    // 0.5 s steps, and for 25 s (one 20 s block and a bit) the machine is quiet: 0.24 s steps, 2.08x faster. Taken as
    // the baseline, every ordinary step after it would look like a 2.08x slowdown.
    const series = run({ seconds: 400, stepS: 0.5, slowFromS: 150, slowUntilS: 175, slowFactor: 0.48 });
    const verdicts = tick(series);
    expect(firstFire(verdicts)).toBeUndefined();
    const fastest = Math.min(...verdicts.map((x) => x.v.recentStepS ?? Infinity));
    expect(fastest).toBeLessThan(0.3); // the quiet stretch was seen: a whole window of fast steps
    const last = verdicts.at(-1)!.v;
    expect(last.baselineStepS).toBeGreaterThan(0.45);
    expect(last.baselineStepS).toBeLessThan(0.55);
    expect(last.factor).toBeLessThan(1.2);
  });

  it("a quiet stretch of two blocks among 20 minutes of load that varies 0.40-0.69 s a step is no baseline (the soak)", () => {
    // The soak's false alarm: a 40 s stretch at 0.33 s a step, every other 20 s block at 0.40-0.69 s, a minute at
    // 0.7 s under rising load (2.1x the quiet stretch).
    const rnd = mulberry32(99);
    const levels = Array.from({ length: 70 }, () => 0.4 + 0.29 * rnd());
    const load = (tS: number) =>
      tS >= 300 && tS < 340 ? 0.33 : tS >= 900 && tS < 960 ? 0.7 : levels[Math.floor(tS / 20)]!;
    const verdicts = tick(run({ seconds: 1200, stepS: 1, pace: load }));
    expect(firstFire(verdicts)).toBeUndefined();
    expect(Math.min(...verdicts.map((x) => x.v.recentStepS ?? Infinity))).toBeLessThan(0.36);
    const during = verdicts.filter((x) => x.now > 920_000 && x.now < 960_000);
    expect(Math.min(...during.map((x) => x.v.recentStepS!))).toBeGreaterThan(0.63);
    // The baseline sits at the lower quartile of the ordinary blocks, not at the quiet stretch.
    expect(verdicts.at(-1)!.v.baselineStepS).toBeGreaterThan(0.4);
  });

  it("a sustained 2x slowdown cannot lift the baseline: 10 minutes into it, it is still measured as 2x", () => {
    const verdicts = tick(run({ seconds: 900, ckptEvery: 20, slowFromS: 300, slowFactor: 2 }));
    const fire = firstFire(verdicts);
    expect(fire).toBeDefined();
    expect(fire!.now - 300_000).toBeLessThan(60_000);
    expect(Math.abs(fire!.v.since! - 300_000)).toBeLessThan(5_000);
    const last = verdicts.at(-1)!.v;
    expect(last.baselineStepS).toBeGreaterThan(0.27);
    expect(last.baselineStepS).toBeLessThan(0.31);
    expect(last.factor).toBeGreaterThan(1.9);
    expect(last.slow).toBe(true);
  });

  it("catches a 2x slowdown that begins right after the first block, and one halfway through the second", () => {
    // When the first block (and so the baseline) is complete: steps before a slowdown do not depend on it.
    const first = tick(run({ seconds: 60 })).find((x) => x.v.baselineStepS !== null)!.now;
    for (const onset of [first, first + 10_000]) {
      const verdicts = tick(run({ seconds: 200, slowFromS: onset / 1000, slowFactor: 2 }));
      const fire = firstFire(verdicts);
      expect(fire, `onset ${onset} ms`).toBeDefined();
      expect(fire!.now - onset).toBeLessThan(60_000);
      expect(fire!.v.baselineStepS).toBeCloseTo(0.3, 1);
      expect(fire!.v.factor).toBeGreaterThan(1.8);
      expect(verdicts.at(-1)!.v.baselineStepS).toBeCloseTo(0.3, 1);
    }
  });
});

describe("baselineOf: the baseline of block medians", () => {
  const lone = 2 ** slowdownBaselineAdmitExponent;
  it("keeps the fastest block of an even pace (medians within the noise tolerance)", () => {
    expect(baselineOf([0.3], lone)).toBe(0.3);
    expect(baselineOf([0.29, 0.3], lone)).toBe(0.29);
    expect(baselineOf([0.281, 0.285, 0.29, 0.293, 0.295, 0.3, 0.301, 0.302, 0.31, 0.312], lone)).toBe(0.281);
  });
  it("leaves out a lone fast block, however few blocks there are", () => {
    expect(baselineOf([0.24, 0.5], lone)).toBe(0.5);
    expect(baselineOf([0.1, 0.24, 0.5, 0.52], lone)).toBe(0.5);
    // A block only 1.2x faster has company: a mixed block (a slowdown starting halfway through it) cannot lift it.
    expect(baselineOf([0.3, 0.36], lone)).toBe(0.3);
  });
  it("a fast stretch of up to a quarter of the blocks does not set it; more than that does", () => {
    const ordinary = [0.45, 0.48, 0.5, 0.52, 0.55, 0.6, 0.62, 0.65, 0.69];
    expect(
      baselineOf(
        [0.33, 0.33, ...ordinary].sort((a, b) => a - b),
        lone,
      ),
    ).toBeGreaterThanOrEqual(0.45);
    expect(baselineOf([0.33, 0.33, 0.33, 0.33, 0.45, 0.5], lone)).toBe(0.33);
  });
});
