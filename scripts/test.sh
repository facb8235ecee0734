#!/usr/bin/env bash
# The test ladder. Installs what is missing first; extra arguments go to pytest.
#   ./scripts/test.sh quick        in-process tests only (no e2e, no model marker): under 90 s
#   ./scripts/test.sh              everything, against real parts (redis-server, Celery workers,
#                                  Daphne, PostgreSQL, headless Chromium): what CI runs
#   ./scripts/test.sh tests/x.py   a chosen part (pytest arguments; --lf reruns the last failures)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

if [ "${1:-}" = quick ]; then
  shift
  ensure_venv requirements-test.txt
  exec "$PY" -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile -m "not e2e and not model" tests "$@"  # (tests/conftest.py: QUICK)
fi

ensure_tool redis-server redis-server
ensure_tool chromium chromium
# PostgreSQL: the fleet suite, and the second pass below (tests/support/postgres.py runs its own clusters)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || apt_install postgresql
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
pytest_run() { "$PY" -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile "$@"; }
if [ $# -gt 0 ]; then  # a chosen part, on TEST_DATABASE (sqlite unless set to postgres)
  pytest_run "$@"
  exit
fi
# Everything on SQLite, then the suites where the database is under load (claims, races, the
# reaper, restarts, queue order) again on PostgreSQL; test_fleet runs whole jobs on it in the first
# pass (submit, Range download, a lost host, racing claims), so test_service's plain job path is
# not repeated there. The tests go to both processes one by one (--dist load; each builds its own
# stacks): test_faults.py alone would hold one process for four minutes.
t0=$SECONDS
pytest_run tests
log "SQLite pass: $((SECONDS - t0)) s"
t0=$SECONDS
TEST_DATABASE=postgres pytest_run --dist load tests/test_faults.py tests/test_queue.py
log "PostgreSQL pass: $((SECONDS - t0)) s"
