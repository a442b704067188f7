import { describe, expect, it } from "vitest";
import { describeNode, healthCell } from "./jobs.js";

const t0 = Date.UTC(2026, 0, 2, 3, 4, 5);

describe("nodes: health in the table and in describe", () => {
  it("the HEALTH cell is the status and the probe's age; never probed is -", () => {
    expect(healthCell({ status: "fatal", probedAt: t0 }, t0 + 95_000)).toBe("fatal (1m35s ago)");
    expect(healthCell({ status: "ok", probedAt: t0 }, t0 - 5)).toBe("ok (0s ago)");
    expect(healthCell(null)).toBe("-");
  });

  it("describe shows the cordon, strikes, the probe's findings and its raw excerpt", () => {
    const text = describeNode(
      {
        name: "n1",
        pool: "nvidia",
        devices: 8,
        cordoned: true,
        strikes: 1,
        reason: "health probe: device: GPU 1: Xid 79: GPU fallen off the bus",
        strikeWindowSeconds: 86400,
        strikeLog: [{ jobId: null, incident: null, cause: "device", t: t0 }],
        health: {
          node: "n1",
          probedAt: t0,
          status: "fatal",
          trigger: "periodic",
          findings: [
            { grade: "fatal", cause: "device", source: "kernel-log", message: "GPU 1: Xid 79: GPU fallen off the bus" },
            { grade: "info", cause: "host", source: "memory", message: "memory: 20 GiB available of 24 GiB" },
          ],
          excerpt: "$ dmesg\nNVRM: Xid (PCI:0000:2a:00): 79\n",
        },
      },
      t0 + 12_000,
    );
    expect(text.split("\n")).toEqual([
      "node     n1",
      "pool     nvidia (8 device(s))",
      "state    cordoned: health probe: device: GPU 1: Xid 79: GPU fallen off the bus",
      "strikes  1",
      "         03:04:05 device (health probe)",
      "health   fatal, probed 12s ago at 03:04:05 (periodic probe)",
      "",
      "GRADE  CAUSE   SOURCE      FINDING",
      "fatal  device  kernel-log  GPU 1: Xid 79: GPU fallen off the bus",
      "info   host    memory      memory: 20 GiB available of 24 GiB",
      "",
      "raw output (excerpt):",
      "  $ dmesg",
      "  NVRM: Xid (PCI:0000:2a:00): 79",
    ]);
  });
});
