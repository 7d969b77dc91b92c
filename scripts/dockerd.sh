#!/usr/bin/env bash
# Start dockerd if no Docker engine answers; print "started" if we started it (so the caller
# knows to stop it), "running" otherwise.  Only ONE dockerd per machine: never start a second.
set -euo pipefail
state=${DAPRDOCKR_STATE:-/tmp/daprdockr-ci}
mkdir -p "$state"
if docker info >/dev/null 2>&1; then echo running; exit 0; fi
if pgrep -x dockerd >/dev/null; then
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && { echo running; exit 0; }; sleep 0.5; done
  echo "dockerd is running but does not answer" >&2; exit 1
fi
nohup dockerd >"$state/dockerd.log" 2>&1 &
echo $! >"$state/dockerd.pid"
for _ in $(seq 120); do
  if docker info >/dev/null 2>&1; then echo started; exit 0; fi
  sleep 0.5
done
echo "dockerd did not come up; see $state/dockerd.log" >&2
tail -20 "$state/dockerd.log" >&2
exit 1
