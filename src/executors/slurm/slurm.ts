import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import { packageRoot, pythonSdkDir } from "../../paths.js";
import type { PoolSpec } from "../../core/spec.js";
import { exitedStatus, readExitRecord } from "../exit-record.js";
import { capture } from "../capture.js";
import {
  checkRunOnNodes,
  type Executor,
  type InventoryNode,
  type LaunchedRank,
  type LaunchRequest,
  type NodeRunResult,
  type RankHandle,
  type RankStatus,
  type RunOnNodesOptions,
} from "../port.js";
import { resultsFromStep } from "./run-on-nodes.js";
import {
  drainNode,
  jobState,
  listNodes,
  nodeUnusable,
  resumeNode,
  slurm,
  SlurmCommandError,
  type SlurmEnv,
} from "./slurm-cli.js";

/**
 * Runs ranks on a Slurm cluster. One allocation per job (`sbatch` holding the nodes with a sleeping batch step), one
 * `srun` step per attempt inside it (tens of milliseconds to start, no queue wait, a bad host left out), and on every
 * host one node agent per rank (agent/node_agent.py, stdlib Python) that leads the rank's process group and writes the
 * rank's exit record and a heartbeat into the attempt folder, which lives on storage the server shares with the hosts.
 * Nothing here needs a pid of another host: liveness comes from heartbeats, signals and stops go through control files
 * the agents act on, and a server that restarts finds everything again in the files.
 */

export const nodeAgentPath = path.join(packageRoot, "agent", "node_agent.py");

export interface SlurmExecutorOptions extends SlurmEnv {
  /** The partition a pool stands for (default: the pool's name). */
  partition?: (pool: PoolSpec) => string;
  /** Extra sbatch arguments per pool (account, qos, constraint...), as an argument vector. */
  sbatchArgs?: (pool: PoolSpec) => string[];
  /** The Python that runs the node agent on the hosts (default python3). */
  agentPython?: string;
  /** Environment added to every rank (e.g. GLOO_SOCKET_IFNAME for the hosts' interface). */
  rankEnv?: Record<string, string>;
  heartbeatSeconds?: number;
  /** A rank whose heartbeat is older than this is lost with its host (default 5 s: ~5 missed heartbeats). */
  lostAfterSeconds?: number;
  /** How long a rank may take to write its first heartbeat (srun start, Python start). */
  startupGraceSeconds?: number;
  /** How long to wait for an allocation to start before giving up (the queue). */
  allocationTimeoutSeconds?: number;
  now?: () => number;
}

interface AllocationRecord {
  slurmJobId: string;
  partition: string;
  nodes: string[];
  createdAt: number;
}

interface StepRecord {
  slurmJobId: string;
  stepId: string | null;
  nodes: string[];
  launchedAt: number;
  lostAfterSeconds: number;
}

interface Heartbeat {
  t: number;
  node: string;
  pid: number;
  state: string | null;
  cpuTicks: number;
  rssPages: number | null;
}

export class SlurmExecutor implements Executor {
  readonly kind = "slurm";
  private readonly now: () => number;
  private controlSeq = 0;

  constructor(private readonly opts: SlurmExecutorOptions = {}) {
    this.now = opts.now ?? Date.now;
  }

  private get slurmEnv(): SlurmEnv {
    return { env: this.opts.env, timeoutMs: this.opts.timeoutMs };
  }

