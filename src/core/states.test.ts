import { describe, expect, it } from "vitest";
import {
  AttemptState,
  IllegalTransitionError,
  JobState,
  assertAttemptTransition,
  assertJobTransition,
  canTransitionJob,
  terminalJobStates,
} from "./states.js";

describe("job state machine", () => {
  it("walks the recovery cycle", () => {
    const path: JobState[] = ["PENDING", "STARTING", "RUNNING", "RECOVERING", "STARTING", "RUNNING", "SUCCEEDED"];
    for (let i = 1; i < path.length; i++) expect(() => assertJobTransition(path[i - 1]!, path[i]!)).not.toThrow();
  });

  it("never leaves a terminal state", () => {
    for (const from of terminalJobStates) {
      for (const to of Object.values(JobState)) expect(canTransitionJob(from, to)).toBe(false);
    }
  });

  it("can succeed from STARTING (a resume at the final step has nothing left to run)", () => {
    expect(() => assertJobTransition(JobState.Starting, JobState.Succeeded)).not.toThrow();
  });

  it("cannot succeed without an attempt, nor run again after recovering without starting", () => {
    expect(() => assertJobTransition(JobState.Pending, JobState.Succeeded)).toThrow(IllegalTransitionError);
    expect(() => assertJobTransition(JobState.Recovering, JobState.Running)).toThrow(
      "illegal job transition RECOVERING -> RUNNING",
    );
  });

  it("can be cancelled or failed from every live state", () => {
    for (const from of Object.values(JobState).filter((s) => !terminalJobStates.has(s))) {
      expect(canTransitionJob(from, JobState.Cancelled)).toBe(true);
      expect(canTransitionJob(from, JobState.Failed)).toBe(true);
    }
  });
});

describe("attempt state machine", () => {
  it("stops before it fails when the supervisor takes it down", () => {
    expect(() => assertAttemptTransition(AttemptState.Running, AttemptState.Stopping)).not.toThrow();
    expect(() => assertAttemptTransition(AttemptState.Stopping, AttemptState.Failed)).not.toThrow();
    expect(() => assertAttemptTransition(AttemptState.Failed, AttemptState.Running)).toThrow(IllegalTransitionError);
  });
});
