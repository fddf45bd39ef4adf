"""A test double of upstream cyclesafe's modelmanager/model.py, written here (tests only).

It keeps what the watcher must cope with: the same flags, a slow start (upstream
spends ~2 s importing), a pickle-like cache rewritten in place in the workspace, the
output written in place (not atomically) as a JSON *string* holding the JSON, relative
to --workspace, and a traceback with exit 1 on bad input. Scores come from the CSV
given as --datafile (rows: intersection,daylight,manner,not_severe).
"""

import argparse
import csv
import json
import os
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--workspace", required=True)
    p.add_argument("--routefile", required=True)
    p.add_argument("--dumpresponse", required=True)
    p.add_argument("--datafile", required=True)
    a = p.parse_args()
    time.sleep(float(os.environ.get("UPSTREAM_DOUBLE_START_S", "0.3")))  # "importing pandas"
    table = {}
    with open(a.datafile, newline="") as fh:
        for row in csv.DictReader(fh):
            table[(int(row["intersection"]), int(row["daylight"]), int(row["manner"]))] = float(row["not_severe"])
    with open(os.path.join(a.workspace, "human_read_dectree.pkl"), "w") as fh:
        fh.write(repr(sorted(table.items())))
    with open(a.routefile) as fh:
        doc = json.load(fh)
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
    out = os.path.join(a.workspace, a.dumpresponse)
    with open(out, "w") as fh:
        fh.write(json.dumps(json.dumps({"routes": routes, "totalScores": totals})))


if __name__ == "__main__":
    main()
