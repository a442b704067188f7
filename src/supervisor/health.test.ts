import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { installFakeHost, removeFakeHost } from "../../test/fixtures/devices/fake-hosts.js";
import type { Clock } from "../core/clock.js";
import { compileJobSpec, type ClusterSpec } from "../core/spec.js";
import { LocalExecutor } from "../executors/local/local.js";
import { SqliteStore } from "../store/sqlite.js";
import { Supervisor } from "./supervisor.js";

/**
 * Node health probes in the supervisor's loop over real parts: SQLite, the local executor, agent/health_probe.py run
 * on each virtual node with fake device tools put on its PATH (SWITCHYARD_HOST_TOOLS), on a manual clock.
 */
class ManualClock implements Clock {
  t = Date.now();
  now(): number {
    return this.t;
  }
  sleep(ms: number): Promise<void> {
    return new Promise((r) => setTimeout(r, Math.min(ms, 5)));
  }
}

const tools = mkdtempSync(path.join(os.tmpdir(), "hlth-tools-"));
const before = process.env.SWITCHYARD_HOST_TOOLS;
beforeAll(() => {
  process.env.SWITCHYARD_HOST_TOOLS = tools;
  process.env.SWITCHYARD_PYTHON ??= "/usr/bin/python3";
});
afterAll(() => {
  if (before === undefined) delete process.env.SWITCHYARD_HOST_TOOLS;
  else process.env.SWITCHYARD_HOST_TOOLS = before;
});

const stops: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const stop of stops.splice(0)) await stop();
});

function cluster(health: Record<string, unknown>): ClusterSpec {
  return {
    pools: [
      {
        name: "gpu",
        executor: "local",
        accelerator: { vendor: "nvidia" },
        nodes: 2,
        devicesPerNode: 1,
        health: { timeoutSeconds: 20, minFreeDiskMiB: 1, minFreeMemoryMiB: 1, ...health },
      },
    ],
  } as ClusterSpec;
}

async function setup(c: ClusterSpec) {
  const home = mkdtempSync(path.join(os.tmpdir(), "hlth-sup-"));
  const store = new SqliteStore(path.join(home, "state.db"));
  const clock = new ManualClock();
  const log: string[] = [];
  const supervisor = new Supervisor({
    store,
    executor: new LocalExecutor(),
    clock,
    cluster: c,
    home,
    pollMs: 1e9,
    watchPacing: false,
    log: (m) => log.push(m),
  });
  await supervisor.start();
  stops.push(async () => {
    for (const j of await store.listJobs({ activeOnly: true })) await supervisor.cancel(j.id);
    await supervisor.stop();
    await store.close();
  });
  const submit = (name: string, command: string[]) => {
    mkdirSync(path.join(home, "work"), { recursive: true });
    const yaml = [
      `name: ${name}`,
      `workdir: ${JSON.stringify(path.join(home, "work"))}`,
      `command: ${JSON.stringify(command)}`,
    ].join("\n");
    const file = path.join(home, `${name}.yaml`);
    writeFileSync(file, yaml);
    return supervisor.submit(
      compileJobSpec(yaml, { file, cluster: c, defaultCheckpointRoot: path.join(home, "ckpt") }),
    );
  };
  const tickUntil = async (what: string, done: () => Promise<boolean>, max = 400) => {
    for (let i = 0; i < max; i++) {
      clock.t += 50; // time moves a little per tick (the loop paces its looks at a gang by the clock)
      await supervisor.tick();
      if (await done()) return;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`not reached: ${what}\n${log.slice(-20).join("\n")}`);
  };
  return { home, store, clock, supervisor, submit, tickUntil };
}

describe("pre-flight health probe (local executor)", () => {
  it("a host with an uncorrectable ECC error is left out and cordoned with the finding; the attempt runs on the healthy one and says so", async () => {
    installFakeHost(tools, "gpu-0", "nvidia-ecc");
    installFakeHost(tools, "gpu-1", "nvidia-healthy");
    const { store, supervisor, submit, tickUntil } = await setup(cluster({ preflight: true }));
    const job = await submit("pre", ["/bin/sh", "-c", "exit 0"]);
    await tickUntil("the job ends", async () => (await store.getJob(job.id))!.state === "SUCCEEDED");
    const attempts = await store.listAttempts(job.id);
    expect(attempts.map((a) => a.nodes)).toEqual([["gpu-1"]]);
    const events = await store.listEvents({ jobId: job.id });
    const finding = "device: GPU 1 (GPU-9a1d7e22-31c4-4b8e-a6d2-5b7f0c9e1a23): 2 uncorrected ECC error(s) since boot";
    expect(events.find((e) => e.kind === "preflight.excluded")?.message).toBe(
      `pre-flight left out gpu-0 (${finding}); placing the attempt again`,
    );
    const launched = events.find((e) => e.kind === "attempt.launched")!;
    expect(launched.message).toContain(`pre-flight left out gpu-0 (${finding}); pre-flight ok on 1 of 1 host(s)`);
    expect(events.find((e) => e.kind === "node.cordoned")?.message).toBe(
      `cordoned gpu-0: preflight probe found ${finding}`,
    );
    const nodes = await supervisor.nodes();
    expect(nodes.find((n) => n.name === "gpu-0")).toMatchObject({
      cordoned: true,
      reason: `health probe: ${finding}`,
      health: { status: "fatal", trigger: "preflight" },
    });
    expect(nodes.find((n) => n.name === "gpu-1")?.health).toMatchObject({ status: "ok", trigger: "preflight" });
    const described = await supervisor.node("gpu-0");
    expect(described?.health?.excerpt).toContain("00000000:2A:00.0, 41, 2, 2, Yes");
  }, 60_000);

  it("off (the local default): nothing is probed and the first host is used", async () => {
    installFakeHost(tools, "gpu-0", "nvidia-xid48");
    const { store, submit, tickUntil } = await setup(cluster({}));
    const job = await submit("off", ["/bin/sh", "-c", "exit 0"]);
    await tickUntil("the job ends", async () => (await store.getJob(job.id))!.state === "SUCCEEDED");
    expect((await store.listAttempts(job.id))[0]!.nodes).toEqual(["gpu-0"]);
    expect(await store.listNodeHealth()).toEqual([]);
  }, 60_000);
});

