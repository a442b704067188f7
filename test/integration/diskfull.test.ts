import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { packageRoot } from "../../src/paths.js";
import type { NodeView } from "../../src/supervisor/supervisor.js";
import { connect, reportLastCrash, serverInfo } from "../../src/cli/client.js";
import { events, job, sleep, submit, tempHome, useServer, waitFor, waitForEnd, writeCluster } from "./harness.js";

/** A full disk pauses launches: no attempt spent, no node struck, and it says why. Needs `mount -t tmpfs` (root). */

const fixtures = path.join(packageRoot, "test", "fixtures", "ranks");
const disk = mkdtempSync(path.join(os.tmpdir(), "sy-diskfull-"));
let mounted = false;
try {
  execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", disk], { stdio: "ignore" });
  mounted = true;
} catch {
  console.warn(`SKIPPED: the disk-full test needs to mount a tmpfs (run as root)`);
}

describe.skipIf(!mounted)("a full disk", () => {
  const ctx = useServer("diskfull");
  afterAll(() => {
    if (mounted) execFileSync("umount", [disk]);
    rmSync(disk, { recursive: true, force: true });
  });

  it("pauses launches with the reason, then launches once there is space again", async () => {
    execFileSync("sh", ["-c", `head -c 2000000 /dev/zero > ${JSON.stringify(path.join(disk, "fill"))} || true`]);
    const yaml = [
      "name: full",
      "pools: [unstable]",
      `command: ["{python}", ${JSON.stringify(path.join(fixtures, "ok.py"))}, --steps, "6"]`,
      `workdir: ${JSON.stringify(ctx.home)}`,
      `checkpoint: { dir: ${JSON.stringify(path.join(disk, "ckpt"))} }`,
    ].join("\n");
    const id = await submit(ctx.client, ctx.home, "full", yaml);
    const waiting = await waitFor("the pause", async () => {
      const j = await job(ctx.client, id);
      return j.reason?.includes("disk full") ? j : null;
    });
    expect(waiting.state).toBe("PENDING");
    expect(waiting.reason).toContain(disk);
    expect(waiting.attempts).toEqual([]);
    const all = await ctx.client.get<Array<{ kind: string; message: string }>>("/api/events");
    expect(all.some((e) => e.kind === "disk.full")).toBe(true);

    rmSync(path.join(disk, "fill"));
    const end = await waitForEnd(ctx.client, id, 60_000);
    expect(end.state).toBe("SUCCEEDED");
    expect(end.incidents).toEqual([]);
    expect(end.restarts).toBe(0);
    expect(end.reason ?? "").not.toContain("disk full");
    const nodes = await ctx.client.get<NodeView[]>("/api/nodes");
    expect(nodes.every((n) => n.strikes === 0)).toBe(true);
    expect((await events(ctx.client, id)).some((e) => e.kind === "attempt.launched")).toBe(true);
  }, 120_000);
});

describe.skipIf(!mounted)("a full disk under the home itself", () => {
  it("does not take the server down (its log writes fail quietly), and a fatal error leaves its reason", async () => {
    const home = path.join(disk, "home");
    // Started the way every CLI command starts it: in the background, its log a file in the (full) home.
    const client = await connect(home, { clusterFile: writeCluster(tempHome("diskfull-cluster")) });
    const info = serverInfo(home)!;
    try {
      const yaml = [
        "name: filler",
        "pools: [unstable]",
        // Fills the home's disk with its own log.
        `command: ["/bin/sh", "-c", "head -c 3000000 /dev/zero | tr '\\\\0' x; sleep 2"]`,
        `workdir: ${JSON.stringify(os.tmpdir())}`,
      ].join("\n");
      await client.post("/api/jobs", { yaml, file: path.join(os.tmpdir(), "filler.yaml") });
      await sleep(5000);
      expect(() => process.kill(info.pid, 0)).not.toThrow();
      expect((await client.get<{ ok: boolean }>("/api/health")).ok).toBe(true);
    } finally {
      process.kill(info.pid, "SIGTERM");
      await waitFor("the server to stop", async () => {
        try {
          process.kill(info.pid, 0);
          return false;
        } catch {
          return true;
        }
      });
    }
    // The room reserved for the server's last words is blank after a clean stop: no crash to report.
    expect(reportLastCrash(home)).toBeNull();
    writeFileSync(
      path.join(home, "server-crash.json"),
      JSON.stringify({ t: 0, pid: 42, reason: "the disk is full (ENOSPC): write failed\n  at x" }),
    );
    expect(reportLastCrash(home)).toMatch(/previous server \(pid 42\) stopped at 1970-.*: the disk is full \(ENOSPC\)/);
    expect(existsSync(path.join(home, "server-crash.json"))).toBe(false);
  }, 60_000);
});
