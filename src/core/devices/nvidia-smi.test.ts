import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import {
  DeviceOutputError,
  healthFromNvidia,
  nvidiaSmiArgs,
  parseNvidiaHealth,
  parseNvidiaInventory,
  parseNvidiaRemappedRows,
  parseXidLines,
  pciKey,
  xidKind,
} from "./nvidia-smi.js";

const dir = fileURLToPath(new URL("../../../test/fixtures/devices/", import.meta.url));
const fixture = (name: string): string => readFileSync(`${dir}${name}`, "utf8");

describe("nvidia-smi inventory", () => {
  it("parses one GPU per line with units stripped", () => {
    const { rows, lost } = parseNvidiaInventory(fixture("nvidia-smi-inventory-h100x4.csv"));
    expect(lost).toEqual([]);
    expect(rows).toHaveLength(4);
    expect(rows[0]).toEqual({
      index: 0,
      uuid: "GPU-4f0c2a1e-8b3d-4c2a-9e1f-0a1b2c3d4e5f",
      name: "NVIDIA H100 80GB HBM3",
      driverVersion: "535.129.03",
      utilizationPercent: 98,
      memoryUsedMiB: 71234,
      memoryTotalMiB: 81559,
      temperatureC: 61,
      graphicsClockMHz: 1980,
      powerDrawW: 689.41,
    });
    expect(rows.map((r) => r.index)).toEqual([0, 1, 2, 3]);
    expect(rows[3]?.temperatureC).toBe(92);
  });

  it("reads [N/A], [Not Supported] and N/A as null", () => {
    const { rows } = parseNvidiaInventory(fixture("nvidia-smi-inventory-unsupported.csv"));
    expect(rows[0]?.powerDrawW).toBeNull();
    expect(rows[0]?.name).toBe("NVIDIA GeForce RTX 3090");
    expect(rows[1]).toMatchObject({
      name: "Tesla T4",
      driverVersion: null,
      utilizationPercent: null,
      powerDrawW: 27.83,
    });
  });

  it("says which line is malformed", () => {
    expect(() => parseNvidiaInventory("0, GPU-x, H100, 535, 1, 2\n")).toThrow(
      /^nvidia-smi --query-gpu output line 1: expected 10 comma-separated fields, got 6/,
    );
    const bad = "0, GPU-x, H100, 535, 1, 2, 3, hot, 5, 6";
    expect(() => parseNvidiaInventory(`\n${bad}`)).toThrow(DeviceOutputError);
    expect(() => parseNvidiaInventory(`\n${bad}`)).toThrow(/line 2: temperature.gpu is not a number/);
  });

  it("treats 'No devices were found' as no GPUs", () => {
    expect(parseNvidiaInventory("No devices were found\n").rows).toEqual([]);
  });

  it("builds the query it parses", () => {
    expect(nvidiaSmiArgs("inventory")).toEqual([
      "--query-gpu=index,uuid,name,driver_version,utilization.gpu,memory.used,memory.total,temperature.gpu,clocks.current.graphics,power.draw",
      "--format=csv,noheader,nounits",
    ]);
    expect(nvidiaSmiArgs("remapped-rows")[0]).toBe(
      "--query-remapped-rows=gpu_uuid,remapped_rows.pending,remapped_rows.failure",
    );
  });
});

describe("nvidia-smi health fields", () => {
  it("parses counters and Active/Yes flags, and collects lost GPUs", () => {
    const { rows, lost } = parseNvidiaHealth(fixture("nvidia-smi-health-faulty.csv"));
    expect(rows[1]).toEqual({
      index: 1,
      uuid: "GPU-9a1d7e22-31c4-4b8e-a6d2-5b7f0c9e1a23",
      busId: "00000000:2A:00.0",
      eccCorrectedVolatile: 12,
      eccUncorrectedVolatile: 3,
      eccUncorrectedAggregate: 5,
      retiredPagesPending: true,
      hwSlowdown: false,
      hwThermalSlowdown: false,
    });
    expect(rows[2]?.hwSlowdown).toBe(true);
    expect(rows[3]).toMatchObject({ eccUncorrectedVolatile: null, retiredPagesPending: null, hwThermalSlowdown: true });
    expect(lost).toEqual([{ busId: "0000:DB:00.0", message: "GPU is lost.  Reboot the system to recover this GPU" }]);
  });

  it("rejects a flag it cannot read", () => {
    expect(() => parseNvidiaHealth("0, GPU-a, 00000000:18:00.0, 0, 0, 0, Maybe, Not Active, Not Active")).toThrow(
      /retired_pages.pending is neither/,
    );
  });

  it("parses remapped rows", () => {
    const { rows } = parseNvidiaRemappedRows(fixture("nvidia-smi-remapped-rows.csv"));
    expect(rows.map((r) => [r.pending, r.failure])).toEqual([
      [false, false],
      [true, false],
      [false, true],
    ]);
  });
});

