/**
 * The parsers against output recorded on a real card (test/fixtures/devices/real-h100-580: one H100 80GB HBM3,
 * driver 580.159.04, CUDA 13.0, captured by the device check of 2026-11-27), not only against the hand-made fixtures.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { gradeProbe, parseProbeReport } from "../health.js";
import { healthFromNvidia, parseNvidiaHealth, parseNvidiaInventory, parseNvidiaRemappedRows } from "./nvidia-smi.js";

const dir = fileURLToPath(new URL("../../../test/fixtures/devices/real-h100-580/", import.meta.url));
const real = (name: string): string => readFileSync(`${dir}${name}`, "utf8");
const uuid = "GPU-52105f9f-5aa3-cdc1-bb62-2ed7cd3b1568";

describe("nvidia-smi output recorded on an H100 (driver 580)", () => {
  it("reads the inventory query, and its driver version is the one the banner shows", () => {
    const { rows, lost } = parseNvidiaInventory(real("inventory.csv"));
    expect(lost).toEqual([]);
    expect(rows).toEqual([
      {
        index: 0,
        uuid,
        name: "NVIDIA H100 80GB HBM3",
        driverVersion: "580.159.04",
        utilizationPercent: 0,
        memoryUsedMiB: 0,
        memoryTotalMiB: 81559,
        temperatureC: 39,
        graphicsClockMHz: 345,
        powerDrawW: 73.15,
      },
    ]);
    expect(real("nvidia-smi.txt")).toContain(`Driver Version: ${rows[0]!.driverVersion}`);
  });

  it("reads '[N/A]' page retirement (H100s remap rows instead) as unknown, not as a fault", () => {
    const health = parseNvidiaHealth(real("health.csv"));
    expect(health.lost).toEqual([]);
    expect(health.rows[0]).toMatchObject({
      index: 0,
      uuid,
      busId: "00000000:00:06.0",
      eccUncorrectedVolatile: 0,
      retiredPagesPending: null,
      hwSlowdown: false,
      hwThermalSlowdown: false,
    });
    const remapped = parseNvidiaRemappedRows(real("remapped-rows.csv"));
    expect(remapped.rows).toEqual([{ uuid, pending: false, failure: false }]);
    const verdict = healthFromNvidia({
      health,
      remappedRows: remapped.rows,
      inventory: parseNvidiaInventory(real("inventory.csv")).rows,
    });
    expect(verdict.status).toBe("ok");
    expect(verdict.reasons).toEqual([]);
  });

  it("grades the whole probe report agent/health_probe.py printed there as a healthy node", () => {
    const report = parseProbeReport(real("probe-report.txt"));
    expect(report.commands.map((c) => `${c.tool} ${c.query}`)).toEqual([
      "nvidia-smi health",
      "nvidia-smi remapped-rows",
      "nvidia-smi inventory",
      "dmesg kernel-log",
    ]);
    const verdict = gradeProbe(report);
    expect(verdict.status).toBe("ok");
    expect(verdict.findings.map((f) => f.message)).toContain("1 GPU(s) healthy");
  });
});
