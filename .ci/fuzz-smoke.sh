#!/bin/sh
# Fuzz smoke run for CI: every cargo-fuzz target for $FUZZ_SECONDS seconds (default 10) on the
# committed seeds (fuzz/seeds/<target>) and saved corpus (fuzz/corpus.tar.xz), in a
# throw-away corpus. Fails on any crash, leak or timeout; the crashing input is left in
# fuzz/artifacts/<target>/. See fuzz/README.md.
# Installs what it needs when missing: the nightly toolchain (rustup, minimal profile) and
# cargo-fuzz (crates.io, --locked).
set -eu
cd "$(dirname "$0")/../fuzz"
SECONDS_PER_TARGET=${FUZZ_SECONDS:-10}
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
# -D: the dev profile, which fuzz/Cargo.toml overrides to optimise every dependency (about 17
# minutes from scratch on 2 cores; replaying a corpus got 6.7-17x faster than with the earlier
# codec-only overrides, so the 10 s per target below explore far more inputs).
cargo +nightly fuzz build -D
./corpus.sh unpack
failed=""
for target in $(cargo +nightly fuzz list); do
    corpus=$(mktemp -d)
    scratch=$(mktemp -d)
    log=$scratch/log
    echo "fuzz-smoke: $target for ${SECONDS_PER_TARGET}s"
    # The target's dictionary, if any (fuzz/dicts/, see dict_option.sh), and the committed
    # minimised corpus of the last campaign, if any (corpus-min/, see corpus.sh): its
    # replay is a regression run over every input the campaigns kept.
    dict=$(./dict_option.sh "$target" "$scratch")
    saved=""
    if [ -d "corpus-min/$target" ]; then saved="corpus-min/$target"; fi
    # shellcheck disable=SC2086 # $saved and $dict are one word or none
    if ! cargo +nightly fuzz run -D "$target" "$corpus" "seeds/$target" $saved -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=20 \
        -print_final_stats=1 $dict >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        failed="$failed $target"
    fi
    grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb)|DONE" "$log" || true
    rm -rf "$corpus" "$scratch"
done
if [ -n "$failed" ]; then
    echo "fuzz-smoke: FAILED:$failed (inputs in fuzz/artifacts/<target>/)" >&2
    exit 1
fi
echo "fuzz-smoke: all targets clean"
