/** Job and attempt lifecycles, with their terminal and failure sets stated once. */

export const JobState = {
  Pending: "PENDING",
  Starting: "STARTING",
  Running: "RUNNING",
  Recovering: "RECOVERING",
  Succeeded: "SUCCEEDED",
  Failed: "FAILED",
  Cancelled: "CANCELLED",
} as const;
export type JobState = (typeof JobState)[keyof typeof JobState];

export const AttemptState = {
  Launching: "LAUNCHING",
  Running: "RUNNING",
  Stopping: "STOPPING",
  Succeeded: "SUCCEEDED",
  Failed: "FAILED",
  Cancelled: "CANCELLED",
} as const;
export type AttemptState = (typeof AttemptState)[keyof typeof AttemptState];

export const terminalJobStates: ReadonlySet<JobState> = new Set([
  JobState.Succeeded,
  JobState.Failed,
  JobState.Cancelled,
]);
export const failedJobStates: ReadonlySet<JobState> = new Set([JobState.Failed]);
export const terminalAttemptStates: ReadonlySet<AttemptState> = new Set([
  AttemptState.Succeeded,
  AttemptState.Failed,
  AttemptState.Cancelled,
]);

const jobTransitions: Record<JobState, readonly JobState[]> = {
  PENDING: ["STARTING", "CANCELLED", "FAILED"],
  // A resume at the final step can end with no step left to run.
  STARTING: ["RUNNING", "SUCCEEDED", "RECOVERING", "FAILED", "CANCELLED"],
  RUNNING: ["SUCCEEDED", "RECOVERING", "FAILED", "CANCELLED"],
  RECOVERING: ["STARTING", "FAILED", "CANCELLED"],
  SUCCEEDED: [],
  FAILED: [],
  CANCELLED: [],
};

const attemptTransitions: Record<AttemptState, readonly AttemptState[]> = {
  LAUNCHING: ["RUNNING", "STOPPING", "FAILED", "CANCELLED"],
  RUNNING: ["SUCCEEDED", "STOPPING", "FAILED", "CANCELLED"],
  STOPPING: ["FAILED", "CANCELLED", "SUCCEEDED"],
  SUCCEEDED: [],
  FAILED: [],
  CANCELLED: [],
};

export class IllegalTransitionError extends Error {
  constructor(
    readonly machine: "job" | "attempt",
    readonly from: string,
    readonly to: string,
  ) {
    super(`illegal ${machine} transition ${from} -> ${to}`);
    this.name = "IllegalTransitionError";
  }
}

export function canTransitionJob(from: JobState, to: JobState): boolean {
  return jobTransitions[from].includes(to);
}

export function assertJobTransition(from: JobState, to: JobState): void {
  if (!canTransitionJob(from, to)) throw new IllegalTransitionError("job", from, to);
}

export function canTransitionAttempt(from: AttemptState, to: AttemptState): boolean {
  return attemptTransitions[from].includes(to);
}

export function assertAttemptTransition(from: AttemptState, to: AttemptState): void {
  if (!canTransitionAttempt(from, to)) throw new IllegalTransitionError("attempt", from, to);
}
