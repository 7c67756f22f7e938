#!/usr/bin/env bash
# Builds the Function Compute package of resnet18-fc: a `dist/` directory that `s deploy`
# zips and uploads (s.yaml: `code: ./dist`). s.yaml runs it, without arguments, before every
# `s deploy` and `s local`.
#
#   dist/bootstrap                     entry point FC runs (mode 0755)
#   dist/resnet18-fc                   release binary: glibc <= 2.28 (or static), no OpenSSL
#   dist/model/resnet18.safetensors    the weights (f32, or f16 with --f16)
#   dist/model/MANIFEST                provenance and sha256s, when the weights came with one
#
# Usage: scripts/package.sh [--weights FILE] [--f16 | --f32] [--out DIR] [--binary FILE]
#                           [--max-glibc X.Y] [--no-portability-check]
#
#   --weights FILE     import these weights into model/ first: a TorchVision .pth checkpoint is
#                      converted (to f16 with --f16), a .safetensors file is copied
#   --f16 / --f32      precision to package: model/resnet18-f16.safetensors (half the size) or
#                      model/resnet18.safetensors. The choice is kept in model/precision, so a
#                      later run without arguments (the one `s deploy` makes) packages the same.
#                      Default: the kept choice, else f32.
#   --out DIR          where to lay out the package (default: dist)
#   --binary FILE      package this binary instead of building one (it is still checked);
#                      also $RESNET18_FC_BINARY
#   --max-glibc X.Y    newest glibc symbol version the binary may need (default 2.28 = Debian 10,
#                      the oldest glibc among FC's custom.debian10/11/12 images); also
#                      $RESNET18_FC_MAX_GLIBC
#   --no-portability-check
#                      skip the glibc/OpenSSL check (only for local experiments with a host build)
#
# Weights never need downloading twice: they live in model/ (not in dist/, which every run
# empties). When the chosen file is missing there, the script runs `resnet18-fc fetch-model`
# (download from download.pytorch.org, sha256-verified) into model/ once.
# $RESNET18_FC_MODEL_DIR names another directory than model/ (CI uses one for synthetic weights).
#
# Building: `cargo zigbuild --release --target x86_64-unknown-linux-gnu.2.28` links against
# glibc 2.28 symbol versions (install once: `pip install cargo-zigbuild ziglang`). When the musl
# target is installed (`rustup target add x86_64-unknown-linux-musl`), a static musl build is
# used instead of failing. Without either, the script stops and says what to install.
#
# Runs on Linux x86_64 only (no GNU-only find options, no bash-4 features): it runs the binary it
# packages to convert and download weights. On macOS or Windows use a Linux VM or container.
set -euo pipefail

repo=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
out="$repo/dist"
model="$repo/model"
weights=""
binary="${RESNET18_FC_BINARY:-}"
precision=""
max_glibc="${RESNET18_FC_MAX_GLIBC:-2.28}"
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
        --f16) precision=f16; shift ;;
        --f32) precision=f32; shift ;;
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

# Linux x86_64 only: the packaged binary is run below (convert, fetch-model).
require_linux_x86_64() {
    local os arch
    os=$(uname -s)
    arch=$(uname -m)
    [ "$os" = Linux ] && [ "$arch" = x86_64 ] ||
        die "this script runs on Linux x86_64 only (here: $os $arch): it runs the Linux binary it
packages to convert and download the weights. Use a Linux x86_64 VM or container."
}

# The precision to package: --f16/--f32, else the one kept in model/precision, else f32.
choose_precision() {
    if [ -z "$precision" ] && [ -f "$model/precision" ]; then
        precision=$(tr -d ' \n' <"$model/precision")
        say "precision $precision (kept in model/precision from an earlier run; --f32 / --f16 to change)"
    fi
    case "${precision:-f32}" in
    f32 | f16) precision=${precision:-f32} ;;
    *) die "model/precision says '$precision'; expected f32 or f16 (delete the file to reset)" ;;
    esac
}

# model/ file holding the weights of a precision.
weights_file() {
    if [ "$1" = f16 ]; then echo "$model/resnet18-f16.safetensors"; else echo "$model/resnet18.safetensors"; fi
}

# --weights FILE: converts or copies it into model/ (kept there for later runs).
import_weights() {
    local bin="$1" target
    target=$(weights_file "$precision")
    [ -f "$weights" ] || die "--weights $weights: no such file"
    case "$weights" in
    *.safetensors)
        [ "$precision" = f32 ] || die "--f16 converts TorchVision .pth checkpoints; pass the .pth file, not a .safetensors"
        if [ "$weights" != "$target" ]; then
            cp "$weights" "$target"
            rm -f "$model/MANIFEST"
            if [ -f "$(dirname "$weights")/MANIFEST" ]; then cp "$(dirname "$weights")/MANIFEST" "$model/MANIFEST"; fi
        fi
        ;;
    *)
        say "converting $weights to $precision in $target"
        if [ "$precision" = f32 ]; then rm -f "$model/MANIFEST"; fi
        "$bin" convert --dtype "$precision" "$weights" "$target" >&2 || die "could not convert $weights"
        ;;
    esac
}

# Downloads the checkpoint once and converts it into model/ (fetch-model writes
# <dir>/resnet18.safetensors and <dir>/MANIFEST; f16 goes through a scratch directory).
fetch_weights() {
    local bin="$1" target dir
    target=$(weights_file "$precision")
    say "$target not found: running resnet18-fc fetch-model (once; the result stays in model/)"
    dir="$model"
    if [ "$precision" = f16 ]; then dir="$model/.fetch-f16"; rm -rf "$dir"; fi
    "$bin" fetch-model --model-dir "$dir" --dtype "$precision" >&2 || die "could not download the weights.
This machine probably has no internet access. Either:
  - on a machine with internet, download https://download.pytorch.org/models/resnet18-f37072fd.pth
    (sha256 f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec), copy it here and run
    scripts/package.sh --weights resnet18-f37072fd.pth   (add --f16 for half-size weights)
  - or copy an existing model/resnet18.safetensors (made by 'resnet18-fc fetch-model') into model/"
    if [ "$precision" = f16 ]; then
        mv "$dir/resnet18.safetensors" "$target"
        rm -rf "$dir"
    fi
}

# Puts the chosen weights of model/ into $out/model/resnet18.safetensors (the path bootstrap
# loads) and keeps the choice in model/precision.
install_weights() {
    local bin="$1" source
    mkdir -p "$model" "$out/model"
    if [ -n "$weights" ]; then import_weights "$bin"; fi
    source=$(weights_file "$precision")
    [ -f "$source" ] || fetch_weights "$bin"
    cp "$source" "$out/model/resnet18.safetensors"
    if [ "$precision" = f32 ] && [ -f "$model/MANIFEST" ]; then cp "$model/MANIFEST" "$out/model/"; fi
    printf '%s\n' "$precision" >"$model/precision"
    say "weights: $source ($precision)"
}

report() {
    local bytes=0 size file
    say "package ready in $out:"
    for file in "$out"/bootstrap "$out"/resnet18-fc "$out"/model/*; do
        [ -f "$file" ] || continue
        size=$(wc -c <"$file" | tr -d ' ')
        bytes=$((bytes + size))
        printf '  %s %10s  ./%s\n' "$(ls -l "$file" | cut -c1-10)" "$size" "${file#"$out"/}" >&2
    done
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
    [ -z "${RESNET18_FC_MODEL_DIR:-}" ] || model=$(absolute "$RESNET18_FC_MODEL_DIR")
    parse_args "$@"
    require_linux_x86_64
    choose_precision
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
