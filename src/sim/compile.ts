/**
 * Plan file -> compiled scenarios: seconds, per-node per-second rates and typed arrays the engine reads in its
 * inner loop. Derived quantities (MTBF, Young/Daly intervals) come from core's checkpoint-interval math so the
 * planner recommends what the supervisor's advisor would.
 */
import { dalyInterval } from "../core/checkpoint-interval.js";
import { workUnit, type Plan, type PlanScenario, type Spread } from "./plan-file.js";

const SECONDS_PER_DAY = 86_400;
/**
 * The shortest checkpoint interval "optimal" picks when the workload has no step time (token workloads): a save of
 * 0 s makes Young/Daly's interval tend to 0, which no real job can do; with a step time the floor is one step.
 */
export const MIN_CHECKPOINT_INTERVAL_S = 1;
/** causeReplicasHit of a cause that stops the whole job (it must fit an Int32Array: no MAX_SAFE_INTEGER). */
export const WHOLE_JOB = 2 ** 30;

/** A duration drawn from a lognormal with this mean; sigma 0 is a constant. */
export interface CompiledSpread {
  mean: number;
  /** Standard deviation of the underlying normal (log space). */
  sigma: number;
  /** Standard deviation of the duration itself (mean x cv). */
  sd: number;
}

export function compileSpread(spread: Spread): CompiledSpread {
  return { mean: spread.mean, sigma: Math.sqrt(Math.log1p(spread.cv * spread.cv)), sd: spread.mean * spread.cv };
}

const constant = (seconds: number): CompiledSpread => ({ mean: seconds, sigma: 0, sd: 0 });

export interface CompiledFleet {
  scenarioName: string;
  device: string;
  devices: number;
  devicesPerNode: number;
  nodes: number;
  spareNodes: number;
  nodeReplaceS: number;
  /** Indexes into CompiledPlan.causes, one per failure cause of this fleet. */
  causeIds: Int32Array;
  /** Cumulative share of each cause in the fleet's failure rate at full size (for means and reports). */
  causeCumulativeShare: Float64Array;
  /** Mean detection per cause (seconds); causeDetect holds the spread. */
  causeDetectS: Float64Array;
  causeDetect: CompiledSpread[];
  causeReplacesNode: Uint8Array;
  /** Hosts one event of the cause takes down: 1, k (a failure domain), or 0 for the whole cluster. */
  causeHosts: Int32Array;
  causeRepair: CompiledSpread[];
  causeManual: Uint8Array;
  /** 1 where an event of the cause also destroys the in-memory checkpoint tier. */
  causeLosesMemory: Uint8Array;
  /** Data-parallel replicas an event of the cause drops (partial recovery); >= replicas means a whole-job restart. */
  causeReplicasHit: Int32Array;
  /** Per-node rate (per second) of the causes given per device or node; they scale with the nodes in use. */
  nodeRatePerNodeS: number;
  /** Cumulative share of each cause among those per-node causes (0-width for the others). */
  nodeCauseCumulative: Float64Array;
  /** Rate (per second) of the causes given per domain or per fleet: they do not scale with the nodes in use. */
  fixedRateS: number;
  fixedCauseCumulative: Float64Array;
  /** Per-node rate of the per-node causes that take a node (what burn-in and repeat offenders multiply). */
  hwRatePerNodeS: number;
  hwCauseCumulative: Float64Array;
  /** All causes together at full size, failures per node per second. */
  failureRatePerNodeS: number;
  burnIn: { periodS: number; extra: number } | undefined;
  repeatOffenders: { share: number; extra: number } | undefined;
  stragglerRatePerNodeS: number;
  stragglerSlowdown: number;
  stragglerDetectS: number;
  /** Speed factor of the steadily degraded interconnect: 1 / (1 + sensitivity x degraded share). */
  networkFactor: number;
  collapses: { ratePerS: number; duration: CompiledSpread; factor: number } | undefined;
  /** Steps or tokens per second with every node healthy and at full speed. */
  workPerS: number;
  /** Compute time between persistent checkpoints. */
  intervalS: number;
  intervalIsOptimal: boolean;
  /** Compute time between two snapshots of any tier: the in-memory interval with a memory tier, else intervalS. */
  segmentS: number;
  /** Every persistEvery-th snapshot is persistent (1 without a memory tier). */
  persistEvery: number;
  /** The floor of an optimal interval: one step, or MIN_CHECKPOINT_INTERVAL_S without a step time. */
  minIntervalS: number;
  saveS: number;
  loadS: number;
  save: CompiledSpread;
  load: CompiledSpread;
  memory: { save: CompiledSpread; load: CompiledSpread; survivesHost: boolean } | undefined;
  restartS: number;
  restart: CompiledSpread;
  shrinkOnNoSpare: boolean;
  shrinkFloorNodes: number;
  partial: { replicas: number; nodesPerReplica: number; minReplicas: number; rejoin: CompiledSpread } | undefined;
  manual:
    | {
        response: CompiledSpread;
        offHours: CompiledSpread;
        dayStartH: number;
        dayEndH: number;
        workDays: number;
        startHour: number;
      }
    | undefined;
  lossSpikes:
    { causeId: number; ratePerS: number; rollback: number; detect: CompiledSpread; manual: boolean } | undefined;
  fallback: { fleetIndex: number; afterFailures: number; withinS: number; migrateS: number } | undefined;
}

