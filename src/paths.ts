import { existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The package root (where package.json, sdk/ and examples/ live), from both src/ (tests) and dist/ (built). */
export const packageRoot: string = (() => {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, "package.json"))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error("switchyard: cannot find the package root (no package.json above the code)");
    dir = parent;
  }
  return dir;
})();

export const pythonSdkDir = path.join(packageRoot, "sdk", "python");

/** Where switchyard keeps its state: SWITCHYARD_HOME, default ~/.switchyard. */
export function switchyardHome(env: NodeJS.ProcessEnv = process.env): string {
  return path.resolve(env.SWITCHYARD_HOME ?? path.join(os.homedir(), ".switchyard"));
}
