import { describe, expect, it } from "vitest";
import { runPlan } from "./planner.js";
import { renderJson, renderTable } from "./report.js";
import { completionCdfSvg, escapeXml, lostTimeSvg, niceCeiling } from "./svg.js";
import { planFrom } from "./test-helpers.js";

const fleet = (failuresPerNodeDay: number) => ({
  device: "gpu",
  devices: 64,
  devices_per_node: 8,
  spare_nodes: 2,
  failures: [{ cause: "gpu", per_node_day: failuresPerNodeDay, detect: "5m" }],
});
const scenario = (name: string, failuresPerNodeDay: number) => ({
  name,
  fleet: fleet(failuresPerNodeDay),
  workload: { steps: 2000, step_time: "60s" },
  checkpoint: { interval: "optimal", save: "1m" },
  recovery: { restart: "10m" },
  deadline: "40h",
});
const plan = planFrom({ scenarios: [scenario("flaky", 1), scenario("steady", 0.05)] });

describe("planner output", () => {
  const result = runPlan(plan, { trials: 200, seed: 3 });

  it("puts scenarios side by side, the flakier fleet slower and less likely to meet the deadline", () => {
    const [flaky, steady] = result.scenarios;
    if (flaky === undefined || steady === undefined) throw new Error("two scenarios expected");
    expect(flaky.ettr.mean).toBeLessThan(steady.ettr.mean);
    expect(flaky.deadline?.probability ?? 1).toBeLessThan(steady.deadline?.probability ?? 0);
    const table = renderTable(result);
    const header = table.split("\n")[0] ?? "";
    expect(header).toMatch(/flaky\s+steady$/);
    expect(table).toMatch(/^P\(meet deadline\)\s+\d+(\.\d+)?% by 40\.00 h\s+\d+(\.\d+)?% by 40\.00 h$/m);
    expect(table).toContain("Young / Daly optimum");
  });

  it("runs only the chosen scenario, with the same numbers as in a full run", () => {
    const only = runPlan(plan, { trials: 200, seed: 3, scenarios: ["steady"] });
    expect(only.scenarios.map((s) => s.name)).toEqual(["steady"]);
    expect(only.scenarios[0]).toEqual(result.scenarios[1]);
  });

  it("writes JSON without Infinity", () => {
    const parsed = JSON.parse(renderJson(result)) as { scenarios: { name: string; ettr: { mean: number } }[] };
    expect(parsed.scenarios.map((s) => s.name)).toEqual(["flaky", "steady"]);
    expect(typeof parsed.scenarios[0]?.ettr.mean).toBe("number");
  });

  it("draws a CDF line per scenario and a bar per scenario", () => {
    const cdf = completionCdfSvg(result.scenarios);
    expect(cdf.startsWith("<svg")).toBe(true);
    expect(cdf.trimEnd().endsWith("</svg>")).toBe(true);
    expect(cdf.match(/<polyline /g)).toHaveLength(2);
    expect(cdf).toContain(">flaky</text>");
    expect(cdf).not.toMatch(/NaN|Infinity/);
    const bars = lostTimeSvg(result.scenarios);
    expect(bars).toContain("recomputed (lost work)");
    expect(bars).not.toMatch(/NaN|Infinity/);
  });

  it("helpers: nice axis ends and XML escaping", () => {
    expect([0.7, 3, 11, 49].map(niceCeiling)).toEqual([1, 5, 20, 50]);
    expect(escapeXml('a<b & "c">')).toBe("a&lt;b &amp; &quot;c&quot;&gt;");
  });
});
