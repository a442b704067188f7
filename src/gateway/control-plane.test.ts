/** A control plane's backend set onto the gateway: what is registered, what is skipped and why, what a change does. */
import { afterEach, describe, expect, it } from "vitest";
import { registrationsFromSet } from "./control-plane.js";
import type { BackendSet } from "./control-plane-source.js";
import { Gateway } from "./gateway.js";
import { listenGateway, type ListeningGateway } from "./server.js";
import { FixtureBackend } from "./testing/fixture-backend.js";
import { chat, post } from "./testing/harness.js";

function set(backends: BackendSet["services"][number]["backends"], version = 1): BackendSet {
  return {
    version,
    epoch: "e",
    services: [{ name: "m", aliases: ["m2"], pools: [{ name: "p", priority: 3, queueThreshold: 7 }], backends }],
  };
}

describe("registrationsFromSet", () => {
  it("registers ready backends with their pool's priority and threshold; skips draining ones, unknown engines and unset key variables, saying why", () => {
    const warnings: string[] = [];
    const logger = { info: () => undefined, warn: (_f: object, msg: string) => warnings.push(msg) };
    const list = registrationsFromSet(
      set([
        { id: "a", url: "http://127.0.0.1:1", pool: "p", engine: "vllm", state: "ready", model: "m", servedModel: "x" },
        { id: "b", url: "http://127.0.0.1:2", pool: "p", engine: "vllm", state: "draining", model: "m" },
        { id: "c", url: "http://127.0.0.1:3", pool: "p", engine: "tgi", state: "ready", model: "m" },
        {
          id: "d",
          url: "http://127.0.0.1:4",
          pool: "p",
          engine: "vllm",
          state: "ready",
          model: "m",
          apiKeyEnv: "NOPE",
        },
        { id: "e", url: "http://127.0.0.1:5", pool: "p", engine: "mindie", state: "ready", model: "m", apiKeyEnv: "K" },
      ]),
      { K: "secret" },
      logger,
    );
    expect(list.map((b) => b.id)).toEqual(["a", "e"]);
    expect(list[0]).toMatchObject({
      service: "m",
      aliases: ["m2"],
      poolPriority: 3,
      poolQueueThreshold: 7,
      servedModel: "x",
    });
    expect(list[1]!.apiKey).toBe("secret");
    expect(warnings.join("\n")).toMatch(/backend c skipped: engine "tgi"/);
    expect(warnings.join("\n")).toMatch(/backend d skipped: environment variable NOPE \(apiKeyEnv\) is not set/);
    expect(warnings.join("\n")).not.toContain("secret");
  });
});

describe("Gateway.setBackends", () => {
  let fixtures: FixtureBackend[] = [];
  let gw: Gateway | undefined;
  let http: ListeningGateway | undefined;
  afterEach(async () => {
    await http?.close();
    await gw?.close();
    for (const f of fixtures) await f.close();
    fixtures = [];
  });

  it("a backend that leaves the set gets nothing new while its stream in flight finishes; the new one takes over", async () => {
    const a = await FixtureBackend.start("a", { chunks: 10, chunkDelayMs: 100 });
    const b = await FixtureBackend.start("b");
    fixtures = [a, b];
    gw = new Gateway(undefined);
    http = await listenGateway(gw, { port: 0 });
    const entry = (f: FixtureBackend): BackendSet["services"][number]["backends"][number] => ({
      id: f.name,
      url: f.url,
      pool: "p",
      engine: "vllm",
      state: "ready",
      model: "m",
    });
    await gw.setBackends(registrationsFromSet(set([entry(a)]), {}));
    const stream = post(`${http.url}/v1/chat/completions`, chat("m2", true));
    await new Promise((r) => setTimeout(r, 300));
    await gw.setBackends(registrationsFromSet(set([entry(b)], 2), {}));
    const r = await post(`${http.url}/v1/chat/completions`, chat("m"));
    expect(r.headers["x-switchyard-backend"]).toBe("b");
    const s = await stream;
    expect(s.headers["x-switchyard-backend"]).toBe("a");
    expect(s.body.trimEnd().endsWith("data: [DONE]")).toBe(true);
    expect(gw.backends().map((x) => x.id)).toEqual(["b"]);
  });
});
