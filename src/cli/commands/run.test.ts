import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { parse } from "yaml";
import { main } from "../main.js";
import { runSubmission } from "./jobs.js";

/** `switchyard run` with a script (short form) or a torchrun command line: the spec it generates, and its errors. */
async function runCli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const log = vi.spyOn(console, "log").mockImplementation((s: string) => void out.push(`${s}\n`));
  const error = vi.spyOn(console, "error").mockImplementation((s: string) => void err.push(`${s}\n`));
  const stderr = vi.spyOn(process.stderr, "write").mockImplementation((s) => (err.push(String(s)), true));
  try {
    process.exitCode = undefined;
    const home = mkdtempSync(path.join(tmpdir(), "cli-run-"));
    const code = await main(["node", "switchyard", "--home", home, ...args]);
    return { code, out: out.join(""), err: err.join("") };
  } finally {
    process.exitCode = undefined;
    for (const spy of [log, error, stderr]) spy.mockRestore();
  }
}

afterEach(() => {
  process.exitCode = undefined;
});

describe("switchyard run: short form and torchrun", () => {
  it("short form: --nproc-per-node 2 train.py --epochs 3 is a 2-rank job of train.py in this folder", async () => {
    const r = await runCli(["run", "--print-spec", "--nproc-per-node", "2", "train.py", "--epochs", "3"]);
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(parse(r.out)).toEqual({
      name: "train",
      nodes: 1,
      procsPerNode: 2,
      command: ["{python}", "train.py", "--epochs", "3"],
      workdir: process.cwd(),
    });
  });

  it("short form takes --nnodes, --pool, --name, and torchrun's other options before the script", async () => {
    const r = await runCli([
      "run",
      "--print-spec",
      "--nnodes",
      "1:2",
      "--pool",
      "ascend, nvidia",
      "--name",
      "exp-7",
      "--max-restarts",
      "4",
      "train.py",
      "data/",
    ]);
    expect(r.code).toBe(0);
    expect(parse(r.out)).toMatchObject({
      name: "exp-7",
      pools: ["ascend", "nvidia"],
      nodes: 2,
      minNodes: 1,
      procsPerNode: 1,
      command: ["{python}", "train.py", "data/"],
      recovery: { maxRestarts: 4 },
    });
  });

  it("a script's option that run also takes goes after --", () => {
    const s = runSubmission("train.py", ["--name", "inner"], { nprocPerNode: "2", printSpec: true });
    expect(s.kind).toBe("print");
    const spec = parse((s as { yaml: string }).yaml) as { name: string; command: string[] };
    expect(spec).toMatchObject({ name: "train", command: ["{python}", "train.py", "--name", "inner"] });
  });

  it("an executable that is not a .py runs as it is (torchrun --no-python)", () => {
    const s = runSubmission("./train.sh", ["x"], { printSpec: true }) as { yaml: string };
    expect((parse(s.yaml) as { command: string[] }).command).toEqual(["./train.sh", "x"]);
  });

  it("-- torchrun ... and -- python -m torch.distributed.run ... are read as torchrun reads them", async () => {
    const r = await runCli([
      "run",
      "--print-spec",
      "--",
      "torchrun",
      "--standalone",
      "--nproc_per_node=2",
      "--rdzv-backend=c10d",
      "train.py",
      "--epochs",
      "3",
    ]);
    expect(r.code).toBe(0);
    expect(r.out).toContain("# ignored --rdzv-backend: switchyard does the rendezvous");
    expect(parse(r.out)).toMatchObject({ procsPerNode: 2, command: ["{python}", "train.py", "--epochs", "3"] });
    const m = runSubmission("/usr/bin/python3", ["-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "pkg"], {
      printSpec: true,
    }) as { yaml: string };
    expect(parse(m.yaml)).toMatchObject({ name: "pkg", command: ["/usr/bin/python3", "-m", "pkg"], procsPerNode: 2 });
  });

  it("under --json, --print-spec gives the spec and the ignored options", async () => {
    const r = await runCli(["--json", "run", "--print-spec", "--", "torchrun", "--master_port=1234", "t.py"]);
    expect(r.code).toBe(0);
    const o = JSON.parse(r.out) as { spec: string; ignored: string[] };
    expect(parse(o.spec)).toMatchObject({ name: "t", command: ["{python}", "t.py"] });
    expect(o.ignored).toEqual(["--master-port: switchyard picks a fresh master port per attempt"]);
  });

  it("errors name the option and the fix, exit 2, before any server is asked", async () => {
    const cases: Array<[string[], RegExp]> = [
      [
        ["run", "--", "torchrun", "--epochs", "3", "train.py"],
        /unknown torchrun option --epochs \(fix: .*after the script/,
      ],
      [["run"], /run needs a job spec, a training script or a torchrun command \(fix: e\.g\./],
      [["run", "job.yaml", "--nproc-per-node", "2"], /--nproc-per-node apply to the short form, not to a job spec/],
      [["run", "job.yaml", "--folow"], /a job spec takes no arguments, got "--folow"/],
      [["run", "--nproc-per-node", "2", "--", "torchrun", "t.py"], /given to both switchyard run and torchrun/],
      [["run", "--nproc-per-node", "two", "t.py"], /--nproc-per-node takes a whole number from 1 to 64, got "two"/],
    ];
    for (const [args, want] of cases) {
      const r = await runCli(args);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.err, args.join(" ")).toMatch(want);
      expect(r.err.startsWith("switchyard: "), args.join(" ")).toBe(true);
    }
  });
});
