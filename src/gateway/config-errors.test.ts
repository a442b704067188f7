/** services.yaml errors read like every other config file's: `file:line:col: path: message (fix: ...)`. */
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { SpecError } from "../core/spec-errors.js";
import { loadServicesFile, parseServicesYaml, ServicesConfigError } from "./config.js";

function errorOf(text: string): ServicesConfigError {
  try {
    parseServicesYaml(text, "/srv/services.yaml");
  } catch (err) {
    if (err instanceof ServicesConfigError) return err;
    throw err;
  }
  throw new Error("expected a ServicesConfigError");
}

const lines = (err: SpecError) => err.message.split("\n");

const valid = `services:
  - model: m
    pools:
      - name: ascend
        replicas:
          count: 2
          engine: vllm
          command: [python3, serve.py, --port, "{port}"]
          port: 8100
`;

describe("services file errors", () => {
  it("the file from the report: missing model and pools, `name` explained, `replcas` placed where it belongs", () => {
    const err = errorOf("services: [{ name: x, replcas: 2 }]\n");
    expect(err).toBeInstanceOf(SpecError);
    expect(lines(err)).toEqual([
      "/srv/services.yaml:1:12: services[0].model: is required (fix: add this field (string))",
      "/srv/services.yaml:1:12: services[0].pools: is required (fix: add this field (array))",
      "/srv/services.yaml:1:14: services[0].name: unknown key " +
        '"name" (fix: a service is named by the model name clients ask for: write model: <name> (name: names a pool, under pools[]))',
      '/srv/services.yaml:1:23: services[0].replcas: unknown key "replcas" (fix: did you mean "replicas"? it belongs at services[0].pools[].replicas)',
    ]);
  });

  it("replicas written on the service, not its pool, says where they go", () => {
    const err = errorOf(valid.replace("  - model: m\n", "  - model: m\n    replicas: 2\n"));
    expect(err.message).toBe(
      '/srv/services.yaml:3:5: services[0].replicas: unknown key "replicas" (fix: replicas belong to a pool: pools: [{ name: <pool>, replicas: { count: 2, engine: ..., command: [...], port: ... } }])',
    );
  });

  it("a typo deep in an array: line:col and did-you-mean", () => {
    const err = errorOf(valid.replace("port: 8100", "port: 8100\n          readyTimoutS: 60"));
    expect(err.message).toBe(
      '/srv/services.yaml:10:11: services[0].pools[0].replicas.readyTimoutS: unknown key "readyTimoutS" (fix: did you mean "readyTimeoutS"?)',
    );
  });

  it("a wrong type and a bad enum value name what they got", () => {
    expect(errorOf(valid.replace("count: 2", "count: two")).message).toBe(
      '/srv/services.yaml:6:18: services[0].pools[0].replicas.count: expected number, got string "two" (fix: write a number here)',
    );
    expect(errorOf(valid.replace("engine: vllm", "engine: vllm-ascnd")).message).toBe(
      '/srv/services.yaml:7:19: services[0].pools[0].replicas.engine: must be one of "vllm", "vllm-ascend", "mindie", "llamacpp", "openai-generic", got string "vllm-ascnd" (fix: did you mean "vllm-ascend"?)',
    );
  });

  it("a missing required field points at its parent", () => {
    expect(errorOf(valid.replace("          port: 8100\n", "")).message).toBe(
      "/srv/services.yaml:6:11: services[0].pools[0].replicas.port: is required (fix: add this field (number))",
    );
  });

  it("a YAML syntax error has its line and column", () => {
    const err = errorOf("services:\n  - model: m\n    pools: [{ name: p\n");
    expect(lines(err)[0]).toBe(
      "/srv/services.yaml:4:1: invalid YAML: Flow map in block collection must be sufficiently indented and end with a } (fix: correct the YAML syntax at this position)",
    );
  });

  it("problems found after validation are positioned too", () => {
    const err = errorOf(`services:
  - model: m
    pools:
      - { name: p, backends: [{ id: x, url: "http://a:1", engine: vllm }] }
      - { name: q }
  - model: n
    aliases: [m]
    pools:
      - { name: p, backends: [{ id: x, url: "http://a:1", engine: vllm }] }
`);
    expect(lines(err)).toEqual([
      "/srv/services.yaml:5:9: services[0].pools[1]: has neither backends nor replicas (fix: add a backends: list or a replicas: block)",
      '/srv/services.yaml:7:15: services[1].aliases[0]: model name "m" is already used by services[0] (fix: give every model and alias a name of its own)',
      '/srv/services.yaml:9:37: services[1].pools[0].backends[0].id: "x" is already used (fix: give every backend an id of its own)',
    ]);
  });

  it("an unreadable file names itself", () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "sy-svcerr-"));
    try {
      let err: unknown;
      try {
        loadServicesFile(path.join(dir, "none.yaml"));
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ServicesConfigError);
      expect((err as Error).message).toBe(
        `${dir}/none.yaml: the services file does not exist (fix: pass the path of an existing services YAML file)`,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
