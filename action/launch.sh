#!/usr/bin/env bash
# Runs coveralls-finish for the GitHub Action: the prebuilt release binary pinned by
# action/VERSION and verified against action/SHA256SUMS (both committed, so the action's own
# ref pins them); built from the action's source only when no verified binary can be had.
# Settings arrive as COVERALLS_* variables (action.yml maps the inputs); the binary writes
# the step outputs itself. Works with bash 3.2 (macOS) and Git Bash (Windows).
set -euo pipefail

action_dir=${GITHUB_ACTION_PATH:?GITHUB_ACTION_PATH is not set: run this as a GitHub Action step}
temp=${RUNNER_TEMP:-${TMPDIR:-/tmp}}
if command -v cygpath >/dev/null 2>&1; then
    action_dir=$(cygpath -u "$action_dir")
    temp=$(cygpath -u "$temp")
fi

# Workflow command data: %, CR and LF escaped, so the text cannot end the command early.
escape() {
    local text=${1//%/%25}
    text=${text//$'\r'/%0D}
    printf '%s' "${text//$'\n'/%0A}"
}
warn() { printf '::warning title=coveralls-finish::%s\n' "$(escape "$1")"; }

# Setup failures obey fail-on-error like every other failure.
fail() {
    case ${COVERALLS_FAIL_ON_ERROR:-true} in
        false | False | FALSE)
            warn "$1 (fail-on-error is false, so this step succeeds anyway)"
            exit 0
            ;;
    esac
    printf '::error title=coveralls-finish::%s\n' "$(escape "$1")"
    exit 1
}

target() {
    case "${RUNNER_OS:-}/${RUNNER_ARCH:-}" in
        Linux/X64) echo x86_64-unknown-linux-musl ;;
        Linux/ARM64) echo aarch64-unknown-linux-musl ;;
        macOS/X64) echo x86_64-apple-darwin ;;
        macOS/ARM64) echo aarch64-apple-darwin ;;
        Windows/X64) echo x86_64-pc-windows-msvc ;;
        Windows/ARM64) echo aarch64-pc-windows-msvc ;;
        *) return 1 ;;
    esac
}

sha256() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d ' ' -f 1
    else
        shasum -a 256 "$1" | cut -d ' ' -f 1
    fi
}

# The verified binary at $1, or nothing: a file that does not match is removed, never run.
verified() {
    [ -f "$1" ] || return 1
    local actual
    actual=$(sha256 "$1")
    if [ "$actual" = "$expected" ]; then
        return 0
    fi
    warn "checksum mismatch for $asset: expected $expected, got $actual; not running it"
    rm -f "$1"
    return 1
}

download() {
    local base=${COVERALLS_FINISH_DOWNLOAD_BASE:-}
    if [ -z "$base" ]; then
        local repository=${ACTION_REPOSITORY:-}
        # github.action_repository is empty in composite actions (actions/runner#2525); the
        # runner checks actions out to …/_actions/OWNER/REPO/REF, which names it as well.
        if [ -z "$repository" ]; then
            repository=$(printf '%s\n' "$action_dir" | sed -n 's|.*/_actions/\([^/]*/[^/]*\)/.*|\1|p')
        fi
        [ -n "$repository" ] || return 1
        base="${GITHUB_SERVER_URL:-https://github.com}/$repository/releases/download"
    fi
    # https only; plain http just for a server on this machine (the launcher's own tests).
    local protocols='=https'
    case $base in
        http://127.0.0.1:* | http://localhost:*) protocols='=http,https' ;;
    esac
    local url="$base/v$version/$asset"
    echo "coveralls-finish: downloading $url"
    mkdir -p "$cache"
    if ! curl --proto "$protocols" --proto-redir "$protocols" --fail --silent --show-error \
        --location --retry 3 --connect-timeout 10 --max-time 120 \
        --output "$binary.part" "$url"; then
        rm -f "$binary.part"
        return 1
    fi
    mv "$binary.part" "$binary"
    chmod +x "$binary"
}

build_from_source() {
    if ! command -v cargo >/dev/null 2>&1; then
        fail "$1, and cargo is not available to build it from source"
    fi
    warn "$1; building coveralls-finish from the action's source instead (slower)"
    local target_dir="$temp/coveralls-finish-build"
    # The closer alone, as the release assets the action downloads are built.
    cargo build --profile closer --no-default-features --locked --quiet \
        --manifest-path "$action_dir/Cargo.toml" --target-dir "$target_dir" ||
        fail "building coveralls-finish from source failed"
    binary="$target_dir/closer/coveralls-finish$exe"
}

version=$(tr -d ' \r\n' <"$action_dir/action/VERSION")
exe=
case ${RUNNER_OS:-} in Windows) exe=.exe ;; esac

if ! target=$(target); then
    build_from_source "no prebuilt coveralls-finish for ${RUNNER_OS:-an unknown OS}/${RUNNER_ARCH:-an unknown architecture}"
else
    asset="coveralls-finish-$target$exe"
    expected=$(awk -v name="$asset" '$2 == name || $2 == "*" name { print $1 }' "$action_dir/action/SHA256SUMS")
    cache="$temp/coveralls-finish-$version-$target"
    binary="$cache/coveralls-finish$exe"
    if [ -z "$expected" ]; then
        build_from_source "action/SHA256SUMS has no checksum for $asset $version"
    elif verified "$binary"; then
        echo "coveralls-finish: using the verified binary cached in $cache"
    elif ! download; then
        build_from_source "could not download $asset $version"
    elif ! verified "$binary"; then
        build_from_source "the downloaded $asset $version failed verification"
    fi
fi

exec "$binary"
