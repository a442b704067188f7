"""switchyard node agent: runs one training rank on a host the control plane may not see (stdlib only, Python >= 3.7).

Started once per rank by the executor (on Slurm: one `srun` task per rank), it
- sets the rank contract's environment (RANK, LOCAL_RANK, WORLD_SIZE, NODE_RANK, ... from Slurm's task ids),
- runs the rank in its own process group, its output appended to `rank-N.log` in the attempt folder,
- writes `rank-N.hb` (heartbeat: alive, process state, CPU time, RSS) every --heartbeat seconds,
- acts on control requests placed in the attempt folder: `ctl/rank-N.<seq>.<SIGNAL>` delivers SIGNAL to the rank's
  own process (stack dump, chaos stop/continue; SIGUSR1, the stack dump, only to processes that catch it); `ctl/stop` (JSON {"graceMs": G}) stops the rank's whole group:
  SIGCONT, SIGTERM, SIGKILL after G ms,
- writes `rank-N.exit` ({"code": C, "t": ms}; death by signal N as 128+N, like a POSIX shell) when the rank ends.
The attempt folder lives on storage shared with the control plane. Every file is written whole (tmp + rename).
"""

import json
import os
import signal
import subprocess
import sys
import time

HEARTBEAT_S = 1.0


def now_ms():
    return int(time.time() * 1000)


def write_json(path, obj):
    tmp = "%s.tmp-%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(obj, f)
        f.write("\n")
    os.replace(tmp, path)


def proc_stat(pid):
    """(state, cpu ticks user+system, rss pages) of a live process, or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split(" ")
    try:
        return fields[0], int(fields[11]) + int(fields[12]), int(fields[21])
    except (IndexError, ValueError):
        return None


def group_cpu_ticks(pgid):
    """CPU ticks of every process in the group (a rank may fork data loaders)."""
    total = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                text = f.read()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split(" ")
        try:
            if int(fields[2]) == pgid:
                total += int(fields[11]) + int(fields[12])
        except (IndexError, ValueError):
            continue
    return total


def visibility_env(vendor, devices):
    ids = ",".join(str(d) for d in devices)
    if vendor == "nvidia":
        return {"CUDA_VISIBLE_DEVICES": ids}
    if vendor == "ascend":
        return {"ASCEND_RT_VISIBLE_DEVICES": ids}
    return {}


def catches_signal(pid, sig):
    """True when the process has a handler for sig (the SigCgt mask of /proc/PID/status: bit sig-1)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return (int(line.split(":", 1)[1].strip(), 16) >> (int(sig) - 1)) & 1 == 1
    except (OSError, ValueError):
        pass
    return False


