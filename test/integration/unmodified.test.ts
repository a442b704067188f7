import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApiClient } from "../../src/cli/client.js";
import { findGdb } from "../../src/executors/native-stacks.js";
import { packageRoot } from "../../src/paths.js";
import type { EventRecord } from "../../src/store/port.js";
import { missing } from "../requirements.js";
import { noTestbed, slurmConf, useTestbed } from "./testbed.js";
import {
  events,
  hasTorch,
  job,
  ranks,
  ServerProcess,
  sleep,
  submit,
  tempHome,
  waitFor,
  writeCluster,
} from "./harness.js";

/**
 * Unmodified training scripts (test/fixtures/unmodified: no switchyard import) under supervision: each is killed, hung
 * and has its control plane killed under it, and must come through. Two follow their own lines through a
 * progress.regex (as a user who took the suggestion would), two print nothing a progress source matches and are
 * watched through their output and CPU (the fallback). Then a script written for torchrun, launched through the CLI
 * in the short form and as `-- torchrun ...`, checks the torchrun environment it is given, across a restart. On the
 * Slurm testbed's NVIDIA pool, where CPU is no sign of progress, a rank that spins silently is found hung.
 */

const fixtures = path.join(packageRoot, "test", "fixtures", "unmodified");
const bin = path.join(packageRoot, "bin", "switchyard.js");

const cluster = [
  "pools:",
  "  - name: cpu",
  "    accelerator: { vendor: cpu }",
  "    nodes: 6",
  "    devicesPerNode: 2",
].join("\n");

interface Fixture {
  name: string;
  args: string[];
  /** A progress.regex, as a user would set from the suggestion; none: the output-or-CPU fallback. */
  regex?: string;
  /** The rank the hang scenario stops. */
  hangRank: number;
  /** What the fallback's suggestion must read (fallback fixtures). */
  suggests?: RegExp;
}

const scripts: Fixture[] = [
  {
    name: "ddp_snapshot",
    args: ["80", "2", "--batch_size", "32", "--batch_delay", "0.02"],
    hangRank: 1,
    suggests: /^Epoch\\s\*\(\?<step>\\d\+\)$/,
  },
  {
    name: "tqdm_bar",
    args: ["--epochs", "40", "--steps", "40", "--step-delay", "0.03"],
    hangRank: 0,
    suggests: /^Epoch/,
  },
  {
    name: "epoch_prints",
    args: ["--epochs", "150", "--steps-per-epoch", "8", "--step-delay", "0.03"],
    regex: "epoch (?<step>\\d+)/\\d+ train_loss=(?<loss>\\S+)",
    hangRank: 1,
  },
  {
    name: "logging_lines",
    args: ["--max-steps", "1500", "--log-every", "10", "--step-delay", "0.02"],
    regex: "step (?<step>\\d+) \\| loss (?<loss>\\S+)",
    hangRank: 0,
  },
];

function spec(f: Fixture, workdir: string): string {
  return [
    `name: ${f.name.replace(/_/g, "-")}`,
    "nodes: 1",
    "procsPerNode: 2",
    `command: ${JSON.stringify(["{python}", path.join(fixtures, `${f.name}.py`), ...f.args])}`,
    `workdir: ${JSON.stringify(workdir)}`,
    ...(f.regex ? [`progress: { regex: ${JSON.stringify(f.regex)} }`] : []),
    // Past the startup window, a silent gang is hung after 10 s (the fallback: no output and no CPU for 10 s).
    "detection: { startupSeconds: 15, hangMinSeconds: 10, stackDumpSeconds: 5 }",
    // Several incidents on one node are the test's doing, not the node's: no cordon.
    "recovery: { maxRestarts: 6, backoffSeconds: 0.5, strikesBeforeCordon: 100, graceSeconds: 3 }",
  ].join("\n");
}

function cli(home: string, cwd: string, args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, "--home", home, ...args], {
      cwd,
      env: { ...process.env, SWITCHYARD_HOME: home },
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.once("close", (code) => resolve({ code: code ?? -1, out, err }));
  });
}

const logOf = (home: string, id: string, attempt: number, rank: number): string => {
  const file = path.join(home, "jobs", id, `attempt-${attempt}`, `rank-${rank}.log`);
  return existsSync(file) ? readFileSync(file, "utf8") : "";
};
const pidAlive = (pid: number): boolean => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !["Z", "X"].includes(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0]!);
  } catch {
    return false;
  }
};

