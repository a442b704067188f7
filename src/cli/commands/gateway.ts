import { existsSync, readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import path from "node:path";
import { createSecureContext } from "node:tls";
import { Writable } from "node:stream";
import { Command, InvalidArgumentError } from "commander";
import { destination, pino, type Logger } from "pino";
import {
  loadServicesFile,
  MissingApiKeyEnvError,
  ServicesConfigError,
  defaultGatewaySettings,
  type CompiledServices,
} from "../../gateway/config.js";
import { AccessLog } from "../../gateway/access-log.js";
import { Gateway, type GatewayOptions } from "../../gateway/gateway.js";
import { addKey, KeyAuthenticator, readKeysFile, revokeKey } from "../../gateway/keys.js";
import { isLoopbackHost, listenGateway, type ListenerTls, type ListeningGateway } from "../../gateway/server.js";
import { GatewayCluster, WorkerLink, workerSlot, type ManagedBackend } from "../../gateway/cluster.js";
import { followControlPlane } from "../../gateway/control-plane.js";
import { gatewayId } from "../../gateway/report.js";
import { badOrigin, type CorsSettings } from "../../gateway/cors.js";
import { homePaths } from "../../server/config.js";
import { SpecError } from "../../core/spec-errors.js";
import { CliError, ExitCode } from "../client.js";
import { globals } from "../context.js";

export function parsePort(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError("a port number 0-65535");
  return n;
}

/** `--workers`: a count 1-64, or `auto` for one per core. */
export function parseWorkers(value: string): number {
  if (value === "auto") return Math.max(1, Math.min(64, availableParallelism()));
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 64) throw new InvalidArgumentError("a count 1-64, or auto (one per core)");
  return n;
}

function collectOrigin(value: string, previous: string[] | undefined): string[] {
  const why = badOrigin(value);
  if (why !== undefined) throw new InvalidArgumentError(why);
  return [...(previous ?? []), value];
}

function parseGatewayName(value: string): string {
  if (!/^[A-Za-z0-9._:@-]{1,128}$/.test(value)) {
    throw new InvalidArgumentError("1-128 characters of A-Z a-z 0-9 . _ : @ - (e.g. edge-eu-1)");
  }
  return value;
}

function parsePositiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("a positive integer");
  return n;
}

/** Seconds, 0 to one hour (the drain deadline). */
export function parseDrainSeconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0 || n > 3600) throw new InvalidArgumentError("seconds, 0 to 3600");
  return n;
}

export const DEFAULT_DRAIN_SECONDS = 30;

export interface GatewayRunOptions {
  port: number;
  host: string;
  keysFile?: string;
  /** false with --no-auth: no API keys, even if a keys file exists. */
  auth?: boolean;
  check?: boolean;
  logLevel?: string;
  /** Seconds that requests in flight get to finish after SIGTERM/SIGINT. */
  drainTimeout?: number;
  /** State folder (from the root program's --home). */
  home?: string;
  /** Gateway processes sharing the port (`gateway` only). */
  workers?: number;
  /** Follow this server's backend set (`gateway` only). */
  controlPlane?: string;
  tokenFile?: string;
  tlsCert?: string;
  tlsKey?: string;
  corsOrigin?: string[];
  /** The gateway's name in its traffic reports to --control-plane (default host:pid). */
  name?: string;
}

// ---------------------------------------------------------------------------------------------------------------
// Errors that name the file and the fix
// ---------------------------------------------------------------------------------------------------------------

/** Loads a services file; a missing or invalid file is bad input (exit 2) that names the file. */
export function loadServicesForCli(file: string, what = "services file"): CompiledServices {
  if (!existsSync(file)) {
    throw new CliError(
      `${what} ${file} does not exist`,
      ExitCode.Usage,
      "check the path; examples/gateway/local.yaml is a services file that works on a fresh machine",
    );
  }
  try {
    return loadServicesFile(file);
  } catch (err) {
    if (err instanceof ServicesConfigError) {
      // Every issue carries its own fix; the list goes to --json as `issues`.
      throw new CliError(err.message, ExitCode.Usage, undefined, err.issues);
    }
    throw err;
  }
}

