#!/usr/bin/env bash
# Fill wheelhouse/ for the container image: wheels made for the *image's* Python, not the host's.
#
#   scripts/wheelhouse.sh [BASE]        (BASE: the image's base, default python:3.11-slim-bookworm)
#
# The base image says which Python, machine and glibc it has; pip on the host then downloads
# binary wheels for exactly that (--python-version/--abi/--platform, --only-binary=:all:) with the
# host's own index, proxy and CA settings, so a host with Python 3.12 fills a wheelhouse a 3.11
# image can install, and the image build needs no Python index at all (only the Debian mirror).
# DaprDockr itself is pure Python: its wheel is built here (py3-none-any).
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-${BASE:-python:3.11-slim-bookworm}}
pip=${PIP:-.venv/bin/pip}

read -r pyver machine glibc < <(docker run --rm --network none --entrypoint python3 "$base" -c \
  'import platform, sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}", platform.machine(), platform.libc_ver()[1])')
[ -n "$glibc" ] || { echo "wheelhouse: $base has no glibc Python (musl is not supported)" >&2; exit 1; }
abi="cp${pyver/./}"
platforms=()
for ((minor = ${glibc#*.}; minor >= 5; minor--)); do platforms+=(--platform "manylinux_2_${minor}_${machine}"); done
platforms+=(--platform "manylinux2014_${machine}" --platform "linux_${machine}")
echo "wheelhouse: for $base (Python $pyver, $machine, glibc $glibc)"

rm -f wheelhouse/*.whl
"$pip" wheel -q --no-deps -w wheelhouse .
wheel=$(ls wheelhouse/daprdockr-*.whl)
"$pip" download -q --only-binary=:all: --python-version "$pyver" --implementation cp --abi "$abi" \
  "${platforms[@]}" -d wheelhouse "$wheel[fast]"
ls wheelhouse/*.whl | wc -l | xargs echo "wheelhouse: wheels:"
