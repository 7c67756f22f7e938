#!/usr/bin/env bash
# The saved fuzz corpus: one compressed archive, corpus.tar.xz, holding corpus-min/<target>.
#
#   fuzz/corpus.sh unpack                 # corpus.tar.xz -> corpus-min/ (when not unpacked yet)
#   fuzz/corpus.sh save [target ...]      # merge, then rewrite corpus.tar.xz (default: every
#                                         # target with a corpus/<target>)
#
# save: libFuzzer's -merge=1 (binaries of the last `cargo fuzz build -D`) keeps, out of
# seeds/ + corpus-min/ + corpus/<target>, a subset of inputs with the same coverage features
# as the whole; that subset replaces corpus-min/<target>, and the archive is rewritten
# byte-for-byte reproducibly (sorted names, fixed owner and mtime). Run it with the fuzzers
# stopped, then commit fuzz/corpus.tar.xz.
set -euo pipefail
shopt -s inherit_errexit

cd "$(dirname "$0")"
archive=corpus.tar.xz

unpack() {
    if [ -d corpus-min ] || [ ! -f "$archive" ]; then
        return 0
    fi
    tar -xJf "$archive"
}

pack() {
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - corpus-min |
        xz -9 -T1 >"$archive.tmp"
    mv "$archive.tmp" "$archive"
    echo "corpus.sh: $archive $(du -k "$archive" | cut -f1) KiB"
}

merge() {
    local target=$1 bin=target/x86_64-unknown-linux-gnu/debug new log
    new=$(mktemp -d)
    log=$(mktemp)
    mkdir -p "corpus-min/$target" "corpus/$target"
    if ! "$bin/$target" -merge=1 -rss_limit_mb=2048 -timeout=20 "$new" \
        "seeds/$target" "corpus-min/$target" "corpus/$target" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        echo "corpus.sh: merge of $target failed (log above); corpus-min/$target unchanged" >&2
        rm -rf "$new" "$log"
        exit 1
    fi
    rm -rf "corpus-min/$target" "$log"
    mv "$new" "corpus-min/$target"
    chmod 755 "corpus-min/$target"
    echo "$target files=$(find "corpus-min/$target" -type f | wc -l) KiB=$(du -sk "corpus-min/$target" | cut -f1)"
}

case ${1:-} in
    unpack) unpack ;;
    save)
        shift
        unpack
        targets=("$@")
        if [ ${#targets[@]} -eq 0 ]; then
            for dir in corpus/*/; do targets+=("$(basename "$dir")"); done
        fi
        for target in "${targets[@]}"; do merge "$target"; done
        pack
        ;;
    *)
        echo "usage: fuzz/corpus.sh unpack | save [target ...]" >&2
        exit 2
        ;;
esac
