import { spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { listNodes, nodeUnusable } from "../../src/executors/slurm/slurm-cli.js";
import { packageRoot } from "../../src/paths.js";
import { hasTorch, tempHome } from "./harness.js";
import { noTestbed, slurmConf, slurmEnv } from "./testbed.js";

/**
 * `switchyard demo --slurm` as a user runs it: the seed's story across the hosts of the Slurm testbed (a rank killed on
 * one host, a hung rank, a whole host killed, the move from partition ascend to nvidia), ending with the report, what
 * Slurm says, and the testbed left as the demo found it.
 */

const bin = path.join(packageRoot, "bin", "switchyard.js");

interface Run {
  code: number;
  out: string;
  err: string;
}

function cli(args: string[], opts: { env?: NodeJS.ProcessEnv; uid?: number; gid?: number } = {}): Promise<Run> {
  const child = spawn(process.execPath, [bin, ...args], {
    cwd: packageRoot,
    env: opts.env ?? process.env,
    ...(opts.uid !== undefined ? { uid: opts.uid, gid: opts.gid } : {}),
  });
  let out = "";
  let err = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (err += d.toString()));
  return new Promise((resolve) =>
    child.once("close", (code, signal) => resolve({ code: code ?? (signal ? 128 : -1), out, err })),
  );
}

type Line = Record<string, unknown> & { type: string };

interface Incident {
  attempt: number;
  cause: string;
  culpritRank: number | null;
  culpritNode: string | null;
  summary: string;
}

interface Attempt {
  n: number;
  pool: string;
  nodes: string[];
  resumeStep: number | null;
}

/** The namespaces, links and daemons the testbed makes: none of them when it is down. */
function testbedTraces(): string[] {
  const ns = spawnSync("ip", ["netns", "list"], { encoding: "utf8" }).stdout ?? "";
  const links = spawnSync("ip", ["-o", "link", "show"], { encoding: "utf8" }).stdout ?? "";
  return [
    ...ns.split("\n").filter((l) => l.startsWith("sy-")),
    ...links.split("\n").filter((l) => /\s(sybr0|sy-\w+-h)[@:]/.test(l)),
    ...(existsSync(slurmConf) ? [slurmConf] : []),
  ];
}

/** As root, the not-root check is played by user nobody, which must be able to read the built CLI (not under /root). */
const asRoot = process.getuid?.() === 0;
const nobodyCanRunCli =
  !asRoot ||
  spawnSync(
    process.execPath,
    ["-e", "require('node:fs').accessSync(process.argv[1], 4)", path.join(packageRoot, "dist", "cli", "main.js")],
    {
      uid: 65534,
      gid: 65534,
    },
  ).status === 0;

describe("switchyard demo --slurm refuses what it cannot run on", () => {
  it.skipIf(!nobodyCanRunCli)(
    "exits 2 naming the fix when not root",
    async () => {
      const home = tempHome("demo-slurm-user");
      chmodSync(home, 0o777);
      // As root, the check is played by a plain user (nobody); as anyone else, the current user is one.
      const asUser = asRoot ? { uid: 65534, gid: 65534 } : {};
      const r = await cli(["--home", home, "demo", "--slurm"], { ...asUser, env: { ...process.env, HOME: home } });
      expect(r.code, r.err).toBe(2);
      expect(r.err).toMatch(/needs root/);
      expect(r.err).toMatch(/fix: run it as root/);
    },
    60_000,
  );

  it.skipIf(process.getuid?.() !== 0)(
    "exits 2 naming the packages when Slurm is not installed",
    async () => {
      const home = tempHome("demo-slurm-noslurm");
      // A PATH of one empty folder: no srun, sbatch, slurmctld or munged (node is started by its path).
      const env = { ...process.env, PATH: tempHome("demo-slurm-emptypath") };
      const r = await cli(["--home", home, "--json", "demo", "--slurm"], { env });
      expect(r.code, r.err).toBe(2);
      const error = JSON.parse(r.out || r.err) as { error: string; fix: string; exitCode: number };
      expect(error.exitCode).toBe(2);
      expect(error.error).toMatch(/srun/);
      expect(error.error).toMatch(/slurmctld/);
      expect(error.fix).toMatch(/apt-get install slurm-wlm munge/);
    },
    60_000,
  );
});

