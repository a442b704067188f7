import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { isSameProcessAlive } from "../executors/local/procfs.js";
import { parseServicesYaml } from "./config.js";
import { Gateway } from "./gateway.js";
import {
  ReplicaSupervisor,
  replicaArgv,
  vendorOfEngine,
  type ReplicaEvent,
  type ReplicaSupervisorOptions,
} from "./replicas.js";

const fixture = fileURLToPath(new URL("./testing/replica-fixture.mjs", import.meta.url));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(what: string, probe: () => T | undefined | null | false, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** A command (argv) running the fixture replica, with extra fixture flags. */
const cmd = (...extra: string[]): string => JSON.stringify([process.execPath, fixture, "--port", "{port}", ...extra]);

interface Running {
  gateway: Gateway;
  sup: ReplicaSupervisor;
  events: ReplicaEvent[];
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function start(yaml: string, opts: Partial<ReplicaSupervisorOptions> = {}): Running {
  const config = parseServicesYaml(yaml, "test.yaml");
  const gateway = new Gateway(config);
  const runDir = mkdtempSync(path.join(tmpdir(), "sy-replicas-"));
  const events: ReplicaEvent[] = [];
  const sup = new ReplicaSupervisor({
    gateway,
    config,
    runDir,
    pollMs: 50,
    recovery: { backoffSeconds: 0.3, graceSeconds: 1 },
    onEvent: (e) => events.push(e),
    ...opts,
  });
  cleanups.push(async () => {
    await sup.stop();
    await gateway.close();
    rmSync(runDir, { recursive: true, force: true });
  });
  return { gateway, sup, events };
}

const kinds = (events: ReplicaEvent[], replica: string): string[] =>
  events.filter((e) => e.replica === replica).map((e) => e.kind);

function listenOn(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(port, "127.0.0.1", () => resolve(s));
  });
}

async function freePortPair(): Promise<number> {
  // Two consecutive free ports above an ephemeral one.
  for (;;) {
    const s = await listenOn(0);
    const p = (s.address() as { port: number }).port;
    await new Promise((r) => s.close(r));
    if (p < 65000) return p;
  }
}

describe("replica helpers", () => {
  it("substitutes {port} and {host} inside arguments and {python} as a whole argument, never via a shell", () => {
    expect(
      replicaArgv(
        ["{python}", "s.py", "--port={port}", "--host", "{host}", "$(x); {port}"],
        8100,
        "::1",
        () => "/usr/bin/python3",
      ),
    ).toEqual(["/usr/bin/python3", "s.py", "--port=8100", "--host", "::1", "$(x); 8100"]);
    expect(replicaArgv(["--checkpoint", "{home}/checkpoints/chargpt"], 1, "h", undefined, "/sy")).toEqual([
      "--checkpoint",
      "/sy/checkpoints/chargpt",
    ]);
    expect(vendorOfEngine("vllm-ascend")).toBe("ascend");
    expect(vendorOfEngine("mindie")).toBe("ascend");
    expect(vendorOfEngine("vllm")).toBe("nvidia");
    expect(vendorOfEngine("llamacpp")).toBe("cpu");
  });
});

