import { createHash } from "node:crypto";
import { open, readFile, stat } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { packageRoot } from "../paths.js";
import { Hono, type Context } from "hono";
import { bodyLimit } from "hono/body-limit";
import { secureHeaders } from "hono/secure-headers";
import { compileJobSpec } from "../core/spec.js";
import { z } from "zod";
import { SpecError } from "../core/spec-errors.js";
import { requestBody } from "./request-body.js";
import type { Store } from "../store/port.js";
import type { Supervisor } from "../supervisor/supervisor.js";
import { degradeLink, healLink } from "../executors/slurm/testbed.js";
import { newestAdoptedFile } from "../supervisor/adopt.js";
import { chaosActions, injectChaos } from "../supervisor/chaos.js";
import { jobReport } from "../supervisor/report.js";
import { guard } from "./security.js";
import { registerServiceRoutes } from "./services.js";
import { registerTrafficRoutes, TrafficBook } from "./traffic.js";

export interface AppOptions {
  supervisor: Supervisor;
  store: Store;
  /** Every request but the dashboard's static files must carry it (bearer header or dashboard cookie). */
  token: string;
  /** Host header values this server answers (`name:port`); known once it listens. See security.ts. */
  allowedHosts: () => ReadonlySet<string>;
  /** Served over TLS (cookie `Secure`, https origins). */
  tls?: boolean;
  /** Told every refused request in one line (never a secret). */
  onReject?: (line: string) => void;
  defaultCheckpointRoot: string;
  version: string;
}

const maxBodyBytes = 1 << 20;
/** Idempotency keys: printable ASCII, bounded; remembered for a day (as Stripe does). */
const idempotencyKeyPattern = /^[\x21-\x7e]{1,200}$/;
const idempotencyKeepMs = 24 * 3600_000;

const uplotDist = path.join(path.dirname(createRequire(import.meta.url).resolve("uplot")), "..", "dist");
const webFiles: Record<string, { path: string; type: string }> = {
  "/": { path: path.join(packageRoot, "web", "index.html"), type: "text/html; charset=utf-8" },
  "/app.js": { path: path.join(packageRoot, "web", "app.js"), type: "text/javascript; charset=utf-8" },
  "/style.css": { path: path.join(packageRoot, "web", "style.css"), type: "text/css; charset=utf-8" },
  "/vendor/uPlot.iife.min.js": {
    path: path.join(uplotDist, "uPlot.iife.min.js"),
    type: "text/javascript; charset=utf-8",
  },
  "/vendor/uPlot.min.css": { path: path.join(uplotDist, "uPlot.min.css"), type: "text/css; charset=utf-8" },
};
const maxLogBytes = 1 << 20;

/** Request bodies (strict: an unknown field is refused with "did you mean"; request-body.ts). */
const jobRequestSchema = z.strictObject({
  yaml: z.string(),
  file: z.string().min(1).max(4096),
  resumeFrom: z
    .string()
    .max(4096)
    .refine((p) => path.isAbsolute(p), {
      message: "must be an absolute checkpoint path | fix: pass the absolute path of a step-* checkpoint folder",
    })
    .optional(),
});
const chaosRequestSchema = z.strictObject({
  action: z.enum(chaosActions),
  rank: z.number().int().min(0).max(1_000_000).optional(),
  node: z.string().min(1).max(256).optional(),
  rate: z.string().min(1).max(64).optional(),
  burst: z.string().min(1).max(64).optional(),
});
const cordonRequestSchema = z.strictObject({ reason: z.string().max(1024).optional() });

