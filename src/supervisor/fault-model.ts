import { mulberry32 } from "../core/random.js";
import type { PoolSpec } from "../core/spec.js";

export type PoolFault = { kind: "kill"; why: string } | { kind: "hang"; why: string };

/**
 * Lets a local pool play an unstable fleet: device failures at a declared MTBF per device (a rank is SIGKILLed, as a
 * chip would take it down) and hangs at a declared chance per minute (a rank is SIGSTOPped, as behind a dead link).
 * Seeded, so a demo or benchmark replays the same schedule.
 */
export class FaultModel {
  private readonly rng: () => number;

  constructor(private readonly pool: PoolSpec) {
    this.rng = mulberry32(pool.faultModel?.seed ?? 1);
  }

  /** Draws the faults of the last `dtMs` for an attempt using `devices` devices of this pool. */
  draw(dtMs: number, devices: number): PoolFault | null {
    const model = this.pool.faultModel;
    if (!model || dtMs <= 0) return null;
    if (model.deviceMtbfSeconds) {
      const rate = devices / model.deviceMtbfSeconds; // failures per second across the devices in use
      if (this.rng() < 1 - Math.exp(-rate * (dtMs / 1000))) {
        return {
          kind: "kill",
          why: `device failure (pool ${this.pool.name}: device MTBF ${model.deviceMtbfSeconds}s)`,
        };
      }
    }
    if (model.hangProbabilityPerMinute) {
      if (this.rng() < 1 - Math.pow(1 - model.hangProbabilityPerMinute, dtMs / 60_000)) {
        return { kind: "hang", why: `hang (pool ${this.pool.name}: ${model.hangProbabilityPerMinute} per minute)` };
      }
    }
    return null;
  }

  pickRank(count: number): number {
    return Math.min(count - 1, Math.floor(this.rng() * count));
  }
}
