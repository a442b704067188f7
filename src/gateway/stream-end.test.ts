/**
 * How the gateway decides that a stream ended properly: by parsing SSE events (the last dispatched event's data is
 * exactly `[DONE]`), never by looking for the text `data: [DONE]` in the last bytes. Upstream bytes come verbatim from
 * the fixture (rawStream), split into chunks as given.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { GatewaySettings } from "./config.js";
import { FixtureBackend } from "./testing/fixture-backend.js";
import { chat, post, settled, startHarness, type Harness } from "./testing/harness.js";

const settings: Partial<GatewaySettings> = { ttftTimeoutMs: 2000, stallTimeoutMs: 2000, ejectAfterFailures: 1000 };

const event = (content: string): string =>
  `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content } }], fixture_backend: "a" })}`;

const TRUNCATION_CODE = '"code":"stream_truncated"';

describe("the end of a stream is decided by parsing SSE events", () => {
  let a: FixtureBackend;
  let h: Harness;

  beforeAll(async () => {
    a = await FixtureBackend.start("a");
    h = await startHarness({ main: [a] }, settings);
  });
  afterAll(async () => {
    await h.close();
    await a.close();
  });
  beforeEach(async () => {
    await a.reset();
  });
  afterEach(async () => {
    expect(await settled(h.gateway)).toBe(0);
  });

  const metric = async (re: RegExp): Promise<number> => {
    const m = re.exec(await h.gateway.metrics.registry.metrics());
    return m === null ? 0 : Number(m[1]);
  };

  it("a stream whose last event's content is the text `data: [DONE]` and then ends is a truncation", async () => {
    const raw = `${event("a")}\n\n${event("x\n\ndata: [DONE]\n\n")}\n\n`;
    await a.set({ rawStream: [raw] });
    const before = await metric(
      /switchyard_gateway_upstream_errors_total\{[^}]*backend="a",reason="truncated"\} (\d+)/,
    );
    const res = await post(`${h.url}/v1/chat/completions`, chat("m", true));
    expect(res.status).toBe(200);
    expect(res.body.startsWith(raw)).toBe(true);
    expect(res.body.slice(raw.length)).toContain(TRUNCATION_CODE);
    expect(h.gateway.backend("a")?.lastError).toBe("truncated");
    const after = await metric(/switchyard_gateway_upstream_errors_total\{[^}]*backend="a",reason="truncated"\} (\d+)/);
    expect(after).toBe(before + 1);
  });

  it("`data:[DONE]` (no space) is a proper end: relayed byte for byte, nothing appended, backend not blamed", async () => {
    const raw = `${event("a")}\n\ndata:[DONE]\n\n`;
    await a.set({ rawStream: [raw] });
    const res = await post(`${h.url}/v1/chat/completions`, chat("m", true));
    expect(res.body).toBe(raw);
    expect(h.gateway.backend("a")?.consecutiveFailures).toBe(0);
  });

  const proper: Record<string, string> = {
    "CRLF line ends": `${event("a")}\r\n\r\ndata: [DONE]\r\n\r\n`,
    "CR line ends": `${event("a")}\r\rdata: [DONE]\r\r`,
    "a comment after [DONE]": `${event("a")}\n\ndata: [DONE]\n\n: bye\n`,
  };
  for (const [name, raw] of Object.entries(proper)) {
    it(`${name}: a proper end, relayed byte for byte`, async () => {
      await a.set({ rawStream: [raw] });
      const res = await post(`${h.url}/v1/chat/completions`, chat("m", true));
      expect(res.body).toBe(raw);
      expect(h.gateway.backend("a")?.consecutiveFailures).toBe(0);
    });
  }

  it("`data: [DONE]` without the blank line that ends the event is a truncation", async () => {
    await a.set({ rawStream: [`${event("a")}\n\ndata: [DONE]\n`] });
    const res = await post(`${h.url}/v1/chat/completions`, chat("m", true));
    expect(res.body.startsWith(`${event("a")}\n\ndata: {"error"`)).toBe(true);
    expect(res.body).toContain(TRUNCATION_CODE);
    expect(res.body).not.toContain("data: [DONE]");
  });

  it("split into two chunks at every byte boundary, each stream ends the same way", async () => {
    const good = `${event("ab")}\r\n\r\ndata:[DONE]\r\n\r\n`;
    const bad = `${event("ab")}\n\n${event("data: [DONE]")}\n\n`;
    await a.set({ chunkDelayMs: 3 });
    for (let k = 1; k < good.length; k++) {
      await a.set({ rawStream: [good.slice(0, k), good.slice(k)] });
      const res = await post(`${h.url}/v1/chat/completions`, chat("m", true));
      expect(res.body, `good stream split at ${k}`).toBe(good);
    }
    for (let k = 1; k < bad.length; k++) {
      await a.set({ rawStream: [bad.slice(0, k), bad.slice(k)] });
      const res = await post(`${h.url}/v1/chat/completions`, chat("m", true));
      expect(res.body.startsWith(bad), `bad stream split at ${k}`).toBe(true);
      expect(res.body.slice(bad.length)).toContain(TRUNCATION_CODE);
    }
    expect(h.gateway.backend("a")?.consecutiveFailures).toBe(bad.length - 1);
  });
});

describe("mid-stream failures in the metrics", () => {
  let a: FixtureBackend;
  let b: FixtureBackend;
  let h: Harness;

  beforeAll(async () => {
    a = await FixtureBackend.start("a");
    b = await FixtureBackend.start("b");
    h = await startHarness(
      { main: [a], other: [b] },
      { ttftTimeoutMs: 300, stallTimeoutMs: 300, ejectAfterFailures: 1000 },
    );
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

  it("cut and stall are counted as upstream errors and as incomplete requests, never as plain successes", async () => {
    await a.set({ fault: "cutMidStream", chunks: 3 });
    expect((await post(`${h.url}/v1/chat/completions`, chat("m", true))).status).toBe(200);
    await a.set({ fault: "stallMidStream", chunks: 3 });
    expect((await post(`${h.url}/v1/chat/completions`, chat("m", true))).status).toBe(200);
    await a.set({ fault: "none" });
    expect((await post(`${h.url}/v1/chat/completions`, chat("m", true))).status).toBe(200);
    expect(await settled(h.gateway)).toBe(0);
    const text = await h.gateway.metrics.registry.metrics();
    expect(text).toContain('switchyard_gateway_upstream_errors_total{service="m",backend="a",reason="cut"} 1');
    expect(text).toContain('switchyard_gateway_upstream_errors_total{service="m",backend="a",reason="stall"} 1');
    expect(text).toContain(
      'switchyard_gateway_requests_total{service="m",backend="a",status="200",result="incomplete"} 2',
    );
    expect(text).toContain(
      'switchyard_gateway_requests_total{service="m",backend="a",status="200",result="complete"} 1',
    );
  });

  it("an upstream 429 passed through is counted against its backend, not backend=none", async () => {
    await a.set({ fault: "status429", retryAfterS: 0 });
    await b.set({ fault: "status429", retryAfterS: 0 });
    const res = await post(`${h.url}/v1/chat/completions`, chat());
    expect(res.status).toBe(429);
    const text = await h.gateway.metrics.registry.metrics();
    expect(text).toMatch(
      /switchyard_gateway_requests_total\{service="m",backend="[ab]",status="429",result="complete"\} 1/,
    );
    expect(text).not.toMatch(/switchyard_gateway_requests_total\{[^}]*backend="none",status="429"/);
  });
});
