/**
 * Discrete-event Monte Carlo engine over virtual time.
 *
 * One trial follows one training run through compute, blocking checkpoint saves, failures, detection, waiting for a
 * spare node, restart and fallback to another fleet. Failures of the whole job form a Poisson process whose rate is
 * the per-node rate times the nodes in use; the cause of each failure is drawn by its share of that rate. This keeps
 * a trial's cost proportional to its number of events, not to the fleet size, and needs no per-device objects.
 *
 * Failures arrive while the job computes, saves or restarts. While a failure is being detected, or the job waits for a
 * repaired node, the job holds no running processes that could be interrupted, so the failure clock is paused there;
 * an exponential clock may be re-drawn on resuming without changing the statistics.
 */
import type { CompiledFleet, CompiledPlan, CompiledScenario } from "./compile.js";
import { Rng } from "./rng.js";

/** Where each second of wall time went. The categories sum to the wall time of the trial. */
export const TIME_CATEGORIES = [
  "productive",
  "degraded",
  "checkpoint",
  "lost",
  "detection",
  "restart",
  "waiting",
  "fallback",
] as const;
export type TimeCategory = (typeof TIME_CATEGORIES)[number];

const PRODUCTIVE = 0; // useful compute at full fleet speed
const DEGRADED = 1; // extra compute time caused by stragglers or a shrunk fleet
const CHECKPOINT = 2; // blocking saves that completed
const LOST = 3; // compute and saves whose result a failure discarded
const DETECTION = 4;
const RESTART = 5; // restart overhead plus checkpoint load
const WAITING = 6; // no spare node: waiting for a repaired one
const FALLBACK = 7; // moving the job to the fallback fleet

const PHASE_COMPUTE = 0;
const PHASE_SAVE = 1;
const PHASE_DETECT = 2;
const PHASE_WAIT = 3;
const PHASE_RESTART = 4;
const PHASE_MIGRATE = 5;

/** A trial that needs more than this multiple of its failure-free time counts as never finishing. */
export const GIVE_UP_FACTOR = 20;
/** Nor does one with more interruptions than this: it keeps a hopeless plan from running for minutes. */
export const GIVE_UP_INTERRUPTIONS = 100_000;

export interface SimulationOptions {
  trials: number;
  seed: number;
}

/** Raw per-trial results of one scenario; summarize() turns them into a report. */
export interface ScenarioRun {
  scenario: CompiledScenario;
  trials: number;
  seed: number;
  /** Failure-free time to train at full speed without checkpoints (completion mode) or the window length. */
  nominalS: number;
  /** Wall time of each trial: time to train, the give-up time for unfinished trials, or the window. */
  wallS: Float64Array;
  finished: Uint8Array;
  /** Productive seconds of each trial (ETTR = productive / wall). */
  productiveS: Float64Array;
  /** Unexpected interruptions (failures) of each trial, straggler removals excluded. */
  interruptions: Float64Array;
  /** Sum over trials of interruptions per cause (indexes into CompiledPlan.causes). */
  interruptionsByCause: Float64Array;
  /** Sum over trials of planned restarts that removed a straggler. */
  stragglerRemovals: number;
  /** Trials that moved to the fallback fleet. */
  fellBack: number;
  /** Sum over trials of seconds per TIME_CATEGORIES entry. */
  timeS: Float64Array;
}

export function simulateScenario(
  plan: CompiledPlan,
  scenario: CompiledScenario,
  options: SimulationOptions,
): ScenarioRun {
  const primary = plan.fleets[scenario.fleetIndex];
  if (primary === undefined) throw new Error(`internal: scenario ${scenario.name} has no fleet`);
  const nominalS = scenario.windowS ?? scenario.totalWork / primary.workPerS;
  const run: ScenarioRun = {
    scenario,
    trials: options.trials,
    seed: options.seed,
    nominalS,
    wallS: new Float64Array(options.trials),
    finished: new Uint8Array(options.trials),
    productiveS: new Float64Array(options.trials),
    interruptions: new Float64Array(options.trials),
    interruptionsByCause: new Float64Array(plan.causes.length),
    stragglerRemovals: 0,
    fellBack: 0,
    timeS: new Float64Array(TIME_CATEGORIES.length),
  };
  const rng = new Rng(options.seed);
  const maxNodes = plan.fleets.reduce((m, f) => Math.max(m, f.nodes + f.spareNodes), 1);
  const scratch: TrialScratch = {
    repairReturns: new Float64Array(maxNodes + 1),
    recentFailures: new Float64Array(plan.fleets.reduce((m, f) => Math.max(m, f.fallback?.afterFailures ?? 0), 1)),
    timeS: new Float64Array(TIME_CATEGORIES.length),
  };
  const endS = scenario.windowS ?? GIVE_UP_FACTOR * nominalS;
  for (let trial = 0; trial < options.trials; trial++) {
    runTrial(plan, primary, scenario, endS, rng, scratch, run, trial);
  }
  return run;
}

