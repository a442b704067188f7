import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseServicesYaml } from "./config.js";
import { rewriteModel } from "./body.js";
import { FixtureBackend } from "./testing/fixture-backend.js";
import { chat, post, startHarness, type Harness } from "./testing/harness.js";

describe("rewriteModel", () => {
  it("replaces only the top-level model string and keeps every other byte", () => {
    const text = '{ "seed": 12345678901234567890, "model" :  "alias", "x": {"model": "inner"}, "m": ["model"] }';
    expect(rewriteModel(text, "served")).toBe(
      '{ "seed": 12345678901234567890, "model" :  "served", "x": {"model": "inner"}, "m": ["model"] }',
    );
  });

  it("handles escapes in keys and values, strings that look like keys, and duplicate keys like JSON.parse", () => {
    const cases = [
      '{"a":"\\"model\\":\\"no\\"","model":"al\\"ias"}',
      '{"mod\\u0065l":"alias","messages":[{"role":"user","content":"{\\"model\\":1}"}]}',
      '{"model":"first","model":"second"}',
      '{"messages":[],"model":"alias"}',
      '{"model":"alias","stream":true}',
    ];
    for (const text of cases) {
      const out = rewriteModel(text, 'q"wen');
      const before = JSON.parse(text) as Record<string, unknown>;
      const after = JSON.parse(out) as Record<string, unknown>;
      expect(after).toEqual({ ...before, model: 'q"wen' });
    }
  });

  it("leaves a body without a string model alone", () => {
    for (const text of ['{"model":7}', '{"x":{"model":"a"}}', "{}"]) expect(rewriteModel(text, "s")).toBe(text);
  });
});

describe("model aliases reach each backend as the name it serves", () => {
  let a: FixtureBackend;
  let b: FixtureBackend;
  let h: Harness;

  beforeAll(async () => {
    a = await FixtureBackend.start("a");
    b = await FixtureBackend.start("b");
    h = await startHarness(
      { first: [a], second: [b] },
      {},
      { model: "qwen2.5-7b-instruct", aliases: ["qwen-7b"], servedModels: { b: "Qwen/Qwen2.5-7B-Instruct" } },
    );
  });
  afterAll(async () => {
    await h.close();
    await a.close();
    await b.close();
  });

  const sentModel = (f: FixtureBackend): unknown =>
    (JSON.parse(f.requests.at(-1)!.body.toString("utf8")) as { model: unknown }).model;

  it("an alias is rewritten to the service's name for a backend without servedModel", async () => {
    // A seed above 2^53 would be rounded by a JSON.parse/JSON.stringify round trip.
    const body = JSON.stringify(chat("qwen-7b")).replace(/}$/, ',"seed":12345678901234567890}');
    const res = await post(`${h.url}/v1/chat/completions`, body);
    expect(res.status).toBe(200);
    expect(sentModel(a)).toBe("qwen2.5-7b-instruct");
    // Nothing else of the body changed.
    expect(a.requests.at(-1)!.body.toString("utf8")).toBe(body.replace('"qwen-7b"', '"qwen2.5-7b-instruct"'));
  });

  it("a backend with servedModel gets its own name, for the service's name and for an alias", async () => {
    await a.set({ fault: "refuse" });
    try {
      for (const asked of ["qwen2.5-7b-instruct", "qwen-7b"]) {
        const res = await post(`${h.url}/v1/chat/completions`, chat(asked, true));
        expect(res.status).toBe(200);
        expect(res.headers["x-switchyard-backend"]).toBe("b");
        expect(sentModel(b)).toBe("Qwen/Qwen2.5-7B-Instruct");
      }
    } finally {
      await a.set({ fault: "none" });
    }
  });

  it("the name asked for is forwarded unchanged when it is the backend's own", async () => {
    const body = JSON.stringify(chat("qwen2.5-7b-instruct"));
    await post(`${h.url}/v1/chat/completions`, body);
    expect(a.requests.at(-1)!.body.toString("utf8")).toBe(body);
  });

  it("servedModel is accepted per backend and per replicas block in services YAML", () => {
    const config = parseServicesYaml(
      [
        "services:",
        "  - model: m",
        "    pools:",
        "      - name: p",
        "        backends: [{ url: 'http://127.0.0.1:1', engine: vllm, servedModel: org/M-7B }]",
        "        replicas: { count: 1, engine: vllm, command: [x], port: 9000, servedModel: org/M-7B }",
      ].join("\n"),
    );
    expect(config.services[0]!.pools[0]!.backends[0]!.servedModel).toBe("org/M-7B");
    expect(config.services[0]!.pools[0]!.replicas!.servedModel).toBe("org/M-7B");
  });
});
