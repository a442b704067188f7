import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { compileJobSpec, type ClusterSpec, type PoolSpec } from "../core/spec.js";
import type { NodeRunResult, RunOnNodesOptions } from "../executors/port.js";
import { MemoryStore } from "../store/memory.js";
import { jobReport } from "./report.js";
import { FakeClock, FakeExecutor } from "./testing/fakes.js";
import { Supervisor } from "./supervisor.js";

/**
 * Gray failures in the loop, on a fake clock, the memory store and a fake executor whose hosts answer the network
 * probe with a table the test chooses: slow -> probe in the background -> evict (or continue) -> degraded time.
 */

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

/** A fake executor that runs the network probe: the first host prints every pair, `slow` hosts' pairs at 5 Mbit/s. */
class ProbeExecutor extends FakeExecutor {
  readonly probes: Array<{ nodes: string[]; argv: string[]; opts: RunOnNodesOptions }> = [];
  slow = new Set<string>();
  /** Resolves the probe only when the test says so (null: at once). */
  hold: Promise<void> | null = null;

  async runOnNodes(
    _pool: PoolSpec,
    nodes: readonly string[],
    argv: readonly string[],
    opts: RunOnNodesOptions,
  ): Promise<NodeRunResult[]> {
    this.probes.push({ nodes: [...nodes], argv: [...argv], opts });
    if (this.hold) await this.hold;
    const lines: string[] = [];
    for (const from of nodes) {
      for (const to of nodes) {
        if (from >= to) continue;
        const rate = this.slow.has(from) || this.slow.has(to) ? 0.005 : 2 + lines.length * 0.1;
        lines.push(JSON.stringify({ kind: "pair", from, to, sustained_gbit_s: rate, gbit_s: rate }));
      }
    }
    return nodes.map((node, i) => ({ node, code: 0, stdout: i === 0 ? lines.join("\n") : "", stderr: "" }));
  }
}

const pool = (name: string, nodes: number, extra: Partial<PoolSpec> = {}): PoolSpec => ({
  name,
  executor: "local",
  accelerator: { vendor: "nvidia" },
  nodes,
  devicesPerNode: 1,
  ...extra,
});

/** Local pools probe their network only when asked to (their nodes share one machine's): these tests ask. */
const probed: Partial<PoolSpec> = {
  health: { networkProbe: true, timeoutSeconds: 20, minFreeDiskMiB: 0, minFreeMemoryMiB: 0 },
};

async function setup(cluster: ClusterSpec = { pools: [pool("p", 4, probed)] }) {
  const home = mkdtempSync(path.join(os.tmpdir(), "sy-gray-"));
  const store = new MemoryStore();
  const clock = new FakeClock();
  const executor = new ProbeExecutor(clock);
  const supervisor = new Supervisor({ store, executor, clock, cluster, home, pollMs: 1e9, watchPacing: false });
  await supervisor.start();
  cleanups.push(async () => {
    await supervisor.stop();
    await store.close();
    rmSync(home, { recursive: true, force: true });
  });
  const submit = async (name: string, lines: string[]) => {
    mkdirSync(path.join(home, "work"), { recursive: true });
    const yaml = [
      `name: ${name}`,
      `workdir: ${JSON.stringify(path.join(home, "work"))}`,
      'command: ["/bin/sh", "-c", "true"]',
      ...lines,
    ].join("\n");
    const file = path.join(home, `${name}.yaml`);
    writeFileSync(file, yaml);
    return (
      await supervisor.submit(compileJobSpec(yaml, { file, cluster, defaultCheckpointRoot: path.join(home, "ckpt") }))
    ).id;
  };
  const tick = async (ms = 0) => {
    clock.advance(ms);
    await supervisor.tick();
  };
  let step = 0;
  /** `n` steps, one every `everyMs` of virtual time, each ingested by a tick. */
  const run = async (id: string, n: number, everyMs: number) => {
    for (let i = 0; i < n; i++) {
      clock.advance(everyMs);
      executor.step(id, ++step);
      await supervisor.tick();
    }
  };
  /** Lets the background probe's promise settle (no virtual time passes). */
  const settle = () => new Promise((r) => setTimeout(r, 20));
  /** The full probes (localization), not the pre-flights. */
  const full = () => executor.probes.filter((p) => p.argv.includes("full"));
  const kinds = async (id: string) => (await store.listEvents({ jobId: id, limit: 10_000 })).map((e) => e.kind);
  return { home, store, clock, executor, supervisor, submit, tick, run, settle, full, kinds, step: () => step };
}

