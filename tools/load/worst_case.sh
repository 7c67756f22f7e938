#!/bin/sh
# Peak memory and time of the release server under concurrent worst-case images: the hostile
# files of `load-prepare <dir> <max-body> hostile` (tools/load/prepare.rs) whose names start with
# `200-edge-`, each at the edge of one budget of the README's "Per-image budget" (40 MP of 8-bit
# RGB, 120 MB decoded as 16-bit RGBA, a 40 MP progressive JPEG of 100 scans, a 600 MB colour
# profile), sent CONCURRENCY at a time (default 4, each a different file, cycling), ROUNDS times;
# then the files past the budget (`413-*`), as many at a time. Prints per request status and
# seconds (curl's time_total), then the server's VmHWM (peak RSS) and the process's CPU
# seconds (utime + stime from /proc/<pid>/stat). Exits non-zero if any status differs from the
# one in the file name. No thresholds: it reports.
#
# Usage: tools/load/worst_case.sh   (knobs: CONCURRENCY, ROUNDS, SERVER_BIN, PREPARE_BIN,
#        EXTRA_ARGS for the server)
set -eu

CONCURRENCY=${CONCURRENCY:-4}
ROUNDS=${ROUNDS:-3}
MAX_BODY=8388608

cd "$(dirname "$0")/../.."
if [ -z "${SERVER_BIN:-}" ]; then
    cargo build --release --quiet --bin resnet18-fc
    SERVER_BIN=target/release/resnet18-fc
fi
if [ -z "${PREPARE_BIN:-}" ]; then
    cargo build --quiet --example load-prepare
    PREPARE_BIN=target/debug/examples/load-prepare
fi

WORK=$(mktemp -d)
PID=""
cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$PREPARE_BIN" "$WORK" "$MAX_BODY" hostile
# shellcheck disable=SC2086 # EXTRA_ARGS is a list of flags
"$SERVER_BIN" serve --host 127.0.0.1 --port 0 --offline --model "$WORK/model.safetensors" \
    --max-body-bytes "$MAX_BODY" ${EXTRA_ARGS:-} >"$WORK/server.log" 2>&1 &
PID=$!
i=0
until grep -qs "model ready" "$WORK/server.log"; do
    i=$((i + 1))
    if [ $i -gt 600 ] || ! kill -0 "$PID" 2>/dev/null; then
        echo "worst-case: the server did not become ready" >&2
        cat "$WORK/server.log" >&2
        exit 1
    fi
    sleep 0.2
done
PORT=$(sed -n 's#.*listening on http://127\.0\.0\.1:\([0-9]*\).*#\1#p' "$WORK/server.log" | head -n 1)
URL="http://127.0.0.1:$PORT/classify"
TICKS=$(getconf CLK_TCK)

hwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$PID/status"; }
cpu() { awk -v t="$TICKS" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$PID/stat"; }

echo "worst-case: server pid $PID, idle: VmHWM $(hwm) kB, CPU $(cpu) s"
# Sends the given files at once; one line per request: expected, status, seconds, file.
burst() {
    for f in "$@"; do
        (
            out=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' \
                -H 'Content-Type: application/octet-stream' --data-binary "@$WORK/$f" "$URL")
            echo "${f%%-*} $out $f"
        ) &
    done
    wait
}
check() {
    while read -r want got seconds name; do
        echo "  $got ${seconds}s $name"
        [ "$want" = "$got" ] || { echo "  ^ expected $want" >&2; echo x >>"$WORK/failed"; }
    done
}

EDGE=$(cd "$WORK" && ls 200-edge-*)
PAST=$(cd "$WORK" && ls 413-*)
round=1
while [ $round -le "$ROUNDS" ]; do
    # CONCURRENCY files, cycling through the edge files from a different start each round.
    set -- $EDGE
    n=$#
    picks=""
    k=0
    while [ $k -lt "$CONCURRENCY" ]; do
        idx=$(((k + round - 1) % n + 1))
        eval "picks=\"\$picks \${$idx}\""
        k=$((k + 1))
    done
    echo "round $round: $CONCURRENCY at once:$picks"
    # shellcheck disable=SC2086
    burst $picks | check
    echo "  -> VmHWM $(hwm) kB, CPU $(cpu) s"
    round=$((round + 1))
done
echo "past the budget, all at once:"
# shellcheck disable=SC2086
burst $PAST | check
echo "  -> VmHWM $(hwm) kB, CPU $(cpu) s"
echo "worst-case: server log $(wc -l <"$WORK/server.log") lines, $(grep -c 'panicked' "$WORK/server.log" || true) panics"
[ ! -s "$WORK/failed" ] || { echo "worst-case: FAILED (unexpected statuses)"; exit 1; }
echo "worst-case: OK"
