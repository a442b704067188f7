import { readFileSync } from "node:fs";
import path from "node:path";
import { Command } from "commander";
import { destination, pino, type Logger } from "pino";
import { parseClusterSpec, type PoolSpec } from "../../core/spec.js";
import { loadServicesFile } from "../../gateway/config.js";
import { Gateway } from "../../gateway/gateway.js";
import { ReplicaSupervisor, type ReplicaEvent } from "../../gateway/replicas.js";
import { listenGateway, type ListeningGateway } from "../../gateway/server.js";
import { switchyardHome } from "../../paths.js";
import { globals } from "../context.js";
import { checkedKeys, createGateway, parsePort, untilStopSignal } from "./gateway.js";

export interface ServeRunOptions {
  port: number;
  host: string;
  keysFile?: string;
  allowUnauthenticated?: boolean;
  check?: boolean;
  logLevel?: string;
  /** Cluster file: pools of the same name give the replicas' accelerator vendor and node count. */
  cluster?: string;
  /** Where replica logs and exit records go (default: $SWITCHYARD_HOME/serve/<time>-<pid>). */
  runDir?: string;
  /** State folder (from the root program's --home). */
  home?: string;
  /** Supervisor poll period (tests). */
  pollMs?: number;
  logger?: Logger;
  onEvent?: (event: ReplicaEvent) => void;
}

export interface RunningServe {
  gateway: Gateway;
  http: ListeningGateway;
  supervisor: ReplicaSupervisor;
  runDir: string;
  /** Stops the replicas (unregistering them), then the listener and the gateway. */
  close(): Promise<void>;
}

function loadPoolSpecs(file: string | undefined): PoolSpec[] | undefined {
  if (file === undefined) return undefined;
  return parseClusterSpec(readFileSync(file, "utf8"), file).pools;
}

/**
 * Starts the gateway for <services.yaml> and the supervisor of its `replicas:` blocks; resolves once the gateway
 * listens and every replica was launched (they join the gateway as they become ready). With `check`, validates and
 * returns undefined.
 */
export async function startServe(servicesFile: string, opts: ServeRunOptions): Promise<RunningServe | undefined> {
  const config = loadServicesFile(servicesFile);
  const replicaPools = config.services.flatMap((s) =>
    s.pools
      .filter((p) => p.replicas !== undefined)
      .map((p) => ({ model: s.model, pool: p.name, n: p.replicas!.count })),
  );
  if (replicaPools.length === 0) {
    throw new Error(
      `${servicesFile}: no pool has a replicas: block, so there is nothing to launch; ` +
        `use \`switchyard gateway ${servicesFile}\` for external backends only`,
    );
  }
  const keys = checkedKeys(opts);
  const activeKeys = keys.activeKeys;
  const poolSpecs = loadPoolSpecs(opts.cluster);
  const logger = opts.logger ?? pino({ level: opts.logLevel ?? "info" }, destination({ sync: false }));
  const gateway = createGateway(config, keys, logger);
  const home = opts.home ?? switchyardHome();
  const runDir = path.resolve(
    opts.runDir ?? path.join(home, "serve", `${new Date().toISOString().replace(/[:.]/g, "-")}-${process.pid}`),
  );
  const onEvent =
    opts.onEvent ??
    ((e: ReplicaEvent): void => {
      logger.info({ replica: e.replica, service: e.service, pool: e.pool, node: e.node, port: e.port }, e.message);
      process.stderr.write(`replica ${e.service}/${e.replica} [${e.pool}] ${e.kind}: ${e.message}\n`);
    });
  // Relative paths in replica commands resolve against the services file's folder, as job specs do.
  const supervisor = new ReplicaSupervisor({
    gateway,
    config,
    runDir,
    workdir: path.dirname(path.resolve(servicesFile)),
    ...(poolSpecs !== undefined && { poolSpecs }),
    ...(opts.pollMs !== undefined && { pollMs: opts.pollMs }),
    onEvent,
  });
  if (opts.check === true) {
    await gateway.close();
    process.stdout.write(
      `${servicesFile}: OK — ${config.services.length} service(s), replicas: ` +
        replicaPools.map((r) => `${r.n} for ${r.model} on ${r.pool}`).join(", ") +
        `; ${activeKeys > 0 ? `${activeKeys} API key(s)` : "no API keys (open)"}\n`,
    );
    return undefined;
  }
  gateway.startHealthChecks();
  let http: ListeningGateway;
  try {
    http = await listenGateway(gateway, { host: opts.host, port: opts.port });
  } catch (err) {
    await gateway.close();
    throw err;
  }
  await supervisor.start();
  logger.info({ url: http.url, runDir, replicas: replicaPools }, "serve: gateway listening, replicas launched");
  return {
    gateway,
    http,
    supervisor,
    runDir,
    close: async () => {
      await supervisor.stop();
      await http.close();
      await gateway.close();
    },
  };
}

async function runServe(servicesFile: string, opts: ServeRunOptions, cmd: Command): Promise<void> {
  const running = await startServe(servicesFile, { ...opts, home: globals(cmd).home });
  if (running === undefined) return;
  process.stderr.write(
    `switchyard serve: gateway on ${running.http.url} (OpenAI API under /v1, metrics at /metrics); ` +
      `replica logs under ${running.runDir}; Ctrl-C stops the replicas\n`,
  );
  await untilStopSignal();
  process.stderr.write("switchyard serve: stopping replicas\n");
  await running.close();
  running.gateway.logger.flush();
}

/** `switchyard serve`: the gateway plus the model-server replicas of <services.yaml>, in the foreground. */
export function registerServeCommand(program: Command): void {
  program
    .command("serve")
    .description(
      "Launch and supervise the model-server replicas of <services.yaml> (restart on crash, cordon, move to the " +
        "fallback pool) behind the OpenAI-compatible gateway, in the foreground",
    )
    .argument("<services.yaml>", "services file with replicas: blocks (see examples/gateway/serve-chargpt.yaml)")
    .option("-p, --port <port>", "gateway port", parsePort, 8080)
    .option("-H, --host <host>", "gateway address", "127.0.0.1")
    .option("--cluster <file>", "cluster file: pools of the same name set the replicas' vendor and node count")
    .option("--run-dir <dir>", "replica logs and exit records (default: $SWITCHYARD_HOME/serve/<time>-<pid>)")
    .option("--keys-file <path>", "API keys file (default: $SWITCHYARD_HOME/gateway-keys.json)")
    .option("--allow-unauthenticated", "listen beyond loopback even when no API key exists")
    .option("--check", "validate the services file and exit")
    .option("--log-level <level>", "access log level (info, warn, silent)", "info")
    .action(async (servicesFile: string, opts: ServeRunOptions, cmd: Command) => runServe(servicesFile, opts, cmd));
}
