#!/usr/bin/env bash
# Container test, with podman and locally made base images (no registry):
#  1. both images build and carry their HEALTHCHECK (podman's default OCI format drops it);
#  2. the stack with compose.yaml: a route POSTed and its result GET by key through the
#     server's published port (make verify too), the files on the volume, clean logs, a
#     kill -9 of the sidecar in the middle of a slow run after which the request completes,
#     each container stopping with exit 0 in under 10 s, down -v;
#  3. shared mode with compose.shared.yaml and --scale modelgen=3: 50 requests POSTed through
#     the server, one watcher killed (podman kill) while its model runs and left down, every
#     request answered with its own hash and scored once but for what the killed one had in
#     flight (request.done lines per key across the watchers' logs), its request taken over
#     by another, /readyz and /metrics meanwhile, the killed watcher back and healthy, down;
#  4. the same pod under `podman kube play`, from the podman variant of the kustomization:
#     make verify through it, both containers exit 0 on stop; then the shared variant: the
#     server's pod and two watchers' pods on one volume, make verify through it;
#  5. the cyclesafe target with compose.cyclesafe.yaml, built from a stand-in checkout
#     (tests/containers/cyclesafe-standin: upstream's layout and command line, pandas and
#     scikit-learn) with the model on an older Python than the watcher's (Debian bullseye's
#     3.9 against bookworm's 3.11): scores through the stack by the default runner (warm
#     workers through the cyclesafe adapter), then with MODELGEN_RUNNER=fork and
#     MODELGEN_RUNNER=subprocess, the one setting changed.
# It removes what it made (containers, volumes, pods, the tags it added, the images its
# builds replaced under its own tags) and nothing else: no prune.
#
#   make containers-check        (or: bash tests/containers/run.sh)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
eval "$(scripts/podman-setup.sh --model-base)"

