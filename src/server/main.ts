import { readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { systemClock } from "../core/clock.js";
import { LocalExecutor } from "../executors/local/local.js";
import { PoolExecutors } from "../executors/router.js";
import { SlurmExecutor } from "../executors/slurm/slurm.js";
import { SqliteStore } from "../store/sqlite.js";
import { Supervisor } from "../supervisor/supervisor.js";
import { createApp } from "./app.js";
import { fileError } from "../core/spec-errors.js";
import { ensureToken, homePaths, isLoopback, loadCluster, secureHome, type ServerInfo } from "./config.js";
import { acquireHomeLock } from "./lock.js";
import { allowedHostValues, hostName, isWildcard } from "./security.js";

export interface ServerOptions {
  home: string;
  host: string;
  /** 0 picks a free port. */
  port: number;
  clusterFile?: string;
  version: string;
  /** Serve HTTPS with this certificate and key (PEM files). */
  tls?: { cert: string; key: string };
  /** More names the Host header may carry (a DNS name of this machine, say); loopback names are always accepted. */
  allowHosts?: string[];
  log?: (msg: string) => void;
}

export interface RunningServer {
  info: ServerInfo;
  supervisor: Supervisor;
  close(): Promise<void>;
}

/**
 * Starts API + supervisor over the state in `home`, re-adopting any ranks that kept running while it was down.
 * Exactly one server per home: throws HomeLockedError (lock.ts) when another live server holds it.
 */
export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  const paths = homePaths(opts.home);
  secureHome(opts.home);
  const lock = acquireHomeLock(opts.home);
  const cleanup: Array<() => Promise<void> | void> = [() => lock.release()];
  const undo = async () => {
    for (const step of cleanup.reverse()) await Promise.resolve(step()).catch(() => undefined);
  };
  try {
    const tls = opts.tls ? readTls(opts.tls) : null;
    const cluster = loadCluster(opts.clusterFile);
    const token = ensureToken(opts.home);
    const store = new SqliteStore(paths.db);
    cleanup.push(() => store.close());
    const supervisor = new Supervisor({
      store,
      // Each pool names its executor; Slurm commands see this process's environment (SLURM_CONF included).
      executor: new PoolExecutors({ local: new LocalExecutor(), slurm: new SlurmExecutor() }),
      clock: systemClock,
      cluster,
      home: opts.home,
      log: opts.log,
    });
    await supervisor.start();
    cleanup.push(() => supervisor.stop());

    let allowed: ReadonlySet<string> = new Set();
    const app = createApp({
      supervisor,
      store,
      token,
      allowedHosts: () => allowed,
      tls: tls !== null,
      onReject: (line) => opts.log?.(line),
      defaultCheckpointRoot: paths.checkpoints,
      version: opts.version,
    });
    const server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
      const s = tls
        ? serve(
            {
              fetch: app.fetch,
              hostname: opts.host,
              port: opts.port,
              createServer: createHttpsServer,
              serverOptions: tls,
            },
            () => resolve(s),
          )
        : serve({ fetch: app.fetch, hostname: opts.host, port: opts.port }, () => resolve(s));
      s.once("error", reject);
    });
    cleanup.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const port = (server.address() as AddressInfo).port;
    allowed = allowedHostValues(opts.host, port, tls !== null, opts.allowHosts);
    // Local clients of a server bound to every address reach it over loopback.
    const urlHost = isWildcard(opts.host) ? (opts.host.includes(":") ? "[::1]" : "127.0.0.1") : hostName(opts.host);
    const info: ServerInfo = {
      pid: process.pid,
      url: `${tls ? "https" : "http"}://${urlHost}:${port}`,
      host: opts.host,
      port,
      startedAt: Date.now(),
      clusterFile: opts.clusterFile ?? null,
      tlsCert: opts.tls?.cert ?? null,
    };
    const tmp = `${paths.serverInfo}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(info, null, 2) + "\n", { mode: 0o600 });
    renameSync(tmp, paths.serverInfo);
    opts.log?.(`switchyard ${opts.version} listening on ${info.url} (home ${opts.home}, pid ${process.pid})`);
    opts.log?.("dashboard: `switchyard dashboard` prints its URL with the access token");
    if (!isLoopback(opts.host) && !tls) {
      opts.log?.(
        `WARNING: serving on ${opts.host} over plain HTTP: the API token and every job spec cross the network ` +
          "unencrypted (fix: pass --tls-cert and --tls-key, or bind 127.0.0.1 and tunnel over SSH)",
      );
    }

    let closed = false;
    return {
      info,
      supervisor,
      async close() {
        if (closed) return;
        closed = true;
        // server.json goes first: from here on no client takes this server for a live one.
        rmSync(paths.serverInfo, { force: true });
        await undo();
      },
    };
  } catch (err) {
    await undo();
    throw err;
  }
}

function readTls(files: { cert: string; key: string }): { cert: Buffer; key: Buffer } {
  const read = (file: string, what: string) => {
    try {
      return readFileSync(file);
    } catch (err) {
      // Bad input, like a bad cluster file: the CLI prints it as exit 2, not as an unexpected error.
      const code = (err as NodeJS.ErrnoException).code;
      throw fileError(
        file,
        `the TLS ${what} ${code === "ENOENT" ? "does not exist" : `cannot be read (${code ?? (err as Error).message})`}`,
        `pass a readable PEM file to --tls-${what}`,
      );
    }
  };
  return { cert: read(files.cert, "cert"), key: read(files.key, "key") };
}
