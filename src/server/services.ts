import type { Hono } from "hono";
import { z } from "zod";
import { ServicesConfigError } from "../gateway/config.js";
import { requestBody } from "./request-body.js";
import { DeployError } from "../supervisor/services.js";
import type { Supervisor } from "../supervisor/supervisor.js";
import type { RequestsLedger } from "./traffic.js";

/**
 * The services API (issue 14), token-authenticated like every API call (app.ts's guard runs first):
 *
 *   POST /api/services                  {yaml, file, dryRun?}: deploy a services file (create or update its
 *                                       services; each answer has its plan: created / unchanged / rolling / scaled);
 *                                       dryRun: the plans only, nothing changed (200)
 *   GET  /api/services                  every service: desired and ready replicas per pool, state, checkpoint
 *   GET  /api/services/backends         the live backend set; ?since=&epoch=&wait= long-polls (control-plane-source.ts)
 *   GET  /api/services/ledger           replica-seconds by state (serving, starting, down) per pool; the gateways'
 *                                       requests answered/failed per service and pool, saved by failover (traffic.ts)
 *   GET  /api/services/pools            which pool does what: its nodes, the training jobs and services on it
 *   GET  /api/services/:name            one service with its replicas (job, pool, node, state, url, checkpoint)
 *   POST /api/services/:name/scale      {replicas, pool?}
 *   POST /api/services/:name/undeploy   drain and stop its replicas, then forget it
 */
/** Request bodies (strict: an unknown field is refused with "did you mean"; request-body.ts). */
const deployRequestSchema = z.strictObject({
  yaml: z.string(),
  file: z.string().min(1).max(4096),
  dryRun: z.boolean().optional(),
});
const scaleRequestSchema = z.strictObject({
  replicas: z.number().int().min(0).max(1024),
  pool: z.string().min(1).max(256).optional(),
});

export function registerServiceRoutes(
  app: Hono,
  supervisor: Supervisor,
  extra: { requestsLedger?: () => Promise<RequestsLedger> } = {},
): void {
  const services = supervisor.services;
  const refused = (err: unknown): { error: string; issues?: ServicesConfigError["issues"] } | null =>
    err instanceof ServicesConfigError
      ? { error: err.message, issues: err.issues }
      : err instanceof DeployError
        ? { error: err.message }
        : null;

  app.post("/api/services", async (c) => {
    const body = await requestBody(
      c,
      deployRequestSchema,
      '{"yaml": "<services file text>", "file": "<its path>", "dryRun": false}',
    );
    try {
      if (body.dryRun === true) return c.json(await services.deploy(body.yaml, body.file, { dryRun: true }), 200);
      return c.json(await services.deploy(body.yaml, body.file), 201);
    } catch (err) {
      const r = refused(err);
      if (r) return c.json(r, 400);
      throw err;
    }
  });

  app.get("/api/services", async (c) => c.json(await services.list()));

  app.get("/api/services/backends", async (c) => {
    const sinceText = c.req.query("since");
    const since = sinceText !== undefined && /^\d{1,16}$/.test(sinceText) ? Number(sinceText) : null;
    if (sinceText !== undefined && since === null) {
      return c.json(
        { error: "GET /api/services/backends: since must be a version number (fix: the last answer's version)" },
        400,
      );
    }
    const waitText = c.req.query("wait");
    const wait = waitText !== undefined ? Number(waitText) : 25;
    if (!Number.isFinite(wait) || wait < 0 || wait > 60) {
      return c.json({ error: "GET /api/services/backends: wait must be 0 to 60 seconds" }, 400);
    }
    const set = await services.waitForChange(since, c.req.query("epoch") ?? null, wait * 1000, c.req.raw.signal);
    return c.json(set);
  });

  // Replica-seconds per pool, and the gateways' requests answered / failed per service and pool, saved by failover.
  app.get("/api/services/ledger", async (c) => {
    const [pools, requests] = await Promise.all([
      services.ledger(),
      extra.requestsLedger?.() ?? Promise.resolve({ requests: [], saved: [] }),
    ]);
    return c.json({ pools, ...requests });
  });

  app.get("/api/services/pools", async (c) => c.json(await services.pools()));

  app.get("/api/services/:name", async (c) => {
    try {
      return c.json(await services.describe(c.req.param("name")));
    } catch (err) {
      const r = refused(err);
      if (r) return c.json(r, 404);
      throw err;
    }
  });

  app.post("/api/services/:name/scale", async (c) => {
    const body = await requestBody(c, scaleRequestSchema, '{"replicas": 2, "pool": "<pool>"}');
    try {
      return c.json(await services.scale(c.req.param("name"), body.replicas, body.pool));
    } catch (err) {
      const r = refused(err);
      if (r) return c.json(r, r.error.startsWith("no service") ? 404 : 400);
      throw err;
    }
  });

  app.post("/api/services/:name/undeploy", async (c) => {
    try {
      return c.json(await services.undeploy(c.req.param("name")));
    } catch (err) {
      const r = refused(err);
      if (r) return c.json(r, 404);
      throw err;
    }
  });
}
