#!/usr/bin/env bash
# A real local DaprDockr cluster on one machine, for development and manual testing.
#
#   scripts/cluster.sh up      # 3 etcd members + 3 agents (simulated hosts n1, n2, n3)
#   scripts/cluster.sh down    # stop everything, remove the nodes' containers and all data
#   scripts/cluster.sh status  # what is running
#
# etcd: members m1..m3, clients on 127.0.0.1:5001/5002/5003 (the seed's default endpoints),
# peers on 127.0.0.1:5101/5102/5103.  Agents n1..n3 advertise 127.0.0.11/12/13 and each serves
# DNS on <ip>:53 (5353 when port 53 is taken on those addresses), nginx on <ip>:80 and the API
# on <ip>:7400.  Every pid file, log and data dir lives under the state dir.  Both `up` and
# `down` are idempotent: `up` starts only what is not running, `down` tolerates anything
# missing.
#
# Environment (all optional):
#   DAPRDOCKR_CLUSTER_DIR        state dir (default /tmp/daprdockr-cluster)
#   DAPRDOCKR_CLUSTER_DNS_PORT   DNS port (default: 53 if free on 127.0.0.11-13, else 5353)
#   DAPRDOCKR_CLUSTER_HTTP_PORT  nginx port (default 80)
#   DAPRDOCKR_CLUSTER_API_PORT   agent API port (default 7400)
#   DAPRDOCKR_CLUSTER_TTL        agent lease TTL in seconds (default 5)
#   DAPRDOCKR_DNS_UPSTREAM       forwarder for non-.container names (default: /etc/resolv.conf)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DIR=${DAPRDOCKR_CLUSTER_DIR:-/tmp/daprdockr-cluster}
HTTP_PORT=${DAPRDOCKR_CLUSTER_HTTP_PORT:-80}
API_PORT=${DAPRDOCKR_CLUSTER_API_PORT:-7400}
TTL=${DAPRDOCKR_CLUSTER_TTL:-5}
PREFIX=${DAPRDOCKR_PREFIX:-/daprdockr}
NODES=(n1 n2 n3)
IPS=(127.0.0.11 127.0.0.12 127.0.0.13)
MEMBERS=(m1 m2 m3)
CLIENT_PORTS=(5001 5002 5003)
PEER_PORTS=(5101 5102 5103)
ENDPOINTS=http://127.0.0.1:5001,http://127.0.0.1:5002,http://127.0.0.1:5003
PY=$ROOT/.venv/bin/python
export ETCDCTL_API=3

say() { printf 'cluster: %s\n' "$*"; }
die() { printf 'cluster: %s\n' "$*" >&2; exit 1; }

# pid of a running process recorded in pidfile $1 whose command line contains $2, or nothing.
live_pid() {
  local file=$1 expect=$2 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file" 2>/dev/null || true)
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  [ -r "/proc/$pid/cmdline" ] || return 0
  if tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$expect"; then echo "$pid"; fi
}

# SIGTERM, wait up to $3 seconds, then SIGKILL the process of pidfile $1 (checked with $2).
stop_pid() {
  local file=$1 expect=$2 wait_s=$3 pid
  pid=$(live_pid "$file" "$expect")
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq $((wait_s * 10))); do
      [ -d "/proc/$pid" ] || break
      sleep 0.1
    done
    if [ -d "/proc/$pid" ]; then
      say "pid $pid ($expect) ignored SIGTERM for ${wait_s}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$file"
}

# True when UDP and TCP port $1 can be bound on every simulated host address.
port_free_everywhere() {
  python3 - "$1" "${IPS[@]}" <<'EOF'
import socket, sys
port = int(sys.argv[1])
for ip in sys.argv[2:]:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((ip, port))
        except OSError:
            sys.exit(1)
        finally:
            s.close()
EOF
}

dns_port() {
  if [ -n "${DAPRDOCKR_CLUSTER_DNS_PORT:-}" ]; then echo "$DAPRDOCKR_CLUSTER_DNS_PORT"; return; fi
  if [ -f "$DIR/dns-port" ]; then cat "$DIR/dns-port"; return; fi
  if port_free_everywhere 53; then echo 53; else echo 5353; fi
}

etcd_up() {
  local initial="" i
  for i in 0 1 2; do initial+="${initial:+,}${MEMBERS[i]}=http://127.0.0.1:${PEER_PORTS[i]}"; done
  for i in 0 1 2; do
    local m=${MEMBERS[i]} client=http://127.0.0.1:${CLIENT_PORTS[i]} peer=http://127.0.0.1:${PEER_PORTS[i]}
    if [ -n "$(live_pid "$DIR/etcd-$m.pid" etcd)" ]; then say "etcd $m already running"; continue; fi
    mkdir -p "$DIR/etcd"
    setsid nohup etcd --name "$m" --data-dir "$DIR/etcd/$m" \
      --listen-client-urls "$client" --advertise-client-urls "$client" \
      --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
      --initial-cluster "$initial" --initial-cluster-state new \
      --initial-cluster-token daprdockr-dev \
      --heartbeat-interval 100 --election-timeout 1000 \
      >>"$DIR/etcd-$m.log" 2>&1 </dev/null &
    echo $! >"$DIR/etcd-$m.pid"
    say "etcd $m started (client $client, peer $peer, pid $!)"
  done
  for _ in $(seq 100); do
    if etcdctl --endpoints "$ENDPOINTS" --command-timeout=1s endpoint health >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.2
  done
  die "etcd did not become healthy; see $DIR/etcd-m*.log"
}