describe.skipIf(noTestbed || !hasTorch)("switchyard demo --slurm on the testbed", () => {
  const home = tempHome("demo-slurm");
  const demoHome = path.join(home, "demo-slurm");

  afterAll(() => {
    // Whatever happened, stop the demo's server if it is still up (by its recorded pid).
    const infoFile = path.join(demoHome, "server.json");
    if (existsSync(infoFile)) {
      const { pid } = JSON.parse(readFileSync(infoFile, "utf8")) as { pid: number };
      try {
        process.kill(pid, "SIGTERM");
      } catch {
        // already gone
      }
    }
  });

  it("tells the story across hosts, moves to nvidia, and leaves the testbed as it found it", async () => {
    const wasUp = existsSync(slurmConf);
    const before = wasUp ? await listNodes({ env: slurmEnv }) : [];

    const r = await cli(["--home", home, "--json", "demo", "--slurm", "--steps", "40"]);
    const lines = r.out
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Line);
    const dump = `${r.out.slice(-6000)}\n${r.err.slice(-3000)}`;
    expect(r.code, dump).toBe(0);

    // Three faults, each on an attempt of its own on ascend; the host kill named the host of rank 1.
    const faults = lines.filter((l) => l.type === "fault");
    expect(
      faults.map((f) => f.action),
      dump,
    ).toEqual(["kill-rank", "hang-rank", "kill-node"]);
    expect(new Set(faults.map((f) => f.attempt)).size).toBe(3);
    const killedHost = lines.find((l) => l.type === "fault-done" && l.action === "kill-node")?.host as string;
    expect(["a1", "a2", "a3", "a4"]).toContain(killedHost);

    const result = lines.find((l) => l.type === "result")!;
    expect(result.state).toBe("SUCCEEDED");
    const attempts = result.attempts as Attempt[];
    const incidents = result.incidents as Incident[];
    const attempt = (n: number) => attempts.find((a) => a.n === n)!;

    // The culprits, each with its host: rank 1 killed, rank 0 hung, then rank 1's host lost.
    expect(incidents.map((i) => i.cause).slice(0, 3), dump).toEqual(["killed", "hang", "host"]);
    const [kill, hang, host] = incidents as [Incident, Incident, Incident];
    expect(kill.culpritRank).toBe(1);
    expect(attempt(kill.attempt).nodes).toContain(kill.culpritNode);
    // The stopped rank is rank 0 (state T in its node agent's heartbeat); its peer only waits in the collective.
    expect(hang.culpritRank).toBe(0);
    expect(attempt(hang.attempt).nodes).toContain(hang.culpritNode);
    expect(host.culpritNode).toBe(killedHost);
    expect(host.summary).toContain(`host ${killedHost} lost`);
    for (const i of [kill, hang, host]) expect(attempt(i.attempt).pool).toBe("ascend");
    // Every restart resumed from a checkpoint; the job moved to nvidia and finished there.
    for (const a of attempts.slice(1)) expect(a.resumeStep).not.toBeNull();
    const last = attempts[attempts.length - 1]!;
    expect(last.pool).toBe("nvidia");
    expect([...last.nodes].sort()).toEqual(["n1", "n2"]);
    expect((result.moved as string[]).join(" ")).toMatch(/from pool ascend to nvidia/);

    // What Slurm said at the end: the killed host drained with switchyard's reason.
    const slurm = result.slurm as Array<{ name: string; state: string[]; reason: string | null }>;
    const drained = slurm.find((n) => n.name === killedHost);
    expect(drained?.reason).toMatch(/^switchyard:/);
    expect(drained?.state.some((s) => s.startsWith("drain"))).toBe(true);

    // The report charges each incident to its host.
    const report = result.report as { ledger: { incidents: Array<{ cause: string; node: string | null }> } };
    expect(report.ledger.incidents.find((i) => i.cause === "host")).toBeDefined();

    // Cleanup: the host revived, the drains resumed, the server stopped, the testbed as found.
    const cleanup = lines.find((l) => l.type === "cleanup")!;
    expect(cleanup.revived).toEqual([killedHost]);
    expect(cleanup.resumed).toContain(killedHost);
    expect(cleanup.notInService).toEqual([]);
    expect(lines.some((l) => l.type === "server-stopped")).toBe(true);
    const infoFile = path.join(demoHome, "server.json");
    if (existsSync(infoFile)) {
      const info = JSON.parse(readFileSync(infoFile, "utf8")) as { pid: number };
      expect(() => process.kill(info.pid, 0)).toThrow();
    }
    if (wasUp) {
      const after = await listNodes({ env: slurmEnv });
      const view = (ns: typeof after) =>
        ns
          .map((n) => ({ name: n.name, usable: !nodeUnusable(n), reason: n.reason }))
          .sort((a, b) => a.name.localeCompare(b.name));
      expect(view(after)).toEqual(view(before));
    } else {
      expect(lines.find((l) => l.type === "testbed")?.down).toBe(true);
      expect(testbedTraces()).toEqual([]);
    }
  }, 300_000);
});
