"""A stand-in shaped like upstream cyclesafe's ``model.py``, written here for ``bench/upstream_shaped.py``.

Why: the runners are judged by what they save on a model like upstream's, whose
process spends seconds importing pandas, scikit-learn and matplotlib and preparing a
crash CSV for about 25 ms of scoring. Upstream's model needs its 2018 stack and is GPL,
so the benchmark runs this one: the same shape, its own code.

The shape it keeps:

- the heavy imports at the top (pandas, scikit-learn, matplotlib with Agg), and all
  work under ``if __name__ == "__main__":``;
- upstream's command line: ``--workspace --routefile --dumpresponse --datafile``, the
  output relative to ``--workspace``;
- per run: read and prepare the CSV (``prepare``), then ``score_and_save``: load the
  decision tree pickled in the workspace (``human_read_dectree.pkl``), or train one on an
  unseeded random 70 % split when there is none, rewrite the pickle in place, score
  every step of each route's first leg (only the maneuver varies: daylight and motorist
  at fault are fixed), and write the output in place as a JSON *string* holding the JSON,
  no trailing newline;
- a bad route is a traceback and exit 1; ``{"routes": []}`` is empty lists.

It also has the ``entry`` form (``create(workspace, argv)``, docs/runners.md): prepare
once per worker, then ``score_and_save`` per request. Both forms score through that one
function, so a warm worker writes what the script writes.

The data is ``bench/standin/make_data.py``'s generated CSV (``--datafile``).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display in a sidecar; chosen before pyplot is imported
import matplotlib.pyplot  # at the top, as upstream imports it: its cost is part of the shape
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier

PICKLE = "human_read_dectree.pkl"
FEATURES = ["intersection", "daylight", "manner"]
TARGET = "not_severe"
RIDER = {"daylight": 1, "manner": 0}
"""Fixed, as upstream's are: daylight, motorist likely at fault."""

# The CSV's vocabulary, mapped to the model's binary features (missing or unknown: NaN, the row is dropped).
INTERSECTION = {"Intersection": 1, "Intersection Related": 1, "Non Intersection": 0, "Driveway Access": 0}
NOT_SEVERE = {"Non-Incapacitating Injury": 1, "Possible Injury": 1, "Not Injured": 1,
              "Incapacitating Injury": 0, "Killed": 0}
MOTORIST_AT_FAULT = ("Turning Left", "Turning Right", "Backing")
NA_VALUES = ["No Data", "Not Reported", "Unknown", "N/A"]
CATEGORICAL = ["day_of_week", "surface_condition", "weather_condition", "road_base_type", "speed_limit"]


@dataclass
class Prepared:
    """What preparing the CSV yields: the cleaned frame, its dummies, and the complete rows the tree learns from."""

    data: Any
    dummies: Any
    complete: Any


def parse_options(argv: list[str]) -> argparse.Namespace:
    """Upstream's flags. Unknown words are ignored, so the entry form can parse the whole model command."""
    parser = argparse.ArgumentParser(prog="model.py", description="Score a route for crash risk (upstream's flags).")
    parser.add_argument("--workspace", default=".", help="directory of the pickle; --dumpresponse is relative to it")
    parser.add_argument("--routefile", default="", help="the DirectionsResult JSON to score")
    parser.add_argument("--dumpresponse", default="", help="output file, relative to --workspace")
    parser.add_argument("--datafile", default="", help="the crash records CSV")
    options, _ = parser.parse_known_args(argv)
    return options


def _header_line(path: str) -> int:
    """Lines of preamble before the header (exports put a disclaimer and the query above the table)."""
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh):
            if line.startswith("Crash ID,"):
                return number
    raise ValueError(f"{path}: no header line starting with 'Crash ID,'")


def prepare(datafile: str) -> Prepared:
    """Read the crash records and derive the features: the part of a run that does not depend on the route."""
    raw = pd.read_csv(datafile, skiprows=_header_line(datafile), na_values=NA_VALUES, keep_default_na=True)
    data = raw.rename(columns=lambda name: name.strip().lower().replace(" ", "_").replace("-", "_"))
    data["crash_hour"] = pd.to_numeric(data["crash_time"], errors="coerce") // 100
    data["intersection"] = data["intersection_related"].map(INTERSECTION)
    data["daylight"] = data["light_condition"].map(lambda v: v if pd.isna(v) else int(v == "Daylight"))
    data["manner"] = data["manner_of_collision"].map(
        lambda v: v if pd.isna(v) else int(not str(v).endswith(MOTORIST_AT_FAULT)))
    data[TARGET] = data["crash_severity"].map(NOT_SEVERE)
    data["injuries"] = data.filter(like="injury_count").sum(axis=1)
    dummies = pd.get_dummies(data[CATEGORICAL].astype("string"), dummy_na=True)
    complete = data.dropna(subset=[*FEATURES, TARGET])[[*FEATURES, TARGET]].astype(int)
    return Prepared(data, dummies, complete)


def _tree(prepared: Prepared, workspace: str) -> Any:
    """The pickled tree if the workspace has one, else one trained on an unseeded 70 % split (as upstream)."""
    path = os.path.join(workspace, PICKLE)
    if os.path.exists(path):
        with open(path, "rb") as fh:
            return pickle.load(fh)
    train, _ = train_test_split(prepared.complete, train_size=0.7)
    tree = DecisionTreeClassifier()
    tree.fit(train[FEATURES], train[TARGET])
    return tree


def score_and_save(prepared: Prepared, workspace: str, routefile: str, output: str) -> None:
    """Score one route file and write ``output``: the per-request work of both forms."""
    tree = _tree(prepared, workspace)
    with open(os.path.join(workspace, PICKLE), "wb") as fh:  # rewritten in place on every run, as upstream does
        pickle.dump(tree, fh)
    with open(routefile, encoding="utf-8") as fh:
        doc = json.load(fh)
    safe = list(tree.classes_).index(1)
    routes, totals = [], []
    for route in doc["routes"]:
        steps = route["legs"][0]["steps"]
        if not steps:
            raise ValueError("a route with no steps cannot be scored")
        features = pd.DataFrame({"intersection": [0 if s.get("maneuver", "") == "" else 1 for s in steps]})
        for name, value in RIDER.items():
            features[name] = value
        scores = tree.predict_proba(features[FEATURES])[:, safe]
        routes.append([{"score": float(score), "lat": s["end_location"]["lat"], "lng": s["end_location"]["lng"]}
                       for score, s in zip(scores, steps, strict=True)])
        totals.append(float(scores.mean()))
    with open(output, "w", encoding="utf-8") as fh:  # in place, not atomic, double-encoded: upstream's output
        fh.write(json.dumps(json.dumps({"routes": routes, "totalScores": totals})))


def create(workspace: str, argv: list[str]) -> Callable[[Any], None]:
    """The entry form: import and prepare once per worker; each request is one ``score_and_save``."""
    options = parse_options(argv)
    prepared = prepare(options.datafile)

    def score(job: Any) -> None:
        score_and_save(prepared, job.workspace, job.input, job.output)

    return score


def main(argv: list[str]) -> int:
    options = parse_options(argv)
    for flag in ("routefile", "dumpresponse", "datafile"):
        if not getattr(options, flag):
            print(f"model.py: --{flag} is required", file=sys.stderr)
            return 2
    prepared = prepare(options.datafile)
    score_and_save(prepared, options.workspace, options.routefile,
                   os.path.join(options.workspace, options.dumpresponse))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