agents_up() {
  local dns i nginx upstream=()
  dns=$(dns_port)
  echo "$dns" >"$DIR/dns-port"
  nginx=$(command -v nginx || echo /usr/sbin/nginx)
  [ -x "$nginx" ] || die "nginx not found (apt-get install nginx-light)"
  if [ -n "${DAPRDOCKR_DNS_UPSTREAM:-}" ]; then upstream=(--dns-upstream "$DAPRDOCKR_DNS_UPSTREAM"); fi
  for i in 0 1 2; do
    local n=${NODES[i]} ip=${IPS[i]}
    if [ -n "$(live_pid "$DIR/$n.pid" "node-id $n")" ]; then say "agent $n already running"; continue; fi
    mkdir -p "$DIR/agents"
    DAPRDOCKR_ETCD=$ENDPOINTS DAPRDOCKR_PREFIX=$PREFIX setsid nohup "$PY" -m daprdockr agent \
      --node-id "$n" --advertise-ip "$ip" --ttl "$TTL" --state-dir "$DIR/agents" \
      --dns-listen "$ip:$dns" --http-listen "$ip:$HTTP_PORT" --api-listen "$ip:$API_PORT" \
      --nginx "$nginx" "${upstream[@]}" \
      >>"$DIR/$n.log" 2>&1 </dev/null &
    echo $! >"$DIR/$n.pid"
    say "agent $n started (advertise $ip, pid $!)"
  done
  local want missing
  for _ in $(seq 150); do
    want=$(etcdctl --endpoints "$ENDPOINTS" get --prefix "$PREFIX/nodes/" --keys-only 2>/dev/null || true)
    missing=0
    for n in "${NODES[@]}"; do grep -qx "$PREFIX/nodes/$n" <<<"$want" || missing=1; done
    if [ "$missing" = 0 ]; then return 0; fi
    for n in "${NODES[@]}"; do
      [ -n "$(live_pid "$DIR/$n.pid" "node-id $n")" ] || die "agent $n exited; see $DIR/$n.log"
    done
    sleep 0.2
  done
  die "agents did not register within 30s; see $DIR/n*.log"
}

usage_text() {
  local dns; dns=$(cat "$DIR/dns-port" 2>/dev/null || echo 53)
  local dp="" hp=""
  [ "$dns" = 53 ] || dp=" -p $dns"
  [ "$HTTP_PORT" = 80 ] || hp=":$HTTP_PORT"
  cat <<EOF

DaprDockr dev cluster is up (state, pid files and logs in $DIR).
  etcd      $ENDPOINTS
  agents    n1 127.0.0.11, n2 127.0.0.12, n3 127.0.0.13  (DNS :$dns, nginx :$HTTP_PORT, API :$API_PORT)

Try:
  export PATH=$ROOT/.venv/bin:\$PATH DAPRDOCKR_ETCD=$ENDPOINTS
  daprdockr svc set web.myapp --image daprdockr-test/busybox:latest --instances 6 \\
      --http-host web.myapp.test --http-port 8080 \\
      --cmd=sh --cmd=-c --cmd='echo \$DAPRDOCKR_INSTANCE \$DAPRDOCKR_NODE > /www/id; exec httpd -f -p 8080 -h /www'
  daprdockr svc ls
  dig @127.0.0.11$dp 1.web.myapp.container
  dig @127.0.0.12$dp SRV _8080._tcp.web.myapp.container
  curl -H 'Host: web.myapp.test' http://127.0.0.13$hp/id
  daprdockrcmd            # the seed-compatible CLI, default etcd endpoints are this cluster's
  daprdockr svc del web.myapp
  make cluster-down
EOF
}

cmd_up() {
  command -v etcd >/dev/null || die "etcd not found (run make setup)"
  [ -x "$PY" ] || die "$PY missing (run make setup)"
  mkdir -p "$DIR"
  etcd_up
  agents_up
  usage_text
}

cmd_down() {
  local i n
  for n in "${NODES[@]}"; do stop_pid "$DIR/$n.pid" "node-id $n" 25 & done
  wait
  # nginx masters of agents that died without stopping them
  shopt -s nullglob
  for f in "$DIR"/agents/*/nginx/*.pid; do stop_pid "$f" nginx 5; done
  shopt -u nullglob
  for i in 0 1 2; do stop_pid "$DIR/etcd-${MEMBERS[i]}.pid" etcd 10 & done
  wait
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    for n in "${NODES[@]}"; do
      docker ps -aq --filter "label=daprdockr.node=$n" | xargs -r docker rm -f >/dev/null 2>&1 || true
    done
  fi
  rm -rf "$DIR"
  say "down (removed $DIR)"
}

cmd_status() {
  local i n pid
  for i in 0 1 2; do
    pid=$(live_pid "$DIR/etcd-${MEMBERS[i]}.pid" etcd)
    say "etcd ${MEMBERS[i]} 127.0.0.1:${CLIENT_PORTS[i]}: ${pid:+running pid $pid}${pid:-stopped}"
  done
  for i in 0 1 2; do
    n=${NODES[i]}; pid=$(live_pid "$DIR/$n.pid" "node-id $n")
    say "agent $n ${IPS[i]}: ${pid:+running pid $pid}${pid:-stopped}"
  done
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
