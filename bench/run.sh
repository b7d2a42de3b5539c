#!/usr/bin/env bash
# The overhead benchmark in one command (see bench/README.md).
#
#   bench/run.sh [--litellm] [--install-only] [overhead.py options...]
#
# Installs what it needs when missing (Debian nginx, libnginx-mod-http-echo, wrk;
# with --litellm, LiteLLM into bench/.venv-litellm), then runs bench/overhead.py
# with the remaining options (--quick, --rounds N, --duration S, --scaling,
# --config-scale, --memory, ...; `bench/run.sh --help` lists them).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
PY="${PYTHON:-python3}"

# LiteLLM: pinned exactly. 1.82.7, 1.82.8 and 1.107.0 were compromised releases:
# never install them, never run them.
LITELLM_VERSION="1.81.16"
LITELLM_BAD_VERSIONS=("1.82.7" "1.82.8" "1.107.0")
LITELLM_VENV="$here/.venv-litellm"

want_litellm=0
install_only=0
args=()
for a in "$@"; do
  case "$a" in
    --litellm) want_litellm=1 ;;
    --install-only) install_only=1 ;;
    *) args+=("$a") ;;
  esac
done

log() { printf '[bench/run.sh] %s\n' "$*" >&2; }

is_bad_litellm() {
  local v="$1" bad
  for bad in "${LITELLM_BAD_VERSIONS[@]}"; do
    [ "$v" = "$bad" ] && return 0
  done
  return 1
}

# The installed LiteLLM version, read from its dist-info folder name: nothing of
# LiteLLM is imported or executed to find it out.
litellm_installed_version() {
  local d
  for d in "$LITELLM_VENV"/lib/python*/site-packages/litellm-*.dist-info; do
    [ -d "$d" ] || continue
    d="$(basename "$d")"
    d="${d#litellm-}"
    printf '%s\n' "${d%.dist-info}"
    return 0
  done
  return 1
}

install_debian() {
  local missing=()
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
  [ -e /usr/lib/nginx/modules/ngx_http_echo_module.so ] || missing+=(libnginx-mod-http-echo)
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
  command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
    # The Debian package may have started a system nginx on :80; the benchmark
    # runs its own, and stops only what it started.
  fi
}

install_python_deps() {
  if ! "$PY" -c 'import starlette, hypercorn, httpx, aiohttp, orjson, uvloop' >/dev/null 2>&1; then
    log "installing the Python packages the benchmark needs into $("$PY" -c 'import sys; print(sys.prefix)')"
    "$PY" -m pip install --quiet starlette hypercorn httpx aiohttp orjson uvloop
  fi
}

install_litellm() {
  if is_bad_litellm "$LITELLM_VERSION"; then
    log "refusing LiteLLM $LITELLM_VERSION: a compromised release"
    exit 2
  fi
  local have=""
  have="$(litellm_installed_version || true)"
  if [ -n "$have" ] && is_bad_litellm "$have"; then
    log "bench/.venv-litellm holds LiteLLM $have, a compromised release: deleting that virtualenv"
    rm -rf "$LITELLM_VENV"
    have=""
  fi
  if [ "$have" = "$LITELLM_VERSION" ] && [ -x "$LITELLM_VENV/bin/litellm" ]; then
    return 0
  fi
  log "installing litellm[proxy]==$LITELLM_VERSION into $LITELLM_VENV (takes a few minutes)"
  rm -rf "$LITELLM_VENV"
  local pip_log
  pip_log="$(mktemp)"
  if ! { "$PY" -m venv "$LITELLM_VENV" &&
         "$LITELLM_VENV/bin/python" -m pip install --upgrade pip &&
         "$LITELLM_VENV/bin/python" -m pip install "litellm[proxy]==$LITELLM_VERSION"; } >"$pip_log" 2>&1; then
    tail -n 30 "$pip_log" >&2
    rm -f "$pip_log"
    rm -rf "$LITELLM_VENV"
    log "LiteLLM install failed (pip's output above)"
    exit 2
  fi
  rm -f "$pip_log"
  have="$(litellm_installed_version || true)"
  if [ "$have" != "$LITELLM_VERSION" ] || is_bad_litellm "$have"; then
    log "LiteLLM install gave version '$have', not $LITELLM_VERSION: deleting the virtualenv"
    rm -rf "$LITELLM_VENV"
    exit 2
  fi
  log "LiteLLM $have installed"
}

install_debian
install_python_deps
if [ "$want_litellm" = 1 ]; then
  install_litellm
fi
if [ "$install_only" = 1 ]; then
  log "installed; not running (--install-only)"
  exit 0
fi

# Many sockets: 1,000 concurrent streams through a gateway to nginx in --memory.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cd "$repo"
# exec: Ctrl-C and SIGTERM reach overhead.py, which stops everything it started.
exec "$PY" "$here/overhead.py" "${args[@]+"${args[@]}"}"
