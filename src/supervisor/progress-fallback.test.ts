import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { systemClock } from "../core/clock.js";
import { compileJobSpec, type ClusterSpec } from "../core/spec.js";
import { LocalExecutor } from "../executors/local/local.js";
import { SqliteStore } from "../store/sqlite.js";
import { Supervisor } from "./supervisor.js";

/**
 * The progress fallback in the supervisor, over real parts (SQLite, the local executor, /bin/sh ranks) on the real
 * clock (activity is dated by file mtimes and CPU time): a script with no progress source is judged by its output
 * and CPU after the startup window; one with a working source (the SDK's report file) keeps the startup timeout.
 */

const cluster: ClusterSpec = {
  pools: [
    { name: "p", executor: "local", accelerator: { vendor: "cpu" }, nodes: 4, devicesPerNode: 1 },
    { name: "gpu", executor: "local", accelerator: { vendor: "nvidia", model: "H100" }, nodes: 2, devicesPerNode: 1 },
  ],
};
const root = mkdtempSync(path.join(os.tmpdir(), "sy-fallback-"));
const stops: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const stop of stops.splice(0)) await stop();
});
afterAll(() => rmSync(root, { recursive: true, force: true }));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function setup(name: string) {
  const home = path.join(root, name);
  mkdirSync(path.join(home, "work"), { recursive: true });
  const store = new SqliteStore(path.join(home, "state.db"));
  const supervisor = new Supervisor({
    store,
    executor: new LocalExecutor(),
    clock: systemClock,
    cluster,
    home,
    pollMs: 1e9,
  });
  await supervisor.start();
  stops.push(async () => {
    for (const j of await store.listJobs({ activeOnly: true })) await supervisor.cancel(j.id);
    await supervisor.stop();
    await store.close();
  });
  const submit = (job: string, script: string, pool = "p") => {
    const yaml = [
      `name: ${job}`,
      `pools: [${pool}]`,
      `workdir: ${JSON.stringify(path.join(home, "work"))}`,
      `command: ["/bin/sh", "-c", ${JSON.stringify(script)}]`,
      "detection: { startupSeconds: 1, hangMinSeconds: 2, hangMultiple: 3, stackDumpSeconds: 0 }",
      "recovery: { maxRestarts: 0, graceSeconds: 1 }",
    ].join("\n");
    const file = path.join(home, `${job}.yaml`);
    writeFileSync(file, yaml);
    return supervisor.submit(compileJobSpec(yaml, { file, cluster, defaultCheckpointRoot: path.join(home, "ck") }));
  };
  /** Ticks for `ms` of real time (every 100 ms). */
  const run = async (ms: number) => {
    const until = Date.now() + ms;
    while (Date.now() < until) {
      await supervisor.tick();
      await sleep(100);
    }
  };
  return { store, submit, run };
}

describe("progress fallback: output or CPU when no progress source matched", () => {
  it("a script that prints (nothing a progress source matches) is not hung past the startup window; silent, it is", async () => {
    const { store, submit, run } = await setup("prints");
    const printing = await submit("printing", 'i=0; while :; do i=$((i+1)); echo "batch done $i"; sleep 0.2; done');
    const silent = await submit("silent", "echo loading; exec sleep 30");
    await run(6000);
    // Before the fallback, both were hung once startupSeconds (1 s) passed without a step.
    expect(await store.listIncidents(printing.id)).toEqual([]);
    const [hang] = await store.listIncidents(silent.id);
    expect(hang).toMatchObject({ cause: "hang" });
    expect(hang!.summary).toMatch(
      /^no output or CPU activity for \d+(\.\d)?s \(timeout 2s; no progress source matched/,
    );
    const events = await store.listEvents({ jobId: printing.id });
    expect(events.some((e) => e.kind === "progress.fallback")).toBe(true);
  }, 60_000);

  it("a rank that only burns CPU is alive on a CPU pool and hung on an accelerator pool, where output alone counts", async () => {
    const { store, submit, run } = await setup("spin");
    // One line, then a busy loop that prints nothing: a rank spinning in a CUDA stream sync or NCCL's proxy thread
    // behind a dead peer looks like this from the outside.
    const spin = "echo loading; while :; do :; done";
    const onCpu = await submit("spin-cpu", spin, "p");
    const onGpu = await submit("spin-gpu", spin, "gpu");
    await run(6000);
    expect(await store.listIncidents(onCpu.id)).toEqual([]);
    const [hang] = await store.listIncidents(onGpu.id);
    expect(hang).toMatchObject({ cause: "hang", culpritRank: 0 });
    expect(hang!.summary).toMatch(
      /^no output for \d+(\.\d)?s \(timeout 2s; no progress source matched, so output was watched: CPU does not count on an accelerator pool\);/,
    );
    expect(hang!.evidence).toMatchObject({ progressSource: "output" });
    // The fallback event says what is watched on each pool (describe shows it).
    const said = async (id: string) =>
      (await store.listEvents({ jobId: id })).find((e) => e.kind === "progress.fallback")?.data.watched;
    expect(await said(onCpu.id)).toBe("output and CPU");
    expect(await said(onGpu.id)).toBe("output (not CPU: an accelerator pool)");
  }, 60_000);

  it("a rank with a working progress source (an SDK report file) keeps the startup timeout for its first step", async () => {
    const { store, submit, run } = await setup("sdk");
    const sdk = await submit(
      "sdk",
      'echo \'{"kind": "start", "pid": 1}\' >> "$SWITCHYARD_REPORT"; while :; do echo working; sleep 0.2; done',
    );
    await run(4000);
    const [hang] = await store.listIncidents(sdk.id);
    expect(hang).toMatchObject({ cause: "hang" });
    expect(hang!.summary).toMatch(/^no progress for/);
    expect((await store.listEvents({ jobId: sdk.id })).some((e) => e.kind === "progress.fallback")).toBe(false);
  }, 60_000);
});
