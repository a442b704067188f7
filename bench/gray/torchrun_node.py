"""One host's torchrun agent for the gray-failure benchmark, started by `srun` (one task per host).

    srun -N3 -n3 python3 torchrun_node.py --nnodes 3 --nproc_per_node 1 --master_addr A --master_port P ... script ...

torchrun's static rendezvous needs each agent's --node_rank, which differs per host: it is Slurm's SLURM_NODEID.
Everything else is bench/recovery/torchrun_shim.py (torch 1.13's torchrun with the one Python 3.11 fix it needs).
"""

import os
import runpy
import sys

here = os.path.dirname(os.path.abspath(__file__))
shim = os.path.join(here, "..", "recovery", "torchrun_shim.py")
sys.argv = [shim, "--node_rank", os.environ["SLURM_NODEID"]] + sys.argv[1:]
runpy.run_path(shim, run_name="__main__")
