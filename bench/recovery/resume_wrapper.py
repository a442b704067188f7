"""Runs examples/chargpt/train.py outside switchyard with what the benchmark needs, in the same process.

    BENCH_CKPT_DIR=... BENCH_REPORT_DIR=... [BENCH_RESUME=1] [BENCH_PG_TIMEOUT_S=60] [BENCH_ATTEMPT=n] \
        python3 resume_wrapper.py train.py --steps 400 ...

- Reports: sets SWITCHYARD_REPORT=<BENCH_REPORT_DIR>/rank-<RANK>.jsonl, so the script's SDK calls write the same
  timestamped step/checkpoint lines they write under switchyard. Nothing reads them while the run goes on; the
  benchmark reads them afterwards (and the `start` line's pid to aim its faults). SWITCHYARD_ATTEMPT is BENCH_ATTEMPT
  or, under torchrun, TORCHELASTIC_RESTART_COUNT + 1.
- Resume (BENCH_RESUME=1, the torchrun run): the newest `step-<n>` directory under BENCH_CKPT_DIR whose manifest
  verifies (switchyard.verify_checkpoint, the same check switchyard makes) is passed as SWITCHYARD_RESUME_FROM, which
  train.py already honours. This is what a torchrun user writes by hand ("load the latest checkpoint on start");
  without it every torchrun restart would start from step 1.
- BENCH_PG_TIMEOUT_S: wraps torch.distributed.init_process_group to pass timeout=<s> when the script gives none.
  torchrun has no flag for it; gloo's default collective timeout is 30 min, and a hung peer is noticed only then.
"""

import os
import runpy
import sys

# Each rank in its own session, as switchyard's local executor starts its ranks (detached): with Linux's autogroup
# scheduling (kernel.sched_autogroup_enabled=1) CPU is shared per session, so ranks left in the launcher's session
# would get less CPU than switchyard's when the runs share the machine.
if os.environ.get("BENCH_SETSID", "1") == "1":
    try:
        os.setsid()
    except OSError:
        pass  # already a session leader

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import bench_rank  # noqa: E402

rank = os.environ.get("RANK", "0")
attempt = os.environ.get("BENCH_ATTEMPT") or str(int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) + 1)
bench_rank.prepare(rank, attempt, "resume_wrapper")

timeout_s = float(os.environ.get("BENCH_PG_TIMEOUT_S", "0") or 0)
if timeout_s > 0:
    import datetime

    import torch.distributed as dist

    _init = dist.init_process_group

    def init_process_group(*args, **kwargs):
        kwargs.setdefault("timeout", datetime.timedelta(seconds=timeout_s))
        return _init(*args, **kwargs)

    dist.init_process_group = init_process_group

script = sys.argv[1]
sys.argv = sys.argv[1:]
print(
    "resume_wrapper: rank %s attempt %s resume_from=%r pg_timeout=%s"
    % (rank, attempt, os.environ["SWITCHYARD_RESUME_FROM"], timeout_s or "default"),
    file=sys.stderr,
    flush=True,
)
runpy.run_path(script, run_name="__main__")