interface JobDetailView {
  id: string;
  state: string;
  reason: string | null;
  last: { step: number; attempt: number } | null;
  attempts: Array<{ n: number; startedAt: number; endedAt: number | null }>;
  incidents: Array<{
    attempt: number;
    cause: string;
    culpritRank: number | null;
    summary: string;
    detectedAt: number;
    evidence: Record<string, unknown>;
  }>;
}

const detail = (client: ApiClient, id: string) => client.get<JobDetailView>(`/api/jobs/${id}`);

/** The current attempt is running and its ranks have shown that they train (a matched step, or output). */
async function waitTraining(client: () => ApiClient, home: string, id: string, f: Fixture, attempt: number) {
  await waitFor(
    `${f.name} training in attempt ${attempt}`,
    async () => {
      const d = await detail(client(), id);
      if (["FAILED", "CANCELLED", "SUCCEEDED"].includes(d.state))
        throw new Error(`${f.name} ended ${d.state}: ${d.reason}`);
      if (d.attempts.length !== attempt) return null;
      if (f.regex) return d.last?.attempt === attempt && d.last.step >= 2;
      const text = logOf(home, id, attempt, 0);
      return /Epoch [1-9]/.test(text);
    },
    150_000,
  );
}

const noGdb = hasTorch && missing("gdb", findGdb() !== null, "apt-get install gdb (scripts/bootstrap.sh does)");

