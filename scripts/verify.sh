#!/usr/bin/env bash
# `make verify`: POST a route to a running stack and GET its result by key, both with
# curl --fail-with-body, then check what holds for any model: the upload's hash is the
# route's, the result names that hash (meta.input_sha256), one point per step with a
# score in [0, 1] and the step's coordinates, and one total per route. The exact scores
# are checked only when the embedded reference model answered (meta.model "reference").
#
#   scripts/verify.sh [BASE_URL]        (default http://127.0.0.1:8009/rest/score)
set -euo pipefail
url="${1:-http://127.0.0.1:8009/rest/score}"
route='{"routes":[{"legs":[{"steps":[{"end_location":{"lat":30.2894657,"lng":-97.7367919},"maneuver":""},{"end_location":{"lat":30.29,"lng":-97.74},"maneuver":"turn-left"}]}]}]}'

# First the stack must be ready: /readyz answers 200 once the watcher's heartbeat says it is
# (its model loaded). podman cannot wait for health, so this waits (up to a minute), retrying
# while the server starts (connection refused) and while the watcher is not ready (503).
origin="$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(p.scheme + "://" + p.netloc)' "$url")"
curl -s --fail --retry 60 --retry-connrefused --retry-delay 1 -o /dev/null "$origin/readyz" \
  || { echo "verify: $origin/readyz did not answer 200 within a minute: the server or the watcher is not ready" >&2; exit 1; }
ack="$(curl -sS --fail-with-body -H 'Content-Type: application/json' --data-binary "$route" "$url/upload")"
key="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["key"])' "$ack")"
result="$(curl -sS --fail-with-body "$url/retrieve?key=$key&wait=60")"

python3 - "$route" "$ack" "$result" <<'PY'
import hashlib, json, sys

REFERENCE_SCORES = [0.939394, 0.911523]  # the embedded model's, from the crash table
route_text, ack, result = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
route = json.loads(route_text)
sha = hashlib.sha256(route_text.encode()).hexdigest()
assert ack["input_sha256"] == sha, f"the upload's hash {ack['input_sha256']} is not the route's {sha}"
assert result["meta"]["input_sha256"] == sha, f"the result is for another input: {result['meta']}"
assert len(result["routes"]) == len(route["routes"]), f"{len(result['routes'])} scored routes for {len(route['routes'])}"
for scored, asked in zip(result["routes"], route["routes"]):
    steps = asked["legs"][0]["steps"]
    assert len(scored) == len(steps), f"{len(scored)} points for {len(steps)} steps: {scored}"
    for point, step in zip(scored, steps):
        assert isinstance(point["score"], (int, float)) and 0 <= point["score"] <= 1, f"score out of [0, 1]: {point}"
        assert (point["lat"], point["lng"]) == (step["end_location"]["lat"], step["end_location"]["lng"]), point
totals = result["totalScores"]
assert len(totals) == len(route["routes"]) and all(isinstance(t, (int, float)) for t in totals), f"totalScores {totals}"
model = result["meta"]["model"]
scores = [p["score"] for p in result["routes"][0]]
if model == "reference":
    assert scores == REFERENCE_SCORES, f"the reference model scored {scores}, not {REFERENCE_SCORES}"
print(f"verify: ok, key {ack['key']}, model {model}, scores {[round(s, 6) for s in scores]}, "
      f"totalScores {[round(t, 6) for t in totals]}")
PY
