import { describe, expect, it } from "vitest";
import { mulberry32 } from "./random.js";
import { judgeSlowdown, type ProgressSample, type SlowdownVerdict } from "./slowdown.js";
import { slowdownDefaults, type SlowdownPolicy } from "./spec.js";

const policy: SlowdownPolicy = { ...slowdownDefaults };

interface Series {
  samples: ProgressSample[];
  checkpointSteps: number[];
}

/**
 * A char-GPT-like run: steps of `stepS` (±20% jitter, seeded), a checkpoint every `ckptEvery` steps (the save adds
 * 1.5 s to the next step and 0.3 s to the one after), an eval step every `evalEvery` steps (3 s longer), and from
 * `slowFromS` on every step takes `slowFactor` times as long.
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
  seed?: number;
}): Series {
  const rnd = mulberry32(o.seed ?? 7);
  const stepS = o.stepS ?? 0.3;
  const samples: ProgressSample[] = [];
  const checkpointSteps: number[] = [];
  let t = 4_000; // launch + imports
  for (let step = 1; t < o.seconds * 1000; step++) {
    let dur = stepS * (0.8 + 0.4 * rnd());
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
});