describe.skipIf(!hasTorch)("unmodified scripts: kill, hang and server kill", () => {
  const home = tempHome("unmodified");
  const server = new ServerProcess(home, writeCluster(home, cluster));
  let client: ApiClient;
  beforeAll(async () => {
    client = await server.start();
  }, 60_000);
  afterAll(() => server.stop());

  it("every fixture comes through all three; a hung script's incident shows its stack and it is not killed by the dump", async () => {
    const ids = new Map<string, string>();
    for (const f of scripts) {
      const workdir = path.join(home, "work", f.name);
      mkdirSync(workdir, { recursive: true });
      ids.set(f.name, await submit(client, workdir, f.name, spec(f, workdir)));
    }
    const idOf = (f: Fixture) => ids.get(f.name)!;
    const current = () => client;
    await Promise.all(scripts.map((f) => waitTraining(current, home, idOf(f), f, 1)));

    // --- server kill: the control plane dies mid-run; every rank goes on, and the new server re-adopts them.
    const before = new Map<string, number[]>();
    for (const f of scripts)
      before.set(
        f.name,
        (await ranks(client, idOf(f))).map((r) => r.rankPid ?? r.pid!),
      );
    server.kill9();
    await sleep(2000);
    for (const f of scripts)
      for (const pid of before.get(f.name)!) expect(pidAlive(pid), `${f.name} pid ${pid}`).toBe(true);
    client = await server.start();
    for (const f of scripts) {
      const id = idOf(f);
      const grewFrom = logOf(home, id, 1, 0).length;
      await waitFor(
        `${f.name} to go on after the server restart`,
        async () => logOf(home, id, 1, 0).length > grewFrom,
        60_000,
      );
      const d = await detail(client, id);
      expect(d.attempts, f.name).toHaveLength(1);
      expect(d.incidents, f.name).toEqual([]);
      expect(
        (await events(client, id)).some((e) => e.kind === "supervisor.adopted"),
        f.name,
      ).toBe(true);
    }

    // --- kill: a rank dies; the gang is restarted (attempt 2), the culprit named.
    await Promise.all(
      scripts.map(async (f) => {
        const id = idOf(f);
        await client.post(`/api/jobs/${id}/chaos`, { action: "kill-rank", rank: 1 });
        const d = await waitFor(`${f.name}'s kill incident`, async () => {
          const v = await detail(client, id);
          return v.incidents.length >= 1 ? v : null;
        });
        expect(d.incidents[0], f.name).toMatchObject({ cause: "killed", culpritRank: 1 });
        await waitTraining(() => client, home, id, f, 2);
      }),
    );

    // --- hang: a rank is stopped; found from progress alone (regex) or from output and CPU (fallback).
    await Promise.all(
      scripts.map(async (f) => {
        const id = idOf(f);
        // The fallback judges silence only past the startup window (15 s after the launch).
        const started = (await detail(client, id)).attempts[1]!.startedAt;
        await waitFor(
          `${f.name}'s attempt 2 past its startup window`,
          async () => Date.now() > started + 16_000,
          60_000,
        );
        const pids = await waitFor(`${f.name}'s rank pids`, async () => {
          const rs = await ranks(client, id);
          const known = rs.filter((r) => r.attempt === 2 && r.rankPid != null).map((r) => r.rankPid!);
          return known.length === 2 ? known : null;
        });
        await client.post(`/api/jobs/${id}/chaos`, { action: "hang-rank", rank: f.hangRank });
        // The stack dump (SIGUSR1) does not end the ranks: alive when their stacks are in the log, and a second
        // later, well before the dump deadline (5 s after detection) at which the supervisor stops the gang.
        await waitFor(
          `${f.name}'s stack dump`,
          async () => logOf(home, id, 2, f.hangRank).includes("(most recent call first):"),
          90_000,
        );
        for (const pid of pids) expect(pidAlive(pid), `${f.name} pid ${pid} after the dump`).toBe(true);
        await sleep(1000);
        for (const pid of pids) expect(pidAlive(pid), `${f.name} pid ${pid} 1 s after the dump`).toBe(true);
        const d = await waitFor(
          `${f.name}'s hang incident`,
          async () => {
            const v = await detail(client, id);
            return v.incidents.length >= 2 ? v : null;
          },
          90_000,
        );
        const hang = d.incidents[1]!;
        expect(hang, f.name).toMatchObject({ cause: "hang", culpritRank: f.hangRank });
        expect(hang.summary, f.name).toMatch(f.regex ? /^no progress for/ : /^no output or CPU activity for/);
        // Its Python stack, from a script that never imported switchyard.
        const stack = (hang.evidence.stack ?? []) as string[];
        expect(stack[0], f.name).toMatch(/(Thread|Current thread) 0x[0-9a-f]+ \(most recent call first\):/);
        expect(stack.join("\n"), f.name).toContain(`${f.name}.py`);
        // The stacks of the other rank are in its log too.
        expect(logOf(home, id, 2, 1 - f.hangRank), f.name).toContain("(most recent call first):");
      }),
    );

    // --- and each finishes.
    await Promise.all(
      scripts.map(async (f) => {
        const id = idOf(f);
        const end = await waitFor(
          `${f.name} to end`,
          async () => {
            const v = await detail(client, id);
            return ["FAILED", "CANCELLED", "SUCCEEDED"].includes(v.state) ? v : null;
          },
          300_000,
        );
        expect(end.state, `${f.name}: ${end.reason}`).toBe("SUCCEEDED");
        expect(
          end.incidents.map((i) => i.cause),
          f.name,
        ).toEqual(["killed", "hang"]);
        const evs = await events(client, id);
        const fallback = evs.filter((e: EventRecord) => e.kind === "progress.fallback");
        if (f.regex) {
          expect(fallback, f.name).toEqual([]);
        } else {
          expect(fallback.length, f.name).toBeGreaterThanOrEqual(1);
          expect(fallback[0]!.message, f.name).toMatch(/^progress: none matched after \d+s \(no SDK step report/);
          expect(String(fallback[0]!.data.regex), f.name).toMatch(f.suggests!);
        }
      }),
    );
    // The DDP-tutorial script resumed from its own snapshot.pt after each restart.
    const ddp = idOf(scripts[0]!);
    expect(logOf(home, ddp, 3, 0)).toMatch(/Resuming training from snapshot at Epoch \d+/);
  }, 900_000);

  it.skipIf(noGdb)(
    "with detection.nativeStacks, a hung rank's incident also has gdb's backtraces (the gloo wait below Python)",
    async () => {
      const workdir = path.join(home, "work", "native");
      mkdirSync(workdir, { recursive: true });
      const f = scripts[2]!;
      const yaml = spec(f, workdir)
        .replace(/^name: .*$/m, "name: native")
        .replace("stackDumpSeconds: 5 }", "stackDumpSeconds: 30, nativeStacks: true }");
      const id = await submit(client, workdir, "native", yaml);
      await waitTraining(() => client, home, id, f, 1);
      await client.post(`/api/jobs/${id}/chaos`, { action: "hang-rank", rank: 1 });
      const d = await waitFor(
        "the hang incident",
        async () => {
          const v = await detail(client, id);
          return v.incidents.length >= 1 ? v : null;
        },
        150_000,
      );
      const hang = d.incidents[0]!;
      expect(hang).toMatchObject({ cause: "hang", culpritRank: 1 });
      expect(String((hang.evidence.stack as string[])[0])).toMatch(/most recent call first/);
      const native = (hang.evidence.nativeStack ?? []) as string[];
      expect(native[0], JSON.stringify(native)).toMatch(/^Thread \d+ /);
      expect(native.filter((l) => /^#\d+ /.test(l)).length).toBeGreaterThan(3);
      await client.post(`/api/jobs/${id}/cancel`);
    },
    240_000,
  );

  it("describe says what hang detection watches when nothing matched, and suggests a regex", async () => {
    const workdir = path.join(home, "work", "describe");
    mkdirSync(workdir, { recursive: true });
    const f = scripts[0]!;
    const id = await submit(
      client,
      workdir,
      "describe",
      spec({ ...f, args: ["200", "50", "--batch_delay", "0.02"] }, workdir).replace(/^name: .*$/m, "name: describe-me"),
    );
    await waitFor(
      "the progress.fallback event",
      async () => (await events(client, id)).some((e) => e.kind === "progress.fallback"),
      120_000,
    );
    const r = await cli(home, workdir, ["describe", id]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain(
      "progress  none matched; watching output and CPU — suggest regex: 'Epoch\\s*(?<step>\\d+)'",
    );
    await client.post(`/api/jobs/${id}/cancel`);
  }, 200_000);
});

describe.skipIf(!hasTorch)("torchrun command lines, run by switchyard's launcher", () => {
  const home = tempHome("torchrun");
  const server = new ServerProcess(home, writeCluster(home, cluster));
  let client: ApiClient;
  beforeAll(async () => {
    client = await server.start();
  }, 60_000);
  afterAll(() => server.stop());

  const envLine = (text: string): Record<string, string> => {
    const m = /^torchrun-env (\{.*\})$/m.exec(text);
    if (!m) throw new Error(`no torchrun-env line in:\n${text.slice(-2000)}`);
    return JSON.parse(m[1]!) as Record<string, string>;
  };

  it("the short form and -- torchrun give the script the environment torchrun would; the restart count grows", async () => {
    const forms = [
      ["run", "--nproc-per-node", "2", "--name", "short-form", "torchrun_env.py", "--epochs", "400"],
      [
        "run",
        "--",
        "torchrun",
        "--standalone",
        "--nproc_per_node=2",
        "--max_restarts=3",
        "--rdzv_id=exp-42",
        "torchrun_env.py",
        "--epochs",
        "400",
      ],
    ];
    for (const args of forms) {
      const r = await cli(home, fixtures, ["--json", ...args]);
      expect(r.code, r.err).toBe(0);
      const submitted = JSON.parse(r.out) as { id: string };
      const id = submitted.id;
      const runId = args.includes("--rdzv_id=exp-42") ? "exp-42" : id;
      const maxRestarts = args.includes("--max_restarts=3") ? "3" : "10";
      const envs = await waitFor(`${id}'s ranks to print their env`, async () => {
        try {
          return [0, 1].map((rank) => envLine(logOf(home, id, 1, rank)));
        } catch {
          return null;
        }
      });
      envs.forEach((env, rank) =>
        expect(env, `${id} rank ${rank}`).toEqual({
          RANK: String(rank),
          LOCAL_RANK: String(rank),
          WORLD_SIZE: "2",
          LOCAL_WORLD_SIZE: "2",
          GROUP_RANK: "0",
          GROUP_WORLD_SIZE: "1",
          ROLE_RANK: String(rank),
          ROLE_WORLD_SIZE: "2",
          ROLE_NAME: "default",
          MASTER_ADDR: "127.0.0.1",
          MASTER_PORT: env.MASTER_PORT,
          TORCHELASTIC_RESTART_COUNT: "0",
          TORCHELASTIC_MAX_RESTARTS: maxRestarts,
          TORCHELASTIC_RUN_ID: runId,
          TORCHELASTIC_USE_AGENT_STORE: "False",
          OMP_NUM_THREADS: "1",
        }),
      );
      expect(Number(envs[0]!.MASTER_PORT)).toBeGreaterThan(0);
      await waitFor(`${id} training`, async () => /^epoch 1 /m.test(logOf(home, id, 1, 0)));
      await client.post(`/api/jobs/${id}/chaos`, { action: "kill-rank", rank: 0 });
      const again = await waitFor(`${id}'s second attempt to print its env`, async () => {
        try {
          return envLine(logOf(home, id, 2, 1));
        } catch {
          return null;
        }
      });
      expect(again.TORCHELASTIC_RESTART_COUNT).toBe("1");
      expect(again.TORCHELASTIC_RUN_ID).toBe(runId);
      expect(again.MASTER_PORT).not.toBe(envs[0]!.MASTER_PORT);
      const j = await job(client, id);
      expect(j.incidents.map((i) => i.cause)).toEqual(["killed"]);
      await client.post(`/api/jobs/${id}/cancel`);
    }
  }, 400_000);
});

const slurmCluster = `
pools:
  - name: nvidia
    executor: slurm
    accelerator: { vendor: nvidia, model: H20 }
    devicesPerNode: 1
    slurm: { partition: nvidia, agentPython: /usr/bin/python3, env: { GLOO_SOCKET_IFNAME: eth0 } }
`;

describe.skipIf(noTestbed || !hasTorch)("an unmodified script on the Slurm testbed", () => {
  const home = tempHome("unmodified-slurm");
  let server: ServerProcess;
  let client: ApiClient;
  let down: () => void = () => {};
  beforeAll(async () => {
    process.env.SLURM_CONF = slurmConf;
    down = useTestbed();
    server = new ServerProcess(home, writeCluster(home, slurmCluster));
    client = await server.start();
  }, 120_000);
  /** The job, cancelled after the test even when it failed: its ranks outlive the server, and one spins. */
  let jobId: string | null = null;
  afterAll(async () => {
    if (jobId) await client.post(`/api/jobs/${jobId}/cancel`).catch(() => {});
    await server.stop();
    down();
  });

  it("on an NVIDIA pool a rank that spins on the CPU without output is hung (output alone counts there); its stacks come from the remote host, and the dump does not end it", async () => {
    const workdir = path.join(home, "work");
    mkdirSync(workdir, { recursive: true });
    const f: Fixture = { name: "spin_behind_peer", args: [], hangRank: 1 };
    const yaml = spec(f, workdir).replace("nodes: 1", "nodes: 2").replace("procsPerNode: 2", "procsPerNode: 1");
    const id = await submit(client, workdir, "spin-behind-peer", yaml);
    jobId = id;
    await waitFor("two epochs", async () => /^epoch 2\//m.test(logOf(home, id, 1, 0)), 150_000);
    const started = (await detail(client, id)).attempts[0]!.startedAt;
    await waitFor("the startup window to pass", async () => Date.now() > started + 16_000, 60_000);
    // The fallback is in force, and describe says that output alone is watched on this pool.
    await waitFor(
      "the progress.fallback event",
      async () => (await events(client, id)).some((e) => e.kind === "progress.fallback"),
      60_000,
    );
    const described = await cli(home, workdir, ["describe", id]);
    expect(described.code, described.err).toBe(0);
    expect(described.out).toContain("progress  none matched; watching output (not CPU: an accelerator pool) — ");
    const attemptDir = path.join(home, "jobs", id, "attempt-1");
    const hb = path.join(attemptDir, "rank-1.hb");
    const exit = path.join(attemptDir, "rank-1.exit");
    type Beat = { t: number; cpuTicks: number };
    const beat = (): Beat => JSON.parse(readFileSync(hb, "utf8")) as Beat;
    writeFileSync(path.join(workdir, "spin-1"), "");
    await sleep(3000);
    const spinning = beat();
    await waitFor(
      "rank 1's stack dump",
      async () => logOf(home, id, 1, 1).includes("(most recent call first):"),
      90_000,
    );
    // Rank 1 was busy on the CPU all along (its node agent's records: far above the 5% of a core that counts as
    // activity on a CPU pool), yet it was found hung. The dump did not end it: no exit record, and it still beats.
    const dumped = beat();
    expect(dumped.t - spinning.t).toBeGreaterThan(5_000);
    expect((dumped.cpuTicks - spinning.cpuTicks) / ((dumped.t - spinning.t) / 1000)).toBeGreaterThan(20);
    expect(existsSync(exit)).toBe(false);
    await sleep(1500);
    expect(existsSync(exit)).toBe(false);
    expect(beat().t).toBeGreaterThan(dumped.t);
    const d = await waitFor(
      "the hang incident",
      async () => {
        const v = await detail(client, id);
        return v.incidents.length >= 1 ? v : null;
      },
      60_000,
    );
    expect(d.incidents[0]).toMatchObject({ cause: "hang", culpritRank: 1 });
    expect(d.incidents[0]!.summary).toMatch(
      /^no output for \d+(\.\d)?s \(timeout \d+(\.\d)?s; no progress source matched, so output was watched: CPU does not count on an accelerator pool\);/,
    );
    expect(d.incidents[0]!.evidence).toMatchObject({ progressSource: "output" });
    const stack = ((d.incidents[0]!.evidence.stack ?? []) as string[]).join("\n");
    expect(stack).toContain("spin_behind_peer.py");
    expect(stack).toContain("spin_on_device");
    await client.post(`/api/jobs/${id}/cancel`);
  }, 400_000);
});
