import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import {
  causePatternListSchema,
  causePatternSchema,
  classifyFailure,
  defaultCausePatterns,
  hostLostSignal,
  normalizeSignature,
  type CausePattern,
  type FailureInput,
} from "./classify.js";

const logsDir = fileURLToPath(new URL("../../test/fixtures/logs/", import.meta.url));
const tail = (name: string): string[] => readFileSync(`${logsDir}${name}`, "utf8").trimEnd().split("\n");
const failed = (name: string, over: Partial<FailureInput> = {}): FailureInput => ({
  code: 1,
  signal: null,
  tail: tail(name),
  ...over,
});

describe("classifyFailure over fixture logs", () => {
  const cases: {
    file: string;
    cause: string;
    hard: boolean;
    detail: RegExp;
    evidence: RegExp;
    patternId: string;
    over?: Partial<FailureInput>;
  }[] = [
    // A port held by another process: software (no strike on the node), though torch words it DistNetworkError.
    {
      file: "software-address-in-use.log",
      cause: "software",
      hard: false,
      detail: /^a port was already in use on the node/,
      evidence: /DistNetworkError: .*errno: 98 - Address already in use/,
      patternId: "address-in-use",
    },
    // NVIDIA
    {
      file: "nvidia-xid79-fallen-off-bus.log",
      cause: "device",
      hard: true,
      detail: /^NVIDIA Xid 79: GPU fallen off the bus$/,
      evidence: /NVRM: Xid \(PCI:0000:10:1c\): 79,/,
      patternId: "nvidia-xid-79",
      over: { code: null, signal: "SIGABRT" },
    },
    {
      file: "nvidia-ecc-uncorrectable.log",
      cause: "device",
      hard: true,
      detail: /uncorrectable ECC/,
      evidence: /^RuntimeError: CUDA error: uncorrectable ECC error encountered$/,
      patternId: "cuda-uncorrectable-ecc",
    },
    {
      file: "nvidia-xid94-contained-ecc.log",
      cause: "device",
      hard: false,
      detail: /^NVIDIA Xid 94: contained ECC error/,
      evidence: /Xid \(PCI:0000:b1:00\): 94/,
      patternId: "nvidia-xid-94",
    },
    {
      file: "nvidia-xid13-illegal-access.log",
      cause: "software",
      hard: false,
      detail: /^NVIDIA Xid 13: /,
      evidence: /: 13, pid=51822/,
      patternId: "nvidia-xid-13",
    },
    {
      file: "nvidia-nccl-watchdog-timeout.log",
      cause: "network",
      hard: false,
      detail: /NCCL watchdog/,
      evidence: /^\[E ProcessGroupNCCL\.cpp:475\] \[Rank 1\] Watchdog caught/,
      patternId: "nccl-watchdog-timeout",
      over: { code: null, signal: "SIGABRT" },
    },
    {
      file: "nvidia-nccl-system-error.log",
      cause: "network",
      hard: false,
      detail: /NCCL remote or network transport error/,
      evidence: /NET\/IB : Got completion from peer/,
      patternId: "nccl-remote-error",
    },
    // Ascend
    {
      file: "ascend-uce-error.log",
      cause: "device",
      hard: true,
      detail: /UCE/,
      evidence: /UCE ERROR/,
      patternId: "ascend-uce",
    },
    {
      file: "ascend-hbm-multi-bit-ecc.log",
      cause: "device",
      hard: true,
      detail: /HBM multi-bit ECC/,
      evidence: /^\[Error\]: HBM MULTI BIT ECC ERROR occurred on device 6/,
      patternId: "ascend-hbm-multi-bit-ecc",
    },
    {
      file: "ascend-ei0002-notify-timeout.log",
      cause: "network",
      hard: false,
      detail: /^HCCL EI0002: notify wait timeout/,
      evidence: /^EI0002: .*Notify register times out/,
      patternId: "hccl-ei0002",
    },
    {
      file: "ascend-el0004-oom.log",
      cause: "oom",
      hard: false,
      detail: /NPU out of memory/,
      evidence: /^EL0004: /,
      patternId: "npu-oom",
    },
    {
      file: "ascend-acl-call-failed.log",
      cause: "device",
      hard: false,
      detail: /ERR00100/,
      evidence: /ERR00100 PTA call acl api failed$/,
      patternId: "ascend-acl-call-failed",
    },
    {
      file: "ascend-link-error.log",
      cause: "network",
      hard: false,
      detail: /^Ascend link error$/,
      evidence: /reason=\[link error\]/,
      patternId: "ascend-link-error",
    },
    {
      file: "ascend-ei0004-rank-table.log",
      cause: "software",
      hard: false,
      detail: /^HCCL EI0004: bad rank table/,
      evidence: /^EI0004: /,
      patternId: "hccl-bad-config",
    },
    // gloo (CPU pools)
    {
      file: "gloo-connection-closed.log",
      cause: "network",
      hard: false,
      detail: /connection closed by peer/,
      evidence: /Connection closed by peer \[127\.0\.0\.1\]:34637$/,
      patternId: "connection-closed",
    },
    {
      file: "gloo-connection-reset.log",
      cause: "network",
      hard: false,
      detail: /connection reset by peer/,
      evidence: /Connection reset by peer$/,
      patternId: "connection-reset",
    },
    {
      file: "gloo-timeout.log",
      cause: "network",
      hard: false,
      detail: /gloo collective timed out/,
      evidence: /Timed out waiting 1800000ms for recv/,
      patternId: "gloo-timeout",
    },
    // Software
    {
      file: "software-valueerror-attempt1.log",
      cause: "software",
      hard: false,
      detail: /^Python ValueError \(raised at data\.py:57 in next_batch\)$/,
      evidence: /^ValueError: bad batch at step 1200/,
      patternId: "python-exception",
    },
    {
      file: "software-custom-exception.log",
      cause: "software",
      hard: false,
      detail: /^Python llm\.data\.shards\.CorruptShard \(raised at shards\.py:23 in open_shard\)$/,
      evidence: /^llm\.data\.shards\.CorruptShard: /,
      patternId: "python-traceback",
    },
    // Out of memory
    {
      file: "oom-cuda.log",
      cause: "oom",
      hard: false,
      detail: /^CUDA out of memory$/,
      evidence: /^torch\.cuda\.OutOfMemoryError: CUDA out of memory/,
      patternId: "cuda-oom",
    },
    {
      file: "oom-killed.log",
      cause: "oom",
      hard: false,
      detail: /OOM killer/,
      evidence: /^Killed$/,
      patternId: "host-oom-sigkill",
      over: { code: null, signal: "SIGKILL" },
    },
    {
      file: "oom-kernel-killer.log",
      cause: "oom",
      hard: false,
      detail: /OOM killer/,
      evidence: /invoked oom-killer/,
      patternId: "host-oom-killer",
      over: { code: null, signal: "SIGKILL" },
    },
  ];

  it.each(cases)("$file -> $cause", ({ file, cause, hard, detail, evidence, patternId, over }) => {
    const c = classifyFailure(failed(file, over));
    expect(c.cause).toBe(cause);
    expect(c.hardDeviceEvidence).toBe(hard);
    expect(c.detail).toMatch(detail);
    expect(c.evidence).toMatch(evidence);
    expect(c.patternId).toBe(patternId);
  });

  it("covers every fixture in test/fixtures/logs", () => {
    const files = new Set(cases.map((c) => c.file));
    const extra = ["software-valueerror-attempt2.log", "software-keyerror.log", "software-module-not-found.log"];
    const all = readdirSync(logsDir).filter((f) => !files.has(f) && !extra.includes(f) && f !== "gloo-hang-stacks.log");
    expect(all).toEqual([]);
  });
});

