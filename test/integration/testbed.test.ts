import { spawn, spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { packageRoot } from "../../src/paths.js";
import { noTestbed, slurmConf, slurmEnv, testbed } from "./testbed.js";

/**
 * The multi-host Slurm testbed (scripts/testbed.sh): six hosts with their own network stacks on one machine, a real
 * slurmctld and one slurmd per host, two partitions. Later capabilities (gray failures, node health, the Slurm
 * executor) are tested on it; this file tests the testbed itself: it comes up, runs steps across hosts, shapes a link
 * so that sustained traffic collapses, loses and revives a host, and leaves nothing behind.
 */

const xfer = path.join(packageRoot, "test", "fixtures", "testbed", "xfer.py");
const conf = slurmConf;
const env = { ...process.env, ...slurmEnv };
const skip = noTestbed;

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: "utf8", env, timeout: 60_000 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

function nodeStates(): Map<string, string> {
  const out = sh("sinfo", ["-h", "-N", "-o", "%N %P %T %f"]);
  return new Map(
    out
      .trim()
      .split("\n")
      .map((l) => l.trim().split(/\s+/))
      .map(([n, p, t, f]) => [n ?? "", `${(p ?? "").replace("*", "")} ${t} ${f}`]),
  );
}

/** Sends `mbytes` MiB from host `from` to host `to` over TCP; the sender's measured rate in Mbit/s. */
async function transfer(from: string, to: string, toAddr: string, mbytes: number): Promise<number> {
  const port = String(20_000 + Math.floor(Math.random() * 20_000));
  const server = spawn("nsenter", [`--net=/run/netns/sy-${to}`, "/usr/bin/python3", xfer, "serve", toAddr, port]);
  try {
    await new Promise<void>((resolve, reject) => {
      server.stdout.once("data", () => resolve());
      server.once("exit", (code) => reject(new Error(`receiver exited ${code}`)));
    });
    const out = sh("nsenter", [
      `--net=/run/netns/sy-${from}`,
      "/usr/bin/python3",
      xfer,
      "send",
      toAddr,
      port,
      `${mbytes}`,
    ]);
    return (JSON.parse(out) as { mbit_s: number }).mbit_s;
  } finally {
    server.kill("SIGKILL");
  }
}

async function waitFor<T>(what: string, probe: () => T | undefined, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

describe.skipIf(skip)("the multi-host Slurm testbed", () => {
  let wasUp = false;

  beforeAll(() => {
    wasUp = existsSync(conf);
    const r = testbed("up");
    expect(r.status, r.out).toBe(0);
  }, 120_000);

  afterAll(() => {
    testbed("heal", "a2");
    testbed("revive", "a4");
    if (!wasUp) testbed("down");
  }, 120_000);

  it("comes up with six idle hosts in two partitions that stand for two pools, and `up` again changes nothing", () => {
    const states = nodeStates();
    expect([...states.keys()].sort()).toEqual(["a1", "a2", "a3", "a4", "n1", "n2"]);
    for (const n of ["a1", "a2", "a3", "a4"]) expect(states.get(n)).toMatch(/^ascend idle ascend910b$/);
    for (const n of ["n1", "n2"]) expect(states.get(n)).toMatch(/^nvidia idle h20$/);
    const again = testbed("up");
    expect(again.status, again.out).toBe(0);
    expect(readdirSync("/run/netns").filter((n) => n.startsWith("sy-"))).toHaveLength(6);
  });

  it("runs one srun step across three hosts, each task in its own host's network stack", () => {
    const out = sh("srun", [
      "-p",
      "ascend",
      "-N3",
      "-n3",
      "bash",
      "-c",
      "echo \"$SLURMD_NODENAME $(ip -4 -o addr show eth0 | awk '{print $4}')\"",
    ]);
    const lines = out.trim().split("\n").sort();
    expect(lines).toHaveLength(3);
    const names = lines.map((l) => l.split(" ")[0]);
    const addrs = lines.map((l) => l.split(" ")[1]);
    expect(new Set(names).size).toBe(3);
    expect(new Set(addrs).size).toBe(3);
    for (const [i, name] of names.entries()) {
      expect(addrs[i]).toBe(`10.77.0.1${name?.slice(1)}/24`);
    }
  });

  it("degrade collapses one host's link under sustained load, both ways; heal restores it", async () => {
    const healthy = await transfer("a1", "a2", "10.77.0.12", 32);
    const shaped = testbed("degrade", "a2", "--rate", "100mbit");
    expect(shaped.status, shaped.out).toBe(0);
    const towards = await transfer("a1", "a2", "10.77.0.12", 8);
    const away = await transfer("a2", "a3", "10.77.0.13", 8);
    const elsewhere = await transfer("a1", "a3", "10.77.0.13", 32);
    expect(towards).toBeLessThan(150);
    expect(away).toBeLessThan(150);
    expect(elsewhere).toBeGreaterThan(towards * 3);
    expect(testbed("status").out).toMatch(/a2 link degraded/);
    expect(testbed("heal", "a2").status).toBe(0);
    const healed = await transfer("a1", "a2", "10.77.0.12", 32);
    expect(healed).toBeGreaterThan(towards * 3);
    expect(healthy).toBeGreaterThan(towards * 3);
  }, 60_000);

  it("kill-node takes a host off the network with every process on it; revive brings it back idle", async () => {
    expect(testbed("kill-node", "a4").status).toBe(0);
    expect(sh("ip", ["netns", "pids", "sy-a4"]).trim()).toBe("");
    expect(sh("ip", ["-br", "link", "show", "sy-a4-h"])).toMatch(/DOWN/);
    expect(testbed("revive", "a4").status).toBe(0);
    await waitFor("a4 idle again", () => (/idle/.test(nodeStates().get("a4") ?? "") ? true : undefined));
    expect(sh("ip", ["netns", "pids", "sy-a4"]).trim()).not.toBe("");
  }, 60_000);

  it("names the fix for an unknown host", () => {
    const r = testbed("degrade", "zz9");
    expect(r.status).not.toBe(0);
    expect(r.out).toMatch(/unknown node 'zz9' \(fix: one of a1 a2 a3 a4 n1 n2/);
  });

  it("down removes exactly what up created, and up rebuilds it", () => {
    expect(testbed("down").status).toBe(0);
    expect(existsSync("/run/netns") ? readdirSync("/run/netns").filter((n) => n.startsWith("sy-")) : []).toEqual([]);
    expect(spawnSync("ip", ["link", "show", "sybr0"]).status).not.toBe(0);
    expect(existsSync(conf)).toBe(false);
    expect(spawnSync("pgrep", ["-f", "slurmd -f /run/switchyard-testbed"]).status).not.toBe(0);
    const r = testbed("up");
    expect(r.status, r.out).toBe(0);
    expect(nodeStates().size).toBe(6);
  }, 120_000);
});
