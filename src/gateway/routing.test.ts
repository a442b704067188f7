/** Routing and health: tiers, spillover, least outstanding, passive ejection, half-open recovery, active probes. */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { FixtureBackend } from "./testing/fixture-backend.js";
import { chat, post, settled, startHarness, type Harness } from "./testing/harness.js";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe("tiers and spillover", () => {
  let a: FixtureBackend;
  let b: FixtureBackend;
  let h: Harness;

  beforeAll(async () => {
    a = await FixtureBackend.start("a");
    b = await FixtureBackend.start("b");
    h = await startHarness({ preferred: [a], fallback: [b] }, {}, { queueThreshold: 4 });
  });
  afterAll(async () => {
    await h.close();
    await a.close();
    await b.close();
  });
  beforeEach(async () => {
    await a.reset();
    await b.reset();
    await h.gateway.probeAll();
  });
  afterEach(async () => {
    expect(await settled(h.gateway)).toBe(0);
  });

  it("sends everything to the preferred pool while it is healthy and not saturated", async () => {
    for (let i = 0; i < 5; i++) await post(`${h.url}/v1/chat/completions`, chat());
    expect(a.completions).toBe(5);
    expect(b.completions).toBe(0);
  });

  it("spills over to the next pool when the engine queue of the preferred pool is over the threshold", async () => {
    await a.set({ waiting: 10 });
    await h.gateway.probeAll();
    expect(h.gateway.backend("a")?.waiting).toBe(10);
    const res = await post(`${h.url}/v1/chat/completions`, chat());
    expect(res.headers["x-switchyard-backend"]).toBe("b");
    expect(await h.gateway.metrics.registry.metrics()).toMatch(
      /switchyard_gateway_spillovers_total\{service="m",to_pool="fallback"\} [1-9]/,
    );
    // Queue drains: traffic returns.
    await a.set({ waiting: 0 });
    await h.gateway.probeAll();
    expect((await post(`${h.url}/v1/chat/completions`, chat())).headers["x-switchyard-backend"]).toBe("a");
  });

  it("when every pool is saturated, the preferred pool still takes the request", async () => {
    await a.set({ waiting: 10 });
    await b.set({ waiting: 10 });
    await h.gateway.probeAll();
    expect((await post(`${h.url}/v1/chat/completions`, chat())).headers["x-switchyard-backend"]).toBe("a");
  });

  it("an unhealthy /health takes a backend out after the probe threshold, and a good probe brings it back", async () => {
    await a.set({ fault: "unhealthy" });
    await h.gateway.probeAll();
    await h.gateway.probeAll();
    expect(h.gateway.backend("a")?.state).toBe("down");
    expect((await post(`${h.url}/v1/chat/completions`, chat())).headers["x-switchyard-backend"]).toBe("b");
    await a.set({ fault: "none" });
    await h.gateway.probeAll();
    expect(h.gateway.backend("a")?.state).toBe("healthy");
  });
});

describe("least outstanding within a pool", () => {
  let a: FixtureBackend;
  let b: FixtureBackend;
  let h: Harness;

  beforeAll(async () => {
    a = await FixtureBackend.start("a");
    b = await FixtureBackend.start("b");
    h = await startHarness({ pool: [a, b] });
  });
  afterAll(async () => {
    await h.close();
    await a.close();
    await b.close();
  });

  it("sends new requests to the backend with fewer requests in flight", async () => {
    // b answers slowly, a at once: once b holds one request, everything else must go to a (round robin would not).
    await b.set({ firstByteDelayMs: 800 });
    const answers: Promise<unknown>[] = [];
    for (let i = 0; i < 6; i++) {
      const p = post(`${h.url}/v1/chat/completions`, chat());
      answers.push(p);
      await Promise.race([p, sleep(100)]);
    }
    expect(b.completions).toBe(1);
    expect(a.completions).toBe(5);
    await Promise.all(answers);
    expect(await settled(h.gateway)).toBe(0);
  });
});