  async launch(req: LaunchRequest): Promise<LaunchedRank[]> {
    mkdirSync(path.join(req.dir, "ctl"), { recursive: true });
    mkdirSync(req.checkpointDir, { recursive: true });
    const partition = this.partition(req.pool);
    const inventory = await listNodes({ ...this.slurmEnv, partition });
    // Slurm numbers the hosts of a step in its own order (SLURM_NODEID), not in the order asked for.
    const order = new Map(inventory.map((n, i) => [n.name, i]));
    for (const n of req.nodes) {
      if (!order.has(n)) throw new Error(`node ${n} is not in Slurm partition ${partition}`);
    }
    const nodes = [...req.nodes].sort((a, b) => (order.get(a) ?? 0) - (order.get(b) ?? 0));
    const masterAddr = inventory.find((n) => n.name === nodes[0])?.address ?? nodes[0] ?? "127.0.0.1";

    const allocation = await this.allocation(path.dirname(req.dir), req, partition, nodes);
    // One attempt runs at a time: a step of an earlier attempt still alive (a launch the server died in the middle of)
    // is cancelled before the new one starts, so two gangs of one job never run at once.
    await this.cancelSteps(allocation.slurmJobId, `sy-${req.jobName}-`);
    const env: Record<string, string> = {
      ...(process.env as Record<string, string>),
      ...this.opts.env,
      ...req.env,
      ...this.opts.rankEnv,
      ...req.pool.slurm?.env,
      MASTER_ADDR: masterAddr,
      MASTER_PORT: String(req.masterPort),
      SWITCHYARD_ACCELERATOR: req.pool.accelerator.vendor,
      SWITCHYARD_POOL: req.pool.name,
      SWITCHYARD_JOB: req.jobName,
      SWITCHYARD_JOB_ID: req.jobId,
      SWITCHYARD_ATTEMPT: String(req.attempt),
      SWITCHYARD_CHECKPOINT_DIR: req.checkpointDir,
      SWITCHYARD_RESUME_FROM: req.resumeFrom ?? "",
      SWITCHYARD_PROCS_PER_NODE: String(req.procsPerNode),
      SWITCHYARD_DEVICES_PER_NODE: String(req.pool.devicesPerNode),
      // The devices the queue granted, per host in Slurm's order: "0,1;2,3".
      ...(req.devices
        ? {
            SWITCHYARD_DEVICE_MAP: nodes.map((n) => (req.devices?.[req.nodes.indexOf(n)] ?? []).join(",")).join(";"),
          }
        : {}),
      PYTHONPATH: [pythonSdkDir, process.env.PYTHONPATH].filter(Boolean).join(path.delimiter),
    };
    const args = [
      `--jobid=${allocation.slurmJobId}`,
      "--overlap",
      `--nodes=${nodes.length}`,
      `--nodelist=${nodes.join(",")}`,
      `--ntasks-per-node=${req.procsPerNode}`,
      `--ntasks=${nodes.length * req.procsPerNode}`,
      "--distribution=block",
      "--kill-on-bad-exit=0",
      "--export=ALL",
      `--chdir=${req.workdir}`,
      `--job-name=sy-${req.jobName}-${req.attempt}`,
      req.pool.slurm?.agentPython ?? this.opts.agentPython ?? "python3",
      nodeAgentPath,
      "--dir",
      req.dir,
      "--heartbeat",
      String(this.opts.heartbeatSeconds ?? 1),
      "--",
      ...req.command,
    ];
    const out = openSync(path.join(req.dir, "srun.log"), "a");
    try {
      // Detached: the step (and its ranks) must outlive the server.
      const child = spawn("srun", args, { env, detached: true, stdio: ["ignore", out, out] });
      await new Promise<void>((resolve, reject) => {
        child.once("spawn", () => resolve());
        child.once("error", reject);
      });
      child.unref();
    } finally {
      closeSync(out);
    }
    const step: StepRecord = {
      slurmJobId: allocation.slurmJobId,
      stepId: null,
      nodes,
      launchedAt: this.now(),
      lostAfterSeconds: this.opts.lostAfterSeconds ?? req.pool.slurm?.lostAfterSeconds ?? 5,
    };
    writeJson(path.join(req.dir, "slurm-step.json"), step);
    step.stepId = await this.findStep(allocation.slurmJobId, `sy-${req.jobName}-${req.attempt}`);
    writeJson(path.join(req.dir, "slurm-step.json"), step);

    const ranks: LaunchedRank[] = [];
    for (const [nodeRank, node] of nodes.entries()) {
      for (let local = 0; local < req.procsPerNode; local++) {
        const rank = nodeRank * req.procsPerNode + local;
        ranks.push({
          rank,
          node,
          pid: null,
          startTicks: null,
          logPath: path.join(req.dir, `rank-${rank}.log`),
          reportPath: path.join(req.dir, `rank-${rank}.jsonl`),
        });
      }
    }
    return ranks;
  }

