#!/usr/bin/env bash
# Run the whole test suite against real parts (redis-server, Celery worker, Daphne, headless
# Chromium). Installs what is missing first. Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

ensure_tool redis-server redis-server
ensure_tool chromium chromium
ensure_venv requirements-test.txt
# the reference design's client (npm phoenix, pinned in tests/phoenix/package-lock.json) for tests/test_phoenix.py
ensure_tool node nodejs
ensure_tool npm npm
if [ ! -f tests/phoenix/node_modules/.package-lock.json ] \
    || [ tests/phoenix/package-lock.json -nt tests/phoenix/node_modules/.package-lock.json ]; then
  log "npm ci (tests/phoenix)"
  (cd tests/phoenix && npm ci --no-audit --no-fund --loglevel=error >&2) || die "npm ci in tests/phoenix failed"
fi

# Two processes (TEST_WORKERS): the suites mostly wait on their stacks' subprocesses; a test module
# stays in one process (its module-scoped stack with it).
exec "$PY" -m pytest -q tests -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
