"""A test double of upstream cyclesafe's modelmanager/model.py, written here (tests only).

It keeps what the watcher must cope with: the same flags, a slow start (upstream
spends ~2 s importing), a pickle-like cache rewritten in place in the workspace, the
output written in place (not atomically) as a JSON *string* holding the JSON, relative
to --workspace, and a traceback with exit 1 on bad input. Scores come from the CSV
given as --datafile (rows: intersection,daylight,manner,not_severe).

It also has upstream's shape, so ``modelside/cyclesafe.py`` can import it as it imports
upstream's, and call the same functions with the same signatures:

- importing it is the slow part (``UPSTREAM_DOUBLE_START_S``, 0.3 s by default) and
  does nothing else; the work is under ``if __name__ == "__main__"``;
- ``get_global_configs()`` parses ``sys.argv`` into ``(options, runmodels)`` with
  upstream's option names, and raises FileNotFoundError if --routefile is no file;
- ``model_prepare(**options)`` reads the CSV and returns four values (upstream's
  frames); with ``UPSTREAM_DOUBLE_PREPARE_LOG`` set it appends its pid there, so a
  test can count preparations;
- ``__score_manual_generic_route_and_save_to_file(data, data_dummies, df_int_nonan,
  featdef, **options)`` loads the cache or builds it, rewrites it, scores the route
  named by ``options["local_json_input"]`` and writes ``options["local_json_gen"]``;
  it raises on a route with no steps or with ``"fail_me": true``.
"""

import argparse
import ast
import csv
import json
import os
import sys
import time

time.sleep(float(os.environ.get("UPSTREAM_DOUBLE_START_S", "0.3")))  # "importing pandas"

CACHE = "human_read_dectree.pkl"


def get_global_configs():
    p = argparse.ArgumentParser()
    p.add_argument("--verbose", type=int, default=0)
    p.add_argument("--workspace", required=True)
    p.add_argument("--routefile", required=True)
    p.add_argument("--datafile", required=True)
    p.add_argument("--dumpresponse")
    a, _unknown = p.parse_known_args()
    runmodels = {"score_manual_generic_route": 1}
    options = {"verbose": a.verbose, "workspace_dir": a.workspace, "local_json_input": a.routefile,
               "datafile": a.datafile, "runmodels": runmodels}
    if not os.path.isfile(a.routefile):
        raise FileNotFoundError("Options: Could not read file for: --routefile " + a.routefile)
    if a.dumpresponse:
        options["local_json_gen"] = os.path.join(a.workspace, a.dumpresponse)
    print("OPTIONS:", options)
    return options, runmodels


def model_prepare(**options):
    log = os.environ.get("UPSTREAM_DOUBLE_PREPARE_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\n")
    table = {}
    with open(options["datafile"], newline="") as fh:
        for row in csv.DictReader(fh):
            table[(int(row["intersection"]), int(row["daylight"]), int(row["manner"]))] = float(row["not_severe"])
    return table, None, None, sorted(table)


def _retrieve_model(table, workspace):
    """The cache: read if present, else "trained" from the prepared table; rewritten in place either way."""
    path = os.path.join(workspace, CACHE)
    if os.path.isfile(path):
        with open(path) as fh:
            table = dict(ast.literal_eval(fh.read()))
    with open(path, "w") as fh:
        fh.write(repr(sorted(table.items())))
    return table


def __score_manual_generic_route_and_save_to_file(data, data_dummies, df_int_nonan, featdef, **options):
    table = _retrieve_model(data, options["workspace_dir"])
    with open(options["local_json_input"]) as fh:
        doc = json.load(fh)
    if doc.get("fail_me"):  # an input upstream cannot score, though the watcher's checks pass it
        raise ValueError("cannot score this route")
    routes, totals = [], []
    for route in doc["routes"]:
        steps = route["legs"][0]["steps"]
        pts = []
        for s in steps:
            inter = 0 if s.get("maneuver", "") == "" else 1
            pts.append({"score": table[(inter, 1, 0)], "lat": s["end_location"]["lat"], "lng": s["end_location"]["lng"]})
        if not pts:
            raise ValueError("route has no steps")
        routes.append(pts)
        totals.append(sum(p["score"] for p in pts) / len(pts))
    print("scored", len(routes), "routes for", os.getpid(), file=sys.stderr)
    with open(options["local_json_gen"], "w") as fh:
        fh.write(json.dumps(json.dumps({"routes": routes, "totalScores": totals})))


if __name__ == "__main__":
    options_local, _runmodels = get_global_configs()
    prepared = model_prepare(**options_local)
    __score_manual_generic_route_and_save_to_file(*prepared, **options_local)
