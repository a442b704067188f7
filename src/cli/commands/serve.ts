import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { Command } from "commander";
import type { Logger } from "pino";
import { stringify } from "yaml";
import type { CompiledServices } from "../../gateway/config.js";
import { MissingApiKeyEnvError } from "../../gateway/config.js";
import { followControlPlane } from "../../gateway/control-plane.js";
import { gatewayId } from "../../gateway/report.js";
import type { BackendWatch } from "../../gateway/control-plane-source.js";
import type { Gateway } from "../../gateway/gateway.js";
import type { ListeningGateway } from "../../gateway/server.js";
import { switchyardHome } from "../../paths.js";
import { readToken } from "../../server/config.js";
import type { EventRecord } from "../../store/port.js";
import type { ServiceSummary } from "../../supervisor/services.js";
import { vendorOfEngine } from "../../supervisor/services.js";
import { CliError, connect, ExitCode, type ApiClient } from "../client.js";
import { globals } from "../context.js";
import {
  addListenOptions,
  chooseKeys,
  consoleLogger,
  consoleMode,
  createGateway,
  DEFAULT_DRAIN_SECONDS,
  drainOnStop,
  listenForCli,
  loadServicesForCli,
  untilStopSignal,
  withServicesFile,
  type GatewayRunOptions,
} from "./gateway.js";

/**
 * `switchyard serve services.yaml`: deploy + gateway in one foreground command (issue 14). The replicas belong to the
 * server (started in the background when none runs for this home), which supervises them like training ranks; this
 * process deploys the file, runs a gateway that follows the server's live backend set, prints what happens to the
 * replicas, and on Ctrl-C drains the gateway and undeploys. For long-lived serving prefer the two parts:
 * `switchyard deploy services.yaml` and `switchyard gateway --control-plane URL` (docs/services.md).
 */
export interface ServeRunOptions extends GatewayRunOptions {
  /** Cluster file for a server this command starts; default: one local pool per replica pool of the file. */
  cluster?: string;
  /** Default: the console logger (human on a terminal, JSON otherwise). */
  logger?: Logger;
  /** Print JSON (the root program's --json). */
  json?: boolean;
  /** Each server event about the services' replicas (default: a log line). */
  onEvent?: (event: EventRecord) => void;
  /** How often the server's events are read for the console (ms). */
  eventsMs?: number;
}

export interface RunningServe {
  gateway: Gateway;
  http: ListeningGateway;
  client: ApiClient;
  services: string[];
  logger: Logger;
  /** Stops following the server, undeploys the services (their replicas drain and stop), closes the gateway. */
  close(): Promise<void>;
}

/**
 * The cluster a server started by `serve` gets when no --cluster is given: each pool with replicas becomes a local
 * pool with one virtual node per replica (as the replica supervisor of old placed them), its vendor from the engine.
 */
export function clusterForServices(config: CompiledServices): string {
  const pools = new Map<string, { nodes: number; vendor: string }>();
  for (const svc of config.services) {
    for (const p of svc.pools) {
      if (!p.replicas) continue;
      const prior = pools.get(p.name);
      pools.set(p.name, {
        nodes: Math.min(64, Math.max(prior?.nodes ?? 1, p.replicas.count)),
        vendor: prior?.vendor ?? vendorOfEngine(p.replicas.engine),
      });
    }
  }
  return stringify({
    pools: [...pools].map(([name, p]) => ({
      name,
      executor: "local",
      accelerator: { vendor: p.vendor },
      nodes: p.nodes,
    })),
  });
}

/** Replica events worth a console line, and the ones that deserve a warning. */
const shownKinds = /^(replica\.|service\.|incident$|node\.cordoned$|job\.restarting$|job\.failed$|job\.moved$)/;
const warnKinds = new Set([
  "replica.warning",
  "replica.failed",
  "incident",
  "node.cordoned",
  "job.failed",
  "job.moved",
]);

