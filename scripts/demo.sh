#!/usr/bin/env bash
# The main job: install what is missing, build, and run `switchyard demo` on the embedded default (local pools + SQLite).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec node bin/switchyard.js demo "$@"
