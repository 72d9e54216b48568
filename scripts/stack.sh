#!/usr/bin/env bash
# Runs the local stack: installs libzmq, builds release, and starts the router and the four
# services under `caremesh up` (Ctrl-C or `caremesh down` stops it). Extra arguments go to
# `caremesh up`, e.g. `bash scripts/stack.sh --detach`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
command -v swift >/dev/null || { echo "swift 6.3 is required (e.g. /opt/swift/usr/bin)" >&2; exit 1; }
if ! dpkg -s libzmq3-dev >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq libzmq3-dev >/dev/null
fi
swift build -c release
exec "$(swift build -c release --show-bin-path)/caremesh" up "$@"
