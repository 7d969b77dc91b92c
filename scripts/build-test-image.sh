#!/usr/bin/env bash
# Build the local test image (no registry is reachable): a tiny rootfs with Debian's
# busybox-static, imported with `docker import`.  Tag: daprdockr-test/busybox:latest.
# `busybox httpd` serves HTTP in it; the default command keeps it alive.
set -euo pipefail
tag=${1:-daprdockr-test/busybox:latest}
if docker image inspect "$tag" >/dev/null 2>&1; then exit 0; fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,etc,tmp,www,proc,sys,dev,root,var/www}
cp "$(command -v busybox)" "$root/bin/busybox"
for app in sh ls cat echo sleep httpd nc hostname env ps kill true false wget date printf seq; do
  ln -sf busybox "$root/bin/$app"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
echo 'daprdockr test image' >"$root/www/index.html"
tar -C "$root" -c . | docker import \
  --change 'CMD ["/bin/sh","-c","trap \"exit 0\" TERM; while true; do sleep 1; done"]' \
  --change 'ENV PATH=/bin:/sbin' - "$tag" >/dev/null
echo "built $tag"
