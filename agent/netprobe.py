"""switchyard network probe: sustained TCP throughput between the hosts of a set (stdlib only, Python >= 3.7).

Started once on every host of the set at about the same time (on Slurm: one srun step, one task per host):

  netprobe.py --hosts a1=10.77.0.11:7101,a2=10.77.0.12:7101,... [--self a2] [--mode full|preflight]
              [--bytes N] [--seconds S] [--pattern pairs|ring] [--timeout S]
  netprobe.py --port-base 7101 ...     hosts from SWITCHYARD_NODE_ADDRS (name=addr,...: what the executor's
                                       runOnNodes sets), host i listening on port 7101 + i

Every host listens on its own address and port. The first host of the list coordinates: it waits until every host
answers, then asks the senders one transfer at a time (never two at once, so transfers do not share a link or the
CPUs and slow each other down), and prints one JSON line per transfer, then a summary:

  {"kind": "pair", "from": "a1", "to": "a2", "bytes": B, "seconds": S, "gbit_s": avg, "sustained_gbit_s": tail}
  {"kind": "error", "from": "a1", "to": "a2", "error": "..."}     (the pair could not be measured: counts as slow)
  {"kind": "done", "mode": "full", "pairs": N, "seconds": S}

The other hosts print nothing on success and exit when the coordinator says so (or at --timeout).

A link that collapses only under load (a token bucket with a large burst lets short transfers through at full speed)
is seen by moving enough data for long enough: a full probe sends for 2 s per pair (at most 8 GiB), and the rate that
counts is the *sustained* one, measured by the receiver over the second half of the transfer. The pre-flight mode
(before an attempt is launched) is cut short: 0.25 s per pair (at most 2 GiB). It finds a link that has already
collapsed, and one whose burst allowance is smaller than what a healthy link moves in an eighth of a second (a 40 MB
burst on the testbed); a larger burst still looks fast to it, and only the full probe sees it run dry.

Pairs: every pair of hosts once (direction alternating, so every host sends and receives), or with --pattern ring
(the default above 8 hosts) each host to the next: a slow host then shows as two adjacent slow transfers.
"""

import json
import os
import socket
import sys
import threading
import time

BLOCK = 1 << 20
# mode: (volume cap per pair, time per pair). Time, not volume, sets a transfer's length: a short transfer's rate is
# mostly scheduling noise (8 MiB over 3-30 ms on a loaded host), and what a token bucket's burst lets through is
# (rate x time) at full speed, so a longer transfer sees a larger burst run dry.
MODES = {"full": (8 << 30, 2.0), "preflight": (2 << 30, 0.25)}
MAX_BYTES = 64 << 30
MAX_SECONDS = 60.0


