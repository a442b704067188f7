#!/usr/bin/env bash
# A multi-host Slurm cluster on one machine: one network namespace per virtual host (own network stack and IPv4
# address, a veth into a bridge), munge and slurmctld on the host, one slurmd per namespace, and two partitions standing
# for two pools: `ascend` (a1..a4, Feature=ascend910b) and `nvidia` (n1, n2, Feature=h20). The host's filesystem is the
# cluster's shared storage. Needs root and Debian's slurm-wlm + munge (scripts/bootstrap.sh installs them).
#
#   scripts/testbed.sh up | down | status | env
#   scripts/testbed.sh degrade NODE [--rate 100mbit] [--burst 64kb]   shape NODE's link both ways (tbf)
#   scripts/testbed.sh heal NODE                                       remove the shaping
#   scripts/testbed.sh kill-node NODE                                  link down + SIGKILL every process of the host
#   scripts/testbed.sh revive NODE                                     link up + slurmd again
#
# Everything it creates is named (namespaces sy-<node>, links sy-<node>-h and sybr0, files under $TESTBED_DIR) and
# `down` removes exactly that, by name and pid: the machine is left as it was found. Facts it relies on:
# ../shared/TESTBED.md (nsenter --net, never `ip netns exec`, for slurmd; tbf on both ends of a link; no netem).
set -euo pipefail

TESTBED_DIR="${SWITCHYARD_TESTBED_DIR:-/run/switchyard-testbed}"
BRIDGE=sybr0
SUBNET=10.77.0
HOST_ADDR="$SUBNET.1"
# node:address:partition:feature
NODES=(
  "a1:$SUBNET.11:ascend:ascend910b"
  "a2:$SUBNET.12:ascend:ascend910b"
  "a3:$SUBNET.13:ascend:ascend910b"
  "a4:$SUBNET.14:ascend:ascend910b"
  "n1:$SUBNET.21:nvidia:h20"
  "n2:$SUBNET.22:nvidia:h20"
)
CONF="$TESTBED_DIR/slurm.conf"
# munge: the socket Slurm authenticates through (the machine's default unless SWITCHYARD_TESTBED_MUNGE_SOCKET moves it).
MUNGE_SOCKET="${SWITCHYARD_TESTBED_MUNGE_SOCKET:-/run/munge/munge.socket.2}"
# A munged the testbed starts runs as user munge and writes its pid file into this munge-owned folder; the pid in it is
# what `down` stops. Versions before it asked for $TESTBED_DIR/munged.pid, which munged could not write (root's folder),
# so their munged outlived `down`: `up` adopts such a one and `down` stops it, both found by that pid-file argument.
MUNGE_DIR="$TESTBED_DIR/munge"
MUNGED_PIDFILE="$MUNGE_DIR/munged.pid"
OLD_MUNGED_PIDFILE="$TESTBED_DIR/munged.pid"
# Written when `up` reuses a munged it did not start (the machine's own): its pid, for `down` to leave alone.
MUNGED_FOREIGN="$TESTBED_DIR/munged.foreign"

say() { echo "testbed: $*"; }
die() {
  echo "testbed: $*" >&2
  exit 1
}

