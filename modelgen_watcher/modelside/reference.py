"""The embedded reference model: scores each step from the TxDOT crash table, in two forms.

- **Entry** (``create``), the default: the ``entry`` runner loads it once per warm worker
  (``modelside/host.py``) and each request is a function call: milliseconds.
- **Script** (``main``), in upstream's command-line shape (``--workspace --routefile
  --dumpresponse [--datafile]``): what the ``subprocess`` runner starts per request, and
  what the ``fork`` runner's child runs.

Both go through the same machinery as any other model. Standard library only and
Python 3.7+, like everything in ``modelside/``: it runs on the model's side.

Data: share of bicycle crashes that were *not* severe in Austin 2010-2017 (public
TxDOT CRIS records, 2,213 complete rows), by intersection-related, daylight and
manner of collision (1 = fault unclear, 0 = motorist likely at fault). A fully grown
decision tree on these three features predicts exactly these rates.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable

# (intersection, daylight, manner) -> (rows, share not severe)
CRASH_TABLE: dict[tuple[int, int, int], tuple[int, float]] = {
    (0, 0, 0): (45, 0.955556),
    (0, 0, 1): (228, 0.789474),
    (0, 1, 0): (231, 0.939394),
    (0, 1, 1): (361, 0.889197),
    (1, 0, 0): (173, 0.907514),
    (1, 0, 1): (176, 0.880682),
    (1, 1, 0): (486, 0.911523),
    (1, 1, 1): (513, 0.896686),
}


class BadRoute(ValueError):
    """The input cannot be scored; the message says where."""


def score_step(maneuver: str | None, daylight: bool, motorist_at_fault: bool) -> float:
    """Probability that a crash at this step is not severe (higher is safer)."""
    intersection = 1 if maneuver else 0
    return CRASH_TABLE[(intersection, int(daylight), 0 if motorist_at_fault else 1)][1]


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRoute(f"{where} must be a finite number")
    return float(value)


def score_route(doc: Any) -> dict[str, Any]:
    """Score every step of each route's first leg, as upstream does."""
    if not isinstance(doc, dict) or not isinstance(doc.get("routes"), list):
        raise BadRoute("the document has no 'routes' list")
    rider = doc.get("rider") or {}
    if not isinstance(rider, dict):
        raise BadRoute("'rider' must be an object")
    daylight, motorist_at_fault = rider.get("daylight", True), rider.get("motorist_at_fault", True)
    if not isinstance(daylight, bool) or not isinstance(motorist_at_fault, bool):
        raise BadRoute("'rider.daylight' and 'rider.motorist_at_fault' must be true or false")
    routes: list[list[dict[str, float]]] = []
    totals: list[float] = []
    for i, route in enumerate(doc["routes"]):
        legs = route.get("legs") if isinstance(route, dict) else None
        if not isinstance(legs, list) or not legs or not isinstance(legs[0], dict):
            raise BadRoute(f"routes.{i} has no legs")
        steps = legs[0].get("steps")
        if not isinstance(steps, list) or not steps:
            raise BadRoute(f"routes.{i}.legs.0 has no steps")
        points = []
        for j, step in enumerate(steps):
            where = f"routes.{i}.legs.0.steps.{j}"
            loc = step.get("end_location") if isinstance(step, dict) else None
            if not isinstance(loc, dict):
                raise BadRoute(f"{where} has no end_location")
            maneuver = step.get("maneuver")
            points.append(
                {
                    "score": score_step(maneuver if isinstance(maneuver, str) else None, daylight, motorist_at_fault),
                    "lat": _number(loc.get("lat"), f"{where}.end_location.lat"),
                    "lng": _number(loc.get("lng"), f"{where}.end_location.lng"),
                }
            )
        routes.append(points)
        totals.append(sum(p["score"] for p in points) / len(points))
    return {"routes": routes, "totalScores": totals}


def _score_file(routefile: str | Path, output: str | Path, prog: str) -> int:
    """Read, score, write; on a bad route one line on stderr (the error status ends with it) and 1.

    Paths as given: the entry form passes each request's names as strings, not ``Path``s, since ``pathlib``
    interns every name it parses, and a warm worker's stream of new names (one per request) grew the
    interpreter's table of interned strings by 0.4 MiB, nearly all of its memory growth over 10,000 requests."""
    try:
        with open(routefile, "rb") as fh:
            doc = json.loads(fh.read())
        result = score_route(doc)
    except (OSError, ValueError) as exc:
        print(f"{prog}: cannot score {routefile}: {exc}", file=sys.stderr)
        return 1
    with open(output, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(result))
    return 0


def create(workspace: str, argv: list[str]) -> Callable[[Any], None]:
    """The entry form: nothing to load (the table is above); each request reads, scores and writes."""

    def score(job: Any) -> None:
        code = _score_file(job.input, job.output, "reference_model")
        if code:
            raise SystemExit(code)

    return score


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="reference_model", description="Score a route from the TxDOT crash table (upstream's flags)."
    )
    parser.add_argument("--workspace", type=Path, default=Path("."), help="directory --dumpresponse is relative to")
    parser.add_argument("--routefile", type=Path, required=True, help="the DirectionsResult JSON to score")
    parser.add_argument("--dumpresponse", required=True, help="output file, relative to --workspace")
    parser.add_argument("--datafile", help="accepted for upstream compatibility; the table is embedded")
    args = parser.parse_args(argv)
    return _score_file(args.routefile, args.workspace / args.dumpresponse, "reference_model")


if __name__ == "__main__":
    sys.exit(main())
