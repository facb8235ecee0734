#!/usr/bin/env bash
# The test ladder. Installs what is missing first; extra arguments go to pytest.
#   ./scripts/test.sh quick        in-process tests only (no e2e, no model marker): under 90 s
#   ./scripts/test.sh              everything, against real parts (redis-server, Celery workers,
#                                  Daphne, PostgreSQL, headless Chromium): what CI runs
#   ./scripts/test.sh tests/x.py   a chosen part (pytest arguments; --lf reruns the last failures)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
# The suite starts ~200 Python processes (workers, Daphne, manage.py) that import the same code: they
# cache its bytecode (and pytest its rewritten test modules) even where the environment says not to.
unset PYTHONDONTWRITEBYTECODE

if [ "${1:-}" = quick ]; then
  shift
  ensure_venv requirements-test.txt
  exec "$PY" -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile -m "not e2e and not model" tests "$@"  # (conftest: QUICK)
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

# One session on TEST_WORKERS processes (default 4: the suites mostly wait on their stacks'
# subprocesses, so two cores keep four busy). A module stays in one process (its module-scoped
# stack with it), and so do the modules that share a session stack (tests/conftest.py: SharedStackScheduling); the suites where the database is under load (claims, races, the reaper, queue
# order, caps) run again on a real PostgreSQL as tests/test_*_on_postgres.py, in parallel with the
# rest. Modules start longest first (tests/conftest.py: LONGEST).
pytest_run() { "$PY" -m pytest -q -n "${TEST_WORKERS:-4}" --dist loadfile --no-loadscope-reorder "$@"; }
if [ $# -gt 0 ]; then  # a chosen part (TEST_DATABASE=postgres: every stack on PostgreSQL)
  pytest_run "$@"
  exit
fi
t0=$SECONDS
pytest_run tests
log "test time: $((SECONDS - t0)) s"
