#!/usr/bin/env bash
# Minimises what the campaigns found into the committed corpus-min/<target>, so that the next
# campaign, on another machine or a fresh clone, resumes from it instead of from the seeds.
#
#   fuzz/save_corpus.sh [target ...]      # default: every target with a corpus/<target>
#
# libFuzzer's -merge=1 (binary of the last `cargo fuzz build -D`) keeps, out of
# seeds/ + corpus-min/ + corpus/<target>, a subset of inputs with the same coverage features as
# the whole; the subset replaces corpus-min/<target>. campaign.sh, own_coverage.sh (and so
# own_plateau.sh) read corpus-min/<target> as one more read-only input directory.
# Run it with the targets' fuzzers stopped. Prints files and KiB per target.
set -euo pipefail
shopt -s inherit_errexit

cd "$(dirname "$0")"
bin=target/x86_64-unknown-linux-gnu/debug
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for dir in corpus/*/; do targets+=("$(basename "$dir")"); done
fi
for target in "${targets[@]}"; do
    new=$(mktemp -d)
    log=$(mktemp)
    mkdir -p "corpus-min/$target" "corpus/$target"
    if ! "$bin/$target" -merge=1 -rss_limit_mb=2048 -timeout=20 "$new" \
        "seeds/$target" "corpus-min/$target" "corpus/$target" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        echo "save_corpus: merge of $target failed (log above); corpus-min/$target unchanged" >&2
        rm -rf "$new" "$log"
        exit 1
    fi
    rm -rf "corpus-min/$target"
    mv "$new" "corpus-min/$target"
    chmod 755 "corpus-min/$target"
    echo "$target files=$(find "corpus-min/$target" -type f | wc -l) KiB=$(du -sk "corpus-min/$target" | cut -f1)"
    rm -f "$log"
done
