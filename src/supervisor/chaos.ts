import { constants } from "node:fs";
import { lstat, open, readdir } from "node:fs/promises";
import path from "node:path";
import type { AttemptRecord, EventRecord, IncidentRecord, RankRecord } from "../store/port.js";

/** Faults injected into real processes and files, to rehearse recovery: what an unstable pool does on its own. */
export const ChaosAction = {
  KillRank: "kill-rank",
  HangRank: "hang-rank",
  SlowRank: "slow-rank",
  Nan: "nan",
  ResumeRank: "resume-rank",
  CorruptCheckpoint: "corrupt-checkpoint",
  DegradeLink: "degrade-link",
  HealLink: "heal-link",
} as const;
export type ChaosAction = (typeof ChaosAction)[keyof typeof ChaosAction];

export const chaosActions: readonly ChaosAction[] = Object.values(ChaosAction);

export interface ChaosTarget {
  ranks: RankRecord[];
  /** The current attempt's folder (rank-side markers go there). */
  attemptDir: string | null;
  checkpointDir: string;
  /** A job with `checkpoint.watch`: the live file of its newest adopted generation (adopt.ts), null before one. */
  adoptedFile?: () => Promise<string | null>;
  signalRank(rank: RankRecord, signal: NodeJS.Signals): boolean;
  /** degrade-link / heal-link: the host (default: the highest running rank's), the rate (e.g. 5mbit), the burst. */
  link?: { node?: string; rate?: string; burst?: string };
  /** The executor of the job's pool ("slurm", "local"): links are shaped on Slurm testbed hosts only. */
  poolExecutor?: string;
  /** The testbed's link shaping (executors/slurm/testbed.ts: degradeLink, healLink). */
  shaper?: LinkShaper;
}

/** Shapes one host's link (the Slurm testbed: tc on both ends) and takes the shaping away. */
export interface LinkShaper {
  degrade(node: string, rate: string, opts?: { burst?: string }): Promise<string>;
  heal(node: string): Promise<string>;
}

/** A link rate as the testbed takes it: 5mbit, 100mbit, 1gbit (Mbit/s and the like are accepted and rewritten). */
export function normalizeRate(rate: string): string | null {
  const m = /^([0-9]{1,9})\s*(bit|kbit|mbit|gbit)(?:\/s)?$/i.exec(rate.trim());
  return m ? `${m[1]}${m[2]!.toLowerCase()}` : null;
}

export interface ChaosResult {
  action: ChaosAction;
  rank?: number;
  /**
   * The attempt whose rank (or link) was hit. With the rank and node it is the mark the server's `chaos` event keeps,
   * by which the report tells an injected fault's incident from a real one (`injectedIncidents`).
   */
  attempt?: number;
  path?: string;
  node?: string;
  rate?: string;
  message: string;
}

export async function injectChaos(
  action: ChaosAction,
  target: ChaosTarget,
  rank: number | undefined,
): Promise<ChaosResult> {
  switch (action) {
    case "kill-rank":
    case "hang-rank":
    case "resume-rank": {
      const chosen = pickRank(target.ranks, rank);
      const signal: NodeJS.Signals =
        action === "kill-rank" ? "SIGKILL" : action === "hang-rank" ? "SIGSTOP" : "SIGCONT";
      if (!target.signalRank(chosen, signal)) throw new Error(`rank ${chosen.rank} is not running`);
      return { action, ...hit(chosen), message: `sent ${signal} to rank ${chosen.rank} on ${chosen.node}` };
    }
    case "slow-rank": {
      const chosen = pickRank(target.ranks, rank);
      slowDown(chosen, target, slowRankDefaults);
      const { periodMs, stoppedShare, durationMs } = slowRankDefaults;
      return {
        action,
        ...hit(chosen),
        message: `rank ${chosen.rank} on ${chosen.node} runs at ${Math.round((1 - stoppedShare) * 100)}% speed for ${durationMs / 1000}s (SIGSTOP/SIGCONT every ${periodMs} ms)`,
      };
    }
    case "nan": {
      const chosen = pickRank(target.ranks, rank);
      if (!target.attemptDir) throw new Error("the job has no running attempt");
      await touchMarker(path.join(target.attemptDir, `chaos-nan-rank-${chosen.rank}`));
      return {
        action,
        ...hit(chosen),
        message: `rank ${chosen.rank} reports NaN losses from its next step (SDK ranks only)`,
      };
    }
    case "degrade-link":
    case "heal-link": {
      if (target.poolExecutor !== "slurm" || !target.shaper) {
        throw new Error(
          `${action} shapes a host's link on the Slurm testbed; this job's pool runs on ${target.poolExecutor ?? "no pool"} ` +
            "(fix: run it on the testbed's pool, or use slow-rank to slow a rank on a local pool)",
        );
      }
      const node = target.link?.node ?? pickRank(target.ranks, rank).node;
      const live = target.ranks.find((r) => r.exitedAt === null);
      const attempt = live ? { attempt: live.attempt } : {};
      if (action === "heal-link") {
        await target.shaper.heal(node);
        return { action, ...attempt, node, message: `${node}'s link is no longer shaped` };
      }
      const raw = target.link?.rate;
      if (raw === undefined) throw new Error("degrade-link needs a rate (fix: --rate 5mbit)");
      const rate = normalizeRate(raw);
      if (rate === null)
        throw new Error(`degrade-link: bad rate ${JSON.stringify(raw)} (fix: a rate like 5mbit or 100mbit)`);
      const burst = target.link?.burst;
      await target.shaper.degrade(node, rate, burst !== undefined ? { burst } : {});
      return {
        action,
        ...attempt,
        node,
        rate,
        message: `${node}'s link shaped to ${rate} both ways${burst ? ` (bursts of ${burst} at full speed)` : ""}`,
      };
    }
    case "corrupt-checkpoint": {
      const adopted = target.adoptedFile ? await target.adoptedFile() : null;
      const file =
        adopted ??
        (await newestCheckpointFile(target.checkpointDir).catch((err: Error) => {
          throw target.adoptedFile
            ? new Error(
                "no checkpoint to corrupt yet: the script's watched file has not been adopted " +
                  "(fix: wait for its first save to settle; see `switchyard events`)",
              )
            : err;
        }));
      const at = await flipMiddleByte(file);
      return { action, path: file, message: `flipped byte ${at} of ${file}` };
    }
  }
}

