"""Runs examples/chargpt/train.py outside switchyard on a Slurm host, with what the gray-failure benchmark needs.

    BENCH_REPORT_DIR=... BENCH_CKPT_DIR=... [BENCH_RESUME=1] python3 rank_wrapper.py train.py --steps 300 ...

- Rank environment: under torchrun, RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* come from torchrun. Launched by `srun`
  alone (the "no supervision" run), they are taken from Slurm: RANK = SLURM_PROCID, WORLD_SIZE = SLURM_NTASKS,
  LOCAL_RANK = SLURM_LOCALID; MASTER_ADDR and MASTER_PORT are passed by the benchmark (the first host's address).
- Reports: SWITCHYARD_REPORT=<BENCH_REPORT_DIR>/rank-<RANK>.jsonl, so the SDK calls in train.py write the same
  timestamped step/checkpoint lines they write under switchyard; the benchmark reads them afterwards and while the
  run goes on (to know when every run is warm).
- Resume (BENCH_RESUME=1, the torchrun run): the newest `step-<n>` directory under BENCH_CKPT_DIR whose manifest
  verifies (bench/lib/bench_rank.py, shared with bench/recovery/resume_wrapper.py). (No crash happens in this benchmark; it is there so that the
  torchrun run is the same set-up as in bench/recovery, a restart on crash that resumes.)
"""

import os
import runpy
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import bench_rank  # noqa: E402

if "RANK" not in os.environ:
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
rank = os.environ["RANK"]
bench_rank.prepare(rank, int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) + 1, "rank_wrapper")

script = sys.argv[1]
sys.argv = sys.argv[1:]
print(
    "rank_wrapper: rank %s of %s on %s, attempt %s, resume_from=%r"
    % (rank, os.environ["WORLD_SIZE"], os.environ.get("SLURMD_NODENAME", "?"), os.environ["SWITCHYARD_ATTEMPT"],
       os.environ["SWITCHYARD_RESUME_FROM"]),
    file=sys.stderr,
    flush=True,
)
runpy.run_path(script, run_name="__main__")
