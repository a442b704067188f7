/**
 * The per-request bookkeeping of the proxy path, kept lean (bench/gateway/cpu.ts measures what it costs): one "close"
 * listener per client request does what a listener added and removed per upstream attempt used to do, and still
 * aborts the upstream call when the client leaves.
 */
import { createServer, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { request } from "undici";
import { compileServices } from "./config.js";
import { Gateway } from "./gateway.js";
import { chat, settled } from "./testing/harness.js";
import { FixtureBackend } from "./testing/fixture-backend.js";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe("the proxy path's per-request bookkeeping", () => {
  let a: FixtureBackend;
  let b: FixtureBackend;
  let gateway: Gateway;
  let server: Server;
  let url: string;
  /** The gateway's responses, as its handler got them. */
  const responses: ServerResponse[] = [];

  beforeAll(async () => {
    a = await FixtureBackend.start("a");
    b = await FixtureBackend.start("b");
    const config = compileServices({
      gateway: {},
      services: [
        {
          model: "m",
          aliases: [],
          pools: [
            { name: "p1", backends: [{ id: "a", url: a.url, engine: "vllm" }] },
            { name: "p2", backends: [{ id: "b", url: b.url, engine: "vllm" }] },
          ],
        },
      ],
    });
    gateway = new Gateway(config, { settings: { ejectAfterFailures: 100 } });
    server = createServer((req, res) => {
      responses.push(res);
      gateway.handle(req, res);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await gateway.close();
    await a.close();
    await b.close();
  });
  afterEach(async () => {
    responses.length = 0;
    await a.reset();
    await b.reset();
  });

  it("a request retried on another backend holds one close listener on its response, during and after each attempt", async () => {
    await a.set({ fault: "status500" });
    await b.set({ firstByteDelayMs: 400 });
    const answer = request(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(chat()),
    });
    // While the second attempt waits for b's first byte, the first attempt (a's 500) is over.
    const until = Date.now() + 2000;
    while (b.completions === 0 && Date.now() < until) await sleep(5);
    expect(b.completions).toBe(1);
    expect(a.completions).toBe(1);
    const res = responses[0]!;
    let most = 0;
    while (!res.writableFinished && Date.now() < until) {
      most = Math.max(most, res.listenerCount("close"));
      await sleep(5);
    }
    const answered = await answer;
    expect(answered.statusCode).toBe(200);
    expect(answered.headers["x-switchyard-backend"]).toBe("b");
    await answered.body.text();
    expect(most).toBe(1);
  });

  it("a client that leaves before the first byte aborts the upstream call at once (it does not wait for the answer)", async () => {
    await a.set({ firstByteDelayMs: 3000 });
    await b.set({ firstByteDelayMs: 3000 });
    const controller = new AbortController();
    const answer = request(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(chat()),
      signal: controller.signal,
    }).catch((err: unknown) => err);
    const until = Date.now() + 2000;
    while (gateway.inFlight() === 0 && Date.now() < until) await sleep(5);
    expect(gateway.inFlight()).toBe(1);
    controller.abort();
    await answer;
    // Well before the backend's 3 s first byte: the call was aborted, the in-flight slot freed, no retry made.
    expect(await settled(gateway, 1000)).toBe(0);
    expect(a.completions + b.completions).toBe(1);
    expect(gateway.openRequests()).toBe(0);
  });
});

describe("buffered answers are relayed byte for byte, written in one piece or not", () => {
  let backend: Server;
  let gateway: Gateway;
  let server: Server;
  let url: string;
  /** Every byte value, then invalid UTF-8 and a multi-byte character, repeated to the size asked for. */
  const bytes = (size: number): Buffer => {
    const unit = Buffer.concat([
      Buffer.from(Array.from({ length: 256 }, (_, i) => i)),
      Buffer.from([0xc3, 0x28, 0xe2, 0x82]),
      Buffer.from("é€😀", "utf8"),
    ]);
    return Buffer.concat(Array.from({ length: Math.ceil(size / unit.length) }, () => unit)).subarray(0, size);
  };

  beforeAll(async () => {
    backend = createServer((req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => (body += c.toString("utf8")));
      req.on("end", () => {
        const size = (JSON.parse(body) as { size: number }).size;
        const answer = bytes(size);
        res.writeHead(200, { "content-type": "application/octet-stream", "content-length": answer.length });
        res.end(answer);
      });
    });
    await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
    const backendUrl = `http://127.0.0.1:${(backend.address() as AddressInfo).port}`;
    const config = compileServices({
      gateway: {},
      services: [
        { model: "m", aliases: [], pools: [{ name: "p", backends: [{ id: "raw", url: backendUrl, engine: "vllm" }] }] },
      ],
    });
    gateway = new Gateway(config);
    server = createServer(gateway.handle);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await gateway.close();
    backend.closeAllConnections();
    await new Promise((r) => backend.close(r));
  });

  for (const size of [0, 1, 300, 16 * 1024, 16 * 1024 + 1, 200_000]) {
    it(`${size} bytes`, async () => {
      const res = await request(`${url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "m", size }),
      });
      const got = Buffer.from(await res.body.arrayBuffer());
      expect(res.statusCode).toBe(200);
      expect(res.headers["content-length"]).toBe(String(size));
      expect(res.headers["content-type"]).toBe("application/octet-stream");
      expect(got.equals(bytes(size))).toBe(true);
    });
  }
});
