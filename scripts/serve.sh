#!/usr/bin/env bash
# Start the whole service in the foreground: Redis, Daphne (web + websocket), one Celery
# worker and Flower. Installs what is missing first. Ctrl-C / SIGTERM stops everything.
#
#   PORT=8000 FLOWER_PORT=5555 HOST=127.0.0.1 REDIS_URL=redis://127.0.0.1:6379/0 ./scripts/serve.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

# Redis is needed unless REDIS_URL points elsewhere (serve.py checks it is reachable).
case "${REDIS_URL:-}" in
  ""|redis://127.0.0.1*|redis://localhost*) ensure_tool redis-server redis-server ;;
esac
ensure_venv

exec "$PY" -m scripts.serve "$@"
