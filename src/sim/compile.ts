/**
 * Plan file -> compiled scenarios: seconds, per-node per-second rates and typed arrays the engine reads in its
 * inner loop. Derived quantities (MTBF, Young/Daly intervals) come from core's checkpoint-interval math so the
 * planner recommends what the supervisor's advisor would.
 */
import { dalyInterval } from "../core/checkpoint-interval.js";
import { workUnit, type Plan, type PlanScenario } from "./plan-file.js";

const SECONDS_PER_DAY = 86_400;
/**
 * The shortest checkpoint interval "optimal" picks when the workload has no step time (token workloads): a save of
 * 0 s makes Young/Daly's interval tend to 0, which no real job can do; with a step time the floor is one step.
 */
export const MIN_CHECKPOINT_INTERVAL_S = 1;

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
  /** Cumulative share of each cause in the fleet's failure rate, for picking the cause of a failure. */
  causeCumulativeShare: Float64Array;
  causeDetectS: Float64Array;
  causeReplacesNode: Uint8Array;
  /** All causes together, failures per node per second. */
  failureRatePerNodeS: number;
  stragglerRatePerNodeS: number;
  stragglerSlowdown: number;
  stragglerDetectS: number;
  /** Steps or tokens per second with every node healthy and at full speed. */
  workPerS: number;
  intervalS: number;
  intervalIsOptimal: boolean;
  /** The floor of an optimal interval: one step, or MIN_CHECKPOINT_INTERVAL_S without a step time. */
  minIntervalS: number;
  saveS: number;
  loadS: number;
  restartS: number;
  shrinkOnNoSpare: boolean;
  shrinkFloorNodes: number;
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

function compileFleet(
  s: PlanScenario,
  causeId: (name: string) => number,
  indexByName: Map<string, number>,
): CompiledFleet {
  const { fleet, workload, checkpoint, recovery } = s;
  const nodes = fleet.devices / fleet.devices_per_node;
  const perNodeS = (rate: { per_device_day?: number | undefined; per_node_day?: number | undefined }): number =>
    (rate.per_node_day ?? (rate.per_device_day ?? 0) * fleet.devices_per_node) / SECONDS_PER_DAY;

  const rates = fleet.failures.map(perNodeS);
  const failureRatePerNodeS = rates.reduce((a, b) => a + b, 0);
  const causeCumulativeShare = new Float64Array(rates.length);
  let cumulative = 0;
  rates.forEach((r, i) => {
    cumulative += failureRatePerNodeS > 0 ? r / failureRatePerNodeS : 0;
    causeCumulativeShare[i] = cumulative;
  });
  // Guards the cause draw against rounding: the last cause takes whatever share is left.
  if (rates.length > 0) causeCumulativeShare[rates.length - 1] = 1;

  const workPerS =
    workload.tokens_per_device_second !== undefined
      ? workload.tokens_per_device_second * fleet.devices
      : 1 / (workload.step_time ?? 1);

  const mtbfS = 1 / (failureRatePerNodeS * nodes);
  const intervalIsOptimal = checkpoint.interval === "optimal";
  const minIntervalS = workload.step_time ?? MIN_CHECKPOINT_INTERVAL_S;
  // Daly's interval shrinks with the save time (to 0 as the save does), bounded below by one step: a cheaper save
  // never means checkpointing less often. A fleet that never fails needs no checkpoint.
  const intervalS =
    checkpoint.interval !== "optimal"
      ? checkpoint.interval
      : !Number.isFinite(mtbfS)
        ? 365 * SECONDS_PER_DAY
        : checkpoint.save > 0
          ? Math.max(dalyInterval(checkpoint.save, mtbfS), minIntervalS)
          : minIntervalS;

  const fallback = recovery.fallback;
  return {
    scenarioName: s.name,
    device: fleet.device,
    devices: fleet.devices,
    devicesPerNode: fleet.devices_per_node,
    nodes,
    spareNodes: fleet.spare_nodes,
    nodeReplaceS: fleet.node_replace_time,
    causeIds: Int32Array.from(fleet.failures.map((f) => causeId(f.cause))),
    causeCumulativeShare,
    causeDetectS: Float64Array.from(fleet.failures.map((f) => f.detect)),
    causeReplacesNode: Uint8Array.from(fleet.failures.map((f) => (f.replaces_node ? 1 : 0))),
    failureRatePerNodeS,
    stragglerRatePerNodeS: fleet.stragglers ? perNodeS(fleet.stragglers) : 0,
    stragglerSlowdown: fleet.stragglers?.slowdown ?? 0,
    stragglerDetectS: fleet.stragglers?.detect ?? 0,
    workPerS,
    intervalS,
    intervalIsOptimal,
    minIntervalS,
    saveS: checkpoint.save,
    loadS: checkpoint.load,
    restartS: recovery.restart,
    shrinkOnNoSpare: recovery.no_spare === "shrink",
    shrinkFloorNodes: Math.max(1, Math.ceil(recovery.shrink_floor * nodes)),
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
