#!/usr/bin/env bash
# The main job: install what is missing, build, and run `switchyard demo` on the embedded default (local pools + SQLite).
# The demo runs from the folder you are in, so the commands it prints at the end work as shown there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
(cd "$root" && bash scripts/bootstrap.sh)
exec node "$root/bin/switchyard.js" demo "$@"