  /** The job's allocation: reused while it runs and holds every node asked for, replaced otherwise. */
  private async allocation(
    jobDir: string,
    req: LaunchRequest,
    partition: string,
    nodes: string[],
  ): Promise<AllocationRecord> {
    const file = path.join(jobDir, "slurm-allocation.json");
    const current = readJson<AllocationRecord>(file);
    if (current) {
      const { state } = await jobState(current.slurmJobId, this.slurmEnv);
      const holds = nodes.every((n) => current.nodes.includes(n));
      if (state === "RUNNING" && holds && current.partition === partition) return current;
      if (state !== "GONE") await this.cancel(current.slurmJobId);
    }
    const args = [
      "--parsable",
      `--partition=${partition}`,
      `--nodes=${nodes.length}`,
      `--nodelist=${nodes.join(",")}`,
      `--ntasks-per-node=${req.procsPerNode}`,
      `--job-name=sy-${req.jobName}`,
      `--output=${path.join(jobDir, "slurm-%j.out")}`,
      ...this.sbatchArgs(req.pool),
      // A fixed string, no user input: the batch step only holds the allocation; attempts are srun steps.
      "--wrap=exec sleep 2147483647",
    ];
    const out = await slurm("sbatch", args, this.slurmEnv);
    const slurmJobId = out.trim().split(";")[0] ?? "";
    if (!/^\d+$/.test(slurmJobId)) throw new Error(`sbatch answered ${JSON.stringify(out.trim())}, not a job id`);
    const record: AllocationRecord = { slurmJobId, partition, nodes, createdAt: this.now() };
    writeJson(file, record);
    const deadline = this.now() + (this.opts.allocationTimeoutSeconds ?? 300) * 1000;
    for (;;) {
      const { state } = await jobState(slurmJobId, this.slurmEnv);
      if (state === "RUNNING") return record;
      if (state !== "PENDING" && state !== "CONFIGURING") {
        throw new Error(`Slurm allocation ${slurmJobId} ended as ${state} before it started`);
      }
      if (this.now() > deadline) {
        await this.cancel(slurmJobId);
        throw new Error(
          `Slurm allocation ${slurmJobId} still pending after ${this.opts.allocationTimeoutSeconds ?? 300} s`,
        );
      }
      await sleep(200);
    }
  }

  private async findStep(slurmJobId: string, name: string): Promise<string | null> {
    for (let i = 0; i < 20; i++) {
      const out = await slurm("squeue", ["-h", "-s", "-j", slurmJobId, "-o", "%i %j"], this.slurmEnv).catch(() => "");
      const line = out.split("\n").find((l) => l.trim().endsWith(` ${name}`));
      if (line) return line.trim().split(" ")[0] ?? null;
      await sleep(100);
    }
    return null;
  }

  private async cancelSteps(slurmJobId: string, namePrefix: string): Promise<void> {
    const out = await slurm("squeue", ["-h", "-s", "-j", slurmJobId, "-o", "%i %j"], this.slurmEnv).catch(() => "");
    for (const line of out.split("\n")) {
      const [stepId, name] = line.trim().split(" ");
      if (stepId && name?.startsWith(namePrefix)) await this.cancel(stepId, "KILL");
    }
  }

  private async cancel(id: string, signal?: string): Promise<void> {
    await slurm("scancel", [...(signal ? [`--signal=${signal}`] : []), id], this.slurmEnv).catch((err: unknown) => {
      if (!(err instanceof SlurmCommandError)) throw err;
    });
  }

