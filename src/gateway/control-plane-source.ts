/**
 * The gateway process's view of the control plane (issue 14): the live backend set of the services the server owns
 * (`switchyard deploy`), followed from the server and kept on disk, so that inference never waits on the control plane.
 *
 * CONTRACT (server side: src/server/services.ts; gateway side: whoever calls watchBackends)
 *
 *   GET <server>/api/services/backends[?since=<version>&epoch=<epoch>&wait=<seconds>]
 *     Authorization: Bearer <the home's API token> (like every API call; 401 without it)
 *     -> 200 BackendSet (below). With `since`, a long poll: the server answers as soon as its set differs from
 *        version `since` of epoch `epoch`, or after `wait` seconds (1-60, default 25) with the unchanged set.
 *
 *   BackendSet = { version, epoch, services: [{ name, aliases, pools: [{ name, priority, queueThreshold }],
 *                  backends: [{ id, url, pool, engine, state, model, servedModel?, weight?, maxInFlight?,
 *                               apiKeyEnv?, replica?, node?, checkpointStep? }] }] }
 *     - `version` grows with every change of the set; `epoch` names the server instance (a restarted server has a new
 *       epoch and a version above the old one's). A set is newer than the one held when its epoch differs or, in the
 *       same epoch, its version is higher; an older or equal one is ignored (a late answer never undoes a newer one).
 *     - `state` is "ready" (route to it) or "draining" (send it nothing new; let the requests in flight finish: the
 *       server stops the replica after its drain period, then the backend leaves the set).
 *     - A backend that leaves the set is to be unregistered (in-flight requests finish, nothing new is sent).
 *     - `model` is the service's model name (= `name`); `servedModel` the name the engine serves, when it differs.
 *     - `apiKeyEnv` names the environment variable of the gateway process that holds the backend's key (never a key).
 *
 *   watchBackends({ url, token, cacheFile, onUpdate, logger, signal }) follows that endpoint:
 *     - every newer set is written to `cacheFile` (0600, its folder 0700, atomically) and passed to onUpdate;
 *     - when the server cannot be reached at start, the set in `cacheFile` (if any) is passed to onUpdate with
 *       source "cache", and the gateway serves it until the server answers again;
 *     - while the server is away (restart, crash, network) nothing changes: the last set stays in force; the watch
 *       retries with capped exponential backoff and says so once per outage;
 *     - aborting `signal` ends the watch (`done` resolves).
 *   onUpdate gets the whole set every time; mapping it onto Gateway.registerBackend / unregisterBackend (by `id`)
 *   is the caller's: diff by id, register the new, unregister the gone, and treat "draining" as gone for routing.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import { z } from "zod";

const backendEntrySchema = z.object({
  id: z.string().min(1).max(256),
  url: z.url({ protocol: /^https?$/ }),
  pool: z.string().min(1).max(128),
  engine: z.string().min(1).max(64),
  state: z.enum(["ready", "draining"]),
  model: z.string().min(1).max(256),
  servedModel: z.string().min(1).max(256).optional(),
  weight: z.number().positive().max(1000).optional(),
  maxInFlight: z.number().int().positive().optional(),
  apiKeyEnv: z.string().min(1).max(256).optional(),
  replica: z.string().max(256).optional(),
  node: z.string().max(256).optional(),
  checkpointStep: z.number().int().nullable().optional(),
});

const servicePoolSchema = z.object({
  name: z.string().min(1).max(128),
  priority: z.number().int().min(0),
  queueThreshold: z.number().int().min(1),
});

const serviceBackendsSchema = z.object({
  name: z.string().min(1).max(256),
  aliases: z.array(z.string().min(1).max(256)).max(64).default([]),
  pools: z.array(servicePoolSchema).max(256).default([]),
  backends: z.array(backendEntrySchema).max(10_000),
});

export const backendSetSchema = z.object({
  version: z.number().int().min(0),
  epoch: z.string().min(1).max(128),
  services: z.array(serviceBackendsSchema).max(1000),
});

export type BackendEntry = z.infer<typeof backendEntrySchema>;
export type ServiceBackends = z.infer<typeof serviceBackendsSchema>;
export type BackendSet = z.infer<typeof backendSetSchema>;

/** Is `next` newer than `held`? A new epoch (a restarted server) always is; in one epoch, a higher version. */
export function isNewerSet(
  next: Pick<BackendSet, "version" | "epoch">,
  held: Pick<BackendSet, "version" | "epoch"> | null,
): boolean {
  if (held === null) return true;
  if (next.epoch !== held.epoch) return true;
  return next.version > held.version;
}

export interface WatchLogger {
  info(fields: object, msg: string): void;
  warn(fields: object, msg: string): void;
}

export interface WatchBackendsOptions {
  /** The server's base URL, e.g. http://127.0.0.1:7070 (server.json's `url`). */
  url: string;
  /** The home's API token (sent as a bearer token; never logged). */
  token: string;
  /** Where the last known set is kept (written 0600; its folder is created 0700). */
  cacheFile: string;
  /** Called with every newer set, from the server or (at start, when the server is away) from the cache. */
  onUpdate: (set: BackendSet, meta: { source: "server" | "cache" }) => void;
  logger?: WatchLogger;
  signal?: AbortSignal;
  /** Long-poll wait the server is asked for, in seconds (1-60; default 25). */
  waitSeconds?: number;
  /** Backoff after a failed call: from `minBackoffMs` (default 250) doubling to `maxBackoffMs` (default 5000). */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** How long one call may take beyond the long-poll wait before it counts as failed (default 10 s). */
  slackMs?: number;
  /** For tests and TLS: the fetch to use (default: global fetch). */
  fetch?: typeof fetch;
}

