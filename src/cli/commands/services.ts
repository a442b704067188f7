import { readFileSync } from "node:fs";
import path from "node:path";
import { Command } from "commander";
import {
  describePlan,
  type DeployedService,
  type ReplicaView,
  type ServicePlan,
  type ServiceSummary,
  type ServingLedgerRow,
  type StoredService,
} from "../../supervisor/services.js";
import { CliError, connect, ExitCode, type ApiClient } from "../client.js";
import { registerServiceLogs } from "./service-logs.js";
import { globals } from "../context.js";
import { duration, table } from "../format.js";
import type { RequestsLedger, TrafficView } from "../../server/traffic.js";
import { formatRequestsLedger, formatTrafficLine, lastMinuteTraffic } from "./traffic.js";

/**
 * Services the server owns (issue 14): `deploy` a services file, `services` to list them, `services describe`,
 * `scale`, `undeploy`. Replicas are jobs of the server's supervisor; the gateway processes follow the live backend set
 * (`switchyard gateway --control-plane`, src/gateway/control-plane-source.ts).
 */
const enc = encodeURIComponent;

export interface Described {
  service: ServiceSummary;
  spec: StoredService;
  replicas: ReplicaView[];
}

function readServicesFile(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    throw new CliError(
      `cannot read services file ${file}: ${(err as Error).message}`,
      ExitCode.Usage,
      "pass the path of a services file (YAML), e.g. examples/hybrid/services.yaml",
    );
  }
}

export function formatServices(list: readonly ServiceSummary[]): string {
  if (list.length === 0) return "no services (deploy one: switchyard deploy services.yaml)";
  return table(
    ["SERVICE", "STATE", "READY", "POOLS", "CHECKPOINT", "AGE", "NOTE"],
    list.map((s) => [
      s.name,
      s.state,
      `${s.ready}/${s.desired}`,
      s.pools
        .filter((p) => p.desired > 0 || p.backends > 0)
        .map((p) => `${p.name}:${p.ready}/${p.desired}${p.backends > 0 ? `+${p.backends} ext` : ""}`)
        .join(" "),
      s.target ? `step ${s.target.step} of ${s.target.jobId}` : s.fromJob ? `(none of ${s.fromJob} yet)` : "-",
      duration(Date.now() - s.createdAt),
      s.note,
    ]),
  );
}

export function formatDescribe(d: Described, now = Date.now(), traffic?: TrafficView | null): string {
  const s = d.service;
  const out = [
    `${s.name}  ${s.state}  ${s.ready}/${s.desired} ready${s.note ? `  (${s.note})` : ""}`,
    `file        ${s.file}`,
  ];
  if (s.aliases.length > 0) out.push(`aliases     ${s.aliases.join(", ")}`);
  if (s.fromJob) {
    out.push(
      `model       newest verified checkpoint of job ${s.fromJob}: ${s.target ? `${s.target.path} (step ${s.target.step})` : "none yet"}`,
    );
  }
  for (const p of d.spec.pools) {
    const r = p.replicas;
    out.push(
      `pool        ${p.name} (priority ${p.priority}): ` +
        (r
          ? `${d.spec.deleting ? 0 : r.count} replica(s), engine ${r.engine}, ready within ${r.readyTimeoutS} s, drain ${r.drainSeconds ?? 30} s`
          : "") +
        (p.backends.length > 0 ? `${r ? "; " : ""}${p.backends.length} external backend(s)` : ""),
    );
  }
  if (traffic !== undefined) out.push(formatTrafficLine(traffic));
  const live = d.replicas.filter((r) => r.state !== "stopped" || now - r.updatedAt < 3600_000);
  if (live.length > 0) {
    out.push("");
    out.push(
      table(
        ["REPLICA", "JOB", "STATE", "POOL", "NODE", "URL", "STEP", "RESTARTS", "REASON"],
        live.map((r) => [
          r.slot,
          r.jobId,
          r.state === "stopped" ? `stopped (${r.jobState.toLowerCase()})` : r.state,
          r.runningPool ?? r.pool,
          r.node,
          r.state === "ready" || r.state === "draining" ? r.url : null,
          r.checkpointStep,
          r.restarts,
          r.reason,
        ]),
      ),
    );
  }
  out.push("");
  out.push("a replica's events and log: switchyard events <job>, switchyard logs <job>");
  return out.join("\n");
}

/** The serving ledger as `services ledger` and `report --serving` print it: replica-seconds, then requests. */
export async function servingLedgerText(client: ApiClient, json: boolean): Promise<string> {
  const {
    pools,
    requests = [],
    saved = [],
  } = await client.get<{ pools: ServingLedgerRow[] } & Partial<RequestsLedger>>("/api/services/ledger");
  return json
    ? JSON.stringify({ pools, requests, saved })
    : `${formatServingLedger(pools)}\n\n${formatRequestsLedger({ requests, saved })}`;
}

