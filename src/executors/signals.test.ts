import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import type { PoolSpec } from "../core/spec.js";
import { packageRoot, pythonSdkDir } from "../paths.js";
import { LocalExecutor } from "./local/local.js";
import { readProcStat } from "./local/procfs.js";
import type { RankHandle } from "./port.js";
import { catchesSignal, parseSigCgt } from "./signals.js";

/**
 * Stacks without the SDK: sdk/python/sitecustomize.py registers faulthandler on SIGUSR1 in every Python process a
 * rank starts, and SIGUSR1 goes only to processes that catch it (SigCgt), locally and through the node agent.
 */

const python = "/usr/bin/python3";
const root = mkdtempSync(path.join(os.tmpdir(), "sy-signals-"));
const children: ChildProcess[] = [];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

async function until<T>(probe: () => T | null | undefined | false, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = probe();
    if (v !== null && v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error("timed out");
    await sleep(50);
  }
}

/** A Python that prints "ready" once its interpreter has started, then waits; stderr collected. */
function startPython(env: NodeJS.ProcessEnv, code = "import time\nprint('ready', flush=True)\ntime.sleep(60)\n") {
  const child = spawn(python, ["-c", code], { env, stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  const out = { stdout: "", stderr: "" };
  child.stdout!.on("data", (d: Buffer) => (out.stdout += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out.stderr += d.toString()));
  return { child, out };
}

const rankEnv = (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({
  PATH: process.env.PATH,
  PYTHONPATH: pythonSdkDir,
  SWITCHYARD_JOB: "unmodified",
  ...extra,
});

describe("SigCgt", () => {
  it("parses the caught-signal mask of /proc/PID/status", () => {
    const status = "Name:\tpython3\nSigBlk:\t0000000000000000\nSigIgn:\t0000000001001000\nSigCgt:\t0000000180000202\n";
    expect(parseSigCgt(status)).toBe(0x180000202n);
    expect(parseSigCgt("Name:\tx\n")).toBeNull();
    expect(parseSigCgt("SigCgt:\tnot-hex\n")).toBeNull();
  });

  it("tells a process that catches SIGUSR1 from one that does not (and from one that is gone)", async () => {
    const sleeper = spawn("sleep", ["30"]);
    children.push(sleeper);
    const { child, out } = startPython(rankEnv());
    await until(() => out.stdout.includes("ready"));
    expect(catchesSignal(child.pid!, "SIGUSR1")).toBe(true);
    expect(catchesSignal(sleeper.pid!, "SIGUSR1")).toBe(false);
    expect(catchesSignal(2 ** 22 + 12345, "SIGUSR1")).toBe(false);
  });
});

describe("sdk/python/sitecustomize.py", () => {
  it("makes a script without the SDK write its Python stacks on SIGUSR1 and go on running", async () => {
    const code = [
      "import time",
      "def train_epoch():",
      "    print('ready', flush=True)",
      "    time.sleep(60)",
      "train_epoch()",
    ].join("\n");
    const { child, out } = startPython(rankEnv(), code);
    await until(() => out.stdout.includes("ready"));
    child.kill("SIGUSR1");
    const dump = await until(() => (out.stderr.includes("train_epoch") ? out.stderr : null));
    expect(dump).toMatch(/(Current thread|Thread) 0x[0-9a-f]+ \(most recent call first\):/);
    expect(dump).toContain('File "<string>", line 4 in train_epoch');
    await sleep(300);
    expect(child.exitCode).toBeNull();
    expect(child.signalCode).toBeNull();
    // A second dump works as well: the handler stays.
    child.kill("SIGUSR1");
    await until(() => out.stderr.split("most recent call first").length >= 3);
    expect(child.exitCode).toBeNull();
  });

  it("stays out of processes switchyard did not launch, and is turned off by SWITCHYARD_STACKS=0", async () => {
    for (const env of [rankEnv({ SWITCHYARD_JOB: "" }), rankEnv({ SWITCHYARD_STACKS: "0" })]) {
      const { child, out } = startPython(env);
      await until(() => out.stdout.includes("ready"));
      expect(catchesSignal(child.pid!, "SIGUSR1")).toBe(false);
    }
  });

  it("runs the next sitecustomize on sys.path (the distribution's) after itself", () => {
    const other = path.join(root, "distro");
    mkdirSync(other, { recursive: true });
    writeFileSync(
      path.join(other, "sitecustomize.py"),
      "import os, sys\nMARK = 'distro'\nprint('distro sitecustomize ran as', __name__, file=sys.stderr)\n",
    );
    const r = spawnSync(
      python,
      ["-c", "import sitecustomize, faulthandler, signal; print(sitecustomize.chained, sitecustomize.__file__)"],
      { env: rankEnv({ PYTHONPATH: [pythonSdkDir, other].join(path.delimiter) }), encoding: "utf8" },
    );
    expect(r.status).toBe(0);
    expect(r.stderr).toContain("distro sitecustomize ran as sitecustomize");
    expect(r.stdout.trim()).toBe(
      `${path.join(other, "sitecustomize.py")} ${path.join(pythonSdkDir, "sitecustomize.py")}`,
    );
  });

  it("chains to Debian's own sitecustomize where it exists", () => {
    const debian = "/usr/lib/python3.11/sitecustomize.py";
    if (!existsSync(debian) || !existsSync(python)) return;
    const r = spawnSync(python, ["-c", "import sitecustomize; print(sitecustomize.chained)"], {
      env: rankEnv(),
      encoding: "utf8",
    });
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe(debian);
  });

  it("never stops an interpreter from starting: a broken next sitecustomize is reported, not raised", () => {
    const broken = path.join(root, "broken");
    mkdirSync(broken, { recursive: true });
    writeFileSync(path.join(broken, "sitecustomize.py"), "raise RuntimeError('distro hook broke')\n");
    const r = spawnSync(python, ["-c", "print('started')"], {
      env: rankEnv({ PYTHONPATH: [pythonSdkDir, broken].join(path.delimiter) }),
      encoding: "utf8",
    });
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe("started");
    expect(r.stderr).toContain("switchyard: the next sitecustomize failed: RuntimeError: distro hook broke");
    // A closed stderr does not stop it either.
    const closed = spawnSync("/bin/sh", ["-c", `exec 2>&-; exec ${python} -c "print('started')"`], {
      env: rankEnv(),
      encoding: "utf8",
    });
    expect(closed.status).toBe(0);
    expect(closed.stdout.trim()).toBe("started");
  });
});

const pool: PoolSpec = { name: "p", executor: "local", accelerator: { vendor: "cpu" }, nodes: 1, devicesPerNode: 1 };

async function launchLocal(dir: string, command: string[]): Promise<RankHandle> {
  const [rank] = await new LocalExecutor().launch({
    jobId: "j-1",
    jobName: "j",
    attempt: 1,
    dir,
    pool,
    nodes: ["p-0"],
    procsPerNode: 1,
    command,
    env: {},
    workdir: os.tmpdir(),
    masterPort: 1,
    checkpointDir: path.join(dir, "ck"),
    resumeFrom: null,
  });
  return rank!;
}

describe("stack-dump requests (SIGUSR1) through the executors", () => {
  it("local: a rank that does not catch SIGUSR1 is not signalled (never killed by the dump)", async () => {
    const dir = path.join(root, "local-nohandler");
    const ex = new LocalExecutor();
    const rank = await launchLocal(dir, ["sleep", "30"]);
    const pid = await until(() => ex.rankPid(rank));
    await until(() => readFileSync(`/proc/${pid}/cmdline`, "utf8").startsWith("sleep"));
    expect(ex.signalRank(rank, "SIGUSR1")).toBe(false);
    await sleep(200);
    expect(readProcStat(pid)?.state).toMatch(/^[RS]$/);
    await ex.stop([rank], 1000);
  });

  it("local: a Python rank without the SDK (or one under a shell) writes its stacks and keeps running", async () => {
    const dir = path.join(root, "local-python");
    const ex = new LocalExecutor();
    const script =
      "import time\ndef wait_for_peers():\n    print('ready', flush=True)\n    time.sleep(60)\nwait_for_peers()\n";
    writeFileSync(path.join(root, "hung.py"), script);
    // Under a shell that does not catch SIGUSR1 itself: the Python below it gets the request.
    const rank = await launchLocal(dir, ["/bin/sh", "-c", `${python} ${path.join(root, "hung.py")}; exit 3`]);
    const log = path.join(dir, "rank-0.log");
    await until(() => existsSync(log) && readFileSync(log, "utf8").includes("ready"));
    expect(ex.signalRank(rank, "SIGUSR1")).toBe(true);
    const text = await until(() => {
      const t = readFileSync(log, "utf8");
      return t.includes("in wait_for_peers") ? t : null;
    });
    expect(text).toMatch(/most recent call first/);
    await sleep(200);
    expect(ex.processState(rank)).toMatch(/^[RS]$/);
    expect(existsSync(path.join(dir, "rank-0.exit"))).toBe(false);
    await ex.stop([rank], 1000);
  });

  it("node agent: SIGUSR1 only to a rank that catches it; a Python rank dumps its stacks and survives", async () => {
    const agent = path.join(packageRoot, "agent", "node_agent.py");
    for (const [name, command, catches] of [
      ["agent-sleep", ["sleep", "30"], false],
      ["agent-python", [python, "-c", "import time\nprint('ready', flush=True)\ntime.sleep(30)\n"], true],
    ] as const) {
      const dir = path.join(root, name);
      mkdirSync(path.join(dir, "ctl"), { recursive: true });
      const child = spawn(python, [agent, "--dir", dir, "--heartbeat", "0.2", "--", ...command], {
        env: rankEnv({ RANK: "0", WORLD_SIZE: "1" }),
        stdio: "ignore",
      });
      children.push(child);
      const info = await until(() => {
        try {
          return JSON.parse(readFileSync(path.join(dir, "rank-0.agent"), "utf8")) as { pid: number };
        } catch {
          return null;
        }
      });
      const log = path.join(dir, "rank-0.log");
      if (catches) await until(() => readFileSync(log, "utf8").includes("ready"));
      else await until(() => catchesSignal(info.pid, "SIGUSR1") === false && readProcStat(info.pid)?.state === "S");
      writeFileSync(path.join(dir, "ctl", "rank-0.000000000000001-0.SIGUSR1"), "{}");
      if (catches) await until(() => readFileSync(log, "utf8").includes("most recent call first"));
      else await sleep(800); // the agent looks at its control folder every 0.1 s
      expect(readProcStat(info.pid)?.state).toMatch(/^[RS]$/);
      expect(existsSync(path.join(dir, "rank-0.exit"))).toBe(false);
      writeFileSync(path.join(dir, "ctl", "stop"), JSON.stringify({ graceMs: 500 }));
      const exit = await until(() => {
        try {
          return JSON.parse(readFileSync(path.join(dir, "rank-0.exit"), "utf8")) as { code: number };
        } catch {
          return null;
        }
      });
      // Ended by the stop (SIGTERM: 143), not by the dump (SIGUSR1: 138).
      expect(exit.code).toBe(143);
    }
  });
});
