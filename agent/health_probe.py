#!/usr/bin/env python3
"""switchyard's node health probe: runs on one host (through the executor's runOnNodes) and prints, as one JSON
object on stdout, the raw output of whichever device tools the host has, plus what the host itself can tell (free
disk for the checkpoint folder and the home, free memory). Python standard library only; it parses nothing but the
device ids it needs to ask the tools about each device: grading happens on the server (src/core/health.ts).

Tools, each run only when found on PATH:
  nvidia-smi   --query-gpu health fields, --query-remapped-rows, --query-gpu inventory (temperatures)
  dmesg        kernel log lines with "NVRM: Xid" (only when nvidia-smi is there; journalctl -k when dmesg is refused)
  npu-smi      info (the table), then `info -t health -i <npu> -c <chip>` per chip
  hccn_tool    `-i <device> -link -g` per NPU (the link of its RoCE port)

Test and testbed hook: when SWITCHYARD_HOST_TOOLS=<dir> is set and <dir>/<SWITCHYARD_NODE>/bin is a folder, it is put
first on PATH, so that fake tools replaying captured outputs can stand in for a host's real ones (Slurm tasks inherit
srun's environment, not slurmd's: the per-host PATH has to be chosen here, on the host).
"""

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import time

VERSION = 1
BEGIN = "switchyard-health-report-begin"
END = "switchyard-health-report-end"
MAX_OUTPUT = 64 * 1024
MAX_XID_LINES = 200
MAX_DEVICES = 64

# Must match nvidiaSmiArgs() in src/core/devices/nvidia-smi.ts (a unit test compares them).
NVIDIA_HEALTH_FIELDS = [
    "index",
    "uuid",
    "pci.bus_id",
    "ecc.errors.corrected.volatile.total",
    "ecc.errors.uncorrected.volatile.total",
    "ecc.errors.uncorrected.aggregate.total",
    "retired_pages.pending",
    "clocks_throttle_reasons.hw_slowdown",
    "clocks_throttle_reasons.hw_thermal_slowdown",
]
NVIDIA_REMAPPED_FIELDS = ["gpu_uuid", "remapped_rows.pending", "remapped_rows.failure"]
NVIDIA_INVENTORY_FIELDS = [
    "index",
    "uuid",
    "name",
    "driver_version",
    "utilization.gpu",
    "memory.used",
    "memory.total",
    "temperature.gpu",
    "clocks.current.graphics",
    "power.draw",
]
CSV = "--format=csv,noheader,nounits"


def nvidia_queries():
    return {
        "health": ["--query-gpu=" + ",".join(NVIDIA_HEALTH_FIELDS), CSV],
        "remapped-rows": ["--query-remapped-rows=" + ",".join(NVIDIA_REMAPPED_FIELDS), CSV],
        "inventory": ["--query-gpu=" + ",".join(NVIDIA_INVENTORY_FIELDS), CSV],
    }


def cut(text):
    if len(text) <= MAX_OUTPUT:
        return text
    return text[:MAX_OUTPUT] + "\n[cut at %d bytes]\n" % MAX_OUTPUT


def run(tool, query, argv, timeout):
    """Runs one tool command (an argument vector, never a shell) and records what it said."""
    started = time.monotonic()
    entry = {"tool": tool, "query": query, "argv": argv, "code": None, "stdout": "", "stderr": "", "error": None}
    try:
        p = subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        entry["code"] = p.returncode
        entry["stdout"] = cut(p.stdout.decode("utf-8", "replace"))
        entry["stderr"] = cut(p.stderr.decode("utf-8", "replace"))
    except subprocess.TimeoutExpired:
        entry["error"] = "timed out after %gs" % timeout
    except OSError as e:
        entry["error"] = "%s: %s" % (type(e).__name__, e)
    entry["seconds"] = round(time.monotonic() - started, 3)
    return entry


def kernel_xids(timeout):
    """Kernel log lines with NVIDIA Xids (dmesg; journalctl -k when dmesg is refused), the newest MAX_XID_LINES."""
    tried = []
    for argv in (["dmesg"], ["journalctl", "-k", "-q", "--no-pager", "-o", "short"]):
        exe = shutil.which(argv[0])
        if not exe:
            continue
        entry = run(argv[0], "kernel-log", [exe] + argv[1:], timeout)
        if entry["code"] == 0:
            lines = [l for l in entry["stdout"].splitlines() if "NVRM: Xid" in l]
            entry["stdout"] = "".join(l + "\n" for l in lines[-MAX_XID_LINES:])
            return entry
        tried.append(entry)
    if tried:
        return tried[-1]
    return {"tool": "dmesg", "query": "kernel-log", "argv": [], "code": None, "stdout": "", "stderr": "",
            "error": "neither dmesg nor journalctl found"}


