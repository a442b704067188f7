import { once } from "node:events";
import OpenAI from "openai";
import { request } from "undici";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { FixtureBackend } from "./testing/fixture-backend.js";
import { chat, post, settled, startHarness, type Harness } from "./testing/harness.js";

describe("gateway happy path", () => {
  let a: FixtureBackend;
  let h: Harness;
  let client: OpenAI;

  beforeAll(async () => {
    a = await FixtureBackend.start("a", { chunks: 4 });
    h = await startHarness({ main: [a] });
    client = new OpenAI({ baseURL: `${h.url}/v1`, apiKey: "unused", maxRetries: 0 });
  });
  afterAll(async () => {
    await h.close();
    await a.close();
  });
  beforeEach(async () => {
    await a.reset();
    await a.set({ chunks: 4 });
  });

  it("answers a non-streaming chat completion through the official client", async () => {
    const answer = await client.chat.completions.create({ model: "m", messages: [{ role: "user", content: "hi" }] });
    expect(answer.choices[0]?.message.content).toBe("a-tok0 a-tok1 a-tok2 a-tok3 ");
    expect((answer as unknown as { unknown_field_kept: unknown }).unknown_field_kept).toEqual({ nested: [1, 2, 3] });
    expect(await settled(h.gateway)).toBe(0);
  });

  it("streams a chat completion through the official client, every chunk in order", async () => {
    const stream = await client.chat.completions.create({
      model: "m",
      stream: true,
      messages: [{ role: "user", content: "hi" }],
    });
    const parts: string[] = [];
    for await (const chunk of stream) parts.push(chunk.choices[0]?.delta.content ?? "");
    expect(parts).toEqual(["a-tok0 ", "a-tok1 ", "a-tok2 ", "a-tok3 "]);
    expect(await settled(h.gateway)).toBe(0);
  });

  it("passes completions and embeddings through the official client", async () => {
    const c = await client.completions.create({ model: "m", prompt: "x" });
    expect(c.choices[0]?.text).toBe("a-tok0 a-tok1 a-tok2 a-tok3 ");
    const e = await client.embeddings.create({ model: "m", input: "x" });
    expect(e.data[0]?.embedding).toEqual([0.5, 0.25, 0.125]);
  });

  it("lists the served models", async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(["m"]);
  });

  it("relays a non-streaming answer byte for byte, with the request body untouched", async () => {
    const body = '{"model":"m","messages":[{"role":"user","content":"hi"}],  "x_extra": {"keep": true}}';
    const direct = await post(`${a.url}/v1/chat/completions`, body);
    const via = await post(`${h.url}/v1/chat/completions`, body);
    expect(via.status).toBe(200);
    expect(via.body).toBe(direct.body);
    expect(via.headers["x-switchyard-backend"]).toBe("a");
    expect(a.requests.at(-1)?.body.toString()).toBe(body);
  });

  it("relays a stream byte for byte without content-length and with X-Accel-Buffering: no", async () => {
    const direct = await post(`${a.url}/v1/chat/completions`, chat("m", true));
    const via = await post(`${h.url}/v1/chat/completions`, chat("m", true));
    expect(via.status).toBe(200);
    expect(via.body).toBe(direct.body);
    expect(via.body.endsWith("data: [DONE]\n\n")).toBe(true);
    expect(via.headers["content-length"]).toBeUndefined();
    expect(via.headers["x-accel-buffering"]).toBe("no");
    expect(via.headers["content-type"]).toContain("text/event-stream");
  });

  it("delivers stream chunks as they arrive, before the answer is complete", async () => {
    await a.set({ chunks: 3, chunkDelayMs: 300 });
    const res = await request(`${h.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(chat("m", true)),
    });
    const [first] = (await once(res.body, "data")) as [Buffer];
    // The first event is here while the fixture is still producing the next ones.
    expect(first.toString()).toContain("a-tok0");
    expect(a.running).toBe(1);
    res.body.destroy();
    expect(await settled(h.gateway)).toBe(0);
  });

  it("does not forward the client's Authorization header upstream", async () => {
    await post(`${h.url}/v1/chat/completions`, chat(), { authorization: "Bearer client-secret" });
    expect(a.requests.at(-1)?.headers.authorization).toBeUndefined();
  });

  it("asks the backend for uncompressed answers whatever the client accepts (it reads every SSE event)", async () => {
    // The official clients send Accept-Encoding: gzip; a gzipped stream could not be checked for its end.
    await post(`${h.url}/v1/chat/completions`, chat("m", true), { "accept-encoding": "gzip, deflate, br" });
    expect(a.requests.at(-1)?.headers["accept-encoding"]).toBe("identity");
  });

  it("refuses unknown models, bad JSON and bodies over the limit with OpenAI-style errors", async () => {
    const unknown = await post(`${h.url}/v1/chat/completions`, chat("nope"));
    expect(unknown.status).toBe(404);
    expect(JSON.parse(unknown.body).error.code).toBe("model_not_found");
    const bad = await post(`${h.url}/v1/chat/completions`, "{not json");
    expect(bad.status).toBe(400);
    const noModel = await post(`${h.url}/v1/chat/completions`, { messages: [] });
    expect(noModel.status).toBe(400);
    const big = await post(`${h.url}/v1/chat/completions`, chat("m", false, { pad: "x".repeat(9 * 1024 * 1024) }));
    expect(big.status).toBe(413);
    expect(a.requests).toHaveLength(0);
  });

  it("answers its own health on /healthz and /health alike", async () => {
    for (const path of ["/healthz", "/health"]) {
      const res = await request(`${h.url}${path}`);
      expect(res.statusCode).toBe(200);
      expect(await res.body.json()).toEqual({ status: "ok", backends: 1, routable: 1 });
    }
  });

  it("answers 404 for paths it does not serve", async () => {
    const res = await request(`${h.url}/v1/files`);
    expect(res.statusCode).toBe(404);
    await res.body.dump();
  });

  it("exposes Prometheus metrics with per-backend series", async () => {
    await post(`${h.url}/v1/chat/completions`, chat("m", true));
    const res = await request(`${h.url}/metrics`);
    const text = await res.body.text();
    expect(text).toContain('switchyard_gateway_requests_total{service="m",backend="a",status="200",result="complete"}');
    expect(text).toContain('switchyard_gateway_ttft_seconds_bucket{le="0.001",backend="a"}');
    expect(text).toContain('switchyard_gateway_backend_state{backend="a",service="m",pool="main",state="healthy"} 1');
    expect(text).toContain('switchyard_gateway_backend_in_flight{backend="a"} 0');
  });

  it("writes one structured access log line per request", async () => {
    h.logs.length = 0;
    await post(`${h.url}/v1/chat/completions`, chat(), { "x-request-id": "req-42" });
    const line = h.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.reqId === "req-42");
    expect(line).toMatchObject({ msg: "request", status: 200, backend: "a", model: "m", attempts: 1, stream: false });
  });
});
