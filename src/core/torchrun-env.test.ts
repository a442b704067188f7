import { describe, expect, it } from "vitest";
import { torchrunEnv } from "./torchrun-env.js";

describe("torchrun's worker environment", () => {
  it("counts restarts from the attempt, names the run and the limit", () => {
    const env = torchrunEnv({ jobId: "train-abc123", attempt: 3, maxRestarts: 7, procsPerNode: 2, inherited: {} });
    expect(env).toEqual({
      ROLE_NAME: "default",
      TORCHELASTIC_RESTART_COUNT: "2",
      TORCHELASTIC_MAX_RESTARTS: "7",
      TORCHELASTIC_RUN_ID: "train-abc123",
      TORCHELASTIC_USE_AGENT_STORE: "False",
      OMP_NUM_THREADS: "1",
      TORCH_NCCL_ASYNC_ERROR_HANDLING: "1",
    });
    // Not the deprecated name, which PyTorch >= 2.2 warns about in every rank's log.
    expect(env.NCCL_ASYNC_ERROR_HANDLING).toBeUndefined();
  });

  it("sets OMP_NUM_THREADS only for several ranks per node, and never over one already set", () => {
    const one = torchrunEnv({ jobId: "j", attempt: 1, maxRestarts: 0, procsPerNode: 1, inherited: {} });
    expect(one.OMP_NUM_THREADS).toBeUndefined();
    expect(one.TORCHELASTIC_RESTART_COUNT).toBe("0");
    const set = torchrunEnv({
      jobId: "j",
      attempt: 1,
      maxRestarts: 0,
      procsPerNode: 4,
      inherited: { OMP_NUM_THREADS: "8", NCCL_ASYNC_ERROR_HANDLING: "0" },
    });
    expect(set.OMP_NUM_THREADS).toBeUndefined();
    expect(set.TORCH_NCCL_ASYNC_ERROR_HANDLING).toBe("0");
  });
});
