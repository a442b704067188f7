import { readFileSync } from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import { packageRoot, switchyardHome } from "../paths.js";

export const version: string = (
  JSON.parse(readFileSync(path.join(packageRoot, "package.json"), "utf8")) as { version: string }
).version;

export interface Globals {
  home: string;
  json: boolean;
}

/** Options every command shares, read from the root program. */
export function globals(cmd: Command): Globals {
  let root = cmd;
  while (root.parent) root = root.parent;
  const o = root.opts<{ home?: string; json?: boolean }>();
  return { home: o.home ? path.resolve(o.home) : switchyardHome(), json: Boolean(o.json) };
}