const slowRankDefaults = { periodMs: 1000, stoppedShare: 0.6, durationMs: 30_000 };

/** An incident that `switchyard chaos` caused: the action and the `chaos` event that recorded it. */
export interface InjectedFault {
  action: ChaosAction;
  event: number;
  at: number;
}

/** Actions that cause a fault; resume-rank and heal-link undo one, corrupt-checkpoint only makes a restart skip a save. */
const faultActions: ReadonlySet<string> = new Set<ChaosAction>([
  "kill-rank",
  "hang-rank",
  "nan",
  "slow-rank",
  "degrade-link",
]);
/**
 * Faults that end their attempt at once (at most one incident each: the one that ended it), and the cause each is found
 * as: an incident of that cause right after it is the drill's even where the culprit named is another rank.
 */
const endingActions: ReadonlyMap<string, string> = new Map<ChaosAction, string>([
  ["kill-rank", "killed"],
  ["hang-rank", "hang"],
  ["nan", "numerical"],
]);
/** A slow rank's slowdown is found while it lasts, or soon after (the detector's window). */
const slowRankFoundWithinMs = slowRankDefaults.durationMs + 60_000;
/** The server stamps its `chaos` event just after the signal; a detector may stamp the incident a moment earlier. */
const stampSlackMs = 1000;

/**
 * Which incidents `switchyard chaos` injected: each `chaos` event of a fault is matched to the incidents of the same
 * attempt detected after it whose culprit is the rank or host it hit (an incident that names no culprit matches too).
 * kill-rank, hang-rank and nan match the incident that ended the attempt, when it names that culprit or has the cause
 * the fault is found as (killed, hang, numerical); slow-rank a slowdown found while it lasted
 * (or within a minute after); degrade-link any incident on that host until `heal-link` (the shaping outlives the
 * attempt). resume-rank ends a hang-rank or slow-rank of that rank. The fault model's own `chaos` events (a pool's
 * declared `faultModel`, which plays the pool's failure rate) carry no action and are not injections here: they
 * stand for the fleet's own failures. Pure: the report calls it on the records of the store.
 */
export function injectedIncidents(
  incidents: ReadonlyArray<
    Pick<IncidentRecord, "id" | "attempt" | "cause" | "culpritRank" | "culpritNode" | "detectedAt" | "evidence">
  >,
  events: ReadonlyArray<Pick<EventRecord, "id" | "t" | "kind" | "data">>,
  attempts: ReadonlyArray<Pick<AttemptRecord, "n" | "startedAt" | "endedAt">>,
): Map<number, InjectedFault> {
  const chaos = events
    .filter((e) => e.kind === "chaos" && typeof e.data.action === "string")
    .map((e) => {
      const d = e.data;
      // Events recorded before results named the attempt: the attempt that ran at the time.
      const attempt =
        typeof d.attempt === "number"
          ? d.attempt
          : [...attempts]
              .sort((a, b) => b.n - a.n)
              .find((a) => a.startedAt <= e.t && (a.endedAt === null || a.endedAt >= e.t))?.n;
      return {
        id: e.id,
        t: e.t,
        action: d.action as ChaosAction,
        attempt,
        rank: typeof d.rank === "number" ? d.rank : undefined,
        node: typeof d.node === "string" ? d.node : undefined,
      };
    })
    .sort((a, b) => a.t - b.t || a.id - b.id);
  const out = new Map<number, InjectedFault>();
  for (const inj of chaos) {
    if (!faultActions.has(inj.action) || inj.attempt === undefined) continue;
    const undo = chaos.find(
      (u) =>
        u.t >= inj.t &&
        u.id !== inj.id &&
        (inj.action === "degrade-link"
          ? u.action === "heal-link" && u.node === inj.node
          : u.action === "resume-rank" && u.attempt === inj.attempt && u.rank === inj.rank),
    );
    let until = undo?.t ?? Number.POSITIVE_INFINITY;
    if (inj.action === "slow-rank") until = Math.min(until, inj.t + slowRankFoundWithinMs);
    for (const i of [...incidents].sort((a, b) => a.detectedAt - b.detectedAt || a.id - b.id)) {
      if (out.has(i.id) || i.detectedAt < inj.t - stampSlackMs || i.detectedAt > until) continue;
      const sameAttempt = i.attempt === inj.attempt;
      const noCulprit = i.culpritRank === null && i.culpritNode === null;
      let matches: boolean;
      if (inj.action === "degrade-link") {
        matches = (i.culpritNode !== null && i.culpritNode === inj.node) || (sameAttempt && noCulprit);
      } else {
        const culprit =
          noCulprit ||
          (inj.rank !== undefined && i.culpritRank === inj.rank) ||
          (i.culpritNode !== null && i.culpritNode === inj.node);
        const foundAs = endingActions.get(inj.action);
        matches =
          sameAttempt &&
          (foundAs === undefined ? culprit : i.evidence.endedAttempt !== false && (culprit || i.cause === foundAs));
      }
      if (matches) out.set(i.id, { action: inj.action, event: inj.id, at: inj.t });
    }
  }
  return out;
}

