#!/usr/bin/env bash
# Container test: build both images on a local base, bring the stack up with compose,
# score a route through the server's published port, check the volume and the logs,
# kill -9 the sidecar in the middle of a slow run and see the request complete, stop
# the stack (each container exits 0 in under 10 s), and remove it with its volume.
#
#   make containers-check        (or: bash tests/containers/run.sh)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
eval "$(scripts/podman-setup.sh)"

PROJECT="${PROJECT:-cstest}"
export CS_PORT="${CS_PORT:-18009}"
BASE="http://127.0.0.1:${CS_PORT}/rest/score"
MODELGEN="${PROJECT}_modelgen_1"
SERVER="${PROJECT}_server_1"
VOLUME="${PROJECT}_cs_pseudo_ipc"
WORK="$(mktemp -d)"
compose() { podman-compose -p "$PROJECT" "$@" >"$WORK/compose.log" 2>&1 || { cat "$WORK/compose.log"; return 1; }; }
step() { echo "== $*"; }
fail() { echo "FAIL: $*"; podman logs "$MODELGEN" 2>&1 | tail -20 || true; podman logs "$SERVER" 2>&1 | tail -20 || true; exit 1; }
cleanup() {
  podman-compose -p "$PROJECT" down -v >/dev/null 2>&1 || true
  podman image prune -f >/dev/null 2>&1 || true  # older builds' untagged images
  rm -rf "$WORK"
}
trap cleanup EXIT
cleanup_first() { podman-compose -p "$PROJECT" down -v >/dev/null 2>&1 || true; }
cleanup_first

wait_healthy() {  # podman runs no health checks by itself here: run them until one passes
  local name="$1" deadline=$((SECONDS + 60))
  until podman healthcheck run "$name" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || fail "$name never became healthy"
    sleep 0.5
  done
}

route() {  # a route whose first point's latitude is $1
  printf '{"routes":[{"legs":[{"steps":[{"end_location":{"lat":%s,"lng":-97.7367919},"maneuver":""},{"end_location":{"lat":30.29,"lng":-97.74},"maneuver":"turn-left"}]}]}]}' "$1"
}

json_get() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

step "build images on $BASE_IMAGE"
for svc in modelgen server; do
  podman build -q --format docker -f "Dockerfile.$svc" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    -t "yoinkbird/cs_$svc:latest" . >/dev/null
done
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep cs_

step "the cyclesafe target: upstream's command line, a stand-in checkout as the modelgen build context"
mkdir -p "$WORK/modelgen/modelmanager" "$WORK/modelgen/data" "$WORK/vol"
cp tests/models/upstream_model.py "$WORK/modelgen/modelmanager/model.py"
python3 - "$WORK/modelgen/data/txdot_cris_20170427.csv" <<'PY'
import sys
rows = [(0,0,0,0.955556),(0,0,1,0.789474),(0,1,0,0.939394),(0,1,1,0.889197),
        (1,0,0,0.907514),(1,0,1,0.880682),(1,1,0,0.911523),(1,1,1,0.896686)]
with open(sys.argv[1], "w") as fh:
    fh.write("intersection,daylight,manner,not_severe\n")
    fh.writelines(",".join(map(str, r)) + "\n" for r in rows)
PY
# MODEL_PIP_PACKAGES is empty: the stand-in needs no scientific stack (upstream's does).
podman build -q --format docker -f Dockerfile.modelgen --target cyclesafe --build-arg "BASE_IMAGE=$BASE_IMAGE" \
  --build-arg MODEL_PIP_PACKAGES= --build-context "modelgen=$WORK/modelgen" -t localhost/cs_modelgen:cyclesafe-test . >/dev/null
route 30.25 > "$WORK/vol/gps_input_route.up1.json"
chown -R 10001:10001 "$WORK/vol"
podman run --rm -v "$WORK/vol:/data" localhost/cs_modelgen:cyclesafe-test run --once > "$WORK/once.log" 2>&1 \
  || { cat "$WORK/once.log"; fail "the cyclesafe image did not score the route"; }
json_get 'd["meta"]["model"]' < "$WORK/vol/gps_scored_route.up1.json" | grep -qx model.py || fail "not scored by model.py"
json_get 'd["totalScores"]' < "$WORK/vol/gps_scored_route.up1.json"
podman rmi -f localhost/cs_modelgen:cyclesafe-test >/dev/null

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

step "stop: each container exits 0 in under 10 s"
for c in "$SERVER" "$MODELGEN"; do
  start=$(date +%s.%N)
  podman stop -t 10 "$c" >/dev/null
  took=$(python3 -c "print(round($(date +%s.%N) - $start, 2))")
  code="$(podman inspect "$c" --format '{{.State.ExitCode}}')"
  echo "$c stopped in ${took}s with exit code $code"
  [ "$code" = 0 ] || fail "$c exited with $code"
  python3 -c "import sys; sys.exit(0 if $took < 10 else 1)" || fail "$c took ${took}s to stop"
done

step "down -v"
podman-compose -p "$PROJECT" down -v >/dev/null 2>&1
podman volume exists "$VOLUME" && fail "volume $VOLUME still exists"
echo "containers: 1 passed, 0 failed"
