import path from "node:path";
import { stringify } from "yaml";
import { CliError, ExitCode } from "./client.js";

/**
 * torchrun's command line, understood: `switchyard run -- torchrun --nproc_per_node=2 train.py --epochs 3` (or
 * `python -m torch.distributed.run ...`) becomes a job that switchyard's own launcher runs, with the environment
 * torchrun gives its workers (docs/torchrun.md).
 *
 * torchrun parses its options with argparse: options first, then the training script, and everything after the script
 * belongs to the script; `--opt value` and `--opt=value`; every long option both with dashes and with underscores
 * (`--nproc-per-node`, `--nproc_per_node`); a unique prefix of a long option stands for it (argparse's allow_abbrev).
 * No npm argument parser stops at the first positional the way argparse's REMAINDER does (util.parseArgs, minimist and
 * yargs-parser all read options after it), hence this small parser.
 */

/** What a torchrun command line asks for, in switchyard's terms. */
export interface TorchrunPlan {
  nodes: number;
  /** `--nnodes MIN:MAX`: the job may shrink to MIN nodes (an elastic job); null when fixed. */
  minNodes: number | null;
  procsPerNode: number;
  /** The rank command: [python, script, ...args], [python, -m, module, ...args] or [script, ...args] (--no-python). */
  command: string[];
  /** `--max-restarts`, when given (switchyard's default applies otherwise). */
  maxRestarts: number | null;
  /** Environment torchrun would set from its options (ROLE_NAME, TORCHELASTIC_RUN_ID from --rdzv-id). */
  env: Record<string, string>;
  /** The script (or module) it runs: the job's default name comes from it. */
  script: string;
  /** Options that switchyard's launcher does itself or has no use for, each with why. */
  ignored: string[];
}

interface OptionDef {
  /** The long name with dashes. */
  name: string;
  short?: string;
  takesValue: boolean;
  /** Set when the option is accepted but switchyard does this itself: why it is ignored. */
  ignored?: string;
}

/** torchrun's documented options (PyTorch 1.13 to 2.x: `torchrun --help`). */
export const torchrunOptions: readonly OptionDef[] = [
  { name: "nnodes", takesValue: true },
  { name: "nproc-per-node", takesValue: true },
  {
    name: "rdzv-backend",
    takesValue: true,
    ignored: "switchyard does the rendezvous (a fresh master port per attempt)",
  },
  {
    name: "rdzv-endpoint",
    takesValue: true,
    ignored: "switchyard does the rendezvous (a fresh master port per attempt)",
  },
  { name: "rdzv-id", takesValue: true },
  { name: "rdzv-conf", takesValue: true, ignored: "switchyard does the rendezvous (a fresh master port per attempt)" },
  { name: "standalone", takesValue: false },
  { name: "max-restarts", takesValue: true },
  { name: "monitor-interval", takesValue: true, ignored: "switchyard watches the ranks itself" },
  { name: "start-method", takesValue: true, ignored: "switchyard starts every rank as a process of its own" },
  { name: "role", takesValue: true },
  { name: "module", short: "m", takesValue: false },
  { name: "no-python", takesValue: false },
  { name: "run-path", takesValue: false },
  { name: "log-dir", takesValue: true, ignored: "switchyard keeps each rank's log (switchyard logs JOB --rank N)" },
  {
    name: "redirects",
    short: "r",
    takesValue: true,
    ignored: "switchyard keeps each rank's stdout and stderr in its log",
  },
  { name: "tee", short: "t", takesValue: true, ignored: "switchyard keeps each rank's stdout and stderr in its log" },
  {
    name: "local-ranks-filter",
    takesValue: true,
    ignored: "switchyard keeps every rank's log (switchyard logs JOB --rank N)",
  },
  {
    name: "node-rank",
    takesValue: true,
    ignored: "switchyard launches every node from one command and numbers them itself",
  },
  { name: "master-addr", takesValue: true, ignored: "switchyard picks the master (the first node of each attempt)" },
  { name: "master-port", takesValue: true, ignored: "switchyard picks a fresh master port per attempt" },
  { name: "local-addr", takesValue: true, ignored: "switchyard picks the master (the first node of each attempt)" },
  { name: "logs-specs", takesValue: true, ignored: "switchyard keeps each rank's log" },
  { name: "use-env", takesValue: false, ignored: "ranks always get their rank in the environment (LOCAL_RANK)" },
  { name: "help", short: "h", takesValue: false },
];

const usage = (what: string) => new CliError(what, ExitCode.Usage, "see docs/torchrun.md, or `torchrun --help`");

