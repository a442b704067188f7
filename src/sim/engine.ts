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
 * an exponential clock may be re-drawn on resuming without changing the statistics. The same memorylessness lets the
 * rate change piecewise (hosts in burn-in, repeat offenders, replicas dropped): the clock is re-drawn at each change.
 *
 * Beyond independent host failures a trial models failure domains (one event takes k hosts) and whole-cluster
 * outages, durations with spread (lognormal), an in-memory checkpoint tier in front of the persistent one, partial
 * recovery of data-parallel replicas, a degraded interconnect (steady and in collapse episodes), infant mortality and
 * repeat offenders, manual handling with working hours, and loss spikes that roll back several checkpoints.
 * docs/planner.md describes each.
 */
import {
  WHOLE_JOB,
  type CompiledFleet,
  type CompiledPlan,
  type CompiledScenario,
  type CompiledSpread,
} from "./compile.js";
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

const HOURS_PER_WEEK = 168;

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
    repairReturns: new Float64Array(2 * (maxNodes + 1)),
    recentFailures: new Float64Array(plan.fleets.reduce((m, f) => Math.max(m, f.fallback?.afterFailures ?? 0), 1)),
    burnEnds: new Float64Array(maxNodes + 1),
    rejoinAt: new Float64Array(plan.fleets.reduce((m, f) => Math.max(m, f.partial?.replicas ?? 0), 1)),
    timeS: new Float64Array(TIME_CATEGORIES.length),
  };
  const endS = scenario.windowS ?? GIVE_UP_FACTOR * nominalS;
  for (let trial = 0; trial < options.trials; trial++) {
    runTrial(plan, primary, scenario, endS, rng, scratch, run, trial);
  }
  return run;
}

interface TrialScratch {
  /** Sorted times at which nodes under repair come back, in [head, head + count). */
  repairReturns: Float64Array;
  /** Ring of recent failure times, for the fallback rule "N failures within T". */
  recentFailures: Float64Array;
  /** When each host in burn-in leaves it (unsorted). */
  burnEnds: Float64Array;
  /** When each dropped replica rejoins (unsorted). */
  rejoinAt: Float64Array;
  timeS: Float64Array;
}

/** A draw of a duration with spread: its mean times a lognormal of mean 1. */
function sample(rng: Rng, d: CompiledSpread): number {
  return d.sigma === 0 ? d.mean : d.mean * Math.exp(d.sigma * rng.nextNormal() - 0.5 * d.sigma * d.sigma);
}

/** The sum of n draws: exact for a few, the normal approximation (central limit) beyond. */
function sumOf(rng: Rng, d: CompiledSpread, n: number): number {
  if (d.sigma === 0 || n === 0) return n * d.mean;
  if (n <= 8) {
    let sum = 0;
    for (let i = 0; i < n; i++) sum += sample(rng, d);
    return sum;
  }
  return Math.max(0, n * d.mean + Math.sqrt(n) * d.sd * rng.nextNormal());
}

