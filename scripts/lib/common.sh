# Shared by scripts/test and scripts/demo: install what is missing, find the tools.
# Sourced, not run. Everything lands in the repository's .cache/ or in system packages.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV="$ROOT/.cache/venv"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root to run: $* (install it yourself or run as root)"; fi
}

# Debian packages: Prometheus, Alertmanager (with promtool and amtool), Python with venv, and
# systemd's systemd-analyze (scripts/lib/check-units).
ensure_packages() {
  local need=()
  command -v prometheus >/dev/null || need+=(prometheus)
  command -v systemd-analyze >/dev/null || need+=(systemd)
  command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
  command -v python3 >/dev/null || need+=(python3)
  command -v node >/dev/null || need+=(nodejs)
  command -v npm >/dev/null || need+=(npm)
  if command -v python3 >/dev/null && ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    need+=(python3-venv)
  fi
  if [ ${#need[@]} -gt 0 ]; then
    say "installing Debian packages: ${need[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
}

# A Python venv with moto's server (the DynamoDB stand-in) and boto3 (the benchmark baseline).
ensure_venv() {
  if [ -x "$VENV/bin/moto_server" ] && "$VENV/bin/python" -c 'import moto, boto3, flask_cors' 2>/dev/null; then
    return
  fi
  say "creating the Python venv with moto in .cache/venv (about 40 s)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'moto[server]>=5,<6' boto3
}
export MOTO_SERVER="$VENV/bin/moto_server"

# dynalite, the second DynamoDB implementation (Node), at the version scripts/lib/dynalite pins.
DYNALITE="$ROOT/.cache/dynalite"
ensure_dynalite() {
  if [ -f "$DYNALITE/node_modules/dynalite/package.json" ] \
    && cmp -s "$ROOT/scripts/lib/dynalite/package-lock.json" "$DYNALITE/package-lock.json"; then
    return
  fi
  say "installing dynalite into .cache/dynalite (npm ci)"
  rm -rf "$DYNALITE"
  mkdir -p "$DYNALITE"
  cp "$ROOT/scripts/lib/dynalite/package.json" "$ROOT/scripts/lib/dynalite/package-lock.json" "$DYNALITE/"
  (cd "$DYNALITE" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null)
}
export DYNALITE_MODULES="$DYNALITE/node_modules"
