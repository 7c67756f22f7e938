#!/usr/bin/env bash
# Fuzz campaign: runs cargo-fuzz targets one after the other until coverage plateaus, and prints
# one summary row per target (the table of fuzz/README.md).
#
#   fuzz/campaign.sh [target ...]          # default: every target of `cargo fuzz list`
#
# Each target runs as one libFuzzer process (the equivalent of -jobs=1) on
# corpus/<target> (kept, git-ignored; new inputs go there) + seeds/<target> and, when present,
# corpus-min/<target> (read-only; unpacked from corpus.tar.xz, see corpus.sh), and is
# stopped with SIGINT once no new `cov:` value has appeared for $PLATEAU seconds (default 180),
# or after $CAP seconds (default 720) in any case. The equivalent manual command is
#   cargo +nightly fuzz run -D <target> corpus/<target> seeds/<target> -- \
#       -max_total_time=720 -rss_limit_mb=2048 -timeout=20 -print_final_stats=1
# Logs: logs/<target>.log (git-ignored). A crash stops the target, leaves its input in
# artifacts/<target>/ and makes the script exit 1 after the remaining targets.
# A target with a dictionary (dicts/<target>.dict) gets it as -dict (see dict_option.sh).
# Knobs: PLATEAU, CAP, PROFILE (-D: the dev profile, the default; "" for the optimised one),
# BUILD (0: run the binaries already built, e.g. while another build of fuzz/ is pending).
set -uo pipefail

cd "$(dirname "$0")" || exit 2
PLATEAU=${PLATEAU:-180}
CAP=${CAP:-720}
PROFILE=${PROFILE--D}
if [ "${BUILD:-1}" != 0 ]; then
    # shellcheck disable=SC2086 # $PROFILE is one word or none
    cargo +nightly fuzz build $PROFILE || exit 2
fi
./corpus.sh unpack
dir=target/x86_64-unknown-linux-gnu/$([ "$PROFILE" = "-D" ] && echo debug || echo release)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && mapfile -t targets < <(cargo +nightly fuzz list)
mkdir -p logs

# The highest `cov:` value libFuzzer has printed so far in $1 (0 before INITED).
max_cov() {
    grep -o 'cov: [0-9]*' "$1" 2>/dev/null | awk '$2 > m { m = $2 } END { print m + 0 }'
}

# corpus-min/<target> when there is one (see corpus.sh), else nothing.
saved() {
    [ -d "corpus-min/$1" ] && echo "corpus-min/$1"
    return 0
}

# Runs one target to plateau; prints its summary row; returns the fuzzer's verdict.
campaign() {
    local target=$1 log=logs/$1.log
    mkdir -p "corpus/$target" "artifacts/$target"
    local start best last now cov pid status plateaued
    start=$(date +%s)
    # shellcheck disable=SC2046 # saved and dict_option.sh print one word or none
    "$dir/$target" "corpus/$target" "seeds/$target" $(saved "$target") \
        -artifact_prefix="artifacts/$target/" -max_total_time="$CAP" -rss_limit_mb=2048 \
        -timeout=20 -print_final_stats=1 $(./dict_option.sh "$target" logs) >"$log" 2>&1 &
    pid=$!
    best=0
    plateaued=0
    last=$start
    while kill -0 "$pid" 2>/dev/null; do
        sleep 5
        now=$(date +%s)
        cov=$(max_cov "$log")
        if [ "$cov" -gt "$best" ]; then
            best=$cov
            last=$now
        elif [ $((now - last)) -ge "$PLATEAU" ] && grep -q INITED "$log"; then
            kill -INT "$pid" 2>/dev/null
            plateaued=1
            break
        fi
    done
    wait "$pid"
    status=$?
    summary "$target" "$log" $(($(date +%s) - start)) "$status" "$plateaued"
    # 0: ran to -max_total_time; 72: interrupted at the plateau (libFuzzer's -interrupted_exitcode).
    [ "$status" -eq 0 ] || [ "$status" -eq 72 ]
}

# | target | executions | exec/s | cov | ft | corpus files | corpus KiB | wall s | stop | exit |
summary() {
    local target=$1 log=$2 wall=$3 status=$4 plateaued=$5 stop
    local execs rate cov ft files kib
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    files=$(find "corpus/$target" -type f | wc -l)
    kib=$(du -sk "corpus/$target" | cut -f1)
    case $status in
        0) stop="cap ${CAP}s" ;;
        72) if [ "$plateaued" = 1 ]; then stop="plateau ${PLATEAU}s"; else stop="interrupted (SIGINT from outside, not a plateau)"; fi ;;
        *) stop="CRASH (see $log)" ;;
    esac
    echo "| \`$target\` | ${execs:-?} | ${rate:-?} | ${cov:-?} | ${ft:-?} | $files | $kib | $wall | $stop |"
}

failed=0
echo "| target | executions | exec/s | cov | ft | corpus files | corpus KiB | wall s | stopped by |"
echo "|---|---|---|---|---|---|---|---|---|"
for target in "${targets[@]}"; do
    campaign "$target" || failed=1
done
exit $failed
