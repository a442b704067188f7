import { describe, expect, it } from "vitest";
import type { ReplicaView } from "../../supervisor/services.js";
import { CliError } from "../client.js";
import { pickReplicas } from "./service-logs.js";

function replica(slot: string, jobId: string, state: ReplicaView["state"], createdAt: number): ReplicaView {
  return {
    jobId,
    service: "m",
    slot,
    pool: slot.replace(/-\d+$/, ""),
    state,
    readyAttempt: null,
    url: null,
    checkpoint: null,
    checkpointStep: null,
    drainingSince: null,
    createdAt,
    updatedAt: createdAt,
    jobState: state === "stopped" ? "CANCELLED" : "RUNNING",
    restarts: 0,
    attempt: 1,
    node: null,
    runningPool: null,
    reason: null,
  };
}

const ids = (rs: ReplicaView[]): string[] => rs.map((r) => r.jobId);

describe("services logs: which replicas", () => {
  const replicas = [
    replica("a-0", "j-old", "stopped", 1),
    replica("a-0", "j-a0", "ready", 2),
    replica("a-1", "j-a1", "ready", 3),
    replica("b-0", "j-b0", "starting", 4),
  ];

  it("every live replica by slot, or with none live the newest of each slot", () => {
    expect(ids(pickReplicas("m", replicas))).toEqual(["j-a0", "j-a1", "j-b0"]);
    const allStopped = replicas.map((r) => ({ ...r, state: "stopped" as const }));
    expect(ids(pickReplicas("m", allStopped))).toEqual(["j-a0", "j-a1", "j-b0"]);
  });

  it("one replica by slot, job id (a stopped one too) or a unique index; both replicas of a slot while it rolls", () => {
    expect(ids(pickReplicas("m", replicas, "a-1"))).toEqual(["j-a1"]);
    expect(ids(pickReplicas("m", replicas, "j-old"))).toEqual(["j-old"]);
    expect(ids(pickReplicas("m", replicas, "1"))).toEqual(["j-a1"]);
    const rolling = [...replicas, replica("a-1", "j-a1-new", "starting", 5)];
    expect(ids(pickReplicas("m", rolling, "a-1"))).toEqual(["j-a1", "j-a1-new"]);
  });

  it("an ambiguous index or an unknown replica is a usage error naming the slots", () => {
    expect(() => pickReplicas("m", replicas, "0")).toThrow(/--replica 0 is ambiguous in service m: a-0, b-0/);
    try {
      pickReplicas("m", replicas, "c-9");
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(CliError);
      expect((err as CliError).exitCode).toBe(2);
      expect((err as CliError).message).toBe('service m has no replica "c-9"');
      expect((err as CliError).fix).toBe("--replica one of a-0, a-1, b-0");
    }
  });
});
