import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { Command } from "commander";
import type { Logger } from "pino";
import { parseClusterSpec, type PoolSpec } from "../../core/spec.js";
import type { Gateway } from "../../gateway/gateway.js";
import { ReplicaSupervisor, type ReplicaEvent } from "../../gateway/replicas.js";
import type { ListeningGateway } from "../../gateway/server.js";
import { switchyardHome } from "../../paths.js";
import { CliError, ExitCode } from "../client.js";
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

export interface ServeRunOptions extends GatewayRunOptions {
  /** Cluster file: pools of the same name give the replicas' accelerator vendor and node count. */
  cluster?: string;
  /** Where replica logs and exit records go (default: $SWITCHYARD_HOME/serve/<time>-<pid>). */
  runDir?: string;
  /** Supervisor poll period (tests). */
  pollMs?: number;
  /** Default: the console logger (human on a terminal, JSON otherwise). */
  logger?: Logger;
  /** Default: each event is a log line (warnings at level warn). */
  onEvent?: (event: ReplicaEvent) => void;
  /** Print JSON (the root program's --json). */
  json?: boolean;
}

export interface RunningServe {
  gateway: Gateway;
  http: ListeningGateway;
  supervisor: ReplicaSupervisor;
  runDir: string;
  logger: Logger;
  /** Stops the replicas (unregistering them), then the listener and the gateway, at once. */
  close(): Promise<void>;
}

function loadPoolSpecs(file: string | undefined): PoolSpec[] | undefined {
  if (file === undefined) return undefined;
  if (!existsSync(file)) {
    throw new CliError(`cluster file ${file} (--cluster) does not exist`, ExitCode.Usage, "check the path");
  }
  return parseClusterSpec(readFileSync(file, "utf8"), file).pools;
}

/** Replica events that deserve attention on the console are logged as warnings. */
const warningKinds = new Set<ReplicaEvent["kind"]>([
  "warning",
  "launch-failed",
  "not-ready",
  "exited",
  "cordoned",
  "moved",
  "gave-up",
]);

/** A replica event as one log line: structured fields, and the human sentence as the message. */
export function logReplicaEvent(logger: Logger, e: ReplicaEvent): void {
  const fields = {
    event: e.kind,
    replica: e.replica,
    service: e.service,
    pool: e.pool,
    ...(e.node !== undefined && { node: e.node }),
    ...(e.port !== undefined && { port: e.port }),
  };
  const line = `replica ${e.service}/${e.replica} [${e.pool}] ${e.kind}: ${e.message}`;
  if (warningKinds.has(e.kind)) logger.warn(fields, line);
  else logger.info(fields, line);
}

/**
 * Starts the gateway for <services.yaml> and the supervisor of its `replicas:` blocks; resolves once the gateway
 * listens and every replica was launched (they join the gateway as they become ready). With `check`, validates and
 * returns undefined.
 */
export async function startServe(servicesFile: string, opts: ServeRunOptions): Promise<RunningServe | undefined> {
  const config = loadServicesForCli(servicesFile);
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
  const home = opts.home ?? switchyardHome();
  const keys = chooseKeys(opts, home);
  const poolSpecs = loadPoolSpecs(opts.cluster);
  const logger = opts.logger ?? consoleLogger(consoleMode(opts.json === true), opts.logLevel ?? "info");
  const gateway = withServicesFile(servicesFile, () => createGateway(config, keys, logger));
  const runDir = path.resolve(
    opts.runDir ?? path.join(home, "serve", `${new Date().toISOString().replace(/[:.]/g, "-")}-${process.pid}`),
  );
  const onEvent = opts.onEvent ?? ((e: ReplicaEvent): void => logReplicaEvent(logger, e));
  // Relative paths in replica commands resolve against the services file's folder, as job specs do.
  let supervisor: ReplicaSupervisor;
  try {
    supervisor = withServicesFile(
      servicesFile,
      () =>
        new ReplicaSupervisor({
          gateway,
          config,
          runDir,
          workdir: path.dirname(path.resolve(servicesFile)),
          home,
          ...(poolSpecs !== undefined && { poolSpecs }),
          ...(opts.pollMs !== undefined && { pollMs: opts.pollMs }),
          onEvent,
        }),
    );
  } catch (err) {
    await gateway.close();
    throw err;
  }
  if (opts.check === true) {
    await gateway.close();
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
  let http: ListeningGateway;
  try {
    http = await listenForCli(gateway, opts.host, opts.port);
  } catch (err) {
    await gateway.close();
    throw err;
  }
  gateway.startHealthChecks();
  if (keys.notice !== undefined) logger.warn({ auth: false }, keys.notice);
  await supervisor.start();
  logger.info(
    { url: http.url, runDir, replicas: replicaPools },
    `switchyard serve: gateway on ${http.url} (OpenAI API under /v1, metrics at /metrics); replicas launched, ` +
      `logs under ${runDir}; Ctrl-C stops them`,
  );
  return {
    gateway,
    http,
    supervisor,
    runDir,
    logger,
    close: async () => {
      await supervisor.stop();
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
  // Streams in flight finish on the replicas (which keep running meanwhile), then the replicas stop.
  await drainOnStop(
    running.http,
    running.gateway,
    running.logger,
    signal,
    opts.drainTimeout ?? DEFAULT_DRAIN_SECONDS,
    "serve",
  );
  running.logger.info({}, "serve: stopping the replicas");
  await running.supervisor.stop();
  await running.gateway.close();
  await new Promise<void>((resolve) => running.logger.flush(() => resolve()));
}

/** `switchyard serve`: the gateway plus the model-server replicas of <services.yaml>, in the foreground. */
export function registerServeCommand(program: Command): void {
  addListenOptions(
    program
      .command("serve")
      .description(
        "Launch and supervise the model-server replicas of <services.yaml> (restart on crash, cordon, move to the " +
          "fallback pool) behind the OpenAI-compatible gateway, in the foreground. Prints human lines on a " +
          "terminal, JSON lines with --json or when stdout is not a terminal",
      )
      .argument("<services.yaml>", "services file with replicas: blocks (see examples/gateway/serve-chargpt.yaml)")
      .option("--cluster <file>", "cluster file: pools of the same name set the replicas' vendor and node count")
      .option("--run-dir <dir>", "replica logs and exit records (default: $SWITCHYARD_HOME/serve/<time>-<pid>)"),
  ).action(async (servicesFile: string, opts: ServeRunOptions, cmd: Command) => runServe(servicesFile, opts, cmd));
}