def npu_ids(info_text):
    """(npu, chip) pairs of the `npu-smi info` table: an NPU row (id, name | health |) then its chip rows."""
    pairs = []
    npu = None
    for raw in info_text.splitlines():
        line = raw.strip()
        if not (line.startswith("|") and line.endswith("|")):
            continue
        cells = [c.strip() for c in line[1:-1].split("|")]
        if len(cells) < 3:
            continue
        first = cells[0].split()
        if cells[1].lower() in ("ok", "warning", "alarm", "critical", "unknown") and first and first[0].isdigit():
            npu = int(first[0])
            continue
        bus = cells[1]
        if npu is not None and first and first[0].isdigit() and (":" in bus or bus.upper() in ("NA", "N/A")):
            pairs.append((npu, int(first[0])))
    return pairs[:MAX_DEVICES]


def free_space(path_, role):
    """Free and total bytes of the filesystem that holds path_ (or its nearest existing parent)."""
    probe = os.path.abspath(path_)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    try:
        st = os.statvfs(probe)
        return {"path": path_, "role": role, "free": st.f_bavail * st.f_frsize, "total": st.f_blocks * st.f_frsize}
    except OSError as e:
        return {"path": path_, "role": role, "error": "%s: %s" % (type(e).__name__, e)}


def memory():
    try:
        values = {}
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    values[key] = int(parts[0]) * 1024
        if "MemAvailable" in values and "MemTotal" in values:
            return {"available": values["MemAvailable"], "total": values["MemTotal"]}
    except OSError:
        pass
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint-dir", action="append", default=[], help="a checkpoint folder to check for space")
    ap.add_argument("--home", default=None, help="switchyard's home on this host (attempt folders)")
    ap.add_argument("--tool-timeout", type=float, default=8.0, help="seconds each tool may take")
    ap.add_argument("--print-queries", action="store_true", help="print the nvidia-smi queries as JSON and exit")
    args = ap.parse_args()
    if args.print_queries:
        print(json.dumps(nvidia_queries()))
        return 0
    timeout = max(0.5, min(args.tool_timeout, 120.0))
    node = os.environ.get("SWITCHYARD_NODE", "")
    tools_root = os.environ.get("SWITCHYARD_HOST_TOOLS", "")
    hook = None
    if tools_root and node and "/" not in node and node not in (".", ".."):
        candidate = os.path.join(tools_root, node, "bin")
        if os.path.isdir(candidate):
            hook = candidate
            os.environ["PATH"] = candidate + os.pathsep + os.environ.get("PATH", "")

    commands = []
    nvidia = shutil.which("nvidia-smi")
    if nvidia:
        for query, qargs in nvidia_queries().items():
            commands.append(run("nvidia-smi", query, [nvidia] + qargs, timeout))
        commands.append(kernel_xids(timeout))
    npu = shutil.which("npu-smi")
    chips = []
    if npu:
        info = run("npu-smi", "info", [npu, "info"], timeout)
        commands.append(info)
        if info["code"] == 0:
            chips = npu_ids(info["stdout"])
            for n, c in chips:
                commands.append(run("npu-smi", "health %d %d" % (n, c), [npu, "info", "-t", "health", "-i", str(n), "-c", str(c)], timeout))
    hccn = shutil.which("hccn_tool")
    if hccn:
        # One RoCE port per NPU: the device id hccn_tool takes is the chip's place in the table (0, 1, ...).
        devices = range(len(chips)) if chips else range(8)
        for d in devices:
            commands.append(run("hccn_tool", "link %d" % d, [hccn, "-i", str(d), "-link", "-g"], timeout))

    disks = [free_space(p, "checkpoint") for p in args.checkpoint_dir[:16]]
    if args.home:
        disks.append(free_space(args.home, "home"))
    report = {
        "probe": "switchyard-health",
        "version": VERSION,
        "node": node,
        "hostname": os.uname().nodename,
        "t": int(time.time() * 1000),
        "hostTools": hook,
        "commands": commands,
        "disk": disks,
        "memory": memory(),
    }
    write_report(report)
    return 0


def write_report(report):
    """The report as base64 lines of 76 characters between two marker lines: srun --label cuts long lines (about
    1 KiB) into pieces, and a tool's output may hold anything; base64 lines survive both, and join back exactly."""
    data = base64.b64encode(json.dumps(report).encode("utf-8")).decode("ascii")
    lines = [data[i : i + 76] for i in range(0, len(data), 76)]
    sys.stdout.write(BEGIN + "\n" + "".join(l + "\n" for l in lines) + END + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
