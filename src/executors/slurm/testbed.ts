import { execFile } from "node:child_process";
import path from "node:path";
import { packageRoot } from "../../paths.js";

/**
 * The Slurm testbed's link shaping (scripts/testbed.sh degrade / heal), for chaos on the testbed: one host's link
 * collapses to `rate` (a token bucket on both ends; `burst` lets short transfers through at full speed, so the link
 * collapses only under sustained load). Called with an argument vector, never a shell string; names and rates are
 * checked here first so a bad one is a clear error, not a shell script's.
 */

export const testbedScript = path.join(packageRoot, "scripts", "testbed.sh");

export interface TestbedOptions {
  /** Another testbed script (tests). */
  script?: string;
  env?: Record<string, string>;
  timeoutMs?: number;
}

export class TestbedError extends Error {
  constructor(
    message: string,
    readonly fix: string,
  ) {
    super(message);
    this.name = "TestbedError";
  }
}

const nodePattern = /^[a-z][a-z0-9-]{0,31}$/;
const ratePattern = /^[0-9]{1,9}(bit|kbit|mbit|gbit)$/;
const burstPattern = /^[0-9]{1,9}(b|kb|mb)$/;

function checkNode(node: string): void {
  if (!nodePattern.test(node)) {
    throw new TestbedError(`${JSON.stringify(node)} is not a testbed host name`, "one of a1..a4, n1, n2");
  }
}

/** Shapes `node`'s link to `rate` both ways (e.g. "100mbit"); `burst` (e.g. "40mb") makes it collapse only under load. */
export async function degradeLink(
  node: string,
  rate: string,
  opts: TestbedOptions & { burst?: string } = {},
): Promise<string> {
  checkNode(node);
  if (!ratePattern.test(rate)) throw new TestbedError(`bad rate ${JSON.stringify(rate)}`, "a rate like 100mbit");
  if (opts.burst !== undefined && !burstPattern.test(opts.burst)) {
    throw new TestbedError(`bad burst ${JSON.stringify(opts.burst)}`, "a size like 64kb or 40mb");
  }
  return run(["degrade", node, "--rate", rate, ...(opts.burst ? ["--burst", opts.burst] : [])], opts);
}

/** Removes the shaping of `node`'s link. */
export async function healLink(node: string, opts: TestbedOptions = {}): Promise<string> {
  checkNode(node);
  return run(["heal", node], opts);
}

function run(args: string[], opts: TestbedOptions): Promise<string> {
  const script = opts.script ?? testbedScript;
  return new Promise((resolve, reject) => {
    execFile(
      "bash",
      [script, ...args],
      { env: { ...process.env, ...opts.env }, timeout: opts.timeoutMs ?? 30_000, maxBuffer: 1 << 20 },
      (err, stdout, stderr) => {
        if (err) {
          const said = `${String(stderr)}${String(stdout)}`.trim().split("\n").slice(-3).join(" / ");
          reject(
            new TestbedError(
              `testbed.sh ${args.join(" ")} failed: ${said || err.message}`,
              "run as root with the testbed up (bash scripts/testbed.sh up)",
            ),
          );
        } else resolve(String(stdout).trim());
      },
    );
  });
}
