#!/usr/bin/env bash
# Builds the Function Compute package of resnet18-fc: a `dist/` directory that `s deploy`
# zips and uploads (s.yaml: `code: ./dist`).
#
#   dist/bootstrap                     entry point FC runs (mode 0755)
#   dist/resnet18-fc                   release binary: glibc <= 2.28 (or static), no OpenSSL
#   dist/model/resnet18.safetensors    the weights (f32, or f16 with --f16)
#   dist/model/MANIFEST                provenance and sha256s, when the weights came with one
#
# Usage: scripts/package.sh [--out DIR] [--weights FILE] [--binary FILE] [--f16]
#                           [--max-glibc X.Y] [--no-portability-check]
#
#   --out DIR          where to lay out the package (default: dist)
#   --weights FILE     use these weights instead of model/resnet18.safetensors: a .safetensors
#                      file is copied, a TorchVision .pth checkpoint is converted
#   --binary FILE      package this binary instead of building one (it is still checked)
#   --f16              store the weights as float16 (half the package; needs a .pth or a download)
#   --max-glibc X.Y    newest glibc symbol version the binary may need (default 2.28 = Debian 10,
#                      the oldest glibc among FC's custom.debian10/11/12 images)
#   --no-portability-check
#                      skip the glibc/OpenSSL check (only for local experiments with a host build)
#
# Building: `cargo zigbuild --release --target x86_64-unknown-linux-gnu.2.28` links against
# glibc 2.28 symbol versions (install once: `pip install cargo-zigbuild ziglang`). When the musl
# target is installed (`rustup target add x86_64-unknown-linux-musl`), a static musl build is
# used instead of failing. Without either, the script stops and says what to install.
#
# Weights: when neither --weights nor model/resnet18.safetensors is there, it runs
# `resnet18-fc fetch-model` (download from download.pytorch.org, sha256-verified).
set -euo pipefail

repo=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
out="$repo/dist"
weights=""
binary=""
f16=0
max_glibc="2.28"
check=1
zig_target="x86_64-unknown-linux-gnu"
musl_target="x86_64-unknown-linux-musl"

die() {
    echo "package.sh: error: $*" >&2
    exit 1
}

say() {
    echo "package.sh: $*" >&2
}

absolute() {
    case "$1" in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$(pwd)" "$1" ;;
    esac
}

parse_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
        --out) out=$(absolute "${2:?--out needs a directory}"); shift 2 ;;
        --weights) weights=$(absolute "${2:?--weights needs a file}"); shift 2 ;;
        --binary) binary=$(absolute "${2:?--binary needs a file}"); shift 2 ;;
        --f16) f16=1; shift ;;
        --max-glibc) max_glibc="${2:?--max-glibc needs a version}"; shift 2 ;;
        --no-portability-check) check=0; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
        esac
    done
}

# Prints the path of a freshly built portable release binary (under $CARGO_TARGET_DIR when set).
build_binary() {
    cd "$repo"
    local target_dir
    target_dir=$(absolute "${CARGO_TARGET_DIR:-target}")
    if command -v cargo-zigbuild >/dev/null 2>&1; then
        say "building release binary with cargo-zigbuild for glibc $max_glibc"
        cargo zigbuild --release --locked --target "$zig_target.$max_glibc" >&2
        printf '%s\n' "$target_dir/$zig_target/release/resnet18-fc"
    elif grep -qx "$musl_target" <<<"$(rustup target list --installed 2>/dev/null)"; then
        say "building static release binary for $musl_target"
        cargo build --release --locked --target "$musl_target" >&2
        printf '%s\n' "$target_dir/$musl_target/release/resnet18-fc"
    else
        die "no portable toolchain found. Install one of:
  pip install cargo-zigbuild ziglang            (glibc $max_glibc build, works offline from PyPI)
  rustup target add $musl_target   (static build)
or pass --binary FILE to package a binary you built yourself."
    fi
}

# Newest GLIBC_x.y symbol version the binary needs, or "static" / "none".
# (Outputs are captured before grep: with pipefail, `objdump | grep -q` can fail on SIGPIPE.)
glibc_requirement() {
    command -v objdump >/dev/null 2>&1 || die "objdump not found (apt-get install binutils)"
    local headers symbols
    headers=$(objdump -p "$1")
    if ! grep -q 'NEEDED' <<<"$headers"; then
        echo static
        return
    fi
    symbols=$(objdump -T "$1")
    local newest
    newest=$(grep -o 'GLIBC_[0-9][0-9.]*' <<<"$symbols" | sed 's/GLIBC_//' | sort -uV | tail -1)
    echo "${newest:-none}"
}

