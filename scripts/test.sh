#!/usr/bin/env bash
# Runs every test: installs what they need (Debian packages, a Python venv with majortomo),
# builds once, and runs the whole suite against real ZeroMQ sockets on loopback and a real
# PostgreSQL 15 with PostGIS: a private cluster under .build/caremesh-test-pg, made fresh for
# each run and stopped at the end (or the server in CAREMESH_TEST_DATABASE_URL, a superuser URL).
# Usage (as root on Debian 12 with Swift 6.3 at /opt/swift or on PATH): bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
install_missing libzmq3-dev python3-venv postgresql postgresql-15-postgis-3 docker-compose openssl

# An independent MDP/0.2 implementation for the interop tests (majortomo imports six undeclared).
if ! .venv/bin/python -c 'import majortomo, six, zmq, google.protobuf' 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check majortomo six protobuf pyzmq
fi
export CAREMESH_PYTHON="$PWD/.venv/bin/python"

swift build --build-tests

cluster=.build/caremesh-test-pg
stop_cluster() {
  if [ -f "$cluster/data/postmaster.pid" ]; then
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$cluster/data" -m fast -w stop >/dev/null || true
    else /usr/lib/postgresql/15/bin/pg_ctl -D "$cluster/data" -m fast -w stop >/dev/null || true; fi
  fi
}
stop_cluster
rm -rf "$cluster"
trap stop_cluster EXIT
# Serial: the failure tests time liveness windows in milliseconds on a 2-core machine.
swift test --skip-build --no-parallel
