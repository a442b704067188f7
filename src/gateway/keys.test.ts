import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addKey, defaultKeysPath, hashKey, KeyAuthenticator, readKeysFile, revokeKey } from "./keys.js";
import { FixtureBackend } from "./testing/fixture-backend.js";
import { chat, post, startHarness, type Harness } from "./testing/harness.js";

describe("key store", () => {
  const dir = mkdtempSync(join(tmpdir(), "sy-keys-"));
  const path = join(dir, "home", "gateway-keys.json");
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("stores only a hash of each key, in a file only its owner can read", () => {
    const { key, record } = addKey(path, { name: "alice", rpm: 60 });
    expect(key).toMatch(/^sy-[A-Za-z0-9_-]{43}$/);
    const text = readFileSync(path, "utf8");
    expect(text).not.toContain(key);
    expect(text).toContain(hashKey(key));
    expect(record.prefix).toBe(key.slice(0, 10));
    expect(statSync(path).mode & 0o777).toBe(0o600);
  });

  it("revokes by id or name", () => {
    const { record } = addKey(path, { name: "bob" });
    expect(revokeKey(path, record.id)?.name).toBe("bob");
    expect(revokeKey(path, record.id)).toBeUndefined();
    expect(readKeysFile(path).keys.find((k) => k.id === record.id)?.revokedAt).toBeDefined();
  });

  it("lives under SWITCHYARD_HOME", () => {
    expect(defaultKeysPath({ SWITCHYARD_HOME: "/x/y" })).toBe("/x/y/gateway-keys.json");
  });

  it("rate limits per key with a token bucket and says how long to wait", () => {
    let now = 0;
    const { key } = addKey(path, { name: "carol", rpm: 2 });
    const auth = new KeyAuthenticator({ path }, () => now);
    expect(auth.authenticate(`Bearer ${key}`).ok).toBe(true);
    expect(auth.authenticate(`Bearer ${key}`).ok).toBe(true);
    expect(auth.authenticate(`Bearer ${key}`)).toMatchObject({ ok: false, reason: "rate_limited", retryAfterS: 30 });
    now += 30_000;
    expect(auth.authenticate(`Bearer ${key}`).ok).toBe(true);
    expect(auth.authenticate("Bearer sy-wrong").reason).toBe("invalid");
    expect(auth.authenticate(undefined).reason).toBe("missing");
  });
});

describe("gateway with API keys", () => {
  const dir = mkdtempSync(join(tmpdir(), "sy-keys-"));
  const path = join(dir, "gateway-keys.json");
  let a: FixtureBackend;
  let h: Harness;
  let key: string;
  let limited: string;
  const backendKey = "backend-secret-7f3a";

  beforeAll(async () => {
    key = addKey(path, { name: "svc" }).key;
    limited = addKey(path, { name: "tight", rpm: 1 }).key;
    a = await FixtureBackend.start("a", { requireKey: backendKey });
    h = await startHarness({ p: [a] }, {}, { auth: new KeyAuthenticator({ path }) });
    h.gateway.registerBackend({
      service: "m",
      pool: "keyed",
      url: a.url,
      engine: "vllm",
      apiKey: backendKey,
      id: "keyed",
    });
    await h.gateway.unregisterBackend("a"); // the YAML-style backend without the key would get 401s
  });
  afterAll(async () => {
    await h.close();
    await a.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("answers 401 without a key or with a wrong one", async () => {
    expect((await post(`${h.url}/v1/chat/completions`, chat())).status).toBe(401);
    const wrong = await post(`${h.url}/v1/chat/completions`, chat(), { authorization: "Bearer sy-nope" });
    expect(wrong.status).toBe(401);
    expect(JSON.parse(wrong.body).error.code).toBe("invalid_api_key");
    expect(a.completions).toBe(0);
  });

  it("serves the official client with a valid key, sending the backend's own key upstream", async () => {
    const client = new OpenAI({ baseURL: `${h.url}/v1`, apiKey: key, maxRetries: 0 });
    const answer = await client.chat.completions.create({ model: "m", messages: [{ role: "user", content: "x" }] });
    expect(answer.choices[0]?.message.content).toContain("a-tok0");
    expect(a.requests.at(-1)?.headers.authorization).toBe(`Bearer ${backendKey}`);
  });

  it("health probes carry the backend key, so a keyed backend stays healthy", async () => {
    await h.gateway.probeAll();
    await h.gateway.probeAll();
    expect(h.gateway.backend("keyed")?.state).toBe("healthy");
  });

  it("rate limits a key with 429 and Retry-After", async () => {
    const first = await post(`${h.url}/v1/chat/completions`, chat(), { authorization: `Bearer ${limited}` });
    expect(first.status).toBe(200);
    const second = await post(`${h.url}/v1/chat/completions`, chat(), { authorization: `Bearer ${limited}` });
    expect(second.status).toBe(429);
    expect(Number(second.headers["retry-after"])).toBeGreaterThan(0);
  });

  it("picks up a revoked key from the file without a restart", async () => {
    const { key: temp, record } = addKey(path, { name: "temp" });
    await new Promise((r) => setTimeout(r, 1100)); // the file is polled at most once a second
    expect((await post(`${h.url}/v1/chat/completions`, chat(), { authorization: `Bearer ${temp}` })).status).toBe(200);
    revokeKey(path, record.id);
    await new Promise((r) => setTimeout(r, 1100));
    expect((await post(`${h.url}/v1/chat/completions`, chat(), { authorization: `Bearer ${temp}` })).status).toBe(401);
  });

  it("never writes client keys, backend keys or Authorization headers to the access log", async () => {
    await post(`${h.url}/v1/chat/completions`, chat("m", true), { authorization: `Bearer ${key}` });
    await post(`${h.url}/v1/chat/completions`, chat(), { authorization: "Bearer sy-guess" });
    const all = h.logs.join("");
    expect(all).toContain('"msg":"request"');
    expect(all).not.toContain(key);
    expect(all).not.toContain("sy-guess");
    expect(all).not.toContain(backendKey);
    expect(all.toLowerCase()).not.toContain("authorization");
  });
});
