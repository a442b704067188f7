/**
 * Fault tests: each fixture failure mode on the preferred backend, and what the client sees — the answer from another
 * backend, or an explicit error; never a silently truncated success — and in-flight counts back at zero.
 */
import OpenAI, { APIError } from "openai";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { GatewaySettings } from "./config.js";
import { FixtureBackend, type FixtureFault } from "./testing/fixture-backend.js";
import { chat, post, settled, startHarness, type Harness } from "./testing/harness.js";

const settings: Partial<GatewaySettings> = {
  ttftTimeoutMs: 300,
  stallTimeoutMs: 300,
  nonStreamTimeoutMs: 600,
  ejectAfterFailures: 100, // ejection has its own tests below
  connectTimeoutMs: 500,
};

function parseEvents(body: string): unknown[] {
  return body
    .split("\n\n")
    .filter((e) => e.startsWith("data: "))
    .map((e) => e.slice(6))
    .map((d) => (d === "[DONE]" ? d : (JSON.parse(d) as unknown)));
}

describe("failover before the first byte (preferred pool broken, fallback pool fine)", () => {
  let a: FixtureBackend;
  let b: FixtureBackend;
  let h: Harness;
  let client: OpenAI;

  beforeAll(async () => {
    a = await FixtureBackend.start("a");
    b = await FixtureBackend.start("b");
    h = await startHarness({ preferred: [a], fallback: [b] }, settings);
    client = new OpenAI({ baseURL: `${h.url}/v1`, apiKey: "unused", maxRetries: 0 });
  });
  afterAll(async () => {
    await h.close();
    await a.close();
    await b.close();
  });
  beforeEach(async () => {
    await a.reset();
    await b.reset();
  });
  afterEach(async () => {
    expect(await settled(h.gateway)).toBe(0);
    for (const s of h.gateway.backends()) expect(s.inFlight).toBe(0);
  });

  const preFirstByteFaults: FixtureFault[] = [
    "refuse",
    "status500",
    "status429",
    "stallBeforeFirstByte",
    "stallAfterHeaders",
  ];
  for (const fault of preFirstByteFaults) {
    it(`${fault}: a streaming client gets the whole answer from the fallback pool`, async () => {
      await a.set({ fault, retryAfterS: 0 });
      const stream = await client.chat.completions.create({
        model: "m",
        stream: true,
        messages: [{ role: "user", content: "hi" }],
      });
      const parts: string[] = [];
      for await (const chunk of stream) parts.push(chunk.choices[0]?.delta.content ?? "");
      expect(parts).toEqual(["b-tok0 ", "b-tok1 ", "b-tok2 "]);
      expect(b.completions).toBe(1);
      if (fault !== "refuse") expect(a.completions).toBe(1);
    });

    it(`${fault}: a non-streaming client gets the answer from the fallback pool`, async () => {
      await a.set({ fault, retryAfterS: 0 });
      const res = await post(`${h.url}/v1/chat/completions`, chat());
      expect(res.status).toBe(200);
      expect(res.headers["x-switchyard-backend"]).toBe("b");
      expect(JSON.parse(res.body).choices[0].message.content).toBe("b-tok0 b-tok1 b-tok2 ");
    });
  }

  it("cutMidBody / stallMidStream on a non-streaming answer: retried elsewhere, never a truncated 200", async () => {
    for (const fault of ["cutMidBody", "stallMidStream"] as const) {
      await a.set({ fault });
      const res = await post(`${h.url}/v1/chat/completions`, chat());
      expect(res.status).toBe(200);
      expect(res.broken).toBe(false);
      expect(JSON.parse(res.body).fixture_backend).toBe("b");
    }
  });

  it("counts retries and failovers in /metrics", async () => {
    await a.set({ fault: "status500" });
    await post(`${h.url}/v1/chat/completions`, chat());
    const text = await h.gateway.metrics.registry.metrics();
    expect(text).toMatch(/switchyard_gateway_retries_total\{service="m",reason="status_5xx"\} [1-9]/);
    expect(text).toMatch(
      /switchyard_gateway_failovers_total\{service="m",from_pool="preferred",to_pool="fallback"\} [1-9]/,
    );
    expect(text).toMatch(
      /switchyard_gateway_upstream_errors_total\{service="m",backend="a",reason="status_5xx"\} [1-9]/,
    );
  });
});