node_names() { for n in "${NODES[@]}"; do echo "${n%%:*}"; done; }
node_field() { # node field-index (1 addr, 2 partition, 3 feature)
  local n
  for n in "${NODES[@]}"; do
    if [ "${n%%:*}" = "$1" ]; then
      echo "$n" | cut -d: -f$(($2 + 1))
      return 0
    fi
  done
  return 1
}
check_node() {
  node_field "$1" 1 >/dev/null || die "unknown node '$1' (fix: one of $(node_names | tr '\n' ' '))"
}
netns() { echo "sy-$1"; }
hostveth() { echo "sy-$1-h"; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

require_root() {
  [ "$(id -u)" = 0 ] || die "needs root (network namespaces, a bridge, slurmctld)"
  for tool in ip nsenter slurmctld slurmd munged munge runuser ss sinfo tc; do
    command -v "$tool" >/dev/null || die "$tool not found (fix: apt-get install slurm-wlm munge iproute2; scripts/bootstrap.sh does it)"
  done
}

write_conf() {
  local host
  host="$(hostname)"
  mkdir -p "$TESTBED_DIR/spool" "$TESTBED_DIR/state" "$TESTBED_DIR/log"
  chmod 0755 "$TESTBED_DIR"
  {
    echo "# written by switchyard scripts/testbed.sh; removed by 'testbed.sh down'"
    echo "ClusterName=switchyard-testbed"
    echo "SlurmctldHost=$host($HOST_ADDR)"
    echo "SlurmUser=root"
    echo "SlurmdUser=root"
    echo "AuthType=auth/munge"
    [ "$MUNGE_SOCKET" = /run/munge/munge.socket.2 ] || echo "AuthInfo=socket=$MUNGE_SOCKET"
    echo "StateSaveLocation=$TESTBED_DIR/state"
    echo "SlurmdSpoolDir=$TESTBED_DIR/spool/%n"
    echo "SlurmctldPidFile=$TESTBED_DIR/slurmctld.pid"
    echo "SlurmdPidFile=$TESTBED_DIR/slurmd-%n.pid"
    echo "SlurmctldLogFile=$TESTBED_DIR/log/slurmctld.log"
    echo "SlurmdLogFile=$TESTBED_DIR/log/slurmd-%n.log"
    echo "ProctrackType=proctrack/linuxproc"
    echo "TaskPlugin=task/none"
    echo "SelectType=select/cons_tres"
    echo "SelectTypeParameters=CR_Core"
    echo "SchedulerType=sched/backfill"
    echo "MpiDefault=none"
    echo "ReturnToService=2"
    echo "JobAcctGatherType=jobacct_gather/none"
    echo "AccountingStorageType=accounting_storage/none"
    echo "InactiveLimit=0"
    echo "KillWait=5"
    echo "MinJobAge=300"
    echo "SlurmctldDebug=info"
    echo "SlurmdDebug=info"
    local n name
    for n in "${NODES[@]}"; do
      name="${n%%:*}"
      echo "NodeName=$name NodeAddr=$(node_field "$name" 1) CPUs=2 Feature=$(node_field "$name" 3) State=UNKNOWN"
    done
    echo "PartitionName=ascend Nodes=a[1-4] Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4"
    echo "PartitionName=nvidia Nodes=n[1-2] MaxTime=INFINITE State=UP OverSubscribe=FORCE:4"
  } >"$CONF.new"
  mv "$CONF.new" "$CONF"
  chmod 0644 "$CONF"
}

up_network() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$HOST_ADDR/24" dev "$BRIDGE"
  fi
  ip link set "$BRIDGE" up
  local name ns hv addr
  for name in $(node_names); do
    ns="$(netns "$name")"
    hv="$(hostveth "$name")"
    addr="$(node_field "$name" 1)"
    [ -e "/run/netns/$ns" ] || ip netns add "$ns"
    if ! ip link show "$hv" >/dev/null 2>&1; then
      ip link add "$hv" type veth peer name eth0 netns "$ns"
      ip link set "$hv" master "$BRIDGE"
    fi
    ip link set "$hv" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr replace "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
  done
}

munge_answers() { [ -S "$MUNGE_SOCKET" ] && munge --socket="$MUNGE_SOCKET" -n </dev/null >/dev/null 2>&1; }

# The pid of the munged listening on $MUNGE_SOCKET (empty when none, or when ss cannot say).
munged_on_socket() {
  ss -xlpnH 2>/dev/null | awk -v s="$MUNGE_SOCKET" '$5 == s' | sed -n 's/.*("munged",pid=\([0-9][0-9]*\),.*/\1/p' | head -n 1
}

# Whether pid is a munged this testbed started: its command line names one of the testbed's munged pid files.
munged_ours() {
  local pid="$1" arg
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = munged ] || return 1
  while IFS= read -r -d '' arg; do
    case "$arg" in "--pid-file=$MUNGED_PIDFILE" | "--pid-file=$OLD_MUNGED_PIDFILE") return 0 ;; esac
  done <"/proc/$pid/cmdline"
  return 1
}

