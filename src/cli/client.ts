import { spawn, spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync } from "node:fs";
import path from "node:path";
import { Agent, fetch as undiciFetch } from "undici";
import { packageRoot } from "../paths.js";
import type { SpecIssue } from "../core/spec-errors.js";
import { homePaths, loadCluster, readHomeConfig, readToken, type ServerInfo } from "../server/config.js";
import { lockHolder } from "../server/lock.js";

/**
 * The CLI's exit codes, one table for every command (README "Using it"):
 * 0 success, 1 the job (or the foreground service) failed, 2 bad input (a file, flag, name or request the server
 * refused), 3 server unreachable, 4 cancelled or interrupted.
 */
export const ExitCode = { Ok: 0, JobFailed: 1, Usage: 2, Unreachable: 3, Cancelled: 4 } as const;
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/**
 * A CLI failure: what went wrong, how to fix it, and the exit code to end with. main() prints every one the same way:
 * `switchyard: <message> (fix: <fix>)` on a terminal, `{"error": ..., "fix": ...}` under --json.
 */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCodeValue,
    readonly fix?: string,
    /** A refused file or request's problems, each with its position and fix (printed under --json as `issues`). */
    readonly issues?: readonly SpecIssue[],
  ) {
    super(message);
    this.name = "CliError";
  }
}

export interface ApiClient {
  url: string;
  get<T>(p: string): Promise<T>;
  /**
   * POST a JSON body. A job submission (`/api/jobs`) carries an Idempotency-Key (a fresh UUID unless `headers` names
   * one) and is retried once, with the same key, when the connection is cut: the server answers the retry with the job
   * the first attempt created, so a submission never runs twice.
   */
  post<T>(p: string, body?: unknown, headers?: Record<string, string>): Promise<T>;
}

export interface ClientOptions {
  /** PEM certificate(s) to trust for an HTTPS server (its own, self-signed one, say). */
  ca?: string | Buffer;
}

function readServerInfo(home: string): ServerInfo | null {
  try {
    return JSON.parse(readFileSync(homePaths(home).serverInfo, "utf8")) as ServerInfo;
  } catch {
    return null;
  }
}

/** The HTTP(S) fetch a client of this server uses: trusting its own certificate when it serves TLS. */
function fetcher(opts: ClientOptions): typeof fetch {
  if (opts.ca === undefined) return fetch;
  const dispatcher = new Agent({ connect: { ca: opts.ca } });
  return ((input: string, init?: RequestInit) =>
    undiciFetch(input, { ...(init as object), dispatcher } as Parameters<typeof undiciFetch>[1])) as typeof fetch;
}

function clientOptions(info: ServerInfo): ClientOptions {
  if (!info.tlsCert) return {};
  try {
    return { ca: readFileSync(info.tlsCert) };
  } catch (err) {
    throw new CliError(
      `cannot read the server's TLS certificate ${info.tlsCert}: ${(err as Error).message}`,
      ExitCode.Unreachable,
      "restart the server (`switchyard down; switchyard up`) with a readable --tls-cert",
    );
  }
}

