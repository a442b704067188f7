import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { missing } from "../../test/requirements.js";
import { CliError, ExitCode } from "./client.js";
import { jobNameFor, jobSpecYaml, parseTorchrunArgs, torchrunInvocation, torchrunOptions } from "./torchrun.js";

const py = "/usr/bin/python3";
const noTorch = missing(
  "Debian's torch (torch.distributed.run)",
  existsSync(py) && spawnSync(py, ["-c", "import torch.distributed.run"]).status === 0,
  "install python3-torch",
);

function usageError(fn: () => unknown): CliError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).exitCode).toBe(ExitCode.Usage);
    return err as CliError;
  }
  throw new Error("expected a usage error");
}

describe("torchrun command lines", () => {
  it("reads the common forms: --opt=value, --opt value, dashes and underscores, script args kept whole", () => {
    const a = parseTorchrunArgs(["--nproc_per_node=2", "train.py", "--epochs", "3"], "{python}");
    expect(a).toMatchObject({ nodes: 1, minNodes: null, procsPerNode: 2, maxRestarts: null, script: "train.py" });
    expect(a.command).toEqual(["{python}", "train.py", "--epochs", "3"]);
    const b = parseTorchrunArgs(
      ["--nproc-per-node", "4", "--nnodes", "2", "--max-restarts=3", "train.py", "--nnodes", "9", "-m", "x"],
      "{python}",
    );
    expect(b).toMatchObject({ nodes: 2, procsPerNode: 4, maxRestarts: 3 });
    // Everything after the script is the script's, even options torchrun knows.
    expect(b.command).toEqual(["{python}", "train.py", "--nnodes", "9", "-m", "x"]);
  });

  it("elastic --nnodes MIN:MAX, --standalone, -m module, --no-python, --rdzv-id and --role", () => {
    expect(parseTorchrunArgs(["--nnodes=1:4", "t.py"], "p")).toMatchObject({ nodes: 4, minNodes: 1 });
    expect(parseTorchrunArgs(["--nnodes=3:3", "t.py"], "p")).toMatchObject({ nodes: 3, minNodes: null });
    expect(parseTorchrunArgs(["--standalone", "--nproc_per_node", "2", "t.py"], "p")).toMatchObject({
      nodes: 1,
      procsPerNode: 2,
    });
    expect(parseTorchrunArgs(["-m", "pkg.train", "--lr", "1"], "/usr/bin/python3").command).toEqual([
      "/usr/bin/python3",
      "-m",
      "pkg.train",
      "--lr",
      "1",
    ]);
    expect(parseTorchrunArgs(["--no-python", "./run.sh", "a"], "p").command).toEqual(["./run.sh", "a"]);
    expect(parseTorchrunArgs(["--no_python", "--", "./run.sh"], "p").command).toEqual(["./run.sh"]);
    const plan = parseTorchrunArgs(["--rdzv_id=exp7", "--role", "trainer", "t.py"], "p");
    expect(plan.env).toEqual({ TORCHELASTIC_RUN_ID: "exp7", ROLE_NAME: "trainer" });
  });

  it("accepts the options switchyard does itself, and says why each is ignored", () => {
    const plan = parseTorchrunArgs(
      [
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=host:29400",
        "--rdzv_conf",
        "timeout=900",
        "--master_addr",
        "10.0.0.1",
        "--master-port=29500",
        "--node_rank=0",
        "--monitor-interval",
        "5",
        "--start_method=spawn",
        "--log_dir",
        "/tmp/l",
        "-r",
        "3",
        "-t3",
        "t.py",
      ],
      "p",
    );
    expect(plan.ignored.map((n) => n.split(":")[0])).toEqual([
      "--rdzv-backend",
      "--rdzv-endpoint",
      "--rdzv-conf",
      "--monitor-interval",
      "--start-method",
      "--log-dir",
      "--redirects",
      "--tee",
      "--node-rank",
      "--master-addr",
      "--master-port",
    ]);
    expect(plan.ignored[0]).toContain("switchyard does the rendezvous");
    expect(plan.command).toEqual(["p", "t.py"]);
  });

  it("takes a unique prefix of a long option, as argparse does", () => {
    expect(parseTorchrunArgs(["--nproc=2", "t.py"], "p").procsPerNode).toBe(2);
    expect(usageError(() => parseTorchrunArgs(["--rdzv=x", "t.py"], "p")).message).toMatch(/ambiguous/);
  });

  it("rejects unknown options and bad values with an error naming the option and the fix", () => {
    const unknown = usageError(() => parseTorchrunArgs(["--nproc_per_node=2", "--epochs", "3", "t.py"], "p"));
    expect(unknown.message).toBe("unknown torchrun option --epochs");
    expect(unknown.fix).toContain("the training script's own options go after the script");
    expect(usageError(() => parseTorchrunArgs(["-x", "t.py"], "p")).message).toBe("unknown torchrun option -x");
    expect(usageError(() => parseTorchrunArgs(["--nproc_per_node=gpu", "t.py"], "p")).fix).toMatch(/give a number/);
    expect(usageError(() => parseTorchrunArgs(["--nproc_per_node=0", "t.py"], "p")).message).toContain("1 to 64");
    expect(usageError(() => parseTorchrunArgs(["--nnodes=4:2", "t.py"], "p")).message).toContain("MIN is above MAX");
    expect(usageError(() => parseTorchrunArgs(["--nnodes=x", "t.py"], "p")).message).toContain("N or MIN:MAX");
    expect(usageError(() => parseTorchrunArgs(["--standalone", "--nnodes=2", "t.py"], "p")).message).toContain(
      "--standalone",
    );
    expect(usageError(() => parseTorchrunArgs(["-m", "--no-python", "t.py"], "p")).message).toContain(
      "cannot be used together",
    );
    expect(usageError(() => parseTorchrunArgs(["--max_restarts"], "p")).message).toContain("needs a value");
    expect(usageError(() => parseTorchrunArgs(["--standalone=1", "t.py"], "p")).message).toContain("takes no value");
    expect(usageError(() => parseTorchrunArgs(["--nproc_per_node=2"], "p")).message).toContain("no training script");
    expect(usageError(() => parseTorchrunArgs(["--start_method=thread", "t.py"], "p")).message).toContain("spawn");
  });

  it("finds torchrun in argv: torchrun, a path to it, python -m torch.distributed.run", () => {
    expect(torchrunInvocation(["torchrun", "t.py"])).toEqual({ args: ["t.py"], python: "{python}" });
    expect(torchrunInvocation(["/usr/bin/torchrun", "--standalone", "t.py"])?.args).toEqual(["--standalone", "t.py"]);
    expect(torchrunInvocation(["python3", "-m", "torch.distributed.run", "t.py"])).toEqual({
      args: ["t.py"],
      python: "python3",
    });
    expect(torchrunInvocation(["/usr/bin/python3.11", "-m", "torch.distributed.run", "t.py"])?.python).toBe(
      "/usr/bin/python3.11",
    );
    expect(torchrunInvocation(["python3", "t.py"])).toBeNull();
    expect(torchrunInvocation(["train.py"])).toBeNull();
    expect(usageError(() => torchrunInvocation(["python", "-m", "torch.distributed.launch", "t.py"])).fix).toContain(
      "LOCAL_RANK",
    );
  });

  it("names the job after the script and writes the spec it stands for", () => {
    expect(jobNameFor("examples/Train_GPT.py")).toBe("train_gpt");
    expect(jobNameFor("my pkg!.main")).toBe("my-pkg-.main");
    expect(jobNameFor("__main__.py")).toBe("main");
    const plan = parseTorchrunArgs(
      ["--nnodes=1:2", "--nproc_per_node=2", "--max_restarts=5", "--rdzv_id=r1", "t.py"],
      "{python}",
    );
    const text = jobSpecYaml(plan, { name: "t", pools: ["gpu"], workdir: "/w" });
    expect(parse(text)).toEqual({
      name: "t",
      pools: ["gpu"],
      nodes: 2,
      minNodes: 1,
      procsPerNode: 2,
      command: ["{python}", "t.py"],
      workdir: "/w",
      env: { TORCHELASTIC_RUN_ID: "r1" },
      recovery: { maxRestarts: 5 },
    });
  });

  it.skipIf(noTorch)(
    "knows every option of the torchrun installed here (Debian's), and reads them as its argparse does",
    () => {
      const dump = spawnSync(
        py,
        [
          "-c",
          [
            "import json, sys",
            "from torch.distributed.run import get_args_parser",
            "p = get_args_parser()",
            "opts = [s for a in p._actions for s in a.option_strings]",
            "a = p.parse_args(sys.argv[1:])",
            "print(json.dumps({'opts': opts, 'nnodes': a.nnodes, 'nproc': a.nproc_per_node, 'module': a.module,",
            "  'script': a.training_script, 'args': a.training_script_args, 'max_restarts': a.max_restarts}))",
          ].join("\n"),
          "--nnodes=1:2",
          "--nproc_per_node",
          "3",
          "--max_restarts=2",
          "-m",
          "pkg.train",
          "--epochs",
          "3",
        ],
        { encoding: "utf8" },
      );
      expect(dump.status, dump.stderr).toBe(0);
      const theirs = JSON.parse(dump.stdout) as {
        opts: string[];
        nnodes: string;
        nproc: string;
        module: boolean;
        script: string;
        args: string[];
        max_restarts: number;
      };
      const known = new Set(
        torchrunOptions.flatMap((o) => [`--${o.name}`, `--${o.name.replace(/-/g, "_")}`, `-${o.short}`]),
      );
      expect(theirs.opts.filter((o) => !known.has(o))).toEqual([]);
      const ours = parseTorchrunArgs(
        ["--nnodes=1:2", "--nproc_per_node", "3", "--max_restarts=2", "-m", "pkg.train", "--epochs", "3"],
        "python",
      );
      expect({ nodes: ours.nodes, minNodes: ours.minNodes, procsPerNode: ours.procsPerNode }).toEqual({
        nodes: Number(theirs.nnodes.split(":")[1]),
        minNodes: Number(theirs.nnodes.split(":")[0]),
        procsPerNode: Number(theirs.nproc),
      });
      expect(ours.maxRestarts).toBe(theirs.max_restarts);
      expect(ours.command).toEqual(["python", ...(theirs.module ? ["-m"] : []), theirs.script, ...theirs.args]);
    },
  );
});