export interface CompiledScenario {
  name: string;
  description: string | undefined;
  /** Index of this scenario's own fleet in CompiledPlan.fleets. */
  fleetIndex: number;
  workUnit: "steps" | "tokens";
  /** Steps or tokens to train; Infinity in window mode. */
  totalWork: number;
  windowS: number | undefined;
  deadlineS: number | undefined;
}

export interface CompiledPlan {
  /** Failure cause names across all fleets; interruption counters are indexed by these. */
  causes: string[];
  fleets: CompiledFleet[];
  scenarios: CompiledScenario[];
}

export function compilePlan(plan: Plan): CompiledPlan {
  const causes: string[] = [];
  const causeId = (name: string): number => {
    const found = causes.indexOf(name);
    if (found >= 0) return found;
    causes.push(name);
    return causes.length - 1;
  };
  const indexByName = new Map(plan.scenarios.map((s, i) => [s.name, i]));
  const fleets = plan.scenarios.map((s) => compileFleet(s, causeId, indexByName));
  const scenarios = plan.scenarios.map((s, i): CompiledScenario => {
    const { steps, tokens, window } = s.workload;
    return {
      name: s.name,
      description: s.description,
      fleetIndex: i,
      workUnit: workUnit(s),
      totalWork: window !== undefined ? Infinity : (steps ?? tokens ?? 0),
      windowS: window,
      deadlineS: s.deadline,
    };
  });
  return { causes, fleets, scenarios };
}

function cumulative(rates: number[], include: (i: number) => boolean): Float64Array {
  const total = rates.reduce((sum, r, i) => sum + (include(i) ? r : 0), 0);
  const out = new Float64Array(rates.length);
  let acc = 0;
  let last = -1;
  rates.forEach((r, i) => {
    if (include(i) && total > 0) {
      acc += r / total;
      last = i;
    }
    out[i] = acc;
  });
  // Guards the draw against rounding: the last included cause takes whatever share is left.
  if (last >= 0) for (let i = last; i < out.length; i++) out[i] = 1;
  return out;
}

/** Daly's interval for a save of saveS at this MTBF, bounded below by minS; a year when nothing fails. */
function optimalInterval(saveS: number, mtbfS: number, minS: number): number {
  if (!Number.isFinite(mtbfS)) return 365 * SECONDS_PER_DAY;
  return saveS > 0 ? Math.max(dalyInterval(saveS, mtbfS), minS) : minS;
}

