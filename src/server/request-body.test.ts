/**
 * API request bodies are refused like a user's config file: 400 `{error, issues}`, the route and the field named, a
 * fix for each, "did you mean" for an unknown field; the CLI client turns that into exit 2 with the issues. A real
 * server over a temp home (no job runs).
 */
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CliError, ExitCode, makeClient, type ApiClient } from "../cli/client.js";
import { readToken } from "./config.js";
import { startServer, type RunningServer } from "./main.js";

const home = mkdtempSync(path.join(os.tmpdir(), "sy-reqbody-"));
let server: RunningServer;
let client: ApiClient;
let token: string;

beforeAll(async () => {
  server = await startServer({ home, host: "127.0.0.1", port: 0, version: "test" });
  token = readToken(home) ?? "";
  client = makeClient(server.info.url, token);
});
afterAll(async () => {
  await server.close();
  rmSync(home, { recursive: true, force: true });
});

async function post(route: string, body: string): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${server.info.url}${route}`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body,
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

describe("API request bodies", () => {
  it("an unknown field: 400 naming the route and the field, with did-you-mean", async () => {
    const r = await post("/api/jobs", JSON.stringify({ yaml: "name: x", file: "/x.yaml", resumefrom: "/c" }));
    expect(r.status).toBe(400);
    expect(r.json).toEqual({
      error: 'POST /api/jobs: resumefrom: unknown key "resumefrom" (fix: did you mean "resumeFrom"?)',
      issues: [
        {
          file: "POST /api/jobs",
          path: "resumefrom",
          line: 0,
          column: 0,
          message: 'unknown key "resumefrom"',
          fix: 'did you mean "resumeFrom"?',
        },
      ],
    });
  });

  it("a missing field, a wrong type and a bad value each name the field and the fix", async () => {
    const missing = await post("/api/jobs", JSON.stringify({ file: "/x.yaml" }));
    expect(missing.json.error).toBe("POST /api/jobs: yaml: is required (fix: add this field (string))");
    const relative = await post("/api/jobs", JSON.stringify({ yaml: "x", file: "/x.yaml", resumeFrom: "ckpt" }));
    expect(relative.json.error).toBe(
      "POST /api/jobs: resumeFrom: must be an absolute checkpoint path (fix: pass the absolute path of a step-* checkpoint folder)",
    );
    const scale = await post("/api/services/m/scale", JSON.stringify({ replicas: "2" }));
    expect(scale.status).toBe(400);
    expect(scale.json.error).toBe(
      'POST /api/services/m/scale: replicas: expected number, got string "2" (fix: write a number here)',
    );
    const cordon = await post("/api/nodes/local-0/cordon", JSON.stringify({ reason: 5 }));
    expect(cordon.status).toBe(400);
    expect(cordon.json.error).toBe(
      "POST /api/nodes/local-0/cordon: reason: expected string, got number 5 (fix: write a string here)",
    );
  });

  it("a body that is not JSON, or not an object, shows what one looks like", async () => {
    const notJson = await post("/api/services", "yaml: x");
    expect(notJson.status).toBe(400);
    expect(notJson.json.error).toBe(
      'POST /api/services: the body is not JSON (fix: send JSON like {"yaml": "<services file text>", "file": "<its path>", "dryRun": false})',
    );
    const list = await post("/api/services", "[1]");
    expect(list.json.error).toBe(
      'POST /api/services: expected object, got a list (fix: send JSON like {"yaml": "<services file text>", "file": "<its path>", "dryRun": false})',
    );
  });

  it("the CLI's client turns the 400 into bad input (exit 2) carrying the issues", async () => {
    const err = await client.post("/api/services", { yaml: "services: []", file: "/s.yaml", dryrun: true }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).exitCode).toBe(ExitCode.Usage);
    expect((err as CliError).issues).toEqual([
      expect.objectContaining({ path: "dryrun", fix: 'did you mean "dryRun"?' }),
    ]);
  });

  it("a valid body still works", async () => {
    const ok = await post("/api/nodes/local-0/cordon", JSON.stringify({ reason: "test" }));
    expect(ok.status).toBe(200);
    expect(ok.json).toMatchObject({ name: "local-0", cordoned: true });
  });
});
