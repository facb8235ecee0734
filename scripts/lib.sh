# Shared install steps for scripts/serve.sh and scripts/test.sh (sourced, not run).
#
# Idempotent and quick when everything is already there: apt runs only for a missing tool,
# pip only when requirements*.txt changed since the last successful install (hash stamp).
# Works as root on a fresh Debian; as another user it uses sudo for apt if it can.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[setup]\033[0m %s\n' "$*" >&2; exit 1; }

_apt_updated=0
apt_install() {  # apt_install pkg... (installs, after one apt-get update per run)
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to apt-get install $*"
    sudo="sudo"
  fi
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* by hand"
  export DEBIAN_FRONTEND=noninteractive
  if [ "$_apt_updated" -eq 0 ]; then
    log "apt-get update"
    $sudo apt-get update -qq >&2 || die "apt-get update failed"
    _apt_updated=1
  fi
  log "apt-get install $*"
  $sudo apt-get install -y -qq --no-install-recommends "$@" >&2 || die "apt-get install $* failed"
}

pip_run() {  # pip without the noise of unreachable extra index locations
  "$PY" -m pip "$@" 2>&1 | { grep -v -E '^WARNING: Location .* is ignored' || true; } >&2
  return "${PIPESTATUS[0]}"
}

ensure_tool() {  # ensure_tool command package
  command -v "$1" >/dev/null 2>&1 || apt_install "$2"
}

ensure_venv() {  # ensure_venv [requirements file] (default requirements.txt; -r includes are followed by pip)
  local reqs="${1:-requirements.txt}"
  if [ ! -x "$PY" ]; then
    local python="${PYTHON:-python3}"
    command -v "$python" >/dev/null 2>&1 || apt_install python3 python3-venv
    log "creating virtualenv $VENV ($("$python" --version 2>&1))"
    if ! "$python" -m venv "$VENV" 2>/dev/null; then
      rm -rf "$VENV"
      apt_install python3-venv
      "$python" -m venv "$VENV" || die "could not create $VENV"
    fi
  fi
  local stamp="$VENV/.${reqs%.txt}.sha256"
  local want
  want="$(cat "$ROOT"/requirements*.txt "$ROOT"/constraints.txt 2>/dev/null | sha256sum | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  log "installing Python requirements from $reqs (first run takes a few minutes)"
  local t0=$SECONDS
  pip_run install -q --upgrade pip || true
  pip_run install -q -r "$ROOT/$reqs" -c "$ROOT/constraints.txt" || die "pip install -r $reqs failed"
  if [ -f "$ROOT/requirements-nodeps.txt" ]; then
    pip_run install -q --no-deps -r "$ROOT/requirements-nodeps.txt" -c "$ROOT/constraints.txt" \
      || die "pip install --no-deps -r requirements-nodeps.txt failed"
  fi
  echo "$want" > "$stamp"
  log "Python requirements installed in $((SECONDS - t0)) s"
}
