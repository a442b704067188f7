import { randomBytes } from "node:crypto";
import { chmodSync, lstatSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { defaultClusterSpec, parseClusterSpec, type ClusterSpec } from "../core/spec.js";
import { fileError, SpecError } from "../core/spec-errors.js";

/** What lives under SWITCHYARD_HOME. */
export function homePaths(home: string) {
  return {
    home,
    db: path.join(home, "switchyard.db"),
    serverInfo: path.join(home, "server.json"),
    serverLog: path.join(home, "server.log"),
    /** Why the last server stopped unexpectedly (written as it dies; shown by the next command that starts one). */
    lastCrash: path.join(home, "server-crash.json"),
    token: path.join(home, "token"),
    config: path.join(home, "config.json"),
    checkpoints: path.join(home, "checkpoints"),
  };
}

export interface HomeConfig {
  /** Cluster config the server loads at start; none means the built-in local pool. */
  clusterFile?: string;
}

export function readHomeConfig(home: string): HomeConfig {
  try {
    return JSON.parse(readFileSync(homePaths(home).config, "utf8")) as HomeConfig;
  } catch {
    return {};
  }
}

export function writeHomeConfig(home: string, config: HomeConfig): void {
  mkdirSync(home, { recursive: true, mode: 0o700 });
  writeFileSync(homePaths(home).config, JSON.stringify(config, null, 2) + "\n", { mode: 0o600 });
}

/** How many entries secureHome fixes at most (a start must not stall on a huge checkpoint tree). */
const maxEntriesToFix = 20_000;

/**
 * The state folder is its owner's alone: the home 0700, every folder in it 0700 and every file 0600 (the database
 * holds every job's `env`; the token grants the API). Run at every server start, so a home made by an older version
 * (or by hand) is fixed. Symlinks are left alone and never followed.
 */
export function secureHome(home: string): void {
  mkdirSync(home, { recursive: true, mode: 0o700 });
  chmodSync(home, 0o700);
  let budget = maxEntriesToFix;
  // Breadth first, so the home's own files (database, token, logs) are fixed before any budget goes to deep trees.
  const queue = [home];
  for (let dir = queue.shift(); dir !== undefined; dir = queue.shift()) {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue; // a job's folder removed meanwhile
    }
    for (const name of names) {
      if (--budget < 0) return;
      const file = path.join(dir, name);
      let st;
      try {
        st = lstatSync(file);
      } catch {
        continue; // gone meanwhile
      }
      if (st.isDirectory()) {
        if ((st.mode & 0o777) !== 0o700) chmodSync(file, 0o700);
        queue.push(file);
      } else if (st.isFile() && (st.mode & 0o077) !== 0) {
        chmodSync(file, st.mode & 0o700);
      }
    }
  }
}

/**
 * The cluster the server runs: the built-in local pool, or `file` validated. A missing, unreadable or invalid file is
 * a SpecError (`file:line:col: path: message (fix: ...)`), the same whether the CLI checks it before starting a
 * server (`up --cluster`) or the server does at its start.
 */
export function loadCluster(file: string | undefined): ClusterSpec {
  if (!file) return defaultClusterSpec(os.cpus().length);
  return parseClusterSpec(readConfigFile(file, "cluster config", "pass an existing file to --cluster"), file);
}

/** A user's config file as text; one that is missing, unreadable or a folder is a SpecError naming it. */
export function readConfigFile(file: string, what: string, fix: string): string {
  let text: string;
  try {
    if (statSync(file).isDirectory()) throw fileError(file, `${what} is a folder, not a file`, fix);
    text = readFileSync(file, "utf8");
  } catch (err) {
    if (err instanceof SpecError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === "ENOENT" ? "does not exist" : `cannot be read (${code ?? (err as Error).message})`;
    throw fileError(file, `${what} ${why}`, fix);
  }
  return text;
}

/** The API token, made on first use and readable only by its owner. */
export function ensureToken(home: string): string {
  const file = homePaths(home).token;
  mkdirSync(home, { recursive: true, mode: 0o700 });
  try {
    writeFileSync(file, randomBytes(32).toString("base64url") + "\n", { mode: 0o600, flag: "wx" });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
  chmodSync(file, 0o600);
  const token = readFileSync(file, "utf8").trim();
  if (token.length < 16) {
    throw new Error(
      `the API token in ${file} is shorter than 16 characters (fix: delete the file; the server makes a new one)`,
    );
  }
  return token;
}

/** The token the CLI sends; null when the home has none yet (no server ever started there). */
export function readToken(home: string): string | null {
  try {
    return readFileSync(homePaths(home).token, "utf8").trim() || null;
  } catch {
    return null;
  }
}

export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || host.startsWith("127.");
}

export interface ServerInfo {
  pid: number;
  url: string;
  host: string;
  port: number;
  startedAt: number;
  clusterFile: string | null;
  /** The certificate (PEM file) an HTTPS server serves; clients trust it for this server. */
  tlsCert?: string | null;
}
