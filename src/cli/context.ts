import { readFileSync, realpathSync, statSync } from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import { packageRoot, switchyardHome } from "../paths.js";

export const version: string = (
  JSON.parse(readFileSync(path.join(packageRoot, "package.json"), "utf8")) as { version: string }
).version;

export interface Globals {
  home: string;
  json: boolean;
  /** True when --home was given: hints must repeat it to reach the same server. */
  homeFlag: boolean;
}

/** Options every command shares, read from the root program. */
export function globals(cmd: Command): Globals {
  let root = cmd;
  while (root.parent) root = root.parent;
  const o = root.opts<{ home?: string; json?: boolean }>();
  return {
    home: o.home ? path.resolve(o.home) : switchyardHome(),
    json: Boolean(o.json),
    homeFlag: o.home !== undefined,
  };
}

const binPath = path.join(packageRoot, "bin", "switchyard.js");

/** A shell word as typed: plain when safe, single-quoted otherwise. */
export function shellWord(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

function realpath(p: string): string | null {
  try {
    return realpathSync(p);
  } catch {
    return null;
  }
}

/** Whether `switchyard` on PATH is this very CLI (after `npm link` or a global install). */
function onPath(env: NodeJS.ProcessEnv): boolean {
  const mine = realpath(binPath);
  for (const dir of (env.PATH ?? "").split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, "switchyard");
    try {
      if (!statSync(candidate).isFile()) continue;
    } catch {
      continue;
    }
    return mine !== null && realpath(candidate) === mine;
  }
  return false;
}

/**
 * How to run this CLI again from the user's shell, for the hints it prints: `switchyard` when that name on PATH is
 * this CLI, else `node <path to bin/switchyard.js>` (relative to the current folder when it is below it), plus
 * `--home <dir>` when the home is not the one the shell would pick by itself.
 */
export function selfCommand(
  opts: { home?: string; homeFlag?: boolean } = {},
  env: NodeJS.ProcessEnv = process.env,
  cwd: string = process.cwd(),
): string {
  const rel = path.relative(cwd, binPath);
  const bin = onPath(env)
    ? "switchyard"
    : `node ${shellWord(rel && !rel.startsWith("..") && !path.isAbsolute(rel) ? rel : binPath)}`;
  const needsHome =
    opts.home !== undefined && (opts.homeFlag === true || path.resolve(opts.home) !== switchyardHome(env));
  return needsHome ? `${bin} --home ${shellWord(opts.home!)}` : bin;
}