function compileFleet(
  s: PlanScenario,
  causeId: (name: string) => number,
  indexByName: Map<string, number>,
): CompiledFleet {
  const { fleet, workload, checkpoint, recovery } = s;
  const nodes = fleet.devices / fleet.devices_per_node;
  const perNodeS = (rate: { per_device_day?: number | undefined; per_node_day?: number | undefined }): number =>
    (rate.per_node_day ?? (rate.per_device_day ?? 0) * fleet.devices_per_node) / SECONDS_PER_DAY;

  const failures = fleet.failures;
  const perNode = failures.map((f) => f.per_node_day !== undefined || f.per_device_day !== undefined);
  // Each cause's rate at full size, per second for the whole fleet.
  const fleetRates = failures.map((f, i) => {
    if (perNode[i]) return perNodeS(f) * nodes;
    if (f.per_domain_day !== undefined)
      return (f.per_domain_day * nodes) / (f.hosts === "all" ? nodes : f.hosts) / SECONDS_PER_DAY;
    return (f.per_day ?? 0) / SECONDS_PER_DAY;
  });
  const totalRateS = fleetRates.reduce((a, b) => a + b, 0);
  const failureRatePerNodeS = totalRateS / nodes;
  const nodeRatePerNodeS = failures.reduce((sum, f, i) => sum + (perNode[i] ? perNodeS(f) : 0), 0);
  const fixedRateS = fleetRates.reduce((sum, r, i) => sum + (perNode[i] ? 0 : r), 0);
  const hardware = (i: number): boolean => perNode[i] === true && failures[i]?.replaces_node === true;
  const hwRatePerNodeS = failures.reduce((sum, f, i) => sum + (hardware(i) ? perNodeS(f) : 0), 0);

  const workPerS =
    workload.tokens_per_device_second !== undefined
      ? workload.tokens_per_device_second * fleet.devices
      : 1 / (workload.step_time ?? 1);

  // Save and load: given, or from the checkpoint's size and the storage's bandwidth at the hosts writing at once.
  let save: CompiledSpread;
  let load: CompiledSpread;
  const storage = checkpoint.storage;
  if (storage !== undefined && checkpoint.size !== undefined) {
    const hostsAtOnce = storage.hosts_at_once ?? nodes;
    const hostCap = storage.per_host_bandwidth !== undefined ? storage.per_host_bandwidth * hostsAtOnce : Infinity;
    save = compileSpread({ mean: checkpoint.size / Math.min(storage.write_bandwidth, hostCap), cv: storage.spread });
    load = compileSpread({ mean: checkpoint.size / Math.min(storage.read_bandwidth, hostCap), cv: storage.spread });
  } else {
    save = compileSpread(checkpoint.save ?? { mean: 0, cv: 0 });
    load = compileSpread(checkpoint.load ?? { mean: 0, cv: 0 });
  }

  const memoryConfig = checkpoint.memory;
  const hostsOf = (i: number): number => {
    const h = failures[i]?.hosts ?? 1;
    return h === "all" ? 0 : h;
  };
  const losesMemory = failures.map((f, i) => {
    if (memoryConfig === undefined) return 1;
    if (hostsOf(i) === 0) return 1;
    if (!f.replaces_node) return 0;
    return memoryConfig.survives === "host" && hostsOf(i) === 1 ? 0 : 1;
  });

  const mtbfS = 1 / totalRateS;
  const minIntervalS = workload.step_time ?? MIN_CHECKPOINT_INTERVAL_S;
  const intervalIsOptimal = checkpoint.interval === "optimal";
  // Daly's interval shrinks with the save time (to 0 as the save does), bounded below by one step: a cheaper save
  // never means checkpointing less often. A fleet that never fails needs no checkpoint. With an in-memory tier the
  // persistent interval only has to cover the failures that tier does not survive.
  const losingRateS = fleetRates.reduce((sum, r, i) => sum + (losesMemory[i] === 1 ? r : 0), 0);
  let intervalS =
    checkpoint.interval !== "optimal"
      ? checkpoint.interval
      : optimalInterval(save.mean, memoryConfig ? 1 / losingRateS : mtbfS, minIntervalS);
  let segmentS = intervalS;
  let persistEvery = 1;
  let memory: CompiledFleet["memory"];
  if (memoryConfig !== undefined) {
    const memSave = compileSpread(memoryConfig.save);
    segmentS =
      memoryConfig.interval !== "optimal"
        ? memoryConfig.interval
        : Math.min(optimalInterval(memSave.mean, mtbfS, minIntervalS), intervalS);
    persistEvery = Math.max(1, Math.round(intervalS / segmentS));
    intervalS = segmentS * persistEvery;
    memory = { save: memSave, load: compileSpread(memoryConfig.load), survivesHost: memoryConfig.survives === "host" };
  }

  const partialConfig = recovery.partial;
  const partial =
    partialConfig === undefined
      ? undefined
      : {
          replicas: partialConfig.replicas,
          nodesPerReplica: nodes / partialConfig.replicas,
          minReplicas: partialConfig.min_replicas ?? Math.ceil(partialConfig.replicas / 2),
          rejoin: compileSpread(partialConfig.rejoin),
        };
  const replicasHit = failures.map((f, i) => {
    if (partial === undefined || !f.replaces_node || hostsOf(i) === 0) return WHOLE_JOB;
    return Math.min(partial.replicas, Math.ceil(hostsOf(i) / partial.nodesPerReplica));
  });

  const manualConfig = recovery.manual;
  const manual = {
    response: compileSpread(manualConfig?.response ?? { mean: 1200, cv: 0 }),
    offHours: compileSpread(manualConfig?.off_hours_response ?? { mean: 4 * 3600, cv: 0 }),
    dayStartH: manualConfig?.day_start ?? 9,
    dayEndH: manualConfig?.day_end ?? 18,
    workDays: manualConfig?.work_days ?? 5,
    startHour: manualConfig?.start_hour ?? 0,
  };
  const spikes = workload.loss_spikes;
  const network = fleet.network;
  const fallback = recovery.fallback;
  return {
    scenarioName: s.name,
    device: fleet.device,
    devices: fleet.devices,
    devicesPerNode: fleet.devices_per_node,
    nodes,
    spareNodes: fleet.spare_nodes,
    nodeReplaceS: fleet.node_replace_time,
    causeIds: Int32Array.from(failures.map((f) => causeId(f.cause))),
    causeCumulativeShare: cumulative(fleetRates, () => true),
    causeDetectS: Float64Array.from(failures.map((f) => f.detect.mean)),
    causeDetect: failures.map((f) => compileSpread(f.detect)),
    causeReplacesNode: Uint8Array.from(failures.map((f) => (f.replaces_node ? 1 : 0))),
    causeHosts: Int32Array.from(failures.map((_, i) => hostsOf(i))),
    causeRepair: failures.map((f) => (f.repair ? compileSpread(f.repair) : constant(fleet.node_replace_time))),
    causeManual: Uint8Array.from(failures.map((f) => (f.handled_by === "manual" ? 1 : 0))),
    causeLosesMemory: Uint8Array.from(losesMemory),
    causeReplicasHit: Int32Array.from(replicasHit),
    nodeRatePerNodeS,
    nodeCauseCumulative: cumulative(fleetRates, (i) => perNode[i] === true),
    fixedRateS,
    fixedCauseCumulative: cumulative(fleetRates, (i) => perNode[i] !== true),
    hwRatePerNodeS,
    hwCauseCumulative: cumulative(fleetRates, hardware),
    failureRatePerNodeS,
    burnIn: fleet.burn_in ? { periodS: fleet.burn_in.period, extra: fleet.burn_in.multiplier - 1 } : undefined,
    repeatOffenders: fleet.repeat_offenders
      ? { share: fleet.repeat_offenders.share, extra: fleet.repeat_offenders.multiplier - 1 }
      : undefined,
    stragglerRatePerNodeS: fleet.stragglers ? perNodeS(fleet.stragglers) : 0,
    stragglerSlowdown: fleet.stragglers?.slowdown ?? 0,
    stragglerDetectS: fleet.stragglers?.detect ?? 0,
    networkFactor: network ? 1 / (1 + network.sensitivity * network.degraded_share) : 1,
    collapses: network?.collapses
      ? {
          ratePerS: network.collapses.per_day / SECONDS_PER_DAY,
          duration: compileSpread(network.collapses.duration),
          factor: 1 / network.collapses.slowdown,
        }
      : undefined,
    workPerS,
    intervalS,
    intervalIsOptimal,
    segmentS,
    persistEvery,
    minIntervalS,
    saveS: save.mean,
    loadS: load.mean,
    save,
    load,
    memory,
    restartS: recovery.restart.mean,
    restart: compileSpread(recovery.restart),
    shrinkOnNoSpare: recovery.no_spare === "shrink",
    shrinkFloorNodes: Math.max(1, Math.ceil(recovery.shrink_floor * nodes)),
    partial,
    manual: manual,
    lossSpikes: spikes
      ? {
          causeId: causeId(spikes.cause),
          ratePerS: spikes.per_day / SECONDS_PER_DAY,
          rollback: spikes.rollback,
          detect: compileSpread(spikes.detect),
          manual: spikes.handled_by === "manual",
        }
      : undefined,
    fallback:
      fallback === undefined
        ? undefined
        : {
            fleetIndex: indexByName.get(fallback.scenario) ?? -1,
            afterFailures: fallback.after_failures,
            withinS: fallback.within,
            migrateS: fallback.migrate,
          },
  };
}

/** Mean time between failures of the whole fleet at full size (Infinity without failures). */
export function fleetMtbfS(fleet: CompiledFleet): number {
  return 1 / (fleet.failureRatePerNodeS * fleet.nodes);
}

/** Mean time from a failure until compute resumes, spares permitting: rate-weighted detection + restart + load. */
export function meanRecoveryS(fleet: CompiledFleet): number {
  let detect = 0;
  let previousShare = 0;
  fleet.causeCumulativeShare.forEach((share, i) => {
    detect += (share - previousShare) * (fleet.causeDetectS[i] ?? 0);
    previousShare = share;
  });
  return detect + fleet.restartS + fleet.loadS;
}