def log(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def parse_hosts(text, port_base=None):
    """NAME=ADDR:PORT,...; with port_base, NAME=ADDR,... and host i listens on port_base + i."""
    hosts = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, addr = item.partition("=")
        if port_base is not None and sep and name and addr:
            hosts.append((name, addr, port_base + len(hosts)))
            continue
        host, sep2, port = addr.rpartition(":")
        if not sep or not sep2 or not name or not host or not port.isdigit():
            raise ValueError("bad host %r (fix: NAME=ADDR:PORT, e.g. a1=10.77.0.11:7101)" % item)
        hosts.append((name, host, int(port)))
    if any(not (0 < h[2] < 65536) for h in hosts):
        raise ValueError("a port is out of range (fix: a --port-base or ports between 1024 and 65535)")
    names = [h[0] for h in hosts]
    if len(set(names)) != len(names):
        raise ValueError("a host is named twice in --hosts")
    return hosts


def schedule(names, pattern):
    n = len(names)
    if pattern == "ring":
        return [(names[i], names[(i + 1) % n]) for i in range(n)] if n > 2 else schedule(names, "pairs")
    out = []
    for i in range(n):
        for j in range(i + 1, n):
            out.append((names[i], names[j]) if (i + j) % 2 == 0 else (names[j], names[i]))
    return out


def recv_line(conn, limit=4096):
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            raise ValueError("control line too long")
    return data.decode("utf-8", "replace").strip()


def receive(conn):
    """Reads until EOF; the rate over the whole transfer and over its second half (by the receiver's clock)."""
    marks = []  # (t, bytes so far)
    total = 0
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    while True:
        n = conn.recv_into(view)
        if n == 0:
            break
        total += n
        marks.append((time.monotonic(), total))
    if len(marks) < 2:
        return {"bytes": total, "seconds": 0.0, "gbit_s": None, "sustained_gbit_s": None}
    t0 = marks[0][0]
    t1 = marks[-1][0]
    dur = max(t1 - t0, 1e-6)
    # The second half: from the last mark before the midpoint to the end (marks are when data arrived).
    mid = t0 + dur / 2
    t_mid, b_mid = marks[0]
    for t, b in marks:
        if t >= mid:
            break
        t_mid, b_mid = t, b
    tail_bytes = total - b_mid
    tail_s = max(t1 - t_mid, 1e-6)
    return {
        "bytes": total,
        "seconds": round(dur, 4),
        "gbit_s": round(total * 8 / dur / 1e9, 4),
        "sustained_gbit_s": round(tail_bytes * 8 / tail_s / 1e9, 4),
    }


def send(addr, port, max_bytes, max_seconds, timeout):
    conn = socket.create_connection((addr, port), timeout=timeout)
    try:
        conn.settimeout(timeout)
        conn.sendall(b"DATA\n")
        block = b"\0" * BLOCK
        sent = 0
        start = time.monotonic()
        while sent < max_bytes and time.monotonic() - start < max_seconds:
            conn.sendall(block)
            sent += BLOCK
        conn.shutdown(socket.SHUT_WR)
        reply = recv_line(conn)
        return json.loads(reply)
    finally:
        conn.close()


class Server(threading.Thread):
    def __init__(self, me, hosts, opts):
        super().__init__(daemon=True)
        self.me = me
        self.hosts = {h[0]: h for h in hosts}
        self.opts = opts
        self.quit = threading.Event()
        _, addr, port = self.hosts[me]
        self.sock = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((addr, port))
        self.sock.listen(16)
        self.sock.settimeout(0.5)

    def run(self):
        while not self.quit.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn):
        try:
            conn.settimeout(self.opts["timeout"])
            line = recv_line(conn)
            if line == "PING":
                conn.sendall(b"PONG\n")
            elif line == "DATA":
                conn.sendall((json.dumps(receive(conn)) + "\n").encode())
            elif line.startswith("SEND "):
                # SEND TARGET BYTES SECONDS: the coordinator's sizes govern (every host may not share its options).
                parts = line.split(" ")
                if len(parts) != 4 or parts[1] not in self.hosts:
                    raise ValueError("bad request %r" % line)
                _, addr, port = self.hosts[parts[1]]
                max_bytes = min(MAX_BYTES, max(BLOCK, int(parts[2])))
                max_seconds = min(MAX_SECONDS, max(0.05, float(parts[3])))
                try:
                    result = send(addr, port, max_bytes, max_seconds, max_seconds * 4 + 10)
                except (OSError, ValueError) as err:
                    result = {"error": "%s: %s" % (type(err).__name__, err)}
                conn.sendall((json.dumps(result) + "\n").encode())
            elif line == "QUIT":
                conn.sendall(b"BYE\n")
                self.quit.set()
        except (OSError, ValueError):
            pass
        finally:
            conn.close()


def control(host, line, timeout):
    _, addr, port = host
    conn = socket.create_connection((addr, port), timeout=timeout)
    try:
        conn.settimeout(timeout)
        conn.sendall((line + "\n").encode())
        return recv_line(conn, limit=1 << 16)
    finally:
        conn.close()


