#!/usr/bin/env bash
# The main job: install what is missing, build, and run `switchyard demo` on the embedded default (local pools + SQLite).
# `bash scripts/demo.sh --slurm` tells the same story across the hosts of the multi-host Slurm testbed (as root; it brings
# the testbed up and down again itself). Other flags go to `switchyard demo` (--steps, --no-faults, --keep-server, --json).
# The demo runs from the folder you are in, so the commands it prints at the end work as shown there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
(cd "$root" && bash scripts/bootstrap.sh)
exec node "$root/bin/switchyard.js" demo "$@"
