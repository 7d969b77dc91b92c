# DaprDockr images.  Two targets share one base:
#
#   agent (default)  the package + nginx-light with its Lua module; ENTRYPOINT `daprdockr agent`, so the container
#                    command is the agent's flags; global options come from the environment
#                    (DAPRDOCKR_ETCD, DAPRDOCKR_PREFIX).  Needs /var/run/docker.sock mounted.
#   etcd             Debian's etcd-server; ENTRYPOINT `etcd`.
#
#   docker build -t daprdockr/agent:dev .
#   docker build --target etcd -t daprdockr/etcd:dev .
#   docker build --build-arg BASE=my-mirror/python:3.11-slim -t daprdockr/agent:dev .
#
# Offline / proxied builds: `make wheelhouse BASE=...` (scripts/wheelhouse.sh) fills wheelhouse/ on
# the host with its own pip settings, with wheels made for the Python of BASE (asked of the image,
# then `pip download --python-version/--abi/--platform`), not the host's, and the DaprDockr wheel
# itself; when wheels are there the image installs `daprdockr[fast]` from them only (--no-index),
# otherwise the source tree from PyPI.
#
# BASE must be Debian-based (apt) with Python >= 3.11 and its venv module, like
# python:3.11-slim-bookworm (or debian:bookworm with python3 and python3-venv installed); the
# Debian release is pinned so nginx-light and libnginx-mod-http-lua come from one release.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS etcd
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends etcd-server \
 && rm -rf /var/lib/apt/lists/*
ENV ETCD_UNSUPPORTED_ARCH=""
ENTRYPOINT ["etcd"]

FROM ${BASE} AS agent
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light libnginx-mod-http-lua \
 && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/default \
 && test -f /usr/lib/nginx/modules/ngx_http_lua_module.so
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/daprdockr/bin:$PATH
WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src
COPY wheelhouse /wheels
# a venv: works on python:3.11-slim and on Debian's own python3 (PEP 668) alike
RUN python3 -m venv /opt/daprdockr \
 && if ls /wheels/daprdockr-*.whl >/dev/null 2>&1; then set -- --no-index --find-links /wheels 'daprdockr[fast]'; \
    else set -- '.[fast]'; fi \
 && /opt/daprdockr/bin/pip install "$@" \
 && rm -rf /wheels \
 && /opt/daprdockr/bin/python -c 'import daprdockr.cli.main, daprdockr.cli.seedcli, daprdockr.agent.main' \
 && rm -rf /build
WORKDIR /var/lib/daprdockr
ENTRYPOINT ["daprdockr", "agent"]
CMD ["--help"]