describe("failure after the first byte", () => {
  let a: FixtureBackend;
  let b: FixtureBackend;
  let h: Harness;
  let client: OpenAI;

  beforeAll(async () => {
    a = await FixtureBackend.start("a");
    b = await FixtureBackend.start("b");
    h = await startHarness({ preferred: [a], fallback: [b] }, settings);
    client = new OpenAI({ baseURL: `${h.url}/v1`, apiKey: "unused", maxRetries: 0 });
  });
  afterAll(async () => {
    await h.close();
    await a.close();
    await b.close();
  });
  beforeEach(async () => {
    await a.reset();
    await b.reset();
  });
  afterEach(async () => {
    expect(await settled(h.gateway)).toBe(0);
  });

  const midStreamFaults: FixtureFault[] = ["stallMidStream", "cutMidStream", "endWithoutDone"];
  for (const fault of midStreamFaults) {
    it(`${fault}: the official client throws after the chunks it got; no [DONE]`, async () => {
      await a.set({ fault, chunks: 3 });
      const stream = await client.chat.completions.create({
        model: "m",
        stream: true,
        messages: [{ role: "user", content: "hi" }],
      });
      const parts: string[] = [];
      let error: unknown;
      try {
        for await (const chunk of stream) parts.push(chunk.choices[0]?.delta.content ?? "");
      } catch (err) {
        error = err;
      }
      expect(error).toBeInstanceOf(APIError);
      expect(parts.length).toBeGreaterThan(0);
      expect(parts.every((p) => p.startsWith("a-"))).toBe(true);
      expect(b.completions).toBe(0);
    });

    it(`${fault}: raw HTTP sees whole events, then an error event, no [DONE], and a closed stream`, async () => {
      await a.set({ fault, chunks: 3 });
      const res = await post(`${h.url}/v1/chat/completions`, chat("m", true));
      expect(res.status).toBe(200);
      const events = parseEvents(res.body);
      expect(events).not.toContain("[DONE]");
      const last = events.at(-1) as { error?: { code: string } };
      expect(last.error?.code).toMatch(/^stream_(stalled|interrupted|truncated)$/);
      expect(events.slice(0, -1).every((e) => (e as { fixture_backend?: string }).fixture_backend === "a")).toBe(true);
      expect(res.body.endsWith("\n\n")).toBe(true);
    });
  }

  it("counts a mid-stream failure against the backend", async () => {
    await a.set({ fault: "cutMidStream" });
    await post(`${h.url}/v1/chat/completions`, chat("m", true));
    expect(h.gateway.backend("a")?.consecutiveFailures).toBeGreaterThan(0);
    expect(h.gateway.backend("a")?.lastError).toBe("cut");
  });

  it("a client that disconnects mid-stream frees the in-flight slot and does not blame the backend", async () => {
    expect((await post(`${h.url}/v1/chat/completions`, chat())).status).toBe(200);
    expect(h.gateway.backend("a")?.consecutiveFailures).toBe(0);
    await a.set({ chunks: 50, chunkDelayMs: 20 });
    const controller = new AbortController();
    const stream = await client.chat.completions.create(
      { model: "m", stream: true, messages: [{ role: "user", content: "hi" }] },
      { signal: controller.signal },
    );
    let n = 0;
    try {
      for await (const _chunk of stream) {
        if (++n === 2) controller.abort();
      }
    } catch {
      // aborted on purpose
    }
    expect(await settled(h.gateway)).toBe(0);
    expect(h.gateway.backend("a")?.consecutiveFailures).toBe(0);
  });
});

describe("when no backend can answer", () => {
  let a: FixtureBackend;
  let b: FixtureBackend;
  let h: Harness;

  beforeAll(async () => {
    a = await FixtureBackend.start("a");
    b = await FixtureBackend.start("b");
    h = await startHarness({ pool: [a, b] }, settings);
  });
  afterAll(async () => {
    await h.close();
    await a.close();
    await b.close();
  });
  beforeEach(async () => {
    await a.reset();
    await b.reset();
  });
  afterEach(async () => {
    expect(await settled(h.gateway)).toBe(0);
  });

  it("5xx everywhere: each backend is tried once (a retry never picks the same one), then the last error passes through", async () => {
    await a.set({ fault: "status500" });
    await b.set({ fault: "status500" });
    const res = await post(`${h.url}/v1/chat/completions`, chat());
    expect(res.status).toBe(500);
    expect(a.completions).toBe(1);
    expect(b.completions).toBe(1);
  });

  it("connections refused everywhere: 502 with a JSON error body", async () => {
    await a.set({ fault: "refuse" });
    await b.set({ fault: "refuse" });
    const res = await post(`${h.url}/v1/chat/completions`, chat());
    expect(res.status).toBe(502);
    expect(JSON.parse(res.body).error.code).toBe("upstream_unavailable");
  });

  it("stalls everywhere: 504 with a JSON error body, for streaming and non-streaming requests", async () => {
    await a.set({ fault: "stallBeforeFirstByte" });
    await b.set({ fault: "stallBeforeFirstByte" });
    for (const stream of [false, true]) {
      const res = await post(`${h.url}/v1/chat/completions`, chat("m", stream));
      expect(res.status).toBe(504);
      expect(JSON.parse(res.body).error.code).toBe("upstream_timeout");
    }
  });

  it("429 everywhere: the client gets 429 with Retry-After, and the backends cool off for that long", async () => {
    await a.set({ fault: "status429", retryAfterS: 30 });
    await b.set({ fault: "status429", retryAfterS: 30 });
    const res = await post(`${h.url}/v1/chat/completions`, chat());
    expect(res.status).toBe(429);
    expect(res.headers["retry-after"]).toBe("30");
    // Both are cooling off: the next request is not sent to them at all.
    const next = await post(`${h.url}/v1/chat/completions`, chat());
    expect(next.status).toBe(503);
    expect(a.completions + b.completions).toBe(2);
  });
});
