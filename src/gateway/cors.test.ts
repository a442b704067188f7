/** CORS for browser clients: opt-in origins, preflights answered by the gateway, never `*` with credentials. */
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseServicesYaml, ServicesConfigError } from "./config.js";
import { FixtureBackend } from "./testing/fixture-backend.js";
import { chat, post, startHarness, type Harness } from "./testing/harness.js";

async function options(url: string, headers: Record<string, string>) {
  const res = await request(url, { method: "OPTIONS", headers });
  await res.body.dump();
  return { status: res.statusCode, headers: res.headers };
}

describe("CORS", () => {
  let a: FixtureBackend;
  let listed: Harness;
  let any: Harness;
  let closed: Harness;
  beforeAll(async () => {
    a = await FixtureBackend.start("a");
    listed = await startHarness({ p: [a] }, {}, { cors: { origins: ["https://app.example.com"], maxAgeS: 120 } });
    any = await startHarness({ p: [a] }, {}, { cors: { origins: ["*"] } });
    closed = await startHarness({ p: [a] });
  });
  afterAll(async () => {
    for (const h of [listed, any, closed]) await h.close();
    await a.close();
  });

  it("answers a preflight from a listed origin with 204 and the allowances; the backend never sees it", async () => {
    const before = a.completions;
    const r = await options(`${listed.url}/v1/chat/completions`, {
      origin: "https://app.example.com",
      "access-control-request-method": "POST",
      "access-control-request-headers": "authorization, content-type, x-stainless-os",
    });
    expect(r.status).toBe(204);
    expect(r.headers["access-control-allow-origin"]).toBe("https://app.example.com");
    expect(r.headers.vary).toBe("Origin");
    expect(r.headers["access-control-allow-methods"]).toContain("POST");
    expect(r.headers["access-control-allow-headers"]).toBe("authorization, content-type, x-stainless-os");
    expect(r.headers["access-control-max-age"]).toBe("120");
    expect(r.headers["access-control-allow-credentials"]).toBeUndefined();
    expect(a.completions).toBe(before);
  });

  it("refuses a preflight from an origin not listed (403 naming the fix), and sends no allowance", async () => {
    const r = await options(`${listed.url}/v1/chat/completions`, {
      origin: "https://evil.example.net",
      "access-control-request-method": "POST",
    });
    expect(r.status).toBe(403);
    expect(r.headers["access-control-allow-origin"]).toBeUndefined();
  });

  it("a real request from a listed origin gets the origin back (and the exposed headers); from another, none", async () => {
    const ok = await post(`${listed.url}/v1/chat/completions`, chat(), { origin: "https://app.example.com" });
    expect(ok.status).toBe(200);
    expect(ok.headers["access-control-allow-origin"]).toBe("https://app.example.com");
    expect(String(ok.headers["access-control-expose-headers"])).toContain("x-switchyard-backend");
    const other = await post(`${listed.url}/v1/chat/completions`, chat(), { origin: "https://evil.example.net" });
    expect(other.headers["access-control-allow-origin"]).toBeUndefined();
    // Errors the gateway makes itself carry it too, so a page can read them.
    const err = await post(`${listed.url}/v1/chat/completions`, chat("nope"), { origin: "https://app.example.com" });
    expect(err.status).toBe(404);
    expect(err.headers["access-control-allow-origin"]).toBe("https://app.example.com");
  });

  it("`*` allows any origin as `*`, never with credentials", async () => {
    const pre = await options(`${any.url}/v1/responses`, {
      origin: "https://whoever.example",
      "access-control-request-method": "POST",
    });
    expect(pre.status).toBe(204);
    expect(pre.headers["access-control-allow-origin"]).toBe("*");
    expect(pre.headers["access-control-allow-credentials"]).toBeUndefined();
    const r = await post(`${any.url}/v1/chat/completions`, chat(), { origin: "https://whoever.example" });
    expect(r.headers["access-control-allow-origin"]).toBe("*");
    expect(r.headers["access-control-allow-credentials"]).toBeUndefined();
  });

  it("off by default: no allowance headers, and OPTIONS is not a route", async () => {
    const pre = await options(`${closed.url}/v1/chat/completions`, {
      origin: "https://app.example.com",
      "access-control-request-method": "POST",
    });
    expect(pre.status).toBe(404);
    expect(pre.headers["access-control-allow-origin"]).toBeUndefined();
    const r = await post(`${closed.url}/v1/chat/completions`, chat(), { origin: "https://app.example.com" });
    expect(r.headers["access-control-allow-origin"]).toBeUndefined();
  });

  it("the services file's gateway.cors is validated: an origin with a path is refused with the fix", () => {
    const yaml = (origin: string): string =>
      `gateway:\n  cors:\n    origins: ["${origin}"]\nservices:\n  - model: m\n    pools:\n      - name: p\n        backends: [{ url: "http://127.0.0.1:1", engine: vllm }]\n`;
    expect(parseServicesYaml(yaml("https://app.example.com:8443"), "s.yaml").cors?.origins).toEqual([
      "https://app.example.com:8443",
    ]);
    let err: unknown;
    try {
      parseServicesYaml(yaml("https://app.example.com/"), "s.yaml");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ServicesConfigError);
    expect(String(err)).toMatch(
      /gateway\.cors\.origins\[0\]: "https:\/\/app\.example\.com\/" is not an origin: write scheme:\/\/host\[:port\]/,
    );
  });
});
