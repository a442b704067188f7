/** Text rendering of planner results: one column per scenario, one row per figure. */
import { formatDuration } from "./duration.js";
import { TIME_CATEGORIES, type TimeCategory } from "./engine.js";
import type { PlanResult } from "./planner.js";
import type { ScenarioSummary } from "./summary.js";

export const CATEGORY_LABELS: Record<TimeCategory, string> = {
  productive: "productive",
  degraded: "degraded (slow, shrunk, replicas)",
  checkpoint: "checkpoint saves",
  lost: "recomputed (lost work)",
  detection: "failure detection",
  restart: "restart + load",
  waiting: "waiting (spares, outages)",
  fallback: "fallback migration",
};

type Row = [label: string, cell: (s: ScenarioSummary) => string];

export function renderTable(result: PlanResult): string {
  const scenarios = result.scenarios;
  const causes = result.causes.filter((c) => scenarios.some((s) => s.interruptions.byCause[c] !== undefined));
  const rows: (Row | string)[] = [
    ["device", (s) => `${s.device} x ${s.devices.toLocaleString("en-US")}`],
    ["nodes (+ spares)", (s) => `${s.nodes.toLocaleString("en-US")} (+${s.spareNodes})`],
    "time to train",
    [
      "failure-free",
      (s) => (s.mode === "window" ? `window ${formatDuration(s.nominalS)}` : formatDuration(s.nominalS)),
    ],
    [
      "p10 / p50 / p90",
      (s) => (s.timeToTrain ? [s.timeToTrain.p10S, s.timeToTrain.p50S, s.timeToTrain.p90S].map(days).join(" / ") : "-"),
    ],
    ["finished (of trials)", (s) => (s.mode === "window" ? "-" : percent(s.finishedShare))],
    [
      "P(meet deadline)",
      (s) => (s.deadline ? `${percent(s.deadline.probability)} by ${formatDuration(s.deadline.deadlineS)}` : "-"),
    ],
    "goodput",
    ["ETTR (95% CI)", (s) => `${s.ettr.mean.toFixed(3)} ±${halfWidth(s.ettr.ci95).toFixed(3)}`],
    "interruptions per run",
    ["unexpected (95% CI)", (s) => `${s.interruptions.mean.toFixed(1)} ±${halfWidth(s.interruptions.ci95).toFixed(1)}`],
    ...causes.map((cause): Row => [`  ${cause}`, (s) => fixed1(s.interruptions.byCause[cause])]),
    ["  straggler removals", (s) => s.interruptions.stragglerRemovals.toFixed(1)],
    ["failures per run, p99", (s) => s.interruptions.p99.toFixed(0)],
    ["fell back to other fleet", (s) => percent(s.fellBackShare)],
    "wall time per run",
    ...TIME_CATEGORIES.map((c): Row => [
      `  ${CATEGORY_LABELS[c]}`,
      (s) => `${formatDuration(s.timeS[c])} ${share(s, c)}`,
    ]),
    "checkpoint interval",
    ["fleet MTBF", (s) => (s.checkpoint ? formatDuration(s.checkpoint.mtbfS) : "no failures")],
    [
      "configured",
      (s) =>
        s.checkpoint
          ? `${formatDuration(s.checkpoint.intervalS)}${s.checkpoint.intervalIsOptimal ? " (optimal)" : ""}`
          : "-",
    ],
    [
      "Young / Daly optimum",
      (s) => (s.checkpoint ? `${formatDuration(s.checkpoint.youngS)} / ${formatDuration(s.checkpoint.dalyS)}` : "-"),
    ],
    ["model goodput configured", (s) => (s.checkpoint ? s.checkpoint.goodputAtInterval.toFixed(3) : "-")],
    ["model goodput at Daly", (s) => (s.checkpoint ? s.checkpoint.goodputAtDaly.toFixed(3) : "-")],
  ];

  const header = ["", ...scenarios.map((s) => s.name)];
  const body: string[][] = rows.map((row) =>
    typeof row === "string" ? [row, ...scenarios.map(() => "")] : [row[0], ...scenarios.map(row[1])],
  );
  const widths = header.map((h, col) => Math.max(h.length, ...body.map((r) => (r[col] ?? "").length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, col) => (col === 0 ? c.padEnd(widths[col] ?? 0) : c.padStart(widths[col] ?? 0)))
      .join("  ")
      .trimEnd();
  const rule = widths.map((w) => "-".repeat(w)).join("  ");
  const footer = [
    `${result.trials} trials per scenario, seed ${result.seed}. ± is the 95% confidence interval of the mean; "model" is Daly's analytic goodput.`,
    "A job needs recovery.maxRestarts above its p99 failures per run, or the supervisor gives up on it.",
  ].join("\n");
  return [line(header), rule, ...body.map(line), "", footer].join("\n");
}

/** Days for runs of days (the usual case), seconds to hours for a short run (a calibrated rest of a small job). */
function days(seconds: number): string {
  if (!Number.isFinite(seconds)) return "never";
  return seconds < 2 * 86_400 ? formatDuration(seconds) : `${(seconds / 86_400).toFixed(1)} d`;
}

function percent(p: number): string {
  return `${(100 * p).toFixed(p > 0 && p < 0.01 ? 1 : 0)}%`;
}

function fixed1(value: number | undefined): string {
  return value === undefined ? "-" : value.toFixed(1);
}

function halfWidth(ci: [number, number]): number {
  return (ci[1] - ci[0]) / 2;
}

function share(s: ScenarioSummary, category: TimeCategory): string {
  const wall = TIME_CATEGORIES.reduce((sum, c) => sum + s.timeS[c], 0);
  return `(${(wall > 0 ? (100 * s.timeS[category]) / wall : 0).toFixed(1)}%)`;
}

/** JSON output: Infinity (never finished) becomes null, as JSON has no Infinity. */
export function renderJson(result: PlanResult): string {
  return JSON.stringify(
    result,
    (_key, value: unknown) => (typeof value === "number" && !Number.isFinite(value) ? null : value),
    2,
  );
}