  /** Ends the job's allocation (the job is over): its nodes go back to Slurm. */
  async release(jobDir: string): Promise<void> {
    const current = readJson<AllocationRecord>(path.join(jobDir, "slurm-allocation.json"));
    if (current) await this.cancel(current.slurmJobId);
  }

  private partition(pool: PoolSpec): string {
    return this.opts.partition?.(pool) ?? pool.slurm?.partition ?? pool.name;
  }

  private sbatchArgs(pool: PoolSpec): string[] {
    const s = pool.slurm;
    return [
      ...(s?.account ? [`--account=${s.account}`] : []),
      ...(s?.qos ? [`--qos=${s.qos}`] : []),
      ...(s?.constraint ? [`--constraint=${s.constraint}`] : []),
      ...(s?.sbatchArgs ?? []),
      ...(this.opts.sbatchArgs?.(pool) ?? []),
    ];
  }

  /** The partition's nodes from sinfo; down, drained or unresponsive ones are not usable. */
  async inventory(pool: PoolSpec): Promise<InventoryNode[]> {
    const nodes = await listNodes({ ...this.slurmEnv, partition: this.partition(pool) });
    const constraint = pool.slurm?.constraint;
    return nodes
      .filter((n) => !constraint || n.features.includes(constraint))
      .map((n) => ({
        name: n.name,
        devices: pool.devicesPerNode,
        usable: !nodeUnusable(n),
        reason: nodeUnusable(n) ? `${n.state.join("+")}${n.reason ? `: ${n.reason}` : ""}` : null,
      }));
  }

  /** The node's NodeAddr from sinfo (where it is reached from this host), or null when sinfo does not list it. */
  async nodeAddress(pool: PoolSpec, node: string): Promise<string | null> {
    const nodes = await listNodes({ ...this.slurmEnv, partition: this.partition(pool) });
    return nodes.find((n) => n.name === node)?.address || null;
  }

  /** Cordon is Slurm's drain with switchyard's reason; uncordon resumes the node. */
  async setCordon(_pool: PoolSpec, node: string, cordoned: boolean, reason: string): Promise<void> {
    if (cordoned) await drainNode(node, `switchyard: ${reason}`, this.slurmEnv);
    else
      await resumeNode(node, this.slurmEnv).catch((err: unknown) => {
        // Resuming a node Slurm does not hold drained is an error there and nothing to do here.
        if (!(err instanceof SlurmCommandError && /Invalid node state/i.test(err.stderr))) throw err;
      });
  }

  async poll(attemptDir: string, ranks: readonly RankHandle[]): Promise<RankStatus[]> {
    const step = readJson<StepRecord>(path.join(attemptDir, "slurm-step.json"));
    const now = this.now();
    const lostMs = (step?.lostAfterSeconds ?? this.opts.lostAfterSeconds ?? 5) * 1000;
    const startupMs = (this.opts.startupGraceSeconds ?? 60) * 1000;
    // One listing instead of a failed open per running rank (thousands of ENOENT errors a pass on a big gang).
    let names: Set<string> | null = null;
    try {
      names = new Set(readdirSync(attemptDir));
    } catch {
      names = null;
    }
    return ranks.map((r): RankStatus => {
      const exitName = `rank-${r.rank}.exit`;
      const record = names === null || names.has(exitName) ? readExitRecord(path.join(attemptDir, exitName)) : null;
      if (record) return exitedStatus(r.rank, record);
      const hb = readJson<Heartbeat>(path.join(attemptDir, `rank-${r.rank}.hb`));
      if (hb && now - hb.t <= lostMs) return { rank: r.rank, state: "running" };
      if (!hb && step && now - step.launchedAt <= startupMs) return { rank: r.rank, state: "running" };
      // The agent wrote its exit record between the two reads above.
      const late = readExitRecord(path.join(attemptDir, `rank-${r.rank}.exit`));
      if (late) return exitedStatus(r.rank, late);
      const silentS = Math.round((now - (hb?.t ?? step?.launchedAt ?? now)) / 1000);
      const host = hb?.node ?? r.logPath;
      return {
        rank: r.rank,
        state: "vanished",
        at: hb ? hb.t : now,
        hostLost: hb
          ? `host ${host} lost: no heartbeat from its node agent for ${silentS} s`
          : `the node agent never reported from its host in ${silentS} s`,
      };
    });
  }

