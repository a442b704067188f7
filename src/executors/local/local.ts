import { spawn } from "node:child_process";
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, statSync, type Stats } from "node:fs";
import path from "node:path";
import { pythonSdkDir } from "../../paths.js";
import type { PoolSpec } from "../../core/spec.js";
import { capture } from "../capture.js";
import type {
  Executor,
  LaunchedRank,
  LaunchRequest,
  NodeRunResult,
  RankHandle,
  RankStatus,
  RunOnNodesOptions,
} from "../port.js";
import { exitedStatus, readExitRecord } from "../exit-record.js";
import { checkRunOnNodes, visibilityEnv } from "../port.js";
import { startNativeStacks } from "../native-stacks.js";
import { catchesSignal, requestSignals } from "../signals.js";
import { childPids, groupAlive, isSameProcessAlive, readProcStat } from "./procfs.js";

/**
 * Each rank runs under a tiny POSIX-sh wrapper that leads the rank's own process group, waits for the rank and records
 * its exit status and time in a file. The wrapper is detached from the server, so ranks and their exit records
 * outlive a crash of switchyard; a restarted server reads the records. Arguments travel as "$@", never as a shell
 * string, so nothing from a job spec is ever parsed by a shell.
 *
 * Besides the exit record the wrapper writes, next to the rank's log:
 * - `rank-N.pid`: the rank process's own pid (the subshell reads it from /proc/self/stat, then execs the rank);
 * - `rank-N.log.stamps`: while the log grows, once a second, `<log size> <log mtime>`: every byte before that size
 *   was written by that time. Log-regex progress dates each line from these (and from the log's mtime when read),
 *   so a server that was down still learns when each step happened. The sampler is a grandchild (so the wrapper's
 *   only child is the rank), in the rank's process group, and ends when the wrapper does.
 * - when the exit record cannot be written (a full disk), an empty `rank-N.exit.code-<code>` instead: an empty file
 *   needs no data block, and its mtime is the exit time.
 */
const wrapperScript = [
  'exit_file="$1"; pid_file="$2"; log_file="$3"; shift 3',
  // The shell's own notices ("Killed") go nowhere: in the rank's log they would read like the kernel's OOM killer.
  // The rank runs in an exec'd subshell so that dash prints such notices with its own (silenced) stderr.
  "exec 3>&1 4>&2 >/dev/null 2>&1",
  "wrapper=$$",
  '( ( last=""; while kill -0 "$wrapper"; do' +
    ' now=$(stat -c "%s %.3Y" "$log_file") && [ "${now%% *}" != 0 ] && [ "$now" != "$last" ] && echo "$now" >> "$log_file.stamps" && last=$now;' +
    " sleep 1; done ) 3>&- 4>&- & )",
  '( read -r pid rest < /proc/self/stat && echo "$pid" > "$pid_file"; exec "$@" >&3 2>&4 3>&- 4>&- )',
  "code=$?",
  'if ! { printf \'{"code":%d,"t":%s}\\n\' "$code" "$(date +%s%3N)" > "$exit_file.tmp" && mv "$exit_file.tmp" "$exit_file"; }; then',
  '  : > "$exit_file.code-$code"',
  "fi",
].join("\n");

export function localNodeNames(poolName: string, count: number): string[] {
  return Array.from({ length: count }, (_, i) => `${poolName}-${i}`);
}

export class LocalExecutor implements Executor {
  readonly kind = "local";

  async launch(req: LaunchRequest): Promise<LaunchedRank[]> {
    const launched: LaunchedRank[] = [];
    try {
      await this.spawnRanks(req, launched);
      return launched;
    } catch (err) {
      // A gang that cannot start whole must not leave part of itself running, unwatched: kill what did start.
      for (const r of launched) if (r.pid !== null) signalGroup(r.pid, "SIGKILL");
      throw err;
    }
  }

