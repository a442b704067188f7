import { Command } from "commander";
import { ledgerCategories } from "../../core/goodput.js";
import type { JobReport } from "../../supervisor/report.js";
import { CliError, connect, ExitCode } from "../client.js";
import { globals } from "../context.js";
import { incidentNumbers, table } from "../format.js";
import { servingLedgerText } from "./services.js";

export function registerReportCommand(program: Command): void {
  program
    .command("report")
    .description(
      "goodput ledger of a job: where every second went, per incident, cause, node and pool; with --serving, the " +
        "serving ledger of the services (replica-seconds by state per pool)",
    )
    .argument("[job]", "job id or name")
    .option("--serving", "the serving ledger instead of a job's")
    .action(async (job: string | undefined, opts: { serving?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      if (opts.serving !== true && job === undefined) {
        throw new CliError(
          "report needs a job id or name, or --serving",
          ExitCode.Usage,
          "e.g. switchyard report chargpt",
        );
      }
      const client = await connect(g.home);
      if (opts.serving === true) {
        console.log(await servingLedgerText(client, g.json));
        return;
      }
      const report = await client.get<JobReport>(`/api/jobs/${encodeURIComponent(job!)}/report`);
      console.log(g.json ? JSON.stringify(withIncidentNumbers(report)) : formatReport(report));
    });
}

/** The report with each incident's per-job number (`number`; `id` stays the store's global id). */
export function withIncidentNumbers(report: JobReport): JobReport {
  const numbers = incidentNumbers(report.ledger.incidents);
  return {
    ...report,
    ledger: { ...report.ledger, incidents: report.ledger.incidents.map((i) => ({ ...i, number: numbers.get(i.id) })) },
  };
}

const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)}s`;
const minutes = (ms: number | null): string =>
  ms === null ? "-" : ms >= 60_000 ? `${(ms / 60_000).toFixed(1)} min` : seconds(ms);

export function formatReport(report: JobReport): string {
  const { ledger, advice } = report;
  const out: string[] = [];
  out.push(
    `goodput of ${report.jobId} (${report.state}): ${(ledger.goodput * 100).toFixed(1)}% of ${seconds(ledger.wallMs)} wall time was productive training`,
  );
  out.push("");
  out.push(
    table(
      ["WHERE THE TIME WENT", "SECONDS", "SHARE"],
      ledgerCategories
        .filter((c) => ledger.totals[c] > 0)
        .map((c) => [
          c,
          (ledger.totals[c] / 1000).toFixed(1),
          `${((ledger.totals[c] / Math.max(1, ledger.wallMs)) * 100).toFixed(1)}%`,
        ]),
    ),
  );
  if (ledger.incidents.length > 0) {
    const numbers = incidentNumbers(ledger.incidents);
    out.push("");
    out.push(
      table(
        ["INCIDENT", "CAUSE", "CULPRIT", "POOL", "DETECTED IN", "TO FIRST STEP", "STEPS LOST", "COST"],
        ledger.incidents.map((i) => [
          `#${numbers.get(i.id)}`,
          i.injected ? `${i.cause} (injected)` : i.cause,
          `rank ${i.culpritRank ?? "-"} on ${i.culpritNode ?? "-"}`,
          i.pool,
          seconds(i.detectionMs),
          i.timeToFirstStepMs === null ? "-" : seconds(i.timeToFirstStepMs),
          i.stepsLost,
          seconds(i.costMs),
        ]),
      ),
    );
    const by = (title: string, m: Record<string, number>) =>
      `${title}: ${Object.entries(m)
        .sort((a, b) => b[1] - a[1])
        .map(([k, v]) => `${k} ${seconds(v)}`)
        .join(", ")}`;
    out.push("");
    out.push(by("lost time by cause", ledger.byCause));
    out.push(by("lost time by node", ledger.byNode));
    out.push(by("lost time by pool", ledger.byPool));
  }
  out.push(`steps recomputed after rollbacks: ${ledger.stepsLost}`);
  out.push("");
  // Drills (`switchyard chaos`) cost time above but are no sample of the fleet's failure rate.
  const leftOut = advice.injectedLeftOut ?? 0;
  const notCounted = `${leftOut} injected fault${leftOut === 1 ? "" : "s"} not counted`;
  const drills = leftOut > 0 ? ` (${notCounted})` : "";
  if (advice.mtbfMs === null) {
    out.push(
      leftOut > 0
        ? `advisor: no failure yet but injected ones (${notCounted}), so no measured MTBF to tune the checkpoint interval against`
        : "advisor: no failure yet, so no measured MTBF to tune the checkpoint interval against",
    );
  } else if (advice.youngMs === null) {
    out.push(
      `advisor: measured MTBF ${minutes(advice.mtbfMs)}${drills}, but no checkpoint save time was reported (use the SDK's checkpoint())`,
    );
  } else {
    out.push(
      `advisor: measured MTBF ${minutes(advice.mtbfMs)}${drills}, checkpoint save ${seconds(advice.saveMs!)}: ` +
        `Young's interval ${minutes(advice.youngMs)}, Daly's ${minutes(advice.dalyMs)}; in use ${minutes(advice.intervalInUseMs)}` +
        verdict(advice.intervalInUseMs, advice.dalyMs!),
    );
  }
  // What the drill rehearsed: the same advice as if the injected faults had been the fleet's own.
  const drill = advice.ifInjectedWereReal;
  if (drill != null) {
    out.push(
      `  if the ${leftOut} injected fault${leftOut === 1 ? "" : "s"} had been real: MTBF ${minutes(drill.mtbfMs)}, ` +
        `Young's interval ${minutes(drill.youngMs)}, Daly's ${minutes(drill.dalyMs)}; in use ${minutes(advice.intervalInUseMs)}` +
        verdict(advice.intervalInUseMs, drill.dalyMs),
    );
  }
  return out.join("\n");
}

/** How the interval in use compares with Daly's: more than 1.5x off either way is worth changing. */
function verdict(inUse: number | null, dalyMs: number): string {
  if (inUse === null) return "";
  if (inUse > dalyMs * 1.5) return " — checkpoint more often";
  if (inUse < dalyMs / 1.5) return " — checkpoint less often";
  return " — about right";
}