describe("precedence", () => {
  const run = (lines: string[], over: Partial<FailureInput> = {}) =>
    classifyFailure({ code: 1, signal: null, tail: lines, ...over });

  it("device beats a network timeout that a failing device leaves behind, whatever the order", () => {
    const device = "[Tue May 14 03:13:02 2024] NVRM: Xid (PCI:0000:10:1c): 79, pid=1896, GPU has fallen off the bus.";
    const network = "[E ProcessGroupNCCL.cpp:475] [Rank 3] Watchdog caught collective operation timeout: WorkNCCL(...)";
    expect(run([network, device]).cause).toBe("device");
    expect(run([device, network]).cause).toBe("device");
  });

  it("oom beats network and software; network beats software", () => {
    const oom = "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB";
    const net =
      "RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:598] Connection closed by peer [127.0.0.1]:1";
    const sw = "ValueError: bad shape";
    expect(run([net, sw, oom]).cause).toBe("oom");
    expect(run([sw, net]).cause).toBe("network");
    expect(run([sw]).cause).toBe("software");
  });

  it("a generic line (ERR00100) loses to any specific one, but beats a generic software line", () => {
    const acl = "[ERROR] 2024-06-08-02:11:45.903.377 (PID:61102, Device:5, RankID:5) ERR00100 PTA call acl api failed";
    expect(run([acl, "EI0006: socket timeout"]).cause).toBe("network");
    expect(run([acl, "EL0004: Failed to allocate memory."]).cause).toBe("oom");
    expect(run(["RuntimeError: something odd", acl]).cause).toBe("device");
  });

  it("a hard device line wins over an earlier soft device line", () => {
    const c = run([
      "NVRM: Xid (PCI:0000:10:1c): 92, pid=1, High single-bit ECC error rate",
      "NVRM: Xid (PCI:0000:10:1c): 48, pid=1, DBE (double bit error) ECC error",
    ]);
    expect(c.patternId).toBe("nvidia-xid-48");
    expect(c.hardDeviceEvidence).toBe(true);
  });

  it("an unlisted Xid is device evidence but not hard; listed application Xids are software", () => {
    const other = run(["NVRM: Xid (PCI:0000:3b:00): 62, pid=77, Internal micro-controller halt"]);
    expect(other).toMatchObject({
      cause: "device",
      hardDeviceEvidence: false,
      detail: "NVIDIA Xid 62 on PCI:0000:3b:00",
    });
    for (const code of [13, 31, 43, 45, 68, 109]) {
      expect(run([`NVRM: Xid (PCI:0000:3b:00): ${code}, pid=77, name=python3`]).cause).toBe("software");
    }
    for (const code of [48, 64, 74, 79, 95, 119, 120, 140]) {
      const c = run([`NVRM: Xid (PCI:0000:3b:00): ${code}, pid=77, name=python3`]);
      expect([c.cause, c.hardDeviceEvidence, c.detail.startsWith(`NVIDIA Xid ${code}: `)]).toEqual([
        "device",
        true,
        true,
      ]);
    }
  });

  it("Xid 94 makes the CUDA ECC message it causes non-hard, without it the message is hard", () => {
    const cudaEcc = "RuntimeError: CUDA error: uncorrectable ECC error encountered";
    expect(run([cudaEcc]).hardDeviceEvidence).toBe(true);
    expect(run(["NVRM: Xid (PCI:0000:b1:00): 94, pid=1, Contained: SM (0x1)", cudaEcc]).hardDeviceEvidence).toBe(false);
  });

  it("heart beat lost from npu-smi health is hard device evidence", () => {
    const c = run(["Error Information : Device heart beat lost"]);
    expect([c.cause, c.hardDeviceEvidence]).toEqual(["device", true]);
  });
});

