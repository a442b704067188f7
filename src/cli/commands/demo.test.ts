import { describe, expect, it } from "vitest";
import type { AttemptRecord, StepSample } from "../../store/port.js";
import { faultDue, slurmSchedule } from "./demo.js";
import type { JobDetail } from "./jobs.js";

/** The demo's fault timing: by progress (steps reached, attempts), never by the clock. */

function attempt(n: number, pool: string, ended = false): AttemptRecord {
  return {
    jobId: "j",
    n,
    state: ended ? "FAILED" : "RUNNING",
    pool,
    nodes: ["a1", "a2"],
    masterPort: 29500 + n,
    dir: `/tmp/attempt-${n}`,
    resumeFrom: null,
    resumeStep: null,
    startedAt: n * 1000,
    endedAt: ended ? n * 1000 + 500 : null,
    reason: null,
  } as AttemptRecord;
}

function job(state: string, step: number | null, reportedBy: number, attempts: AttemptRecord[]): JobDetail {
  const last: StepSample | null =
    step === null
      ? null
      : { jobId: "j", attempt: reportedBy, rank: 0, step, t: 0, loss: 1, tokens: null, computeS: null };
  return {
    id: "j",
    name: "j",
    state,
    restarts: attempts.length - 1,
    incidents: [],
    last,
    attempts,
  } as unknown as JobDetail;
}

describe("the Slurm story's fault timing", () => {
  const [kill, hang, host] = slurmSchedule(60) as [
    ReturnType<typeof slurmSchedule>[0],
    ReturnType<typeof slurmSchedule>[0],
    ReturnType<typeof slurmSchedule>[0],
  ];

  it("plays a killed rank, a hang and a lost host, in that order, at rising steps on ascend", () => {
    expect([kill.action, hang.action, host.action]).toEqual(["kill-rank", "hang-rank", "kill-node"]);
    expect(kill.atStep).toBeLessThan(hang.atStep);
    expect(hang.atStep).toBeLessThan(host.atStep);
    expect(host.atStep).toBeLessThan(60);
    for (const f of [kill, hang, host]) expect(f.freshAttemptOn).toBe("ascend");
  });

  it("waits for the step, however long it takes", () => {
    expect(faultDue(job("RUNNING", kill.atStep - 1, 1, [attempt(1, "ascend")]), kill, 0)).toBe(false);
    expect(faultDue(job("STARTING", null, 1, [attempt(1, "ascend")]), kill, 0)).toBe(false);
    expect(faultDue(job("RUNNING", kill.atStep, 1, [attempt(1, "ascend")]), kill, 0)).toBe(true);
  });

  it("never hits the attempt the previous fault hit, even past the step", () => {
    // Attempt 1 was killed; it has not ended yet in the store, and the job still shows its last step.
    expect(faultDue(job("RUNNING", hang.atStep + 5, 1, [attempt(1, "ascend")]), hang, 1)).toBe(false);
  });

  it("waits until the new attempt reports a step of its own", () => {
    const attempts = [attempt(1, "ascend", true), attempt(2, "ascend")];
    // The newest sample is still attempt 1's: attempt 2's ranks are starting (no agent, no rank to signal yet).
    expect(faultDue(job("RUNNING", hang.atStep, 1, attempts), hang, 1)).toBe(false);
    expect(faultDue(job("RUNNING", hang.atStep, 2, attempts), hang, 1)).toBe(true);
  });

  it("does not fire on an attempt that ended or on another pool", () => {
    expect(faultDue(job("RUNNING", host.atStep, 3, [attempt(3, "ascend", true)]), host, 2)).toBe(false);
    expect(faultDue(job("RUNNING", host.atStep, 3, [attempt(3, "nvidia")]), host, 2)).toBe(false);
  });

  it("leaves the local story's faults as they were: due at their step while the job runs", () => {
    const local = { atStep: 20, action: "kill-rank" as const, rank: 1, why: "" };
    expect(faultDue(job("RUNNING", 20, 1, [attempt(1, "local-ascend")]), local, 1)).toBe(true);
    expect(faultDue(job("RUNNING", 19, 1, [attempt(1, "local-ascend")]), local, 1)).toBe(false);
  });
});