/** A server event about a service's replica as one log line. */
export function logServiceEvent(logger: Logger, e: EventRecord): void {
  const fields = { event: e.kind, job: e.jobId, ...e.data };
  const line = `${e.jobId ?? "-"} ${e.kind}: ${e.message}`;
  if (warnKinds.has(e.kind)) logger.warn(fields, line);
  else logger.info(fields, line);
}

/** Validates the file for serve: it must have replicas, and the replicas' API key variables must be set. */
function checkServeFile(
  servicesFile: string,
  config: CompiledServices,
): Array<{ model: string; pool: string; n: number }> {
  const replicaPools = config.services.flatMap((s) =>
    s.pools
      .filter((p) => p.replicas !== undefined)
      .map((p) => ({ model: s.model, pool: p.name, n: p.replicas!.count })),
  );
  if (replicaPools.length === 0) {
    throw new CliError(
      `${servicesFile}: no pool has a replicas: block, so there is nothing to launch`,
      ExitCode.Usage,
      `use \`switchyard gateway ${servicesFile}\` for external backends only`,
    );
  }
  withServicesFile(servicesFile, () => {
    for (const s of config.services) {
      for (const p of s.pools) {
        const env = p.replicas?.apiKeyEnv;
        if (env !== undefined && !process.env[env])
          throw new MissingApiKeyEnvError(`replicas of ${s.model}/${p.name}`, env);
      }
    }
  });
  return replicaPools;
}

/**
 * Deploys <services.yaml> on the home's server (starting one when none runs) and runs a gateway in this process that
 * follows the server's backend set; resolves once the gateway listens (replicas join as they become ready). With
 * `check`, validates and returns undefined.
 */
export async function startServe(servicesFile: string, opts: ServeRunOptions): Promise<RunningServe | undefined> {
  const config = loadServicesForCli(servicesFile);
  const replicaPools = checkServeFile(servicesFile, config);
  const home = opts.home ?? switchyardHome();
  const keys = chooseKeys(opts, home);
  if (opts.check === true) {
    // The gateway is built (and closed) so that an unset apiKeyEnv of a backend is found now.
    await withServicesFile(servicesFile, () => createGateway(config, keys, consoleLogger("json", "silent"))).close();
    const summary = `${servicesFile}: OK — ${config.services.length} service(s), replicas: ${replicaPools
      .map((r) => `${r.n} for ${r.model} on ${r.pool}`)
      .join(", ")}; ${keys.activeKeys > 0 ? `${keys.activeKeys} API key(s)` : "no API keys (open)"}`;
    process.stdout.write(
      opts.json === true
        ? `${JSON.stringify({ file: servicesFile, ok: true, replicas: replicaPools, apiKeys: keys.activeKeys })}\n`
        : `${summary}\n`,
    );
    return undefined;
  }
  const logger = opts.logger ?? consoleLogger(consoleMode(opts.json === true), opts.logLevel ?? "info");
  let clusterFile = opts.cluster;
  if (clusterFile === undefined) {
    const text = clusterForServices(config);
    const dir = path.join(home, "serve");
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    clusterFile = path.join(dir, `cluster-${createHash("sha256").update(text).digest("hex").slice(0, 12)}.yaml`);
    writeFileSync(clusterFile, text, { mode: 0o600 });
  }
  const client = await connect(home, { clusterFile });
  const deployed = await client.post<ServiceSummary[]>("/api/services", {
    yaml: readFileSync(servicesFile, "utf8"),
    file: path.resolve(servicesFile),
  });
  const gateway = withServicesFile(servicesFile, () => createGateway(config, keys, logger));
  let http: ListeningGateway;
  try {
    http = await listenForCli(gateway, opts.host, opts.port);
  } catch (err) {
    await gateway.close();
    throw err;
  }
  gateway.startHealthChecks();
  if (keys.notice !== undefined) logger.warn({ auth: false }, keys.notice);
  const stop = new AbortController();
  const names = new Set(config.services.flatMap((s) => [s.model, ...s.aliases]));
  const watch: BackendWatch = followControlPlane({
    url: client.url,
    token: readToken(home) ?? "",
    cacheFile: path.join(home, "serve", "backends.json"),
    logger,
    signal: stop.signal,
    // Only this file's services: a server may serve others too.
    apply: (list) => gateway.setBackends(list.filter((b) => names.has(b.service))),
    traffic: { gateway: gatewayId(), metricsText: () => gateway.metrics.registry.metrics() },
  });
  // The server's events about these services' replicas, on this console.
  const onEvent = opts.onEvent ?? ((e: EventRecord): void => logServiceEvent(logger, e));
  let after = (await client.get<EventRecord[]>("/api/events?after=0")).reduce((m, e) => Math.max(m, e.id), 0);
  const replicaJobs = (e: EventRecord): boolean =>
    e.jobId?.startsWith("svc-") === true || e.kind.startsWith("service.");
  let reading = false; // one read at a time: two would both start from the same `after` and say events twice
  const poll = setInterval(() => {
    if (reading) return;
    reading = true;
    void client
      .get<EventRecord[]>(`/api/events?after=${after}`)
      .then((list) => {
        for (const e of list) {
          if (e.id <= after) continue;
          after = e.id;
          if (shownKinds.test(e.kind) && replicaJobs(e)) onEvent(e);
        }
      })
      .catch(() => undefined)
      .finally(() => (reading = false));
  }, opts.eventsMs ?? 1000);
  logger.info(
    { url: http.url, server: client.url, services: deployed.map((s) => s.name), replicas: replicaPools },
    `switchyard serve: gateway on ${http.url} (OpenAI API under /v1, metrics at /metrics); ${deployed
      .map((s) => s.name)
      .join(", ")} deployed on the server at ${client.url}, which supervises the replicas; Ctrl-C undeploys them`,
  );
  const undeploy = async (): Promise<void> => {
    for (const s of deployed)
      await client.post(`/api/services/${encodeURIComponent(s.name)}/undeploy`).catch(() => undefined);
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      const left = (await client.get<ServiceSummary[]>("/api/services").catch(() => [])).filter((s) =>
        deployed.some((d) => d.name === s.name),
      );
      if (left.length === 0) return;
      await new Promise((r) => setTimeout(r, 250));
    }
  };
  return {
    gateway,
    http,
    client,
    services: deployed.map((s) => s.name),
    logger,
    close: async () => {
      clearInterval(poll);
      await undeploy();
      stop.abort();
      await watch.done;
      await http.close();
      await gateway.close();
    },
  };
}

