/**
 * `switchyard serve examples/gateway/serve-chargpt.yaml` serves what `switchyard run examples/chargpt/job.yaml`
 * trained: the replicas' --checkpoint is the folder the job's per-run checkpoint folders go in, and serve.py picks
 * the newest checkpoint that verifies there, one level down (the run folders), skipping a corrupt newer one.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { compileJobSpec, parseClusterSpec } from "../core/spec.js";
import { packageRoot, pythonSdkDir } from "../paths.js";
import { loadServicesFile } from "./config.js";
import { deployArgv, replicaLaunchArgv } from "../supervisor/services.js";

const examples = path.join(packageRoot, "examples");

describe("the serve example serves what the run example trained", () => {
  const home = mkdtempSync(path.join(tmpdir(), "sy-serve-example-"));
  afterAll(() => rmSync(home, { recursive: true, force: true }));

  it("the replicas' --checkpoint is the job's checkpoint folder (each run writes one level below it)", () => {
    const jobFile = path.join(examples, "chargpt", "job.yaml");
    const cluster = parseClusterSpec(
      readFileSync(path.join(examples, "chargpt", "cluster.yaml"), "utf8"),
      "cluster.yaml",
    );
    const job = compileJobSpec(readFileSync(jobFile, "utf8"), {
      file: jobFile,
      cluster,
      defaultCheckpointRoot: path.join(home, "checkpoints"),
    });
    expect(job.checkpoint.perRun).toBe(true);
    const services = loadServicesFile(path.join(examples, "gateway", "serve-chargpt.yaml"));
    const pools = services.services[0]!.pools;
    expect(pools).toHaveLength(2);
    for (const pool of pools) {
      // As the server deploys and launches it ({home} is the server's state folder).
      const argv = replicaLaunchArgv(deployArgv(pool.replicas!.command, home), 8101, null, "127.0.0.1");
      const at = argv.indexOf("--checkpoint");
      expect(at).toBeGreaterThan(0);
      expect(argv[at + 1]).toBe(job.checkpoint.dir);
    }
  });

  it("serve.py takes the newest verified checkpoint among the run folders, skipping a corrupt newer one", () => {
    const root = path.join(home, "checkpoints", "chargpt");
    // Two runs as `switchyard run` lays them out (with the `latest` link), written with the real SDK; the newest
    // checkpoint of the second run is then corrupted.
    const script = `
import os, sys, time
sys.path[:0] = [${JSON.stringify(pythonSdkDir)}, ${JSON.stringify(path.join(examples, "chargpt"))}]
import switchyard, serve
root = ${JSON.stringify(root)}
def write(run, step):
    with switchyard.checkpoint(step, root=os.path.join(root, run)) as d:
        open(os.path.join(d, "state.pt"), "wb").write(b"weights of %s at %d" % (run.encode(), step))
    time.sleep(0.02)
write("chargpt-aaaaaa", 200)
write("chargpt-bbbbbb", 20)
write("chargpt-bbbbbb", 40)
os.symlink("chargpt-bbbbbb", os.path.join(root, "latest"))
with open(os.path.join(root, "chargpt-bbbbbb", "step-00000040", "state.pt"), "r+b") as f:
    f.write(b"X")  # one byte rots: same size, another hash
found, notes = serve.find_checkpoint(root, switchyard.verify_checkpoint)
print(os.path.relpath(found, root))
for n in notes: print("note:", n)
missing, notes = serve.find_checkpoint(os.path.join(root, "nope"), switchyard.verify_checkpoint)
print(missing, notes)
`;
    const out = execFileSync("python3", ["-c", script], { encoding: "utf8" }).trim().split("\n");
    expect(out[0]).toBe(path.join("chargpt-bbbbbb", "step-00000020"));
    expect(out.filter((l) => l.startsWith("note:"))).toHaveLength(1);
    expect(out[1]).toMatch(/chargpt-bbbbbb\/step-00000040 does not verify .*sha256 mismatch.*trying an older one/);
    expect(out.at(-1)).toContain("train first: switchyard run examples/chargpt/job.yaml");
  });
});
