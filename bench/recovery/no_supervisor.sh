#!/usr/bin/env bash
# "No supervisor": the gang is launched by hand and, when it fails, started again from scratch by this loop.
#
#   no_supervisor.sh <nprocs> <master-port> <python> <script> [args...]
#
# Each rank gets the torchrun-style environment; a fresh MASTER_PORT per attempt. The loop waits for every rank
# (a killed peer makes the others fail at their next collective; a hung peer makes them wait for gloo's timeout,
# 30 min by default), then restarts everything with no resume. It prints one timestamped line per decision.
set -u
n=$1
port=$2
py=$3
shift 3
attempt=1
while :; do
  pids=()
  for ((r = 0; r < n; r++)); do
    RANK=$r LOCAL_RANK=$r WORLD_SIZE=$n LOCAL_WORLD_SIZE=$n GROUP_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
      BENCH_ATTEMPT=$attempt OMP_NUM_THREADS=1 "$py" "$@" &
    pids+=($!)
  done
  ok=1
  for p in "${pids[@]}"; do wait "$p" || ok=0; done
  if [ "$ok" = 1 ]; then
    echo "no_supervisor: attempt $attempt finished at $(date +%s.%N)"
    exit 0
  fi
  echo "no_supervisor: attempt $attempt failed at $(date +%s.%N); restarting from scratch"
  attempt=$((attempt + 1))
  port=$((port + 1))
done
