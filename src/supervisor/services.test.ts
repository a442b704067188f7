import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { systemClock } from "../core/clock.js";
import type { Executor } from "../executors/port.js";
import { MemoryStore } from "../store/memory.js";
import { SupervisorContext } from "./context.js";
import type { CompiledJobSpec, PoolSpec } from "../core/spec.js";
import { JobState } from "../core/states.js";
import {
  deployArgv,
  describePlan,
  planDeploy,
  replicaEndpoint,
  replicaJobName,
  replicaLaunchArgv,
  replicaRevision,
  Services,
  type StoredService,
} from "./services.js";

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

/** A controller over a memory store with one local pool; submitted replica jobs land in the store as PENDING jobs. */
function deployable(waiting: Map<string, string> = new Map()): {
  svc: Services;
  store: MemoryStore;
  submitted: CompiledJobSpec[];
  cancelled: string[];
} {
  const store = new MemoryStore();
  const submitted: CompiledJobSpec[] = [];
  const cancelled: string[] = [];
  const ctx = new SupervisorContext({
    store,
    executor: {} as Executor,
    clock: systemClock,
    cluster: { pools: [{ name: "p", executor: "local" } as PoolSpec] },
    home: mkdtempSync(path.join(tmpdir(), "sy-svc-unit-")),
  });
  const svc = new Services(ctx, {
    submit: async (spec) => {
      submitted.push(spec);
      const id = `${spec.name}-${submitted.length}`;
      await store.createJob({ id, name: spec.name, spec, state: JobState.Pending, createdAt: Date.now() });
      return (await store.getJob(id))!;
    },
    cancel: async (id) => {
      cancelled.push(id);
      await store.updateJob(id, { state: JobState.Cancelled, endedAt: Date.now() });
    },
    waitingFor: (id) => waiting.get(id) ?? null,
  });
  return { svc, store, submitted, cancelled };
}

function fileWith(opts: { count?: number; env?: Record<string, string>; args?: string[]; weight?: number }): string {
  return [
    "services:",
    "  - model: m",
    "    pools:",
    "      - name: p",
    "        replicas:",
    `          count: ${opts.count ?? 2}`,
    "          engine: vllm",
    `          command: ${JSON.stringify(["/bin/serve", "--port", "{port}", ...(opts.args ?? [])])}`,
    "          port: 9100",
    `          env: ${JSON.stringify(opts.env ?? { MODE: "a" })}`,
    ...(opts.weight !== undefined ? [`          weight: ${opts.weight}`] : []),
  ].join("\n");
}

function stored(opts: Parameters<typeof fileWith>[0], workdir = "/srv"): StoredService {
  const replicas = {
    count: opts.count ?? 2,
    engine: "vllm" as const,
    command: ["/bin/serve", "--port", "{port}", ...(opts.args ?? [])],
    port: 9100,
    host: "127.0.0.1",
    env: opts.env ?? { MODE: "a" },
    readyTimeoutS: 600,
    drainSeconds: 30,
    ...(opts.weight !== undefined && { weight: opts.weight }),
  };
  return {
    name: "m",
    aliases: [],
    file: `${workdir}/services.yaml`,
    workdir,
    pools: [{ name: "p", priority: 0, queueThreshold: 16, backends: [], replicas }],
  };
}

describe("redeploying a service: the plan", () => {
  it("a new service is created; the same spec again is unchanged", () => {
    expect(planDeploy(undefined, stored({}))).toEqual({
      name: "m",
      action: "create",
      roll: [],
      scale: [{ pool: "p", from: 0, to: 2 }],
      inPlace: [],
    });
    expect(planDeploy(stored({}), stored({})).action).toBe("unchanged");
    expect(describePlan(planDeploy(stored({}), stored({})))).toMatch(/^unchanged m: /);
    // A service being undeployed is created again.
    expect(planDeploy({ ...stored({}), deleting: true }, stored({})).action).toBe("create");
  });

  it("a changed env, program, args or model rolls the replicas and names the fields, never an env value", () => {
    const env = planDeploy(
      stored({ env: { MODE: "a", KEEP: "1" } }),
      stored({ env: { MODE: "secret-b", NEW: "x", KEEP: "1" } }),
    );
    expect(env.action).toBe("update");
    expect(env.roll).toEqual([{ pool: "p", replicas: 2, fields: ["env (MODE, NEW)"] }]);
    expect(env.scale).toEqual([]);
    expect(describePlan(env)).toBe(
      "m: rolling p (env (MODE, NEW) changed): 2 replica(s) replaced one at a time, each successor ready before its predecessor drains",
    );
    expect(JSON.stringify(env)).not.toContain("secret-b");
    expect(planDeploy(stored({}), stored({ args: ["--fast"] })).roll[0]!.fields).toEqual(["args"]);
    const program = stored({});
    program.pools[0]!.replicas!.command = ["/bin/other", "--port", "{port}"];
    expect(planDeploy(stored({}), program).roll[0]!.fields).toEqual(["command"]);
    const model = stored({});
    model.pools[0]!.replicas!.fromJob = "trainer";
    expect(planDeploy(stored({}), model).roll[0]!.fields).toEqual(["model"]);
    // The file moved to another folder: relative paths in the command mean other files.
    expect(planDeploy(stored({}, "/a"), stored({}, "/b")).roll[0]!.fields).toEqual(["workdir"]);
  });

  it("a change of count only scales; weight applies in place; a removed pool scales to 0", () => {
    const scaled = planDeploy(stored({}), stored({ count: 3 }));
    expect(scaled).toMatchObject({ action: "update", roll: [], scale: [{ pool: "p", from: 2, to: 3 }], inPlace: [] });
    expect(describePlan(scaled)).toBe("m: scaled p 2→3");
    const weighted = planDeploy(stored({}), stored({ weight: 3 }));
    expect(weighted).toMatchObject({ roll: [], scale: [], inPlace: ["p.weight"] });
    expect(describePlan(weighted)).toBe("m: updated p.weight (no restart)");
    // Scaled down and changed: only the replicas that stay roll.
    expect(planDeploy(stored({ count: 3 }), stored({ count: 1, args: ["-v"] })).roll).toEqual([
      { pool: "p", replicas: 1, fields: ["args"] },
    ]);
    const gone = { ...stored({}), pools: [] };
    expect(planDeploy(stored({}), gone)).toMatchObject({
      scale: [{ pool: "p", from: 2, to: 0 }],
      inPlace: ["pool p removed"],
    });
  });

  it("the revision of a replicas block changes with what its replicas restart for, not with count or weight", () => {
    const r = (s: StoredService): string => replicaRevision(s.pools[0]!.replicas!, s.workdir);
    expect(r(stored({}))).toBe(r(stored({ count: 5, weight: 2 })));
    expect(r(stored({}))).toBe(r(stored({ env: { MODE: "a" } })));
    expect(r(stored({}))).not.toBe(r(stored({ env: { MODE: "b" } })));
    expect(r(stored({}))).not.toBe(r(stored({ args: ["-v"] })));
  });
});

