"""torchrun for Debian's PyTorch 1.13 on Python 3.11: patch one function, then run torch.distributed.run's main.

    /usr/bin/python3 bench/recovery/torchrun_shim.py --standalone --nproc_per_node 2 --max_restarts 3 train.py ...

The bug: `torch.distributed.elastic.multiprocessing.api.Std.from_str` turns the `--redirects` / `--tee` strings
("0" by default) into `Std` flags with

    def to_std(v):
        v = int(v)
        for s in Std:          # <- Python 3.11 iterates only the canonical (single-bit) members of a Flag:
            if s == v:         #    OUT (1) and ERR (2); NONE (0) and ALL (3) are no longer yielded
                return s
        # return None

so from_str("0") returns None, and `start_processes` then dies in `to_map(None, nprocs)` with
`AttributeError: 'NoneType' object has no attribute 'get'` before any worker starts. (Fixed upstream by
returning `Std(int(v))`.)

The patch: replace `Std.from_str` with the same parser built on `Std(int(v))` (valid for 0..3, which the regex
already guarantees). Nothing else in torchrun is touched: rendezvous, monitoring (`--monitor_interval`, default 5 s),
restarts (`--max_restarts`) and worker shutdown (SIGTERM, then SIGKILL after 30 s) are torch's own code.
"""

import re
import sys

from torch.distributed.elastic.multiprocessing import api as mp_api

_VALUE_REGEX = r"^[0123]$"
_MAPPING_REGEX = r"^(\d:[0123],)*(\d:[0123])$"


def _from_str(cls, vm):
    if re.match(_VALUE_REGEX, vm):
        return cls(int(vm))
    if re.match(_MAPPING_REGEX, vm):
        return {int(i): cls(int(v)) for i, v in (m.split(":") for m in vm.split(","))}
    raise ValueError(f"{vm} does not match: <{_VALUE_REGEX}> or <{_MAPPING_REGEX}>")


def _needs_patch():
    try:
        return not isinstance(mp_api.Std.from_str("0"), mp_api.Std)
    except Exception:
        return True


if _needs_patch():
    mp_api.Std.from_str = classmethod(_from_str)

if __name__ == "__main__":
    from torch.distributed.run import main

    sys.argv[0] = "torchrun"
    sys.exit(main())