  private async spawnRanks(req: LaunchRequest, launched: LaunchedRank[]): Promise<void> {
    mkdirSync(req.dir, { recursive: true });
    mkdirSync(req.checkpointDir, { recursive: true });
    const worldSize = req.nodes.length * req.procsPerNode;
    for (const [nodeRank, node] of req.nodes.entries()) {
      const devices =
        req.devices?.[nodeRank] ?? Array.from({ length: req.procsPerNode }, (_, i) => i % req.pool.devicesPerNode);
      for (let localRank = 0; localRank < req.procsPerNode; localRank++) {
        const rank = nodeRank * req.procsPerNode + localRank;
        const logPath = path.join(req.dir, `rank-${rank}.log`);
        const reportPath = path.join(req.dir, `rank-${rank}.jsonl`);
        const exitPath = path.join(req.dir, `rank-${rank}.exit`);
        const pidPath = path.join(req.dir, `rank-${rank}.pid`);
        const env: Record<string, string> = {
          ...(process.env as Record<string, string>),
          ...req.env,
          RANK: String(rank),
          LOCAL_RANK: String(localRank),
          WORLD_SIZE: String(worldSize),
          LOCAL_WORLD_SIZE: String(req.procsPerNode),
          NODE_RANK: String(nodeRank),
          GROUP_RANK: String(nodeRank),
          GROUP_WORLD_SIZE: String(req.nodes.length),
          ROLE_RANK: String(rank),
          ROLE_WORLD_SIZE: String(worldSize),
          MASTER_ADDR: "127.0.0.1",
          MASTER_PORT: String(req.masterPort),
          ...visibilityEnv(req.pool.accelerator.vendor, [...new Set(devices)]),
          SWITCHYARD_ACCELERATOR: req.pool.accelerator.vendor,
          SWITCHYARD_POOL: req.pool.name,
          SWITCHYARD_NODE: node,
          SWITCHYARD_JOB: req.jobName,
          SWITCHYARD_JOB_ID: req.jobId,
          SWITCHYARD_ATTEMPT: String(req.attempt),
          SWITCHYARD_REPORT: reportPath,
          SWITCHYARD_CHECKPOINT_DIR: req.checkpointDir,
          SWITCHYARD_RESUME_FROM: req.resumeFrom ?? "",
          PYTHONPATH: [pythonSdkDir, process.env.PYTHONPATH].filter(Boolean).join(path.delimiter),
          PYTHONUNBUFFERED: "1",
        };
        const log = openSync(logPath, "a");
        try {
          const args = ["-c", wrapperScript, "switchyard-rank", exitPath, pidPath, logPath, ...req.command];
          const child = spawn("/bin/sh", args, {
            cwd: req.workdir,
            env,
            detached: true,
            stdio: ["ignore", log, log],
          });
          const pid = await new Promise<number>((resolve, reject) => {
            child.once("spawn", () => resolve(child.pid!));
            child.once("error", reject);
          });
          child.unref();
          launched.push({ rank, node, pid, startTicks: readProcStat(pid)?.startTicks ?? null, logPath, reportPath });
        } finally {
          closeSync(log);
        }
      }
    }
  }

  async poll(attemptDir: string, ranks: readonly RankHandle[]): Promise<RankStatus[]> {
    return ranks.map((r): RankStatus => {
      const exitFile = path.join(attemptDir, `rank-${r.rank}.exit`);
      const record = readExitRecord(exitFile);
      if (record) return exitedStatus(r.rank, record);
      if (r.pid !== null && isSameProcessAlive(r.pid, r.startTicks)) return { rank: r.rank, state: "running" };
      // The wrapper may have written its record between the two checks above.
      const late = readExitRecord(exitFile) ?? readFallbackRecord(attemptDir, r.rank);
      if (late) return exitedStatus(r.rank, late);
      const torn = statOrNull(`${exitFile}.tmp`);
      if (torn) {
        return {
          rank: r.rank,
          state: "lost",
          at: torn.mtimeMs,
          why:
            `its wrapper could not write the exit record (${path.basename(exitFile)}.tmp has ${torn.size} bytes; ` +
            "is the disk full?)",
        };
      }
      return { rank: r.rank, state: "vanished", at: Date.now() };
    });
  }

  async stop(ranks: readonly RankHandle[], graceMs: number): Promise<void> {
    const groups = ranks.filter((r) => r.pid !== null && isSameProcessAlive(r.pid, r.startTicks)).map((r) => r.pid!);
    // Also reach groups whose wrapper already died but whose rank lives on.
    const all = [...new Set([...groups, ...ranks.map((r) => r.pid).filter((p): p is number => p !== null)])];
    const alive = all.filter((g) => groupAlive(g) && groupOwnedBy(g, ranks));
    for (const g of alive) signalGroup(g, "SIGCONT"); // a stopped (hung) process cannot act on SIGTERM
    for (const g of alive) signalGroup(g, "SIGTERM");
    const deadline = Date.now() + graceMs;
    while (Date.now() < deadline && alive.some(groupAlive)) await sleep(50);
    for (const g of alive) if (groupAlive(g)) signalGroup(g, "SIGKILL");
    const hardDeadline = Date.now() + 5000;
    while (Date.now() < hardDeadline && alive.some(groupAlive)) await sleep(20);
  }

  processState(rank: RankHandle): string | null {
    if (rank.pid === null || !isSameProcessAlive(rank.pid, rank.startTicks)) return null;
    const target = rankProcess(rank.pid, rank) ?? rank.pid;
    return readProcStat(target)?.state ?? null;
  }

  /** gdb's backtraces of the rank's own process, in the background (native-stacks.ts). */
  nativeStacks(rank: RankHandle, outFile: string, timeoutMs: number): boolean {
    if (rank.pid === null || !isSameProcessAlive(rank.pid, rank.startTicks)) return false;
    return startNativeStacks(rankProcess(rank.pid, rank) ?? rank.pid, outFile, timeoutMs);
  }

