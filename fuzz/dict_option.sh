#!/bin/sh
# Prints libFuzzer's -dict option for a target, or nothing when it has no dictionary.
#
#   fuzz/dict_option.sh <target> <dir>
#
# The dictionary is dicts/<target>.dict joined with the shared dictionaries it names on
# "# include: <file>" lines (files in dicts/, e.g. json.dict), written to <dir>/<target>.dict.
# Used by campaign.sh and .ci/fuzz-smoke.sh.
set -eu
cd "$(dirname "$0")"
target=$1
out=$2/$target.dict
own=dicts/$target.dict
[ -f "$own" ] || exit 0
sed -n 's|^# include: *|dicts/|p' "$own" | xargs cat "$own" >"$out"
echo "-dict=$(cd "$2" && pwd)/$target.dict"
