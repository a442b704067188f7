/**
 * The gateway as data plane: `switchyard gateway --control-plane URL` routes to the backend set the server hands out
 * (watchBackends in control-plane-source.ts follows it and keeps the last one on disk). This file maps that set onto
 * the gateway's registrations. Inference never waits on the server: a set in force stays in force while the server
 * is away (restart, crash), requests in flight are never touched by it, and a gateway that starts while the server is
 * down serves the set cached on disk. With `traffic`, the gateway also reports its traffic to that server (report.ts).
 */
import { EngineKind } from "./config.js";
import type { ManagedBackend } from "./cluster.js";
import { watchBackends, type BackendSet, type BackendWatch, type WatchLogger } from "./control-plane-source.js";
import { startTrafficReporter } from "./report.js";

const engines = new Set<string>(Object.values(EngineKind));

/**
 * The registrations of a backend set: its "ready" backends ("draining" ones are left out, so they get nothing new
 * and their requests in flight finish). A backend with an unknown engine, or whose `apiKeyEnv` variable is not set in
 * this process, is skipped with a warning naming it and the fix.
 */
export function registrationsFromSet(set: BackendSet, env: NodeJS.ProcessEnv, logger?: WatchLogger): ManagedBackend[] {
  const out: ManagedBackend[] = [];
  for (const svc of set.services) {
    const pools = new Map(svc.pools.map((p) => [p.name, p]));
    for (const b of svc.backends) {
      if (b.state !== "ready") continue;
      if (!engines.has(b.engine)) {
        logger?.warn(
          { backend: b.id, engine: b.engine },
          `control plane: backend ${b.id} skipped: engine "${b.engine}" is not one this gateway knows (${[...engines].join(", ")}); upgrade the gateway`,
        );
        continue;
      }
      let apiKey: string | undefined;
      if (b.apiKeyEnv !== undefined) {
        apiKey = env[b.apiKeyEnv];
        if (apiKey === undefined || apiKey === "") {
          logger?.warn(
            { backend: b.id, apiKeyEnv: b.apiKeyEnv },
            `control plane: backend ${b.id} skipped: environment variable ${b.apiKeyEnv} (apiKeyEnv) is not set in the gateway's environment; export it and restart the gateway`,
          );
          continue;
        }
      }
      const pool = pools.get(b.pool);
      out.push({
        id: b.id,
        service: svc.name,
        aliases: svc.aliases,
        pool: b.pool,
        url: b.url,
        engine: b.engine as EngineKind,
        ...(b.weight !== undefined && { weight: b.weight }),
        ...(b.maxInFlight !== undefined && { maxInFlight: b.maxInFlight }),
        ...(b.servedModel !== undefined && { servedModel: b.servedModel }),
        ...(apiKey !== undefined && { apiKey }),
        ...(pool !== undefined && { poolPriority: pool.priority, poolQueueThreshold: pool.queueThreshold }),
      });
    }
  }
  return out;
}

export interface FollowOptions {
  url: string;
  token: string;
  cacheFile: string;
  logger: WatchLogger;
  signal: AbortSignal;
  env?: NodeJS.ProcessEnv;
  /** Applies a set's registrations (a gateway's setBackends, or a cluster primary's, which relays to its workers). */
  apply: (list: ManagedBackend[]) => Promise<void>;
  /** Options passed through to watchBackends (tests). */
  watch?: { minBackoffMs?: number; maxBackoffMs?: number; waitSeconds?: number };
  /**
   * Report the gateway's traffic to the same server (report.ts): the gateway's name and its metrics as Prometheus
   * text (its registry, or a cluster primary's sum over its workers). Stops with `signal`.
   */
  traffic?: { gateway: string; metricsText: () => Promise<string>; intervalMs?: number };
}

/** Follows a control plane, applying each newer set in order (one at a time). */
export function followControlPlane(opts: FollowOptions): BackendWatch {
  if (opts.traffic !== undefined) {
    startTrafficReporter({
      url: opts.url,
      token: opts.token,
      logger: opts.logger,
      signal: opts.signal,
      ...opts.traffic,
    });
  }
  let chain = Promise.resolve();
  return watchBackends({
    url: opts.url,
    token: opts.token,
    cacheFile: opts.cacheFile,
    logger: opts.logger,
    signal: opts.signal,
    ...opts.watch,
    onUpdate: (set, meta) => {
      const list = registrationsFromSet(set, opts.env ?? process.env, opts.logger);
      opts.logger.info(
        { version: set.version, epoch: set.epoch, source: meta.source, backends: list.length },
        `control plane: backend set ${set.version} (${list.length} ready backend(s)) from the ${meta.source === "cache" ? "cache on disk" : "server"}`,
      );
      chain = chain.then(() => opts.apply(list)).catch(() => undefined);
    },
  });
}
