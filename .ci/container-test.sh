#!/usr/bin/env bash
# The receiver's container image, for real, with podman: built from the serve asset that
# .ci/run built (the same binary the release attaches), inspected, and run on the host's
# network in front of a stand-in Coveralls on loopback. A signed CircleCI delivery is closed;
# with Coveralls down, a second one is queued; `podman stop` ends it (exit 0 within 10 s);
# a new container on the same volume sends the pending close once Coveralls is back.
# Where podman cannot run a container at all here, it says SKIPPED and why.
#
#   container-test.sh dist/coveralls-finish-serve-x86_64-unknown-linux-musl
set -euo pipefail
cd "$(dirname "$0")/.."
asset=${1:?usage: container-test.sh SERVE_ASSET}

skip() {
    echo "SKIPPED: the container test: $*" >&2
    exit 0
}
fail() {
    echo "container test: $*" >&2
    exit 1
}
command -v podman >/dev/null || skip "podman is not installed"

scratch=$(mktemp -d)
fake_pid=
cleanup() {
    [ -n "$fake_pid" ] && kill "$fake_pid" 2>/dev/null
    pod rm -af >/dev/null 2>&1 || true
    pod volume rm -af >/dev/null 2>&1 || true
    pod rmi -af >/dev/null 2>&1 || true
    rm -rf "$scratch" image
}
trap cleanup EXIT