describe("passive ejection and half-open recovery", () => {
  let a: FixtureBackend;
  let b: FixtureBackend;
  let h: Harness;

  beforeAll(async () => {
    a = await FixtureBackend.start("a");
    b = await FixtureBackend.start("b");
    h = await startHarness({ preferred: [a], fallback: [b] }, { ejectAfterFailures: 2, ejectCooldownMs: 300 });
  });
  afterAll(async () => {
    await h.close();
    await a.close();
    await b.close();
  });
  afterEach(async () => {
    expect(await settled(h.gateway)).toBe(0);
  });

  it("ejects after consecutive failures, admits exactly one trial after the cooldown, and recovers on success", async () => {
    await a.set({ fault: "status500" });
    await post(`${h.url}/v1/chat/completions`, chat());
    await post(`${h.url}/v1/chat/completions`, chat());
    expect(a.completions).toBe(2);
    expect(h.gateway.backend("a")?.state).toBe("ejected");
    // Ejected: requests go straight to the fallback, the preferred backend sees nothing.
    for (let i = 0; i < 3; i++) expect((await post(`${h.url}/v1/chat/completions`, chat())).status).toBe(200);
    expect(a.completions).toBe(2);

    await sleep(350);
    expect(h.gateway.backend("a")?.state).toBe("half-open");
    // Half-open trial fails: ejected again for longer.
    await post(`${h.url}/v1/chat/completions`, chat());
    expect(a.completions).toBe(3);
    expect(h.gateway.backend("a")?.state).toBe("ejected");

    await a.set({ fault: "none", firstByteDelayMs: 200 });
    await sleep(650);
    expect(h.gateway.backend("a")?.state).toBe("half-open");
    // Five concurrent requests: only one is the trial, the rest go to the fallback.
    const answers = await Promise.all(Array.from({ length: 5 }, () => post(`${h.url}/v1/chat/completions`, chat())));
    expect(answers.filter((r) => r.headers["x-switchyard-backend"] === "a")).toHaveLength(1);
    expect(answers.every((r) => r.status === 200)).toBe(true);
    expect(h.gateway.backend("a")?.state).toBe("healthy");
    await a.set({ firstByteDelayMs: 0 });
    expect((await post(`${h.url}/v1/chat/completions`, chat())).headers["x-switchyard-backend"]).toBe("a");
  });
});

describe("runtime registration (for supervised replicas)", () => {
  let a: FixtureBackend;
  let b: FixtureBackend;
  let h: Harness;

  beforeAll(async () => {
    a = await FixtureBackend.start("a");
    b = await FixtureBackend.start("b");
    h = await startHarness({ preferred: [a] });
  });
  afterAll(async () => {
    await h.close();
    await a.close();
    await b.close();
  });

  it("routes to a backend registered at runtime and stops after it is unregistered", async () => {
    const id = h.gateway.registerBackend({
      service: "m",
      pool: "replicas",
      url: b.url,
      engine: "vllm",
      poolPriority: -1,
    });
    expect(h.gateway.backend(id)?.pool).toBe("replicas");
    expect((await post(`${h.url}/v1/chat/completions`, chat())).headers["x-switchyard-backend"]).toBe(id);
    expect(await h.gateway.unregisterBackend(id)).toBe(true);
    expect((await post(`${h.url}/v1/chat/completions`, chat())).headers["x-switchyard-backend"]).toBe("a");
    expect(h.gateway.backends().map((s) => s.id)).toEqual(["a"]);
  });

  it("a backend unregistered mid-stream finishes the stream it is serving", async () => {
    await b.set({ chunks: 5, chunkDelayMs: 30 });
    const id = h.gateway.registerBackend({
      service: "m",
      pool: "replicas",
      url: b.url,
      engine: "vllm",
      poolPriority: -1,
    });
    const pending = post(`${h.url}/v1/chat/completions`, chat("m", true));
    while (h.gateway.inFlight() < 1) await sleep(5);
    await h.gateway.unregisterBackend(id);
    const res = await pending;
    expect(res.body.endsWith("data: [DONE]\n\n")).toBe(true);
    expect(await settled(h.gateway)).toBe(0);
  });

  it("refuses registration for an unknown service with a message saying what to do", () => {
    expect(() => h.gateway.registerBackend({ service: "x", pool: "p", url: b.url, engine: "vllm" })).toThrow(
      'unknown service "x"; add it with addService() first',
    );
  });
});