describe("ReplicaSupervisor (local executor, fixture model servers)", () => {
  it("repeats the WARNING lines a replica logged before it was ready as warning events (for the console)", async () => {
    const base = await freePortPair();
    const { sup, events } = start(`
services:
  - model: m
    pools:
      - name: a
        replicas: { count: 1, engine: vllm, port: ${base}, command: ${cmd("--warn", "serving RANDOMLY INITIALISED weights")} }
`);
    await sup.start();
    await waitFor("a-0 ready", () => sup.replicas().find((r) => r.state === "ready"));
    const warnings = events.filter((e) => e.kind === "warning");
    expect(warnings.map((e) => e.message)).toEqual([
      "its log says: fixture replica: WARNING: serving RANDOMLY INITIALISED weights",
    ]);
    expect(events.findIndex((e) => e.kind === "ready")).toBeLessThan(events.indexOf(warnings[0]!));
  });

  it("launches count replicas per pool on free ports and registers each only once its health probe passes", async () => {
    const base = await freePortPair();
    const blocker = await listenOn(base); // a-0's configured port is taken: it must get another one
    cleanups.push(() => new Promise((r) => blocker.close(() => r())));
    const { gateway, sup, events } = start(`
services:
  - model: m
    pools:
      - name: a
        replicas: { count: 2, engine: vllm-ascend, port: ${base}, command: ${cmd("--ready-after-ms", "600", "--tag", "a b; echo $(id)")} }
      - name: b
        replicas: { count: 1, engine: vllm, port: ${base + 5}, command: ${cmd()} }
`);
    await sup.start();
    expect(kinds(events, "a-0")).toEqual(["launched"]);
    // a-* answer 503 for 600 ms: not registered before that, whatever the poll rate.
    await waitFor("b-0 ready", () => sup.replicas().find((r) => r.replica === "b-0" && r.state === "ready"));
    expect(gateway.backends().map((b) => b.id)).toEqual(["m/b/b-0"]);
    await waitFor("all ready", () => sup.replicas().every((r) => r.state === "ready"));
    const snaps = sup.replicas();
    const ports = snaps.map((r) => r.port);
    expect(new Set(ports).size).toBe(3);
    expect(snaps.find((r) => r.replica === "a-0")!.port).not.toBe(base);
    expect(snaps.find((r) => r.replica === "a-1")!.port).toBe(base + 1);
    expect(snaps.find((r) => r.replica === "b-0")!.port).toBe(base + 5);
    const backends = gateway.backends();
    expect(backends.map((b) => `${b.id} ${b.pool} ${b.engine}`).sort()).toEqual([
      "m/a/a-0 a vllm-ascend",
      "m/a/a-1 a vllm-ascend",
      "m/b/b-0 b vllm",
    ]);
    for (const r of snaps) expect(backends.find((b) => b.id === r.backendId)!.url).toBe(`http://127.0.0.1:${r.port}`);
    const launched = events.find((e) => e.replica === "a-1" && e.kind === "launched")!;
    const ready = events.find((e) => e.replica === "a-1" && e.kind === "ready")!;
    expect(ready.t - launched.t).toBeGreaterThanOrEqual(550);
    // Arguments arrive as given: nothing was parsed by a shell.
    const echo = (await (await fetch(`http://127.0.0.1:${ports[0]}/argv`)).json()) as {
      argv: string[];
      env: Record<string, string>;
    };
    expect(echo.argv).toEqual(["--port", String(ports[0]), "--ready-after-ms", "600", "--tag", "a b; echo $(id)"]);
    expect(echo.env.SWITCHYARD_REPLICA).toBe("a-0");
  });

  it("unregisters a crashed replica at once, restarts it after the backoff on its node and registers it again", async () => {
    const base = await freePortPair();
    let registeredAtExit: boolean | undefined;
    const running = start(
      `
services:
  - model: m
    pools:
      - name: a
        replicas: { count: 1, engine: vllm, port: ${base}, command: ${cmd()} }
`,
      {
        onEvent: (e) => {
          running.events.push(e);
          if (e.kind === "exited") registeredAtExit = running.gateway.backend("m/a/a-0") !== undefined;
        },
      },
    );
    const { gateway, sup, events } = running;
    await sup.start();
    await waitFor("ready", () => gateway.backend("m/a/a-0"));
    const firstPid = sup.replicas()[0]!.pid!;
    expect(sup.signalReplica("a-0", "SIGKILL")).toBe(true);
    await waitFor("exited", () => events.find((e) => e.kind === "exited"));
    expect(registeredAtExit).toBe(false);
    await waitFor("ready again", () => events.filter((e) => e.kind === "ready").length === 2);
    const exited = events.find((e) => e.kind === "exited")!;
    expect(exited.message).toMatch(/killed by SIGKILL/);
    const relaunch = events.filter((e) => e.kind === "launched")[1]!;
    expect(relaunch.t - exited.t).toBeGreaterThanOrEqual(280);
    expect(kinds(events, "a-0")).toEqual(["launched", "ready", "exited", "restart", "launched", "ready"]);
    const snap = sup.replicas()[0]!;
    expect(snap).toMatchObject({ pool: "a", node: "a-0", attempt: 2, restarts: 1, state: "ready", port: base });
    expect(snap.pid).not.toBe(firstPid);
    expect(gateway.backend("m/a/a-0")?.url).toBe(`http://127.0.0.1:${base}`);
    expect(sup.nodes()).toEqual([{ name: "a-0", pool: "a", strikes: 1, cordoned: false }]);
  });

  it("cordons a node after repeated crashes and moves the replica to the fallback pool", async () => {
    const base = await freePortPair();
    const { gateway, sup, events } = start(`
services:
  - model: m
    pools:
      - name: a
        replicas: { count: 1, engine: vllm-ascend, port: ${base}, command: ${cmd("--crash-after-ms", "150")} }
      - name: b
        replicas: { count: 1, engine: vllm, port: ${base + 5}, command: ${cmd()} }
`);
    await sup.start();
    await waitFor("a-0 moved and ready", () =>
      sup.replicas().find((r) => r.replica === "a-0" && r.pool === "b" && r.state === "ready"),
    );
    expect(kinds(events, "a-0")).toEqual([
      "launched",
      "ready",
      "exited",
      "restart",
      "launched",
      "ready",
      "exited",
      "cordoned",
      "restart",
      "moved",
      "launched",
      "ready",
    ]);
    expect(events.find((e) => e.kind === "exited")!.message).toMatch(/exited with code 3; log: .*crashing as asked/);
    expect(sup.nodes().find((n) => n.name === "a-0")).toEqual({ name: "a-0", pool: "a", strikes: 2, cordoned: true });
    // In pool b it runs b's command (no crash flag) with b's engine, and joins b's tier in the gateway.
    expect(
      gateway
        .backends()
        .map((b) => `${b.id} ${b.pool} ${b.engine}`)
        .sort(),
    ).toEqual(["m/b/a-0 b vllm", "m/b/b-0 b vllm"]);
    await sleep(400); // would have crashed again by now with a's command
    expect(sup.replicas().find((r) => r.replica === "a-0")).toMatchObject({ state: "ready", node: "b-0" });
  });

  it("stops a replica that never gets ready, retries, and gives up after maxRestarts", async () => {
    const base = await freePortPair();
    const { gateway, sup, events } = start(
      `
services:
  - model: m
    pools:
      - name: a
        replicas:
          count: 1
          engine: vllm
          port: ${base}
          readyTimeoutS: 0.4
          command: ${cmd("--ready-after-ms", "60000")}
          recovery: { maxRestarts: 1, strikesBeforeCordon: 5 }
`,
    );
    await sup.start();
    const firstPid = sup.replicas()[0]!.pid!;
    await waitFor("gave up", () => events.find((e) => e.kind === "gave-up"));
    expect(kinds(events, "a-0")).toEqual(["launched", "not-ready", "restart", "launched", "not-ready", "gave-up"]);
    expect(events.at(-1)!.message).toMatch(/gave up after 1 restart/);
    expect(sup.replicas()[0]).toMatchObject({ state: "failed", pid: null });
    expect(isSameProcessAlive(firstPid, null)).toBe(false);
    expect(gateway.backends()).toEqual([]);
  });

  it("stop() unregisters every replica and ends its process group", async () => {
    const base = await freePortPair();
    const { gateway, sup, events } = start(`
services:
  - model: m
    pools:
      - name: a
        replicas: { count: 2, engine: vllm, port: ${base}, command: ${cmd()} }
`);
    await sup.start();
    await waitFor("ready", () => gateway.backends().length === 2);
    const pids = sup.replicas().map((r) => r.pid!);
    await sup.stop();
    expect(gateway.backends()).toEqual([]);
    expect(sup.replicas().map((r) => r.state)).toEqual(["stopped", "stopped"]);
    for (const pid of pids) expect(isSameProcessAlive(pid, null)).toBe(false);
    expect(events.filter((e) => e.kind === "stopped")).toHaveLength(2);
    expect(events.some((e) => e.kind === "exited")).toBe(false);
  });
});
