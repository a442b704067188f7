import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { systemClock } from "../core/clock.js";
import { LocalExecutor } from "../executors/local/local.js";
import { SqliteStore } from "../store/sqlite.js";
import { Supervisor } from "../supervisor/supervisor.js";
import { createApp } from "./app.js";
import { ensureToken, homePaths, isLoopback, loadCluster, type ServerInfo } from "./config.js";

export interface ServerOptions {
  home: string;
  host: string;
  /** 0 picks a free port. */
  port: number;
  clusterFile?: string;
  version: string;
  log?: (msg: string) => void;
}

export interface RunningServer {
  info: ServerInfo;
  supervisor: Supervisor;
  close(): Promise<void>;
}

/** Starts API + supervisor over the state in `home`, re-adopting any ranks that kept running while it was down. */
export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  const paths = homePaths(opts.home);
  mkdirSync(opts.home, { recursive: true });
  const cluster = loadCluster(opts.clusterFile);
  const store = new SqliteStore(paths.db);
  const supervisor = new Supervisor({
    store,
    executor: new LocalExecutor(),
    clock: systemClock,
    cluster,
    home: opts.home,
    log: opts.log,
  });
  await supervisor.start();
  const token = isLoopback(opts.host) ? null : ensureToken(opts.home);
  const app = createApp({ supervisor, store, token, defaultCheckpointRoot: paths.checkpoints, version: opts.version });

  const server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
    const s = serve({ fetch: app.fetch, hostname: opts.host, port: opts.port }, () => resolve(s));
    s.once("error", reject);
  });
  const port = (server.address() as AddressInfo).port;
  const hostForUrl = opts.host.includes(":") ? `[${opts.host}]` : opts.host;
  const info: ServerInfo = {
    pid: process.pid,
    url: `http://${hostForUrl}:${port}`,
    host: opts.host,
    port,
    startedAt: Date.now(),
    clusterFile: opts.clusterFile ?? null,
  };
  writeFileSync(paths.serverInfo, JSON.stringify(info, null, 2) + "\n");
  opts.log?.(`switchyard ${opts.version} listening on ${info.url} (home ${opts.home})`);

  return {
    info,
    supervisor,
    async close() {
      await supervisor.stop();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await store.close();
      rmSync(paths.serverInfo, { force: true });
    },
  };
}
