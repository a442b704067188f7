#!/usr/bin/env bash
# The test suite: install what is missing, then lint, check formatting, type-check, build, and run every test (unit and
# integration). A dependency the tests need that is still missing fails the run (SWITCHYARD_TEST_STRICT=1): nothing
# skips itself here.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export SWITCHYARD_TEST_STRICT=1
npm test
