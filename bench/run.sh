#!/usr/bin/env bash
# Benchmarks coveralls-finish against its peers, side by side in one run, on loopback:
# closing one build over plain HTTP and over HTTPS (wall time, peak RSS), the release assets'
# sizes, and the receiver's throughput: durable, beside the in-memory receiver it replaced, with
# Coveralls stalled, and under attack.
# `bash bench/run.sh` for the figures in BENCHMARKS.md; `bash bench/run.sh --smoke` for a
# quick run that only proves the benchmark still works.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

runs=${BENCH_RUNS:-30} deliveries=${BENCH_DELIVERIES:-20000} connections=${BENCH_CONNECTIONS:-8 32}
smoke=
if [ "${1:-}" = --smoke ]; then
    smoke=1 runs=3 deliveries=500 connections=8
fi
# Each tool is given the stand-in's CA, and nothing else: the machine's own trust settings are
# left out (an SSL_CERT_DIR makes rustls read every file in it, 7 ms for 300 certificates).
unset SSL_CERT_DIR SSL_CERT_FILE
# The last commit whose receiver closed in memory, without a store, measured beside today's;
# BENCH_OLD_RECEIVER=<commit> measures another beside it (the one before a change, say).
old_receiver=${BENCH_OLD_RECEIVER:-304c56a}
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

# Start a server in the background that prints its URL on its first line (or says
# "listening on URL"); its URL.
started_url() { # log file
    for _ in $(seq 100); do
        if [ -s "$1" ]; then
            sed -n -e 's/.*listening on //p' -e '1{/^http/p}' "$1" | head -n 1
            return 0
        fi
        sleep 0.1
    done
    echo "a server did not start: $(cat "$1")" >&2
    exit 1
}

echo "== machine"
echo "$(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sm)"
grep -m1 'model name' /proc/cpuinfo | sed 's/.*: /cpu: /' || true
echo "rustc: $(rustc --version)"

echo "== building (release profile, and the release assets where the musl target is installed)"
cargo build --release --locked --quiet --bin coveralls-finish --example fake_coveralls --example receiver_load
closer=$PWD/target/release/coveralls-finish
receiver=$PWD/target/release/coveralls-finish
if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    bash .github/build-asset.sh x86_64-unknown-linux-musl closer >/dev/null
    bash .github/build-asset.sh x86_64-unknown-linux-musl serve >/dev/null
    closer=$PWD/dist/coveralls-finish-x86_64-unknown-linux-musl
    receiver=$PWD/dist/coveralls-finish-serve-x86_64-unknown-linux-musl
fi
echo "closer: $closer"
echo "receiver: $receiver"
old=
if [ -n "$smoke" ]; then
    echo "the in-memory receiver: not built in a smoke run"
elif git cat-file -e "$old_receiver^{commit}" 2>/dev/null; then
    mkdir "$work/old"
    git archive "$old_receiver" | tar -x -C "$work/old"
    (cd "$work/old" && cargo build --release --locked --quiet --target-dir "$repo/target/bench-old")
    old=$repo/target/bench-old/release/coveralls-finish
    echo "the in-memory receiver ($old_receiver): $old"
else
    echo "the in-memory receiver: commit $old_receiver is not in this clone, so not measured"
fi

echo "== peers"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --disable-pip-version-check coveralls
echo "coveralls-python $("$work/venv/bin/coveralls" --version)"
curl --version | head -n 1

mkdir "$work/tls"
target/release/examples/fake_coveralls >"$work/fake.log" 2>&1 &
pids+=($!)
target/release/examples/fake_coveralls 127.0.0.1:0 --tls "$work/tls" >"$work/fake-tls.log" 2>&1 &
pids+=($!)
target/release/examples/fake_coveralls 127.0.0.1:0 --stall >"$work/fake-stall.log" 2>&1 &
pids+=($!)
endpoint=$(started_url "$work/fake.log")
tls_endpoint=$(started_url "$work/fake-tls.log")
stall_endpoint=$(started_url "$work/fake-stall.log")
ca=$work/tls/ca.pem

token=bench-token-0123456789
export COVERALLS_REPO_TOKEN=$token COVERALLS_SERVICE_NUMBER=4193273239
body='{"payload":{"build_num":"4193273239","status":"done"}}'
# The tools run where a finishing job runs: no checkout (not a git work tree).
cd "$work"
echo "== closing one build against a local Coveralls over plain HTTP, at $endpoint"
python3 "$repo/bench/measure.py" "$runs" \
    "coveralls-finish=env COVERALLS_ENDPOINT=$endpoint $closer" \
    "coveralls --finish (python)=env COVERALLS_HOST=$endpoint $work/venv/bin/coveralls --finish" \
    "curl (documented request)=curl -sf -X POST -H 'Content-Type: application/json' -d '$body' '$endpoint/webhook?repo_token=$token'"