/** What a result records of the rank it hit: its number, host and attempt. */
function hit(r: RankRecord): { rank: number; node: string; attempt: number } {
  return { rank: r.rank, node: r.node, attempt: r.attempt };
}

/** A degraded chip or link, played by a SIGSTOP/SIGCONT duty cycle on the real process. */
function slowDown(rank: RankRecord, target: ChaosTarget, o: typeof slowRankDefaults): void {
  const until = Date.now() + o.durationMs;
  const cycle = (): void => {
    if (Date.now() >= until || !target.signalRank(rank, "SIGSTOP")) {
      target.signalRank(rank, "SIGCONT");
      return;
    }
    setTimeout(() => {
      if (target.signalRank(rank, "SIGCONT")) setTimeout(cycle, o.periodMs * (1 - o.stoppedShare));
    }, o.periodMs * o.stoppedShare).unref();
  };
  cycle();
}

function pickRank(ranks: RankRecord[], rank: number | undefined): RankRecord {
  const live = ranks.filter((r) => r.exitedAt === null);
  const chosen = rank === undefined ? live[live.length - 1] : live.find((r) => r.rank === rank);
  if (!chosen) {
    throw new Error(
      rank === undefined
        ? "the job has no running rank"
        : `rank ${rank} is not running (fix: see \`switchyard status\`)`,
    );
  }
  return chosen;
}

/**
 * Files in folders a rank can write (checkpoints, the attempt folder) are opened without following symlinks and
 * without blocking on a FIFO: chaos run by the server must never write through a link planted there.
 */
const noFollow = (constants.O_NOFOLLOW ?? 0) | (constants.O_NONBLOCK ?? 0);

async function newestCheckpointFile(root: string): Promise<string> {
  const entries = await readdir(root, { withFileTypes: true }).catch(() => []);
  const dirs = entries
    .filter((d) => d.isDirectory() && /^step-\d+$/.test(d.name))
    .map((d) => d.name)
    .sort();
  const newest = dirs[dirs.length - 1];
  if (!newest) throw new Error(`no checkpoint under ${root} yet`);
  const files = (await readdir(path.join(root, newest), { withFileTypes: true }))
    .filter((f) => f.isFile() && f.name !== "MANIFEST.json")
    .map((f) => f.name)
    .sort();
  const first = files[0];
  if (!first) throw new Error(`checkpoint ${newest} holds no regular data file`);
  return path.join(root, newest, first);
}

/**
 * Flips the middle byte of a regular file in place (one byte read, one written): returns its offset. The file keeps
 * its mtime, as with bit rot on storage: nothing but its bytes tells it changed.
 */
async function flipMiddleByte(file: string): Promise<number> {
  if (!(await lstat(file)).isFile()) throw new Error(`${file} is not a regular file`);
  const handle = await open(file, constants.O_RDWR | noFollow);
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw new Error(`${file} is not a regular file`);
    if (st.size === 0) throw new Error(`${file} is empty: nothing to corrupt`);
    const at = Math.floor(st.size / 2);
    const byte = Buffer.alloc(1);
    await handle.read(byte, 0, 1, at);
    byte[0] = byte[0]! ^ 0xff;
    await handle.write(byte, 0, 1, at);
    await handle.utimes(st.atime, st.mtime);
    return at;
  } finally {
    await handle.close();
  }
}

/** Creates an empty marker file (or leaves an existing regular one); refuses a symlink or special file there. */
async function touchMarker(file: string): Promise<void> {
  const handle = await open(file, constants.O_WRONLY | constants.O_CREAT | noFollow, 0o600).catch((err: unknown) => {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(`cannot create ${file}: ${code === "ELOOP" ? "a symlink is in the way" : String(code ?? err)}`);
  });
  try {
    if (!(await handle.stat()).isFile()) throw new Error(`${file} is not a regular file`);
  } finally {
    await handle.close();
  }
}
