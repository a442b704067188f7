import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { healthFromNpu, parseNpuHealth, parseNpuSmiInfo, parseNpuSmiKeyValues } from "./npu-smi.js";

const dir = fileURLToPath(new URL("../../../test/fixtures/devices/", import.meta.url));
const fixture = (name: string): string => readFileSync(`${dir}${name}`, "utf8");

describe("npu-smi info table", () => {
  it("joins the NPU row and the chip row of each device (910B)", () => {
    const info = parseNpuSmiInfo(fixture("npu-smi-info-910b.txt"));
    expect(info.version).toBe("23.0.rc3");
    expect(info.chips).toHaveLength(4);
    expect(info.chips[0]).toEqual({
      npuId: 0,
      chipId: 0,
      name: "910B3",
      health: "OK",
      powerW: 93.6,
      temperatureC: 37,
      hugepagesUsed: 0,
      hugepagesTotal: 0,
      busId: "0000:C1:00.0",
      aicorePercent: 0,
      memoryUsedMB: 0,
      memoryTotalMB: 0,
      hbmUsedMB: 3380,
      hbmTotalMB: 65536,
    });
    expect(info.chips[1]).toMatchObject({ aicorePercent: 87, hbmUsedMB: 61200, hbmTotalMB: 65536 });
    expect(info.chips.map((c) => c.health)).toEqual(["OK", "OK", "Alarm", "Warning"]);
    expect(info.chips[3]).toMatchObject({ powerW: null, temperatureC: null, aicorePercent: null, hbmUsedMB: null });
  });

  it("reads the process table", () => {
    expect(parseNpuSmiInfo(fixture("npu-smi-info-910b.txt")).processes).toEqual([
      { npuId: 1, chipId: 0, pid: 28761, name: "python3.9", memoryMB: 57894 },
    ]);
  });

  it("reads device memory of older cards (910A)", () => {
    const info = parseNpuSmiInfo(fixture("npu-smi-info-910a.txt"));
    expect(info.chips.map((c) => [c.npuId, c.name, c.busId, c.memoryUsedMB, c.memoryTotalMB, c.hbmTotalMB])).toEqual([
      [0, "910A", "0000:61:00.0", 920, 13553, 32768],
      [1, "910A", "0000:62:00.0", 1025, 15039, 32768],
    ]);
  });

  it("rejects an unknown health word and a chip row without its NPU row", () => {
    expect(() => parseNpuSmiInfo("| 0     910B3   | Broken   | 93.6  37  0 / 0 |")).toThrow(
      /npu-smi info output line 1: unknown health "Broken"/,
    );
    expect(() => parseNpuSmiInfo("| 0    | 0000:C1:00.0 | 0  0 / 0  3380 / 65536 |")).toThrow(
      /chip row without an NPU row/,
    );
  });
});

describe("npu-smi Key : Value views", () => {
  it("parses a healthy chip", () => {
    expect(parseNpuHealth(fixture("npu-smi-health-ok.txt"))).toEqual({
      health: "OK",
      errorCodes: [],
      errorInformation: [],
    });
  });

  it("parses a faulty chip with several codes and continuation lines", () => {
    expect(parseNpuHealth(fixture("npu-smi-health-alarm.txt"))).toEqual({
      health: "Alarm",
      errorCodes: ["A4025021", "8C03A000"],
      errorInformation: [
        "node type:CPU, sensor type:Heartbeat, event state:heart beat lost",
        "node type:HBM, sensor type:Memory, event state:multi bit ecc error",
      ],
    });
  });

  it("knows every health word and refuses others", () => {
    for (const word of ["OK", "Warning", "Alarm", "Critical", "UNKNOWN"]) {
      expect(parseNpuHealth(`Health Status : ${word}`).health).toBe(word);
    }
    expect(() => parseNpuHealth("Health Status : Sleepy")).toThrow(/unknown health/);
    expect(() => parseNpuHealth("Error Code : NA")).toThrow(/no "Health Status" line/);
  });

  it("reads other views, such as -t ecc, as key/value lists", () => {
    const ecc = parseNpuSmiKeyValues(fixture("npu-smi-ecc.txt"));
    expect(ecc.get("HBM Double Bit Error Count")).toEqual(["1"]);
    expect(ecc.get("HBM Single Bit Aggregate Total Err Cnt")).toEqual(["102"]);
    expect(ecc.get("NPU ID")).toEqual(["2"]);
  });
});

describe("healthFromNpu", () => {
  it("fails Alarm chips, degrades Warning ones, names each device", () => {
    const h = healthFromNpu({ chips: parseNpuSmiInfo(fixture("npu-smi-info-910b.txt")).chips });
    expect(h.status).toBe("failed");
    expect(h.devices.map((d) => d.status)).toEqual(["ok", "ok", "failed", "degraded"]);
    expect(h.reasons).toEqual(["NPU 2 (0000:C2:00.0): health Alarm", "NPU 3 (0000:02:00.0): health Warning"]);
  });

  it("uses the detailed health view and its error information", () => {
    const chips = parseNpuSmiInfo(fixture("npu-smi-info-910a.txt")).chips;
    expect(healthFromNpu({ chips }).status).toBe("ok");
    const alarm = { npuId: 1, chipId: 0, ...parseNpuHealth(fixture("npu-smi-health-alarm.txt")) };
    const h = healthFromNpu({ chips, details: [alarm] });
    expect(h.devices.map((d) => d.status)).toEqual(["ok", "failed"]);
    expect(h.devices[1]?.reasons).toContain("error codes A4025021 8C03A000");
    // A lost heart beat fails the chip even if the health word lags behind.
    const lagging = { ...alarm, health: "Warning" as const };
    expect(healthFromNpu({ chips, details: [lagging] }).devices[1]?.status).toBe("failed");
  });

  it("degrades a hot chip", () => {
    const chips = parseNpuSmiInfo(fixture("npu-smi-info-910a.txt")).chips;
    expect(healthFromNpu({ chips }, { maxTemperatureC: 36 }).devices.map((d) => d.status)).toEqual(["degraded", "ok"]);
  });
});