echo "== closing one build over HTTPS, at $tls_endpoint (a private CA, trusted by each tool)"
python3 "$repo/bench/measure.py" "$runs" \
    "coveralls-finish=env COVERALLS_ENDPOINT=$tls_endpoint SSL_CERT_FILE=$ca $closer" \
    "coveralls --finish (python)=env COVERALLS_HOST=$tls_endpoint REQUESTS_CA_BUNDLE=$ca $work/venv/bin/coveralls --finish" \
    "curl (documented request)=curl -sf --cacert $ca -X POST -H 'Content-Type: application/json' -d '$body' '$tls_endpoint/webhook?repo_token=$token'"

cd "$repo"
echo "== size"
for binary in "$closer" "$receiver"; do
    bytes=$(wc -c <"$binary")
    awk -v f="$binary" -v b="$bytes" 'BEGIN { printf "%s: %d bytes (%.2f MiB)\n", f, b, b / 1048576 }'
done
echo "(the budget: 1.75 MiB for the closer alone, the asset the GitHub Action downloads)"

# A receiver in front of a stand-in (the plain-HTTP one unless ENDPOINT says), with a state
# file of its own and the projects file $config if it is set; its URL in $url (not in a
# subshell, so that the cleanup knows its process).
receivers=0
start_receiver() { # binary, log file, then VAR=value settings
    local binary=$1 log=$2
    shift 2
    receivers=$((receivers + 1))
    env COVERALLS_ENDPOINT="$endpoint" CIRCLECI_WEBHOOK_SECRET=bench-webhook-secret \
        COVERALLS_FINISH_STATE="$work/state-$receivers.sqlite3" "$@" \
        "$binary" serve --listen 127.0.0.1:0 ${config:+--config "$config"} >/dev/null 2>"$log" &
    pids+=($!)
    url=$(started_url "$log")
}

# The store's commits so far, from /metrics (0 for a receiver without a store).
commits() { # receiver URL
    curl -sf "$1/metrics" 2>/dev/null |
        sed -n 's/^coveralls_finish_store_commits_total \([0-9]*\).*/\1/p' | grep . || echo 0
}

# Deliveries to a receiver, and what its store committed for them.
load() { # label, receiver URL, then receiver_load's arguments
    local label=$1 url=$2 before after
    shift 2
    echo "$label:"
    before=$(commits "$url")
    target/release/examples/receiver_load "$url" bench-webhook-secret "$@"
    after=$(commits "$url")
    if [ "$after" -gt "$before" ]; then
        echo "  the store: $((after - before)) commits for $1 deliveries' records and closes' outcomes ($(awk -v d="$1" -v c=$((after - before)) 'BEGIN { printf "%.1f", 2 * d / c }') rows a commit)"
    fi
}

echo "== receiver: signed workflow-completed deliveries on loopback, Coveralls answering at once"
start_receiver "$receiver" "$work/serve.log"
new_url=$url
old_url=
if [ -n "$old" ]; then
    start_receiver "$old" "$work/serve-old.log"
    old_url=$url
fi
for n in $connections; do
    for fresh in "" --fresh; do
        load "today's receiver (durable: SQLite, group commit)" "$new_url" "$deliveries" "$n" ${fresh:+"$fresh"}
        if [ -n "$old_url" ]; then
            load "the in-memory receiver ($old_receiver)" "$old_url" "$deliveries" "$n" ${fresh:+"$fresh"}
        fi
    done
done

echo "== receiver: each source's route, one receiver with a projects file, Coveralls answering at once"
cat >"$work/projects.toml" <<'EOF'
[[project]]
name = "bench"
circleci_slug = "gh/bench/receiver"
github_repository = "bench/receiver"
gitlab_project = "bench/receiver"
workflows = ["test"]
repo_token = "bench-token"
EOF
for n in $connections; do
    # A receiver for each round: a store holds at most 100,000 deliveries.
    config=$work/projects.toml start_receiver "$receiver" "$work/serve-sources-$n.log" \
        GITHUB_WEBHOOK_SECRET=bench-webhook-secret GITLAB_WEBHOOK_SECRET=bench-webhook-secret
    for source in circleci github gitlab; do
        load "POST /$source (signed; GitLab's with its secret token), kept alive" "$url" "$deliveries" "$n" --source "$source"
    done
done

echo "== receiver with Coveralls stalled (every close hangs): the acknowledgement does not wait"
stalled=$((deliveries / 4))
endpoint=$stall_endpoint start_receiver "$receiver" "$work/serve-stall.log"
load "answer wait 1s (the default): p99 must stay under 1.05 s" "$url" "$stalled" 32
endpoint=$stall_endpoint start_receiver "$receiver" "$work/serve-stall0.log" COVERALLS_FINISH_ANSWER_WAIT=0s
load "answer wait 0s: the durable throughput, Coveralls stalled" "$url" "$stalled" 32

echo "== receiver under attack: 500 idle and 64 slow-body connections held open"
idle=500 slow=64
if [ -n "$smoke" ]; then
    idle=50 slow=8
fi
target/release/examples/receiver_load "$new_url" bench-webhook-secret "$deliveries" 8 --idle "$idle" --slow "$slow"
