import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { noTestbed, testbedScript } from "./testbed.js";

/**
 * scripts/testbed.sh's munge handling, on private munge daemons (their own socket and testbed folder, the machine's
 * key): the shared testbed and the machine's munged are never touched. `up` records the munged it starts and `down`
 * stops exactly that one; a munged from an older testbed.sh (which asked munged for a pid file in root's folder, so
 * none was ever written, and it outlived `down`) is found by that pid-file argument, adopted by `up` and stopped by
 * `down`; a munged the testbed did not start is reused, said so, and left running.
 */

// Under /run, not the tests' 0700 TMPDIR: munged (user munge) must reach its socket folder.
const root = `/run/switchyard-munge-test-${process.pid}`;
const tbDir = path.join(root, "tb");
const socket = path.join(root, "sock", "munge.socket");
const env = { ...process.env, SWITCHYARD_TESTBED_DIR: tbDir, SWITCHYARD_TESTBED_MUNGE_SOCKET: socket };
/** Pids of munged daemons this file started itself (stopped in afterEach if a test left one). */
const started = new Set<number>();

/** Sources testbed.sh and calls one of its functions (up_munge, down_munge) with this file's folder and socket. */
function tb(fn: "up_munge" | "down_munge"): { status: number | null; out: string } {
  const r = spawnSync("bash", ["-c", `source "$1" && ${fn}`, "bash", testbedScript], {
    encoding: "utf8",
    env,
    timeout: 30_000,
  });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** The pid listening on this file's munge socket, read from ss directly (not through the script). */
function listener(): number | null {
  const r = spawnSync("ss", ["-xlpnH"], { encoding: "utf8" });
  for (const line of r.stdout.split("\n")) {
    const cols = line.trim().split(/\s+/);
    if (cols[4] !== socket) continue;
    const m = /pid=(\d+)/.exec(line);
    return m ? Number(m[1]) : null;
  }
  return null;
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const answers = (): boolean =>
  spawnSync("munge", [`--socket=${socket}`, "-n"], { input: "", stdio: ["pipe", "ignore", "ignore"] }).status === 0;

async function until(what: string, ok: () => boolean, timeoutMs = 8_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Starts a munged on this file's socket as another party would, with the given pid-file argument. */
async function startMunged(pidFile: string): Promise<number> {
  mkdirSync(path.dirname(socket), { recursive: true });
  spawnSync("chown", ["munge:munge", path.dirname(socket)]);
  const r = spawnSync("runuser", ["-u", "munge", "--", "munged", `--socket=${socket}`, `--pid-file=${pidFile}`], {
    encoding: "utf8",
  });
  expect(r.status, r.stderr).toBe(0);
  await until("the munged to answer", answers);
  const pid = listener();
  expect(pid).not.toBeNull();
  started.add(pid!);
  return pid!;
}

describe.skipIf(noTestbed)("testbed.sh: the munged it starts, adopts and leaves alone", () => {
  beforeAll(() => {
    mkdirSync(tbDir, { recursive: true, mode: 0o755 });
  });

  afterEach(async () => {
    for (const pid of started) {
      if (alive(pid) && readFileSync(`/proc/${pid}/comm`, "utf8").trim() === "munged") process.kill(pid, "SIGTERM");
      await until(`munged ${pid} to exit`, () => !alive(pid)).catch(() => process.kill(pid, "SIGKILL"));
      started.delete(pid);
    }
    rmSync(path.join(tbDir, "munged.foreign"), { force: true });
  });

  afterAll(() => {
    rmSync(root, { recursive: true, force: true });
  });

  it("up starts a munged and records its pid; a second up reuses it; down stops exactly it", async () => {
    expect(listener()).toBeNull();
    const up = tb("up_munge");
    expect(up.status, up.out).toBe(0);
    const m = /started munged \(pid (\d+)\) on (\S+); 'down' stops it/.exec(up.out);
    expect(m, up.out).not.toBeNull();
    const pid = Number(m![1]);
    started.add(pid);
    expect(m![2]).toBe(socket);
    expect(listener()).toBe(pid);
    expect(readFileSync(path.join(tbDir, "munge", "munged.pid"), "utf8").trim()).toBe(String(pid));
    expect(answers()).toBe(true);

    const again = tb("up_munge");
    expect(again.status, again.out).toBe(0);
    expect(again.out).not.toMatch(/started|reusing|adopted/);
    expect(listener()).toBe(pid);

    const down = tb("down_munge");
    expect(down.status, down.out).toBe(0);
    expect(down.out).toContain(`stopped the testbed's munged (pid ${pid})`);
    expect(alive(pid)).toBe(false);
    expect(answers()).toBe(false);
    expect(existsSync(path.join(tbDir, "munge"))).toBe(false);
  });

  it("a munged from an older testbed.sh (no pid file written) is adopted by up and stopped by down", async () => {
    // What the older version ran: munged (user munge) cannot write into the root-owned testbed folder.
    const pid = await startMunged(path.join(tbDir, "munged.pid"));
    expect(existsSync(path.join(tbDir, "munged.pid"))).toBe(false);

    const up = tb("up_munge");
    expect(up.status, up.out).toBe(0);
    expect(up.out).toContain(`adopted the testbed's munged (pid ${pid}), started without a pid file`);
    expect(readFileSync(path.join(tbDir, "munge", "munged.pid"), "utf8").trim()).toBe(String(pid));
    expect(listener()).toBe(pid);

    const down = tb("down_munge");
    expect(down.status, down.out).toBe(0);
    expect(down.out).toContain(`stopped the testbed's munged (pid ${pid})`);
    expect(alive(pid)).toBe(false);
  });

  it("down stops an older version's munged even when no up of this version recorded it", async () => {
    const pid = await startMunged(path.join(tbDir, "munged.pid"));
    const down = tb("down_munge");
    expect(down.status, down.out).toBe(0);
    expect(down.out).toContain(`stopped the testbed's munged (pid ${pid})`);
    expect(alive(pid)).toBe(false);
  });

  it("a munged the testbed did not start is reused, said so, and left running by down", async () => {
    const other = path.join(root, "other");
    mkdirSync(other, { recursive: true });
    spawnSync("chown", ["munge:munge", other]);
    const pid = await startMunged(path.join(other, "munged.pid"));

    const up = tb("up_munge");
    expect(up.status, up.out).toBe(0);
    expect(up.out).toContain(`reusing the munged already running on ${socket} (pid ${pid}), which the testbed did not`);
    expect(readFileSync(path.join(tbDir, "munged.foreign"), "utf8").trim()).toBe(String(pid));
    expect(existsSync(path.join(tbDir, "munge", "munged.pid"))).toBe(false);

    const down = tb("down_munge");
    expect(down.status, down.out).toBe(0);
    expect(down.out).toContain(`left the munged the testbed did not start running (pid ${pid})`);
    expect(alive(pid)).toBe(true);
    expect(answers()).toBe(true);
    expect(existsSync(path.join(tbDir, "munged.foreign"))).toBe(false);
  });
});