/** Runs `build`; a backend API key variable that is not set is bad input naming the variable and the file. */
export function withServicesFile<T>(file: string, build: () => T): T {
  try {
    return build();
  } catch (err) {
    if (err instanceof MissingApiKeyEnvError) {
      throw new CliError(
        `${file}: ${err.where}: environment variable ${err.variable} (apiKeyEnv) is not set`,
        ExitCode.Usage,
        `export ${err.variable}=<that backend's API key>, or remove apiKeyEnv from ${err.where} in ${file}`,
      );
    }
    throw err;
  }
}

/** Listens, turning "port in use" and "no permission" into bad input with a fix. */
export async function listenForCli(
  gateway: Gateway,
  host: string,
  port: number,
  tls?: ListenerTls,
): Promise<ListeningGateway> {
  try {
    return await listenGateway(gateway, { host, port, tls });
  } catch (err) {
    throw listenError(err, host, port);
  }
}

/** "Port in use", "no permission", "not this host" as bad input with a fix; anything else unchanged. */
function listenError(err: unknown, host: string, port: number): unknown {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "EADDRINUSE" || code === "EACCES" || code === "EADDRNOTAVAIL") {
    const why = code === "EADDRINUSE" ? "is in use" : code === "EACCES" ? "needs privileges" : "is not on this host";
    return new CliError(
      `cannot listen on ${host}:${port}: the address ${why} (${code})`,
      ExitCode.Usage,
      code === "EADDRNOTAVAIL" ? "pass --host with an address of this machine" : "choose another --port",
    );
  }
  return err;
}

// ---------------------------------------------------------------------------------------------------------------
// TLS on the listener
// ---------------------------------------------------------------------------------------------------------------

/**
 * Reads `--tls-cert` / `--tls-key` (PEM) and checks that they make a usable pair: both or neither, each readable,
 * each PEM of the right kind, the key the certificate's. Each failure is bad input naming the file and the fix.
 */
export function loadTlsFiles(certFile: string | undefined, keyFile: string | undefined): ListenerTls | undefined {
  if (certFile === undefined && keyFile === undefined) return undefined;
  if (certFile === undefined || keyFile === undefined) {
    throw new CliError(
      `${certFile === undefined ? "--tls-key" : "--tls-cert"} given without ${certFile === undefined ? "--tls-cert" : "--tls-key"}`,
      ExitCode.Usage,
      "pass both --tls-cert <cert.pem> and --tls-key <key.pem>",
    );
  }
  const read = (file: string, flag: string): Buffer => {
    try {
      return readFileSync(file);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? "error";
      const why = code === "ENOENT" ? "does not exist" : code === "EACCES" ? "is not readable by this user" : code;
      throw new CliError(
        `${flag} ${file} ${why} (${code})`,
        ExitCode.Usage,
        `check the path and permissions of ${file}`,
      );
    }
  };
  const cert = read(certFile, "--tls-cert");
  const key = read(keyFile, "--tls-key");
  if (!cert.includes("-----BEGIN CERTIFICATE-----")) {
    throw new CliError(
      `--tls-cert ${certFile} holds no PEM certificate (no -----BEGIN CERTIFICATE----- line)`,
      ExitCode.Usage,
      "pass the PEM certificate (chain) file; convert DER with `openssl x509 -inform der -in cert.der -out cert.pem`",
    );
  }
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(key.toString("latin1"))) {
    throw new CliError(
      `--tls-key ${keyFile} holds no PEM private key (no -----BEGIN ... PRIVATE KEY----- line)`,
      ExitCode.Usage,
      "pass the unencrypted PEM private key that belongs to the certificate",
    );
  }
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    if (/key values mismatch|KEY_VALUES_MISMATCH/i.test(msg)) {
      throw new CliError(
        `--tls-key ${keyFile} is not the private key of --tls-cert ${certFile}`,
        ExitCode.Usage,
        "pass the key the certificate was issued for (compare `openssl x509 -noout -pubkey -in CERT` with `openssl pkey -pubout -in KEY`)",
      );
    }
    throw new CliError(
      `--tls-cert ${certFile} / --tls-key ${keyFile} cannot be used: ${msg}`,
      ExitCode.Usage,
      "pass an unencrypted PEM key and its PEM certificate",
    );
  }
  return { cert, key };
}

// ---------------------------------------------------------------------------------------------------------------
// API keys: which file, and whether the gateway may run open
// ---------------------------------------------------------------------------------------------------------------

export interface KeysChoice {
  /** The keys file in use; undefined when the gateway runs open. */
  keysFile: string | undefined;
  activeKeys: number;
  /** A line to print at start when the choice deserves a word (open gateway, --no-auth with keys present). */
  notice?: string;
}

