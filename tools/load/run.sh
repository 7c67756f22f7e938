#!/bin/sh
# Load test of the release server on loopback, with wrk (Debian: `apt-get install wrk`).
#
# Produces, per run: one `LOAD ...` line from tools/load/mix.lua (responses by status, p50/p99/max
# latency, socket errors) and the server's resident memory (/proc/<pid>/status: VmRSS now,
# VmHWM peak so far) and open file descriptors (/proc/<pid>/fd) once the run has drained, after
# a `run=0` line with the same figures for the idle, warmed-up server; then a verdict. Exits 0
# only when every run meets the bar:
#   - exactly $REQUESTS responses, every status one of 200/400/413/415 (0 unexpected, 0 5xx);
#   - no 503 at all while concurrency <= workers + queue (the documented admission limit:
#     --queue requests may wait for the --workers inference threads; beyond that, 503);
#   - no socket errors at all: connect, read, write or timeout. The oversized uploads count
#     here: wrk writes a whole request before reading, and the server reads and discards an
#     oversized body before its 413 (src/http/oversize.rs); a 413 sent while wrk was still
#     writing would be lost to a reset connection and show up here as a read/write error;
#   - across runs, open fds identical; peak RSS (VmHWM) after the last run within 10 % (+8 MiB)
#     of its value after the first; RSS after the last run no higher than the first run's peak
#     (+8 MiB). glibc keeps freed memory in its heap (one arena, see src/malloc.rs), so
#     RSS after a run climbs towards the peak over the first runs and then stays there; a leak
#     would push RSS, and with it the peak, past the first run's peak.
#
# Usage (from anywhere):
#   tools/load/run.sh                          # 3 runs x 10 000 requests at concurrency 64
#   REQUESTS=1000 RUNS=2 tools/load/run.sh     # the short CI version (.ci/load-smoke.sh)
# Knobs: REQUESTS, CONCURRENCY (64), RUNS (3), THREADS (wrk threads, 2), MAX_SECONDS (per-run
# time bound, 900), MAX_BODY (server --max-body-bytes, 262144; the oversized body is 1.5x that),
# SERVER_BIN (a release binary to test instead of building one, relative to the repository
# root or absolute, e.g. the one of
# scripts/package.sh; CI reuses it so the release build happens once), PREPARE_BIN (an
# already built load-prepare example to use instead of building it), HOSTILE=1 (add the
# hostile files of `load-prepare ... hostile` to the mix: each per-image budget at its edge and
# past it; MAX_BODY then defaults to 8 MiB, which they need).
set -eu

REQUESTS=${REQUESTS:-10000}
CONCURRENCY=${CONCURRENCY:-64}
RUNS=${RUNS:-3}
THREADS=${THREADS:-2}
MAX_SECONDS=${MAX_SECONDS:-900}
HOSTILE=${HOSTILE:-0}
if [ "$HOSTILE" = 1 ]; then
    MAX_BODY=${MAX_BODY:-8388608}
    PREPARE_MODE=hostile
else
    MAX_BODY=${MAX_BODY:-262144}
    PREPARE_MODE=
fi

cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { echo "load: wrk is not installed (apt-get install wrk)" >&2; exit 2; }

# The server under test is the release build. The preparation tool is an example (it shares the
# crate's synthetic weights) and is built in the dev profile: examples pull in the
# dev-dependencies, which the test suite has compiled there already.
if [ -z "${SERVER_BIN:-}" ]; then
    cargo build --release --quiet --bin resnet18-fc
    SERVER_BIN=target/release/resnet18-fc
fi
[ -x "$SERVER_BIN" ] || { echo "load: $SERVER_BIN is not an executable" >&2; exit 2; }
if [ -z "${PREPARE_BIN:-}" ]; then
    cargo build --quiet --example load-prepare
    PREPARE_BIN=target/debug/examples/load-prepare
fi

