import { spawnSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { installFakeHost, scenarioReport, type FakeScenario } from "../../test/fixtures/devices/fake-hosts.js";
import { packageRoot } from "../paths.js";
import { nvidiaSmiArgs } from "./devices/nvidia-smi.js";
import { gradeProbe, gradeProbeRun, headline, parseProbeReport, ProbeOutputError, probeReportBegin } from "./health.js";

const queries = {
  health: nvidiaSmiArgs("health"),
  "remapped-rows": nvidiaSmiArgs("remapped-rows"),
  inventory: nvidiaSmiArgs("inventory"),
};
const probe = path.join(packageRoot, "agent", "health_probe.py");
const grade = (s: FakeScenario) => gradeProbe(scenarioReport(s, "h1", queries));

describe("health grading of device probes", () => {
  it("healthy NVIDIA and Ascend hosts are ok; an application Xid is ignored", () => {
    for (const s of ["nvidia-healthy", "ascend-healthy"] as const) {
      const v = grade(s);
      expect(v.status, JSON.stringify(v.findings)).toBe("ok");
      expect(v.findings.every((f) => f.grade === "info")).toBe(true);
    }
    expect(grade("nvidia-healthy").findings[0]!.message).toBe("2 GPU(s) healthy (1 application Xid line(s) ignored)");
    expect(grade("ascend-healthy").findings.map((f) => f.message)).toEqual([
      "2 NPU chip(s) healthy",
      "2 NPU port link(s) UP",
    ]);
  });

  it("an uncorrectable ECC error is fatal (device), the pending page retirement beside it degraded", () => {
    const v = grade("nvidia-ecc");
    expect(v.status).toBe("fatal");
    expect(headline(v.findings)).toEqual({
      grade: "fatal",
      cause: "device",
      source: "nvidia-smi",
      message: "GPU 1 (GPU-9a1d7e22-31c4-4b8e-a6d2-5b7f0c9e1a23): 2 uncorrected ECC error(s) since boot",
    });
    expect(v.findings.find((f) => f.grade === "degraded")?.message).toMatch(/page retirement pending/);
  });

  it("Xid 79 and Xid 48 in the kernel log are fatal on the GPU whose PCI address they name", () => {
    const x79 = headline(grade("nvidia-xid79").findings)!;
    expect(x79).toMatchObject({ grade: "fatal", cause: "device", source: "kernel-log" });
    expect(x79.message).toBe("GPU 1 (GPU-9a1d7e22-31c4-4b8e-a6d2-5b7f0c9e1a23): Xid 79: GPU fallen off the bus");
    const x48 = headline(grade("nvidia-xid48").findings)!;
    expect(x48.message).toBe("GPU 0 (GPU-4f0c2a1e-8b3d-4c2a-9e1f-0a1b2c3d4e5f): Xid 48: double-bit ECC error");
    expect(x48.grade).toBe("fatal");
  });

  it("an NPU in Alarm is fatal with its error information; a port link down is fatal (network)", () => {
    const alarm = grade("ascend-alarm");
    expect(alarm.status).toBe("fatal");
    expect(headline(alarm.findings)!.message).toBe("NPU 1 (0000:01:00.0): health Alarm");
    expect(alarm.findings.map((f) => f.message)).toContain(
      "NPU 1 (0000:01:00.0): node type:CPU, sensor type:Heartbeat, event state:heart beat lost",
    );
    const link = grade("ascend-link-down");
    expect(link.status).toBe("fatal");
    expect(headline(link.findings)).toEqual({
      grade: "fatal",
      cause: "network",
      source: "hccn_tool",
      message: "NPU 1 port: link DOWN",
    });
  });

  it("free disk and memory below the thresholds are degraded (host), above them info", () => {
    const host = {
      disk: [{ path: "/ckpt", role: "checkpoint", free: 512 * 1024 ** 2, total: 100 * 1024 ** 3 }],
      memory: { available: 8 * 1024 ** 3, total: 16 * 1024 ** 3 },
    };
    const v = gradeProbe({ node: "h", t: 0, hostTools: null, commands: [], ...host });
    expect(v.status).toBe("degraded");
    expect(v.findings).toEqual([
      {
        grade: "degraded",
        cause: "host",
        source: "disk",
        message: "checkpoint /ckpt: 512 MiB free of 100 GiB (below 1024 MiB)",
      },
      { grade: "info", cause: "host", source: "memory", message: "memory: 8192 MiB available of 16 GiB" },
    ]);
    expect(
      gradeProbe(
        { node: "h", t: 0, hostTools: null, commands: [], ...host },
        { minFreeDiskMiB: 100, minFreeMemoryMiB: 100 },
      ).status,
    ).toBe("ok");
  });

  it("a driver nvidia-smi cannot reach is fatal; a tool that times out is degraded", () => {
    const report = scenarioReport("nvidia-healthy", "h", queries);
    report.commands[0] = {
      ...report.commands[0]!,
      code: 9,
      stdout:
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.\n",
    };
    expect(headline(gradeProbe(report).findings)?.message).toMatch(/^nvidia-smi exited with 9: NVIDIA-SMI has failed/);
    expect(gradeProbe(report).status).toBe("fatal");
    report.commands[0] = { ...report.commands[0]!, code: null, stdout: "", error: "timed out after 8s" };
    expect(gradeProbe(report).status).toBe("degraded");
  });

  it("a probe that timed out, failed or printed no report leaves the node unknown, saying why", () => {
    expect(gradeProbeRun({ code: null, stdout: "", stderr: "", timedOut: true }).findings[0]!.message).toBe(
      "the probe did not finish in time",
    );
    expect(gradeProbeRun({ code: 127, stdout: "", stderr: "python3: not found\n" }).status).toBe("unknown");
    expect(gradeProbeRun({ code: 0, stdout: "hello\n", stderr: "" }).findings[0]!.message).toMatch(/no report/);
    expect(gradeProbeRun({ code: 0, stdout: `${probeReportBegin}\nAAAA\n`, stderr: "" }).findings[0]!.message).toMatch(
      /cut short/,
    );
    expect(() => parseProbeReport('{"probe":"other"}')).toThrow(ProbeOutputError);
  });
});

describe("agent/health_probe.py", () => {
  it("asks nvidia-smi exactly what the parsers read", () => {
    const r = spawnSync("/usr/bin/python3", [probe, "--print-queries"], { encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(queries);
  });

  it("with SWITCHYARD_HOST_TOOLS, runs the host's fake tools and reports what the replay would (every scenario)", () => {
    const root = mkdtempSync(path.join(os.tmpdir(), "hlth-tools-"));
    for (const scenario of ["nvidia-xid79", "ascend-link-down"] as const) {
      installFakeHost(root, "h1", scenario);
      const r = spawnSync("/usr/bin/python3", [probe, "--home", root], {
        encoding: "utf8",
        env: { PATH: "/usr/bin:/bin", SWITCHYARD_NODE: "h1", SWITCHYARD_HOST_TOOLS: root },
      });
      expect(r.status, r.stderr).toBe(0);
      const report = parseProbeReport(r.stdout);
      expect(report.hostTools).toBe(path.join(root, "h1", "bin"));
      const expected = scenarioReport(scenario, "h1", queries);
      expect(report.commands.map((c) => [c.tool, c.query, c.code, c.stdout])).toEqual(
        expected.commands.map((c) => [c.tool, c.query, c.code, c.stdout]),
      );
      expect(report.disk).toEqual([expect.objectContaining({ path: root, role: "home" })]);
      expect(gradeProbe(report).status).toBe("fatal");
    }
    // Another host's name finds no tools folder: nothing replaced, nothing run.
    const other = spawnSync("/usr/bin/python3", [probe], {
      encoding: "utf8",
      env: { PATH: "/usr/bin:/bin", SWITCHYARD_NODE: "h2", SWITCHYARD_HOST_TOOLS: root },
    });
    expect(parseProbeReport(other.stdout).hostTools).toBeNull();
  });
});
