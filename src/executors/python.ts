import { execFileSync } from "node:child_process";

/**
 * Finds a Python interpreter for `{python}` in job commands. Debian's PyTorch is importable only from /usr/bin/python3,
 * while the first python3 on PATH may be another (pyenv) install without it: prefer one that can import torch.
 */
export interface PythonChoice {
  path: string;
  hasTorch: boolean;
  tried: string[];
}

let cached: PythonChoice | undefined;

function works(interpreter: string, code: string): boolean {
  try {
    execFileSync(interpreter, ["-c", code], { stdio: "ignore", timeout: 60_000 });
    return true;
  } catch {
    return false;
  }
}

export function findPython(env: NodeJS.ProcessEnv = process.env): PythonChoice | null {
  if (cached && !env.SWITCHYARD_PYTHON) return cached;
  const candidates = [env.SWITCHYARD_PYTHON, "/usr/bin/python3", "python3", "python"].filter(
    (c): c is string => typeof c === "string" && c !== "",
  );
  const tried: string[] = [];
  for (const c of candidates) {
    tried.push(c);
    if (works(c, "import torch")) return (cached = { path: c, hasTorch: true, tried: [...tried] });
  }
  for (const c of candidates) {
    if (works(c, "import sys")) return (cached = { path: c, hasTorch: false, tried });
  }
  return null;
}

export const pythonPlaceholder = "{python}";
