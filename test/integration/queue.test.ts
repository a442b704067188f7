import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApiClient } from "../../src/cli/client.js";
import { packageRoot } from "../../src/paths.js";
import { ServerProcess, submit, tempHome, torchPython, waitForEnd, writeCluster } from "./harness.js";

const probe = path.join(packageRoot, "test", "fixtures", "ranks", "device_probe.py");

interface Use {
  job: string;
  node: string;
  devices: string;
  start?: number;
  end?: number;
  conflict?: string;
}

interface Summary {
  id: string;
  state: string;
  queuePosition: number | null;
  waitingFor: string | null;
}

/**
 * Many one-rank jobs on a pool of 2 nodes x 1 device: they queue for the devices. Each rank locks its device with
 * O_EXCL for as long as it runs, so two ranks on one device at once would show as a conflict.
 */
describe.skipIf(!torchPython)("the job queue on a real server", () => {
  const home = tempHome("queue");
  const server = new ServerProcess(
    home,
    writeCluster(
      home,
      ["pools:", "  - name: tiny", "    accelerator: { vendor: nvidia }", "    nodes: 2", "    devicesPerNode: 1"].join(
        "\n",
      ),
    ),
  );
  let client: ApiClient;
  beforeAll(async () => {
    client = await server.start();
  }, 60_000);
  afterAll(() => server.stop());

  it("never puts two ranks on one device, uses both nodes, shows queue places and finishes every job", async () => {
    const dir = path.join(home, "probe");
    mkdirSync(dir, { recursive: true });
    const spec = (name: string, extra: string[] = []) =>
      [
        `name: ${name}`,
        `command: ["{python}", ${JSON.stringify(probe)}, --dir, ${JSON.stringify(dir)}, --hold, "0.4"]`,
        `workdir: ${JSON.stringify(dir)}`,
        ...extra,
      ].join("\n");
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) ids.push(await submit(client, home, `q${i}`, spec(`q${i}`)));
    const urgent = await submit(client, home, "urgent", spec("urgent", ["priority: 10"]));

    const queued = (await client.get<Summary[]>("/api/jobs")).filter((j) => j.queuePosition !== null);
    expect(queued.length).toBeGreaterThan(0);
    for (const j of queued) {
      expect(j.state).toMatch(/^(PENDING|RECOVERING)$/);
      expect(j.waitingFor).toMatch(/^waiting for 1 device\(s\) on tiny: \d free/);
    }
    expect(new Set(queued.map((j) => j.queuePosition)).size).toBe(queued.length);

    for (const id of [...ids, urgent]) expect((await waitForEnd(client, id, 120_000)).state).toBe("SUCCEEDED");

    const uses = readFileSync(path.join(dir, "uses.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Use);
    expect(uses.filter((u) => u.conflict !== undefined)).toEqual([]);
    expect(uses).toHaveLength(13);
    expect(new Set(uses.map((u) => u.node))).toEqual(new Set(["tiny-0", "tiny-1"]));
    for (const u of uses) expect(u.devices).toBe("0");
    // Per node, the intervals never overlap.
    for (const node of ["tiny-0", "tiny-1"]) {
      const spans = uses.filter((u) => u.node === node).sort((a, b) => a.start! - b.start!);
      for (let i = 1; i < spans.length; i++) expect(spans[i]!.start!).toBeGreaterThanOrEqual(spans[i - 1]!.end!);
    }
    // The urgent job, submitted last, overtook the jobs queued then (at most one launched in the same pass as it).
    const start = (id: string) => uses.find((u) => u.job === id)!.start!;
    const others = queued.filter((j) => j.id !== urgent);
    expect(others.filter((j) => start(j.id) < start(urgent)).length).toBeLessThanOrEqual(1);

    // A job no pool can host waits with its reason, which `switchyard ps` shows.
    const wide = await submit(client, home, "wide", spec("wide", ["nodes: 3"]));
    const ps = spawnSync(process.execPath, [path.join(packageRoot, "bin", "switchyard.js"), "ps"], {
      env: { ...process.env, SWITCHYARD_HOME: home },
      encoding: "utf8",
    });
    expect(ps.stdout).toContain(`${wide}`);
    expect(ps.stdout).toContain("queued #1: no pool can host the job (tiny: 2 healthy node(s), 3 needed)");
    await client.post(`/api/jobs/${wide}/cancel`, {});
  }, 180_000);

  it("refuses a workdir that does not exist at submit, naming the field (bad input, not a launch loop)", async () => {
    const missing = path.join(home, "no-such-folder");
    const yaml = ["name: nowork", 'command: ["/bin/sh", "-c", "exit 0"]', `workdir: ${JSON.stringify(missing)}`].join(
      "\n",
    );
    const err = await submit(client, home, "nowork", yaml).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toBe(
      `${path.join(home, "nowork.yaml")}:3:10: workdir: ${missing} does not exist ` +
        "(fix: create the folder, or set workdir to an existing one (relative paths start at the spec's folder))",
    );
    expect((err as { exitCode?: number }).exitCode).toBe(2);
  });
});
