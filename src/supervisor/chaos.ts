import { readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import type { RankRecord } from "../store/port.js";

/** Faults injected into real processes and files, to rehearse recovery: what an unstable pool does on its own. */
export const ChaosAction = {
  KillRank: "kill-rank",
  HangRank: "hang-rank",
  ResumeRank: "resume-rank",
  CorruptCheckpoint: "corrupt-checkpoint",
} as const;
export type ChaosAction = (typeof ChaosAction)[keyof typeof ChaosAction];

export const chaosActions: readonly ChaosAction[] = Object.values(ChaosAction);

export interface ChaosTarget {
  ranks: RankRecord[];
  checkpointDir: string;
  signalRank(rank: RankRecord, signal: NodeJS.Signals): boolean;
}

export interface ChaosResult {
  action: ChaosAction;
  rank?: number;
  path?: string;
  message: string;
}

export async function injectChaos(action: ChaosAction, target: ChaosTarget, rank: number | undefined): Promise<ChaosResult> {
  switch (action) {
    case "kill-rank":
    case "hang-rank":
    case "resume-rank": {
      const chosen = pickRank(target.ranks, rank);
      const signal: NodeJS.Signals = action === "kill-rank" ? "SIGKILL" : action === "hang-rank" ? "SIGSTOP" : "SIGCONT";
      if (!target.signalRank(chosen, signal)) throw new Error(`rank ${chosen.rank} is not running`);
      return { action, rank: chosen.rank, message: `sent ${signal} to rank ${chosen.rank} on ${chosen.node}` };
    }
    case "corrupt-checkpoint": {
      const file = await newestCheckpointFile(target.checkpointDir);
      const bytes = await readFile(file);
      const at = Math.floor(bytes.length / 2);
      bytes[at] = (bytes[at] ?? 0) ^ 0xff;
      await writeFile(file, bytes);
      return { action, path: file, message: `flipped byte ${at} of ${file}` };
    }
  }
}

function pickRank(ranks: RankRecord[], rank: number | undefined): RankRecord {
  const live = ranks.filter((r) => r.exitedAt === null);
  const chosen = rank === undefined ? live[live.length - 1] : live.find((r) => r.rank === rank);
  if (!chosen) {
    throw new Error(rank === undefined ? "the job has no running rank" : `rank ${rank} is not running (fix: see \`switchyard status\`)`);
  }
  return chosen;
}

async function newestCheckpointFile(root: string): Promise<string> {
  const dirs = (await readdir(root).catch(() => [] as string[])).filter((d) => /^step-\d+$/.test(d)).sort();
  const newest = dirs[dirs.length - 1];
  if (!newest) throw new Error(`no checkpoint under ${root} yet`);
  const files = (await readdir(path.join(root, newest))).filter((f) => f !== "MANIFEST.json").sort();
  const first = files[0];
  if (!first) throw new Error(`checkpoint ${newest} holds no data file`);
  return path.join(root, newest, first);
}
