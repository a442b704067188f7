import type { NodeRunResult } from "../port.js";

/**
 * `runOnNodes` on Slurm runs one `srun` step with one task per host and `--label`, so every line a task prints comes
 * back prefixed with its task id ("3: ..."); task i runs on the i-th host in Slurm's order. srun names the tasks that
 * failed on its stderr ("srun: error: a2: task 1: Exited with exit code 3"). These parse that output back per host.
 */

/** Splits srun --label output into per-task text (lines without a label go to `unlabeled`). */
export function splitLabeled(text: string): { byTask: Map<number, string>; unlabeled: string } {
  const byTask = new Map<number, string[]>();
  const unlabeled: string[] = [];
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  for (const line of lines) {
    const m = /^\s*(\d+): ?(.*)$/.exec(line);
    if (m) {
      const task = Number(m[1]);
      byTask.set(task, [...(byTask.get(task) ?? []), m[2]!]);
    } else unlabeled.push(line);
  }
  return {
    byTask: new Map([...byTask].map(([t, ls]) => [t, ls.join("\n") + "\n"])),
    unlabeled: unlabeled.length > 0 ? unlabeled.join("\n") + "\n" : "",
  };
}

/** Task ids in a Slurm task list: "1", "0-2", "1,3-4". */
function taskList(text: string): number[] {
  const out: number[] = [];
  for (const part of text.split(",")) {
    const [a, b] = part.split("-").map((x) => Number(x.trim()));
    if (a === undefined || !Number.isInteger(a)) continue;
    const end = b !== undefined && Number.isInteger(b) ? Math.min(b, a + 100_000) : a;
    for (let i = a; i <= end; i++) out.push(i);
  }
  return out;
}

/** The exit of each task srun reports as failed: exit code, or null when killed by a signal. */
export function failedTasks(stderr: string): Map<number, number | null> {
  const out = new Map<number, number | null>();
  for (const line of stderr.split("\n")) {
    const m = /srun: error: \S+: tasks? ([\d,\s-]+): (Exited with exit code (\d+)|Killed by signal \d+|.*)$/.exec(line);
    if (!m) continue;
    for (const t of taskList(m[1]!)) out.set(t, m[3] !== undefined ? Number(m[3]) : null);
  }
  return out;
}

/** Per host results from one srun step's outcome. `nodes` are in Slurm's order (task i on nodes[i]). */
export function resultsFromStep(
  nodes: readonly string[],
  step: { code: number | null; stdout: string; stderr: string; timedOut: boolean },
): NodeRunResult[] {
  const out = splitLabeled(step.stdout);
  const err = splitLabeled(step.stderr);
  const failed = failedTasks(step.stderr);
  // The step ran when some task said anything or srun reported on a task; else srun itself failed (no allocation,
  // unknown node...) and its own message is every host's stderr.
  const ran = out.byTask.size > 0 || err.byTask.size > 0 || failed.size > 0;
  return nodes.map((node, task) => {
    const stderr = (err.byTask.get(task) ?? "") + (ran ? "" : err.unlabeled);
    const code = step.timedOut ? null : failed.has(task) ? failed.get(task)! : ran || step.code === 0 ? 0 : null;
    return {
      node,
      code,
      stdout: out.byTask.get(task) ?? "",
      stderr: stderr || (code === null && !ran ? `srun ended with ${step.code ?? "a signal"} before the task ran` : ""),
      ...(step.timedOut ? { timedOut: true } : {}),
    };
  });
}
