import { judgeSlowdown, type SlowdownVerdict } from "../../core/slowdown.js";
import { slowdownDefaults, type CompiledJobSpec, type SlowdownPolicy } from "../../core/spec.js";
import type { StepSample } from "../../store/port.js";

/** Rank-0 samples of the attempt the detector reads per look: enough for the baseline of a long attempt. */
export const slowdownSampleLimit = 4000;

/** The slowdown detector looks at most this often per job (ms): it reads thousands of samples. */
export const slowdownLookMs = 1000;

export interface SlowdownDetectorInput {
  now: number;
  detection: CompiledJobSpec["detection"];
  /** Rank 0's steps of this attempt, oldest first (store.recentSteps). */
  samples: readonly StepSample[];
  /** Steps of this attempt after which a checkpoint was saved. */
  checkpointSteps: readonly number[];
}

/** The job's slowdown policy: `detection.slowdown`, or the defaults for specs stored before it existed. */
export function slowdownPolicy(detection: CompiledJobSpec["detection"]): SlowdownPolicy {
  return detection.slowdown ?? { ...slowdownDefaults };
}

/**
 * The slowdown (gray failure) detector: the attempt's recent pace against its own baseline (core/slowdown.ts), from
 * rank 0's progress alone. Always returns the measured pace: the loop needs it both to open a slowdown (slow) and to
 * close one it rode out (no longer slow).
 */
export function judgeSlowdownVerdict(input: SlowdownDetectorInput): SlowdownVerdict {
  return judgeSlowdown({
    samples: input.samples.map((s) => ({ step: s.step, t: s.t })),
    checkpointSteps: input.checkpointSteps,
    now: input.now,
    policy: slowdownPolicy(input.detection),
  });
}
