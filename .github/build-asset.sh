#!/usr/bin/env bash
# Builds one release asset into dist/: build-asset.sh TARGET closer|serve [CARGO SUBCOMMAND]
#
#   closer  coveralls-finish-TARGET: what the GitHub Action and CI users download on every run.
#           Without the receiver (--no-default-features), in the size-tuned profile `closer`;
#           for Linux also without PIE, without the unwind tables and their index (a panic
#           aborts, and the binary is stripped: a backtrace would be empty either way), and
#           without the padding that separates code from data. BENCHMARKS.md says what each
#           of these saves.
#   serve   coveralls-finish-serve-TARGET: the whole program, receiver included (profile
#           release: it unwinds, so one bad request cannot take the service down).
#
# Paths of the build machine are cut from panic locations in both. CARGO SUBCOMMAND is
# `build` (the default) or `zigbuild` for cross builds. Used by .github/workflows/release.yml
# and .ci/run, so that CI checks exactly what is released.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:?usage: build-asset.sh TARGET closer|serve [build|zigbuild]}
kind=${2:?usage: build-asset.sh TARGET closer|serve [build|zigbuild]}
subcommand=${3:-build}

exe=
case $target in *windows*) exe=.exe ;; esac
flags=()
for registry in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/; do
    flags+=("--remap-path-prefix=$registry=")
done
flags+=("--remap-path-prefix=$PWD=coveralls-finish")
case $kind in
    closer)
        profile=closer
        features=(--no-default-features)
        asset=coveralls-finish-$target$exe
        case $target in
            *linux*) flags+=(-C relocation-model=static -C "link-arg=-Wl,--no-eh-frame-hdr") ;;
        esac
        ;;
    serve)
        profile=release
        features=()
        asset=coveralls-finish-serve-$target$exe
        ;;
    *)
        echo "build-asset.sh: the kind is closer or serve, not $kind" >&2
        exit 2
        ;;
esac

# zig's linker (a cross build) takes no -z noseparate-code; the native one drops the padding.
if [ "$kind" = closer ] && [ "$subcommand" = build ]; then
    case $target in
        *linux*) flags+=(-C "link-arg=-Wl,-z,noseparate-code") ;;
    esac
fi

# (The odd expansion of features keeps bash 3.2, macOS's, happy with an empty array.)
RUSTFLAGS="${flags[*]}" cargo "$subcommand" --locked --profile "$profile" ${features[@]+"${features[@]}"} \
    --target "$target" --target-dir "target/asset-$kind"
mkdir -p dist
cp "target/asset-$kind/$target/$profile/coveralls-finish$exe" "dist/$asset"
# The closer aborts on a panic and is stripped, and without the unwind-table index nothing
# can walk its unwind tables: they go too (a sixth of the file), where the host's objcopy
# reads the binary (not for a cross build).
if [ "$kind" = closer ] && [ "$subcommand" = build ]; then
    case $target in
        *linux*) objcopy --remove-section=.eh_frame --remove-section=.gcc_except_table "dist/$asset" ;;
    esac
fi
echo "dist/$asset: $(wc -c <"dist/$asset") bytes"
