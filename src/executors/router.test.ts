import { describe, expect, it } from "vitest";
import { localizeNetwork, parseProbeOutput } from "../core/netlocalize.js";
import { parseClusterSpec } from "../core/spec.js";
import { LocalExecutor } from "./local/local.js";
import { networkProbeArgv, type Executor } from "./port.js";
import { PoolExecutors } from "./router.js";

const cluster = parseClusterSpec(
  ["pools:", "  - name: local-a", "    nodes: 3", "  - name: other", "    executor: slurm", "    nodes: 1"].join("\n"),
  "cluster.yaml",
);
const pool = cluster.pools[0]!;
const other = cluster.pools[1]!;
const nodes = ["local-a-0", "local-a-1", "local-a-2"];

describe("runOnNodes through the pool router and the local executor", () => {
  const router = new PoolExecutors({ local: new LocalExecutor() });

  it("runs the argument vector once per node, each with its name, the node list and addresses, and its exit code", async () => {
    const script =
      'echo "$SWITCHYARD_NODE|$SWITCHYARD_NODES|$SWITCHYARD_NODE_ADDRS|$PROBE_X"; echo oops >&2; [ "$SWITCHYARD_NODE" = local-a-1 ] && exit 3; exit 0';
    const r = await router.runOnNodes(pool, nodes, ["/bin/sh", "-c", script], {
      timeoutMs: 10_000,
      env: { PROBE_X: "x" },
    });
    expect(r.map((x) => x.node)).toEqual(nodes);
    expect(r.map((x) => x.code)).toEqual([0, 3, 0]);
    expect(r[2]!.stdout).toBe(
      "local-a-2|local-a-0,local-a-1,local-a-2|local-a-0=127.0.0.1,local-a-1=127.0.0.1,local-a-2=127.0.0.1|x\n",
    );
    expect(r[0]!.stderr).toBe("oops\n");
  });

  it("kills what outlives the timeout (code null, timedOut) and bounds the output", async () => {
    const r = await router.runOnNodes(
      pool,
      nodes.slice(0, 2),
      [
        "/bin/sh",
        "-c",
        'head -c 5000 /dev/zero | tr "\\0" y; [ "$SWITCHYARD_NODE" = local-a-0 ] && exec sleep 30; exit 0',
      ],
      { timeoutMs: 1_500, maxOutputBytes: 1000 },
    );
    expect(r[0]).toMatchObject({ node: "local-a-0", code: null, timedOut: true });
    expect(r[1]).toMatchObject({ node: "local-a-1", code: 0 });
    expect(r[1]!.stdout).toBe(`${"y".repeat(1000)}\n[output cut at 1000 bytes]\n`);
  });

  it("refuses bad arguments with the fix, and a command that does not exist is that node's error", async () => {
    await expect(router.runOnNodes(pool, [], ["true"], { timeoutMs: 1000 })).rejects.toThrow(/no nodes given/);
    await expect(router.runOnNodes(pool, ["a", "a"], ["true"], { timeoutMs: 1000 })).rejects.toThrow(/named twice/);
    await expect(router.runOnNodes(pool, ["a;b"], ["true"], { timeoutMs: 1000 })).rejects.toThrow(/not a node name/);
    await expect(router.runOnNodes(pool, ["a"], ["true"], { timeoutMs: 0 })).rejects.toThrow(/timeoutMs 0/);
    const [r] = await router.runOnNodes(pool, ["a"], ["/nonexistent/probe"], { timeoutMs: 5000 });
    expect(r).toMatchObject({ node: "a", code: null });
    expect(r!.stderr).toMatch(/cannot start \/nonexistent\/probe: .*ENOENT/);
  });

  it("a pool whose executor cannot run commands says so", async () => {
    const bare: Executor = { ...new LocalExecutor(), kind: "bare", runOnNodes: undefined } as unknown as Executor;
    const r = new PoolExecutors({ local: new LocalExecutor(), slurm: bare });
    await expect(r.runOnNodes(other, ["x"], ["true"], { timeoutMs: 1000 })).rejects.toThrow(
      "pool other: the bare executor cannot run commands on its nodes",
    );
  });

  it("the network probe across local virtual nodes: every pair measured, nobody slow", async () => {
    const portBase = 20_000 + Math.floor(Math.random() * 20_000);
    const argv = networkProbeArgv({ python: "python3", mode: "preflight", portBase, timeoutS: 20 });
    const r = await router.runOnNodes(pool, nodes, argv, { timeoutMs: 30_000 });
    expect(r.map((x) => x.code)).toEqual([0, 0, 0]);
    const { pairs, problems } = parseProbeOutput(r.map((x) => x.stdout));
    expect(problems).toEqual([]);
    expect(pairs.map((p) => `${p.from}->${p.to}`).sort()).toEqual([
      "local-a-0->local-a-2",
      "local-a-1->local-a-0",
      "local-a-2->local-a-1",
    ]);
    expect(pairs.every((p) => p.gbitS !== null && p.gbitS > 0)).toBe(true);
    expect(localizeNetwork(pairs).kind).toBe("healthy");
  });
});
