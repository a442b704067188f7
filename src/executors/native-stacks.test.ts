import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { missing } from "../../test/requirements.js";
import type { PoolSpec } from "../core/spec.js";
import { packageRoot, pythonSdkDir } from "../paths.js";
import { hangWithStacks } from "../supervisor/detectors/hang.js";
import { LocalExecutor } from "./local/local.js";
import { readProcStat } from "./local/procfs.js";
import { findGdb, gdbArgv, nativeStacksExcerpt, nativeStacksPath } from "./native-stacks.js";

const root = mkdtempSync(path.join(os.tmpdir(), "sy-native-"));
const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill("SIGKILL");
});
afterAll(() => rmSync(root, { recursive: true, force: true }));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until<T>(probe: () => T | null | undefined | false, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = probe();
    if (v !== null && v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error("timed out");
    await sleep(100);
  }
}

const noGdb = missing("gdb", findGdb() !== null, "apt-get install gdb (Debian)");

const gdbOutput = [
  "[New LWP 4242]",
  "0x00007f in __GI___clock_nanosleep () at clock_nanosleep.c:71",
  "",
  'Thread 2 (Thread 0x7f1 (LWP 4242) "python3"):',
  "#0  0x00007f2 in __futex_abstimed_wait_common64 () at futex-internal.c:57",
  "#1  0x00007f3 in gloo::transport::tcp::UnboundBuffer::waitRecv () from libtorch_cpu.so",
  "",
  'Thread 1 (Thread 0x7f4 (LWP 4241) "python3"):',
  "#0  0x00007f5 in __GI___clock_nanosleep () at clock_nanosleep.c:71",
  "[Inferior 1 (process 4241) detached]",
].join("\n");

