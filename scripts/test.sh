#!/usr/bin/env bash
# The test suite: install what is missing, then type-check, build, and run every test (unit and integration).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
npm test
