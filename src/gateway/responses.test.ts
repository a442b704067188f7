/**
 * POST /v1/responses (the OpenAI Responses API) passes through like chat completions: routed by model (aliases
 * rewritten), streaming or not, and its streams end with a terminal event (response.completed), not [DONE]: such a
 * stream is complete, while one that ends before it gets the gateway's in-band error, never a silent truncation.
 */
import OpenAI from "openai";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { SseScanner } from "./sse.js";
import { FixtureBackend } from "./testing/fixture-backend.js";
import { post, settled, startHarness, type Harness } from "./testing/harness.js";

describe("/v1/responses passthrough", () => {
  let a: FixtureBackend;
  let h: Harness;
  beforeAll(async () => {
    a = await FixtureBackend.start("a", { chunks: 4 });
    h = await startHarness({ p: [a] }, {}, { aliases: ["alias"], servedModels: { a: "served-a" } });
  });
  afterEach(async () => {
    await a.reset();
    await a.set({ chunks: 4 });
  });
  afterAll(async () => {
    await h.close();
    await a.close();
  });

  it("non-streaming: routed by model with the alias rewritten, the answer byte for byte", async () => {
    const r = await post(`${h.url}/v1/responses`, { model: "alias", input: "hi" });
    expect(r.status).toBe(200);
    expect(r.headers["x-switchyard-backend"]).toBe("a");
    expect(JSON.parse(a.requests.at(-1)!.body.toString("utf8"))).toEqual({ model: "served-a", input: "hi" });
    expect(a.requests.at(-1)!.path).toBe("/v1/responses");
    const body = JSON.parse(r.body) as { object: string; status: string };
    expect(body).toMatchObject({ object: "response", status: "completed" });
  });

  it("the official client streams a response through the gateway to response.completed", async () => {
    const client = new OpenAI({ baseURL: `${h.url}/v1`, apiKey: "unused", maxRetries: 0 });
    const stream = await client.responses.create({ model: "m", input: "hi", stream: true });
    const types: string[] = [];
    let text = "";
    for await (const ev of stream) {
      types.push(ev.type);
      if (ev.type === "response.output_text.delta") text += ev.delta;
    }
    expect(types[0]).toBe("response.created");
    expect(types.at(-1)).toBe("response.completed");
    expect(text).toBe("a-tok0 a-tok1 a-tok2 a-tok3 ");
    expect(await settled(h.gateway)).toBe(0);
    const metrics = await h.gateway.metrics.registry.getSingleMetricAsString("switchyard_gateway_requests_total");
    expect(metrics).toMatch(/status="200",result="complete"\} 2/); // with the non-streaming one before
    expect(metrics).not.toMatch(/result="incomplete"/);
  });

  it("a stream that ends before response.completed gets an in-band stream_truncated error, and counts as incomplete", async () => {
    await a.set({ fault: "endWithoutDone" });
    const r = await post(`${h.url}/v1/responses`, { model: "m", input: "hi", stream: true });
    expect(r.status).toBe(200);
    expect(r.body).toContain("response.output_text.delta");
    expect(r.body).not.toContain("event: response.completed");
    expect(r.body.trimEnd().split("\n").at(-1)).toMatch(/"code":"stream_truncated"/);
    const client = new OpenAI({ baseURL: `${h.url}/v1`, apiKey: "unused", maxRetries: 0 });
    const stream = await client.responses.create({ model: "m", input: "hi", stream: true });
    await expect(async () => {
      for await (const _ of stream) {
        // read to the end
      }
    }).rejects.toThrow(/response.completed/);
  });
});

describe("SseScanner in Responses API mode", () => {
  const scan = (text: string, responsesApi: boolean): boolean => {
    const s = new SseScanner(responsesApi);
    s.push(Buffer.from(text));
    return s.ended;
  };

  it("a terminal event, named in the event field or in the data's type, ends the stream; other events do not", () => {
    for (const t of ["response.completed", "response.failed", "response.incomplete"]) {
      expect(scan(`event: ${t}\ndata: {"type":"${t}"}\n\n`, true)).toBe(true);
      expect(scan(`data: {"type":"${t}","response":{}}\n\n`, true)).toBe(true);
      expect(scan(`event:${t}\ndata: {}\n\n`, true)).toBe(true);
    }
    expect(scan(`event: response.output_text.delta\ndata: {"type":"response.output_text.delta"}\n\n`, true)).toBe(
      false,
    );
    expect(scan(`event: response.completed\ndata: {"type":"response.completed"}\n`, true)).toBe(false); // no blank line
    expect(scan(`data: {"type":"response.completedX"}\n\n`, true)).toBe(false);
    expect(scan(`data: [DONE]\n\n`, true)).toBe(true);
    // Chat completions streams are not fooled by a responses-like event.
    expect(scan(`event: response.completed\ndata: {"type":"response.completed"}\n\n`, false)).toBe(false);
  });
});
