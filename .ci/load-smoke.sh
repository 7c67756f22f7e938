#!/bin/sh
# Short load test for CI: 2 runs x 1000 requests at concurrency 64 against the release server
# (tools/load/run.sh; the full version is 3 x 10 000). Installs wrk from Debian when missing.
# Exit status: tools/load/run.sh's verdict.
set -eu
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update
    $SUDO apt-get install -y wrk
fi
REQUESTS=${REQUESTS:-1000} RUNS=${RUNS:-2} exec tools/load/run.sh
