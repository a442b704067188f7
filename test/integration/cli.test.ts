import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { packageRoot } from "../../src/paths.js";
import { hasTorch, sleep, tempHome, waitFor, writeCluster } from "./harness.js";

/**
 * The CLI as users run it: `node bin/switchyard.js` in a child process against the server it starts itself, with the
 * README's exit codes (0 ok, 1 job failed, 2 bad input, 3 unreachable, 4 cancelled or interrupted).
 */

const fixtures = path.join(packageRoot, "test", "fixtures", "ranks");
const bin = path.join(packageRoot, "bin", "switchyard.js");

interface Run {
  child: ChildProcess;
  out: () => string;
  err: () => string;
  done: Promise<number>;
}

function start(home: string, args: string[]): Run {
  const env: NodeJS.ProcessEnv = { ...process.env, SWITCHYARD_HOME: home };
  const child = spawn(process.execPath, [bin, "--home", home, ...args], { cwd: packageRoot, env });
  let out = "";
  let err = "";
  child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (err += d.toString()));
  const done = new Promise<number>((resolve) =>
    child.once("close", (code, signal) => resolve(code ?? (signal ? 128 : -1))),
  );
  return { child, out: () => out, err: () => err, done };
}

async function cli(home: string, ...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const run = start(home, args);
  const code = await run.done;
  return { code, out: run.out(), err: run.err() };
}

async function json<T>(home: string, ...args: string[]): Promise<T> {
  const r = await cli(home, "--json", ...args);
  if (r.code !== 0) throw new Error(`${args.join(" ")} exited ${r.code}: ${r.err}`);
  return JSON.parse(r.out) as T;
}

interface JobJson {
  id: string;
  state: string;
  last: { step: number } | null;
  attempts: Array<{ n: number; resumeStep: number | null; resumeFrom: string | null }>;
  spec: { checkpoint: { dir: string } };
}

function spec(home: string, name: string, args: string[]): string {
  const file = path.join(home, `${name}.yaml`);
  writeFileSync(
    file,
    [
      `name: ${name}`,
      "procsPerNode: 2",
      `command: ${JSON.stringify(["{python}", path.join(fixtures, "ok.py"), ...args])}`,
      `workdir: ${JSON.stringify(home)}`,
      "recovery: { backoffSeconds: 0.2 }",
    ].join("\n"),
  );
  return file;
}

