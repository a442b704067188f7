import { describe, expect, it } from "vitest";
import type { AttemptRecord, EventRecord, IncidentRecord } from "../store/port.js";
import { calibrate, CalibrationError, planFromCalibration, type JobHistory } from "./calibrate.js";
import { parsePlan } from "./plan-file.js";
import { stringify } from "yaml";

/**
 * A run written out by hand: 2 nodes, one step a second, a checkpoint every 10 steps (0.2 s saves), a rank killed at
 * 42.5 s (detected 0.5 s later, first new step 4 s after detection, resumed from step 40), a hang at 90 s (detected
 * 10 s later), then running on.
 */
function history(): JobHistory {
  const attempts: AttemptRecord[] = [];
  const steps: JobHistory["steps"] = [];
  const events: EventRecord[] = [];
  let eventId = 0;
  const attempt = (n: number, startedAt: number, endedAt: number | null, resumeStep: number | null) =>
    attempts.push({
      jobId: "j",
      n,
      state: endedAt === null ? "RUNNING" : "FAILED",
      pool: "p",
      nodes: ["a", "b"],
      masterPort: 1,
      dir: "/x",
      resumeFrom: null,
      resumeStep,
      startedAt,
      endedAt,
      reason: null,
    } as AttemptRecord);
  const run = (n: number, fromStep: number, toStep: number, firstAt: number) => {
    for (let step = fromStep; step <= toStep; step++) {
      const t = firstAt + (step - fromStep) * 1000 + (Math.floor(step / 10) - Math.floor(fromStep / 10)) * 200;
      steps.push({ attempt: n, step, t });
      if (step % 10 === 0 && step > fromStep) {
        events.push({
          id: ++eventId,
          jobId: "j",
          t: t - 800,
          kind: "checkpoint.saved",
          message: "",
          data: { attempt: n, step, t: t - 800, saveMs: 200 },
        });
      }
    }
  };
  attempt(1, 1000, 43_500, null);
  run(1, 0, 40, 2000);
  attempt(2, 44_000, 100_500, 40);
  run(2, 40, 80, 47_000);
  attempt(3, 101_000, null, 80);
  run(3, 80, 120, 105_000);
  const incidents: IncidentRecord[] = [
    {
      id: 1,
      jobId: "j",
      attempt: 1,
      cause: "killed",
      culpritRank: 1,
      culpritNode: "b",
      detectedAt: 43_000,
      summary: "",
      evidence: { faultAt: 42_500 },
    },
    {
      id: 2,
      jobId: "j",
      attempt: 2,
      cause: "hang",
      culpritRank: 0,
      culpritNode: "a",
      detectedAt: 100_000,
      summary: "",
      evidence: { faultAt: 90_000 },
    },
  ];
  return {
    job: {
      id: "j",
      name: "j",
      state: "RUNNING",
      createdAt: 0,
      endedAt: null,
      spec: { nodes: 2, procsPerNode: 4, steps: 500 },
    },
    attempts,
    incidents,
    events,
    steps,
  };
}

describe("a plan calibrated from a job's ledger", () => {
  it("measures step time, failures by cause per node-day of running time, detection, restart and saves", () => {
    const c = calibrate(history(), { nowMs: 150_000 });
    expect(c.stepTimeS).toBeCloseTo(1, 9); // spans with a save in them are left out
    expect(c.stepNow).toBe(120);
    expect(c.remainingSteps).toBe(380);
    expect(c.causes.map((m) => [m.cause, m.count, m.detectS])).toEqual([
      ["killed", 1, 0.5],
      ["hang", 1, 10],
    ]);
    // Running time as the advisor counts it (productive + degraded + lost + checkpoint), per node.
    for (const m of c.causes) expect(m.perNodeDay).toBeCloseTo(1 / (c.runningS / 86_400) / 2, 9);
    expect(c.runningS).toBeGreaterThan(100);
    expect(c.runningS).toBeLessThan(140);
    // Detection -> first step of the next attempt: 4 s and 5 s.
    expect(c.restartS).toBeCloseTo(4.5, 9);
    expect(c.restartsMeasured).toBe(2);
    expect(c.saveS).toBeCloseTo(0.2, 9);
    expect(c.intervalS).toBeCloseTo(10, 0);
  });

  it("leaves a fault chaos injected out of the rates (as the advisor's MTBF does) but keeps its detection and restart", () => {
    const h = history();
    // `switchyard chaos kill-rank 1` just before the kill that attempt 1 ended with.
    h.events.push({
      id: 999,
      jobId: "j",
      t: 42_400,
      kind: "chaos",
      message: "chaos: kill rank 1",
      data: { action: "kill-rank", rank: 1, attempt: 1, host: "b" },
    } as EventRecord);
    const c = calibrate(h, { nowMs: 150_000 });
    expect(c.injectedLeftOut).toBe(1);
    expect(c.causes.map((m) => [m.cause, m.count])).toEqual([["hang", 1]]);
    expect(c.causes[0]!.perNodeDay).toBeCloseTo(1 / (c.runningS / 86_400) / 2, 9);
    // The drill's restart is still a measured restart.
    expect(c.restartsMeasured).toBe(2);
    const plain = calibrate(history(), { nowMs: 150_000 });
    expect(plain.injectedLeftOut).toBe(0);
    expect(plain.causes.map((m) => m.cause)).toEqual(["killed", "hang"]);
  });

  it("writes a plan that validates like a plan file, on the job's own nodes", () => {
    const plan = parsePlan(stringify(planFromCalibration(calibrate(history(), { nowMs: 150_000 }))), "calibrated");
    const s = plan.scenarios[0];
    expect(s?.fleet.devices).toBe(8);
    expect(s?.fleet.devices_per_node).toBe(4);
    expect(s?.workload.steps).toBe(380);
    expect(s?.fleet.failures.map((f) => f.cause)).toEqual(["killed", "hang"]);
  });

  it("--as-of cuts the history: only what was known then counts", () => {
    const c = calibrate(history(), { nowMs: 150_000, asOfS: 60 });
    expect(c.causes.map((m) => m.cause)).toEqual(["killed"]);
    expect(c.stepNow).toBeLessThan(60);
    expect(c.elapsedS).toBe(60);
    expect(c.cut).toBe(true);
  });

  it("refuses with a clear error and fix when there is too little history or nothing left", () => {
    const fail = (f: () => unknown): CalibrationError => {
      try {
        f();
      } catch (err) {
        if (err instanceof CalibrationError) return err;
        throw err;
      }
      throw new Error("expected a CalibrationError");
    };
    const early = fail(() => calibrate(history(), { nowMs: 150_000, asOfS: 8 }));
    expect(early.message).toMatch(/too little history .* at least 10 needed/);
    expect(early.fix).toBe("give a later --as-of");
    const noTotal = history();
    noTotal.job.spec.steps = undefined;
    expect(fail(() => calibrate(noTotal, { nowMs: 150_000 })).fix).toMatch(/--steps N/);
    const ended = history();
    ended.job.endedAt = 140_000;
    ended.job.state = "SUCCEEDED";
    expect(fail(() => calibrate(ended, { nowMs: 150_000 })).fix).toMatch(/--as-of/);
    expect(fail(() => calibrate(ended, { nowMs: 150_000, asOfS: 200 })).message).toMatch(/past the end/);
    expect(fail(() => calibrate(history(), { nowMs: 150_000, totalSteps: 100 })).message).toMatch(/nothing left/);
  });
});