up_munge() {
  local pid
  rm -f "$MUNGED_FOREIGN"
  if munge_answers; then
    pid="$(munged_on_socket)"
    if munged_ours "$pid"; then
      if [ "$(cat "$MUNGED_PIDFILE" 2>/dev/null)" != "$pid" ]; then
        install -d -o munge -g munge -m 0700 "$MUNGE_DIR"
        echo "$pid" >"$MUNGED_PIDFILE"
        say "munge: adopted the testbed's munged (pid $pid), started without a pid file by an older testbed.sh; 'down' stops it"
      fi
      return 0
    fi
    echo "${pid:-unknown}" >"$MUNGED_FOREIGN"
    say "munge: reusing the munged already running on $MUNGE_SOCKET (pid ${pid:-unknown}), which the testbed did not start; 'down' leaves it running"
    return 0
  fi
  local sockdir
  sockdir="$(dirname "$MUNGE_SOCKET")"
  mkdir -p "$sockdir"
  chown munge:munge "$sockdir"
  chmod 0755 "$sockdir"
  install -d -o munge -g munge -m 0700 "$MUNGE_DIR"
  rm -f "$MUNGED_PIDFILE"
  runuser -u munge -- munged --socket="$MUNGE_SOCKET" --pid-file="$MUNGED_PIDFILE" ||
    die "munged did not start (fix: see /var/log/munge/munged.log)"
  local deadline=$((SECONDS + 10))
  until [ -s "$MUNGED_PIDFILE" ] && munge_answers; do
    [ $SECONDS -lt $deadline ] || die "munged started but wrote no pid file or does not answer on $MUNGE_SOCKET within 10 s (fix: see /var/log/munge/munged.log)"
    sleep 0.1
  done
  pid="$(cat "$MUNGED_PIDFILE")"
  munged_ours "$pid" || die "$MUNGED_PIDFILE names pid $pid, which is not the munged just started (fix: see /var/log/munge/munged.log)"
  say "munge: started munged (pid $pid) on $MUNGE_SOCKET; 'down' stops it"
}

# Stops the munged the testbed started (its pid file, or, from an older version without one, the munged on the socket
# whose command line names the testbed's pid file); a munged it reused is left running.
down_munge() {
  local pid=""
  [ -f "$MUNGED_PIDFILE" ] && pid="$(cat "$MUNGED_PIDFILE")"
  munged_ours "$pid" || pid="$(munged_on_socket)"
  if munged_ours "$pid"; then
    stop_pid "$pid"
    say "munge: stopped the testbed's munged (pid $pid)"
  elif [ -f "$MUNGED_FOREIGN" ]; then
    say "munge: left the munged the testbed did not start running (pid $(cat "$MUNGED_FOREIGN"))"
  fi
  rm -f "$MUNGED_PIDFILE" "$OLD_MUNGED_PIDFILE" "$MUNGED_FOREIGN"
  rmdir "$MUNGE_DIR" 2>/dev/null || true
}

start_slurmd() {
  local name="$1"
  pid_alive "$TESTBED_DIR/slurmd-$name.pid" && return 0
  mkdir -p "$TESTBED_DIR/spool/$name"
  # nsenter enters only the network namespace; `ip netns exec` would remount /sys and hide the cgroup mounts.
  SLURM_CONF="$CONF" nsenter --net="/run/netns/$(netns "$name")" slurmd -f "$CONF" -N "$name"
}

wait_idle() {
  local deadline=$((SECONDS + 60)) states
  while [ $SECONDS -lt $deadline ]; do
    states="$(SLURM_CONF="$CONF" sinfo -h -N -o '%N %T' 2>/dev/null | sort -u || true)"
    if [ -n "$states" ] && ! echo "$states" | grep -qvE ' (idle|mixed|allocated)$'; then
      [ "$(echo "$states" | awk '{print $1}' | sort -u | wc -l)" = "${#NODES[@]}" ] && return 0
    fi
    sleep 0.5
  done
  echo "$states" >&2
  die "nodes did not come up idle within 60 s (fix: see $TESTBED_DIR/log/)"
}

cmd_up() {
  require_root
  mkdir -p "$TESTBED_DIR"
  write_conf
  up_network
  up_munge
  if ! pid_alive "$TESTBED_DIR/slurmctld.pid"; then
    SLURM_CONF="$CONF" slurmctld -f "$CONF" -i
  fi
  local name
  for name in $(node_names); do start_slurmd "$name"; done
  wait_idle
  say "up: ${#NODES[@]} hosts on $BRIDGE ($HOST_ADDR/24), partitions ascend (a1-a4) and nvidia (n1-n2)"
  say "use it with: export SLURM_CONF=$CONF"
}