describe("hang, killed, oom-killer and unknown", () => {
  it("hung input is a hang, with the innermost frame of the signalled thread's stack dump", () => {
    const c = classifyFailure(failed("gloo-hang-stacks.log", { code: null, signal: "SIGKILL", hung: true }));
    expect(c.cause).toBe("hang");
    expect(c.detail).toBe("no progress; stack top: all_reduce (distributed_c10d.py:1536)");
    expect(c.evidence).toMatch(/distributed_c10d\.py", line 1536 in all_reduce$/);
    expect(c.signature).toBe("hang: all_reduce (distributed_c10d.py)");
  });

  it("hung without a stack dump still says hang", () => {
    const c = classifyFailure({ code: null, signal: "SIGKILL", tail: ["step 3 loss 1.0"], hung: true });
    expect([c.cause, c.detail, c.evidence]).toEqual(["hang", "no progress within the hang timeout", ""]);
  });

  it("a hung rank whose device failed is a device incident, so the node is drained", () => {
    const c = classifyFailure({
      code: null,
      signal: "SIGKILL",
      tail: ["NVRM: Xid (PCI:0000:10:1c): 79, pid=1896, GPU has fallen off the bus."],
      hung: true,
    });
    expect([c.cause, c.hardDeviceEvidence]).toEqual(["device", true]);
  });

  it("SIGKILL with no evidence is killed; with 'Killed' it is oom", () => {
    const quiet = classifyFailure({ code: null, signal: "SIGKILL", tail: ["step 512 loss 2.2"] });
    expect(quiet.cause).toBe("killed");
    expect(quiet.detail).toMatch(/^killed by SIGKILL with no other evidence/);
    expect(quiet.signature).toBe("killed: SIGKILL");
    expect(classifyFailure({ code: null, signal: "SIGKILL", tail: ["step 512", "Killed"] }).cause).toBe("oom");
    // A shell reports SIGKILL as exit code 137.
    expect(classifyFailure({ code: 137, signal: null, tail: ["Killed"] }).cause).toBe("oom");
    expect(classifyFailure({ code: 137, signal: null, tail: [] }).cause).toBe("killed");
  });

  it("'Killed' without SIGKILL is not oom evidence", () => {
    expect(classifyFailure({ code: null, signal: "SIGTERM", tail: ["Killed"] }).cause).toBe("killed");
    expect(classifyFailure({ code: 1, signal: null, tail: ["Killed"] }).cause).toBe("unknown");
  });

  it("a crash signal with no log is a native software crash", () => {
    const c = classifyFailure({ code: null, signal: "SIGSEGV", tail: [] });
    expect([c.cause, c.signature]).toEqual(["software", "native crash: SIGSEGV"]);
  });

  it("reads logs with CRLF line ends", () => {
    const c = classifyFailure({
      code: 1,
      signal: null,
      tail: ["Traceback (most recent call last):\r", "KeyError: 7\r"],
    });
    expect([c.cause, c.signature]).toEqual(["software", "KeyError: <n>"]);
  });

  it("a model server whose port is taken (uvicorn/vLLM, Node) is the address-in-use software error", () => {
    for (const line of [
      "ERROR:    [Errno 98] error while attempting to bind on address ('0.0.0.0', 8000): address already in use",
      "Error: listen EADDRINUSE: address already in use 127.0.0.1:8000",
    ]) {
      const c = classifyFailure({ code: 1, signal: null, tail: ["starting", line] });
      expect([c.cause, c.patternId, c.retryable], line).toEqual(["software", "address-in-use", true]);
    }
  });

  it("an exit code with nothing recognisable is unknown", () => {
    const c = classifyFailure({ code: 3, signal: null, tail: ["step 10 loss 1.2", "bye"] });
    expect(c).toMatchObject({ cause: "unknown", evidence: "", retryable: true, patternId: null });
    expect(c.detail).toBe("exited with code 3; no recognised error in the last 2 log line(s)");
  });

  it("setup errors are not retryable, runtime software errors are", () => {
    expect(classifyFailure(failed("software-module-not-found.log")).retryable).toBe(false);
    expect(classifyFailure(failed("ascend-ei0004-rank-table.log")).retryable).toBe(false);
    expect(classifyFailure(failed("software-valueerror-attempt1.log")).retryable).toBe(true);
  });
});

describe("user patterns", () => {
  const parse = (p: unknown): CausePattern => causePatternSchema.parse(p);

  it("take precedence over the defaults on the same line", () => {
    const line = "RuntimeError: my_collectives: peer sync failed after 30s";
    expect(classifyFailure({ code: 1, signal: null, tail: [line] }).cause).toBe("software");
    const mine = parse({ id: "my-sync", cause: "network", regex: "my_collectives: peer sync failed", detail: "sync" });
    const c = classifyFailure({ code: 1, signal: null, tail: [line] }, [mine]);
    expect([c.cause, c.patternId, c.detail]).toEqual(["network", "my-sync", "sync"]);
  });

  it("can reclassify a default (e.g. Connection reset as hard device on a known-bad NIC firmware)", () => {
    const mine = parse({
      id: "bad-nic",
      cause: "device",
      hard: true,
      regex: "\\[10\\.9\\..*Connection reset by peer",
      detail: "NIC on the 10.9 subnet: $<none>reset",
    });
    const c = classifyFailure(
      { code: 1, signal: null, tail: ["Read error [10.9.0.3]:24713: Connection reset by peer"] },
      [mine],
    );
    expect([c.cause, c.hardDeviceEvidence, c.detail]).toEqual(["device", true, "NIC on the 10.9 subnet: reset"]);
  });

  it("mapping a line to unknown silences it", () => {
    const quiet = parse({ id: "noise", cause: "unknown", regex: "^DeprecationError: ", detail: "noise" });
    const c = classifyFailure({ code: 1, signal: null, tail: ["DeprecationError: old API"] }, [quiet]);
    expect(c.cause).toBe("unknown");
  });

  it("expand named and numbered groups in the detail", () => {
    const mine = parse({ id: "shard", cause: "software", regex: "shard (?<n>\\d+) (\\w+)", detail: "shard $<n> $2" });
    expect(classifyFailure({ code: 1, signal: null, tail: ["shard 17 corrupt"] }, [mine]).detail).toBe(
      "shard 17 corrupt",
    );
  });

  it("are validated: strict keys, a regex that compiles, hard only for device", () => {
    const bad = causePatternSchema.safeParse({ id: "x", cause: "network", regex: "([a-", detail: "d" });
    expect(bad.success).toBe(false);
    expect(bad.error?.issues[0]?.message).toMatch(/^is not a valid regular expression/);
    expect(
      causePatternSchema.safeParse({ id: "x", cause: "network", regex: "a", detail: "d", colour: 1 }).success,
    ).toBe(false);
    expect(causePatternSchema.safeParse({ id: "x", cause: "disk", regex: "a", detail: "d" }).success).toBe(false);
    const hard = causePatternSchema.safeParse({ id: "x", cause: "network", regex: "a", detail: "d", hard: true });
    expect(hard.error?.issues[0]?.message).toMatch(/^hard is only allowed with cause device/);
    expect(causePatternListSchema.parse([{ id: "a-b", cause: "oom", regex: "OOM", detail: "d" }])).toHaveLength(1);
  });

  it("the YAML example in docs/failure-causes.md is valid and does what the doc says", () => {
    const doc = readFileSync(fileURLToPath(new URL("../../docs/failure-causes.md", import.meta.url)), "utf8");
    const yaml = /```yaml\n([\s\S]*?)```/.exec(doc)?.[1] ?? "";
    const { causePatterns } = parseYaml(yaml) as { causePatterns: unknown };
    const mine = causePatternListSchema.parse(causePatterns);
    const run = (line: string) => classifyFailure({ code: 1, signal: null, tail: [line] }, mine);
    expect(run("LustreError: 11-0: scratch-OST0004: operation ost_read to node 10.1.2.3@o2ib timed out").cause).toBe(
      "network",
    );
    const nic = run("Read error [10.9.0.3]:24713: Connection reset by peer");
    expect([nic.cause, nic.hardDeviceEvidence]).toEqual(["device", true]);
    expect(run("Read error [10.8.0.3]:24713: Connection reset by peer").cause).toBe("network");
    const shard = run("mylib.CorruptShard: /data/shard_00042.bin checksum mismatch");
    expect([shard.detail, shard.retryable]).toEqual(["corrupt data shard 00042", false]);
    expect(run("DeprecationError: old API").cause).toBe("unknown");
  });

  it("the default table is itself valid user syntax with unique ids", () => {
    for (const p of defaultCausePatterns) expect(causePatternSchema.safeParse(p).success, p.id).toBe(true);
    const ids = defaultCausePatterns.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
  });
});

describe("signatures", () => {
  it("the same bug on another node and attempt has the same signature", () => {
    const a = classifyFailure(failed("software-valueerror-attempt1.log"));
    const b = classifyFailure(failed("software-valueerror-attempt2.log"));
    expect(a.signature).toBe("ValueError: bad batch at step <n>: got <n> tokens from <path>/shard_<n>.bin");
    expect(b.signature).toBe(a.signature);
  });

  it("a different exception has a different signature", () => {
    const a = classifyFailure(failed("software-valueerror-attempt1.log"));
    const k = classifyFailure(failed("software-keyerror.log"));
    expect(k.signature).toBe("KeyError: <n>");
    expect(k.signature).not.toBe(a.signature);
  });

  it("non-software signatures carry the rule so distinct device errors differ", () => {
    const s = (code: number) =>
      classifyFailure({ code: 1, signal: null, tail: [`NVRM: Xid (PCI:0000:10:1c): ${code}, pid=1896`] }).signature;
    expect(s(79)).toBe("nvidia-xid-79: NVRM: Xid (PCI:<pci>): <n>, pid=<n>");
    expect(s(48)).not.toBe(s(79));
  });

  it.each([
    ["2024-05-14T03:12:55.118Z error at step 12", "<ts> error at step <n>"],
    ["[2024-05-14 03:12:55,118] boom", "[<ts>] boom"],
    ["EI0002: 2024-06-03-14:52:31.001.847 The wait times out", "EI0002: <ts> The wait times out"],
    ["segfault at 0x7f3a2b1c0000 in libnccl.so.2", "segfault at <hex> in libnccl.so.<n>"],
    ["GPU-4f0c2a1e-8b3d-4c2a-9e1f-0a1b2c3d4e5f failed on 0000:61:00.0", "GPU-<uuid> failed on <pci>"],
    ["Connection closed by peer [10.0.0.12]:34637", "Connection closed by peer [<addr>]:<n>"],
    ["pid=31337 rank3 on gpu-node-017 port 29500", "pid=<n> rank<n> on gpu-node-<n> port <n>"],
    ["[rank5]: RuntimeError: Expected float32 tensor, got int64", "RuntimeError: Expected float32 tensor, got int64"],
    ["checkpoint /scratch/tmpa8f9c2d1e0/ckpt_000100/model.pt missing", "checkpoint <path>/model.pt missing"],
    ["ERR00100 PTA call acl api failed, error code 507053", "ERR00100 PTA call acl api failed, error code <n>"],
    ["loss is nan at step 1.5e-3   and   more", "loss is nan at step <n> and more"],
    ["commit 3f9a2c1be77d0aa1 not found", "commit <hex> not found"],
  ])("normalizeSignature(%j)", (input, expected) => {
    expect(normalizeSignature(input)).toBe(expected);
  });

  it("caps signatures and evidence at about 300 characters", () => {
    const long = `RuntimeError: ${"x".repeat(1000)} Connection reset by peer ${"y".repeat(1000)}`;
    const c = classifyFailure({ code: 1, signal: null, tail: [long] });
    expect(c.signature.length).toBeLessThanOrEqual(300);
    expect(c.evidence.length).toBeLessThanOrEqual(300);
    expect(c.evidence).toContain("Connection reset by peer");
  });
});

describe("a lost host", () => {
  it("is the cause whatever the rank printed last, with hard evidence (cordon now)", () => {
    const c = classifyFailure({
      code: null,
      signal: hostLostSignal,
      tail: [
        "host a3 lost: no heartbeat from its node agent for 4 s",
        "RuntimeError: NCCL error: unhandled system error",
      ],
    });
    expect(c).toMatchObject({ cause: "host", hardDeviceEvidence: true, retryable: true, signature: "host lost" });
    expect(c.detail).toMatch(/^host a3 lost: no heartbeat/);
  });

  it("a rank merely killed is not a lost host", () => {
    expect(classifyFailure({ code: null, signal: "SIGKILL", tail: [] }).cause).toBe("killed");
  });
});