def coordinate(hosts, opts, deadline):
    names = [h[0] for h in hosts]
    by_name = {h[0]: h for h in hosts}
    started = time.monotonic()
    # Barrier: every host's listener answers (the others may start a moment later).
    waiting = set(names)
    while waiting and time.monotonic() < deadline:
        for name in sorted(waiting):
            try:
                if control(by_name[name], "PING", 2.0) == "PONG":
                    waiting.discard(name)
            except OSError:
                pass
        if waiting:
            time.sleep(0.1)
    for name in sorted(waiting):
        log({"kind": "error", "from": names[0], "to": name, "error": "host did not answer within the timeout"})
    measured = 0
    for frm, to in schedule(names, opts["pattern"]):
        if frm in waiting or to in waiting:
            log({"kind": "error", "from": frm, "to": to, "error": "a host of the pair did not answer"})
            continue
        if time.monotonic() > deadline:
            log({"kind": "error", "from": frm, "to": to, "error": "probe timeout reached before this pair"})
            continue
        try:
            request = "SEND %s %d %s" % (to, opts["bytes"], opts["seconds"])
            result = json.loads(control(by_name[frm], request, opts["pair_timeout"] + 5))
        except (OSError, ValueError) as err:
            result = {"error": "%s: %s" % (type(err).__name__, err)}
        if "error" in result or result.get("sustained_gbit_s") is None:
            log({"kind": "error", "from": frm, "to": to, "error": result.get("error", "no data arrived")})
        else:
            measured += 1
            log(dict({"kind": "pair", "from": frm, "to": to}, **result))
    for name in names[1:]:
        if name not in waiting:
            try:
                control(by_name[name], "QUIT", 2.0)
            except OSError:
                pass
    log(
        {
            "kind": "done",
            "mode": opts["mode"],
            "pattern": opts["pattern"],
            "pairs": measured,
            "bytes_per_pair": opts["bytes"],
            "seconds_per_pair": opts["seconds"],
            "seconds": round(time.monotonic() - started, 3),
        }
    )


def main(argv):
    opts = {"mode": "full", "bytes": None, "seconds": None, "pattern": None, "timeout": 120.0}
    hosts_text, me, port_base = None, None, None
    i = 0
    try:
        while i < len(argv):
            key = argv[i]
            val = argv[i + 1] if i + 1 < len(argv) else None
            if val is None:
                raise ValueError("%s needs a value" % key)
            if key == "--hosts":
                hosts_text = val
            elif key == "--port-base":
                port_base = int(val)
            elif key == "--self":
                me = val
            elif key == "--mode":
                if val not in MODES:
                    raise ValueError("--mode is full or preflight")
                opts["mode"] = val
            elif key == "--bytes":
                opts["bytes"] = int(val)
            elif key == "--seconds":
                opts["seconds"] = float(val)
            elif key == "--pattern":
                if val not in ("pairs", "ring"):
                    raise ValueError("--pattern is pairs or ring")
                opts["pattern"] = val
            elif key == "--timeout":
                opts["timeout"] = float(val)
            else:
                raise ValueError("unknown option %s" % key)
            i += 2
        if not hosts_text and port_base is not None:
            hosts_text = os.environ.get("SWITCHYARD_NODE_ADDRS", "")
        if not hosts_text:
            raise ValueError("--hosts, or --port-base with SWITCHYARD_NODE_ADDRS set, is required")
        hosts = parse_hosts(hosts_text, port_base)
        if len(hosts) < 2:
            raise ValueError("--hosts needs two hosts or more")
        default_bytes, default_seconds = MODES[opts["mode"]]
        opts["bytes"] = min(MAX_BYTES, max(BLOCK, opts["bytes"] or default_bytes))
        opts["seconds"] = min(MAX_SECONDS, max(0.05, opts["seconds"] or default_seconds))
        opts["timeout"] = min(3600.0, max(1.0, opts["timeout"]))
        opts["pattern"] = opts["pattern"] or ("ring" if len(hosts) > 8 else "pairs")
        # A transfer may run past its time cap while the queue drains; it never waits longer than this.
        opts["pair_timeout"] = opts["seconds"] * 4 + 10
        me = me or os.environ.get("SLURMD_NODENAME") or os.environ.get("SWITCHYARD_NODE")
        if me not in [h[0] for h in hosts]:
            raise ValueError("this host (%s) is not in --hosts (fix: --self NAME)" % me)
    except ValueError as err:
        sys.stderr.write("netprobe: %s\n" % err)
        return 2

    deadline = time.monotonic() + opts["timeout"]
    try:
        server = Server(me, hosts, opts)
    except OSError as err:
        _, addr, port = next(h for h in hosts if h[0] == me)
        sys.stderr.write("netprobe: cannot listen on %s:%d: %s\n" % (addr, port, err))
        return 1
    server.start()
    if me == hosts[0][0]:
        coordinate(hosts, opts, deadline)
        server.quit.set()
    else:
        while not server.quit.is_set() and time.monotonic() < deadline:
            server.quit.wait(0.2)
        # Let the coordinator's QUIT reply go out.
        time.sleep(0.05)
    server.sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
