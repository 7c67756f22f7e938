#!/usr/bin/env bash
# Fuzzes one target until our own code's coverage has been flat for WINDOW minutes.
#
#   fuzz/own_plateau.sh <target>
#
# Alternates campaign.sh runs of CHUNK seconds (resuming corpus/<target>) with
# `own_coverage.sh <target>`, which counts the edges of the main crate's src/ that the whole
# corpus covers. The corpus only gains coverage (libFuzzer adds inputs, and replaces one only by
# a smaller input with the same features), so when the count after a run equals the count
# after an earlier run that ended at least WINDOW minutes of fuzzing before, no input of those
# minutes reached a new edge of our code: it prints "own-code plateau" and exits 0. The test is
# "no count within the window exceeds the best count before it", not strict equality: a replay
# of http_request's corpus can count one edge fewer than the replay before (an edge reached only
# on some runs, seen 2026-12-04), and such a dip must neither end nor restart the window.
# Exits 3 when MAX seconds of fuzzing pass first, and 1 when a campaign run finds a crash or a
# replay fails.
# Knobs: WINDOW (minutes, 20), CHUNK (seconds per campaign run, 300), MAX (seconds, 3600);
# the build of the last `cargo fuzz build -D` is used (campaign.sh with BUILD=0).
set -euo pipefail
shopt -s inherit_errexit # a failed own_coverage.sh inside $(...) stops the script

cd "$(dirname "$0")"
target=$1
WINDOW=${WINDOW:-20}
CHUNK=${CHUNK:-300}
MAX=${MAX:-3600}
# own[i]: own-code edges after i chunks; own[0] is the corpus as this run found it.
own=()
own_edges() {
    local line
    line=$(./own_coverage.sh "$target")
    # Echoed, not `tee /dev/stderr`: when stderr is a log file, opening /dev/stderr reopens
    # that file and truncates it.
    echo "$line" >&2
    echo "$line" | awk '{ sub("own=", "", $4); split($4, e, "/"); print e[1] }'
}
# The largest of its arguments.
max() {
    printf '%s\n' "$@" | sort -n | tail -n 1
}
own[0]=$(own_edges)
back=$(((WINDOW * 60 + CHUNK - 1) / CHUNK)) # chunks in a window, rounded up
chunks=0
while [ $((chunks * CHUNK)) -lt "$MAX" ]; do
    BUILD=0 PLATEAU=$CHUNK CAP=$CHUNK ./campaign.sh "$target" | tail -n 1
    chunks=$((chunks + 1))
    own[chunks]=$(own_edges)
    if [ "$chunks" -ge "$back" ]; then
        before=$(max "${own[@]:0:chunks-back+1}")
        within=$(max "${own[@]:chunks-back+1}")
        if [ "$within" -le "$before" ]; then
            echo "$target: own-code plateau: ${own[chunks]} own edges (best $before), none new in the last $((back * CHUNK)) s of fuzzing ($((chunks * CHUNK)) s in all; after each chunk: ${own[*]})"
            exit 0
        fi
    fi
done
echo "$target: no own-code plateau within $MAX s (own edges after each ${CHUNK} s: ${own[*]})"
exit 3