# What a sandbox needs: runc (crun cannot start containers under hybrid cgroups), ulimits
# within this machine's hard limits, no systemd; storage of its own, removed at the end.
nofile=$(ulimit -Hn)
nproc=$(ulimit -Hu)
if [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; then
    nproc=32768
fi
cat >"$scratch/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF=$scratch/containers.conf
pod() {
    podman --root "$scratch/root" --runroot "$scratch/runroot" --storage-driver vfs "$@"
}

# Can podman start a container here at all? A static binary of the host's, in an image of
# its own: a failure here is the machine's, not the receiver's.
mkdir "$scratch/probe"
cp /sbin/ldconfig "$scratch/probe/probe"
printf 'FROM scratch\nCOPY probe /probe\nENTRYPOINT ["/probe", "--version"]\n' >"$scratch/probe/Containerfile"
pod build -q -t probe "$scratch/probe" >/dev/null 2>"$scratch/probe.err" ||
    skip "podman cannot build an image here: $(tail -n 1 "$scratch/probe.err")"
pod run --rm --network host probe >/dev/null 2>"$scratch/probe.err" ||
    skip "podman cannot run a container here: $(tail -n 1 "$scratch/probe.err")"

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
mkdir -p image/linux/amd64
install -m 0755 "$asset" image/linux/amd64/coveralls-finish
pod build -q --format docker --build-arg TARGETARCH=amd64 --build-arg VERSION="$version" \
    -t coveralls-finish:ci -f Containerfile . >/dev/null
echo "built coveralls-finish:ci from $asset"

inspect() { pod image inspect coveralls-finish:ci --format "$1"; }
[ "$(inspect '{{.Config.User}}')" = 65532:65532 ] || fail "the image does not run as 65532"
[ "$(inspect '{{json .Config.Entrypoint}}')" = '["/coveralls-finish","serve"]' ] ||
    fail "the entrypoint is $(inspect '{{json .Config.Entrypoint}}')"
inspect '{{json .Config.Volumes}}' | grep -q '"/state"' || fail "no volume at /state"
for label in source version licenses description; do
    value=$(inspect "{{index .Config.Labels \"org.opencontainers.image.$label\"}}")
    [ -n "$value" ] || fail "no org.opencontainers.image.$label label"
done
[ "$(inspect '{{index .Config.Labels "org.opencontainers.image.version"}}')" = "$version" ] ||
    fail "the version label is not $version"
inspect '{{json .Config.Healthcheck}}' | grep -q healthcheck || fail "no HEALTHCHECK"
echo "inspected: user 65532, entrypoint serve, volume /state, OCI labels, a HEALTHCHECK"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
coveralls_port=$(free_port)
receiver_port=$(free_port)
record=$scratch/closes.jsonl
: >"$record"
coveralls_up() {
    python3 .github/fake_coveralls.py "$coveralls_port" "$record" 2>/dev/null &
    fake_pid=$!
}
coveralls_down() {
    kill "$fake_pid"
    wait "$fake_pid" 2>/dev/null || true
    fake_pid=
}

secret=container-test-webhook-secret
start_receiver() { # container name
    # The HEALTHCHECK's timer needs systemd; the test runs the check itself, below.
    pod run -d --name "$1" --network host -v state:/state --health-interval disable \
        -e COVERALLS_REPO_TOKEN=container-test-repo-token \
        -e CIRCLECI_WEBHOOK_SECRET="$secret" \
        -e COVERALLS_ENDPOINT="http://127.0.0.1:$coveralls_port" \
        -e COVERALLS_FINISH_LISTEN="127.0.0.1:$receiver_port" \
        -e COVERALLS_FINISH_RETRY_SCHEDULE=200ms \
        coveralls-finish:ci >/dev/null 2>"$scratch/run.err" || fail "podman run: $(cat "$scratch/run.err")"
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$receiver_port/healthz" >/dev/null && return 0
        sleep 0.2
    done
    pod logs "$1" >&2
    fail "the receiver in $1 never answered /healthz"
}

# A signed workflow-completed delivery of workflow $1; the answer's status.
deliver() {
    local body signature
    body="{\"id\":\"event-$1\",\"type\":\"workflow-completed\",\"workflow\":{\"id\":\"$1\",\"name\":\"test\",\"status\":\"success\"},\"project\":{\"id\":\"p\",\"slug\":\"gh/acme/api\"}}"
    signature=$(printf %s "$body" | openssl dgst -sha256 -hmac "$secret" | sed 's/^.* //')
    curl -s -o "$scratch/answer" -w '%{http_code}' \
        -H "circleci-event-type: workflow-completed" -H "circleci-signature: v1=$signature" \
        -H "content-type: application/json" --data-binary "$body" \
        "http://127.0.0.1:$receiver_port/circleci"
}

closed() { grep -c "\"build_num\": \"$1\"" "$record" || true; }

coveralls_up
start_receiver first
pod healthcheck run first >/dev/null || fail "the image's HEALTHCHECK does not pass"
echo "the image's HEALTHCHECK (coveralls-finish healthcheck, no shell) passes"
[ "$(deliver wf-closed)" = 200 ] || fail "the first delivery was not closed: $(cat "$scratch/answer")"
[ "$(closed wf-closed)" = 1 ] || fail "Coveralls did not get the close of wf-closed"
echo "a signed CircleCI delivery, closed by the receiver in the container"

coveralls_down
[ "$(deliver wf-pending)" = 202 ] || fail "with Coveralls down, not queued: $(cat "$scratch/answer")"
started=$(date +%s%N)
pod stop -t 10 first >/dev/null 2>&1
took=$(( ($(date +%s%N) - started) / 1000000 ))
code=$(pod inspect first --format '{{.State.ExitCode}}')
pod logs first 2>&1 | grep -q "1 closes pending" || { pod logs first >&2; fail "the stop line does not say what stays pending"; }
[ "$code" = 0 ] || fail "podman stop: exit $code"
[ "$took" -lt 10000 ] || fail "podman stop took $took ms"
echo "podman stop: exit 0 after $took ms, one close pending in the volume"

coveralls_up
start_receiver second
for _ in $(seq 100); do
    [ "$(closed wf-pending)" = 1 ] && break
    sleep 0.2
done
[ "$(closed wf-pending)" = 1 ] || { pod logs second >&2; fail "the pending close was not sent after the restart"; }
[ "$(closed wf-closed)" = 1 ] || fail "wf-closed was closed again"
echo "a new container on the same volume sent the pending close, and nothing twice"
