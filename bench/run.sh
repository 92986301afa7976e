#!/usr/bin/env bash
# Benchmarks coveralls-finish against its peers, side by side in one run, on loopback:
# closing one build (wall time, peak RSS), the static release binary's size, and the
# receiver's throughput. `bash bench/run.sh` for the figures in BENCHMARKS.md;
# `bash bench/run.sh --smoke` for a quick run that only proves the benchmark still works.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${BENCH_RUNS:-30} deliveries=${BENCH_DELIVERIES:-20000} connections=${BENCH_CONNECTIONS:-8 32}
if [ "${1:-}" = --smoke ]; then
    runs=3 deliveries=500 connections=8
fi
if [ ! -x /usr/bin/time ]; then
    echo "bench/run.sh needs GNU time for peak RSS: apt-get install time" >&2
    exit 1
fi
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

echo "== machine"
echo "$(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sm)"
grep -m1 'model name' /proc/cpuinfo | sed 's/.*: /cpu: /' || true
echo "rustc: $(rustc --version)"

echo "== building (release profile)"
cargo build --release --locked --quiet --bin coveralls-finish --example fake_coveralls --example receiver_load
ours=$PWD/target/release/coveralls-finish
if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    cargo build --release --locked --quiet --target x86_64-unknown-linux-musl
    ours=$PWD/target/x86_64-unknown-linux-musl/release/coveralls-finish
fi
echo "measuring $ours"

echo "== peers"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --disable-pip-version-check coveralls
echo "coveralls-python $("$work/venv/bin/coveralls" --version)"
curl --version | head -n 1

target/release/examples/fake_coveralls >"$work/fake.addr" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
    [ -s "$work/fake.addr" ] && break
    sleep 0.1
done
endpoint=$(head -n 1 "$work/fake.addr")

echo "== closing one build against a local Coveralls at $endpoint"
token=bench-token-0123456789
export COVERALLS_REPO_TOKEN=$token COVERALLS_SERVICE_NUMBER=4193273239
body='{"payload":{"build_num":"4193273239","status":"done"}}'
python3 bench/measure.py "$runs" \
    "coveralls-finish=env COVERALLS_ENDPOINT=$endpoint $ours" \
    "coveralls --finish (python)=env COVERALLS_HOST=$endpoint $work/venv/bin/coveralls --finish" \
    "curl (documented request)=curl -sf -X POST -H 'Content-Type: application/json' -d '$body' '$endpoint/webhook?repo_token=$token'"

echo "== size"
bytes=$(wc -c <"$ours")
awk -v f="$ours" -v b="$bytes" 'BEGIN { printf "%s: %d bytes (%.2f MiB; the budget is 1.50 MiB)\n", f, b, b / 1048576 }'
file "$ours" | sed 's/^[^:]*: //'

echo "== receiver: signed workflow-completed deliveries on loopback, Coveralls answering at once"
COVERALLS_ENDPOINT=$endpoint CIRCLECI_WEBHOOK_SECRET=bench-secret \
    "$ours" serve --listen 127.0.0.1:0 >/dev/null 2>"$work/serve.log" &
pids+=($!)
for _ in $(seq 50); do
    grep -q 'listening on' "$work/serve.log" 2>/dev/null && break
    sleep 0.1
done
receiver=$(sed -n 's/.*listening on //p' "$work/serve.log")
for n in $connections; do
    target/release/examples/receiver_load "$receiver" bench-secret "$deliveries" "$n"
done