export function formatServingLedger(rows: readonly ServingLedgerRow[]): string {
  if (rows.length === 0) return "serving ledger: no replicas yet";
  const total = (r: ServingLedgerRow) => r.serving + r.starting + r.down;
  return [
    "serving ledger: replica-seconds by state, per pool",
    "",
    table(
      ["POOL", "SERVING", "STARTING", "DOWN", "AVAILABILITY"],
      rows.map((r) => [
        r.pool,
        r.serving.toFixed(1),
        r.starting.toFixed(1),
        r.down.toFixed(1),
        total(r) > 0 ? `${((r.serving / total(r)) * 100).toFixed(1)}%` : "-",
      ]),
    ),
  ].join("\n");
}

export function registerServicesCommands(program: Command): void {
  program
    .command("deploy")
    .description(
      "deploy the services of <services.yaml> on the server: replicas become supervised workloads on the cluster's " +
        "pools (placed, readiness-probed, restarted, struck and cordoned like training ranks); run it again to update",
    )
    .argument("<services.yaml>", "services file (see examples/hybrid/services.yaml)")
    .option("--cluster <file>", "cluster config for a server this command starts")
    .option(
      "--dry-run",
      "print what the deploy would do (created / unchanged / rolling: which fields / scaled N→M), change nothing",
    )
    .action(async (file: string, opts: { cluster?: string; dryRun?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const yaml = readServicesFile(file);
      const body = { yaml, file: path.resolve(file) };
      if (opts.dryRun === true) {
        // Compared with what the server runs: without a server there is nothing to compare with, so none is started.
        const client = await connect(g.home, { start: false });
        const plans = await client.post<Array<{ name: string; plan: ServicePlan }>>("/api/services", {
          ...body,
          dryRun: true,
        });
        if (g.json) return console.log(JSON.stringify({ dryRun: true, services: plans }));
        for (const p of plans) console.log(`${describePlan(p.plan)} (dry run)`);
        console.log("dry run: nothing was changed (deploy again without --dry-run to do it)");
        return;
      }
      const client = await connect(g.home, { clusterFile: opts.cluster });
      const deployed = await client.post<DeployedService[]>("/api/services", body);
      if (g.json) return console.log(JSON.stringify(deployed));
      for (const s of deployed) console.log(`${describePlan(s.plan)}${s.note ? ` (${s.note})` : ""}`);
      console.log("watch them: switchyard services; a gateway that follows them: switchyard gateway --control-plane");
    });

  const services = program
    .command("services")
    .description("services the server owns: replicas ready per pool, state, the checkpoint they serve")
    .action(async (_opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      const client = await connect(g.home, { start: false });
      const list = await client.get<ServiceSummary[]>("/api/services");
      console.log(g.json ? JSON.stringify(list) : formatServices(list));
    });

  services
    .command("describe")
    .description(
      "one service: its pools, the last minute's traffic, replicas (job, pool, node, URL, checkpoint step, restarts)",
    )
    .argument("<name>", "service (model) name or alias")
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      const client = await connect(g.home, { start: false });
      const d = await client.get<Described>(`/api/services/${enc(name)}`);
      const traffic = await lastMinuteTraffic(client, d.service.name);
      console.log(g.json ? JSON.stringify({ ...d, traffic }) : formatDescribe(d, Date.now(), traffic));
    });

  registerServiceLogs(services);

  services
    .command("ledger")
    .description(
      "serving ledger: replica-seconds by state (serving, starting, down) per pool; requests answered, failed and " +
        "saved by failover per service and pool (from the gateways' reports)",
    )
    .action(async (_opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      console.log(await servingLedgerText(await connect(g.home, { start: false }), g.json));
    });

  program
    .command("scale")
    .description("set the number of replicas of a service (on its first pool with replicas, or --pool)")
    .argument("<name>", "service (model) name or alias")
    .argument("<replicas>", "how many replicas (0 to 256)")
    .option("--pool <name>", "the pool to scale")
    .action(async (name: string, count: string, opts: { pool?: string }, cmd: Command) => {
      const g = globals(cmd);
      if (!/^\d{1,3}$/.test(count)) {
        throw new CliError(
          `scale ${name} ${count}: the replica count must be a whole number`,
          ExitCode.Usage,
          `e.g. switchyard scale ${name} 2`,
        );
      }
      const client = await connect(g.home, { start: false });
      const s = await client.post<ServiceSummary>(`/api/services/${enc(name)}/scale`, {
        replicas: Number(count),
        ...(opts.pool !== undefined && { pool: opts.pool }),
      });
      console.log(
        g.json ? JSON.stringify(s) : `${s.name}: ${s.pools.map((p) => `${p.name} ${p.desired} replica(s)`).join(", ")}`,
      );
    });

  program
    .command("undeploy")
    .description("stop a service: its replicas drain (no new requests, in-flight ones finish), then stop")
    .argument("<name>", "service (model) name or alias")
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      const client = await connect(g.home, { start: false });
      const s = await client.post<ServiceSummary>(`/api/services/${enc(name)}/undeploy`);
      console.log(g.json ? JSON.stringify(s) : `${s.name}: undeploying (replicas drain, then stop)`);
    });
}