describe("redeploying a service: the controller", () => {
  it("an unchanged redeploy does nothing, a dry run changes nothing, a changed env rolls one replica at a time", async () => {
    const { svc, store, submitted, cancelled } = deployable();
    const first = await svc.deploy(fileWith({}), "/srv/services.yaml");
    expect(first.map((s) => s.plan.action)).toEqual(["create"]);
    expect(submitted).toHaveLength(2);
    const rev1 = submitted[0]!.workload!.revision;
    expect(rev1).toMatch(/^[0-9a-f]{16}$/);
    // Both replicas serve (as the readiness probe would mark them).
    for (const r of await store.listReplicas()) await store.putReplica({ ...r, state: "ready", url: "http://x" });
    const events = async (): Promise<number> => (await store.listEvents({ limit: 1000 })).length;
    const before = await events();

    const again = await svc.deploy(fileWith({}), "/srv/services.yaml");
    expect(again[0]!.plan.action).toBe("unchanged");
    expect(submitted).toHaveLength(2);
    expect(await events()).toBe(before);

    const dry = await svc.deploy(fileWith({ env: { MODE: "b" } }), "/srv/services.yaml", { dryRun: true });
    expect(dry).toEqual([
      {
        name: "m",
        plan: {
          name: "m",
          action: "update",
          roll: [{ pool: "p", replicas: 2, fields: ["env (MODE)"] }],
          scale: [],
          inPlace: [],
        },
      },
    ]);
    expect(submitted).toHaveLength(2);
    expect((await svc.describe("m")).spec.pools[0]!.replicas!.env).toEqual({ MODE: "a" });

    const rolled = await svc.deploy(fileWith({ env: { MODE: "b" } }), "/srv/services.yaml");
    expect(rolled[0]!.plan.roll[0]!.fields).toEqual(["env (MODE)"]);
    // One successor, beside the replica of the first slot; the other slot waits its turn; nothing stopped yet.
    expect(submitted).toHaveLength(3);
    expect(submitted[2]!.env.MODE).toBe("b");
    expect(submitted[2]!.workload!.slot).toBe("p-0");
    expect(submitted[2]!.workload!.revision).not.toBe(rev1);
    expect(cancelled).toEqual([]);
    expect(rolled[0]!.state).toBe("rolling");
    await svc.reconcile();
    expect(submitted).toHaveLength(3);
    const rolling = (await store.listEvents({ limit: 1000 })).filter((e) => e.kind === "replica.rolling");
    expect(rolling.map((e) => e.message)).toEqual([
      "replica m/p-0: its spec changed (env (MODE)); starting its successor beside it",
    ]);
  });

  it("a replica on the old spec that is not serving yet is replaced at once", async () => {
    const { svc, submitted, cancelled } = deployable();
    await svc.deploy(fileWith({ count: 1 }), "/srv/services.yaml");
    expect(submitted).toHaveLength(1);
    await svc.deploy(fileWith({ count: 1, args: ["--fixed"] }), "/srv/services.yaml");
    expect(cancelled).toEqual([`${submitted[0]!.name}-1`]);
    expect(submitted).toHaveLength(2);
    expect(submitted[1]!.command).toContain("--fixed");
  });

  it("a roll whose successor waits for capacity says why, and that the lone replica serving does not drain first", async () => {
    const waiting = new Map<string, string>();
    const { svc, store, submitted } = deployable(waiting);
    await svc.deploy(fileWith({ count: 1 }), "/srv/services.yaml");
    for (const r of await store.listReplicas()) await store.putReplica({ ...r, state: "ready", url: "http://x" });
    await svc.deploy(fileWith({ count: 1, env: { MODE: "b" } }), "/srv/services.yaml");
    expect(submitted).toHaveLength(2);
    const successor = `${submitted[1]!.name}-2`;
    expect((await svc.list())[0]).toMatchObject({ state: "rolling", note: null });
    waiting.set(successor, "waiting for 1 device(s) on p: 0 free");
    const [summary] = await svc.list();
    expect(summary!.state).toBe("rolling");
    expect(summary!.note).toBe(
      `the successor of p-0 waits: waiting for 1 device(s) on p: 0 free; ${submitted[0]!.name}-1 serves meanwhile ` +
        "(it is the only replica serving, so it does not drain first; fix: room for one more replica on p, or scale m to 0 and back, with downtime)",
    );
  });
});
