"""What the benchmarks' rank wrappers (bench/gray/rank_wrapper.py, bench/recovery/resume_wrapper.py) share: the
environment that makes examples/chargpt/train.py write switchyard's report lines outside switchyard, and the resume
from the newest checkpoint that verifies (what a torchrun user writes by hand: "load the latest checkpoint on start").

    import bench_rank
    switchyard = bench_rank.prepare(rank, attempt, "resume_wrapper")

- SWITCHYARD_REPORT=<BENCH_REPORT_DIR>/rank-<rank>.jsonl, SWITCHYARD_CHECKPOINT_DIR=BENCH_CKPT_DIR,
  SWITCHYARD_ATTEMPT=attempt; the SDK is imported afterwards (the import writes the `start` report line).
- BENCH_RESUME=1: the newest `step-<n>` directory under BENCH_CKPT_DIR whose manifest verifies
  (switchyard.verify_checkpoint, the check switchyard makes) becomes SWITCHYARD_RESUME_FROM, which train.py honours;
  one that does not verify is skipped, with a line on stderr.
"""

import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "sdk", "python"))


def prepare(rank, attempt, who):
    ckpt_dir = os.environ["BENCH_CKPT_DIR"]
    os.environ["SWITCHYARD_CHECKPOINT_DIR"] = ckpt_dir
    os.environ["SWITCHYARD_REPORT"] = os.path.join(os.environ["BENCH_REPORT_DIR"], "rank-%s.jsonl" % rank)
    os.environ["SWITCHYARD_ATTEMPT"] = str(attempt)
    os.environ["SWITCHYARD_RESUME_FROM"] = ""

    import switchyard  # after the environment: the import writes the `start` report line

    if os.environ.get("BENCH_RESUME") == "1" and os.path.isdir(ckpt_dir):
        for name in sorted((d for d in os.listdir(ckpt_dir) if d.startswith("step-")), reverse=True):
            path = os.path.join(ckpt_dir, name)
            if not switchyard.verify_checkpoint(path):
                os.environ["SWITCHYARD_RESUME_FROM"] = path
                break
            print("%s: skipping %s (does not verify)" % (who, path), file=sys.stderr, flush=True)
    return switchyard
