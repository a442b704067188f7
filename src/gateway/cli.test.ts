/**
 * `switchyard gateway` and `serve` through the CLI's own entry point (main): keys files, exit codes, the messages
 * that name the file and the fix, and the console modes. Commands that would serve are run with --check.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { main } from "../cli/main.js";
import { consoleLogger, consoleMode, humanLine } from "../cli/commands/gateway.js";

const production = fileURLToPath(new URL("../../examples/gateway/production.yaml", import.meta.url));
const local = fileURLToPath(new URL("../../examples/gateway/local.yaml", import.meta.url));
const serveExample = fileURLToPath(new URL("../../examples/gateway/serve-chargpt.yaml", import.meta.url));

interface Ran {
  code: number;
  out: string;
  err: string;
}

async function run(args: string[]): Promise<Ran> {
  let out = "";
  let err = "";
  const o = vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
    out += String(chunk);
    return true;
  });
  const e = vi.spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
    err += String(chunk);
    return true;
  });
  const c = vi.spyOn(console, "error").mockImplementation((...a: unknown[]) => {
    err += `${a.map(String).join(" ")}\n`;
  });
  try {
    const code = await main(["node", "switchyard", ...args]);
    return { code, out, err };
  } finally {
    o.mockRestore();
    e.mockRestore();
    c.mockRestore();
  }
}

describe("switchyard gateway CLI", () => {
  const home = mkdtempSync(join(tmpdir(), "sy-gw-home-"));
  const saved = process.env.SWITCHYARD_HOME;
  beforeEach(() => {
    process.env.SWITCHYARD_HOME = home;
    process.env.MINDIE_API_KEY = "k";
  });
  afterEach(() => {
    if (saved === undefined) delete process.env.SWITCHYARD_HOME;
    else process.env.SWITCHYARD_HOME = saved;
    delete process.env.MINDIE_API_KEY;
    rmSync(join(home, "gateway-keys.json"), { force: true });
  });
  afterAll(() => rmSync(home, { recursive: true, force: true }));

  it("checks the local example as shipped: no variables, no keys needed", async () => {
    delete process.env.MINDIE_API_KEY;
    const r = await run(["gateway", local, "--check"]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/local\.yaml: OK — 1 service\(s\), 2 backend\(s\); no API keys \(open\)/);
  });

  it("an open gateway beyond loopback needs --no-auth, and says how to add a key otherwise", async () => {
    const refused = await run(["gateway", local, "--check", "--host", "0.0.0.0"]);
    expect(refused.code).toBe(2);
    expect(refused.err).toMatch(/refusing to listen on 0\.0\.0\.0 without API keys.*fix: .*keys add.*--no-auth/);
    const open = await run(["gateway", local, "--check", "--host", "0.0.0.0", "--no-auth"]);
    expect(open.code).toBe(0);
    expect(open.out).toContain("no API keys (open)");
  });

  it("keys add/list/revoke honour --keys-file, and never touch the default file then", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sy-gw-keys-"));
    const file = join(dir, "team-keys.json");
    try {
      const added = await run(["gateway", "keys", "add", "alice", "--rpm", "30", "--keys-file", file]);
      expect(added.code).toBe(0);
      const key = added.out.trim();
      expect(key).toMatch(/^sy-/);
      expect(existsSync(file)).toBe(true);
      expect(existsSync(join(home, "gateway-keys.json"))).toBe(false);
      expect(readFileSync(file, "utf8")).not.toContain(key);
      const list = await run(["gateway", "keys", "list", "--keys-file", file]);
      expect(list.out).toMatch(/alice\s+sy-\S+…\s+30\s+-\s+\S+\s+active/);
      const json = await run(["gateway", "keys", "list", "--keys-file", file, "--json"]);
      expect((JSON.parse(json.out) as Array<{ name: string }>).map((k) => k.name)).toEqual(["alice"]);
      // The default file holds nothing.
      expect((await run(["gateway", "keys", "list"])).out).not.toContain("alice");
      // With that file, the gateway runs with keys, also beyond loopback.
      const check = await run(["gateway", local, "--check", "--host", "0.0.0.0", "--keys-file", file]);
      expect(check.code).toBe(0);
      expect(check.out).toContain("1 API key(s)");
      expect((await run(["gateway", "keys", "revoke", "alice", "--keys-file", file])).out).toMatch(
        /^revoked \S+ \(alice\)/,
      );
      const again = await run(["gateway", "keys", "revoke", "alice", "--keys-file", file]);
      expect(again.code).toBe(2);
      expect(again.err).toContain(`no active key "alice" in ${file}`);
      // Only a revoked key left: naming the file would mean refusing every request.
      const empty = await run(["gateway", local, "--check", "--keys-file", file]);
      expect(empty.code).toBe(2);
      expect(empty.err).toMatch(/holds no active key.*fix: add one with `switchyard gateway keys add/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a named keys file that is missing is an error that says how to create it (gateway, serve, keys list)", async () => {
    const missing = join(home, "nope-keys.json");
    for (const args of [
      ["gateway", local, "--check", "--keys-file", missing],
      ["serve", serveExample, "--check", "--keys-file", missing],
    ]) {
      const r = await run(args);
      expect(r.code).toBe(2);
      expect(r.err).toContain(`keys file ${missing} (--keys-file) does not exist`);
      expect(r.err).toContain(`fix: create it with \`switchyard gateway keys add <name> --keys-file ${missing}\``);
    }
    const list = await run(["gateway", "keys", "list", "--keys-file", missing]);
    expect(list.code).toBe(2);
  });

  it("adds keys to the default file under SWITCHYARD_HOME, which the gateway then uses", async () => {
    const key = (await run(["gateway", "keys", "add", "bob"])).out.trim();
    expect(key).toMatch(/^sy-/);
    expect(readFileSync(join(home, "gateway-keys.json"), "utf8")).toContain('"name": "bob"');
    expect((await run(["gateway", local, "--check", "--host", "0.0.0.0"])).out).toContain("1 API key(s)");
  });

  it("a services file that does not exist is bad input naming the file (gateway and serve)", async () => {
    for (const cmd of ["gateway", "serve"]) {
      const r = await run([cmd, "nope.yaml"]);
      expect(r.code).toBe(2);
      expect(r.err).toMatch(/^switchyard: services file nope\.yaml does not exist \(fix: /);
    }
    const json = await run(["--json", "serve", "nope.yaml"]);
    expect(json.code).toBe(2);
    expect(JSON.parse(json.err.trim())).toMatchObject({ error: "services file nope.yaml does not exist", exitCode: 2 });
  });

  it("an invalid services file is bad input naming the file and the field", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sy-gw-bad-"));
    try {
      const bad = join(dir, "bad.yaml");
      writeFileSync(
        bad,
        "services:\n  - model: m\n    pools: [{ name: p, backends: [{ url: nope, engine: vllm }] }]\n",
      );
      const r = await run(["gateway", bad, "--check"]);
      expect(r.code).toBe(2);
      expect(r.err).toBe(
        `switchyard: ${bad}:3:42: services[0].pools[0].backends[0].url: must be an http:// or https:// URL, got string "nope" (fix: write the server root, e.g. http://127.0.0.1:8000)\n`,
      );
      const json = await run(["--json", "gateway", bad, "--check"]);
      expect(json.code).toBe(2);
      expect(JSON.parse(json.err.trim())).toMatchObject({
        exitCode: 2,
        issues: [{ file: bad, line: 3, column: 42, path: "services[0].pools[0].backends[0].url" }],
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a missing apiKeyEnv variable is bad input naming the variable and the services file", async () => {
    delete process.env.MINDIE_API_KEY;
    const r = await run(["gateway", production, "--check"]);
    expect(r.code).toBe(2);
    expect(r.err).toContain(
      `switchyard: ${production}: backend ascend-mindie-0: environment variable MINDIE_API_KEY (apiKeyEnv) is not set`,
    );
    expect(r.err).toContain("fix: export MINDIE_API_KEY=");
    const s = await run(["serve", production, "--check"]);
    expect(s.code).toBe(2);
    expect(s.err).toContain("MINDIE_API_KEY");
    expect(s.err).toContain(production);
  });

  it("serve on a file without replicas: blocks is bad input that points at gateway", async () => {
    const r = await run(["serve", local, "--check"]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/no pool has a replicas: block.*fix: use `switchyard gateway/);
  });

  it("a port in use is bad input with a fix", async () => {
    const { createServer } = await import("node:net");
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    const port = (blocker.address() as { port: number }).port;
    try {
      const r = await run(["gateway", local, "--port", String(port)]);
      expect(r.code).toBe(2);
      expect(r.err).toMatch(new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: the address is in use.*--port`));
    } finally {
      blocker.close();
    }
  });

  it("bad --workers, --cors-origin and TLS flags are bad input naming the flag and the fix, before serving", async () => {
    const workers = await run(["gateway", local, "--workers", "0"]);
    expect(workers.code).toBe(2);
    expect(workers.err).toMatch(/--workers.*a count 1-64, or auto/);
    const origin = await run(["gateway", local, "--cors-origin", "https://app.example.com/"]);
    expect(origin.code).toBe(2);
    expect(origin.err).toMatch(/is not an origin: write scheme:\/\/host\[:port\]/);
    const tls = await run(["gateway", local, "--tls-key", local]);
    expect(tls.code).toBe(2);
    expect(tls.err).toMatch(/--tls-key given without --tls-cert \(fix: pass both --tls-cert <cert.pem> and --tls-key/);
    const notPem = await run(["gateway", local, "--tls-cert", local, "--tls-key", local, "--check"]);
    expect(notPem.code).toBe(2);
    expect(notPem.err).toMatch(/--tls-cert .*local\.yaml holds no PEM certificate/);
  });

  it("keys add --tpm stores a tokens-per-minute limit that keys list shows", async () => {
    const file = join(home, "tpm-keys.json");
    expect((await run(["gateway", "keys", "add", "bulk", "--tpm", "50000", "--keys-file", file])).code).toBe(0);
    const list = await run(["gateway", "keys", "list", "--keys-file", file]);
    expect(list.out).toMatch(/bulk\s+sy-\S+…\s+-\s+50000\s+\S+\s+active/);
  });
});

describe("console output of gateway and serve", () => {
  it("is JSON with --json or when stdout is not a terminal, human on a terminal", () => {
    expect(consoleMode(false, { isTTY: true })).toBe("human");
    expect(consoleMode(true, { isTTY: true })).toBe("json");
    expect(consoleMode(false, { isTTY: false })).toBe("json");
    expect(consoleMode(false, {})).toBe("json");
  });

  function capture(mode: "human" | "json"): { lines: string[]; logger: ReturnType<typeof consoleLogger> } {
    const lines: string[] = [];
    const out = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(...chunk.toString("utf8").split("\n").filter(Boolean));
        cb();
      },
    });
    return { lines, logger: consoleLogger(mode, "info", out) };
  }

  const emitAll = (logger: ReturnType<typeof consoleLogger>): void => {
    logger.info({ url: "http://127.0.0.1:8080" }, "switchyard gateway listening on http://127.0.0.1:8080");
    logger.info(
      {
        reqId: "r1",
        method: "POST",
        path: "/v1/completions",
        model: "chargpt",
        stream: true,
        status: 200,
        result: "incomplete",
        backend: "b1",
        attempts: 2,
        failure: "cut",
        ms: 12.5,
      },
      "request",
    );
    logger.warn({ event: "warning" }, "replica chargpt/local-ascend-0 [local-ascend] warning: its log says: WARNING x");
  };

  it("JSON mode: every line is a JSON record", () => {
    const { lines, logger } = capture("json");
    emitAll(logger);
    expect(lines).toHaveLength(3);
    for (const l of lines) expect(() => JSON.parse(l) as unknown).not.toThrow();
  });

  it("human mode: no line is JSON; requests and warnings read as sentences", () => {
    const { lines, logger } = capture("human");
    emitAll(logger);
    expect(lines).toHaveLength(3);
    for (const l of lines) expect(l.trimStart().startsWith("{")).toBe(false);
    expect(lines[0]).toMatch(/^\d\d:\d\d:\d\d switchyard gateway listening on http:\/\/127\.0\.0\.1:8080$/);
    expect(lines[1]).toMatch(
      /POST \/v1\/completions {2}model=chargpt stream {2}200 incomplete {2}via b1 {2}12\.5 ms {2}attempts=2 {2}failure=cut/,
    );
    expect(lines[2]).toMatch(/WARN replica chargpt\/local-ascend-0 .*WARNING x$/);
  });

  it("humanLine passes a line that is not JSON through", () => {
    expect(humanLine("plain")).toBe("plain\n");
  });
});
