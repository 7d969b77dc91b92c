#!/usr/bin/env bash
# A real local cluster on one machine: a 3-member etcd cluster on the seed's client ports
# (127.0.0.1:5001-5003) and 3 agents simulating hosts n1..n3 on 127.0.0.11-13, each with its
# own DNS (:53), nginx (:80) and API (:7400) on its address.  `down` removes all of it.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${DAPRDOCKR_CLUSTER_DIR:-/tmp/daprdockr-cluster}
DNS_PORT=${DAPRDOCKR_CLUSTER_DNS_PORT:-53}
HTTP_PORT=${DAPRDOCKR_CLUSTER_HTTP_PORT:-80}
API_PORT=${DAPRDOCKR_CLUSTER_API_PORT:-7400}
TTL=${DAPRDOCKR_CLUSTER_TTL:-5}
PY=${PY:-$PWD/.venv/bin/python}
CLIENT_BASE=${DAPRDOCKR_CLUSTER_ETCD_BASE:-5000}   # etcd clients on BASE+1..3 (seed: 5001-5003)
PEER_BASE=$((CLIENT_BASE + 10))                     # etcd peers on BASE+11..13
NODE_PREFIX=${DAPRDOCKR_CLUSTER_NODE_PREFIX:-n}
ETCD_EPS="http://127.0.0.1:$((CLIENT_BASE + 1)),http://127.0.0.1:$((CLIENT_BASE + 2)),http://127.0.0.1:$((CLIENT_BASE + 3))"
INITIAL="e1=http://127.0.0.1:$((PEER_BASE + 1)),e2=http://127.0.0.1:$((PEER_BASE + 2)),e3=http://127.0.0.1:$((PEER_BASE + 3))"

stop_pidfile() {  # stop_pidfile FILE: TERM, wait up to 25 s, then KILL
  local f=$1 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 250); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

start_etcd() {  # start_etcd N
  local i=$1
  mkdir -p "$DIR/etcd"
  nohup etcd --name "e$i" --data-dir "$DIR/etcd/e$i" \
    --listen-client-urls "http://127.0.0.1:$((CLIENT_BASE + i))" \
    --advertise-client-urls "http://127.0.0.1:$((CLIENT_BASE + i))" \
    --listen-peer-urls "http://127.0.0.1:$((PEER_BASE + i))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((PEER_BASE + i))" \
    --initial-cluster "$INITIAL" --initial-cluster-state new --initial-cluster-token daprdockr-local \
    --heartbeat-interval 50 --election-timeout 500 \
    --quota-backend-bytes 2147483648 >"$DIR/etcd-e$i.log" 2>&1 &  # (README "etcd housekeeping")
  echo $! >"$DIR/etcd-e$i.pid"
}

start_agent() {  # start_agent N
  local i=$1 ip="127.0.0.1$1"
  nohup "$PY" -m daprdockr --etcd "$ETCD_EPS" ${DAPRDOCKR_CLUSTER_AGENT_FLAGS:-} agent --node-id "$NODE_PREFIX$i" --advertise-ip "$ip" --ttl "$TTL" \
    --state-dir "$DIR/state" --dns-listen "$ip:$DNS_PORT" --http-listen "$ip:$HTTP_PORT" \
    --api-listen "$ip:$API_PORT" >"$DIR/agent-n$i.log" 2>&1 &
  echo $! >"$DIR/agent-n$i.pid"
}

up() {
  mkdir -p "$DIR"
  for i in 1 2 3; do
    if [ -f "$DIR/etcd-e$i.pid" ] && kill -0 "$(cat "$DIR/etcd-e$i.pid")" 2>/dev/null; then continue; fi
    start_etcd "$i"
  done
  for _ in $(seq 100); do
    ETCDCTL_API=3 etcdctl --endpoints "$ETCD_EPS" --command-timeout=1s endpoint health >/dev/null 2>&1 && break
    sleep 0.2
  done
  ETCDCTL_API=3 etcdctl --endpoints "$ETCD_EPS" --command-timeout=2s endpoint health >/dev/null 2>&1
  for i in 1 2 3; do
    if [ -f "$DIR/agent-n$i.pid" ] && kill -0 "$(cat "$DIR/agent-n$i.pid")" 2>/dev/null; then continue; fi
    start_agent "$i"
  done
  for _ in $(seq 100); do
    n=$("$PY" -m daprdockr --etcd "$ETCD_EPS" nodes --json 2>/dev/null | grep -c '"node"' || true)
    [ "$n" = 3 ] && break
    sleep 0.2
  done
  cat <<MSG
DaprDockr local cluster is up (state in $DIR):
  etcd:   $ETCD_EPS
  agents: n1 127.0.0.11, n2 127.0.0.12, n3 127.0.0.13  (DNS :$DNS_PORT, HTTP :$HTTP_PORT, API :$API_PORT)
Try:
  .venv/bin/daprdockrcmd -svc web.myapp -set -image daprdockr-test/busybox:latest -instances 6 \\
      -cmd "httpd -f -p 8080 -h /www" -http-host web.example.com -http-port 8080
  .venv/bin/daprdockr --etcd $ETCD_EPS ps
  dig @127.0.0.11 -p $DNS_PORT 1.web.myapp.container +short
  curl -H 'Host: web.example.com' http://127.0.0.12:$HTTP_PORT/
  make cluster-down
MSG
}

kill_nginx_group() {  # the nginx an agent killed with SIGKILL left behind: its process group
  local f=$1 pgid
  [ -f "$f" ] || return 0
  pgid=$(cat "$f" 2>/dev/null) || return 0
  case "$pgid" in ''|*[!0-9]*) return 0 ;; esac
  if grep -qa nginx "/proc/$pgid/cmdline" 2>/dev/null || pgrep -g "$pgid" -x nginx >/dev/null 2>&1; then
    kill -KILL -- "-$pgid" 2>/dev/null || true
  fi
}

down() {
  for i in 1 2 3; do stop_pidfile "$DIR/agent-n$i.pid"; done
  for i in 1 2 3; do kill_nginx_group "$DIR/state/$NODE_PREFIX$i/nginx/nginx.pid"; done
  for i in 1 2 3; do stop_pidfile "$DIR/etcd-e$i.pid"; done
  ids=$(for i in 1 2 3; do docker ps -aq --filter "label=daprdockr.node=$NODE_PREFIX$i"; done 2>/dev/null) || true
  [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
  rm -rf "$DIR"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  start-agent) start_agent "$2" ;;
  start-etcd) start_etcd "$2" ;;
  *) echo "usage: $0 up|down|start-agent N|start-etcd N" >&2; exit 2 ;;
esac
