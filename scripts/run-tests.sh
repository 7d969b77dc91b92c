#!/usr/bin/env bash
# Run the whole test suite against real services; fail when no test ran (pytest exit 5).
set -uo pipefail
cd "$(dirname "$0")/.."
export DAPRDOCKR_REQUIRE_SERVICES=1
export PATH="$PWD/.venv/bin:$PATH"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
if [ "$rc" -eq 5 ]; then echo "run-tests: pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
