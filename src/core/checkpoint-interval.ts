/**
 * Checkpoint-interval math shared by the planner (sim) and the supervisor's goodput advisor.
 *
 * All functions are pure and take seconds. Symbols follow Daly (2006), "A higher order estimate of the optimum
 * checkpoint interval for restart dumps": delta = blocking checkpoint save time, M = mean time between failures of the
 * whole job, R = time from a failure until computation resumes (detection + restart + checkpoint load), tau = compute
 * time between two checkpoints.
 */

/** Young (1974): tau = sqrt(2 * delta * M). First-order optimum, good when delta << M. */
export function youngInterval(deltaS: number, mtbfS: number): number {
  assertPositive("deltaS", deltaS);
  assertPositive("mtbfS", mtbfS);
  return Math.sqrt(2 * deltaS * mtbfS);
}

/**
 * Daly (2006, Eq. 37): higher-order optimum. For delta < 2M,
 * tau = sqrt(2 delta M) * (1 + (1/3) sqrt(delta / 2M) + (1/9) (delta / 2M)) - delta; otherwise tau = M.
 */
export function dalyInterval(deltaS: number, mtbfS: number): number {
  assertPositive("deltaS", deltaS);
  assertPositive("mtbfS", mtbfS);
  if (deltaS >= 2 * mtbfS) return mtbfS;
  const x = deltaS / (2 * mtbfS);
  return Math.sqrt(2 * deltaS * mtbfS) * (1 + Math.sqrt(x) / 3 + x / 9) - deltaS;
}

export interface GoodputInputs {
  /** Compute time between checkpoints (tau). */
  intervalS: number;
  /** Blocking save time per checkpoint (delta). */
  saveS: number;
  /** Time from a failure until computation resumes: detection + restart + checkpoint load (R). */
  restartS: number;
  /** Mean time between failures of the whole job (M). */
  mtbfS: number;
}

/**
 * Expected goodput (useful compute time / wall time, i.e. ETTR) under Daly's complete model: failures arrive as a
 * Poisson process with mean M, also during saves and restarts, and a failure loses all work since the last
 * completed checkpoint. Wall/solve = M e^(R/M) (e^((tau+delta)/M) - 1) / tau (Daly 2006, the complete model that Eq. 37 approximates).
 */
export function expectedGoodput({ intervalS, saveS, restartS, mtbfS }: GoodputInputs): number {
  assertPositive("intervalS", intervalS);
  assertPositive("mtbfS", mtbfS);
  if (!(saveS >= 0)) throw new RangeError(`saveS must be >= 0, got ${saveS}`);
  if (!(restartS >= 0)) throw new RangeError(`restartS must be >= 0, got ${restartS}`);
  // expm1 keeps precision when (tau + delta) << M, the usual regime.
  const wallPerSolve = (mtbfS * Math.exp(restartS / mtbfS) * Math.expm1((intervalS + saveS) / mtbfS)) / intervalS;
  return 1 / wallPerSolve;
}

function assertPositive(name: string, value: number): void {
  if (!(value > 0) || !Number.isFinite(value))
    throw new RangeError(`${name} must be a positive finite number, got ${value}`);
}
