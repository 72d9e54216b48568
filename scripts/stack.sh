#!/usr/bin/env bash
# Runs the local stack: installs libzmq and PostgreSQL 15 with PostGIS, builds release, and
# starts a private PostgreSQL (under .caremesh/pg, made once), the router and the four services
# under `caremesh up` (Ctrl-C or `caremesh down` stops it). With DATABASE_URL (or every
# <SERVICE>_DATABASE_URL) set, that server is used instead. Extra arguments go to
# `caremesh up`, e.g. `bash scripts/stack.sh --detach`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
install_missing libzmq3-dev postgresql postgresql-15-postgis-3
swift build -c release
exec "$(swift build -c release --show-bin-path)/caremesh" up "$@"