  /** The pid the wrapper recorded for the rank process (`rank-N.pid` beside its log), or null before it has. */
  rankPid(rank: RankHandle): number | null {
    return readPidFile(rank);
  }

  /**
   * Runs the command once per virtual node, all at once, on this host: each sees its node's name in SWITCHYARD_NODE,
   * and every node's address is this host's loopback (a probe gives each node its own port).
   */
  async runOnNodes(
    _pool: PoolSpec,
    nodes: readonly string[],
    argv: readonly string[],
    opts: RunOnNodesOptions,
  ): Promise<NodeRunResult[]> {
    checkRunOnNodes(nodes, argv, opts);
    const shared = {
      SWITCHYARD_NODES: nodes.join(","),
      SWITCHYARD_NODE_ADDRS: nodes.map((n) => `${n}=127.0.0.1`).join(","),
    };
    return Promise.all(
      nodes.map(async (node): Promise<NodeRunResult> => {
        const r = await capture(argv, {
          env: { ...process.env, ...opts.env, ...shared, SWITCHYARD_NODE: node },
          timeoutMs: opts.timeoutMs,
          maxOutputBytes: opts.maxOutputBytes ?? 1 << 20,
        });
        return {
          node,
          code: r.timedOut ? null : r.code,
          stdout: r.stdout,
          stderr: r.stderr,
          ...(r.timedOut ? { timedOut: true } : {}),
        };
      }),
    );
  }

  signalRank(rank: RankHandle, signal: NodeJS.Signals): boolean {
    if (rank.pid === null || !isSameProcessAlive(rank.pid, rank.startTicks)) return false;
    const target = rankProcess(rank.pid, rank) ?? rank.pid;
    // A request (a stack dump) goes only to processes that catch it: the rank, else its descendants that do (a
    // Python under a shell script). One with no handler would be killed by SIGUSR1's default action.
    const targets = requestSignals.has(signal) ? requestTargets(target, signal) : [target];
    let sent = false;
    for (const pid of targets) {
      try {
        process.kill(pid, signal);
        sent = true;
      } catch {
        // gone meanwhile
      }
    }
    return sent;
  }
}

/** The rank process when it catches `signal`, else its descendants that do (breadth first, at most 64 looked at). */
function requestTargets(rankPid: number, signal: NodeJS.Signals): number[] {
  if (catchesSignal(rankPid, signal)) return [rankPid];
  const found: number[] = [];
  const queue = childPids(rankPid);
  for (let looked = 0; queue.length > 0 && looked < 64; looked++) {
    const pid = queue.shift()!;
    if (catchesSignal(pid, signal)) found.push(pid);
    else queue.push(...childPids(pid));
  }
  return found;
}

/** A pid recorded for a rank leads its group; guard against the pid having been reused by something else. */
function groupOwnedBy(pgid: number, ranks: readonly RankHandle[]): boolean {
  const rank = ranks.find((r) => r.pid === pgid);
  if (!rank) return false;
  const stat = readProcStat(pgid);
  // The leader is gone but members remain: the group id cannot be reused while members hold it.
  if (!stat) return true;
  return rank.startTicks === null || stat.startTicks === rank.startTicks;
}

function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // already gone
  }
}

/** The rank's own process: the pid its wrapper recorded while that is still the wrapper's child, else its first child. */
function rankProcess(wrapperPid: number, rank: RankHandle): number | null {
  const recorded = readPidFile(rank);
  if (recorded !== null && readProcStat(recorded)?.ppid === wrapperPid) return recorded;
  return childPids(wrapperPid)[0] ?? null;
}

function readPidFile(rank: RankHandle): number | null {
  try {
    const text = readFileSync(path.join(path.dirname(rank.logPath), `rank-${rank.rank}.pid`), "utf8").trim();
    return /^\d{1,10}$/.test(text) ? Number(text) : null;
  } catch {
    return null;
  }
}

function statOrNull(file: string): Stats | null {
  try {
    return statSync(file);
  } catch {
    return null;
  }
}

/** The empty `rank-N.exit.code-<code>` a wrapper leaves when the disk is too full for the record itself. */
function readFallbackRecord(attemptDir: string, rank: number): { code: number; t: number } | null {
  let names: string[];
  try {
    names = readdirSync(attemptDir);
  } catch {
    return null;
  }
  const prefix = `rank-${rank}.exit.code-`;
  const name = names.find((n) => n.startsWith(prefix) && /^\d{1,3}$/.test(n.slice(prefix.length)));
  const st = name ? statOrNull(path.join(attemptDir, name)) : null;
  return name && st ? { code: Number(name.slice(prefix.length)), t: st.mtimeMs } : null;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