WORK=$(mktemp -d)
PID=""
WRK=""
cleanup() {
    if [ -n "$WRK" ] && kill -0 "$WRK" 2>/dev/null; then
        kill -INT "$WRK" 2>/dev/null || true
    fi
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM # exit (and so clean up) instead of resuming the script

# shellcheck disable=SC2086 # empty or one word
"$PREPARE_BIN" "$WORK" "$MAX_BODY" $PREPARE_MODE
"$SERVER_BIN" serve --host 127.0.0.1 --port 0 --offline \
    --model "$WORK/model.safetensors" --max-body-bytes "$MAX_BODY" >"$WORK/server.log" 2>&1 &
PID=$!

i=0
until grep -qs "model ready" "$WORK/server.log"; do
    i=$((i + 1))
    if [ $i -gt 600 ] || ! kill -0 "$PID" 2>/dev/null; then
        echo "load: the server did not become ready" >&2
        cat "$WORK/server.log" >&2
        exit 1
    fi
    sleep 0.2
done
PORT=$(sed -n 's#.*listening on http://127\.0\.0\.1:\([0-9]*\).*#\1#p' "$WORK/server.log" | head -n 1)
URL="http://127.0.0.1:$PORT"
HEALTH=$(curl -fsS "$URL/healthz")
WORKERS=$(echo "$HEALTH" | sed -n 's/.*"workers":\([0-9]*\).*/\1/p')
QUEUE=$(echo "$HEALTH" | sed -n 's/.*"queue":\([0-9]*\).*/\1/p')
CAPACITY=$((WORKERS + QUEUE))
echo "load: server pid $PID on $URL, workers $WORKERS, queue $QUEUE (admits $CAPACITY at once)"
echo "load: $RUNS run(s) x $REQUESTS requests, concurrency $CONCURRENCY, max body $MAX_BODY B"

# Waits until no request holds a place in the inference pool (abandoned ones finish first).
wait_idle() {
    j=0
    until curl -fsS "$URL/healthz" | grep -q '"admitted":0'; do
        j=$((j + 1))
        [ $j -gt 300 ] && { echo "load: the pool did not drain" >&2; return 1; }
        sleep 0.2
    done
}
# The server's memory and descriptors: "rss_kb=… hwm_kb=… fds=…".
usage() {
    awk '/^VmRSS:/ { rss = $2 } /^VmHWM:/ { hwm = $2 } END { printf "rss_kb=%s hwm_kb=%s", rss, hwm }' \
        "/proc/$PID/status"
    echo " fds=$(ls "/proc/$PID/fd" | wc -l)"
}

RESULTS="$WORK/results"
: >"$RESULTS"
echo "run=0 (idle, before any load) $(usage)"
run=1
while [ $run -le "$RUNS" ]; do
    rm -f "$WORK"/.stopped-*
    wrk -t"$THREADS" -c"$CONCURRENCY" -d"${MAX_SECONDS}s" --timeout 60s \
        -s tools/load/mix.lua "$URL" -- "$WORK" "$REQUESTS" "$THREADS" >"$WORK/wrk.out" 2>&1 &
    WRK=$!
    # Every thread has answered its share: interrupt wrk's -d sleep so it reports now.
    until [ "$(ls "$WORK"/.stopped-* 2>/dev/null | wc -l)" -ge "$THREADS" ] || ! kill -0 "$WRK" 2>/dev/null; do
        sleep 0.2
    done
    kill -INT "$WRK" 2>/dev/null || true
    wait "$WRK" || true
    line=$(grep '^LOAD ' "$WORK/wrk.out" || echo "LOAD responses=0 (wrk failed: $(tail -n 3 "$WORK/wrk.out"))")
    wait_idle
    echo "run=$run $line $(usage)" | tee -a "$RESULTS"
    run=$((run + 1))
done

echo "load: server log $(wc -l <"$WORK/server.log") lines, $(grep -c 'panicked' "$WORK/server.log" || true) panics"
awk -v requests="$REQUESTS" -v concurrency="$CONCURRENCY" -v capacity="$CAPACITY" '
    function field(name,   i, kv) {
        for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name) return kv[2] }
        return ""
    }
    {
        n++
        if (field("responses") != requests) { bad = bad "\n  run " n ": " field("responses") " responses, expected " requests }
        if (field("unexpected") != 0) { bad = bad "\n  run " n ": " field("unexpected") " unexpected statuses" }
        if (field("s5xx") != 0 && !(concurrency > capacity && field("s5xx") == field("s503"))) {
            bad = bad "\n  run " n ": " field("s5xx") " 5xx (" field("s503") " of them 503)"
        }
        errors = field("err_connect") + field("err_read") + field("err_write") + field("err_timeout")
        if (errors != 0) { bad = bad "\n  run " n ": " errors " socket errors (connect, read, write, timeout)" }
        if (n == 1) { rss1 = field("rss_kb"); hwm1 = field("hwm_kb"); fds1 = field("fds") }
        rss = field("rss_kb"); hwm = field("hwm_kb"); fd = field("fds")
        if (fd != fds1) { bad = bad "\n  run " n ": " fd " open fds, " fds1 " after run 1" }
    }
    END {
        if (rss > hwm1 + 8192) { bad = bad "\n  RSS grew to " rss " kB, past the first run peak of " hwm1 " kB" }
        if (hwm > hwm1 * 1.10 + 8192) { bad = bad "\n  peak RSS grew from " hwm1 " kB to " hwm " kB" }
        if (bad != "") { print "load: FAILED" bad; exit 1 }
        print "load: OK (" n " runs; RSS " rss1 " -> " rss " kB; peak " hwm1 " -> " hwm " kB; fds " fds1 " -> " fd ")"
    }' "$RESULTS"
