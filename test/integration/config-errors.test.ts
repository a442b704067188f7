import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { packageRoot } from "../../src/paths.js";

/**
 * A bad cluster file through the built CLI (`node bin/switchyard.js`): bad input (exit 2) with the file's issues, checked
 * before any server starts, never "server unreachable" (exit 3) with the issue buried in a server log. No training.
 */

const bin = path.join(packageRoot, "bin", "switchyard.js");
const dirs: string[] = [];

function tempDir(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), "sy-cfgerr-"));
  dirs.push(dir);
  return dir;
}

function cli(home: string, ...args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [bin, "--home", home, ...args], {
    cwd: packageRoot,
    env: { ...process.env, SWITCHYARD_HOME: home },
    encoding: "utf8",
    timeout: 60_000,
  });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

const good = "pools:\n  - name: local\n    nodes: 1\n";
const typo = "pools:\n  - name: local\n    nodes: 1\n    acelerator: { vendor: cpu }\n";

afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describe("a bad cluster file through the CLI", () => {
  it("up --cluster with a typo: exit 2 with the issue, and no server, no home, nothing remembered", () => {
    const dir = tempDir();
    const file = path.join(dir, "cluster.yaml");
    writeFileSync(file, typo);
    const home = path.join(dir, "home");
    const r = cli(home, "up", "--cluster", file);
    expect(r.code, r.err).toBe(2);
    expect(r.err).toBe(
      `switchyard: ${file}:4:5: pools[0].acelerator: unknown key "acelerator" (fix: did you mean "accelerator"?)\n`,
    );
    expect(existsSync(home)).toBe(false);

    const json = cli(home, "--json", "up", "--cluster", file);
    expect(json.code).toBe(2);
    expect(JSON.parse(json.err)).toEqual({
      error: `${file}:4:5: pools[0].acelerator: unknown key "acelerator" (fix: did you mean "accelerator"?)`,
      fix: 'did you mean "accelerator"?',
      exitCode: 2,
      issues: [
        {
          file,
          path: "pools[0].acelerator",
          line: 4,
          column: 5,
          message: 'unknown key "acelerator"',
          fix: 'did you mean "accelerator"?',
        },
      ],
    });
    expect(existsSync(home)).toBe(false);

    const tls = cli(home, "up", "--tls-cert", path.join(dir, "none.pem"), "--tls-key", path.join(dir, "none.key"));
    expect(tls.code).toBe(2);
    expect(tls.err).toBe(
      `switchyard: --tls-cert ${dir}/none.pem does not exist (fix: pass a readable PEM file to --tls-cert)\n`,
    );
    expect(existsSync(home)).toBe(false);

    const missing = cli(home, "up", "--cluster", path.join(dir, "none.yaml"));
    expect(missing.code).toBe(2);
    expect(missing.err).toBe(
      `switchyard: ${dir}/none.yaml: cluster config does not exist (fix: pass an existing file to --cluster)\n`,
    );
  });

  it("the foreground server refuses it with the same message and exit 2", () => {
    const dir = tempDir();
    const file = path.join(dir, "cluster.yaml");
    writeFileSync(file, typo);
    const r = cli(path.join(dir, "home"), "server", "--cluster", file);
    expect(r.code).toBe(2);
    expect(r.err).toContain(
      `switchyard: ${file}:4:5: pools[0].acelerator: unknown key "acelerator" (fix: did you mean "accelerator"?)`,
    );
    expect(r.err).not.toContain("unexpected error");
  });

  it("a running server stays up when `up --cluster` names a bad file; a remembered file gone bad is exit 2 too", () => {
    const dir = tempDir();
    const home = path.join(dir, "home");
    const goodFile = path.join(dir, "good.yaml");
    const badFile = path.join(dir, "bad.yaml");
    writeFileSync(goodFile, good);
    writeFileSync(badFile, typo);
    const up = cli(home, "--json", "up", "--cluster", goodFile);
    expect(up.code, up.err).toBe(0);
    const pid = (JSON.parse(up.out) as { pid: number }).pid;
    try {
      const refused = cli(home, "up", "--cluster", badFile);
      expect(refused.code).toBe(2);
      expect(refused.err).toContain(`${badFile}:4:5: pools[0].acelerator`);
      // Still the same server, still on the good file.
      const again = cli(home, "--json", "up");
      expect(again.code, again.err).toBe(0);
      expect(JSON.parse(again.out)).toMatchObject({ pid, clusterFile: goodFile });
      expect(JSON.parse(readFileSync(path.join(home, "config.json"), "utf8"))).toEqual({ clusterFile: goodFile });

      // A services file with the report's typos, through the server (deploy posts it): exit 2, issues positioned.
      const services = path.join(dir, "services.yaml");
      writeFileSync(services, "services: [{ name: x, replcas: 2 }]\n");
      const deploy = cli(home, "--json", "deploy", services);
      expect(deploy.code).toBe(2);
      expect((JSON.parse(deploy.err) as { issues: unknown[] }).issues).toEqual([
        expect.objectContaining({ path: "services[0].model", line: 1, column: 12 }),
        expect.objectContaining({ path: "services[0].pools", line: 1, column: 12 }),
        expect.objectContaining({ path: "services[0].name", line: 1, column: 14 }),
        expect.objectContaining({
          path: "services[0].replcas",
          line: 1,
          column: 23,
          fix: 'did you mean "replicas"? it belongs at services[0].pools[].replicas',
        }),
      ]);

      // The remembered file turns bad while the server is down: the next command that would start one says so.
      expect(cli(home, "down").code).toBe(0);
      writeFileSync(goodFile, typo);
      const ps = cli(home, "ps");
      expect(ps.code).toBe(2);
      expect(ps.err).toBe(
        `switchyard: ${goodFile}:4:5: pools[0].acelerator: unknown key "acelerator" (fix: did you mean "accelerator"?)\n`,
      );
      expect(existsSync(path.join(home, "server.json"))).toBe(false);
    } finally {
      cli(home, "down");
    }
  }, 90_000);
});
