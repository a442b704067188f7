#!/usr/bin/env bash
# Installs what switchyard, its example and its tests need on a fresh Debian machine. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

have_torch() {
  for py in "${SWITCHYARD_PYTHON:-}" /usr/bin/python3 python3; do
    [ -n "$py" ] && command -v "$py" >/dev/null 2>&1 && "$py" -c "import torch" >/dev/null 2>&1 && return 0
  done
  return 1
}

if ! have_torch; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing Debian's python3-torch (CPU PyTorch for the example and tests)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-torch python3-numpy >/dev/null
  else
    echo "bootstrap: no Python with torch found; install python3-torch (Debian) or set SWITCHYARD_PYTHON" >&2
  fi
fi

# Chromium drives the dashboard's browser tests (playwright-core uses Debian's build; it downloads none of its own).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "bootstrap: installing Debian's chromium (for the dashboard's browser tests)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "bootstrap: installing npm packages (better-sqlite3 compiles from source, about a minute)"
  # npm ci refuses this lock file: npm 11 leaves platform-specific optional packages out of it. `npm install`
  # still installs the locked versions.
  npm install --no-audit --no-fund
fi
npm run --silent build
