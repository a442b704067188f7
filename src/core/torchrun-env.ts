/**
 * The environment torchrun's elastic agent gives every worker, beyond the rank numbers the executors set per rank
 * (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK, GROUP_WORLD_SIZE, ROLE_RANK, ROLE_WORLD_SIZE,
 * MASTER_ADDR, MASTER_PORT): a script written for torchrun finds what it reads. The job's own `env` wins over these.
 */
export interface TorchrunEnvInput {
  jobId: string;
  /** The attempt's number (1 for the first launch): torchrun's restart count is the number of restarts before it. */
  attempt: number;
  maxRestarts: number;
  procsPerNode: number;
  /** The environment the ranks inherit (the server's), for the variables torchrun only sets when they are unset. */
  inherited: Readonly<Record<string, string | undefined>>;
}

export function torchrunEnv(o: TorchrunEnvInput): Record<string, string> {
  return {
    ROLE_NAME: "default",
    TORCHELASTIC_RESTART_COUNT: String(Math.max(0, o.attempt - 1)),
    TORCHELASTIC_MAX_RESTARTS: String(o.maxRestarts),
    TORCHELASTIC_RUN_ID: o.jobId,
    // No agent store: rank 0 hosts the TCP store at MASTER_ADDR:MASTER_PORT, as under a plain env:// launch.
    TORCHELASTIC_USE_AGENT_STORE: "False",
    // torchrun: "Setting OMP_NUM_THREADS environment variable for each process to be 1 in default" when several
    // ranks share a node and nothing set it.
    ...(o.procsPerNode > 1 && o.inherited.OMP_NUM_THREADS === undefined ? { OMP_NUM_THREADS: "1" } : {}),
    // As torchrun 2.x does: an NCCL error ends the rank instead of hanging it. Under the old name (torchrun 1.x's)
    // PyTorch >= 2.2 prints a deprecation warning in every rank's log (seen on an H100 with 2.11), so only the new name
    // is set; a value the server inherited under either name is kept.
    TORCH_NCCL_ASYNC_ERROR_HANDLING:
      o.inherited.TORCH_NCCL_ASYNC_ERROR_HANDLING ?? o.inherited.NCCL_ASYNC_ERROR_HANDLING ?? "1",
  };
}
