import { readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadPlanFile, runPlan } from "./planner.js";

const examplesDir = join(import.meta.dirname, "../../examples/plans");
const examples = readdirSync(examplesDir).filter((f) => f.endsWith(".yaml"));

describe("examples/plans", () => {
  it("has the Ascend/H20 pair and the validation cases", () => {
    expect(examples).toEqual(
      expect.arrayContaining(["ascend-vs-h20.yaml", "llama3-405b.yaml", "meta-rsc.yaml", "bloom-176b.yaml"]),
    );
  });

  it.each(examples)("%s is a valid plan that runs", (file) => {
    const result = runPlan(loadPlanFile(join(examplesDir, file)), { trials: 5, seed: 1 });
    expect(result.scenarios.length).toBeGreaterThan(0);
    for (const s of result.scenarios) expect(s.ettr.mean).toBeGreaterThan(0);
  });

  it("the Ascend-like fleet is the slower, less reliable one, and falling back to H20 rescues the deadline", () => {
    const result = runPlan(loadPlanFile(join(examplesDir, "ascend-vs-h20.yaml")), { trials: 100, seed: 1 });
    const byName = Object.fromEntries(result.scenarios.map((s) => [s.name, s]));
    const ascend = byName["ascend-910b"];
    const h20 = byName["h20"];
    const hybrid = byName["ascend-then-h20"];
    if (!ascend || !h20 || !hybrid) throw new Error("scenarios missing");
    expect(ascend.ettr.mean).toBeLessThan(h20.ettr.mean);
    expect(ascend.deadline?.probability ?? 1).toBeLessThan(hybrid.deadline?.probability ?? 0);
    expect(hybrid.fellBackShare).toBeGreaterThan(0.5);
  });
});
