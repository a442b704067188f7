import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { systemClock } from "../core/clock.js";
import type { Executor } from "../executors/port.js";
import { MemoryStore } from "../store/memory.js";
import { SupervisorContext } from "./context.js";
import { deployArgv, replicaEndpoint, replicaJobName, replicaLaunchArgv, Services } from "./services.js";

function services(): { svc: Services; store: MemoryStore } {
  const store = new MemoryStore();
  const ctx = new SupervisorContext({
    store,
    executor: {} as Executor,
    clock: systemClock,
    cluster: { pools: [] },
    home: mkdtempSync(path.join(tmpdir(), "sy-svc-unit-")),
  });
  const svc = new Services(ctx, {
    submit: () => Promise.reject(new Error("no jobs here")),
    cancel: () => Promise.resolve(),
  });
  return { svc, store };
}

describe("services controller", () => {
  it("answers for the backend set only once it has built it from the store (a restarted server never says empty)", async () => {
    const { svc } = services();
    let answered = false;
    const first = svc.waitForChange(null, null, 0).then((set) => ((answered = true), set));
    await new Promise((r) => setTimeout(r, 50));
    expect(answered).toBe(false);
    await svc.publish();
    const set = await first;
    expect(set.epoch).toBe(svc.epoch);
    expect(set.services).toEqual([]);
  });

  it("a long poll waits for a change of its version, and answers at once for another epoch", async () => {
    const { svc } = services();
    await svc.publish();
    const v = svc.backendSet().version;
    const t0 = Date.now();
    expect((await svc.waitForChange(v, svc.epoch, 200)).version).toBe(v);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(150);
    const t1 = Date.now();
    await svc.waitForChange(v, "another-epoch", 5000);
    expect(Date.now() - t1).toBeLessThan(1000);
  });

  it("refuses a services file naming a pool the cluster lacks, and {checkpoint} without model.fromJob", async () => {
    const { svc } = services();
    const yaml = [
      "services:",
      "  - model: m",
      "    pools:",
      "      - name: nowhere",
      "        replicas: { count: 1, engine: vllm, port: 9000, command: [serve, --ckpt, '{checkpoint}'] }",
    ].join("\n");
    await expect(svc.deploy(yaml, "/x/services.yaml")).rejects.toThrow(
      /\/x\/services.yaml: cannot deploy:\n {2}- services\[0\] \(m\) pool nowhere: the cluster has no pool nowhere \(fix: .*\)\n {2}- .*uses \{checkpoint\} but the block has no model: \{ fromJob: <job name> \}/,
    );
  });

  it("replica commands: {home} at deploy, {host}, {port} and {checkpoint} at each launch, {python} left whole", () => {
    const deployed = deployArgv(
      ["{python}", "s.py", "--host={host}", "{home}/c", "--port", "{port}", "{checkpoint}"],
      "/h",
    );
    expect(deployed).toEqual(["{python}", "s.py", "--host={host}", "/h/c", "--port", "{port}", "{checkpoint}"]);
    expect(replicaLaunchArgv(deployed, 8101, "/h/c/step-00000020", "10.77.0.12")).toEqual([
      "{python}",
      "s.py",
      "--host=10.77.0.12",
      "/h/c",
      "--port",
      "8101",
      "/h/c/step-00000020",
    ]);
    // An argument is never split or given to a shell.
    expect(replicaLaunchArgv(["a; rm -rf {port}"], 1, null, "h")).toEqual(["a; rm -rf 1"]);
  });

  it("a replica on a workload manager's node listens on and is reached at the node's address, not loopback", () => {
    // Local pools: the host setting; 0.0.0.0 is reached at 127.0.0.1.
    expect(replicaEndpoint("127.0.0.1", "local", null, "local-0")).toEqual({
      listen: "127.0.0.1",
      urlHost: "127.0.0.1",
    });
    expect(replicaEndpoint("0.0.0.0", "local", null, "local-0")).toEqual({ listen: "0.0.0.0", urlHost: "127.0.0.1" });
    // Slurm: the default loopback means the node's address (NodeAddr), for listening and for the URL.
    expect(replicaEndpoint("127.0.0.1", "slurm", "10.77.0.12", "a2")).toEqual({
      listen: "10.77.0.12",
      urlHost: "10.77.0.12",
    });
    expect(replicaEndpoint("0.0.0.0", "slurm", "10.77.0.12", "a2")).toEqual({
      listen: "0.0.0.0",
      urlHost: "10.77.0.12",
    });
    // No address known: the node's name; an explicit host is taken as given.
    expect(replicaEndpoint("127.0.0.1", "slurm", null, "a2")).toEqual({ listen: "a2", urlHost: "a2" });
    expect(replicaEndpoint("10.0.0.9", "slurm", "10.77.0.12", "a2")).toEqual({
      listen: "10.0.0.9",
      urlHost: "10.0.0.9",
    });
  });

  it("replica job names are valid job names, whatever the service is called", () => {
    expect(replicaJobName("Qwen/Qwen2.5-7B-Instruct", "local-ascend-0")).toBe(
      "svc-qwen-qwen2.5-7b-instruct-local-ascend-0",
    );
    expect(replicaJobName("x".repeat(300), "p-0")).toMatch(/^[a-z0-9][a-z0-9._-]{0,62}$/);
  });
});
