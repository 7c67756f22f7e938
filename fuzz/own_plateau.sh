#!/usr/bin/env bash
# Fuzzes one target until our own code's coverage has been flat for WINDOW minutes.
#
#   fuzz/own_plateau.sh <target>
#
# Alternates campaign.sh runs of CHUNK seconds (resuming corpus/<target>) with
# own_coverage.sh <target> WINDOW. Once the target has run for at least WINDOW minutes and the
# corpus files older than WINDOW minutes cover as many edges of the main crate's src/ as the
# whole corpus does, no input of the last WINDOW minutes reached a new edge of our code: it
# prints "own-code plateau" and exits 0. Exits 3 when MAX seconds of fuzzing pass first, and 1
# when a campaign run finds a crash or a replay fails. (libFuzzer replaces corpus files by
# smaller ones with newer times, which can only make the older subset cover less: the check
# errs towards "still growing".)
# Knobs: WINDOW (minutes, 20), CHUNK (seconds per campaign run, 300), MAX (seconds, 3600);
# the build of the last `cargo fuzz build -D` is used (campaign.sh with BUILD=0).
set -euo pipefail

cd "$(dirname "$0")"
target=$1
WINDOW=${WINDOW:-20}
CHUNK=${CHUNK:-300}
MAX=${MAX:-3600}
fuzzed=0
while [ "$fuzzed" -lt "$MAX" ]; do
    BUILD=0 PLATEAU=$CHUNK CAP=$CHUNK ./campaign.sh "$target" | tail -n 1
    fuzzed=$((fuzzed + CHUNK))
    report=$(./own_coverage.sh "$target" "$WINDOW")
    echo "$report"
    # Lines: "<target> all files=<n> own=<a>/<b> ..." and "<target> older-than-Wmin ... own=<c>/<b> ...".
    own_all=$(echo "$report" | awk '$2 == "all" { sub("own=", "", $4); split($4, e, "/"); print e[1] }')
    own_old=$(echo "$report" | awk '$2 ~ /^older/ { sub("own=", "", $4); split($4, e, "/"); print e[1] }')
    if [ "$fuzzed" -ge $((WINDOW * 60)) ] && [ "$own_all" = "$own_old" ]; then
        echo "$target: own-code plateau: $own_all own edges, none new in the last $WINDOW min ($fuzzed s fuzzed)"
        exit 0
    fi
done
echo "$target: no own-code plateau within $MAX s (own edges $own_old -> $own_all over the last $WINDOW min)"
exit 3