describe("periodic and post-incident probes (local executor)", () => {
  it("periodic: every host probed at start and again after the interval; a new Xid 48 cordons its host", async () => {
    installFakeHost(tools, "gpu-0", "nvidia-healthy");
    installFakeHost(tools, "gpu-1", "nvidia-healthy");
    const { store, clock, tickUntil } = await setup(cluster({ intervalSeconds: 60 }));
    await tickUntil("both probed", async () => (await store.listNodeHealth()).length === 2);
    expect((await store.listNodeHealth()).map((h) => [h.node, h.status, h.trigger])).toEqual([
      ["gpu-0", "ok", "periodic"],
      ["gpu-1", "ok", "periodic"],
    ]);
    const first = (await store.listNodeHealth())[0]!.probedAt;
    installFakeHost(tools, "gpu-1", "nvidia-xid48");
    await supervisorTicks(tickUntil, 5);
    expect((await store.listNodeHealth({ node: "gpu-1" }))[0]!.status).toBe("ok"); // not yet due
    clock.t += 61_000;
    await tickUntil("gpu-1 fatal", async () => (await store.listNodeHealth({ node: "gpu-1" }))[0]!.status === "fatal");
    expect((await store.listNodeHealth({ node: "gpu-0" }))[0]!.probedAt).toBeGreaterThan(first);
    const health = (await store.listEvents({})).filter((e) => e.kind === "node.health");
    expect(health.map((e) => e.message)).toEqual([
      "gpu-1 fatal (periodic probe): device: GPU 0 (GPU-4f0c2a1e-8b3d-4c2a-9e1f-0a1b2c3d4e5f): Xid 48: double-bit ECC error",
    ]);
    expect((await store.listNodes()).find((n) => n.name === "gpu-1")).toMatchObject({
      cordoned: true,
      reason: "health probe: device: GPU 0 (GPU-4f0c2a1e-8b3d-4c2a-9e1f-0a1b2c3d4e5f): Xid 48: double-bit ECC error",
    });
  }, 60_000);

  it("after an incident the culprit's host is probed: the incident carries what the device said and the host is cordoned at once", async () => {
    installFakeHost(tools, "gpu-0", "nvidia-healthy");
    installFakeHost(tools, "gpu-1", "nvidia-healthy");
    const { store, supervisor, submit, tickUntil } = await setup(cluster({ afterIncident: true }));
    const job = await submit("inc", ["/bin/sh", "-c", "sleep 60"]);
    await tickUntil("running", async () => (await store.listAttempts(job.id))[0]?.state === "RUNNING");
    expect((await store.listAttempts(job.id))[0]!.nodes).toEqual(["gpu-0"]);
    // The GPU falls off the bus under the rank, which dies of it.
    installFakeHost(tools, "gpu-0", "nvidia-xid79");
    const ranks = (await supervisor.currentRanks(job.id))!.ranks;
    expect(supervisor.signalRank(ranks[0]!, "SIGKILL")).toBe(true);
    await tickUntil("an incident", async () => (await store.listIncidents(job.id)).length === 1);
    const [incident] = await store.listIncidents(job.id);
    expect(incident!.cause).toBe("killed");
    expect(incident!.summary).toContain(
      "; gpu-0's probe: device: GPU 1 (GPU-9a1d7e22-31c4-4b8e-a6d2-5b7f0c9e1a23): Xid 79: GPU fallen off the bus",
    );
    expect(incident!.evidence).toMatchObject({ hard: true, health: { status: "fatal" } });
    const said = (incident!.evidence.health as { findings: unknown[] }).findings;
    expect(said[0]).toMatchObject({ grade: "fatal", cause: "device", source: "kernel-log" });
    const node = (await store.listNodes()).find((n) => n.name === "gpu-0")!;
    expect(node.cordoned).toBe(true);
    expect(node.reason).toMatch(/^health probe: device: .*Xid 79/);
    removeFakeHost(tools, "gpu-0");
  }, 60_000);
});

async function supervisorTicks(
  tickUntil: (w: string, d: () => Promise<boolean>, m?: number) => Promise<void>,
  n: number,
) {
  let i = 0;
  await tickUntil("ticks", async () => ++i >= n);
}
