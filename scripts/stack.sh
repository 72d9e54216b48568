#!/usr/bin/env bash
# Runs the local stack: installs libzmq and PostgreSQL 15 with PostGIS, builds release, and
# starts a private PostgreSQL (under .caremesh/pg, made once), the router and the four services
# under `caremesh up` (Ctrl-C or `caremesh down` stops it). With DATABASE_URL (or every
# <SERVICE>_DATABASE_URL) set, that server is used instead. Extra arguments go to
# `caremesh up`, e.g. `bash scripts/stack.sh --detach`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
command -v swift >/dev/null || { echo "swift 6.3 is required (e.g. /opt/swift/usr/bin)" >&2; exit 1; }
need=()
for pkg in libzmq3-dev postgresql postgresql-15-postgis-3; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
swift build -c release
exec "$(swift build -c release --show-bin-path)/caremesh" up "$@"
