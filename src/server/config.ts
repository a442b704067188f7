import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { defaultClusterSpec, parseClusterSpec, type ClusterSpec } from "../core/spec.js";

/** What lives under SWITCHYARD_HOME. */
export function homePaths(home: string) {
  return {
    home,
    db: path.join(home, "switchyard.db"),
    serverInfo: path.join(home, "server.json"),
    serverLog: path.join(home, "server.log"),
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
  mkdirSync(home, { recursive: true });
  writeFileSync(homePaths(home).config, JSON.stringify(config, null, 2) + "\n");
}

export function loadCluster(file: string | undefined): ClusterSpec {
  if (!file) return defaultClusterSpec(os.cpus().length);
  if (!existsSync(file))
    throw new Error(`cluster config ${file} does not exist (fix: pass an existing file to --cluster)`);
  return parseClusterSpec(readFileSync(file, "utf8"), file);
}

/** The API token, made on first use and readable only by its owner. */
export function ensureToken(home: string): string {
  const file = homePaths(home).token;
  try {
    return readFileSync(file, "utf8").trim();
  } catch {
    mkdirSync(home, { recursive: true });
    const token = randomBytes(24).toString("base64url");
    writeFileSync(file, token + "\n", { mode: 0o600 });
    return token;
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
}