/** Index of the cause a uniform draw v in [0, 1) picks from cumulative shares. */
function pick(cumulative: Float64Array, v: number): number {
  let i = 0;
  while (i < cumulative.length - 1 && v >= (cumulative[i] ?? 1)) i++;
  return i;
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
  const burnEnds = scratch.burnEnds;
  const rejoinAt = scratch.rejoinAt;
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
  // Hosts in burn-in, repeat offenders in the job and among the spares.
  let burnCount = 0;
  let burnNext = Infinity;
  let badCount = 0;
  let badSpares = 0;
  // Partial recovery: replicas dropped and waiting to rejoin.
  let dropped = 0;
  let rejoinCount = 0;
  let rejoinNext = Infinity;

  let t = 0;
  let committedWork = 0;
  // Progress since the last completed snapshot of any tier: kept only if the next save completes.
  let sinceWork = 0;
  let sinceCompute = 0;
  let sinceProductive = 0;
  // Progress held only by the in-memory tier (snapshots since the last persistent checkpoint).
  let memWork = 0;
  let memCompute = 0;
  let memProductive = 0;
  let memSegments = 0;
  let savingPersistent = false;
  let restoreFromMemory = false;

  let straggling = false;
  // Set once a straggler has been noticed; it stays in the job only while there is nothing to replace it with.
  let stragglerDetected = false;
  let stragglerDetectAt = Infinity;
  let nextStragglerAt = t + rng.nextExponential(fleet.stragglerRatePerNodeS * active);
  let nextFailureAt = Infinity;

  let collapsing = false;
  let toggleAt = fleet.collapses ? rng.nextExponential(fleet.collapses.ratePerS) : Infinity;
  // Loss spikes come per second of compute: the compute time left until the next one (a clock that only runs while
  // the job computes; re-drawing it at a save chosen with knowledge of it would bias the count).
  let spikeLeft = rng.nextExponential(fleet.lossSpikes?.ratePerS ?? 0);

  let phase = PHASE_COMPUTE;
  let phaseEnd = 0;
  let pendingPartial = false;
  let pendingOutageS = 0;
  let pendingFallback = false;
  let pendingStragglerRemoval = false;
  let interruptions = 0;
  let finished = false;

  const failureRate = (): number =>
    fleet.nodeRatePerNodeS * active +
    fleet.fixedRateS +
    fleet.hwRatePerNodeS * ((fleet.burnIn?.extra ?? 0) * burnCount + (fleet.repeatOffenders?.extra ?? 0) * badCount);
  const redrawFailure = (): void => {
    nextFailureAt = t + rng.nextExponential(failureRate());
  };
  redrawFailure();

  const targetNodes = (): number => fleet.nodes - dropped * (fleet.partial?.nodesPerReplica ?? 0);
  const insertRepair = (at: number): void => {
    if (repairHead + repairCount >= repair.length) {
      repair.copyWithin(0, repairHead, repairHead + repairCount);
      repairHead = 0;
    }
    let i = repairHead + repairCount;
    while (i > repairHead && (repair[i - 1] ?? 0) > at) {
      repair[i] = repair[i - 1] ?? 0;
      i--;
    }
    repair[i] = at;
    repairCount++;
  };
  const drainRepairs = (): void => {
    while (repairCount > 0 && (repair[repairHead] ?? Infinity) <= t) {
      repairHead++;
      repairCount--;
      spares++;
      if (fleet.repeatOffenders !== undefined && rng.nextFloat() < fleet.repeatOffenders.share) badSpares++;
    }
  };
  /** When the n-th node now under repair comes back (n >= 1); Infinity if fewer are under repair. */
  const nthReturn = (n: number): number => (n <= repairCount ? (repair[repairHead + n - 1] ?? Infinity) : Infinity);
  const addBurn = (): void => {
    if (fleet.burnIn === undefined || burnCount >= burnEnds.length) return;
    const end = t + fleet.burnIn.periodS;
    burnEnds[burnCount++] = end;
    if (end < burnNext) burnNext = end;
  };
  const pruneBurn = (): void => {
    burnNext = Infinity;
    for (let i = 0; i < burnCount;) {
      const end = burnEnds[i] ?? 0;
      if (end <= t) {
        burnEnds[i] = burnEnds[--burnCount] ?? 0;
      } else {
        if (end < burnNext) burnNext = end;
        i++;
      }
    }
  };
  /** A host in burn-in left the job. */
  const dropBurn = (): void => {
    burnEnds[Math.floor(rng.nextFloat() * burnCount)] = burnEnds[burnCount - 1] ?? 0;
    burnCount--;
    pruneBurn();
  };
  /** A spare joins the job: a fresh host in burn-in, and maybe a repeat offender. */
  const takeSpare = (): void => {
    if (badSpares > 0 && rng.nextFloat() * spares < badSpares) {
      badSpares--;
      badCount++;
    }
    spares--;
    active++;
    addBurn();
  };
  /** Refills the job from the spares up to its size; false when it must wait for repaired nodes. */
  const replenish = (): boolean => {
    drainRepairs();
    const target = targetNodes();
    while (active < target && spares > 0) takeSpare();
    return active >= target || (fleet.shrinkOnNoSpare && active >= fleet.shrinkFloorNodes);
  };
  const waitForNodes = (): void => {
    phase = PHASE_WAIT;
    phaseEnd = nthReturn(targetNodes() - active);
    nextFailureAt = Infinity;
  };
  const processRejoins = (): void => {
    const perReplica = fleet.partial?.nodesPerReplica ?? 0;
    rejoinNext = Infinity;
    for (let i = 0; i < rejoinCount;) {
      const at = rejoinAt[i] ?? 0;
      if (at <= t) {
        rejoinAt[i] = rejoinAt[--rejoinCount] ?? 0;
        dropped--;
        active += perReplica;
      } else {
        if (at < rejoinNext) rejoinNext = at;
        i++;
      }
    }
  };
  const canRemoveNode = (): boolean => {
    drainRepairs();
    return spares > 0 || (fleet.shrinkOnNoSpare && active - 1 >= fleet.shrinkFloorNodes);
  };
  const enterRestart = (): void => {
    if (rejoinCount > 0 && rejoinNext <= t) processRejoins();
    if (burnCount > 0 && burnNext <= t) pruneBurn();
    // A shrunk job takes back repaired nodes whenever it restarts anyway.
    replenish();
    // A straggler that was detected but kept for lack of spares goes out with this restart if it now can.
    if (straggling && stragglerDetected) {
      if (spares > 0) {
        spares--;
        addBurn();
        insertRepair(t + fleet.nodeReplaceS);
        straggling = false;
        stragglerDetected = false;
        stragglerDetectAt = Infinity;
        run.stragglerRemovals++;
      } else {
        stragglerDetectAt = nthReturn(1);
      }
    }
    phase = PHASE_RESTART;
    const memory = fleet.memory;
    phaseEnd = t + sample(rng, fleet.restart) + sample(rng, restoreFromMemory && memory ? memory.load : fleet.load);
    restoreFromMemory = false;
    redrawFailure();
    if (!straggling) nextStragglerAt = t + rng.nextExponential(fleet.stragglerRatePerNodeS * active);
  };
  const discardSinceSnapshot = (): void => {
    time[LOST] = (time[LOST] ?? 0) + sinceCompute;
    sinceWork = 0;
    sinceCompute = 0;
    sinceProductive = 0;
  };
  const discardMemoryTier = (): void => {
    time[LOST] = (time[LOST] ?? 0) + memCompute;
    memWork = 0;
    memCompute = 0;
    memProductive = 0;
    memSegments = 0;
  };
  const snapshotToMemory = (): void => {
    memWork += sinceWork;
    memCompute += sinceCompute;
    memProductive += sinceProductive;
    sinceWork = 0;
    sinceCompute = 0;
    sinceProductive = 0;
    memSegments++;
  };
  const commitPersistent = (): void => {
    committedWork += memWork + sinceWork;
    const productive = memProductive + sinceProductive;
    time[PRODUCTIVE] = (time[PRODUCTIVE] ?? 0) + productive;
    time[DEGRADED] = (time[DEGRADED] ?? 0) + (memCompute + sinceCompute - productive);
    memWork = 0;
    memCompute = 0;
    memProductive = 0;
    memSegments = 0;
    sinceWork = 0;
    sinceCompute = 0;
    sinceProductive = 0;
  };
  /** A person's response time to a failure noticed at `at`: slower outside working hours. */
  const humanResponse = (at: number): number => {
    const m = fleet.manual;
    if (m === undefined) return 0;
    const hourOfWeek = (((at / 3600 + m.startHour) % HOURS_PER_WEEK) + HOURS_PER_WEEK) % HOURS_PER_WEEK;
    const day = Math.floor(hourOfWeek / 24);
    const hour = hourOfWeek - day * 24;
    const working = day < m.workDays && hour >= m.dayStartH && hour < m.dayEndH;
    return sample(rng, working ? m.response : m.offHours);
  };
  const startDetection = (detectS: number): void => {
    phase = PHASE_DETECT;
    phaseEnd = t + detectS;
    nextFailureAt = Infinity;
  };
  /**
   * Which part of the rate fired: a host's own fault, a domain or the cluster, a fresh host, a repeat offender. Hosts
   * stay counted as in burn-in past their period until a restart prunes them (no event per burn-in end): the rate is
   * then an upper bound, and a draw that lands on a host whose burn-in is over is thinned away (-1: no failure), which
   * keeps the process exact.
   */
  const drawFailure = (): number => {
    const nodePart = fleet.nodeRatePerNodeS * active;
    const fixedPart = fleet.fixedRateS;
    const burnPart = fleet.hwRatePerNodeS * (fleet.burnIn?.extra ?? 0) * burnCount;
    const u = rng.nextFloat() * failureRate();
    let cause: number;
    if (u < nodePart) {
      cause = pick(fleet.nodeCauseCumulative, u / nodePart);
      // Every host fails at the base rate; the one that did may have been a fresh host or a repeat offender.
      if (fleet.causeReplacesNode[cause] === 1 && active > 0) {
        const which = rng.nextFloat() * active;
        if (which < burnCount) dropBurn();
        else if (which < burnCount + badCount) badCount--;
      }
    } else if (u < nodePart + fixedPart) {
      cause = pick(fleet.fixedCauseCumulative, (u - nodePart) / fixedPart);
    } else {
      cause = pick(fleet.hwCauseCumulative, rng.nextFloat());
      if (u < nodePart + fixedPart + burnPart && burnCount > 0) {
        const j = Math.floor(rng.nextFloat() * burnCount);
        if ((burnEnds[j] ?? 0) <= t) {
          // Its burn-in is over: no extra failure after all. The rate falls: re-draw the clock.
          pruneBurn();
          redrawFailure();
          return -1;
        }
        // The fresh host failed: it leaves burn-in (and the job).
        burnEnds[j] = burnEnds[burnCount - 1] ?? 0;
        burnCount--;
        pruneBurn();
      } else if (badCount > 0) {
        badCount--;
      }
    }
    return cause;
  };
  const fail = (cause: number): void => {
    const causeId = fleet.causeIds[cause] ?? 0;
    run.interruptionsByCause[causeId] = (run.interruptionsByCause[causeId] ?? 0) + 1;
    interruptions++;
    pendingStragglerRemoval = false;
    let detectS = sample(rng, fleet.causeDetect[cause] ?? fleet.restart);
    if (fleet.causeManual[cause] === 1) detectS += humanResponse(t + detectS);
    const hosts = fleet.causeHosts[cause] ?? 1;
    const replaces = fleet.causeReplacesNode[cause] === 1;

    const partial = fleet.partial;
    const hit = fleet.causeReplicasHit[cause] ?? WHOLE_JOB;
    if (partial !== undefined && partial.replicas - dropped - hit >= partial.minReplicas) {
      // The failed hosts' replicas drop out; the others go on from where they are once the failure is noticed.
      pendingPartial = true;
      active -= hit * partial.nodesPerReplica;
      dropped += hit;
      drainRepairs();
      const repairS = sample(rng, fleet.causeRepair[cause] ?? fleet.restart);
      let ownRepair = false;
      for (let h = 0; h < hosts; h++) {
        if (spares > 0) {
          spares--;
          addBurn();
          insertRepair(t + repairS);
        } else {
          ownRepair = true; // no spare: the host itself comes back to its replica
        }
      }
      const at = t + detectS + (ownRepair ? repairS : 0) + sample(rng, partial.rejoin);
      for (let r = 0; r < hit && rejoinCount < rejoinAt.length; r++) rejoinAt[rejoinCount++] = at;
      if (at < rejoinNext) rejoinNext = at;
      startDetection(detectS);
      return;
    }

    discardSinceSnapshot();
    if (fleet.memory !== undefined && fleet.causeLosesMemory[cause] === 0) restoreFromMemory = true;
    else {
      discardMemoryTier();
      restoreFromMemory = false;
    }
    if (replaces) {
      if (hosts === 0) {
        pendingOutageS = sample(rng, fleet.causeRepair[cause] ?? fleet.restart);
      } else {
        const lost = Math.min(hosts, active);
        const repairS = sample(rng, fleet.causeRepair[cause] ?? fleet.restart);
        for (let h = 0; h < lost; h++) insertRepair(t + repairS);
        active -= lost;
        if (badCount > active) badCount = active;
      }
    }
    const rule = fleet.fallback;
    if (rule !== undefined && !fellBack) {
      recent[recentNext] = t;
      recentNext = (recentNext + 1) % rule.afterFailures;
      recentCount = Math.min(recentCount + 1, rule.afterFailures);
      // recentNext now points at the oldest of the last afterFailures failures.
      if (recentCount === rule.afterFailures && t - (recent[recentNext] ?? 0) <= rule.withinS) pendingFallback = true;
    }
    startDetection(detectS);
  };
  /** A loss spike: roll back further than the last checkpoint, skip the data, restart from the older checkpoint. */
  const lossSpike = (): void => {
    const spikes = fleet.lossSpikes;
    if (spikes === undefined) return;
    run.interruptionsByCause[spikes.causeId] = (run.interruptionsByCause[spikes.causeId] ?? 0) + 1;
    interruptions++;
    pendingStragglerRemoval = false;
    discardSinceSnapshot();
    discardMemoryTier();
    const rolled = Math.min(committedWork, (spikes.rollback - 1) * fleet.intervalS * fleet.workPerS);
    committedWork -= rolled;
    const movedS = Math.min(time[PRODUCTIVE] ?? 0, rolled / fleet.workPerS);
    time[PRODUCTIVE] = (time[PRODUCTIVE] ?? 0) - movedS;
    time[LOST] = (time[LOST] ?? 0) + movedS;
    restoreFromMemory = false;
    let detectS = sample(rng, spikes.detect);
    if (spikes.manual) detectS += humanResponse(t + detectS);
    startDetection(detectS);
  };
  const advanceCollapses = (): void => {
    const c = fleet.collapses;
    if (c === undefined) return;
    while (toggleAt <= t) {
      if (collapsing) {
        collapsing = false;
        toggleAt += rng.nextExponential(c.ratePerS);
      } else {
        collapsing = true;
        toggleAt += sample(rng, c.duration);
      }
    }
  };
  const startSave = (persistent: boolean): void => {
    savingPersistent = persistent;
    const memory = fleet.memory;
    const saveS = sample(rng, persistent || memory === undefined ? fleet.save : memory.save);
    if (!pendingStragglerRemoval && t + saveS < nextFailureAt && t + saveS < endS) {
      // Nothing can interrupt it: the save completes at once, as a round of the save phase would have it.
      t += saveS;
      time[CHECKPOINT] = (time[CHECKPOINT] ?? 0) + saveS;
      if (persistent) commitPersistent();
      else snapshotToMemory();
      return;
    }
    phase = PHASE_SAVE;
    phaseEnd = t + saveS;
  };

  for (;;) {
    if (phase === PHASE_COMPUTE) {
      if (rejoinCount > 0 && rejoinNext <= t) {
        processRejoins();
        redrawFailure();
      }
      if (toggleAt <= t) advanceCollapses();
      const speed =
        (active / fleet.nodes) *
        (straggling ? 1 / (1 + fleet.stragglerSlowdown) : 1) *
        fleet.networkFactor *
        (collapsing ? (fleet.collapses?.factor ?? 1) : 1);
      const workRate = speed * fleet.workPerS;
      const stragglerEventAt = Math.max(t, straggling ? stragglerDetectAt : nextStragglerAt);
      const stateEventAt = Math.min(rejoinNext, toggleAt);
      const tau = fleet.segmentS;

      // Mid-cycle (after a restore from the memory tier): skip whole in-memory segments up to the persistent save.
      const memSave = fleet.memory?.save;
      if (sinceCompute === 0 && memSegments > 0 && memSave !== undefined) {
        const nextEvent = Math.min(nextFailureAt, stragglerEventAt, stateEventAt, endS);
        const segment = tau + memSave.mean;
        let n = Math.min(Math.floor((nextEvent - t) / segment), fleet.persistEvery - 1 - memSegments);
        if (memSave.sd > 0 && n > 0) n -= Math.ceil((4 * Math.sqrt(n) * memSave.sd) / segment) + 1;
        if (totalWork !== Infinity)
          n = Math.min(n, Math.floor((totalWork - committedWork - memWork) / (tau * workRate)) - 1);
        n = Math.min(n, Math.floor(spikeLeft / tau) - 1);
        if (n > 0) {
          const saves = sumOf(rng, memSave, n);
          if (t + n * tau + saves <= nextEvent) {
            t += n * tau + saves;
            spikeLeft -= n * tau;
            memWork += n * tau * workRate;
            memCompute += n * tau;
            memProductive += n * tau * speed;
            memSegments += n;
            time[CHECKPOINT] = (time[CHECKPOINT] ?? 0) + saves;
          }
        }
      }

      // Skip whole cycles (snapshots up to and including a persistent save) that end before the next event: the
      // common case, done in O(1). Saves with spread are drawn as a sum; a sum that overshoots is not skipped.
      if (sinceCompute === 0 && memSegments === 0) {
        const k = fleet.persistEvery;
        const savesMean = (k - 1) * (memSave?.mean ?? 0) + fleet.save.mean;
        const savesSd = Math.sqrt((k - 1) * (memSave?.sd ?? 0) ** 2 + fleet.save.sd ** 2);
        const cycle = k * tau + savesMean;
        const nextEvent = Math.min(nextFailureAt, stragglerEventAt, stateEventAt, endS);
        let cycles = Math.floor((nextEvent - t) / cycle);
        if (savesSd > 0 && cycles > 0) cycles -= Math.ceil((4 * Math.sqrt(cycles) * savesSd) / cycle) + 1;
        if (totalWork !== Infinity)
          cycles = Math.min(cycles, Math.floor((totalWork - committedWork) / (k * tau * workRate)) - 1);
        cycles = Math.min(cycles, Math.floor(spikeLeft / (k * tau)) - 1);
        if (cycles > 0) {
          const saves =
            savesSd > 0
              ? sumOf(rng, fleet.save, cycles) + (memSave ? sumOf(rng, memSave, cycles * (k - 1)) : 0)
              : cycles * savesMean;
          const span = cycles * k * tau + saves;
          if (t + span <= nextEvent) {
            t += span;
            spikeLeft -= cycles * k * tau;
            committedWork += cycles * k * tau * workRate;
            time[PRODUCTIVE] = (time[PRODUCTIVE] ?? 0) + cycles * k * tau * speed;
            time[DEGRADED] = (time[DEGRADED] ?? 0) + cycles * k * tau * (1 - speed);
            time[CHECKPOINT] = (time[CHECKPOINT] ?? 0) + saves;
          }
        }
      }

      // Never behind t: a segment interrupted in its save (partial recovery goes back to compute without a rollback)
      // may carry a compute time a rounding error past the interval, and must then save at once.
      const segmentEnd = t + Math.max(0, tau - sinceCompute);
      const nextSpikeAt = t + spikeLeft;
      const doneAt =
        totalWork === Infinity ? Infinity : t + (totalWork - committedWork - memWork - sinceWork) / workRate;
      const next = Math.max(
        t,
        Math.min(segmentEnd, doneAt, nextFailureAt, stragglerEventAt, stateEventAt, nextSpikeAt, endS),
      );
      const dt = next - t;
      spikeLeft -= dt;
      sinceCompute += dt;
      sinceWork += dt * workRate;
      sinceProductive += dt * speed;
      t = next;

      if (next === doneAt && doneAt <= endS) {
        commitPersistent();
        committedWork = totalWork;
        finished = true;
        break;
      }
      if (next === endS) {
        // A window ends mid-segment; that work would be saved at the next checkpoint.
        if (windowMode) commitPersistent();
        break;
      }
      if (next === nextFailureAt) {
        const cause = drawFailure();
        if (cause >= 0) fail(cause);
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
          startSave(true);
        } else {
          // Nothing to replace it with: running slowly beats waiting. Look again when a repaired node is back.
          stragglerDetected = true;
          stragglerDetectAt = nthReturn(1);
        }
      } else if (next === segmentEnd) {
        startSave(memSegments + 1 >= fleet.persistEvery);
      } else if (next === nextSpikeAt) {
        spikeLeft = rng.nextExponential(fleet.lossSpikes?.ratePerS ?? 0);
        lossSpike();
      }
      // Otherwise a rejoin, the end of a burn-in or a collapse episode: handled at the top of the next round.
      continue;
    }

    if (phase === PHASE_SAVE || phase === PHASE_RESTART) {
      const next = Math.min(phaseEnd, nextFailureAt, endS);
      const dt = next - t;
      t = next;
      if (next === endS && next < phaseEnd && next < nextFailureAt) {
        time[phase === PHASE_SAVE ? CHECKPOINT : RESTART] =
          (time[phase === PHASE_SAVE ? CHECKPOINT : RESTART] ?? 0) + dt;
        if (windowMode && phase === PHASE_SAVE) commitPersistent();
        break;
      }
      if (next === nextFailureAt && next < phaseEnd) {
        const cause = drawFailure();
        if (cause < 0) {
          // Thinned away: the save or restart goes on.
          time[phase === PHASE_SAVE ? CHECKPOINT : RESTART] =
            (time[phase === PHASE_SAVE ? CHECKPOINT : RESTART] ?? 0) + dt;
          continue;
        }
        time[phase === PHASE_SAVE ? LOST : RESTART] = (time[phase === PHASE_SAVE ? LOST : RESTART] ?? 0) + dt;
        fail(cause);
        if (giveUpOnInterruptions && interruptions >= GIVE_UP_INTERRUPTIONS) break;
        continue;
      }
      if (phase === PHASE_RESTART) {
        time[RESTART] = (time[RESTART] ?? 0) + dt;
        phase = PHASE_COMPUTE;
        continue;
      }
      time[CHECKPOINT] = (time[CHECKPOINT] ?? 0) + dt;
      if (savingPersistent) commitPersistent();
      else snapshotToMemory();
      if (!pendingStragglerRemoval) {
        phase = PHASE_COMPUTE;
        continue;
      }
      pendingStragglerRemoval = false;
      straggling = false;
      stragglerDetected = false;
      run.stragglerRemovals++;
      active--;
      insertRepair(t + fleet.nodeReplaceS);
      if (replenish()) enterRestart();
      else waitForNodes();
      continue;
    }

    // Detection, waiting and migration: no failure clock, only the phase end and the window end.
    const next = Math.min(phaseEnd, endS);
    const dt = next - t;
    t = next;
    const category = phase === PHASE_DETECT ? DETECTION : phase === PHASE_WAIT ? WAITING : FALLBACK;
    time[category] = (time[category] ?? 0) + dt;
    if (next === endS && next < phaseEnd) break;
    if (next === Infinity) break;

    if (phase === PHASE_DETECT) {
      if (pendingPartial) {
        // The remaining replicas go on; nothing was rolled back.
        pendingPartial = false;
        phase = PHASE_COMPUTE;
        redrawFailure();
        if (!straggling) nextStragglerAt = t + rng.nextExponential(fleet.stragglerRatePerNodeS * active);
      } else if (pendingFallback) {
        pendingFallback = false;
        phase = PHASE_MIGRATE;
        phaseEnd = t + (fleet.fallback?.migrateS ?? 0);
      } else if (pendingOutageS > 0) {
        phase = PHASE_WAIT;
        phaseEnd = t + pendingOutageS;
        pendingOutageS = 0;
      } else if (replenish()) {
        enterRestart();
      } else {
        waitForNodes();
      }
    } else if (phase === PHASE_WAIT) {
      if (replenish()) enterRestart();
      else waitForNodes();
    } else {
      const target = plan.fleets[fleet.fallback?.fleetIndex ?? -1];
      if (target !== undefined) {
        // The work done so far is in steps or tokens, so it carries over to a fleet with a different speed.
        fleet = target;
        active = fleet.nodes;
        spares = fleet.spareNodes;
        repairHead = 0;
        repairCount = 0;
        burnCount = 0;
        burnNext = Infinity;
        badCount = 0;
        badSpares = 0;
        dropped = 0;
        rejoinCount = 0;
        rejoinNext = Infinity;
        discardMemoryTier();
        restoreFromMemory = false;
        collapsing = false;
        toggleAt = fleet.collapses ? t + rng.nextExponential(fleet.collapses.ratePerS) : Infinity;
        spikeLeft = rng.nextExponential(fleet.lossSpikes?.ratePerS ?? 0);
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
  discardSinceSnapshot();
  discardMemoryTier();
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
