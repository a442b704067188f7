/**
 * Gateway traffic in the CLI (issue 14): the last minute's traffic line of `services describe`, and the request
 * counts of `services ledger` (answered, failed, saved by failover). The numbers come from the gateways' reports to
 * the server (src/server/traffic.ts has what each means).
 */
import type { ApiClient } from "../client.js";
import { table } from "../format.js";
import type { RequestsLedger, TrafficSeries, TrafficView } from "../../server/traffic.js";

/** The service's traffic over the last minute, or null when no gateway reported any (or the server is older). */
export async function lastMinuteTraffic(client: ApiClient, service: string): Promise<TrafficView | null> {
  try {
    const s = await client.get<TrafficSeries>(
      `/api/services/traffic?service=${encodeURIComponent(service)}&since=60s&step=60`,
    );
    return s.services.find((x) => x.service === service)?.totals ?? null;
  } catch {
    return null;
  }
}

const ms = (v: number | null): string =>
  v === null ? "-" : v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${v.toFixed(0)} ms`;
/** A count: whole (a window's edge cuts a report's interval in proportion, so counts can carry fractions). */
const n = (v: number): string => String(Math.round(v));

/** One line: req/s, TTFT p50/p99, failed (cut), errors by reason, failovers, saved. */
export function formatTrafficLine(t: TrafficView | null): string {
  if (t === null) return "traffic     none reported by a gateway in the last minute";
  const errors = Object.entries(t.errors)
    .sort(([, a], [, b]) => b - a)
    .map(([k, v]) => `${k} ${n(v)}`)
    .join(", ");
  return (
    `traffic     last minute: ${t.reqPerS.toFixed(2)} req/s (${n(t.requests)} requests), ` +
    `TTFT p50 ${ms(t.ttftP50Ms)} p99 ${ms(t.ttftP99Ms)}, ` +
    `${n(t.failed)} failed${t.cut > 0 ? ` (${n(t.cut)} cut mid-answer)` : ""}, ` +
    `errors ${errors || "none"}, failovers ${n(t.failovers)}, saved by failover ${n(t.saved)}`
  );
}

/** The serving ledger's request counts: per service and pool, then saved by failover per service. */
export function formatRequestsLedger(l: RequestsLedger): string {
  if (l.requests.length === 0 && l.saved.length === 0) {
    return "requests: none reported yet (gateways that follow the server report theirs: switchyard gateway --control-plane)";
  }
  const saved = new Map(l.saved.map((s) => [s.service, s]));
  return [
    "requests through the gateways, per service and pool (the pool that answered; (none): no backend did)",
    "",
    table(
      ["SERVICE", "POOL", "ANSWERED", "FAILED", "CUT", "CLIENT ERR", "CLIENT LEFT"],
      l.requests.map((r) => [r.service, r.pool, r.answered, r.failed, r.incomplete, r.clientError, r.clientClosed]),
    ),
    "",
    table(
      ["SERVICE", "SAVED BY FAILOVER", "RETRIES", "FAILOVERS TO ANOTHER POOL"],
      [...new Set([...l.requests.map((r) => r.service), ...saved.keys()])].map((svc) => {
        const s = saved.get(svc);
        return [svc, s?.saved ?? 0, s?.retries ?? 0, s?.failovers ?? 0];
      }),
    ),
    "",
    "failed: the client got a 5xx or an answer cut mid-way; saved: a backend failed before the first byte and another " +
      "answered (docs/services.md)",
  ].join("\n");
}