describe("native stacks (gdb)", () => {
  it("attaches in batch mode, prints every thread's backtrace and detaches", () => {
    expect(gdbArgv(123)).toEqual([
      "--batch",
      "--nx",
      "-p",
      "123",
      "-ex",
      "set pagination off",
      "-ex",
      "thread apply all bt",
    ]);
    expect(nativeStacksPath("/a/attempt-2/rank-1.log", 1)).toBe("/a/attempt-2/rank-1.native.txt");
  });

  it("keeps the thread headers and frames; says when gdb had not finished", () => {
    const done = path.join(root, "done.txt");
    writeFileSync(done, gdbOutput);
    expect(nativeStacksExcerpt(done)).toEqual([
      'Thread 2 (Thread 0x7f1 (LWP 4242) "python3"):',
      "#0  0x00007f2 in __futex_abstimed_wait_common64 () at futex-internal.c:57",
      "#1  0x00007f3 in gloo::transport::tcp::UnboundBuffer::waitRecv () from libtorch_cpu.so",
      'Thread 1 (Thread 0x7f4 (LWP 4241) "python3"):',
      "#0  0x00007f5 in __GI___clock_nanosleep () at clock_nanosleep.c:71",
    ]);
    const cut = path.join(root, "cut.txt");
    writeFileSync(cut, gdbOutput.split("\n").slice(0, 6).join("\n"));
    expect(nativeStacksExcerpt(cut).at(-1)).toBe(`(gdb had not finished at the end of the dump window: see ${cut})`);
    const refused = path.join(root, "refused.txt");
    writeFileSync(refused, "ptrace: Operation not permitted.\n");
    expect(nativeStacksExcerpt(refused)).toEqual(["(no backtrace: ptrace: Operation not permitted.)"]);
    expect(nativeStacksExcerpt(path.join(root, "none.txt"))).toEqual([]);
  });

  it("the hang incident carries the native stacks beside the Python ones", () => {
    const file = path.join(root, "rank-0.native.txt");
    writeFileSync(file, gdbOutput);
    const facts = hangWithStacks(
      {
        attempt: 1,
        deadline: 0,
        logPath: path.join(root, "rank-0.log"),
        nativePath: file,
        facts: {
          cause: "hang",
          culpritRank: 0,
          culpritNode: "n",
          faultAt: 0,
          detectedAt: 0,
          summary: "s",
          hard: false,
          signature: "",
          lastStep: null,
          evidence: {},
        },
      },
      ["Current thread 0x00007f (most recent call first):", '  File "train.py", line 3 in <module>'],
    );
    expect(facts.evidence.stack).toHaveLength(2);
    expect((facts.evidence.nativeStack as string[])[2]).toContain("gloo::transport::tcp::UnboundBuffer::waitRecv");
  });

  const pool: PoolSpec = { name: "p", executor: "local", accelerator: { vendor: "cpu" }, nodes: 1, devicesPerNode: 1 };

  it.skipIf(noGdb)(
    "local: gdb's backtraces of a running rank, which goes on running",
    async () => {
      const dir = path.join(root, "local");
      const ex = new LocalExecutor();
      const [rank] = await ex.launch({
        jobId: "j-1",
        jobName: "j",
        attempt: 1,
        dir,
        pool,
        nodes: ["p-0"],
        procsPerNode: 1,
        command: ["/usr/bin/python3", "-c", "import time\nprint('ready', flush=True)\ntime.sleep(60)\n"],
        env: {},
        workdir: os.tmpdir(),
        masterPort: 1,
        checkpointDir: path.join(dir, "ck"),
        resumeFrom: null,
      });
      await until(() => existsSync(rank!.logPath) && readFileSync(rank!.logPath, "utf8").includes("ready"));
      const file = nativeStacksPath(rank!.logPath, 0);
      expect(ex.nativeStacks(rank!, file, 50_000)).toBe(true);
      expect(statSync(file).mode & 0o777).toBe(0o600);
      const excerpt = await until(() => {
        const e = nativeStacksExcerpt(file);
        return readFileSync(file, "utf8").includes("detached]") ? e : null;
      });
      expect(excerpt[0]).toMatch(/^Thread 1 /);
      expect(excerpt.join("\n")).toMatch(/#0 .*(nanosleep|select|poll)/);
      await sleep(300);
      expect(ex.processState(rank!)).toMatch(/^[RS]$/);
      await ex.stop([rank!], 1000);
    },
    90_000,
  );

  it.skipIf(noGdb)(
    "node agent: a NATIVE control request writes the rank's backtraces into the attempt folder",
    async () => {
      const dir = path.join(root, "agent");
      mkdirSync(path.join(dir, "ctl"), { recursive: true });
      const agent = spawn(
        "/usr/bin/python3",
        [
          path.join(packageRoot, "agent", "node_agent.py"),
          "--dir",
          dir,
          "--heartbeat",
          "0.2",
          "--",
          "/usr/bin/python3",
          "-c",
          "import time\nprint('ready', flush=True)\ntime.sleep(60)\n",
        ],
        { env: { PATH: process.env.PATH, PYTHONPATH: pythonSdkDir, RANK: "0", WORLD_SIZE: "1" }, stdio: "ignore" },
      );
      children.push(agent);
      const info = await until(() => {
        try {
          return JSON.parse(readFileSync(path.join(dir, "rank-0.agent"), "utf8")) as { pid: number };
        } catch {
          return null;
        }
      });
      await until(() => readFileSync(path.join(dir, "rank-0.log"), "utf8").includes("ready"));
      writeFileSync(
        path.join(dir, "ctl", "rank-0.000000000000001-0.NATIVE"),
        JSON.stringify({ file: "rank-0.native.txt", timeoutMs: 50_000 }),
      );
      // A file name outside the contract is refused.
      writeFileSync(path.join(dir, "ctl", "rank-0.000000000000002-1.NATIVE"), JSON.stringify({ file: "../x.txt" }));
      const file = path.join(dir, "rank-0.native.txt");
      await until(() => existsSync(file) && readFileSync(file, "utf8").includes("detached]"));
      expect(nativeStacksExcerpt(file).join("\n")).toMatch(/#0 /);
      expect(existsSync(path.join(root, "x.txt"))).toBe(false);
      expect(readProcStat(info.pid)?.state).toMatch(/^[RS]$/);
      writeFileSync(path.join(dir, "ctl", "stop"), JSON.stringify({ graceMs: 500 }));
      await until(() => existsSync(path.join(dir, "rank-0.exit")));
    },
    90_000,
  );
});
