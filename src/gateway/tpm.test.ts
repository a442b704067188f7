/**
 * Tokens-per-minute limits per key, beside requests-per-minute: a key may start a request while its bucket holds a
 * token; each answer's usage.total_tokens (or, without usage, its bytes / 4) is taken when it ends; past the limit,
 * 429 with Retry-After until the bucket has refilled.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { addKey, KeyAuthenticator } from "./keys.js";
import { estimateTokens, LocalLimiter, totalTokensIn } from "./limits.js";
import { FixtureBackend } from "./testing/fixture-backend.js";
import { chat, post, startHarness, type Harness } from "./testing/harness.js";

describe("LocalLimiter", () => {
  it("TPM: admits while a token is left, takes the spent tokens after, and says how long until it refills", () => {
    const l = new LocalLimiter();
    const limits = { tpm: 600 };
    expect(l.admit("k", limits, 0)).toBeUndefined();
    l.spend("k", limits, 500, 0);
    expect(l.admit("k", limits, 0)).toBeUndefined(); // 100 left
    l.spend("k", limits, 250, 0); // 150 in debt
    expect(l.admit("k", limits, 0)).toEqual({ limit: "tpm", retryAfterS: 16 }); // (150 + 1) / 10 per s
    expect(l.admit("k", limits, 16_000)).toBeUndefined();
    // Debt is bounded by one minute's worth: one huge answer does not lock the key for an hour.
    l.spend("k", limits, 1_000_000, 16_000);
    expect(l.admit("k", limits, 16_000)).toEqual({ limit: "tpm", retryAfterS: 61 });
  });

  it("RPM and TPM together: whichever says no, says which", () => {
    const l = new LocalLimiter();
    expect(l.admit("k", { rpm: 1, tpm: 1000 }, 0)).toBeUndefined();
    expect(l.admit("k", { rpm: 1, tpm: 1000 }, 0)).toMatchObject({ limit: "rpm" });
  });

  it("reads usage.total_tokens without parsing, and estimates from bytes otherwise", () => {
    expect(totalTokensIn(Buffer.from('{"usage":{"prompt_tokens":3,"total_tokens": 1234}}'))).toBe(1234);
    expect(totalTokensIn(Buffer.from('data: {"usage":{"total_tokens":7}}\n\ndata: [DONE]\n\n'))).toBe(7);
    expect(totalTokensIn(Buffer.from('{"usage":null}'))).toBeUndefined();
    expect(estimateTokens(401)).toBe(101);
  });
});

describe("gateway with a TPM-limited key", () => {
  const dir = mkdtempSync(join(tmpdir(), "sy-tpm-"));
  const path = join(dir, "gateway-keys.json");
  let a: FixtureBackend;
  let h: Harness;
  let key: string;
  let streamKey: string;
  let rawKey: string;
  beforeAll(async () => {
    key = addKey(path, { name: "tpm", tpm: 100 }).key;
    streamKey = addKey(path, { name: "tpm-stream", tpm: 100 }).key;
    rawKey = addKey(path, { name: "tpm-raw", tpm: 60 }).key;
    a = await FixtureBackend.start("a");
    h = await startHarness({ p: [a] }, {}, { auth: new KeyAuthenticator({ path }) });
  });
  afterEach(async () => a.reset());
  afterAll(async () => {
    await h.close();
    await a.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("counts each answer's usage: 60 + 60 tokens against 100/min -> the third request gets 429 tokens_per_minute_exceeded", async () => {
    await a.set({ usageTotal: 60 });
    const auth = { authorization: `Bearer ${key}` };
    expect((await post(`${h.url}/v1/chat/completions`, chat(), auth)).status).toBe(200);
    expect((await post(`${h.url}/v1/chat/completions`, chat(), auth)).status).toBe(200);
    const third = await post(`${h.url}/v1/chat/completions`, chat(), auth);
    expect(third.status).toBe(429);
    expect(JSON.parse(third.body).error.code).toBe("tokens_per_minute_exceeded");
    expect(JSON.parse(third.body).error.message).toMatch(/tokens-per-minute limit of this API key \(100\)/);
    // 20 tokens of debt at 100/min: 13 s until a token is back.
    expect(Number(third.headers["retry-after"])).toBe(13);
    expect(a.completions).toBe(2);
  });

  it("counts a stream's final usage chunk", async () => {
    await a.set({ usageTotal: 150, streamUsage: true });
    const auth = { authorization: `Bearer ${streamKey}` };
    const first = await post(`${h.url}/v1/chat/completions`, chat("m", true), auth);
    expect(first.body.trimEnd().endsWith("data: [DONE]")).toBe(true);
    const second = await post(`${h.url}/v1/chat/completions`, chat("m", true), auth);
    expect(second.status).toBe(429);
    expect(JSON.parse(second.body).error.code).toBe("tokens_per_minute_exceeded");
  });

  it("estimates from bytes when the answer carries no usage", async () => {
    // 2 x 100-byte events with no usage: the request (~70 bytes) and answer (~220 bytes) / 4 > 60 tokens.
    const ev = `data: ${JSON.stringify({ choices: [{ delta: { content: "x".repeat(60) } }] })}\n\n`;
    await a.set({ rawStream: [ev, ev, "data: [DONE]\n\n"] });
    const auth = { authorization: `Bearer ${rawKey}` };
    expect((await post(`${h.url}/v1/chat/completions`, chat("m", true), auth)).status).toBe(200);
    const second = await post(`${h.url}/v1/chat/completions`, chat("m", true), auth);
    expect(second.status).toBe(429);
  });
});