/** The server in server.json answers, with this home's token, and is the process server.json names. */
async function healthy(info: ServerInfo, token: string | null): Promise<boolean> {
  if (token === null) return false;
  try {
    const res = await fetcher(clientOptions(info))(`${info.url}/api/health`, {
      headers: { authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(1500),
    });
    if (!res.ok) return false;
    return ((await res.json()) as { pid?: unknown }).pid === info.pid;
  } catch {
    return false;
  }
}

export function makeClient(url: string, token: string | null, opts: ClientOptions = {}): ApiClient {
  const doFetch = fetcher(opts);
  async function call<T>(method: string, p: string, body?: unknown, extra: Record<string, string> = {}): Promise<T> {
    const headers: Record<string, string> = {
      ...(body !== undefined ? { "content-type": "application/json" } : {}),
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...extra,
    };
    const submission = method === "POST" && p === "/api/jobs";
    if (submission && !Object.keys(headers).some((h) => h.toLowerCase() === "idempotency-key")) {
      headers["idempotency-key"] = randomUUID();
    }
    const send = () =>
      doFetch(`${url}${p}`, { method, headers, body: body !== undefined ? JSON.stringify(body) : undefined });
    let res: Response;
    try {
      res = await send().catch((err: unknown) => {
        // A cut connection may have cut the answer, not the request: a keyed submission is safe to send again.
        if (submission) return send();
        throw err;
      });
    } catch (err) {
      const cause = (err as { cause?: { message?: string } }).cause?.message;
      throw new CliError(
        `cannot reach the switchyard server at ${url}: ${(err as Error).message}${cause ? ` (${cause})` : ""}`,
        ExitCode.Unreachable,
        "start it with `switchyard up`; its log is server.log in SWITCHYARD_HOME",
      );
    }
    const text = await res.text();
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch {
      data = { error: text };
    }
    if (!res.ok) {
      const message = (data as { error?: string }).error ?? `HTTP ${res.status}`;
      // 4xx: the request was refused (bad input, unknown name, wrong state): exit 2. 5xx: the server itself failed.
      if (res.status < 500) {
        const { fix, issues } = data as { fix?: unknown; issues?: unknown };
        throw new CliError(
          message,
          ExitCode.Usage,
          typeof fix === "string" ? fix : undefined,
          Array.isArray(issues) ? (issues as SpecIssue[]) : undefined,
        );
      }
      throw new CliError(
        `the switchyard server failed on ${method} ${p} (HTTP ${res.status}): ${message}`,
        ExitCode.Unreachable,
        "see server.log in SWITCHYARD_HOME",
      );
    }
    return data as T;
  }
  return {
    url,
    get: (p) => call("GET", p),
    post: (p, body, headers) => call("POST", p, body ?? {}, headers),
  };
}

/** Connects to the server of this SWITCHYARD_HOME, starting it in the background when none answers. */
export async function connect(home: string, opts: { start?: boolean; clusterFile?: string } = {}): Promise<ApiClient> {
  const info = readServerInfo(home);
  if (info && (await healthy(info, readToken(home)))) return makeClient(info.url, readToken(home), clientOptions(info));
  if (opts.start === false) {
    throw new CliError(
      `no switchyard server is running for ${home}`,
      ExitCode.Unreachable,
      "start it with `switchyard up`",
    );
  }
  reportLastCrash(home);
  const started = await startBackgroundServer(home, opts.clusterFile);
  return makeClient(started.url, readToken(home), clientOptions(started));
}

/** The dashboard's address with the token, to open once: the server trades it for a cookie and drops it from the URL. */
export function dashboardUrl(info: ServerInfo, token: string): string {
  return `${info.url}/?token=${encodeURIComponent(token)}`;
}

/**
 * Starts `switchyard server` for this home in the background and waits until a server of this home answers. Clients
 * that race (five commands at once on a fresh home) each start one, but only one takes the home's lock (lock.ts); the
 * others exit at once, and every client ends up talking to the one that won.
 */
export async function startBackgroundServer(
  home: string,
  clusterFile?: string,
  serverArgs: readonly string[] = [],
): Promise<ServerInfo> {
  const paths = homePaths(home);
  // A bad cluster file is bad input (exit 2, its issues listed), not a server that did not come up (exit 3): the
  // server would refuse it with the same SpecError, in a log.
  loadCluster(clusterFile ?? readHomeConfig(home).clusterFile);
  mkdirSync(home, { recursive: true, mode: 0o700 });
  const log = openSync(paths.serverLog, "a", 0o600);
  chmodSync(paths.serverLog, 0o600);
  const args = [path.join(packageRoot, "bin", "switchyard.js"), "server", "--home", home, ...serverArgs];
  if (clusterFile) args.push("--cluster", path.resolve(clusterFile));
  const child = spawn(process.execPath, args, { detached: true, stdio: ["ignore", log, log], env: process.env });
  child.unref();
  closeSync(log);
  const deadline = Date.now() + 30_000;
  let exitedAt: number | null = null;
  while (Date.now() < deadline) {
    const info = readServerInfo(home);
    if (info && (await healthy(info, readToken(home)))) return info;
    if (child.exitCode !== null) {
      // Lost the race for the lock to a live server that is still starting: wait for it. Otherwise the start failed.
      exitedAt ??= Date.now();
      const holder = lockHolder(home);
      const winnerAlive = holder !== null && holder !== child.pid && pidAlive(holder);
      if (!winnerAlive && Date.now() - exitedAt > 1000) break;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const tail = existsSync(paths.serverLog)
    ? readFileSync(paths.serverLog, "utf8").split("\n").slice(-15).join("\n")
    : "";
  throw new CliError(
    `the switchyard server did not come up; its log (${paths.serverLog}) ends with:\n${tail}`,
    ExitCode.Unreachable,
  );
}

/**
 * Whether the server server.json names is this home's live server: it answers with the home's token and its pid, or
 * it holds the home's lock. A stale server.json (a killed server, a pid reused by another program) is neither.
 */
export async function isHomeServer(home: string, info: ServerInfo): Promise<boolean> {
  if (await healthy(info, readToken(home))) return true;
  return lockHolder(home) === info.pid && pidAlive(info.pid) && lockHeld(home);
}

/** Whether any process holds the home's lock (probed with a shared flock that is dropped at once). */
function lockHeld(home: string): boolean {
  const fd = (() => {
    try {
      return openSync(path.join(home, "server.lock"), "r");
    } catch {
      return null;
    }
  })();
  if (fd === null) return false;
  try {
    const res = spawnSync("flock", ["--nonblock", "--shared", "--conflict-exit-code", "75", "3"], {
      stdio: ["ignore", "ignore", "ignore", fd],
    });
    return res.status === 75;
  } finally {
    closeSync(fd);
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

export function serverInfo(home: string): ServerInfo | null {
  return readServerInfo(home);
}

/** Says, once, why the previous server of this home died (its last words, from server-crash.json). */
export function reportLastCrash(home: string): string | null {
  const file = homePaths(home).lastCrash;
  let crash: { t: number; pid: number; reason: string };
  try {
    const text = readFileSync(file, "utf8").trim();
    // Blank: the room a server reserves for its last words, unused (it runs, stopped cleanly, or was SIGKILLed).
    if (text === "") return null;
    crash = JSON.parse(text) as typeof crash;
  } catch {
    return null;
  }
  rmSync(file, { force: true });
  const line =
    `switchyard: the previous server (pid ${crash.pid}) stopped at ${new Date(crash.t).toISOString()}: ` +
    `${String(crash.reason).split("\n")[0]}; starting a new one (its log: ${homePaths(home).serverLog})`;
  console.error(line);
  return line;
}
