import { readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadPlanFile, runPlan } from "./planner.js";

const examplesDir = join(import.meta.dirname, "../../examples/plans");
const examples = readdirSync(examplesDir).filter((f) => f.endsWith(".yaml"));

describe("examples/plans", () => {
  it("has the Ascend/H20 pair and the validation cases", () => {
    expect(examples).toEqual(
      expect.arrayContaining([
        "ascend-vs-h20.yaml",
        "llama3-405b.yaml",
        "meta-rsc.yaml",
        "bloom-176b.yaml",
        "megascale.yaml",
        "byterobust.yaml",
        "opt-175b.yaml",
        "palm-540b.yaml",
        "messy-fleet.yaml",
      ]),
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

  it("on the messy fleet, a memory tier and partial recovery turn waiting and rework into degraded time", () => {
    const result = runPlan(loadPlanFile(join(examplesDir, "messy-fleet.yaml")), { trials: 100, seed: 1 });
    const [whole, tiered] = result.scenarios;
    if (!whole || !tiered) throw new Error("scenarios missing");
    expect(tiered.ettr.mean).toBeGreaterThan(whole.ettr.mean);
    expect(tiered.timeS.waiting).toBeLessThan(whole.timeS.waiting / 10);
    expect(tiered.timeS.lost).toBeLessThan(whole.timeS.lost / 2);
    expect(tiered.timeS.degraded).toBeGreaterThan(whole.timeS.degraded);
    // Every cause of the file shows up, the outages and loss spikes included.
    for (const cause of ["device", "toolkit-crash", "tor-switch", "unclassified-hang", "loss-spike"]) {
      expect(whole.interruptions.byCause[cause]).toBeGreaterThan(0);
    }
  });
});
