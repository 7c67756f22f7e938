#!/usr/bin/env bash
# Which part of a target's coverage is resnet18-fc's own code, and has it stopped growing?
#
#   fuzz/own_coverage.sh <target> [minutes ...]
#
# Replays corpus/<target> + seeds/<target> (+ the committed corpus-min/<target>, if any) once
# (libFuzzer `-runs=0 -print_coverage=1`, the binary of the last `cargo fuzz build -D`) and sums
# the covered edges of the functions defined in the main crate's `src/` ("own") and of
# everything else (dependencies, std, the harness).
# For each MINUTES given, it replays again with only the corpus files last written more than that
# many minutes ago. Those files were all in the corpus at that time (libFuzzer only adds and
# deletes files), so if their own-code edges equal the full corpus's, no input found in those
# last minutes reached a new edge of our code: the growth of `cov:` that a campaign still shows
# is in dependencies (for example `url`'s IDNA tables), not in what we wrote.
# Prints one line per replay:  <target> <corpus subset> files=<n> own=<covered>/<total> other=<covered>
# Run it while the target's fuzzer is stopped, so the corpus does not change under it.
set -euo pipefail

cd "$(dirname "$0")"
target=$1
shift
bin=target/x86_64-unknown-linux-gnu/debug/$target
src=$(cd .. && pwd)/src/

# corpus-min/<target> when there is one (committed by save_corpus.sh), else nothing.
saved=()
[ -d "corpus-min/$target" ] && saved=("corpus-min/$target")

# Replays the given directories and prints "files=<n> own=<a>/<b> other=<c>".
replay() {
    local log
    log=$(mktemp)
    # A replay that fails (crash, timeout) would leave a partial coverage list: report it and
    # stop rather than print a number.
    if ! "$bin" -runs=0 -print_coverage=1 -rss_limit_mb=2048 -timeout=20 "$@" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        echo "own_coverage: replay of $* failed (log above)" >&2
        rm -f "$log"
        return 1
    fi
    local files
    files=$(find "$@" -type f | wc -l)
    # Lines: "COVERED_FUNC: hits: H edges: A/B <name> <file>:<line>" (UNCOVERED_FUNC: A = 0).
    awk -v src="$src" -v files="$files" '
        /^(UN)?COVERED_FUNC: / {
            split($5, e, "/")
            if (index($NF, src) == 1) { own += e[1]; total += e[2] } else { other += e[1] }
        }
        END { printf "files=%d own=%d/%d other=%d\n", files, own, total, other }
    ' "$log"
    rm -f "$log"
}

# A target that has never been fuzzed here has no corpus yet: replay its seeds.
mkdir -p "corpus/$target"
# (Assigned first, so that a failed replay stops the script through `set -e`.)
line=$(replay "corpus/$target" "seeds/$target" "${saved[@]}")
echo "$target all $line"
for minutes in "$@"; do
    older=$(mktemp -d)
    find "corpus/$target" -type f -mmin +"$minutes" -exec ln {} "$older/" \;
    line=$(replay "$older" "seeds/$target" "${saved[@]}") || { rm -rf "$older"; exit 1; }
    echo "$target older-than-${minutes}min $line"
    rm -rf "$older"
done