/** `--nproc_per_node` -> the option it names: exact (dashes or underscores), else a unique prefix, else an error. */
function findLong(raw: string): OptionDef {
  const wanted = raw.replace(/_/g, "-");
  const exact = torchrunOptions.find((o) => o.name === wanted);
  if (exact) return exact;
  const prefixed = torchrunOptions.filter((o) => o.name.startsWith(wanted));
  if (prefixed.length === 1) return prefixed[0]!;
  if (prefixed.length > 1) {
    throw usage(
      `torchrun option --${raw} is ambiguous (could be ${prefixed.map((o) => `--${o.name}`).join(", ")}): write it in full`,
    );
  }
  throw new CliError(
    `unknown torchrun option --${raw}`,
    ExitCode.Usage,
    `remove it, or check the spelling; torchrun's options are ${torchrunOptions.map((o) => `--${o.name}`).join(", ")} ` +
      "(docs/torchrun.md); the training script's own options go after the script",
  );
}

function wholeNumber(option: string, value: string, min: number, max: number, example: string): number {
  if (!/^\d{1,9}$/.test(value) || Number(value) < min || Number(value) > max) {
    throw usage(`torchrun ${option} takes a whole number from ${min} to ${max}, got "${value}" (e.g. ${example})`);
  }
  return Number(value);
}

/**
 * Parses the arguments after `torchrun` (or `python -m torch.distributed.run`). `python` is the interpreter ranks run
 * the script with (torchrun uses its own, sys.executable).
 */
export function parseTorchrunArgs(args: readonly string[], python: string): TorchrunPlan {
  const values = new Map<string, string>();
  const flags = new Set<string>();
  let i = 0;
  for (; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--") {
      i++;
      break;
    }
    if (!arg.startsWith("-") || arg === "-") break;
    let def: OptionDef;
    let inline: string | undefined;
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      def = findLong(eq >= 0 ? arg.slice(2, eq) : arg.slice(2));
      if (eq >= 0) inline = arg.slice(eq + 1);
    } else {
      const found = torchrunOptions.find((o) => o.short === arg[1]);
      if (!found) {
        throw new CliError(
          `unknown torchrun option ${arg}`,
          ExitCode.Usage,
          "torchrun's short options are -m (module), -r (redirects), -t (tee) and -h; the training script's own " +
            "options go after the script",
        );
      }
      def = found;
      if (arg.length > 2) inline = arg.slice(2).replace(/^=/, "");
    }
    if (!def.takesValue) {
      if (inline !== undefined) throw usage(`torchrun option --${def.name} takes no value, got "${inline}"`);
      flags.add(def.name);
      continue;
    }
    const value = inline ?? args[++i];
    if (value === undefined) throw usage(`torchrun option --${def.name} needs a value`);
    values.set(def.name, value);
  }
  if (flags.has("help")) throw usage("torchrun --help is not run by switchyard");
  const script = args[i];
  if (script === undefined) {
    throw new CliError(
      "torchrun: no training script given",
      ExitCode.Usage,
      "name the script after torchrun's options, e.g. torchrun --nproc_per_node=2 train.py --epochs 3",
    );
  }
  const scriptArgs = args.slice(i + 1);

  let nodes = 1;
  let minNodes: number | null = null;
  const nnodes = values.get("nnodes");
  if (nnodes !== undefined) {
    const m = /^(\d{1,9})(?::(\d{1,9}))?$/.exec(nnodes);
    if (!m) throw usage(`torchrun --nnodes takes N or MIN:MAX, got "${nnodes}" (e.g. --nnodes 2 or --nnodes 1:4)`);
    const low = wholeNumber("--nnodes", m[1]!, 1, 4096, "--nnodes 2");
    const high = m[2] !== undefined ? wholeNumber("--nnodes", m[2], 1, 4096, "--nnodes 1:4") : low;
    if (low > high) throw usage(`torchrun --nnodes ${nnodes}: MIN is above MAX (e.g. --nnodes 1:4)`);
    nodes = high;
    minNodes = low < high ? low : null;
  }
  if (flags.has("standalone") && nodes !== 1) {
    throw usage(`torchrun --standalone runs one node, but --nnodes says ${nnodes} (remove one of them)`);
  }
  const nproc = values.get("nproc-per-node") ?? "1";
  if (["gpu", "cpu", "auto"].includes(nproc)) {
    throw new CliError(
      `torchrun --nproc-per-node ${nproc} is not supported: switchyard needs the number of ranks per node`,
      ExitCode.Usage,
      "give a number, e.g. --nproc-per-node 8 (one rank per device of the pool's nodes)",
    );
  }
  const procsPerNode = wholeNumber("--nproc-per-node", nproc, 1, 64, "--nproc-per-node 2");
  const maxRestartsText = values.get("max-restarts");
  const maxRestarts =
    maxRestartsText === undefined
      ? null
      : wholeNumber("--max-restarts", maxRestartsText, 0, 100_000, "--max-restarts 3");
  const start = values.get("start-method");
  if (start !== undefined && !["spawn", "fork", "forkserver"].includes(start)) {
    throw usage(`torchrun --start-method takes spawn, fork or forkserver, got "${start}"`);
  }
  for (const n of ["monitor-interval"]) {
    const v = values.get(n);
    if (v !== undefined && !/^\d+(\.\d+)?$/.test(v)) throw usage(`torchrun --${n} takes seconds, got "${v}"`);
  }
  if (flags.has("module") && flags.has("no-python")) {
    throw usage("torchrun --module and --no-python cannot be used together (a module needs Python)");
  }

  const env: Record<string, string> = {};
  const role = values.get("role");
  if (role !== undefined) env.ROLE_NAME = role;
  const rdzvId = values.get("rdzv-id");
  if (rdzvId !== undefined) env.TORCHELASTIC_RUN_ID = rdzvId;
  for (const [k, v] of Object.entries(env)) {
    if (v === "" || v.includes("\0") || v.length > 256) throw usage(`torchrun option for ${k} has a bad value "${v}"`);
  }

  const command = flags.has("no-python")
    ? [script, ...scriptArgs]
    : flags.has("module")
      ? [python, "-m", script, ...scriptArgs]
      : [python, script, ...scriptArgs];

  const ignored: string[] = [];
  for (const def of torchrunOptions) {
    if (def.ignored && (values.has(def.name) || flags.has(def.name))) ignored.push(`--${def.name}: ${def.ignored}`);
  }
  return { nodes, minNodes, procsPerNode, command, maxRestarts, env, script, ignored };
}

