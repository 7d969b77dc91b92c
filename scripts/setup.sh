#!/usr/bin/env bash
# Install what DaprDockr needs on a fresh Debian machine: system packages (only when missing)
# and the project's Python venv (.venv).  Idempotent; safe to run on every `make`.
#
# It never stops or kills a process it did not start.  Debian starts a system nginx on :80 when
# nginx is installed; while this script installs packages, a policy-rc.d tells dpkg not to start
# the nginx service (nothing else is held back), and when this run installed nginx its system
# service is disabled at boot (said on stderr): DaprDockr runs its own nginx.  Any nginx already
# running (a user's web server, other agents') is left alone.
#
# Test hooks (tests/test_setup_script.py): DAPRDOCKR_SETUP_APT replaces apt-get,
# DAPRDOCKR_SETUP_ALSO adds packages to install, DAPRDOCKR_SETUP_POLICY_RC moves policy-rc.d.
set -euo pipefail
cd "$(dirname "$0")/.."
apt_get=${DAPRDOCKR_SETUP_APT:-apt-get}

need=()
for pair in etcd:etcd-server etcdctl:etcd-client dockerd:docker.io nginx:nginx-light \
            busybox:busybox-static dig:dnsutils dnsmasq:dnsmasq-base wrk:wrk \
            docker-registry:docker-registry docker-compose:docker-compose dnsperf:dnsperf hey:hey \
            ss:iproute2 chattr:e2fsprogs pebble:pebble; do
  bin=${pair%%:*}; pkg=${pair#*:}
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need+=("$pkg")
done
# pebble: the ACME test CA the HTTPS tests order certificates from (tests/support/pebble.py)
# systemd-analyze: the tests verify the agent's unit (daprdockr agent install) with the real one
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# the dashboard's browser tests: Debian's chromium, driven by Playwright (pip) without its own download
[ -x /usr/lib/chromium/chromium ] || need+=(chromium)
[ -d /usr/share/fonts/truetype/dejavu ] || need+=(fonts-dejavu-core)
# nginx's Lua module (routes change without reloads); it brings lua-resty-core and LuaJIT
[ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ] || need+=(libnginx-mod-http-lua)
# the HTTPS tests' TLS clients (curl --http2, openssl s_client)
for bin in curl openssl; do command -v "$bin" >/dev/null 2>&1 || need+=("$bin"); done
# shellcheck disable=SC2206
[ -z "${DAPRDOCKR_SETUP_ALSO:-}" ] || need+=(${DAPRDOCKR_SETUP_ALSO})

# policy-rc.d (see invoke-rc.d(8)): exit 101 = "do not start"; only for nginx, only while we
# install, and only when no other policy is in place (then that one decides, and we stop nothing)
policy=${DAPRDOCKR_SETUP_POLICY_RC:-/usr/sbin/policy-rc.d}
own_policy=
hold_nginx() {
  if [ -e "$policy" ]; then
    echo "setup: $policy exists; not replacing it (dpkg may start the system nginx)" >&2
    return
  fi
  printf '#!/bin/sh\n# written by daprdockr scripts/setup.sh while it installs packages\ncase "$1" in nginx|nginx.service) exit 101 ;; esac\nexit 0\n' >"$policy"
  chmod 755 "$policy"
  own_policy=1
}
release_nginx() {
  if [ -n "$own_policy" ]; then rm -f "$policy"; own_policy=; fi
}

if ((${#need[@]})); then
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  nginx_new=
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || nginx_new=1
  hold_nginx
  trap release_nginx EXIT
  "$apt_get" update -qq
  "$apt_get" install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  release_nginx
  trap - EXIT
  # nginx came with this run: its system service would start at the next boot on :80
  if [ -n "$nginx_new" ] && { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; }; then
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
      systemctl disable --quiet nginx >/dev/null 2>&1 || true
    elif command -v update-rc.d >/dev/null; then
      update-rc.d nginx disable >/dev/null 2>&1 || true
    fi
    echo "setup: installed nginx; its system service is disabled (DaprDockr runs its own nginx)" >&2
  fi
fi

if [ ! -x .venv/bin/python ] || [ pyproject.toml -nt .venv/.installed ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/pip install -q -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c 'import daprdockr, aetcd, aiodocker, dnslib, typer' 
  touch .venv/.installed
fi

# Wheels of the runtime dependencies for this host's Python (and the build backend): the
# packaging test (tests/test_packaging.py) installs the built wheel into a fresh venv from these
# alone (--no-index), without reaching an index.
if [ ! -f .venv/wheels/.done ] || [ pyproject.toml -nt .venv/wheels/.done ]; then
  echo "setup: wheels of the dependencies in .venv/wheels"
  mkdir -p .venv/wheels
  if ! .venv/bin/pip wheel -q -w .venv/wheels '.[fast]' setuptools wheel >.venv/wheels/log 2>&1; then
    cat .venv/wheels/log >&2
    exit 1
  fi
  rm -f .venv/wheels/daprdockr-*.whl
  touch .venv/wheels/.done
fi