check_portability() {
    local bin="$1" need newest libs
    need=$(glibc_requirement "$bin")
    case "$need" in
    static | none) say "binary needs no glibc symbols ($need)" ;;
    *)
        newest=$(printf '%s\n%s\n' "$need" "$max_glibc" | sort -V | tail -1)
        [ "$newest" = "$max_glibc" ] ||
            die "$bin needs GLIBC_$need, newer than $max_glibc: it would fail on FC's older custom runtimes with 'version GLIBC_$need not found'. Build with cargo-zigbuild (see --help)."
        say "binary needs glibc $need (limit $max_glibc)"
        ;;
    esac
    libs=$(objdump -p "$bin" | awk '/NEEDED/ {print $2}')
    if grep -Eq '^lib(ssl|crypto)\.' <<<"$libs"; then
        die "$bin links OpenSSL ($(tr '\n' ' ' <<<"$libs")): FC images ship different libssl versions; use rustls"
    fi
    say "shared libraries: $(tr '\n' ' ' <<<"$libs")"
}

# Installs the weights as $out/model/resnet18.safetensors.
install_weights() {
    local bin="$1" model_dir="$out/model" dtype=()
    [ "$f16" = 1 ] && dtype=(--dtype f16)
    mkdir -p "$model_dir"
    if [ -n "$weights" ]; then
        [ -f "$weights" ] || die "--weights $weights: no such file"
        case "$weights" in
        *.safetensors)
            [ "$f16" = 0 ] || die "--f16 converts TorchVision .pth checkpoints; pass the .pth file, not a .safetensors"
            cp "$weights" "$model_dir/resnet18.safetensors"
            local manifest
            manifest="$(dirname "$weights")/MANIFEST"
            if [ -f "$manifest" ]; then cp "$manifest" "$model_dir/MANIFEST"; fi
            ;;
        *) "$bin" convert "${dtype[@]}" "$weights" "$model_dir/resnet18.safetensors" >&2 ||
            die "could not convert $weights" ;;
        esac
    elif [ "$f16" = 0 ] && [ -f "$repo/model/resnet18.safetensors" ]; then
        cp "$repo/model/resnet18.safetensors" "$model_dir/"
        if [ -f "$repo/model/MANIFEST" ]; then cp "$repo/model/MANIFEST" "$model_dir/"; fi
    else
        say "weights not found locally: running resnet18-fc fetch-model"
        "$bin" fetch-model --model-dir "$model_dir" "${dtype[@]}" >&2 || die "could not download the weights.
This machine probably has no internet access. Either:
  - on a machine with internet, download https://download.pytorch.org/models/resnet18-f37072fd.pth
    (sha256 f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec), copy it here and run
    scripts/package.sh --weights resnet18-f37072fd.pth
  - or copy an existing model/resnet18.safetensors (made by 'resnet18-fc fetch-model') into model/"
    fi
}

report() {
    local bytes
    bytes=$(find "$out" -type f -printf '%s\n' | awk '{ total += $1 } END { print total }')
    say "package ready in $out:"
    (cd "$out" && find . -type f -printf '  %M %10s  %p\n' | sort -k3) >&2
    say "package size: $bytes bytes ($(du -sh "$out" | cut -f1) on disk). s deploy zips it; float weights"
    say "barely compress, so the upload is about as large. FC's limit via s deploy: 500 MB."
}

# Empties the output directory, refusing anything that does not look like an old package.
prepare_out() {
    if [ -d "$out" ] && [ -n "$(ls -A "$out")" ] && [ ! -f "$out/bootstrap" ]; then
        die "$out exists and is not a package made by this script; choose another --out"
    fi
    rm -rf "$out"
    mkdir -p "$out"
}

main() {
    parse_args "$@"
    [ -n "$binary" ] || binary=$(build_binary)
    [ -x "$binary" ] || die "binary $binary not found or not executable"
    if [ "$check" = 1 ]; then check_portability "$binary"; fi
    prepare_out

    install -m 0755 "$binary" "$out/resnet18-fc"
    install -m 0755 "$repo/bootstrap" "$out/bootstrap"
    install_weights "$out/resnet18-fc"
    chmod 0644 "$out"/model/*
    report
}

main "$@"