# SIGTERM, up to 5 s to exit, then SIGKILL.
stop_pid() {
  local pid="$1"
  kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

kill_pidfile() {
  local f="$1"
  [ -f "$f" ] || return 0
  stop_pid "$(cat "$f")"
  rm -f "$f"
}

cmd_down() {
  require_root
  local name ns pid
  for name in $(node_names); do
    ns="$(netns "$name")"
    kill_pidfile "$TESTBED_DIR/slurmd-$name.pid"
    if [ -e "/run/netns/$ns" ]; then
      # Whatever still runs in the host's namespace (rank processes of srun steps) belongs to the testbed.
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
      ip netns del "$ns" 2>/dev/null || true
    fi
    ip link del "$(hostveth "$name")" 2>/dev/null || true
  done
  kill_pidfile "$TESTBED_DIR/slurmctld.pid"
  down_munge
  ip link del "$BRIDGE" 2>/dev/null || true
  case "$TESTBED_DIR" in /run/switchyard-testbed | /tmp/*) rm -rf "$TESTBED_DIR" ;; *) rm -f "$CONF" ;; esac
  say "down: namespaces, links, daemons and $TESTBED_DIR removed"
}

cmd_status() {
  if [ ! -f "$CONF" ]; then
    say "down"
    return 3
  fi
  SLURM_CONF="$CONF" sinfo -N -o '%N %P %T %f %E' || true
  local name hv
  for name in $(node_names); do
    hv="$(hostveth "$name")"
    if tc qdisc show dev "$hv" 2>/dev/null | grep -q tbf; then say "$name link degraded: $(tc qdisc show dev "$hv" | grep tbf)"; fi
  done
  local pid
  pid="$(munged_on_socket)"
  if [ -z "$pid" ]; then say "munge: no munged on $MUNGE_SOCKET"
  elif munged_ours "$pid"; then say "munge: the testbed's munged (pid $pid); 'down' stops it"
  else say "munge: a munged the testbed did not start (pid $pid); 'down' leaves it running"
  fi
}

cmd_degrade() {
  local name="${1:-}" rate=100mbit burst=64kb
  [ -n "$name" ] || die "degrade needs a node (fix: testbed.sh degrade a2 --rate 100mbit)"
  shift
  check_node "$name"
  while [ $# -gt 0 ]; do
    case "$1" in
      --rate) rate="${2:?--rate needs a value like 100mbit}"; shift 2 ;;
      --burst) burst="${2:?--burst needs a value like 64kb or 40mb}"; shift 2 ;;
      *) die "unknown option '$1' (fix: --rate R, --burst B)" ;;
    esac
  done
  [[ "$rate" =~ ^[0-9]+(bit|kbit|mbit|gbit)$ ]] || die "bad --rate '$rate' (fix: e.g. 100mbit)"
  [[ "$burst" =~ ^[0-9]+(b|kb|mb)$ ]] || die "bad --burst '$burst' (fix: e.g. 64kb)"
  # Both ends: the host-side veth shapes traffic towards the host, eth0 inside the namespace traffic leaving it.
  tc qdisc replace dev "$(hostveth "$name")" root tbf rate "$rate" burst "$burst" latency 2s
  ip netns exec "$(netns "$name")" tc qdisc replace dev eth0 root tbf rate "$rate" burst "$burst" latency 2s
  say "$name: link shaped to $rate (burst $burst) both ways"
}

cmd_heal() {
  local name="${1:?heal needs a node}"
  check_node "$name"
  tc qdisc del dev "$(hostveth "$name")" root 2>/dev/null || true
  ip netns exec "$(netns "$name")" tc qdisc del dev eth0 root 2>/dev/null || true
  say "$name: link healed"
}

cmd_kill_node() {
  local name="${1:?kill-node needs a node}" pid
  check_node "$name"
  ip link set "$(hostveth "$name")" down
  for pid in $(ip netns pids "$(netns "$name")"); do kill -9 "$pid" 2>/dev/null || true; done
  rm -f "$TESTBED_DIR/slurmd-$name.pid"
  say "$name: host killed (link down, every process in its namespace SIGKILLed)"
}

cmd_revive() {
  local name="${1:?revive needs a node}"
  check_node "$name"
  ip link set "$(hostveth "$name")" up
  start_slurmd "$name"
  say "$name: host revived (link up, slurmd started)"
}

# Sourced (tests call up_munge and down_munge with their own SWITCHYARD_TESTBED_DIR and munge socket): define only.
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  degrade) shift; require_root; cmd_degrade "$@" ;;
  heal) shift; require_root; cmd_heal "$@" ;;
  kill-node) shift; require_root; cmd_kill_node "$@" ;;
  revive) shift; require_root; cmd_revive "$@" ;;
  *)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    [ -z "${1:-}" ] || exit 2
    ;;
esac