export function defaultKeysFile(home: string): string {
  return path.join(home, "gateway-keys.json");
}

function activeKeysIn(file: string): number {
  try {
    return readKeysFile(file).keys.filter((k) => k.revokedAt === undefined).length;
  } catch (err) {
    // A SpecError lists each problem with its position and fix; main() prints it as bad input (exit 2).
    if (err instanceof SpecError) throw err;
    throw new CliError(
      err instanceof Error ? err.message : String(err),
      ExitCode.Usage,
      "fix the file, or point --keys-file at another one",
    );
  }
}

/**
 * Decides authentication. A keys file named with --keys-file must exist and hold an active key. Without it, the
 * default file ($SWITCHYARD_HOME/gateway-keys.json) is used when it holds keys; otherwise the gateway runs open, which
 * is allowed on a loopback address only, unless --no-auth says so explicitly.
 */
export function chooseKeys(opts: Pick<GatewayRunOptions, "host" | "keysFile" | "auth">, home: string): KeysChoice {
  const noAuth = opts.auth === false;
  if (noAuth && opts.keysFile !== undefined) {
    throw new CliError("--keys-file and --no-auth contradict each other", ExitCode.Usage, "pass one of them");
  }
  if (opts.keysFile !== undefined) {
    const file = path.resolve(opts.keysFile);
    if (!existsSync(file)) {
      throw new CliError(
        `keys file ${file} (--keys-file) does not exist`,
        ExitCode.Usage,
        `create it with \`switchyard gateway keys add <name> --keys-file ${opts.keysFile}\``,
      );
    }
    const activeKeys = activeKeysIn(file);
    if (activeKeys === 0) {
      throw new CliError(
        `keys file ${file} (--keys-file) holds no active key, so every request would be refused`,
        ExitCode.Usage,
        `add one with \`switchyard gateway keys add <name> --keys-file ${opts.keysFile}\``,
      );
    }
    return { keysFile: file, activeKeys };
  }
  const file = defaultKeysFile(home);
  if (noAuth) {
    const present = existsSync(file) ? activeKeysIn(file) : 0;
    return {
      keysFile: undefined,
      activeKeys: 0,
      notice:
        `--no-auth: no API keys; anyone who can reach ${opts.host} can use the models` +
        (present > 0 ? ` (the ${present} key(s) in ${file} are not checked)` : ""),
    };
  }
  const activeKeys = existsSync(file) ? activeKeysIn(file) : 0;
  if (activeKeys > 0) return { keysFile: file, activeKeys };
  if (!isLoopbackHost(opts.host)) {
    throw new CliError(
      `refusing to listen on ${opts.host} without API keys: anyone who can reach it could use your models`,
      ExitCode.Usage,
      `add a key with \`switchyard gateway keys add <name>\` (stored hashed in ${file}), listen on 127.0.0.1, ` +
        `or pass --no-auth if the network is trusted`,
    );
  }
  return {
    keysFile: undefined,
    activeKeys: 0,
    notice: `no API keys in ${file}: open to anyone on this machine (add one with \`switchyard gateway keys add <name>\`)`,
  };
}

