#!/usr/bin/env bash
# Run the whole test suite against real parts (redis-server, Celery worker, Daphne, headless
# Chromium). Installs what is missing first. Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

ensure_tool redis-server redis-server
ensure_tool chromium chromium
ensure_venv requirements-test.txt

# Two processes (TEST_WORKERS): the suites mostly wait on their stacks' subprocesses; a test module
# stays in one process (its module-scoped stack with it).
exec "$PY" -m pytest -q tests -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