  async stop(ranks: readonly RankHandle[], graceMs: number): Promise<void> {
    const dirs = [...new Set(ranks.map((r) => path.dirname(r.logPath)))];
    for (const dir of dirs) {
      mkdirSync(path.join(dir, "ctl"), { recursive: true });
      writeJson(path.join(dir, "ctl", "stop"), { graceMs });
    }
    const ended = () =>
      ranks.every((r) => {
        const dir = path.dirname(r.logPath);
        if (readExitRecord(path.join(dir, `rank-${r.rank}.exit`))) return true;
        const hb = readJson<Heartbeat>(path.join(dir, `rank-${r.rank}.hb`));
        // A rank whose agent is silent (lost host) cannot act on the request: Slurm's cancel below reaches it.
        return hb === null || this.now() - hb.t > (this.opts.lostAfterSeconds ?? 5) * 1000;
      });
    const deadline = this.now() + graceMs + 3000;
    while (!ended() && this.now() < deadline) await sleep(100);
    for (const dir of dirs) {
      const step = readJson<StepRecord>(path.join(dir, "slurm-step.json"));
      if (step?.stepId) await this.cancel(step.stepId, "KILL");
    }
  }

  /**
   * One `srun` step, one task per host (`--label`, so each line comes back with its task id; task i runs on the i-th
   * host in Slurm's order), inside the job's allocation when `jobDir` names one that runs and holds every host, else
   * in a short allocation of its own on the pool's partition. Results come back in the order the nodes were given.
   */
  async runOnNodes(
    pool: PoolSpec,
    nodes: readonly string[],
    argv: readonly string[],
    opts: RunOnNodesOptions,
  ): Promise<NodeRunResult[]> {
    checkRunOnNodes(nodes, argv, opts);
    const partition = this.partition(pool);
    const inventory = await listNodes({ ...this.slurmEnv, partition });
    const order = new Map(inventory.map((n, i) => [n.name, i]));
    const missing = nodes.filter((n) => !order.has(n));
    if (missing.length > 0) {
      throw new Error(`node ${missing.join(", ")} is not in Slurm partition ${partition} (fix: pick nodes from sinfo)`);
    }
    const sorted = [...nodes].sort((a, b) => order.get(a)! - order.get(b)!);
    const addr = (n: string): string => inventory.find((x) => x.name === n)?.address || n;

    let inAllocation: string | null = null;
    if (opts.jobDir) {
      const current = readJson<AllocationRecord>(path.join(opts.jobDir, "slurm-allocation.json"));
      if (current && nodes.every((n) => current.nodes.includes(n))) {
        const { state } = await jobState(current.slurmJobId, this.slurmEnv).catch(() => ({ state: "GONE" }));
        if (state === "RUNNING") inAllocation = current.slurmJobId;
      }
    }
    const name = `sy-run-${randomBytes(4).toString("hex")}`;
    const s = pool.slurm;
    const timeLimitMin = Math.max(1, Math.ceil(opts.timeoutMs / 60_000) + 1);
    const args = [
      ...(inAllocation
        ? [`--jobid=${inAllocation}`, "--overlap"]
        : [
            `--partition=${partition}`,
            `--time=${timeLimitMin}`,
            ...(s?.account ? [`--account=${s.account}`] : []),
            ...(s?.qos ? [`--qos=${s.qos}`] : []),
          ]),
      `--nodes=${sorted.length}`,
      `--nodelist=${sorted.join(",")}`,
      `--ntasks=${sorted.length}`,
      "--ntasks-per-node=1",
      "--distribution=block",
      "--kill-on-bad-exit=0",
      "--export=ALL",
      "--label",
      `--job-name=${name}`,
      // A fixed script, no user input: each task learns its host's name as SWITCHYARD_NODE; the command is "$@".
      "/bin/sh",
      "-c",
      'SWITCHYARD_NODE="$SLURMD_NODENAME"; export SWITCHYARD_NODE; exec "$@"',
      "switchyard-run",
      ...argv,
    ];
    const step = await capture(["srun", ...args], {
      env: {
        ...process.env,
        ...this.opts.env,
        ...opts.env,
        // In the order given: a probe's coordinator is the first node the caller named.
        SWITCHYARD_NODES: nodes.join(","),
        SWITCHYARD_NODE_ADDRS: nodes.map((n) => `${n}=${addr(n)}`).join(","),
      },
      timeoutMs: opts.timeoutMs,
      maxOutputBytes: (opts.maxOutputBytes ?? 1 << 20) * sorted.length,
      onTimeout: () => {
        // srun forwards SIGTERM to the tasks; cancel by name too, in case srun itself is stuck.
        void this.cancelByName(inAllocation, name);
      },
    });
    const results = resultsFromStep(sorted, step);
    const byNode = new Map(results.map((r) => [r.node, r]));
    return nodes.map((n) => byNode.get(n)!);
  }

