/**
 * Every combination of the planner's knobs keeps the books: each trial ends, every category is non-negative, the
 * categories add up to the wall time, and productive time never exceeds the failure-free time. Plans are drawn from a
 * seeded generator, so a failure names a reproducible plan.
 */
import { describe, expect, it } from "vitest";
import { Rng } from "./rng.js";
import { TIME_CATEGORIES } from "./engine.js";
import { planFrom, simulate } from "./test-helpers.js";

function randomPlan(seed: number) {
  const rng = new Rng(seed);
  const coin = (p = 0.5) => rng.nextFloat() < p;
  const pick = <T>(xs: T[]): T => xs[Math.floor(rng.nextFloat() * xs.length)] as T;
  const spread = (mean: string) => (coin() ? mean : { mean, cv: pick([0.2, 0.5, 1]) });
  const failures: Record<string, unknown>[] = [
    {
      cause: "gpu",
      per_node_day: pick([0.05, 0.2, 1]),
      detect: spread("5m"),
      handled_by: coin(0.2) ? "manual" : "auto",
    },
  ];
  if (coin()) failures.push({ cause: "crash", per_node_day: 0.1, detect: "2m", replaces_node: false });
  if (coin()) failures.push({ cause: "rack", hosts: 4, per_domain_day: 0.2, detect: "5m", repair: spread("6h") });
  if (coin(0.3)) failures.push({ cause: "power", hosts: "all", per_day: 0.05, repair: "8h" });
  const partial = coin(0.4);
  return planFrom({
    scenarios: [
      {
        name: `random-${seed}`,
        fleet: {
          device: "gpu",
          devices: 128,
          devices_per_node: 8,
          spare_nodes: pick([0, 2, 8]),
          node_replace_time: "1d",
          failures,
          ...(coin() ? { burn_in: { period: "2d", multiplier: 3 } } : {}),
          ...(coin() ? { repeat_offenders: { share: 0.3, multiplier: 4 } } : {}),
          ...(coin() ? { stragglers: { per_node_day: 0.2, slowdown: 0.3, detect: "30m" } } : {}),
          ...(coin()
            ? {
                network: {
                  degraded_share: 0.1,
                  ...(coin() ? { collapses: { per_day: 2, duration: spread("30m"), slowdown: 3 } } : {}),
                },
              }
            : {}),
        },
        workload: {
          steps: 20_000,
          step_time: "30s",
          ...(coin() ? { loss_spikes: { per_day: 0.3, rollback: pick([1, 2, 4]), detect: spread("1h") } } : {}),
        },
        checkpoint: {
          interval: pick(["optimal", "1h"]),
          ...(coin()
            ? { save: spread("30s"), load: spread("2m") }
            : { size: "500GB", storage: { write_bandwidth: "5GB/s", read_bandwidth: "2GB/s", spread: 0.3 } }),
          ...(coin()
            ? {
                memory: {
                  interval: pick(["optimal", "5m"]),
                  save: "1s",
                  load: "10s",
                  survives: pick(["software", "host"]),
                },
              }
            : {}),
        },
        recovery: {
          restart: spread("5m"),
          no_spare: pick(["wait", "shrink"]),
          ...(partial ? { partial: { replicas: pick([2, 4, 8]), rejoin: spread("20m") } } : {}),
        },
      },
    ],
  });
}

describe("the books balance for any combination of knobs", () => {
  it.each(Array.from({ length: 40 }, (_, i) => i + 1))("random plan %i", (seed) => {
    const { run, summary } = simulate(randomPlan(seed), { trials: 20, seed });
    const nominal = run.nominalS;
    for (const c of TIME_CATEGORIES) expect(summary.timeS[c]).toBeGreaterThanOrEqual(-1e-6);
    const meanWall = run.wallS.reduce((a, b) => a + b, 0) / run.trials;
    const sum = TIME_CATEGORIES.reduce((a, c) => a + summary.timeS[c], 0);
    expect(Math.abs(sum - meanWall) / meanWall).toBeLessThan(1e-9);
    for (let i = 0; i < run.trials; i++) {
      expect(run.productiveS[i]).toBeLessThanOrEqual(nominal * (1 + 1e-9));
      if (run.finished[i] === 1) expect(run.productiveS[i]).toBeCloseTo(nominal, 3);
    }
  });
});
