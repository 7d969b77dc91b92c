#!/usr/bin/env bash
# Install what DaprDockr needs on a fresh Debian machine: system packages (only when missing)
# and the project's Python venv (.venv).  Idempotent; safe to run on every `make`.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in etcd:etcd-server etcdctl:etcd-client dockerd:docker.io nginx:nginx-light \
            busybox:busybox-static dig:dnsutils dnsmasq:dnsmasq-base wrk:wrk \
            docker-registry:docker-registry docker-compose:docker-compose dnsperf:dnsperf hey:hey \
            ss:iproute2 chattr:e2fsprogs; do
  bin=${pair%%:*}; pkg=${pair#*:}
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need+=("$pkg")
done
# systemd-analyze: the tests verify the agent's unit (daprdockr agent install) with the real one
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# nginx's Lua module (routes change without reloads); it brings lua-resty-core and LuaJIT
[ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ] || need+=(libnginx-mod-http-lua)
if ((${#need[@]})); then
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian starts a system nginx on :80 after install; DaprDockr runs its own nginx.
  if command -v service >/dev/null; then service nginx stop >/dev/null 2>&1 || true; fi
  pkill -x nginx 2>/dev/null || true
fi

if [ ! -x .venv/bin/python ] || [ pyproject.toml -nt .venv/.installed ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/pip install -q -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c 'import daprdockr, aetcd, aiodocker, dnslib, typer' 
  touch .venv/.installed
fi