PROJECT="${PROJECT:-cstest}"
export CS_PORT="${CS_PORT:-18009}"
KUBE_PORT="${KUBE_PORT:-$((CS_PORT + 1))}"
BASE="http://127.0.0.1:${CS_PORT}/rest/score"
MODELGEN="${PROJECT}_modelgen_1"
SERVER="${PROJECT}_server_1"
VOLUME="${PROJECT}_cs_pseudo_ipc"
VERSION="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' modelgen_watcher/__init__.py)"
POD="cyclesafe-pod-0"  # podman kube play names it after the Deployment
SHARED_POD="$PROJECT-cyclesafe-pod-0"  # the shared variant's, played with the project as a name prefix
SHARED_CLAIM="$PROJECT-cyclesafe-data"  # its claim, a named volume that kube down leaves
WATCHERS=("${PROJECT}_modelgen_1" "${PROJECT}_modelgen_2" "${PROJECT}_modelgen_3")
SHARED_FILES=(-f compose.yaml -f compose.shared.yaml -f tests/containers/compose.slow.yaml -f tests/containers/compose.shared-test.yaml)
IMAGES=(yoinkbird/cs_modelgen:latest yoinkbird/cs_server:latest yoinkbird/cs_modelgen:cyclesafe)
KUBE_TAGS=("yoinkbird/cs_modelgen:$VERSION" "yoinkbird/cs_server:$VERSION")
STANDIN_SCORES='[0.939394, 0.911523]'  # the stand-in's tree, fitted on the crash rows, predicts the table's shares
WORK="$(mktemp -d)"
compose() { podman-compose -p "$PROJECT" "$@" >"$WORK/compose.log" 2>&1 || { cat "$WORK/compose.log"; return 1; }; }
step() { echo "== [${SECONDS}s] $*"; }
fail() {
  echo "FAIL: $*"
  for c in "$MODELGEN" "$SERVER" "${WATCHERS[@]:1}" "$POD-modelgen" "$POD-server"; do
    podman container exists "$c" && { echo "--- $c"; podman logs "$c" 2>&1 | tail -20; }
  done
  exit 1
}
image_id() { podman image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }
replaced=()
for image in "${IMAGES[@]}"; do id="$(image_id "$image")"; [ -z "$id" ] || replaced+=("$id"); done
kube_tagged=()  # "TAG ID-it-named-before" (or "TAG -"), so the kube tags go back as they were
cleanup() {
  podman-compose -p "$PROJECT" down -v --remove-orphans >/dev/null 2>&1 || true
  for play in "$WORK/kube.yaml" "$WORK/kube-shared.yaml" "$WORK/kube-shared-b.yaml"; do
    [ ! -f "$play" ] || podman kube down "$play" >/dev/null 2>&1 || true
  done
  podman volume rm -f "$SHARED_CLAIM" >/dev/null 2>&1 || true
  for entry in "${kube_tagged[@]}"; do
    set -- $entry
    if [ "$2" = - ]; then podman untag "$1" "$1"; else podman tag "$2" "$1"; fi >/dev/null 2>&1 || true
  done
  # The images this run's builds replaced under its own tags, once nothing else names them.
  for id in "${replaced[@]}"; do
    [ "$(podman image inspect --format '{{len .RepoTags}}' "$id" 2>/dev/null)" = 0 ] && podman rmi "$id" >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
podman-compose -p "$PROJECT" down -v --remove-orphans >/dev/null 2>&1 || true

wait_healthy() {  # podman runs no health checks by itself here: run them until one passes
  local name="$1" deadline=$((SECONDS + 90))
  until podman healthcheck run "$name" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || fail "$name never became healthy"
    sleep 0.5
  done
}

stop_each() {  # each container stops with exit 0 in under 10 s
  local c start took code
  for c in "$@"; do
    start=$(date +%s.%N)
    podman stop -t 10 "$c" >/dev/null 2>&1  # stderr: podman's complaint that there is no systemd for health timers
    took=$(python3 -c "print(round($(date +%s.%N) - $start, 2))")
    code="$(podman inspect "$c" --format '{{.State.ExitCode}}')"
    echo "$c stopped in ${took}s with exit code $code"
    [ "$code" = 0 ] || fail "$c exited with $code"
    python3 -c "import sys; sys.exit(0 if $took < 10 else 1)" || fail "$c took ${took}s to stop"
  done
}

route() {  # a route whose first point's latitude is $1
  printf '{"routes":[{"legs":[{"steps":[{"end_location":{"lat":%s,"lng":-97.7367919},"maneuver":""},{"end_location":{"lat":30.29,"lng":-97.74},"maneuver":"turn-left"}]}]}]}' "$1"
}

json_get() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

verify() {  # make verify, as the README runs it, against a server's port
  make --no-print-directory verify VERIFY_URL="http://127.0.0.1:$1/rest/score" || fail "make verify against port $1"
}

has_healthcheck() {
  [ "$(podman image inspect --format '{{json .HealthCheck}}' "$1")" != null ] || fail "$1 has no HEALTHCHECK (built in OCI format?)"
}

step "build both images on $BASE_IMAGE (BUILDAH_FORMAT=$BUILDAH_FORMAT); each carries its health check"
for svc in modelgen server; do
  podman build -q -f "Dockerfile.$svc" --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "yoinkbird/cs_$svc:latest" . >/dev/null
  has_healthcheck "yoinkbird/cs_$svc:latest"
done
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep 'cs_.*:latest'

step "compose up (modelgen first, then the server once modelgen is healthy)"
compose -f compose.yaml up -d --no-build modelgen
wait_healthy "$MODELGEN"
compose -f compose.yaml up -d --no-build server
wait_healthy "$SERVER"

step "POST a route, GET its result"
route 30.2894657 > "$WORK/route.json"
ack="$(curl -sS --fail-with-body -H 'Content-Type: application/json' --data-binary "@$WORK/route.json" "$BASE/upload")" \
  || fail "upload: $ack"
key="$(echo "$ack" | json_get 'd["key"]')"
sha="$(echo "$ack" | json_get 'd["input_sha256"]')"
[ "$sha" = "$(sha256sum "$WORK/route.json" | cut -d' ' -f1)" ] || fail "upload hash $sha is not the route's"
result="$(curl -sS --fail-with-body "$BASE/retrieve?key=$key&wait=30")" || fail "retrieve: $result"
echo "$result" | json_get 'd["meta"]["input_sha256"]' | grep -qx "$sha" || fail "result names another input: $result"
echo "$result" | json_get '[p["score"] for p in d["routes"][0]]' | grep -qx '\[0.939394, 0.911523\]' \
  || fail "unexpected scores: $result"
legacy="$(curl -sS --fail-with-body "$BASE/retrieve")" || fail "legacy retrieve: $legacy"
echo "$legacy" | json_get 'json.loads(d)["totalScores"]' >/dev/null || fail "legacy answer is not double-encoded: $legacy"
echo "scored $key: $(echo "$result" | json_get 'd["totalScores"]')"
verify "$CS_PORT"

step "files on the volume"
vol="$(podman volume inspect "$VOLUME" --format '{{.Mountpoint}}')"
ls -ln "$vol"
[ -f "$vol/gps_input_route.$key.json" ] || fail "input missing on the volume"
json_get 'd["state"]' < "$vol/gps_scored_route.$key.status.json" | grep -qx ok || fail "status is not ok"
json_get 'd["meta"]["input_sha256"]' < "$vol/gps_scored_route.$key.json" | grep -qx "$sha" || fail "result hash"
[ "$(stat -c %u "$vol/gps_scored_route.$key.json")" = 10001 ] || fail "result not owned by uid 10001"

step "no error or traceback in either log"
for c in "$MODELGEN" "$SERVER"; do
  podman logs "$c" > "$WORK/$c.log" 2>&1
  if grep -nE 'Traceback|"level": ?"(error|critical)"' "$WORK/$c.log"; then fail "$c logged an error"; fi
  grep -q '"level"' "$WORK/$c.log" || fail "$c wrote no JSON log lines"
done
grep -q '"event": "request.done"' "$WORK/$MODELGEN.log" || fail "no request.done line in the sidecar's log"

step "kill -9 the sidecar during a slow run; the request completes after it starts again"
compose -f compose.yaml -f tests/containers/compose.slow.yaml up -d --no-build modelgen
wait_healthy "$MODELGEN"
route 30.3 > "$WORK/slow.json"
ack="$(curl -sS --fail-with-body -H 'Content-Type: application/json' --data-binary "@$WORK/slow.json" "$BASE/upload")"
key2="$(echo "$ack" | json_get 'd["key"]')"
sha2="$(echo "$ack" | json_get 'd["input_sha256"]')"
deadline=$((SECONDS + 30))
until [ -f "$vol/gps_scored_route.$key2.status.json" ] && json_get 'd["state"]' < "$vol/gps_scored_route.$key2.status.json" | grep -qx running; do
  [ "$SECONDS" -lt "$deadline" ] || fail "the slow request never started"
  sleep 0.2
done
podman kill -s KILL "$MODELGEN" >/dev/null
echo "killed $MODELGEN (status: running)"
podman wait "$MODELGEN" >/dev/null 2>&1 || true
podman start "$MODELGEN" >/dev/null 2>&1 || true  # the restart policy may already have done this
wait_healthy "$MODELGEN"
result="$(curl -sS --fail-with-body "$BASE/retrieve?key=$key2&wait=60")" || fail "retrieve after kill: $result"
echo "$result" | json_get 'd["meta"]["input_sha256"]' | grep -qx "$sha2" || fail "wrong result after the kill"
echo "request $key2 completed after the restart"

step "stop: each container exits 0 in under 10 s; down -v"
stop_each "$SERVER" "$MODELGEN"
podman-compose -p "$PROJECT" down -v >/dev/null 2>&1
podman volume exists "$VOLUME" && fail "volume $VOLUME still exists"

step "shared mode: compose.shared.yaml, --scale modelgen=3, 50 requests through the server, a watcher killed mid-run"
# The README's command (compose.yaml + compose.shared.yaml, --scale), with the test's slow model and no restarts.
compose "${SHARED_FILES[@]}" up -d --no-build --scale modelgen=3 modelgen
for c in "${WATCHERS[@]}"; do wait_healthy "$c"; done
compose "${SHARED_FILES[@]}" up -d --no-build --scale modelgen=3 server
wait_healthy "$SERVER"
ids=()
for c in "${WATCHERS[@]}"; do ids+=("$(podman exec "$c" hostname)"); done
echo "watcher ids (their host names): ${ids[*]}"
[ "$(printf '%s\n' "${ids[@]}" | sort -u | wc -l)" = 3 ] || fail "the replicas' watcher ids are not distinct: ${ids[*]}"
vol="$(podman volume inspect "$VOLUME" --format '{{.Mountpoint}}')"
python3 tests/containers/shared_load.py post "$BASE" 50 "$WORK/shared.json" || fail "posting 50 requests"
deadline=$((SECONDS + 90))
until [ "$(python3 tests/containers/shared_load.py done "$vol" "$WORK/shared.json")" -ge 10 ]; do
  [ "$SECONDS" -lt "$deadline" ] || fail "fewer than 10 requests scored in 90 s"
  sleep 0.2
done
victim=""  # a watcher whose model is running right now (the slow model's sleep)
deadline=$((SECONDS + 30))
until [ -n "$victim" ]; do
  for c in "${WATCHERS[@]}"; do
    if podman top "$c" args 2>/dev/null | grep -q '^sleep '; then victim="$c"; break; fi
  done
  [ -n "$victim" ] || [ "$SECONDS" -lt "$deadline" ] || fail "no watcher was running a model"
done
podman kill -s KILL "$victim" >/dev/null
echo "killed $victim in the middle of a run, $(python3 tests/containers/shared_load.py done "$vol" "$WORK/shared.json") of 50 done"
curl -sf "http://127.0.0.1:$CS_PORT/readyz" >/dev/null || fail "/readyz is not 200 with two watchers live"
python3 tests/containers/shared_load.py answers "$BASE" "$WORK/shared.json" 180 || fail "the 50 requests"
[ "$(podman inspect "$victim" --format '{{.State.Status}}')" = exited ] || fail "$victim came back: the takeover was not tested"
survivors=()
for c in "${WATCHERS[@]}"; do
  podman logs "$c" > "$WORK/$c.log" 2>&1
  [ "$c" = "$victim" ] || survivors+=("$WORK/$c.log")
done
python3 tests/containers/shared_load.py runs "$WORK/shared.json" "$WORK/$victim.log" "${survivors[@]}" || fail "runs per request"
# The killed watcher held a claim on the request its model was running: another took it over.
grep -h '"event": "claim.takeover"' "${survivors[@]}" | python3 -c '
import json, sys
for d in map(json.loads, sys.stdin):
    print("took over %s from watcher %s" % (d["key"], d.get("previous_watcher")))' | grep . \
  || fail "no watcher took over the killed one's request"
curl -sS --fail-with-body "http://127.0.0.1:$CS_PORT/metrics" > "$WORK/metrics.txt" || fail "/metrics"
grep -E '^modelgen_pending_requests(\{[^}]*\})? 0(\.0)?$' "$WORK/metrics.txt" || fail "modelgen_pending_requests is not 0 once all are answered"
for c in "${WATCHERS[@]}"; do
  [ "$c" = "$victim" ] && continue
  id="$(podman exec "$c" hostname)"
  grep -q "watcher=\"$id\"" "$WORK/metrics.txt" || fail "/metrics has no series of watcher $id ($c)"
done
podman logs "$SERVER" > "$WORK/shared-server.log" 2>&1
for log in "${survivors[@]}" "$WORK/shared-server.log"; do
  if grep -nE 'Traceback|"level": ?"(error|critical)"' "$log"; then fail "$(basename "$log") logged an error"; fi
done
podman start "$victim" >/dev/null
wait_healthy "$victim"
echo "$victim is back and healthy"
stop_each "$SERVER" "${WATCHERS[@]}"
podman-compose -p "$PROJECT" "${SHARED_FILES[@]}" down -v >/dev/null 2>&1
[ -z "$(podman ps -aq --filter "label=io.podman.compose.project=$PROJECT")" ] || fail "down left containers of $PROJECT"
podman volume exists "$VOLUME" && fail "volume $VOLUME still exists"

step "podman kube play: the pod from deploy/k8s-podman (the images tagged $VERSION, as the kustomization names them)"
for tag in "${KUBE_TAGS[@]}"; do
  before="$(image_id "$tag")"
  kube_tagged+=("$tag ${before:--}")
  podman tag "${tag%:*}:latest" "$tag"
done
mkdir "$WORK/kube"
cat > "$WORK/kube/kustomization.yaml" <<YAML
# This run's host port, so that it cannot collide with a stack on 8009.
resources:
  - $(realpath --relative-to="$WORK/kube" deploy/k8s-podman)
patches:
  - target:
      kind: Deployment
    patch: |-
      - op: add
        path: /spec/template/spec/containers/0/ports/0/hostPort
        value: $KUBE_PORT
YAML
kubectl kustomize "$WORK/kube" > "$WORK/kube.yaml"
podman kube play "$WORK/kube.yaml" > "$WORK/kube.log" 2>&1 || { cat "$WORK/kube.log"; fail "podman kube play"; }
wait_healthy "$POD-modelgen"
deadline=$((SECONDS + 60))  # the server has no health check under podman (deploy/k8s-podman says why): its readiness
until curl -sf "http://127.0.0.1:$KUBE_PORT/readyz" >/dev/null; do
  [ "$SECONDS" -lt "$deadline" ] || fail "the pod's server never became ready"
  sleep 0.5
done
verify "$KUBE_PORT"
podman pod stop -t 10 "$POD" >/dev/null 2>&1
for c in "$POD-server" "$POD-modelgen"; do
  code="$(podman inspect "$c" --format '{{.State.ExitCode}}')"
  echo "$c exited with code $code"
  [ "$code" = 0 ] || fail "$c exited with $code"
done
podman kube down "$WORK/kube.yaml" >/dev/null 2>&1

step "podman kube play: deploy/k8s-podman/shared, the server's pod and two watchers' pods on one volume"
mkdir "$WORK/kube-shared"
cat > "$WORK/kube-shared/kustomization.yaml" <<YAML
# The project as a name prefix (pods, and the claim's volume), this run's host port.
resources:
  - $(realpath --relative-to="$WORK/kube-shared" deploy/k8s-podman/shared)
namePrefix: $PROJECT-
patches:
  - target:
      kind: Deployment
      name: cyclesafe
    patch: |-
      - op: add
        path: /spec/template/spec/containers/0/ports/0/hostPort
        value: $KUBE_PORT
YAML
kubectl kustomize "$WORK/kube-shared" > "$WORK/kube-shared.yaml"
# A second watcher: the watcher's Deployment alone, renamed (podman plays one pod a Deployment).
# python3 is podman-compose's venv here (PyYAML).
python3 - "$WORK/kube-shared.yaml" "$PROJECT-cyclesafe-modelgen" > "$WORK/kube-shared-b.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "Deployment" and d["metadata"]["name"] == sys.argv[2]]
assert len(docs) == 1, docs
docs[0]["metadata"]["name"] += "-b"
yaml.safe_dump(docs[0], sys.stdout)
PY
podman kube play "$WORK/kube-shared.yaml" > "$WORK/kube.log" 2>&1 || { cat "$WORK/kube.log"; fail "podman kube play (shared)"; }
podman kube play "$WORK/kube-shared-b.yaml" > "$WORK/kube.log" 2>&1 || { cat "$WORK/kube.log"; fail "podman kube play (second watcher)"; }
shared_watchers=("$PROJECT-cyclesafe-modelgen-pod-0-modelgen" "$PROJECT-cyclesafe-modelgen-b-pod-0-modelgen")
for c in "${shared_watchers[@]}"; do wait_healthy "$c"; done
verify "$KUBE_PORT"
for c in "${shared_watchers[@]}"; do
  id="$(podman exec "$c" hostname)"
  [ -f "$(podman volume inspect "$SHARED_CLAIM" --format '{{.Mountpoint}}')/.modelgen/watchers/$id.json" ] \
    || fail "no heartbeat of watcher $id on the shared volume"
done
for play in "$WORK/kube-shared-b.yaml" "$WORK/kube-shared.yaml"; do podman kube down "$play" >/dev/null 2>&1; done
podman volume rm "$SHARED_CLAIM" >/dev/null

step "the cyclesafe target: a stand-in checkout, the model on $MODEL_PYTHON_IMAGE's Python, the watcher on $BASE_IMAGE's"
cp -r tests/containers/cyclesafe-standin "$WORK/modelgen"
mkdir "$WORK/modelgen/data"
python3 tests/containers/crash_rows.py "$WORK/modelgen/data/txdot_cris_20170427.csv"
# compose.cyclesafe.yaml as the README runs it.
export MODELGEN_CHECKOUT="$WORK/modelgen"
compose -f compose.yaml -f compose.cyclesafe.yaml up -d --build
has_healthcheck yoinkbird/cs_modelgen:cyclesafe
wait_healthy "$MODELGEN"
wait_healthy "$SERVER"
versions="$(podman exec "$MODELGEN" sh -c 'for py in /opt/model-venv/bin/python3 /opt/venv/bin/python3; do
  "$py" -c "import sys; print(\"%d.%d\" % sys.version_info[:2], [p for p in sys.path if p.endswith(\"-packages\")])"; done')"
echo "$versions" | sed -e '1s/^/model:   /' -e '2s/^/watcher: /'
python3 - "$versions" <<'PY' || fail "the model's Python is not older than the watcher's, or they share packages"
import ast, sys
(model, model_sp), (watcher, watcher_sp) = [(tuple(map(int, v.split("."))), ast.literal_eval(rest))
                                            for v, rest in (line.split(" ", 1) for line in sys.argv[1].splitlines())]
assert model < watcher, (model, watcher)
assert model_sp == ["/opt/model-venv/lib/python%d.%d/site-packages" % model], model_sp
assert watcher_sp == ["/opt/venv/lib/python%d.%d/site-packages" % watcher], watcher_sp
PY
out="$(make --no-print-directory verify VERIFY_URL="$BASE")" || fail "make verify against the cyclesafe stack: $out"
echo "$out"
echo "$out" | grep -qF "model model.py, scores $STANDIN_SCORES" || fail "not the stand-in's scores"
podman logs "$MODELGEN" > "$WORK/cyclesafe.log" 2>&1
grep '"event": "runner.workers_ready"' "$WORK/cyclesafe.log" | grep -q 'modelside/cyclesafe.py' \
  || fail "the default runner is not warm workers through the cyclesafe adapter"
if grep -nE 'Traceback|"level": ?"(error|critical)"' "$WORK/cyclesafe.log"; then fail "the cyclesafe sidecar logged an error"; fi
stop_each "$SERVER" "$MODELGEN"

step "the cyclesafe image with MODELGEN_RUNNER=fork, then =subprocess: the one setting changed"
lat=30.31
for runner in fork subprocess; do
  dir="$WORK/vol-$runner"
  mkdir "$dir"
  route "$lat" > "$dir/gps_input_route.$runner.json"
  chown -R 10001:10001 "$dir"
  podman run --rm --no-healthcheck -e "MODELGEN_RUNNER=$runner" -v "$dir:/data" yoinkbird/cs_modelgen:cyclesafe run --once \
    > "$WORK/$runner.log" 2>&1 || { tail -20 "$WORK/$runner.log"; fail "the $runner runner did not score the route"; }
  scored="$(json_get '[round(p["score"], 6) for p in d["routes"][0]], d["meta"]["model"], d["meta"]["duration_ms"]' < "$dir/gps_scored_route.$runner.json")"
  echo "$runner: $scored ms"
  [[ "$scored" == "$STANDIN_SCORES model.py "* ]] || fail "$runner scored $scored"
  grep -q "note: --model-entry (MODELGEN_MODEL_ENTRY) is not used by the $runner runner" "$WORK/$runner.log" \
    || fail "the $runner runner's start did not say that the image's entry is unused"
  lat=30.32
done
grep -q 'modelside/forkserver.py' "$WORK/fork.log" || fail "MODELGEN_RUNNER=fork did not start a fork server"
if grep -q '"event": "runner.workers_ready"' "$WORK/subprocess.log"; then fail "MODELGEN_RUNNER=subprocess started workers"; fi

podman-compose -p "$PROJECT" down -v >/dev/null 2>&1
echo "containers: 1 passed, 0 failed"