describe("gray failures in the supervisor", () => {
  it("slow -> probe in the background -> the host common to the slow pairs is evicted and the job goes on without it", async () => {
    const s = await setup();
    const id = await s.submit("gray", ["nodes: 3", "steps: 100000", "recovery: { backoffSeconds: 1 }"]);
    const [first] = await s.store.listAttempts(id);
    const culprit = first!.nodes[1]!;
    s.executor.slow.add(culprit);
    await s.run(id, 80, 500); // warm-up and a baseline of 0.5 s per step
    expect(await s.kinds(id)).not.toContain("slowdown.detected");
    let release!: () => void;
    s.executor.hold = new Promise<void>((r) => (release = r));
    await s.run(id, 30, 1500); // 3x slower: detected once the window is slow and stayed so for 15 s
    const events = await s.store.listEvents({ jobId: id, limit: 10_000 });
    const detected = events.find((e) => e.kind === "slowdown.detected");
    expect(detected, "slowdown detected").toBeDefined();
    expect(detected!.data.factor as number).toBeGreaterThan(2.5);
    // The probe runs in the background: ticks go on while it is held, and nothing is decided yet.
    expect(s.full()).toHaveLength(1);
    expect(s.full()[0]!.nodes.sort()).toEqual([...first!.nodes].sort());
    expect(s.full()[0]!.argv).toEqual(expect.arrayContaining(["--mode", "full"]));
    await s.run(id, 3, 1500);
    expect(await s.store.listIncidents(id)).toEqual([]);
    expect((await s.store.listAttempts(id))[0]!.endedAt).toBeNull();
    release();
    await s.settle();
    await s.run(id, 1, 1500);
    const [incident] = await s.store.listIncidents(id);
    expect(incident).toMatchObject({ cause: "network", culpritNode: culprit });
    expect(incident!.evidence).toMatchObject({ endedAttempt: true, network: { kind: "host", culprits: [culprit] } });
    const degraded = incident!.evidence.degraded as { from: number; to: number; speed: number };
    expect(degraded.speed).toBeGreaterThan(0.25);
    expect(degraded.speed).toBeLessThan(0.45);
    expect(degraded.from).toBe(incident!.evidence.faultAt);
    expect((incident!.evidence.decision as { sentence: string }).sentence).toMatch(/: evict$/);
    // Cordoned (drained on Slurm) with the evidence, the attempt stopped, the next one placed without the host.
    const node = (await s.store.listNodes()).find((n) => n.name === culprit)!;
    expect(node.cordoned).toBe(true);
    expect(node.reason).toMatch(/network/);
    expect((await s.store.listAttempts(id))[0]!.endedAt).not.toBeNull();
    await s.tick(2000);
    const attempts = await s.store.listAttempts(id);
    expect(attempts).toHaveLength(2);
    expect(attempts[1]!.nodes).not.toContain(culprit);
    expect(attempts[1]!.nodes).toHaveLength(3);
    // The ledger charges the slow share of the slowdown to the incident.
    const report = (await jobReport(s.store, id, s.clock.now()))!;
    expect(report.ledger.totals.degraded).toBeGreaterThan(0);
    expect(report.ledger.incidents[0]).toMatchObject({ cause: "network", endedAttempt: true });
    expect(report.ledger.incidents[0]!.degradedMs).toBeGreaterThan(0);
  });

  it("slow near the end: restarting does not pay, the run goes on and the slowdown is charged as degraded time", async () => {
    const s = await setup();
    const id = await s.submit("gray-end", ["nodes: 3", "steps: 160", "detection: { slowdown: { factor: 1.1 } }"]);
    const [first] = await s.store.listAttempts(id);
    s.executor.slow.add(first!.nodes[2]!);
    await s.run(id, 80, 500);
    await s.run(id, 40, 600); // 20% slower
    await s.settle();
    await s.run(id, 10, 600);
    const [incident] = await s.store.listIncidents(id);
    expect(incident).toMatchObject({ cause: "network", culpritNode: first!.nodes[2] });
    expect(incident!.evidence).toMatchObject({ endedAttempt: false });
    expect((incident!.evidence.decision as { sentence: string }).sentence).toMatch(/: continue$/);
    expect(await s.kinds(id)).toContain("slowdown.continue");
    // Nothing stopped, nobody cordoned: the run finishes on the same attempt.
    expect(s.executor.stops).toEqual([]);
    expect((await s.store.listNodes()).every((n) => !n.cordoned)).toBe(true);
    await s.run(id, 160 - s.step(), 600);
    for (const r of s.executor.ranks(id)) s.executor.exit(id, r.rank, { code: 0 });
    await s.tick(100);
    expect((await s.store.getJob(id))!.state).toBe("SUCCEEDED");
    expect(await s.store.listAttempts(id)).toHaveLength(1);
    const report = (await jobReport(s.store, id, s.clock.now()))!;
    const cost = report.ledger.incidents[0]!;
    expect(cost.endedAttempt).toBe(false);
    expect(cost.degradedMs).toBeGreaterThan(0);
    // 1/1.2 of the time from the onset to the end is productive, the rest (about 1/6) is degraded.
    const spanMs = s.clock.now() - (incident!.evidence.degraded as { from: number }).from;
    expect(report.ledger.totals.degraded).toBeGreaterThan(spanMs * 0.1);
    expect(report.ledger.totals.degraded).toBeLessThan(spanMs * 0.25);
  });

  it("a slowdown ridden out is decided again when it worsens: probed again, and evicted once a restart pays", async () => {
    const s = await setup();
    const id = await s.submit("gray-worse", ["nodes: 3", "steps: 400", "detection: { slowdown: { factor: 1.1 } }"]);
    const [first] = await s.store.listAttempts(id);
    const culprit = first!.nodes[2]!;
    s.executor.slow.add(culprit);
    await s.run(id, 80, 500);
    await s.run(id, 40, 600); // 1.2x: 270 steps left cost 27 s slow; a restart recomputes 130 steps (65 s): continue
    await s.settle();
    await s.run(id, 10, 600);
    const [ridden] = await s.store.listIncidents(id);
    expect((ridden!.evidence.decision as { sentence: string }).sentence).toMatch(/: continue$/);
    expect(s.full()).toHaveLength(1);
    // Slightly worse (1.3x, under 1.25 x 1.2): no new decision.
    await s.run(id, 30, 650);
    expect(await s.kinds(id)).not.toContain("slowdown.worsened");
    expect(s.full()).toHaveLength(1);
    // Then 3x: the slowdown grew past 1.25x the decided factor, the hosts are probed again, and now evicting pays.
    await s.run(id, 20, 1500);
    const worsened = (await s.store.listEvents({ jobId: id, limit: 10_000 })).find(
      (e) => e.kind === "slowdown.worsened",
    );
    expect(worsened?.data).toMatchObject({ incident: ridden!.id });
    expect(worsened!.data.to as number).toBeGreaterThan(2);
    expect(s.full()).toHaveLength(2);
    await s.settle();
    await s.run(id, 2, 1500);
    const events = await s.store.listEvents({ jobId: id, limit: 10_000 });
    const escalated = events.find((e) => e.kind === "slowdown.escalated");
    expect(escalated?.data.incident).toBe(ridden!.id);
    const evict = events.find((e) => e.kind === "slowdown.evict");
    expect(evict?.message).toMatch(/continuing costs .*evicting costs .*: evict$/);
    const incidents = await s.store.listIncidents(id);
    expect(incidents).toHaveLength(2);
    expect(incidents[1]).toMatchObject({ cause: "network", culpritNode: culprit });
    expect(incidents[1]!.evidence).toMatchObject({ endedAttempt: true, escalatedFrom: ridden!.id });
    expect((incidents[1]!.evidence.slowdown as { factor: number }).factor).toBeGreaterThan(2);
    expect((await s.store.listNodes()).find((n) => n.name === culprit)!.cordoned).toBe(true);
    await s.tick(2000);
    const attempts = await s.store.listAttempts(id);
    expect(attempts).toHaveLength(2);
    expect(attempts[1]!.nodes).not.toContain(culprit);
    // The ridden-out incident's degraded time ends at the escalation: no span charged twice.
    const report = (await jobReport(s.store, id, s.clock.now()))!;
    const [c1, c2] = report.ledger.incidents;
    expect(c1!.degradedMs).toBeGreaterThan(0);
    expect(c1!.endedAttempt).toBe(false);
    expect(c2!.endedAttempt).toBe(true);
    expect(c2!.degradedMs).toBe(0);
    const escalatedAt = escalated!.data.to as number;
    const onset = (ridden!.evidence.degraded as { from: number }).from;
    expect(c1!.degradedMs).toBeLessThan(escalatedAt - onset);
  });

  it("a slowdown ridden out that worsens but still does not pay a restart: decided again, the arithmetic said again", async () => {
    const s = await setup();
    const id = await s.submit("gray-worse-end", ["nodes: 3", "steps: 200", "detection: { slowdown: { factor: 1.1 } }"]);
    const [first] = await s.store.listAttempts(id);
    s.executor.slow.add(first!.nodes[0]!);
    await s.run(id, 80, 500);
    await s.run(id, 40, 600);
    await s.settle();
    await s.run(id, 10, 600);
    expect(await s.store.listIncidents(id)).toHaveLength(1);
    // 2x with a few dozen steps left: 60 steps x 0.5 s x 1 = 30 s slow against 65 s of recomputation: continue.
    await s.run(id, 20, 1000);
    await s.settle();
    await s.run(id, 2, 1000);
    const events = await s.store.listEvents({ jobId: id, limit: 10_000 });
    expect(events.filter((e) => e.kind === "slowdown.worsened")).toHaveLength(1);
    const again = events.filter((e) => e.kind === "slowdown.continue");
    expect(again).toHaveLength(2);
    expect(again[1]!.message).toMatch(/^still going on, now at \d+% speed: continuing costs .*: continue$/);
    expect(again[1]!.data.factor as number).toBeGreaterThan(1.6);
    expect(events.map((e) => e.kind)).not.toContain("slowdown.evict");
    expect(s.executor.stops).toEqual([]);
    expect(await s.store.listIncidents(id)).toHaveLength(1);
    // Not decided a third time at the same pace.
    await s.run(id, 10, 1000);
    await s.settle();
    expect(
      (await s.store.listEvents({ jobId: id, limit: 10_000 })).filter((e) => e.kind === "slowdown.worsened"),
    ).toHaveLength(1);
  });

  it("shrink: an elastic job whose culprit is evicted with no spare host goes on with one host fewer", async () => {
    const s = await setup({ pools: [pool("p", 3, probed)] });
    const id = await s.submit("elastic", [
      "nodes: 3",
      "minNodes: 2",
      "steps: 100000",
      "recovery: { backoffSeconds: 1 }",
    ]);
    const [first] = await s.store.listAttempts(id);
    expect(first!.nodes).toHaveLength(3);
    const culprit = first!.nodes[1]!;
    s.executor.slow.add(culprit);
    await s.run(id, 80, 500);
    await s.run(id, 40, 1500);
    await s.settle();
    await s.run(id, 10, 1500);
    const [incident] = await s.store.listIncidents(id);
    expect(incident).toMatchObject({ cause: "network", culpritNode: culprit });
    // The arithmetic counts the slower pace after the shrink (3 hosts' work on 2: 50% slower).
    const sentence = (incident!.evidence.decision as { sentence: string }).sentence;
    expect(sentence).toMatch(/50% slower after it/);
    expect(sentence).toMatch(/: evict$/);
    await s.tick(2000);
    const attempts = await s.store.listAttempts(id);
    expect(attempts).toHaveLength(2);
    expect(attempts[1]!.nodes).toHaveLength(2);
    expect(attempts[1]!.nodes).not.toContain(culprit);
    expect(s.executor.ranks(id)).toHaveLength(2);
  });

  it("no shrink: a job that cannot run on fewer hosts, with no spare and no other pool, rides the slowdown out", async () => {
    const s = await setup({ pools: [pool("p", 3, probed)] });
    const id = await s.submit("rigid", ["nodes: 3", "steps: 100000", "recovery: { backoffSeconds: 1 }"]);
    const [first] = await s.store.listAttempts(id);
    s.executor.slow.add(first!.nodes[1]!);
    await s.run(id, 80, 500);
    await s.run(id, 40, 1500);
    await s.settle();
    await s.run(id, 10, 1500);
    const [incident] = await s.store.listIncidents(id);
    expect(incident).toMatchObject({ cause: "network", culpritNode: first!.nodes[1] });
    expect((incident!.evidence.decision as { sentence: string }).sentence).toMatch(
      /no spare host in p and the job cannot shrink: continue$/,
    );
    expect(s.executor.stops).toEqual([]);
    expect(await s.store.listAttempts(id)).toHaveLength(1);
  });

  it("a slowdown ridden out closes when the pace recovers: degraded time ends there", async () => {
    const s = await setup();
    const id = await s.submit("gray-recover", ["nodes: 3", "steps: 150", "detection: { slowdown: { factor: 1.1 } }"]);
    await s.run(id, 80, 500);
    await s.run(id, 40, 600);
    await s.settle();
    await s.run(id, 10, 600);
    const [incident] = await s.store.listIncidents(id);
    expect(incident!.evidence).toMatchObject({ endedAttempt: false });
    await s.run(id, 25, 500); // back to the baseline pace
    const recovered = (await s.store.listEvents({ jobId: id, limit: 10_000 })).find(
      (e) => e.kind === "slowdown.recovered",
    );
    expect(recovered?.data.incident).toBe(incident!.id);
    const before = (await jobReport(s.store, id, s.clock.now()))!.ledger.totals.degraded;
    await s.run(id, 10, 500);
    const after = (await jobReport(s.store, id, s.clock.now()))!.ledger.totals.degraded;
    expect(before).toBeGreaterThan(0);
    expect(after).toBe(before);
  });

  it("a slow chip: the rank whose compute time per step stands out names its host (probe healthy), which is evicted", async () => {
    const s = await setup();
    const id = await s.submit("chip", ["nodes: 3", "steps: 100000", "recovery: { backoffSeconds: 1 }"]);
    const [first] = await s.store.listAttempts(id);
    let step = 0;
    const steps = async (n: number, everyMs: number, slowRankCompute: number) => {
      for (let i = 0; i < n; i++) {
        s.clock.advance(everyMs);
        step++;
        for (const r of [0, 1, 2]) {
          s.executor.report(id, r, { kind: "step", step, loss: 1.5, compute_s: r === 2 ? slowRankCompute : 0.2 });
        }
        await s.supervisor.tick();
      }
    };
    await steps(80, 500, 0.2);
    await steps(40, 1500, 1.4);
    await s.settle();
    await steps(10, 1500, 1.4);
    const [incident] = await s.store.listIncidents(id);
    expect(incident).toMatchObject({ cause: "straggler", culpritRank: 2, culpritNode: first!.nodes[2] });
    expect(incident!.evidence).toMatchObject({ network: { kind: "healthy" }, straggler: { slowRanks: [2] } });
    expect((await s.store.listNodes()).find((n) => n.name === first!.nodes[2])!.cordoned).toBe(true);
  });

  it("a slow chip without the SDK's compute_s: CPU time per step from the node agent's heartbeats names its host", async () => {
    const s = await setup();
    const id = await s.submit("chip-cpu", ["nodes: 3", "steps: 100000", "recovery: { backoffSeconds: 1 }"]);
    const [first] = await s.store.listAttempts(id);
    const dir = path.dirname(s.executor.ranks(id)[0]!.logPath);
    const ticks = [0, 0, 0];
    let step = 0;
    // Each step a heartbeat per rank (as agent/node_agent.py writes rank-N.hb, overwritten): rank 1 computes for 1.3 s
    // of its step when slow while the others compute 0.2 s and wait for it.
    const steps = async (n: number, everyMs: number, slowTicks: number) => {
      for (let i = 0; i < n; i++) {
        s.clock.advance(everyMs);
        step++;
        for (const r of [0, 1, 2]) {
          ticks[r]! += r === 1 ? slowTicks : 20;
          writeFileSync(
            path.join(dir, `rank-${r}.hb`),
            JSON.stringify({ t: s.clock.now(), node: first!.nodes[r], pid: 1, state: "R", cpuTicks: ticks[r] }),
          );
          s.executor.report(id, r, { kind: "step", step, loss: 1.5 });
        }
        await s.supervisor.tick();
      }
    };
    await steps(80, 500, 20);
    await steps(40, 1500, 130);
    await s.settle();
    await steps(10, 1500, 130);
    const [incident] = await s.store.listIncidents(id);
    expect(incident).toMatchObject({ cause: "straggler", culpritRank: 1, culpritNode: first!.nodes[1] });
    const table = (incident!.evidence.straggler as { table: Array<{ rank: number; computeS: number }> }).table;
    expect(table[0]!.rank).toBe(1);
    expect(table[0]!.computeS).toBeGreaterThan(1);
  });

  it("every pair slow against what the pool's pairs reached before: the pool is degraded, the job moves to another pool", async () => {
    const s = await setup({ pools: [pool("a", 4, probed), pool("b", 3, probed)] });
    const id = await s.submit("pooled", ["nodes: 3", "steps: 100000", "recovery: { backoffSeconds: 1 }"]);
    const [first] = await s.store.listAttempts(id);
    expect(first!.pool).toBe("a");
    // First a host's link: evicted; the probe's fast pairs say what a healthy pair of pool a reaches.
    s.executor.slow.add(first!.nodes[0]!);
    await s.run(id, 80, 500);
    await s.run(id, 40, 1500);
    await s.settle();
    await s.run(id, 10, 1500);
    await s.tick(2000);
    const [, second] = await s.store.listAttempts(id);
    expect(second!.pool).toBe("a");
    expect(second!.nodes).not.toContain(first!.nodes[0]);
    // Then every link of the pool: every pair slow against that, the pool is degraded.
    for (const n of second!.nodes) s.executor.slow.add(n);
    await s.run(id, 80, 500);
    await s.run(id, 40, 1500);
    await s.settle();
    await s.run(id, 10, 1500);
    const incidents = await s.store.listIncidents(id);
    expect(incidents).toHaveLength(2);
    expect(incidents[1]).toMatchObject({ cause: "degraded", culpritNode: null });
    expect(incidents[1]!.evidence).toMatchObject({ network: { kind: "pool" }, endedAttempt: true });
    await s.tick(2000);
    const attempts = await s.store.listAttempts(id);
    expect(attempts[2]?.pool).toBe("b");
  });

  it("network pre-flight: a host whose link already collapsed is cordoned and left out before the attempt launches", async () => {
    const s = await setup({
      pools: [pool("p", 4, probed)],
    });
    s.executor.slow.add("p-1");
    const id = await s.submit("pre", ["nodes: 3"]);
    await s.tick(100);
    const [attempt] = await s.store.listAttempts(id);
    expect(attempt!.nodes).not.toContain("p-1");
    expect(attempt!.nodes).toHaveLength(3);
    expect(s.executor.probes[0]!.argv).toEqual(expect.arrayContaining(["--mode", "preflight"]));
    expect(s.executor.probes[0]!.nodes).toContain("p-1");
    const node = (await s.store.listNodes()).find((n) => n.name === "p-1")!;
    expect(node.cordoned).toBe(true);
    expect(node.reason).toMatch(/network pre-flight/);
    const events = await s.store.listEvents({ jobId: id, limit: 1000 });
    expect(events.find((e) => e.kind === "preflight.network")?.data.excluded).toEqual(["p-1"]);
    expect(events.find((e) => e.kind === "attempt.launched")?.message).toMatch(/network pre-flight left out p-1/);
    // A healthy set passes: the second probe (on the hosts launched) found nothing.
    expect(s.executor.probes).toHaveLength(2);
  });

  it("a local pool's network is not probed unless asked for: no pre-flight, and a slowdown with no culprit is ridden out", async () => {
    const s = await setup({ pools: [pool("p", 4)] });
    s.executor.slow.add("p-1");
    const id = await s.submit("nopre", ["nodes: 3", "steps: 100000"]);
    await s.tick(100);
    expect((await s.store.listAttempts(id))[0]!.nodes).toContain("p-1");
    await s.run(id, 80, 500);
    await s.run(id, 40, 1500);
    await s.settle();
    await s.run(id, 10, 1500);
    expect(s.executor.probes).toEqual([]);
    const [incident] = await s.store.listIncidents(id);
    expect(incident).toMatchObject({ cause: "degraded", culpritNode: null });
    expect(incident!.evidence).toMatchObject({ endedAttempt: false, network: null });
    expect((incident!.evidence.decision as { sentence: string }).sentence).toMatch(/no culprit to evict: continue$/);
    expect(s.executor.stops).toEqual([]);
  });

  it("a healthy run with checkpoint-length pauses opens no slowdown and runs no probe", async () => {
    const s = await setup();
    const id = await s.submit("healthy", ["nodes: 3", "steps: 100000"]);
    for (let k = 0; k < 6; k++) {
      await s.run(id, 40, 500);
      await s.run(id, 1, 4000); // an eval step
    }
    expect(await s.kinds(id)).not.toContain("slowdown.detected");
    expect(s.full()).toEqual([]);
    expect(await s.store.listIncidents(id)).toEqual([]);
  });
});