/** The gateway for a services config, with its logger and, when keys are in use, key authentication. */
export function createGateway(
  config: CompiledServices,
  keys: KeysChoice,
  logger: Logger,
  extra: Omit<GatewayOptions, "logger" | "auth"> = {},
): Gateway {
  return new Gateway(config, {
    logger,
    ...extra,
    ...(keys.keysFile !== undefined && { auth: new KeyAuthenticator({ path: keys.keysFile }) }),
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Console output: human lines on a terminal, JSON lines otherwise; never both on one stream
// ---------------------------------------------------------------------------------------------------------------

export type ConsoleMode = "human" | "json";

/** JSON with --json or when stdout is not a terminal (a pipe, a file, a log collector); human lines on a terminal. */
export function consoleMode(json: boolean, stdout: { isTTY?: boolean } = process.stdout): ConsoleMode {
  return json || stdout.isTTY !== true ? "json" : "human";
}

const levelNames: Record<number, string> = {
  10: "trace",
  20: "debug",
  30: "info",
  40: "warn",
  50: "error",
  60: "fatal",
};

/** One pino JSON line as a human line: the time, the level when it is not info, and what happened. */
export function humanLine(json: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.endsWith("\n") ? json : `${json}\n`;
  }
  const t = typeof o.time === "number" ? new Date(o.time).toTimeString().slice(0, 8) : "";
  const level = typeof o.level === "number" && o.level !== 30 ? `${(levelNames[o.level] ?? "").toUpperCase()} ` : "";
  const msg = typeof o.msg === "string" ? o.msg : "";
  let text: string;
  if (msg === "request") {
    const parts = [
      `${String(o.method)} ${String(o.path)}`,
      `model=${String(o.model)}${o.stream === true ? " stream" : ""}`,
      `${String(o.status)}${o.result !== undefined && o.result !== "complete" ? ` ${String(o.result)}` : ""}`,
      `via ${String(o.backend)}`,
      `${String(o.ms)} ms`,
    ];
    if (typeof o.attempts === "number" && o.attempts > 1) parts.push(`attempts=${o.attempts}`);
    if (o.failure !== undefined) parts.push(`failure=${String(o.failure)}`);
    else if (o.lastFailure !== undefined) parts.push(`last failure=${String(o.lastFailure)}`);
    if (o.key !== undefined) parts.push(`key=${String(o.key)}`);
    text = parts.join("  ");
  } else if (msg === "rejected") {
    text = `${String(o.method)} ${String(o.path)}  ${String(o.status)} refused (${String(o.reason)})`;
  } else {
    text = msg;
    if (o.err !== undefined) text += `: ${String(o.err)}`;
  }
  return `${t} ${level}${text}\n`;
}

/**
 * The console logger of `gateway` and `serve`: pino JSON lines on stdout in JSON mode, the same records as human
 * lines in human mode. `out` is for tests.
 */
export function consoleLogger(mode: ConsoleMode, level: string, out?: NodeJS.WritableStream): Logger {
  if (mode === "json") {
    // Written in batches (8 KiB, or every 100 ms at the latest). The per-request access line does not come here on a
    // real stdout: it goes through AccessLog (access-log.ts), which costs a fraction of pino's per line.
    return out === undefined
      ? pino({ level }, destination({ sync: false, minLength: 8 * 1024, periodicFlush: 100 }))
      : pino({ level }, out);
  }
  const sink = out ?? process.stdout;
  const human = new Writable({
    write(chunk: Buffer, _enc, cb) {
      sink.write(humanLine(chunk.toString("utf8")));
      cb();
    },
  });
  return pino({ level }, human);
}

// ---------------------------------------------------------------------------------------------------------------
// Stop signals and drain
// ---------------------------------------------------------------------------------------------------------------

/** Resolves on the first SIGINT or SIGTERM. */
export function untilStopSignal(): Promise<NodeJS.Signals> {
  return new Promise<NodeJS.Signals>((resolve) => {
    const stop = (signal: NodeJS.Signals): void => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      resolve(signal);
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
}

/** An AbortSignal that fires on the next SIGINT or SIGTERM (a second Ctrl-C cuts the drain short). */
export function nextStopSignal(): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const stop = (): void => controller.abort();
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  return {
    signal: controller.signal,
    dispose: () => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
    },
  };
}

/** Drains the listener after a stop signal, saying what it does; a second signal cuts what is left at once. */
export async function drainOnStop(
  http: ListeningGateway,
  gateway: Gateway,
  logger: Logger,
  signal: NodeJS.Signals,
  drainSeconds: number,
  what: string,
): Promise<void> {
  const open = gateway.openRequests();
  logger.info(
    { signal, inFlight: open, drainSeconds },
    `${what}: ${signal}: no new requests; ` +
      (open > 0
        ? `${open} in flight may finish within ${drainSeconds} s (send it again to cut them now)`
        : "nothing in flight"),
  );
  const again = nextStopSignal();
  try {
    const { cut } = await http.drain(drainSeconds * 1000, again.signal);
    logger.info(
      { cut },
      cut > 0
        ? `${what}: drain deadline passed; ${cut} request(s) cut (streams got an in-band gateway_shutdown error)`
        : open > 0
          ? `${what}: every request in flight finished`
          : `${what}: stopped`,
    );
  } finally {
    again.dispose();
  }
}

function flush(logger: Logger): Promise<void> {
  return new Promise((resolve) => logger.flush(() => resolve()));
}

// ---------------------------------------------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------------------------------------------

/** The control plane to follow: its URL and the token (from --token-file or the home's token file). */
function controlPlaneFor(opts: GatewayRunOptions, home: string): { url: string; token: string } | undefined {
  if (opts.controlPlane === undefined) {
    if (opts.tokenFile !== undefined) {
      throw new CliError("--token-file is only used with --control-plane", ExitCode.Usage, "pass --control-plane URL");
    }
    if (opts.name !== undefined) {
      throw new CliError(
        "--name is the gateway's name in its traffic reports to a control plane",
        ExitCode.Usage,
        "pass --control-plane URL, or drop --name",
      );
    }
    return undefined;
  }
  let url: URL;
  try {
    url = new URL(opts.controlPlane);
    if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error("scheme");
  } catch {
    throw new CliError(
      `--control-plane ${opts.controlPlane} is not an http(s) URL`,
      ExitCode.Usage,
      "pass the server's URL, e.g. --control-plane http://127.0.0.1:7070 (`switchyard status` shows it)",
    );
  }
  const file = opts.tokenFile !== undefined ? path.resolve(opts.tokenFile) : homePaths(home).token;
  let token: string;
  try {
    token = readFileSync(file, "utf8").trim();
  } catch (err) {
    throw new CliError(
      `cannot read the control plane's API token from ${file} (${(err as NodeJS.ErrnoException).code ?? "error"})`,
      ExitCode.Usage,
      opts.tokenFile !== undefined
        ? "check --token-file"
        : "pass --token-file with the server's token file, or --home with the server's home",
    );
  }
  if (token.length < 16) {
    throw new CliError(
      `the API token in ${file} is empty or too short`,
      ExitCode.Usage,
      "pass the server's token file",
    );
  }
  return { url: url.toString().replace(/\/+$/, ""), token };
}

interface Prepared {
  servicesFile: string | undefined;
  config: CompiledServices;
  keys: KeysChoice;
  tls: ListenerTls | undefined;
  cors: CorsSettings | undefined;
  controlPlane: { url: string; token: string } | undefined;
  home: string;
  backends: number;
}

/** Everything a gateway process checks before it serves; the same in the primary and in each worker. */
function prepare(servicesFile: string | undefined, opts: GatewayRunOptions, home: string): Prepared {
  const controlPlane = controlPlaneFor(opts, home);
  if (servicesFile === undefined && controlPlane === undefined) {
    throw new CliError(
      "no services file and no --control-plane: the gateway would have nothing to serve",
      ExitCode.Usage,
      "pass a services file (see examples/gateway/local.yaml), or --control-plane URL to serve what the server deploys",
    );
  }
  const config: CompiledServices =
    servicesFile !== undefined ? loadServicesForCli(servicesFile) : { settings: defaultGatewaySettings, services: [] };
  const keys = chooseKeys(opts, home);
  const tls = loadTlsFiles(opts.tlsCert, opts.tlsKey);
  const origins = [...(config.cors?.origins ?? []), ...(opts.corsOrigin ?? [])];
  const cors = origins.length > 0 ? { origins, maxAgeS: config.cors?.maxAgeS } : undefined;
  const backends = config.services.reduce((n, s) => n + s.pools.reduce((m, p) => m + p.backends.length, 0), 0);
  return { servicesFile, config, keys, tls, cors, controlPlane, home, backends };
}

function buildGateway(p: Prepared, logger: Logger, extra: Omit<GatewayOptions, "logger" | "auth">): Gateway {
  const build = (): Gateway =>
    createGateway(p.config, p.keys, logger, { ...extra, ...(p.cors !== undefined && { cors: p.cors }) });
  return p.servicesFile !== undefined ? withServicesFile(p.servicesFile, build) : build();
}

async function runGateway(servicesFile: string | undefined, opts: GatewayRunOptions, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const home = opts.home ?? g.home;
  const p = prepare(servicesFile, opts, home);
  if (opts.check === true) {
    // Building the gateway also checks what YAML cannot: apiKeyEnv variables, TLS CA files.
    await buildGateway(p, pino({ level: "silent" }), {}).close();
    const summary = {
      file: servicesFile ?? null,
      ok: true,
      services: p.config.services.length,
      backends: p.backends,
      apiKeys: p.keys.activeKeys,
    };
    process.stdout.write(
      g.json
        ? `${JSON.stringify(summary)}\n`
        : `${servicesFile ?? "(no services file)"}: OK — ${p.config.services.length} service(s), ${p.backends} backend(s); ` +
            `${p.keys.activeKeys > 0 ? `${p.keys.activeKeys} API key(s)` : "no API keys (open)"}\n`,
    );
    return;
  }
  const workers = opts.workers ?? 1;
  const slot = workerSlot();
  const mode = consoleMode(g.json);
  const logger = consoleLogger(mode, opts.logLevel ?? "info");
  if (slot !== undefined) {
    const accessLog = mode === "json" ? new AccessLog(1, { bindings: { worker: slot } }) : undefined;
    return runWorker(p, opts, workers, slot, logger.child({ worker: slot }), accessLog);
  }
  if (workers > 1) return runPrimary(p, opts, workers, logger);

  const accessLog = mode === "json" ? new AccessLog(1) : undefined;
  const gateway = buildGateway(p, logger, { ...(accessLog !== undefined && { accessLog }) });
  let http: ListeningGateway;
  try {
    http = await listenForCli(gateway, opts.host, opts.port, p.tls);
  } catch (err) {
    await gateway.close();
    throw err;
  }
  gateway.startHealthChecks();
  const stopWatch = new AbortController();
  if (p.controlPlane !== undefined) {
    followControlPlane({
      ...p.controlPlane,
      cacheFile: controlPlaneCache(home),
      logger,
      signal: stopWatch.signal,
      apply: (list) => gateway.setBackends(list),
      traffic: { gateway: gatewayId(opts.name), metricsText: () => gateway.metrics.registry.metrics() },
    });
  }
  if (p.keys.notice !== undefined) logger.warn({ auth: false }, p.keys.notice);
  logger.info(
    {
      url: http.url,
      services: p.config.services.map((s) => s.model),
      backends: p.backends,
      auth: p.keys.keysFile !== undefined,
      workers: 1,
      ...(p.controlPlane !== undefined && { controlPlane: p.controlPlane.url }),
    },
    `switchyard gateway listening on ${http.url} (OpenAI API under ${http.url}/v1, metrics at /metrics); ` +
      `Ctrl-C stops it`,
  );
  const signal = await untilStopSignal();
  stopWatch.abort();
  await drainOnStop(http, gateway, logger, signal, opts.drainTimeout ?? DEFAULT_DRAIN_SECONDS, "gateway");
  await gateway.close();
  accessLog?.close();
  await flush(logger);
}

/** Where a gateway following a control plane keeps the last set it got (served when the server is away at start). */
function controlPlaneCache(home: string): string {
  return path.join(home, "gateway", "backends-cache.json");
}

/** The primary of `--workers N`: forks the workers, probes, decides health and limits, follows the control plane. */
async function runPrimary(p: Prepared, opts: GatewayRunOptions, workers: number, logger: Logger): Promise<void> {
  const relay: { cluster?: GatewayCluster } = {};
  const gateway = buildGateway(p, logger, { onProbed: (id, state) => relay.cluster?.onProbed(id, state) });
  const cluster = new GatewayCluster({ workers, gateway, logger });
  relay.cluster = cluster;
  let url: string;
  try {
    url = await cluster.start();
  } catch (err) {
    await gateway.close();
    throw listenError(err, opts.host, opts.port);
  }
  gateway.startHealthChecks();
  const stopWatch = new AbortController();
  if (p.controlPlane !== undefined) {
    const c = cluster;
    followControlPlane({
      ...p.controlPlane,
      cacheFile: controlPlaneCache(p.home),
      logger,
      signal: stopWatch.signal,
      apply: (list: ManagedBackend[]) => c.setBackends(list),
      traffic: { gateway: gatewayId(opts.name), metricsText: () => c.metricsText() },
    });
  }
  if (p.keys.notice !== undefined) logger.warn({ auth: false }, p.keys.notice);
  logger.info(
    {
      url,
      services: p.config.services.map((s) => s.model),
      backends: p.backends,
      auth: p.keys.keysFile !== undefined,
      workers,
      pids: cluster.pids(),
      ...(p.controlPlane !== undefined && { controlPlane: p.controlPlane.url }),
    },
    `switchyard gateway listening on ${url} with ${workers} worker processes (OpenAI API under ${url}/v1, ` +
      `metrics at /metrics); Ctrl-C stops it`,
  );
  const signal = await untilStopSignal();
  stopWatch.abort();
  const drainSeconds = opts.drainTimeout ?? DEFAULT_DRAIN_SECONDS;
  logger.info(
    { signal, drainSeconds, workers },
    `gateway: ${signal}: no new requests; requests in flight on ${workers} workers may finish within ${drainSeconds} s ` +
      "(send it again to cut them now)",
  );
  const again = nextStopSignal();
  try {
    const { cut } = await cluster.stop(drainSeconds * 1000, again.signal);
    logger.info(
      { cut },
      cut > 0
        ? `gateway: drain deadline passed; ${cut} request(s) cut (streams got an in-band gateway_shutdown error)`
        : "gateway: stopped",
    );
  } finally {
    again.dispose();
  }
  await gateway.close();
  await flush(logger);
}

/** One worker of `--workers N`: serves on the shared port with the primary's view of limits and health. */
async function runWorker(
  p: Prepared,
  opts: GatewayRunOptions,
  workers: number,
  slot: number,
  logger: Logger,
  accessLog: AccessLog | undefined,
): Promise<void> {
  // Stop signals are the primary's to handle: it tells each worker to drain (Ctrl-C reaches the whole group).
  const ignore = (): void => undefined;
  process.on("SIGINT", ignore);
  process.on("SIGTERM", ignore);
  const link = new WorkerLink(workers);
  const init = await link.init();
  const gateway = buildGateway(p, logger, {
    limiter: link.limiter,
    metricsText: link.metricsText,
    onHealthEvent: link.onHealthEvent,
    worker: slot,
    ...(accessLog !== undefined && { accessLog }),
  });
  link.attach(gateway, gateway.metrics.registry);
  if (init.backends !== null) await gateway.setBackends(init.backends);
  for (const [id, state] of init.health) gateway.applyHealthState(id, state);
  for (const [id, state] of init.probes) gateway.applyProbeState(id, state);
  let http: ListeningGateway;
  try {
    http = await listenGateway(gateway, { host: opts.host, port: opts.port, tls: p.tls });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    link.send({ t: "listen-error", code: e.code ?? "ERROR", message: e.message });
    await gateway.close();
    link.close();
    process.exit(2);
  }
  link.send({ t: "ready", url: http.url });
  const drainMs = await new Promise<number>((resolve) => link.onDrain(resolve));
  let cut = 0;
  try {
    cut = (await http.drain(drainMs, link.cutSignal)).cut;
  } finally {
    try {
      link.send({ t: "drained", cut });
    } catch {
      // The primary is gone.
    }
    await gateway.close();
    link.close();
    accessLog?.close();
    await flush(logger);
    process.exit(0);
  }
}

/** The options `gateway` and `serve` share. */
export function addListenOptions(command: Command): Command {
  return command
    .option("-p, --port <port>", "port to listen on", parsePort, 8080)
    .option("-H, --host <host>", "address to listen on", "127.0.0.1")
    .option(
      "--keys-file <path>",
      "API keys file; it must exist and hold a key (default: $SWITCHYARD_HOME/gateway-keys.json when it has keys)",
    )
    .option("--no-auth", "run without API keys, also on a non-loopback --host (a trusted network only)")
    .option(
      "--drain-timeout <seconds>",
      "on SIGTERM/Ctrl-C, seconds that requests in flight get to finish before they are cut",
      parseDrainSeconds,
      DEFAULT_DRAIN_SECONDS,
    )
    .option("--check", "validate the services file (and the variables it names) and exit")
    .option("--log-level <level>", "log level (info, warn, silent)", "info");
}

/** `switchyard gateway`: the OpenAI-compatible inference gateway, and its API keys. */
export function registerGatewayCommand(program: Command): void {
  const gateway = addListenOptions(
    program
      .command("gateway")
      .description(
        "Run the OpenAI-compatible inference gateway in front of the model servers in <services.yaml>. Prints human " +
          "lines on a terminal, JSON lines with --json or when stdout is not a terminal",
      )
      .argument("[services.yaml]", "services file (see examples/gateway/local.yaml); optional with --control-plane"),
  )
    .option(
      "--workers <n>",
      "gateway processes sharing the port (1-64, or auto: one per core); limits and backend health stay shared",
      parseWorkers,
      1,
    )
    .option(
      "--control-plane <url>",
      "route to the backends the switchyard server at <url> deploys (kept on disk; served while it is away)",
    )
    .option("--token-file <path>", "the server's API token for --control-plane (default: the home's token file)")
    .option(
      "--name <name>",
      "this gateway's name in the traffic it reports to --control-plane (default: host:pid)",
      parseGatewayName,
    )
    .option("--tls-cert <file>", "serve HTTPS with this PEM certificate (chain); needs --tls-key")
    .option("--tls-key <file>", "the PEM private key of --tls-cert")
    .option(
      "--cors-origin <origin>",
      "let web pages from this origin (https://app.example.com, or * for any) call the API; repeatable",
      collectOrigin,
    )
    .action(async (servicesFile: string | undefined, opts: GatewayRunOptions, cmd: Command) =>
      runGateway(servicesFile, opts, cmd),
    );

  // `--keys-file` after `keys add|list|revoke` is parsed by `gateway` (it has the same option), so the subcommands
  // read it with optsWithGlobals().
  const keysFileOf = (cmd: Command): string => {
    const o = cmd.optsWithGlobals<{ keysFile?: string }>();
    return o.keysFile !== undefined ? path.resolve(o.keysFile) : defaultKeysFile(globals(cmd).home);
  };
  const keys = gateway.command("keys").description("Manage gateway API keys (stored as SHA-256 hashes)");
  keys
    .command("add")
    .description("Create a key (and the keys file if needed); it is printed once and cannot be shown again")
    .argument("<name>", "who or what the key is for")
    .option("--rpm <n>", "rate limit in requests per minute", parsePositiveInt)
    .option(
      "--tpm <n>",
      "limit in tokens per minute (usage of the answers; estimated from bytes without)",
      parsePositiveInt,
    )
    .option("--keys-file <path>", "API keys file (default: $SWITCHYARD_HOME/gateway-keys.json)")
    .action((name: string, opts: { rpm?: number; tpm?: number }, cmd: Command) => {
      const file = keysFileOf(cmd);
      const { key, record } = addKey(file, {
        name,
        ...(opts.rpm !== undefined && { rpm: opts.rpm }),
        ...(opts.tpm !== undefined && { tpm: opts.tpm }),
      });
      if (globals(cmd).json) {
        process.stdout.write(`${JSON.stringify({ key, id: record.id, name, keysFile: file })}\n`);
        return;
      }
      process.stdout.write(`${key}\n`);
      process.stderr.write(`key ${record.id} (${name}) added to ${file}; store it now, it is not kept in clear\n`);
    });
  keys
    .command("list")
    .description("List keys (id, name, prefix, rate limit, state)")
    .option("--keys-file <path>", "API keys file (default: $SWITCHYARD_HOME/gateway-keys.json)")
    .option("--json", "machine-readable output")
    .action((_opts: unknown, cmd: Command) => {
      const file = keysFileOf(cmd);
      if (cmd.optsWithGlobals<{ keysFile?: string }>().keysFile !== undefined && !existsSync(file)) {
        throw new CliError(
          `keys file ${file} (--keys-file) does not exist`,
          ExitCode.Usage,
          `create it with \`switchyard gateway keys add <name> --keys-file ${file}\``,
        );
      }
      const list = readKeysFile(file).keys.map(({ hash: _hash, ...k }) => k);
      if (cmd.optsWithGlobals<{ json?: boolean }>().json === true) {
        process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
        return;
      }
      const rows = [["ID", "NAME", "PREFIX", "RPM", "TPM", "CREATED", "STATE"]];
      for (const k of list) {
        rows.push([
          k.id,
          k.name,
          `${k.prefix}…`,
          k.rpm?.toString() ?? "-",
          k.tpm?.toString() ?? "-",
          k.createdAt,
          k.revokedAt ? "revoked" : "active",
        ]);
      }
      const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
      process.stdout.write(
        rows
          .map((r) =>
            r
              .map((c, i) => c.padEnd(widths[i]!))
              .join("  ")
              .trimEnd(),
          )
          .join("\n") + "\n",
      );
    });
  keys
    .command("revoke")
    .description("Revoke a key by id or name; a running gateway stops accepting it within a second")
    .argument("<id-or-name>")
    .option("--keys-file <path>", "API keys file (default: $SWITCHYARD_HOME/gateway-keys.json)")
    .action((idOrName: string, _opts: unknown, cmd: Command) => {
      const file = keysFileOf(cmd);
      const record = revokeKey(file, idOrName);
      if (record === undefined) {
        throw new CliError(
          `no active key "${idOrName}" in ${file}`,
          ExitCode.Usage,
          "see `switchyard gateway keys list` for the ids and names",
        );
      }
      process.stdout.write(
        globals(cmd).json
          ? `${JSON.stringify({ revoked: record.id, name: record.name })}\n`
          : `revoked ${record.id} (${record.name})\n`,
      );
    });
}