/** The HTTP API as a plain request handler: bound to a port only in main.ts, tested in-process with app.request(). */
export function createApp(opts: AppOptions): Hono {
  const { supervisor, store } = opts;
  const app = new Hono();

  app.onError((err, c) => {
    if (err instanceof SpecError) return c.json({ error: err.message, issues: err.issues }, 400);
    return c.json({ error: err instanceof Error ? err.message : String(err) }, 500);
  });

  app.use("*", secureHeaders({ xFrameOptions: "DENY", strictTransportSecurity: opts.tls === true }));
  app.use(
    "*",
    guard({
      token: opts.token,
      allowedHosts: opts.allowedHosts,
      tls: opts.tls === true,
      publicPaths: new Set(Object.keys(webFiles)),
      onReject: opts.onReject,
    }),
  );
  app.use(
    "/api/*",
    bodyLimit({
      maxSize: maxBodyBytes,
      onError: (c) =>
        c.json(
          {
            error:
              `${c.req.method} ${c.req.path}: the request body is over the server's limit of ` +
              `${maxBodyBytes / (1 << 20)} MiB (${maxBodyBytes} bytes) (fix: make the job spec smaller)`,
          },
          413,
          // The rest of the body is never read: the connection cannot carry another request.
          { connection: "close" },
        ),
    }),
  );
  /** One submission per Idempotency-Key at a time (one server per home, so an in-process lock is enough). */
  const keyLocks = new Map<string, Promise<unknown>>();
  const withKeyLock = async <T>(key: string, fn: () => Promise<T>): Promise<T> => {
    const prev = keyLocks.get(key) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => undefined);
    keyLocks.set(key, tail);
    try {
      return await run;
    } finally {
      if (keyLocks.get(key) === tail) keyLocks.delete(key);
    }
  };

  app.get("/api/health", (c) => c.json({ ok: true, version: opts.version, pid: process.pid }));

  app.get("/api/cluster", (c) => c.json(supervisor.cluster));

  app.get("/api/jobs", async (c) => {
    // Services' replicas are jobs too (`services describe` lists them); `?replicas=1` includes them here.
    const jobs = (await store.listJobs()).filter((j) => !j.spec.workload || c.req.query("replicas") === "1");
    const withProgress = await Promise.all(
      jobs.map(async (j) => ({ ...summary(j), ...supervisor.queueInfo(j.id), last: await store.lastStep(j.id) })),
    );
    return c.json(withProgress);
  });

  app.post("/api/jobs", async (c) => {
    const body = await requestBody(c, jobRequestSchema, '{"yaml": "<job spec text>", "file": "<its path>"}');
    const submit = async () => {
      const spec = compileJobSpec(body.yaml, {
        file: body.file,
        cluster: supervisor.cluster,
        defaultCheckpointRoot: opts.defaultCheckpointRoot,
        resumeFrom: body.resumeFrom,
        checkWorkdir: true,
      });
      return supervisor.submit(spec);
    };
    // Idempotency-Key: a client that lost the answer (a cut connection) resubmits with the same key and gets the job
    // its first request created, never a second one.
    const key = c.req.header("idempotency-key");
    if (key === undefined) return c.json(summary(await submit()), 201);
    if (!idempotencyKeyPattern.test(key)) {
      return c.json(
        { error: "POST /api/jobs: Idempotency-Key must be 1 to 200 printable ASCII characters (fix: send a UUID)" },
        400,
      );
    }
    const requestSha256 = createHash("sha256").update(JSON.stringify(body)).digest("hex");
    return withKeyLock(key, async () => {
      const prior = await store.findIdempotencyKey(key);
      if (prior && prior.requestSha256 !== requestSha256) {
        return c.json(
          {
            error:
              `POST /api/jobs: Idempotency-Key ${JSON.stringify(key)} was used for a different request (job ` +
              `${prior.jobId}) (fix: send a new key for a new submission)`,
          },
          422,
        );
      }
      const first = prior ? await store.getJob(prior.jobId) : null;
      if (first) return c.json(summary(first), 200, { "idempotent-replayed": "true" });
      const job = await submit();
      await store.recordIdempotencyKey(key, job.id, requestSha256, Date.now(), idempotencyKeepMs);
      return c.json(summary(job), 201);
    });
  });

  app.get("/api/jobs/:id", async (c) => {
    const job = await store.getJob(c.req.param("id"));
    if (!job) return notFound(c, c.req.param("id"));
    const [attempts, incidents, checkpoints, last] = await Promise.all([
      store.listAttempts(job.id),
      store.listIncidents(job.id),
      store.listCheckpoints(job.id),
      store.lastStep(job.id),
    ]);
    return c.json({
      ...summary(job),
      ...supervisor.queueInfo(job.id),
      spec: job.spec,
      attempts,
      incidents,
      checkpoints,
      last,
    });
  });

  app.post("/api/jobs/:id/cancel", async (c) => {
    const job = await store.getJob(c.req.param("id"));
    if (!job) return notFound(c, c.req.param("id"));
    return c.json(summary(await supervisor.cancel(job.id)));
  });

  app.get("/api/jobs/:id/events", async (c) => {
    const job = await store.getJob(c.req.param("id"));
    if (!job) return notFound(c, c.req.param("id"));
    const after = Number(c.req.query("after") ?? 0);
    return c.json(await store.listEvents({ jobId: job.id, afterId: Number.isFinite(after) ? after : 0 }));
  });

  app.get("/api/jobs/:id/steps", async (c) => {
    const job = await store.getJob(c.req.param("id"));
    if (!job) return notFound(c, c.req.param("id"));
    const rank = c.req.query("rank");
    return c.json(await store.listSteps(job.id, rank !== undefined ? { rank: Number(rank) } : {}));
  });

  app.get("/api/jobs/:id/ranks", async (c) => {
    const job = await store.getJob(c.req.param("id"));
    if (!job) return notFound(c, c.req.param("id"));
    const current = await supervisor.currentRanks(job.id);
    return c.json(current ?? { attempt: null, ranks: [] });
  });

  /** A rank's log from a byte offset: `?rank=N&attempt=M&offset=K`; answers the text and the next offset. */
  app.get("/api/jobs/:id/logs", async (c) => {
    const job = await store.getJob(c.req.param("id"));
    if (!job) return notFound(c, c.req.param("id"));
    const attempts = await store.listAttempts(job.id);
    const attemptN = Number(c.req.query("attempt") ?? attempts[attempts.length - 1]?.n ?? 0);
    const rankN = Number(c.req.query("rank") ?? 0);
    const rank = (await store.listRanks(job.id, attemptN)).find((r) => r.rank === rankN);
    if (!rank) return c.json({ error: `job ${job.id} has no rank ${rankN} in attempt ${attemptN}` }, 404);
    const offset = Math.max(0, Number(c.req.query("offset") ?? 0) || 0);
    const size = await stat(rank.logPath).then(
      (s) => s.size,
      () => 0,
    );
    if (offset >= size) return c.json({ text: "", offset: size, attempt: attemptN, rank: rankN });
    const handle = await open(rank.logPath, "r");
    try {
      const length = Math.min(size - offset, maxLogBytes);
      const buf = Buffer.alloc(length);
      await handle.read(buf, 0, length, offset);
      return c.json({ text: buf.toString("utf8"), offset: offset + length, attempt: attemptN, rank: rankN });
    } finally {
      await handle.close();
    }
  });

  app.get("/api/jobs/:id/report", async (c) => {
    const report = await jobReport(store, c.req.param("id"), Date.now());
    if (!report) return notFound(c, c.req.param("id"));
    return c.json(report);
  });

  app.post("/api/jobs/:id/chaos", async (c) => {
    const job = await store.getJob(c.req.param("id"));
    if (!job) return notFound(c, c.req.param("id"));
    const body = await requestBody(c, chaosRequestSchema, '{"action": "kill-rank", "rank": 0}');
    const action = body.action;
    const current = await supervisor.currentRanks(job.id);
    const result = await injectChaos(
      action,
      {
        ranks: current?.ranks ?? [],
        attemptDir: current && current.attempt.endedAt === null ? current.attempt.dir : null,
        checkpointDir: job.spec.checkpoint.dir,
        ...(job.spec.checkpoint.watch ? { adoptedFile: () => newestAdoptedFile(job.spec, job.id) } : {}),
        signalRank: (r, sig) => supervisor.signalRank(r, sig),
        link: {
          ...(body.node !== undefined ? { node: body.node } : {}),
          ...(body.rate !== undefined ? { rate: body.rate } : {}),
          ...(body.burst !== undefined ? { burst: body.burst } : {}),
        },
        poolExecutor: supervisor.cluster.pools.find((p) => p.name === current?.attempt.pool)?.executor ?? "none",
        shaper: { degrade: degradeLink, heal: healLink },
      },
      body.rank,
    ).catch((err: Error) => err);
    if (result instanceof Error) return c.json({ error: result.message }, 409);
    await store.addEvent({ jobId: job.id, t: Date.now(), kind: "chaos", message: result.message, data: { ...result } });
    return c.json(result);
  });

  app.get("/api/nodes", async (c) => c.json(await supervisor.nodes()));

  const noNode = (name: string) => ({
    error: `no node named ${JSON.stringify(name)} (fix: see \`switchyard nodes\` for the names)`,
  });
  app.get("/api/nodes/:name", async (c) => {
    const node = await supervisor.node(c.req.param("name"));
    return node ? c.json(node) : c.json(noNode(c.req.param("name")), 404);
  });

  app.post("/api/nodes/:name/probe", async (c) => {
    const name = c.req.param("name");
    if (!(await store.listNodes()).some((n) => n.name === name)) return c.json(noNode(name), 404);
    const result = await supervisor.probeNode(name).catch((err: Error) => err);
    if (result instanceof Error) return c.json({ error: result.message }, 409);
    return c.json(result);
  });

  app.post("/api/nodes/:name/:action{cordon|uncordon}", async (c) => {
    const name = c.req.param("name");
    if (!(await store.listNodes()).some((n) => n.name === name)) {
      return c.json(
        { error: `no node named ${JSON.stringify(name)} (fix: see \`switchyard nodes\` for the names)` },
        404,
      );
    }
    const body = await requestBody(c, cordonRequestSchema, '{"reason": "bad DIMM"}');
    const reason = body.reason ?? "by user";
    await supervisor.setCordon(c.req.param("name"), c.req.param("action") === "cordon", reason);
    return c.json((await supervisor.nodes()).find((n) => n.name === c.req.param("name")));
  });

  // Gateway traffic first: `/api/services/:name` would take "traffic" for a service name.
  const traffic = new TrafficBook(store);
  registerTrafficRoutes(app, traffic);
  registerServiceRoutes(app, supervisor, { requestsLedger: () => traffic.ledger() });

  app.get("/api/events", async (c) => {
    const after = Number(c.req.query("after") ?? 0);
    return c.json(await store.listEvents({ afterId: Number.isFinite(after) ? after : 0 }));
  });

  // The dashboard: a fixed map of files (no path from the request reaches the file system).
  for (const [route, file] of Object.entries(webFiles)) {
    app.get(route, async (c) => {
      const body = await readFile(file.path);
      return c.body(body, 200, { "content-type": file.type, "cache-control": "no-cache" });
    });
  }

  app.notFound((c) => c.json({ error: `no route ${c.req.method} ${c.req.path}` }, 404));
  return app;
}

function notFound(c: Context, id: string): Response {
  return c.json({ error: `no job with id or name "${id}" (fix: see \`switchyard ps\`)` }, 404);
}

function summary(j: {
  id: string;
  name: string;
  state: string;
  reason: string | null;
  restarts: number;
  createdAt: number;
  endedAt: number | null;
  spec: { steps: number | null };
}) {
  return {
    id: j.id,
    name: j.name,
    state: j.state,
    reason: j.reason,
    restarts: j.restarts,
    createdAt: j.createdAt,
    endedAt: j.endedAt,
    steps: j.spec.steps,
  };
}