export interface BackendWatch {
  /** The set in force now (null until one came from the server or the cache). */
  current(): BackendSet | null;
  /** Where the set in force came from. */
  source(): "server" | "cache" | null;
  /** Resolves when the watch has ended (its signal was aborted). */
  done: Promise<void>;
}

/** Reads a cached set; null when there is none or it does not parse (said through the logger). */
export function readCachedSet(file: string, logger?: WatchLogger): BackendSet | null {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return null;
  }
  try {
    return backendSetSchema.parse(JSON.parse(text));
  } catch (err) {
    logger?.warn(
      { cacheFile: file },
      `control plane: ignoring the backend cache ${file}: it does not parse (${(err as Error).message.slice(0, 200)})`,
    );
    return null;
  }
}

/** Writes the set to `file` atomically (a temporary file renamed over it), 0600 in a 0700 folder. */
export function writeCachedSet(file: string, set: BackendSet): void {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(set) + "\n", { mode: 0o600 });
  renameSync(tmp, file);
}

const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });

/** Follows the server's backend set (see the contract above). */
export function watchBackends(opts: WatchBackendsOptions): BackendWatch {
  const doFetch = opts.fetch ?? fetch;
  const waitSeconds = Math.min(60, Math.max(1, Math.round(opts.waitSeconds ?? 25)));
  const minBackoff = opts.minBackoffMs ?? 250;
  const maxBackoff = Math.max(minBackoff, opts.maxBackoffMs ?? 5000);
  const slack = opts.slackMs ?? 10_000;
  const base = opts.url.replace(/\/+$/, "");
  let held: BackendSet | null = null;
  let heldFrom: "server" | "cache" | null = null;

  const deliver = (set: BackendSet, source: "server" | "cache"): void => {
    held = set;
    heldFrom = source;
    if (source === "server") {
      try {
        writeCachedSet(opts.cacheFile, set);
      } catch (err) {
        opts.logger?.warn(
          { cacheFile: opts.cacheFile },
          `control plane: cannot write the backend cache ${opts.cacheFile}: ${(err as Error).message}`,
        );
      }
    }
    try {
      opts.onUpdate(set, { source });
    } catch (err) {
      opts.logger?.warn({}, `control plane: applying backend set ${set.version} failed: ${(err as Error).message}`);
    }
  };

  const fetchSet = async (longPoll: boolean): Promise<BackendSet> => {
    const q =
      longPoll && held !== null && heldFrom === "server"
        ? `?since=${held.version}&epoch=${encodeURIComponent(held.epoch)}&wait=${waitSeconds}`
        : "";
    const timeout = AbortSignal.timeout((q !== "" ? waitSeconds * 1000 : 0) + slack);
    const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
    const res = await doFetch(`${base}/api/services/backends${q}`, {
      headers: { authorization: `Bearer ${opts.token}`, accept: "application/json" },
      signal,
    });
    const text = await res.text();
    if (!res.ok) {
      const hint =
        res.status === 401 || res.status === 403 ? " (is the token this home's? see `switchyard dashboard`)" : "";
      throw new Error(`HTTP ${res.status}${hint}: ${text.slice(0, 200)}`);
    }
    return backendSetSchema.parse(JSON.parse(text));
  };

  const loop = async (): Promise<void> => {
    let failures = 0;
    let outageSaid = false;
    let first = true;
    while (!opts.signal?.aborted) {
      const started = performance.now();
      try {
        const set = await fetchSet(!first);
        if (outageSaid) {
          opts.logger?.info({ version: set.version }, `control plane: ${base} answers again`);
          outageSaid = false;
        }
        failures = 0;
        // From the server again after the cache: its set is the truth, whatever the cache said.
        if (heldFrom !== "server" || isNewerSet(set, held)) deliver(set, "server");
        else if (performance.now() - started < 500) await sleep(minBackoff, opts.signal); // a server that will not wait
        first = false;
      } catch (err) {
        if (opts.signal?.aborted) break;
        if (first && held === null) {
          const cached = readCachedSet(opts.cacheFile, opts.logger);
          if (cached !== null) {
            opts.logger?.warn(
              { version: cached.version },
              `control plane: ${base} cannot be reached (${(err as Error).message}); serving the last known backend ` +
                `set from ${opts.cacheFile} (version ${cached.version})`,
            );
            outageSaid = true;
            deliver(cached, "cache");
          }
        }
        if (!outageSaid) {
          opts.logger?.warn(
            {},
            `control plane: ${base} cannot be reached (${(err as Error).message}); keeping the last known backend set ` +
              `(${held === null ? "none yet" : `version ${(held as BackendSet).version}`}) and retrying`,
          );
          outageSaid = true;
        }
        first = first && held === null;
        const backoff = Math.min(maxBackoff, minBackoff * 2 ** Math.min(failures, 16));
        failures++;
        await sleep(backoff * (0.75 + Math.random() * 0.5), opts.signal);
      }
    }
  };

  const done = loop();
  return { current: () => held, source: () => heldFrom, done };
}