interface TrialScratch {
  /** FIFO of times at which nodes under repair come back; replacement time is constant per fleet. */
  repairReturns: Float64Array;
  /** Ring of recent failure times, for the fallback rule "N failures within T". */
  recentFailures: Float64Array;
  timeS: Float64Array;
}

function runTrial(
  plan: CompiledPlan,
  primary: CompiledFleet,
  scenario: CompiledScenario,
  endS: number,
  rng: Rng,
  scratch: TrialScratch,
  run: ScenarioRun,
  trial: number,
): void {
  const time = scratch.timeS;
  time.fill(0);
  const repair = scratch.repairReturns;
  const recent = scratch.recentFailures;
  const totalWork = scenario.totalWork;
  const windowMode = scenario.windowS !== undefined;
  // A window ends by itself; a run to completion on a hopeless fleet might not within any sensible time.
  const giveUpOnInterruptions = !windowMode;

  let fleet = primary;
  let active = fleet.nodes;
  let spares = fleet.spareNodes;
  let repairHead = 0;
  let repairCount = 0;
  let recentCount = 0;
  let recentNext = 0;
  let fellBack = false;

  let t = 0;
  let committedWork = 0;
  // Progress since the last completed checkpoint: kept only if the next save completes.
  let sinceWork = 0;
  let sinceCompute = 0;
  let sinceProductive = 0;

  let straggling = false;
  // Set once a straggler has been noticed; it stays in the job only while there is nothing to replace it with.
  let stragglerDetected = false;
  let stragglerDetectAt = Infinity;
  let nextStragglerAt = t + rng.nextExponential(fleet.stragglerRatePerNodeS * active);
  let nextFailureAt = t + rng.nextExponential(fleet.failureRatePerNodeS * active);

  let phase = PHASE_COMPUTE;
  let phaseEnd = 0;
  let pendingNodeLoss = false;
  let pendingFallback = false;
  let pendingStragglerRemoval = false;
  let interruptions = 0;
  let finished = false;

  const drainRepairs = (): void => {
    while (repairCount > 0 && (repair[repairHead] ?? Infinity) <= t) {
      repairHead = (repairHead + 1) % repair.length;
      repairCount--;
      spares++;
    }
  };
  const sendToRepair = (): void => {
    repair[(repairHead + repairCount) % repair.length] = t + fleet.nodeReplaceS;
    repairCount++;
  };
  /** Replaces one node of the job; false when the job must wait for a repaired one. */
  const replaceNode = (): boolean => {
    drainRepairs();
    sendToRepair();
    if (spares > 0) {
      spares--;
      return true;
    }
    active--;
    return fleet.shrinkOnNoSpare && active >= fleet.shrinkFloorNodes;
  };
  const canRemoveNode = (): boolean => {
    drainRepairs();
    return spares > 0 || (fleet.shrinkOnNoSpare && active - 1 >= fleet.shrinkFloorNodes);
  };
  const enterRestart = (): void => {
    drainRepairs();
    // A shrunk job takes back repaired nodes whenever it restarts anyway.
    while (active < fleet.nodes && spares > 0) {
      active++;
      spares--;
    }
    // A straggler that was detected but kept for lack of spares goes out with this restart if it now can.
    if (straggling && stragglerDetected) {
      if (spares > 0) {
        spares--;
        sendToRepair();
        straggling = false;
        stragglerDetected = false;
        stragglerDetectAt = Infinity;
        run.stragglerRemovals++;
      } else {
        stragglerDetectAt = repairCount > 0 ? (repair[repairHead] ?? Infinity) : Infinity;
      }
    }
    phase = PHASE_RESTART;
    phaseEnd = t + fleet.restartS + fleet.loadS;
    nextFailureAt = t + rng.nextExponential(fleet.failureRatePerNodeS * active);
    if (!straggling) nextStragglerAt = t + rng.nextExponential(fleet.stragglerRatePerNodeS * active);
  };
  const discardSinceCheckpoint = (): void => {
    time[LOST] = (time[LOST] ?? 0) + sinceCompute;
    sinceWork = 0;
    sinceCompute = 0;
    sinceProductive = 0;
  };
  const commitSinceCheckpoint = (): void => {
    committedWork += sinceWork;
    time[PRODUCTIVE] = (time[PRODUCTIVE] ?? 0) + sinceProductive;
    time[DEGRADED] = (time[DEGRADED] ?? 0) + (sinceCompute - sinceProductive);
    sinceWork = 0;
    sinceCompute = 0;
    sinceProductive = 0;
  };
  const fail = (): void => {
    const u = rng.nextFloat();
    const shares = fleet.causeCumulativeShare;
    let cause = 0;
    while (cause < shares.length - 1 && u >= (shares[cause] ?? 1)) cause++;
    const causeId = fleet.causeIds[cause] ?? 0;
    run.interruptionsByCause[causeId] = (run.interruptionsByCause[causeId] ?? 0) + 1;
    interruptions++;
    discardSinceCheckpoint();
    pendingStragglerRemoval = false;
    pendingNodeLoss = fleet.causeReplacesNode[cause] === 1;
    const rule = fleet.fallback;
    if (rule !== undefined && !fellBack) {
      recent[recentNext] = t;
      recentNext = (recentNext + 1) % rule.afterFailures;
      recentCount = Math.min(recentCount + 1, rule.afterFailures);
      // recentNext now points at the oldest of the last afterFailures failures.
      if (recentCount === rule.afterFailures && t - (recent[recentNext] ?? 0) <= rule.withinS) pendingFallback = true;
    }
    phase = PHASE_DETECT;
    phaseEnd = t + (fleet.causeDetectS[cause] ?? 0);
    nextFailureAt = Infinity;
  };

  for (;;) {
    if (phase === PHASE_COMPUTE) {
      const speed = (active / fleet.nodes) * (straggling ? 1 / (1 + fleet.stragglerSlowdown) : 1);
      const workRate = speed * fleet.workPerS;
      const stragglerEventAt = Math.max(t, straggling ? stragglerDetectAt : nextStragglerAt);
      const tau = fleet.intervalS;

      // Skip whole compute+save cycles that end before the next event: the common case, done in O(1).
      if (sinceCompute === 0) {
        const cycle = tau + fleet.saveS;
        const nextEvent = Math.min(nextFailureAt, stragglerEventAt, endS);
        let cycles = Math.floor((nextEvent - t) / cycle);
        if (totalWork !== Infinity)
          cycles = Math.min(cycles, Math.floor((totalWork - committedWork) / (tau * workRate)) - 1);
        if (cycles > 0) {
          t += cycles * cycle;
          committedWork += cycles * tau * workRate;
          time[PRODUCTIVE] = (time[PRODUCTIVE] ?? 0) + cycles * tau * speed;
          time[DEGRADED] = (time[DEGRADED] ?? 0) + cycles * tau * (1 - speed);
          time[CHECKPOINT] = (time[CHECKPOINT] ?? 0) + cycles * fleet.saveS;
        }
      }

      const segmentEnd = t + (tau - sinceCompute);
      const doneAt = totalWork === Infinity ? Infinity : t + (totalWork - committedWork - sinceWork) / workRate;
      const next = Math.max(t, Math.min(segmentEnd, doneAt, nextFailureAt, stragglerEventAt, endS));
      const dt = next - t;
      sinceCompute += dt;
      sinceWork += dt * workRate;
      sinceProductive += dt * speed;
      t = next;

      if (next === doneAt && doneAt <= endS) {
        commitSinceCheckpoint();
        committedWork = totalWork;
        finished = true;
        break;
      }
      if (next === endS) {
        // A window ends mid-segment; that work would be saved at the next checkpoint.
        if (windowMode) commitSinceCheckpoint();
        break;
      }
      if (next === nextFailureAt) {
        fail();
        if (giveUpOnInterruptions && interruptions >= GIVE_UP_INTERRUPTIONS) break;
      } else if (next === stragglerEventAt) {
        if (!straggling) {
          straggling = true;
          stragglerDetectAt = t + fleet.stragglerDetectS;
          nextStragglerAt = Infinity;
        } else if (canRemoveNode()) {
          // The culprit is slow, not dead: save first, then restart without it, so no work is lost.
          stragglerDetected = true;
          pendingStragglerRemoval = true;
          stragglerDetectAt = Infinity;
          phase = PHASE_SAVE;
          phaseEnd = t + fleet.saveS;
        } else {
          // Nothing to replace it with: running slowly beats waiting. Look again when a repaired node is back.
          stragglerDetected = true;
          stragglerDetectAt = repairCount > 0 ? (repair[repairHead] ?? Infinity) : Infinity;
        }
      } else {
        phase = PHASE_SAVE;
        phaseEnd = t + fleet.saveS;
      }
      continue;
    }

    if (phase === PHASE_SAVE || phase === PHASE_RESTART) {
      const next = Math.min(phaseEnd, nextFailureAt, endS);
      const dt = next - t;
      t = next;
      if (next === endS && next < phaseEnd && next < nextFailureAt) {
        time[phase === PHASE_SAVE ? CHECKPOINT : RESTART] =
          (time[phase === PHASE_SAVE ? CHECKPOINT : RESTART] ?? 0) + dt;
        if (windowMode && phase === PHASE_SAVE) commitSinceCheckpoint();
        break;
      }
      if (next === nextFailureAt && next < phaseEnd) {
        time[phase === PHASE_SAVE ? LOST : RESTART] = (time[phase === PHASE_SAVE ? LOST : RESTART] ?? 0) + dt;
        fail();
        if (giveUpOnInterruptions && interruptions >= GIVE_UP_INTERRUPTIONS) break;
        continue;
      }
      if (phase === PHASE_RESTART) {
        time[RESTART] = (time[RESTART] ?? 0) + dt;
        phase = PHASE_COMPUTE;
        continue;
      }
      time[CHECKPOINT] = (time[CHECKPOINT] ?? 0) + dt;
      commitSinceCheckpoint();
      if (!pendingStragglerRemoval) {
        phase = PHASE_COMPUTE;
        continue;
      }
      pendingStragglerRemoval = false;
      straggling = false;
      stragglerDetected = false;
      run.stragglerRemovals++;
      if (replaceNode()) {
        enterRestart();
      } else {
        phase = PHASE_WAIT;
        phaseEnd = repair[repairHead] ?? t;
        nextFailureAt = Infinity;
      }
      continue;
    }

    // Detection, waiting and migration: no failure clock, only the phase end and the window end.
    const next = Math.min(phaseEnd, endS);
    const dt = next - t;
    t = next;
    const category = phase === PHASE_DETECT ? DETECTION : phase === PHASE_WAIT ? WAITING : FALLBACK;
    time[category] = (time[category] ?? 0) + dt;
    if (next === endS && next < phaseEnd) break;

    if (phase === PHASE_DETECT) {
      if (pendingFallback) {
        pendingFallback = false;
        phase = PHASE_MIGRATE;
        phaseEnd = t + (fleet.fallback?.migrateS ?? 0);
      } else if (!pendingNodeLoss || replaceNode()) {
        enterRestart();
      } else {
        phase = PHASE_WAIT;
        phaseEnd = repair[repairHead] ?? t;
      }
    } else if (phase === PHASE_WAIT) {
      enterRestart();
    } else {
      const target = plan.fleets[fleet.fallback?.fleetIndex ?? -1];
      if (target !== undefined) {
        // The work done so far is in steps or tokens, so it carries over to a fleet with a different speed.
        fleet = target;
        active = fleet.nodes;
        spares = fleet.spareNodes;
        repairHead = 0;
        repairCount = 0;
        straggling = false;
        stragglerDetected = false;
        stragglerDetectAt = Infinity;
        fellBack = true;
        run.fellBack++;
      }
      enterRestart();
    }
  }

  // A run given up on mid-segment never saves that work.
  discardSinceCheckpoint();
  let wall = 0;
  for (let c = 0; c < time.length; c++) {
    const seconds = time[c] ?? 0;
    wall += seconds;
    run.timeS[c] = (run.timeS[c] ?? 0) + seconds;
  }
  run.wallS[trial] = windowMode ? (scenario.windowS ?? t) : wall;
  run.finished[trial] = finished ? 1 : 0;
  run.productiveS[trial] = time[PRODUCTIVE] ?? 0;
  run.interruptions[trial] = interruptions;
}
