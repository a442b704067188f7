import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { defaultGatewaySettings, loadServicesFile, parseServicesYaml, ServicesConfigError } from "./config.js";
import { engineAdapter, parsePrometheusText } from "./engines.js";

const example = fileURLToPath(new URL("../../examples/gateway/production.yaml", import.meta.url));
const local = fileURLToPath(new URL("../../examples/gateway/local.yaml", import.meta.url));

describe("services config", () => {
  it("compiles the shipped example: pools in priority order, defaults filled, replicas kept for the supervisor", () => {
    const c = loadServicesFile(example);
    const qwen = c.services[0]!;
    expect(qwen.model).toBe("qwen2.5-7b-instruct");
    expect(qwen.aliases).toEqual(["qwen-7b"]);
    expect(qwen.pools.map((p) => p.name)).toEqual(["ascend", "nvidia"]);
    expect(qwen.pools[0]!.backends.map((b) => [b.id, b.engine, b.weight])).toEqual([
      ["ascend-mindie-0", "mindie", 1],
      ["ascend-vllm-0", "vllm-ascend", 2],
    ]);
    expect(qwen.pools[1]!.replicas).toMatchObject({ count: 2, engine: "vllm", port: 8100, host: "127.0.0.1" });
    expect(c.services[1]!.pools[0]!.backends[0]!.id).toBe("bge-m3/cpu/0");
    expect(c.settings.maxAttempts).toBe(3);
    expect(c.settings.unhealthyAfterProbes).toBe(defaultGatewaySettings.unhealthyAfterProbes);
  });

  it("compiles the local example: the char-GPT servers on this machine, no API key variables needed", () => {
    const c = loadServicesFile(local);
    expect(c.services.map((s) => s.model)).toEqual(["chargpt"]);
    const backends = c.services[0]!.pools.flatMap((p) => p.backends);
    expect(backends.map((b) => b.url)).toEqual(["http://127.0.0.1:8101", "http://127.0.0.1:8111"]);
    expect(backends.every((b) => b.apiKeyEnv === undefined)).toBe(true);
  });

  it("orders pools by explicit priority and drops a trailing /v1 from backend URLs", () => {
    const c = parseServicesYaml(`
services:
  - model: m
    pools:
      - { name: second, priority: 5, backends: [{ url: "http://127.0.0.1:1/v1/", engine: vllm }] }
      - { name: first, priority: 1, backends: [{ url: "http://127.0.0.1:2", engine: openai-generic }] }
`);
    expect(c.services[0]!.pools.map((p) => p.name)).toEqual(["first", "second"]);
    expect(c.services[0]!.pools[1]!.backends[0]!.url).toBe("http://127.0.0.1:1");
  });

  it("names the file and the field in validation errors", () => {
    const bad = `
services:
  - model: m
    pools:
      - name: p
        backends: [{ url: "ftp://x", engine: tensorrt }]
`;
    try {
      parseServicesYaml(bad, "svc.yaml");
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ServicesConfigError);
      const msg = (err as Error).message;
      expect(msg).toContain(
        'svc.yaml:6:27: services[0].pools[0].backends[0].url: must be an http:// or https:// URL, got string "ftp://x"',
      );
      expect(msg).toMatch(/services\[0\]\.pools\[0\]\.backends\[0\]\.engine: .*vllm/);
    }
  });

  it("rejects duplicate model names, duplicate ids, empty pools and unknown fields", () => {
    const text = `
services:
  - model: m
    pools:
      - { name: p, backends: [{ id: x, url: "http://a:1", engine: vllm }] }
      - { name: q }
  - model: n
    aliases: [m]
    pools:
      - { name: p, backends: [{ id: x, url: "http://a:1", engine: vllm }] }
`;
    expect(() => parseServicesYaml(text)).toThrow(
      /services\[1\]\.aliases\[0\]: model name "m" is already used by services\[0\]/,
    );
    expect(() => parseServicesYaml(text)).toThrow(/services\[0\]\.pools\[1\]: has neither backends nor replicas/);
    expect(() => parseServicesYaml(text)).toThrow(/backends\[0\]\.id: "x" is already used/);
    expect(() => parseServicesYaml("services: [{model: m, pools: [{name: p, replica: {}}]}]")).toThrow(/replica/);
  });

  it("validates the replicas block (argv command, port range)", () => {
    const withReplicas = (r: string): string => `services: [{model: m, pools: [{name: p, replicas: ${r}}]}]`;
    expect(() =>
      parseServicesYaml(withReplicas('{count: 2, engine: vllm, command: "vllm serve", port: 8000}')),
    ).toThrow(/replicas\.command/);
    expect(() => parseServicesYaml(withReplicas("{count: 2, engine: vllm, command: [x], port: 65535}"))).toThrow(
      /port \+ count - 1 exceeds 65535/,
    );
    const ok = parseServicesYaml(withReplicas("{count: 1, engine: vllm, command: [x, '{port}'], port: 9000}"));
    expect(ok.services[0]!.pools[0]!.replicas?.command).toEqual(["x", "{port}"]);
  });

  it("reports YAML syntax errors with the file name", () => {
    expect(() => parseServicesYaml("services: [", "s.yaml")).toThrow(/^s\.yaml:1:12: invalid YAML: /);
  });
});

describe("engine adapters", () => {
  it("sums Prometheus samples over label sets and ignores comments", () => {
    const m = parsePrometheusText(
      [
        "# HELP vllm:num_requests_waiting x",
        'vllm:num_requests_waiting{model_name="a"} 3',
        'vllm:num_requests_waiting{model_name="b",x="}"} 4 1700000000',
        "num_requests_running 2",
        "garbage",
      ].join("\n"),
    );
    expect(m.get("vllm:num_requests_waiting")).toBe(7);
    expect(m.get("num_requests_running")).toBe(2);
  });

  it("reads each engine's queue metrics under its own names", () => {
    const vllm = engineAdapter("vllm-ascend").parseLoad(
      parsePrometheusText("vllm:num_requests_waiting 5\nvllm:num_requests_running 2\nvllm:gpu_cache_usage_perc 0.5"),
    );
    expect(vllm).toEqual({ waiting: 5, running: 2, cacheUsage: 0.5 });
    const mindie = engineAdapter("mindie").parseLoad(
      parsePrometheusText("num_requests_waiting 1\nnum_requests_running 3\nrequest_failed_total 9"),
    );
    expect(mindie).toEqual({ waiting: 1, running: 3, failedTotal: 9 });
    expect(engineAdapter("openai-generic").parseLoad(new Map())).toEqual({});
  });

  it("probes cheap endpoints only, and tells llama.cpp loading from busy", () => {
    expect(engineAdapter("mindie").healthPath).toBe("/v2/health/ready");
    expect(engineAdapter("openai-generic").healthPath).toBe("/v1/models");
    const llama = engineAdapter("llamacpp");
    expect(llama.judgeHealth(503, '{"error":{"message":"Loading model"}}')).toMatchObject({ ready: false });
    expect(llama.judgeHealth(503, '{"error":{"message":"no slot available"}}')).toEqual({
      ready: true,
      saturated: true,
      detail: "no free slot",
    });
  });
});
