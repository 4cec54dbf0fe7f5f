#!/usr/bin/env bash
# Installs the Debian packages wsgate needs to build, run and test.
# Idempotent: only packages that are missing are installed.
set -euo pipefail

PACKAGES=(
  build-essential pkg-config clang clang-format libclang-rt-14-dev universal-ctags
  libuv1-dev libhttp-parser-dev libjansson-dev libsqlite3-dev libssl-dev zlib1g-dev libzstd-dev libcurl4-openssl-dev libjwt-dev zstd
  libcriterion-dev
  redis-server libhiredis-dev openssl
  python3 python3-pytest python3-websockets python3-boto3 python3-cryptography sqlite3 curl prometheus
  valgrind
  chromium
)
# Node (for the npm test tools) only when the machine has none: a machine
# may already carry a newer Node than Debian's.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  PACKAGES+=(nodejs npm)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  # Another apt (unattended-upgrades on a fresh machine, another terminal)
  # may hold the dpkg lock: wait up to 10 minutes for it instead of failing.
  APT=(apt-get -o DPkg::Lock::Timeout=600)
  $SUDO "${APT[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO "${APT[@]}" install -y -qq --no-install-recommends "${missing[@]}"
fi

# Node tools for the tests (wscat, ws), pinned by the committed lock file.
cd "$(dirname "$0")/.."
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-fund --no-audit --loglevel=error
fi