describe.skipIf(!hasTorch)("the CLI against a real server", () => {
  const home = tempHome("cli");

  beforeAll(async () => {
    const up = await cli(home, "up", "--cluster", writeCluster(home));
    expect(up.code, up.err).toBe(0);
  }, 60_000);

  afterAll(async () => {
    await cli(home, "down");
  }, 30_000);

  it("a second run of a spec starts fresh in its own folder; --resume-from resumes another run and says so", async () => {
    const file = spec(home, "twice", ["--steps", "6", "--ckpt-every", "3", "--step-sleep", "0.02"]);
    const first = await cli(home, "run", file, "--follow");
    expect(first.code, first.err).toBe(0);
    const firstId = /submitted (\S+)/.exec(first.out)![1]!;
    const second = await cli(home, "run", file, "--follow");
    expect(second.code, second.err).toBe(0);
    const secondId = /submitted (\S+)/.exec(second.out)![1]!;
    expect(second.out).not.toContain("another run");

    const [a, b] = [await json<JobJson>(home, "status", firstId), await json<JobJson>(home, "status", secondId)];
    expect(b.attempts[0]!.resumeStep).toBeNull();
    expect(b.last?.step).toBe(6);
    expect(a.spec.checkpoint.dir).toBe(path.join(home, "checkpoints", "twice", firstId));
    expect(b.spec.checkpoint.dir).toBe(path.join(home, "checkpoints", "twice", secondId));
    expect(readlinkSync(path.join(home, "checkpoints", "twice", "latest"))).toBe(secondId);

    // Resuming at the final step of another run: said on the console and as an event, and the step is not "?".
    const third = await cli(home, "run", file, "--follow", "--resume-from", firstId);
    expect(third.code, third.err).toBe(0);
    expect(third.out).toContain(`resuming from another run's checkpoint: ${a.spec.checkpoint.dir} (job ${firstId}`);
    expect(third.out).toMatch(
      /checkpoint\.foreign\s+resuming from another run's checkpoint .*step-00000006 \(step 6\)/,
    );
    expect(third.out).toMatch(/job finished at step 6 after 0 restart\(s\) \(resumed from .* nothing left to train\)/);
    expect(third.out).toContain("step 6 (from checkpoint)");
    expect(third.out).not.toContain("step ?");
    const thirdId = /submitted (\S+)/.exec(third.out)![1]!;
    const ps = await cli(home, "ps", "-a");
    expect(ps.out).toMatch(new RegExp(`^${thirdId}\\s+SUCCEEDED\\s+6 \\(checkpoint\\)`, "m"));

    // By path (a step-* checkpoint), and nothing to resume from is bad input, not a silent fresh start.
    const byPath = await cli(home, "run", file, "--resume-from", path.join(a.spec.checkpoint.dir, "step-00000003"));
    expect(byPath.code, byPath.err).toBe(0);
    expect(byPath.out).toContain("resuming from another run's checkpoint");
    const nothing = await cli(home, "run", file, "--resume-from", "no-such-job-or-path");
    expect(nothing.code).toBe(2);
    expect(nothing.err).toMatch(/^switchyard: --resume-from no-such-job-or-path: no job .* \(fix: /);
  }, 120_000);

  it("the example resumed at its final step says there is nothing left to train, not loss nan", async () => {
    const file = path.join(home, "chargpt.yaml");
    const train = path.join(packageRoot, "examples", "chargpt", "train.py");
    const args = ["--steps", "4", "--ckpt-every", "2", "--eval-final", "--batch", "8"];
    writeFileSync(
      file,
      [
        "name: chargpt",
        "procsPerNode: 2",
        `command: ${JSON.stringify(["{python}", train, ...args])}`,
        "steps: 4",
        `workdir: ${JSON.stringify(home)}`,
      ].join("\n"),
    );
    const first = await cli(home, "run", file, "--follow");
    expect(first.code, first.out + first.err).toBe(0);
    const firstId = /submitted (\S+)/.exec(first.out)![1]!;
    const again = await cli(home, "run", file, "--follow", "--resume-from", firstId);
    expect(again.code, again.out + again.err).toBe(0);
    const id = /submitted (\S+)/.exec(again.out)![1]!;
    expect(again.out).toContain("job finished at step 4 after 0 restart(s)");
    const log = await cli(home, "logs", id, "--rank", "0");
    expect(log.out).toContain("nothing left to train: resumed at step 4 of 4");
    expect(log.out).not.toMatch(/loss nan/);
  }, 180_000);

  it("exit codes: unknown node, chaos on a finished job or without a checkpoint are bad input (2)", async () => {
    const file = spec(home, "nockpt", ["--steps", "3", "--ckpt-every", "0", "--step-sleep", "0.02"]);
    expect((await cli(home, "run", file, "--follow")).code).toBe(0);
    const uncordon = await cli(home, "nodes", "uncordon", "nosuchnode");
    expect(uncordon.code).toBe(2);
    expect(uncordon.err).toMatch(
      /^switchyard: no node named "nosuchnode" \(fix: use one of: reliable-0, unstable-0, unstable-1\)\n$/,
    );
    const kill = await cli(home, "chaos", "nockpt", "kill-rank");
    expect(kill.code).toBe(2);
    expect(kill.err).toContain("is SUCCEEDED");
    const corrupt = await cli(home, "chaos", "nockpt", "corrupt-checkpoint");
    expect(corrupt.code).toBe(2);
    expect(corrupt.err).toMatch(/^switchyard: no checkpoint under /);
    expect((await cli(home, "status", "nosuchjob")).code).toBe(2);
  }, 60_000);

  it("--json: every command prints JSON, logs as JSON lines, errors as one object", async () => {
    const file = spec(home, "jsonjob", ["--steps", "4", "--ckpt-every", "2", "--step-sleep", "0.02"]);
    const run = await cli(home, "--json", "run", file, "--follow");
    expect(run.code, run.err).toBe(0);
    const lines = run.out
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { type?: string; id?: string });
    const id = lines[0]!.id!;
    expect(lines.at(-1)).toMatchObject({ type: "end", state: "SUCCEEDED" });
    for (const args of [["ps", "-a"], ["status", id], ["events", id], ["report", id], ["nodes"], ["cancel", id]]) {
      const r = await cli(home, "--json", ...args);
      expect(r.code, `${args.join(" ")}: ${r.err}`).toBe(0);
      expect(() => JSON.parse(r.out) as unknown, args.join(" ")).not.toThrow();
    }
    const logs = await cli(home, "--json", "logs", id, "--rank", "1");
    expect(logs.code).toBe(0);
    const logLines = logs.out
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { attempt: number; rank: number; line: string });
    expect(logLines.length).toBeGreaterThan(1);
    expect(logLines.at(-1)).toMatchObject({ attempt: 1, rank: 1 });
    const err = await cli(home, "--json", "logs", "nosuchjob");
    expect(err.code).toBe(2);
    expect(JSON.parse(err.err)).toMatchObject({ exitCode: 2, error: expect.stringContaining("nosuchjob") });
  }, 60_000);

  it("Ctrl-C on run --follow detaches with one line and exit 4; the job keeps running; the printed command follows it", async () => {
    const file = spec(home, "detach", ["--steps", "400", "--ckpt-every", "0", "--step-sleep", "0.1"]);
    const run = start(home, ["run", file, "--follow"]);
    await waitFor("the job to run", async () => /step \d+\/400/.test(run.out()) || /RUNNING/.test(run.out()), 60_000);
    const before = run.out();
    run.child.kill("SIGINT");
    expect(await run.done).toBe(4);
    const added = run.out().slice(before.length).trim().split("\n");
    expect(added).toHaveLength(1);
    const m = /^detached from (\S+); it keeps running \(follow it again: (.+)\)$/.exec(added[0]!);
    expect(m, added[0]).not.toBeNull();
    const [, id, again] = m!;
    expect((await json<JobJson>(home, "status", id!)).state).toBe("RUNNING");

    // Ctrl-C on any other command is exit 4 with a word too.
    const logs = start(home, ["logs", id!, "--follow"]);
    await waitFor("the log to stream", async () => logs.out().includes("step "), 30_000);
    logs.child.kill("SIGINT");
    expect(await logs.done).toBe(4);
    expect(logs.err()).toBe("switchyard: interrupted\n");

    // The hint works as printed (run from the folder the user was in): it follows, and ends with the job.
    const words = again!.split(" ");
    expect(words.slice(0, 2)).toEqual(["node", "bin/switchyard.js"]);
    const follower = spawn(words[0]!, words.slice(1), { cwd: packageRoot, env: process.env });
    let text = "";
    follower.stdout.on("data", (d: Buffer) => (text += d.toString()));
    const ended = new Promise<number | null>((r) => follower.once("close", r));
    await waitFor("the printed command to follow", async () => text.includes("step "), 30_000);
    expect((await cli(home, "cancel", id!)).code).toBe(0);
    expect(await ended).toBe(4);
    expect(text).toContain(`${id} CANCELLED`);
  }, 120_000);

  it("run --follow rides out a server restart: it reconnects (starting the server again) and goes on", async () => {
    const file = spec(home, "restart", ["--steps", "60", "--ckpt-every", "0", "--step-sleep", "0.1"]);
    const run = start(home, ["run", file, "--follow"]);
    await waitFor("the job to run", async () => /step \d+\/60/.test(run.out()) || /RUNNING/.test(run.out()), 60_000);
    const info = JSON.parse(readFileSync(path.join(home, "server.json"), "utf8")) as { pid: number };
    process.kill(info.pid, "SIGKILL");
    const code = await run.done;
    expect(code, `${run.out()}\n${run.err()}`).toBe(0);
    expect(run.out()).toMatch(/lost the server .*; reconnecting, the job keeps running/);
    expect(run.out()).toMatch(/reconnected to the server at http/);
    expect(run.out()).toMatch(/restart-\S+ SUCCEEDED/);
    const after = JSON.parse(readFileSync(path.join(home, "server.json"), "utf8")) as { pid: number };
    expect(after.pid).not.toBe(info.pid);
    await sleep(10);
  }, 120_000);
});