  private async cancelByName(allocation: string | null, name: string): Promise<void> {
    if (allocation) await this.cancelSteps(allocation, name);
    else await slurm("scancel", [`--name=${name}`], this.slurmEnv).catch(() => undefined);
  }

  signalRank(rank: RankHandle, signal: NodeJS.Signals): boolean {
    const dir = path.dirname(rank.logPath);
    const hb = readJson<Heartbeat>(path.join(dir, `rank-${rank.rank}.hb`));
    if (!hb || this.now() - hb.t > (this.opts.lostAfterSeconds ?? 5) * 1000) return false;
    if (readExitRecord(path.join(dir, `rank-${rank.rank}.exit`))) return false;
    mkdirSync(path.join(dir, "ctl"), { recursive: true });
    const name = `rank-${rank.rank}.${String(this.now()).padStart(15, "0")}-${this.controlSeq++}.${signal}`;
    writeJson(path.join(dir, "ctl", name), { signal, t: this.now() });
    return true;
  }

  /** Asks the rank's node agent for gdb's backtraces (`ctl/rank-N.<seq>.NATIVE`); it writes them to `outFile`. */
  nativeStacks(rank: RankHandle, outFile: string, timeoutMs: number): boolean {
    const dir = path.dirname(rank.logPath);
    const hb = readJson<Heartbeat>(path.join(dir, `rank-${rank.rank}.hb`));
    if (!hb || this.now() - hb.t > (this.opts.lostAfterSeconds ?? 5) * 1000) return false;
    mkdirSync(path.join(dir, "ctl"), { recursive: true });
    const name = `rank-${rank.rank}.${String(this.now()).padStart(15, "0")}-${this.controlSeq++}.NATIVE`;
    writeJson(path.join(dir, "ctl", name), { file: path.basename(outFile), timeoutMs, t: this.now() });
    return true;
  }

  processState(rank: RankHandle): string | null {
    const dir = path.dirname(rank.logPath);
    if (readExitRecord(path.join(dir, `rank-${rank.rank}.exit`))) return null;
    const hb = readJson<Heartbeat>(path.join(dir, `rank-${rank.rank}.hb`));
    if (!hb || this.now() - hb.t > (this.opts.lostAfterSeconds ?? 5) * 1000) return null;
    return hb.state;
  }
}

function readJson<T>(file: string): T | null {
  try {
    return JSON.parse(readFileSync(file, "utf8")) as T;
  } catch {
    return null;
  }
}

function writeJson(file: string, value: unknown): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(value) + "\n", { mode: 0o600 });
  renameSync(tmp, file);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
