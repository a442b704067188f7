/**
 * A cheaper checkpoint save never predicts a worse run: with `interval: optimal`, Young/Daly's interval shrinks with
 * the save time, down to one step (or 1 s without a step time), never up to the MTBF. The table and --json report the
 * checkpoint advice for every fleet that fails, whatever the save time.
 */
import { describe, expect, it } from "vitest";
import { compilePlan } from "./compile.js";
import { runPlan } from "./planner.js";
import { renderJson, renderTable } from "./report.js";
import { planFrom } from "./test-helpers.js";

const scenario = (
  name: string,
  save: string,
  workload: Record<string, unknown> = { steps: 20000, step_time: "30s" },
) => ({
  name,
  fleet: {
    device: "gpu",
    devices: 512,
    devices_per_node: 8,
    spare_nodes: 4,
    failures: [{ cause: "gpu", per_node_day: 0.2, detect: "2m" }],
  },
  workload,
  checkpoint: { interval: "optimal", save, load: "2m" },
  recovery: { restart: "5m" },
});

describe("checkpoint save time and the optimal interval", () => {
  const saves = ["0s", "1s", "10s", "1m", "5m"];
  const plan = planFrom({ scenarios: saves.map((s) => scenario(`save-${s}`, s)) });
  const result = runPlan(plan, { trials: 200, seed: 11 });

  it("a cheaper save never predicts a worse ETTR (monotonic in the save time)", () => {
    const ettr = result.scenarios.map((s) => s.ettr.mean);
    for (let i = 1; i < ettr.length; i++)
      expect(ettr[i - 1]!, `${saves[i - 1]} vs ${saves[i]}`).toBeGreaterThan(ettr[i]!);
  });

  it("save 0s with interval optimal checkpoints every step, not every MTBF", () => {
    const fleet = compilePlan(plan).fleets[0]!;
    const mtbfS = 1 / (fleet.failureRatePerNodeS * fleet.nodes);
    expect(fleet.intervalS).toBe(30);
    expect(fleet.intervalS).toBeLessThan(mtbfS);
    // Without a step time, the documented minimum of 1 s.
    const tokens = compilePlan(
      planFrom({ scenarios: [scenario("t", "0s", { tokens: 1e12, tokens_per_device_second: 3000 })] }),
    ).fleets[0]!;
    expect(tokens.intervalS).toBe(1);
  });

  it("the table shows the fleet MTBF and the advice beside the interruptions, for save 0s too", () => {
    const table = renderTable(result);
    const mtbfRow = table.split("\n").find((l) => l.startsWith("fleet MTBF"))!;
    expect(mtbfRow).not.toContain("no failures");
    expect(mtbfRow.trim().split(/\s{2,}/)).toHaveLength(1 + saves.length);
    const configured = table.split("\n").find((l) => l.startsWith("configured"))!;
    expect(configured).toMatch(/^configured\s+30 s \(optimal\)/);
  });

  it("--json keeps the documented checkpoint key, for save 0s and for a fleet that never fails", () => {
    const parsed = JSON.parse(renderJson(result)) as {
      scenarios: Array<{ checkpoint: { intervalS: number; mtbfS: number; dalyS: number; goodputAtDaly: number } }>;
    };
    const first = parsed.scenarios[0]!.checkpoint;
    expect(first.intervalS).toBe(30);
    expect(first.mtbfS).toBeGreaterThan(0);
    expect(first.dalyS).toBe(30);
    expect(first.goodputAtDaly).toBeGreaterThan(parsed.scenarios[1]!.checkpoint.goodputAtDaly);
    const never = planFrom({
      scenarios: [{ ...scenario("never", "0s"), fleet: { ...scenario("x", "0s").fleet, failures: [] } }],
    });
    const neverJson = JSON.parse(renderJson(runPlan(never, { trials: 10, seed: 1 }))) as {
      scenarios: Array<Record<string, unknown>>;
    };
    expect(neverJson.scenarios[0]).toHaveProperty("checkpoint", null);
  });
});
