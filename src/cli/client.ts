import { spawn } from "node:child_process";
import { existsSync, mkdirSync, openSync, readFileSync } from "node:fs";
import path from "node:path";
import { packageRoot } from "../paths.js";
import { homePaths, type ServerInfo } from "../server/config.js";

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
  ) {
    super(message);
    this.name = "CliError";
  }
}

export interface ApiClient {
  url: string;
  get<T>(p: string): Promise<T>;
  post<T>(p: string, body?: unknown): Promise<T>;
}

function readServerInfo(home: string): ServerInfo | null {
  try {
    return JSON.parse(readFileSync(homePaths(home).serverInfo, "utf8")) as ServerInfo;
  } catch {
    return null;
  }
}

function readToken(home: string): string | null {
  try {
    return readFileSync(homePaths(home).token, "utf8").trim();
  } catch {
    return null;
  }
}

async function healthy(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/api/health`, { signal: AbortSignal.timeout(1500) });
    return res.ok;
  } catch {
    return false;
  }
}

export function makeClient(url: string, token: string | null): ApiClient {
  async function call<T>(method: string, p: string, body?: unknown): Promise<T> {
    let res: Response;
    try {
      res = await fetch(`${url}${p}`, {
        method,
        headers: {
          ...(body !== undefined ? { "content-type": "application/json" } : {}),
          ...(token ? { authorization: `Bearer ${token}` } : {}),
        },
        body: body !== undefined ? JSON.stringify(body) : undefined,
      });
    } catch (err) {
      throw new CliError(
        `cannot reach the switchyard server at ${url}: ${(err as Error).message}`,
        ExitCode.Unreachable,
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
      throw new CliError(message, res.status === 400 || res.status === 404 ? ExitCode.Usage : ExitCode.Unreachable);
    }
    return data as T;
  }
  return { url, get: (p) => call("GET", p), post: (p, body) => call("POST", p, body ?? {}) };
}

/** Connects to the server of this SWITCHYARD_HOME, starting it in the background when none answers. */
export async function connect(home: string, opts: { start?: boolean; clusterFile?: string } = {}): Promise<ApiClient> {
  const info = readServerInfo(home);
  if (info && (await healthy(info.url))) return makeClient(info.url, readToken(home));
  if (opts.start === false) throw new CliError(`no switchyard server is running for ${home}`, ExitCode.Unreachable);
  const started = await startBackgroundServer(home, opts.clusterFile);
  return makeClient(started.url, readToken(home));
}

export async function startBackgroundServer(home: string, clusterFile?: string): Promise<ServerInfo> {
  const paths = homePaths(home);
  mkdirSync(home, { recursive: true });
  const log = openSync(paths.serverLog, "a");
  const args = [path.join(packageRoot, "bin", "switchyard.js"), "server", "--home", home];
  if (clusterFile) args.push("--cluster", path.resolve(clusterFile));
  const child = spawn(process.execPath, args, { detached: true, stdio: ["ignore", log, log], env: process.env });
  child.unref();
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    const info = readServerInfo(home);
    if (info && info.pid === child.pid && (await healthy(info.url))) return info;
    if (child.exitCode !== null) break;
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

export function serverInfo(home: string): ServerInfo | null {
  return readServerInfo(home);
}