def child_pids(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


# Signals that ask the rank for something (SIGUSR1: its Python stacks): delivered only to processes that catch them, so
# that a script without a handler is never killed by the dump meant to explain its hang.
REQUEST_SIGNALS = ("SIGUSR1",)


def request_targets(pid, sig):
    """The rank's process when it catches sig, else its descendants that do (breadth first, at most 64 looked at)."""
    if catches_signal(pid, sig):
        return [pid]
    found, queue, looked = [], child_pids(pid), 0
    while queue and looked < 64:
        looked += 1
        p = queue.pop(0)
        if catches_signal(p, sig):
            found.append(p)
        else:
            queue.extend(child_pids(p))
    return found


def start_native_stacks(pid, out_path, timeout_s):
    """gdb's backtraces of every thread of pid into out_path (0600), in the background; (process, deadline) or None."""
    import shutil

    gdb = shutil.which("gdb")
    if not gdb:
        return None
    try:
        fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError:
        return None
    try:
        proc = subprocess.Popen(
            [gdb, "--batch", "--nx", "-p", str(pid), "-ex", "set pagination off", "-ex", "thread apply all bt"],
            stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, start_new_session=True,
        )
    except OSError:
        return None
    finally:
        os.close(fd)
    return proc, time.monotonic() + timeout_s


def signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except OSError:
        pass


def main(argv):
    if "--" not in argv:
        sys.stderr.write("usage: node_agent.py --dir ATTEMPT_DIR [--heartbeat S] -- COMMAND...\n")
        return 2
    sep = argv.index("--")
    opts, command = argv[:sep], argv[sep + 1 :]
    attempt_dir = None
    heartbeat_s = HEARTBEAT_S
    i = 0
    while i < len(opts):
        if opts[i] == "--dir":
            attempt_dir = opts[i + 1]
            i += 2
        elif opts[i] == "--heartbeat":
            heartbeat_s = float(opts[i + 1])
            i += 2
        else:
            sys.stderr.write("node_agent: unknown option %s\n" % opts[i])
            return 2
    if not attempt_dir or not command:
        sys.stderr.write("node_agent: --dir and a command are required\n")
        return 2

    env = dict(os.environ)
    rank = int(env.get("SLURM_PROCID", env.get("RANK", "0")))
    local_rank = int(env.get("SLURM_LOCALID", env.get("LOCAL_RANK", "0")))
    world = int(env.get("SLURM_NTASKS", env.get("WORLD_SIZE", "1")))
    node_rank = int(env.get("SLURM_NODEID", env.get("NODE_RANK", "0")))
    local_world = int(env.get("SWITCHYARD_PROCS_PER_NODE", env.get("LOCAL_WORLD_SIZE", "1")))
    node = env.get("SLURMD_NODENAME") or env.get("SWITCHYARD_NODE") or os.uname().nodename
    devices_per_node = max(1, int(env.get("SWITCHYARD_DEVICES_PER_NODE", "1")))
    vendor = env.get("SWITCHYARD_ACCELERATOR", "cpu")

    log_path = os.path.join(attempt_dir, "rank-%d.log" % rank)
    report_path = os.path.join(attempt_dir, "rank-%d.jsonl" % rank)
    exit_path = os.path.join(attempt_dir, "rank-%d.exit" % rank)
    hb_path = os.path.join(attempt_dir, "rank-%d.hb" % rank)
    ctl_dir = os.path.join(attempt_dir, "ctl")

    env.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(local_rank),
            "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(local_world),
            "NODE_RANK": str(node_rank),
            "GROUP_RANK": str(node_rank),
            "GROUP_WORLD_SIZE": env.get("SLURM_NNODES", env.get("GROUP_WORLD_SIZE", "1")),
            "ROLE_RANK": str(rank),
            "ROLE_WORLD_SIZE": str(world),
            "SWITCHYARD_NODE": node,
            "SWITCHYARD_REPORT": report_path,
            "PYTHONUNBUFFERED": "1",
        }
    )
    # As torchrun and the local executor do: every rank of a host sees the host's devices it shares with its peers and
    # picks its own by LOCAL_RANK (torch.cuda.set_device(LOCAL_RANK) keeps working).
    device_map = env.get("SWITCHYARD_DEVICE_MAP", "")
    granted = device_map.split(";")[node_rank] if device_map and node_rank < len(device_map.split(";")) else ""
    if granted:
        devices = sorted({int(d) for d in granted.split(",") if d.strip().isdigit()})
    else:
        devices = sorted({i % devices_per_node for i in range(local_world)})
    env.update(visibility_env(vendor, devices))

    log = open(log_path, "ab")
    try:
        child = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True
        )
    except OSError as err:
        log.write(("switchyard: cannot start %s: %s\n" % (command[0], err)).encode())
        log.close()
        # 127: the shell's "command not found"; the supervisor reads the reason from the log.
        write_json(exit_path, {"code": 127, "t": now_ms(), "launchError": str(err)})
        return 127
    log.close()
    pgid = child.pid
    write_json(
        os.path.join(attempt_dir, "rank-%d.agent" % rank),
        {"node": node, "agentPid": os.getpid(), "pid": child.pid, "pgid": pgid, "startedAt": now_ms()},
    )

    stopping = {"deadline": None}

    def on_term(signum, _frame):
        # Slurm cancels a step with SIGTERM (then SIGKILL after KillWait): pass it to the whole group.
        signal_group(pgid, signal.SIGCONT)
        signal_group(pgid, signum)
        if stopping["deadline"] is None:
            stopping["deadline"] = time.monotonic() + 10

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    done_ctl = set()
    natives = []  # gdb runs for native stacks: (process, deadline)
    next_hb = 0.0
    while True:
        code = child.poll()
        if code is not None:
            break
        t = time.monotonic()
        if t >= next_hb:
            st = proc_stat(child.pid)
            write_json(
                hb_path,
                {
                    "t": now_ms(),
                    "node": node,
                    "pid": child.pid,
                    "state": st[0] if st else None,
                    "cpuTicks": group_cpu_ticks(pgid),
                    "rssPages": st[2] if st else None,
                },
            )
            next_hb = t + heartbeat_s
        try:
            requests = sorted(os.listdir(ctl_dir))
        except OSError:
            requests = []
        for name in requests:
            if name in done_ctl:
                continue
            if name == "stop":
                done_ctl.add(name)
                try:
                    with open(os.path.join(ctl_dir, name)) as f:
                        grace_ms = float(json.load(f).get("graceMs", 10000))
                except (OSError, ValueError, AttributeError):
                    grace_ms = 10000.0
                signal_group(pgid, signal.SIGCONT)  # a stopped (hung) process cannot act on SIGTERM
                signal_group(pgid, signal.SIGTERM)
                stopping["deadline"] = time.monotonic() + grace_ms / 1000.0
            elif name.startswith("rank-%d." % rank) and name.endswith(".NATIVE"):
                done_ctl.add(name)
                try:
                    with open(os.path.join(ctl_dir, name)) as f:
                        req = json.load(f)
                    out_name = str(req.get("file", ""))
                    timeout_s = min(600.0, max(1.0, float(req.get("timeoutMs", 10000)) / 1000.0))
                except (OSError, ValueError, AttributeError, TypeError):
                    out_name, timeout_s = "", 0.0
                if out_name == "rank-%d.native.txt" % rank:
                    started = start_native_stacks(child.pid, os.path.join(attempt_dir, out_name), timeout_s)
                    if started:
                        natives.append(started)
            elif name.startswith("rank-%d." % rank):
                done_ctl.add(name)
                signame = name.rsplit(".", 1)[-1]
                sig = getattr(signal, signame, None)
                if isinstance(sig, signal.Signals) and signame.startswith("SIG"):
                    targets = request_targets(child.pid, sig) if signame in REQUEST_SIGNALS else [child.pid]
                    for target in targets:
                        try:
                            os.kill(target, sig)
                        except OSError:
                            pass
        for proc, deadline in list(natives):
            if proc.poll() is not None:
                natives.remove((proc, deadline))
            elif time.monotonic() > deadline:
                signal_group(proc.pid, signal.SIGKILL)  # a killed tracer detaches: the rank goes on
        if stopping["deadline"] is not None and time.monotonic() > stopping["deadline"]:
            signal_group(pgid, signal.SIGKILL)
            stopping["deadline"] = time.monotonic() + 3600
        time.sleep(0.1)

    # The rank is gone; make sure nothing of its group lingers (a forked helper holding the port).
    signal_group(pgid, signal.SIGKILL)
    exit_code = code if code >= 0 else 128 - code
    write_json(exit_path, {"code": exit_code, "t": now_ms()})
    try:
        os.unlink(hb_path)
    except OSError:
        pass
    return exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
