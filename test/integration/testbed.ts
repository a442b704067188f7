import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { packageRoot } from "../../src/paths.js";
import { missing } from "../requirements.js";

/** The multi-host Slurm testbed (scripts/testbed.sh) for integration tests: brought up on demand, taken down after. */

export const testbedScript = path.join(packageRoot, "scripts", "testbed.sh");
export const slurmConf = "/run/switchyard-testbed/slurm.conf";
export const slurmEnv = { SLURM_CONF: slurmConf };

export const noTestbed: boolean = missing(
  "root with Debian's slurm-wlm and munge (the multi-host testbed)",
  process.getuid?.() === 0 &&
    ["/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged", "/usr/bin/srun"].every((p) => existsSync(p)),
  "run as root; apt-get install slurm-wlm munge (scripts/bootstrap.sh does it)",
);

export function testbed(...args: string[]): { status: number | null; out: string } {
  const r = spawnSync("bash", [testbedScript, ...args], {
    encoding: "utf8",
    env: { ...process.env, ...slurmEnv },
    timeout: 120_000,
  });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** Brings the testbed up; resolves to a function that takes it down again if this call brought it up. */
export function useTestbed(): () => void {
  const wasUp = existsSync(slurmConf);
  const r = testbed("up");
  if (r.status !== 0) throw new Error(`scripts/testbed.sh up failed: ${r.out}`);
  return () => {
    if (!wasUp) testbed("down");
  };
}
