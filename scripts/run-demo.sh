#!/usr/bin/env bash
# `make run`: the smallest complete DaprDockr — one etcd, one agent, one demo service.
#
# * etcd on 127.0.0.1:2379 (an etcd already answering there is reused and left running);
# * one agent (node id = hostname) advertising 127.0.0.1, DNS on 127.0.0.1:5353, nginx on
#   127.0.0.1:8080, API on 127.0.0.1:7400;
# * the demo service web.demo: 2 instances of the local busybox test image, routed by nginx for
#   Host web.demo.localhost.
#
# Runs in the foreground until Ctrl-C (or for DAPRDOCKR_DEMO_SECONDS seconds when set), then
# stops the agent (which stops the demo containers), the etcd it started, and removes its data.
# State: .state/demo in the repository (DAPRDOCKR_DEMO_DIR overrides; /tmp when not writable).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=$ROOT/.venv/bin/python
IMAGE=daprdockr-test/busybox:latest
ETCD=http://127.0.0.1:2379
DIR=${DAPRDOCKR_DEMO_DIR:-$ROOT/.state/demo}
mkdir -p "$DIR" 2>/dev/null || DIR=/tmp/daprdockr-demo
mkdir -p "$DIR"
export ETCDCTL_API=3 DAPRDOCKR_ETCD=$ETCD

etcd_pid="" agent_pid=""
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "demo: stopping"
  "$PY" -m daprdockr --timeout 1 svc del web.demo >/dev/null 2>&1 || true
  if [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then
    kill -TERM "$agent_pid" 2>/dev/null || true
    for _ in $(seq 250); do kill -0 "$agent_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$agent_pid" 2>/dev/null || true
  fi
  if [ -n "$etcd_pid" ]; then
    kill -TERM "$etcd_pid" 2>/dev/null || true
    wait "$etcd_pid" 2>/dev/null || true
    rm -rf "$DIR/etcd"
  fi
  echo "demo: stopped (logs in $DIR)"
}
trap cleanup INT TERM EXIT

if etcdctl --endpoints "$ETCD" --command-timeout=1s endpoint health >/dev/null 2>&1; then
  echo "demo: reusing the etcd already answering on $ETCD"
else
  # etcd and the agent run in sessions of their own: Ctrl-C (SIGINT to the terminal's whole
  # process group) reaches only this script, whose trap stops the agent while etcd still answers
  # (it revokes its lease and stops its containers), then etcd.  Before, etcd died with the same
  # Ctrl-C and the agent, unable to revoke, left the demo's containers running.
  setsid etcd --name demo --data-dir "$DIR/etcd" \
    --listen-client-urls "$ETCD" --advertise-client-urls "$ETCD" \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster demo=http://127.0.0.1:2380 \
    --quota-backend-bytes 2147483648 >"$DIR/etcd.log" 2>&1 &  # (the quota explicit: README "etcd housekeeping")
  etcd_pid=$!
  for _ in $(seq 100); do
    etcdctl --endpoints "$ETCD" --command-timeout=1s endpoint health >/dev/null 2>&1 && break
    kill -0 "$etcd_pid" 2>/dev/null || { tail -20 "$DIR/etcd.log" >&2; exit 1; }
    sleep 0.2
  done
fi

setsid "$PY" -m daprdockr agent --advertise-ip 127.0.0.1 --state-dir "$DIR/agent" \
  --dns-listen 127.0.0.1:5353 --http-listen 127.0.0.1:8080 --api-listen 127.0.0.1:7400 \
  --nginx "$(command -v nginx || echo /usr/sbin/nginx)" >"$DIR/agent.log" 2>&1 &
agent_pid=$!

"$PY" -m daprdockr svc set web.demo --image "$IMAGE" --instances 2 \
  --http-host web.demo.localhost --http-port 8080 \
  --cmd=sh --cmd=-c --cmd='echo instance $DAPRDOCKR_INSTANCE on $DAPRDOCKR_NODE > /www/id; exec httpd -f -p 8080 -h /www' \
  --wait --timeout 60 || { tail -30 "$DIR/agent.log" >&2; exit 1; }

cat <<EOF

DaprDockr demo is running (agent log: $DIR/agent.log).  In another shell:
  export PATH=$ROOT/.venv/bin:\$PATH
  daprdockr ps
  dig @127.0.0.1 -p 5353 1.web.demo.container
  dig @127.0.0.1 -p 5353 SRV _8080._tcp.web.demo.container
  curl -H 'Host: web.demo.localhost' http://127.0.0.1:8080/id
  daprdockr svc set web.demo --instances 4
Ctrl-C stops the agent, its containers and etcd.
EOF

if [ -n "${DAPRDOCKR_DEMO_SECONDS:-}" ]; then
  sleep "$DAPRDOCKR_DEMO_SECONDS" &
  wait -n "$agent_pid" $! || true
else
  wait "$agent_pid" || true
fi
