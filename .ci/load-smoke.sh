#!/bin/sh
# Short load test for CI: 2 runs x 1000 requests at concurrency 16 against the release server
# (tools/load/run.sh; the full version is 3 x 10 000 at concurrency 64). Fails on any
# unexpected status or 5xx, any 503 while concurrency <= workers + queue, any socket error
# (connect, read, write, timeout), or fds / RSS growing between the runs (see tools/load/run.sh).
# SERVER_BIN: reuse a release binary (CI passes the one scripts/package.sh built) instead of
# building one. Installs wrk from Debian when missing.
set -eu
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update
    $SUDO apt-get install -y wrk
fi
REQUESTS=${REQUESTS:-1000} RUNS=${RUNS:-2} CONCURRENCY=${CONCURRENCY:-16} exec tools/load/run.sh
