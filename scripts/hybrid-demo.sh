#!/usr/bin/env bash
# The hybrid, end to end (examples/hybrid/README.md): train char-GPT on local-nvidia, serve its newest verified
# checkpoint on local-ascend, watch the served model improve as training goes on (a sample at two checkpoints), then
# kill a replica in the middle of a stream and see the gateway fail over. Everything runs under a fresh home, which
# the script prints; it stops what it started at the end (--keep leaves the server, replicas and gateway running).
#   bash scripts/hybrid-demo.sh [--keep] [--home DIR] [--port GATEWAY_PORT] [--server-port PORT]
# The server listens on a fixed port (8290) so that the gateway finds it again after a restart of the control plane.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
keep=0
home="/tmp/sy-hybrid-$(date +%s)"
port=8280
server_port=8290
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) keep=1 ;;
    --home) home="$2"; shift ;;
    --port) port="$2"; shift ;;
    --server-port) server_port="$2"; shift ;;
    *) echo "hybrid-demo: unknown option $1 (fix: --keep, --home DIR, --port N, --server-port N)" >&2; exit 2 ;;
  esac
  shift
done
(cd "$root" && bash scripts/bootstrap.sh >/dev/null)
sy() { node "$root/bin/switchyard.js" --home "$home" "$@"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
say() { printf '\n== %s\n' "$*"; }
gateway_pid=""
cleanup() {
  if [ "$keep" = 1 ]; then
    echo "left running (--keep): server, replicas and gateway (pid ${gateway_pid:-none}) under $home"
    return
  fi
  [ -n "$gateway_pid" ] && kill "$gateway_pid" 2>/dev/null || true
  sy undeploy chargpt >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do
    [ "$(sy --json services 2>/dev/null | json 'len(d)' 2>/dev/null || echo 0)" = 0 ] && break
    sleep 0.5
  done
  sy cancel chargpt >/dev/null 2>&1 || true
  sy down >/dev/null 2>&1 || true
}
trap cleanup EXIT

say "home $home: the server, with the hybrid cluster (local-nvidia trains, local-ascend serves)"
sy up --cluster "$root/examples/hybrid/cluster.yaml" --port "$server_port"

say "train: examples/hybrid/job.yaml on local-nvidia (400 steps, a verified checkpoint every 50)"
sy run "$root/examples/hybrid/job.yaml"

say "serve: deploy examples/hybrid/services.yaml (2 replicas on local-ascend, model: { fromJob: chargpt })"
sy deploy "$root/examples/hybrid/services.yaml"

say "the gateway: its own process, following the server's live backend set (port $port)"
url="$(python3 -c "import json; print(json.load(open('$home/server.json'))['url'])")"
node "$root/bin/switchyard.js" --home "$home" gateway --control-plane "$url" --port "$port" --log-level warn \
  >"$home/gateway.log" 2>&1 &
gateway_pid=$!

ready_count() { sy --json services | json "d[0]['ready'] if d else 0"; }
sample() {
  curl -sS --max-time 60 "http://127.0.0.1:$port/v1/completions" -H 'content-type: application/json' \
    -d '{"model":"chargpt","prompt":"The old king ","max_tokens":80,"temperature":0.8,"seed":7}' |
    json "d['choices'][0]['text'] if 'choices' in d else d"
}
steps_served() {
  sy --json services describe chargpt |
    json "' '.join(sorted(str(r['checkpointStep']) for r in d['replicas'] if r['state']=='ready'))"
}

say "waiting for the first verified checkpoint and two ready replicas"
for _ in $(seq 1 600); do
  [ "$(ready_count)" = 2 ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v1/models")" = 200 ] && break
  sleep 1
done
sy services
first="$(steps_served)"
echo "replicas serve step(s): $first"
echo "sample at step ${first%% *}:"
sample | sed 's/^/    /'

say "training goes on: waiting until both replicas were rolled onto a later checkpoint"
for _ in $(seq 1 900); do
  now="$(steps_served 2>/dev/null || true)"
  set -- $now
  if [ $# = 2 ] && [ "$1" -gt "${first%% *}" ] && [ "$2" -gt "${first%% *}" ]; then break; fi
  sleep 1
done
sy services describe chargpt
echo "sample at step ${1:-?}:"
sample | sed 's/^/    /'

say "a replica killed in the middle of a stream: the gateway fails over, the server restarts it"
curl -sSN --max-time 60 "http://127.0.0.1:$port/v1/completions" -H 'content-type: application/json' \
  -d '{"model":"chargpt","prompt":"The old king ","max_tokens":200,"stream":true}' -D "$home/stream.headers" \
  >"$home/stream.sse" &
stream_pid=$!
sleep 1
# The replica that serves this stream (the gateway names it in x-switchyard-backend: <service>/<slot>/<job id>).
victim="$(grep -i x-switchyard-backend "$home/stream.headers" | tr -d '\r' | awk '{print $2}' | awk -F/ '{print $NF}')"
sy chaos "$victim" kill-rank --rank 0
wait "$stream_pid" || true
echo "the stream that was running: served by $(grep -i x-switchyard-backend "$home/stream.headers" | tr -d '\r' | cut -d' ' -f2)"
if grep -q '\[DONE\]' "$home/stream.sse"; then
  echo "    it ended with [DONE] (the killed replica was not the one streaming, or it finished first)"
else
  echo "    it ended with an explicit error event, never a silent truncation: $(grep -o '"error":{[^}]*}' "$home/stream.sse" | head -1)"
fi
echo "the next request, right after the kill:"
sample | sed 's/^/    /'
sleep 3
sy events "$victim" | tail -6

say "the serving ledger: replica-seconds by state, per pool"
sy services ledger
echo
echo "more: node $root/bin/switchyard.js --home $home services describe chargpt"
echo "      node $root/bin/switchyard.js --home $home report chargpt        # the training run's goodput"
echo "      node $root/bin/switchyard.js --home $home dashboard             # jobs, services and pools side by side"