const pythonName = /^python(\d+(\.\d+)?)?$/;

/**
 * A torchrun command line in argv (`torchrun ...`, `python -m torch.distributed.run ...`): its arguments after the
 * launcher, and the Python the ranks use (`{python}`, a Python that can import torch, for torchrun itself; the one
 * named for `python -m`). Null when argv is not a torchrun command.
 */
export function torchrunInvocation(argv: readonly string[]): { args: string[]; python: string } | null {
  const first = argv[0];
  if (first === undefined) return null;
  if (path.basename(first) === "torchrun") return { args: argv.slice(1), python: "{python}" };
  if (pythonName.test(path.basename(first)) && argv[1] === "-m") {
    if (argv[2] === "torch.distributed.run") return { args: argv.slice(3), python: first };
    if (argv[2] === "torch.distributed.launch") {
      throw new CliError(
        "python -m torch.distributed.launch (deprecated by PyTorch) is not supported",
        ExitCode.Usage,
        "use torchrun or python -m torch.distributed.run with the same options; the script reads LOCAL_RANK from " +
          "the environment instead of --local_rank",
      );
    }
  }
  return null;
}

/** A job name from the script: `train.py` -> `train`, `my_pkg.main` -> `my_pkg.main`, lowercased and cleaned. */
export function jobNameFor(script: string): string {
  const base = path.basename(script).replace(/\.py$/, "").toLowerCase();
  const cleaned = base
    .replace(/[^a-z0-9._-]+/g, "-")
    .replace(/^[^a-z0-9]+/, "")
    .slice(0, 63)
    .replace(/[-._]+$/, "");
  return cleaned || "job";
}

export interface GeneratedSpecOptions {
  name: string;
  pools: string[];
  workdir: string;
}

/** The job spec (YAML) a torchrun plan stands for: what `switchyard run --print-spec` shows. */
export function jobSpecYaml(plan: TorchrunPlan, o: GeneratedSpecOptions): string {
  const spec: Record<string, unknown> = {
    name: o.name,
    ...(o.pools.length > 0 ? { pools: o.pools } : {}),
    nodes: plan.nodes,
    ...(plan.minNodes !== null ? { minNodes: plan.minNodes } : {}),
    procsPerNode: plan.procsPerNode,
    command: plan.command,
    workdir: o.workdir,
    ...(Object.keys(plan.env).length > 0 ? { env: plan.env } : {}),
    ...(plan.maxRestarts !== null ? { recovery: { maxRestarts: plan.maxRestarts } } : {}),
  };
  const header = [
    `# generated by switchyard run from: ${plan.command.join(" ")}`,
    ...plan.ignored.map((n) => `# ignored ${n}`),
  ];
  return `${header.join("\n")}\n${stringify(spec)}`;
}