describe.skipIf(!hasTorch)("switchyard demo", () => {
  const home = tempHome("cli-demo");
  const demoHome = path.join(home, "demo");

  afterAll(async () => {
    await cli(demoHome, "down");
  }, 30_000);

  it("stops the server it started, and its hints run as printed", async () => {
    const demo = await cli(home, "demo", "--steps", "10", "--no-faults");
    expect(demo.code, `${demo.out}\n${demo.err}`).toBe(0);
    expect(demo.out).toMatch(/SUCCEEDED at step 10/);
    expect(demo.out).toContain(`stopped the demo's server`);
    // A server that stopped removes its server.json (or leaves one naming a dead pid).
    const infoFile = path.join(demoHome, "server.json");
    if (existsSync(infoFile)) {
      const info = JSON.parse(readFileSync(infoFile, "utf8")) as { pid: number };
      expect(() => process.kill(info.pid, 0)).toThrow();
    }

    const hints = demo.out
      .split("\n")
      .map((l) => /^(?:more:)?\s+(node bin\/switchyard\.js --home \S+ .+)$/.exec(l)?.[1])
      .filter((c): c is string => c !== undefined);
    expect(hints.length).toBe(3);
    for (const hint of hints) {
      const words = hint.split(" ");
      const r = spawn(words[0]!, words.slice(1), { cwd: packageRoot, env: process.env });
      let out = "";
      r.stdout.on("data", (d: Buffer) => (out += d.toString()));
      const code = await new Promise<number | null>((resolve) => r.once("close", resolve));
      expect(code, hint).toBe(0);
      expect(out.length, hint).toBeGreaterThan(0);
    }
  }, 240_000);
});
