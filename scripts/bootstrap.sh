#!/usr/bin/env bash
# Installs what switchyard, its example and its tests need on a fresh Debian machine, then builds. Idempotent.
# Exits non-zero, naming what is missing and how to install it, when it cannot install something the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."

# Another apt/dpkg (unattended-upgrades, a second shell) may hold the lock: wait for it instead of dying at once.
apt_lock_timeout="${SWITCHYARD_APT_LOCK_TIMEOUT:-600}"
apt_updated=0

fail() {
  echo "bootstrap: $*" >&2
  exit 1
}

apt_install() {
  # $@: Debian packages. apt-get waits up to $apt_lock_timeout s for the dpkg lock (DPkg::Lock::Timeout).
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    fail "missing Debian packages: $* (fix: as root, apt-get install $*)"
  fi
  local opts=(-o "DPkg::Lock::Timeout=${apt_lock_timeout}" -o "Acquire::Retries=3")
  if [ "$apt_updated" = 0 ]; then
    apt-get "${opts[@]}" update -qq ||
      fail "apt-get update failed (another apt held the lock for over ${apt_lock_timeout}s, or no network); fix: rerun, or set SWITCHYARD_APT_LOCK_TIMEOUT"
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get "${opts[@]}" install -y -qq --no-install-recommends "$@" >/dev/null ||
    fail "apt-get install $* failed (see the messages above; a dpkg lock held for over ${apt_lock_timeout}s ends the wait); fix: rerun, or install them by hand"
}

have_torch() {
  for py in "${SWITCHYARD_PYTHON:-}" /usr/bin/python3 python3; do
    [ -n "$py" ] && command -v "$py" >/dev/null 2>&1 && "$py" -c "import torch" >/dev/null 2>&1 && return 0
  done
  return 1
}

if ! have_torch; then
  echo "bootstrap: installing Debian's python3-torch (CPU PyTorch for the example and tests)"
  apt_install python3-torch python3-numpy
  have_torch || fail "python3-torch is installed but no Python imports torch (fix: check /usr/bin/python3 -c 'import torch')"
fi

# Chromium drives the dashboard's browser tests (playwright-core uses Debian's build; it downloads none of its own).
if [ ! -x /usr/bin/chromium ]; then
  echo "bootstrap: installing Debian's chromium (for the dashboard's browser tests)"
  apt_install chromium
fi

# gdb gives the native (C/C++) stacks of hung ranks (detection.nativeStacks) and is what its tests use.
if ! command -v gdb >/dev/null; then
  echo "bootstrap: installing Debian's gdb (native stacks of hung ranks)"
  apt_install gdb
fi

# Slurm and munge run the multi-host testbed (scripts/testbed.sh) on which the cluster tests run.
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v srun >/dev/null; then
  echo "bootstrap: installing Debian's slurm-wlm and munge (for the multi-host Slurm testbed)"
  apt_install slurm-wlm munge
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ] || [ package.json -nt node_modules/.package-lock.json ]; then
  echo "bootstrap: installing npm packages (better-sqlite3 compiles from source, about a minute)"
  # npm ci refuses this lock file: npm 11 leaves platform-specific optional packages out of it. `npm install`
  # still installs the locked versions.
  npm install --no-audit --no-fund || fail "npm install failed (fix: see npm's messages above; the registry must be reachable)"
fi
npm run --silent build