describe("Xid kernel log lines", () => {
  it("parses Xid, PCI, pid and name; ignores other kernel lines", () => {
    const events = parseXidLines(fixture("nvidia-dmesg-xid.txt").split("\n"));
    expect(events.map((e) => [e.xid, e.pci, e.kind])).toEqual([
      [13, "0000:18:00", "application"],
      [94, "0000:2a:00", "restart"],
      [79, "0000:3a:00", "hard"],
      [63, "0000:9c:00", "other"],
    ]);
    expect(events[0]).toMatchObject({ pid: 51822, processName: "python3" });
    expect(events[2]).toMatchObject({ pid: null, processName: null, message: "GPU has fallen off the bus." });
    expect(events[3]?.message).toMatch(/^Row Remapper: New row/);
  });

  it("knows the drain-worthy and application Xids", () => {
    expect([48, 64, 74, 79, 95, 119, 120, 140].map(xidKind)).toEqual(Array(8).fill("hard"));
    expect([13, 31, 43, 45, 68, 109].map(xidKind)).toEqual(Array(6).fill("application"));
    expect(xidKind(94)).toBe("restart");
    expect(xidKind(62)).toBe("other");
  });

  it("matches the kernel's and nvidia-smi's spellings of a PCI address", () => {
    expect(pciKey("0000:3a:00")).toBe(pciKey("00000000:3A:00.0"));
    expect(pciKey("PCI:0000:10:1c")).toBe("0:10:1c");
    expect(pciKey("nonsense")).toBeNull();
  });
});

describe("healthFromNvidia", () => {
  it("is ok for healthy GPUs", () => {
    const h = healthFromNvidia({ health: parseNvidiaHealth(fixture("nvidia-smi-health-ok.csv")) });
    expect(h).toEqual({
      status: "ok",
      reasons: [],
      graded: [],
      devices: [
        { index: 0, id: "GPU-4f0c2a1e-8b3d-4c2a-9e1f-0a1b2c3d4e5f", status: "ok", reasons: [] },
        { index: 1, id: "GPU-9a1d7e22-31c4-4b8e-a6d2-5b7f0c9e1a23", status: "ok", reasons: [] },
      ],
    });
  });

  it("fails a node with uncorrected ECC errors or a lost GPU, naming each device", () => {
    const h = healthFromNvidia({ health: parseNvidiaHealth(fixture("nvidia-smi-health-faulty.csv")) });
    expect(h.status).toBe("failed");
    expect(h.devices.map((d) => d.status)).toEqual(["ok", "failed", "degraded", "degraded"]);
    expect(h.reasons).toContain(
      "GPU 1 (GPU-9a1d7e22-31c4-4b8e-a6d2-5b7f0c9e1a23): 3 uncorrected ECC error(s) since boot",
    );
    expect(h.reasons).toContain("GPU 2 (GPU-0c55e3b7-7f21-4d3a-8c44-e1f2a3b4c5d6): hardware slowdown active");
    expect(h.reasons.at(-1)).toBe("GPU 0000:DB:00.0: GPU is lost.  Reboot the system to recover this GPU");
  });

  it("places Xids on their GPU by PCI address: hard fails, restart degrades, application is ignored", () => {
    const health = parseNvidiaHealth(
      [
        "0, GPU-a, 00000000:18:00.0, 0, 0, 0, No, Not Active, Not Active",
        "1, GPU-b, 00000000:2A:00.0, 0, 0, 0, No, Not Active, Not Active",
        "2, GPU-c, 00000000:3A:00.0, 0, 0, 0, No, Not Active, Not Active",
      ].join("\n"),
    );
    const xids = parseXidLines(fixture("nvidia-dmesg-xid.txt").split("\n"));
    const h = healthFromNvidia({ health, xids });
    expect(h.devices.map((d) => [d.id, d.status])).toEqual([
      ["GPU-a", "ok"],
      ["GPU-b", "degraded"],
      ["GPU-c", "failed"],
    ]);
    expect(h.devices[2]?.reasons).toEqual(["Xid 79: GPU fallen off the bus"]);
    // The Xid 63 is on a GPU the health query did not list: reported for the node, not lost.
    expect(h.reasons).toContain("Xid 63: ECC page retirement or row remapping recorded (PCI 0000:9c:00)");
    expect(h.status).toBe("failed");
  });

  it("uses remapped rows and temperature", () => {
    const health = parseNvidiaHealth(fixture("nvidia-smi-health-ok.csv"));
    const remapped = parseNvidiaRemappedRows(
      "GPU-4f0c2a1e-8b3d-4c2a-9e1f-0a1b2c3d4e5f, 0, 1\nGPU-9a1d7e22-31c4-4b8e-a6d2-5b7f0c9e1a23, 1, 0",
    ).rows;
    expect(healthFromNvidia({ health, remappedRows: remapped }).devices.map((d) => d.status)).toEqual([
      "failed",
      "degraded",
    ]);
    const inventory = parseNvidiaInventory(fixture("nvidia-smi-inventory-h100x4.csv")).rows;
    const hot = healthFromNvidia({ health, inventory }, { maxTemperatureC: 60 });
    expect(hot.devices.map((d) => d.status)).toEqual(["degraded", "ok"]);
    expect(hot.reasons).toEqual(["GPU 0 (GPU-4f0c2a1e-8b3d-4c2a-9e1f-0a1b2c3d4e5f): temperature 61 C (limit 60 C)"]);
  });
});