async function runServe(servicesFile: string, opts: ServeRunOptions, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const running = await startServe(servicesFile, { ...opts, home: g.home, json: g.json });
  if (running === undefined) return;
  const signal = await untilStopSignal();
  // Streams in flight finish on the replicas (which keep running meanwhile), then the services are undeployed.
  await drainOnStop(
    running.http,
    running.gateway,
    running.logger,
    signal,
    opts.drainTimeout ?? DEFAULT_DRAIN_SECONDS,
    "serve",
  );
  running.logger.info({}, `serve: undeploying ${running.services.join(", ")} (the server stays up: switchyard down)`);
  await running.close();
  await new Promise<void>((resolve) => running.logger.flush(() => resolve()));
}

/** `switchyard serve`: deploy + a gateway that follows the server, in the foreground. */
export function registerServeCommand(program: Command): void {
  addListenOptions(
    program
      .command("serve")
      .description(
        "Deploy the services of <services.yaml> on the server (started if needed; it launches and supervises the " +
          "replicas like training ranks) and run an OpenAI-compatible gateway that follows them, in the foreground; " +
          "Ctrl-C undeploys. For long-lived serving use `deploy` and `gateway --control-plane` (docs/services.md)",
      )
      .argument("<services.yaml>", "services file with replicas: blocks (see examples/gateway/serve-chargpt.yaml)")
      .option(
        "--cluster <file>",
        "cluster file for a server this command starts (default: one local pool per replica pool of the file)",
      ),
  ).action(async (servicesFile: string, opts: ServeRunOptions, cmd: Command) => runServe(servicesFile, opts, cmd));
}
