"""A stand-in for upstream cyclesafe's modelmanager/model.py in the cyclesafe image test (written here).

Run as upstream's is, from the checkout's root, on the model's own Python (3.7+) with
pandas and scikit-learn from requirements.txt:

    python3 ./modelmanager/model.py --workspace=W --routefile=R --dumpresponse=OUT --datafile=./data/txdot_cris_20170427.csv

Importing it only imports and defines functions; the work is under ``__main__``, split
into upstream's three functions, so the ``cyclesafe`` entry can prepare once and score
per request. ``model_prepare`` reads the crash rows; the scorer loads the fitted tree from
``<workspace>/human_read_dectree.pkl`` or fits it, rewrites that file in place (as
upstream does on every run), scores each step and writes the output as upstream does: a
JSON string holding the JSON, in place, at ``--workspace``/``--dumpresponse``.
"""

import argparse
import json
import os
import pickle

import pandas as pd
from sklearn.tree import DecisionTreeClassifier

FEATURES = ["intersection", "daylight", "manner"]
TARGET = "not_severe"
CACHE = "human_read_dectree.pkl"
RIDER = {"daylight": 1, "manner": 0}
"""What upstream hard-codes for the rider: daylight, motorist likely at fault."""


def get_global_configs():
    """The options from ``sys.argv``, with upstream's names; the route file must exist."""
    p = argparse.ArgumentParser()
    p.add_argument("--workspace", required=True)
    p.add_argument("--routefile", required=True)
    p.add_argument("--datafile", required=True)
    p.add_argument("--dumpresponse")
    a = p.parse_args()
    if not os.path.isfile(a.routefile):
        raise FileNotFoundError("Options: Could not read file for: --routefile " + a.routefile)
    options = {"workspace_dir": a.workspace, "local_json_input": a.routefile, "datafile": a.datafile}
    if a.dumpresponse:
        options["local_json_gen"] = os.path.join(a.workspace, a.dumpresponse)
    runmodels = {"score_manual_generic_route": 1}
    return options, runmodels


def model_prepare(**options):
    """The crash rows, as upstream returns its frames: (data, data_dummies, df_int_nonan, featdef)."""
    data = pd.read_csv(options["datafile"])
    return data, None, None, FEATURES


def _retrieve_model(data, workspace):
    """The tree from the workspace's cache, or fitted on every row; the cache is rewritten either way."""
    path = os.path.join(workspace, CACHE)
    if os.path.isfile(path):
        with open(path, "rb") as fh:
            tree = pickle.load(fh)
    else:
        tree = DecisionTreeClassifier(random_state=0).fit(data[FEATURES], data[TARGET])
    with open(path, "wb") as fh:
        pickle.dump(tree, fh)
    return tree


def __score_manual_generic_route_and_save_to_file(data, data_dummies, df_int_nonan, featdef, **options):
    tree = _retrieve_model(data, options["workspace_dir"])
    not_severe = list(tree.classes_).index(1)
    with open(options["local_json_input"]) as fh:
        doc = json.load(fh)
    routes, totals = [], []
    for route in doc["routes"]:
        steps = route["legs"][0]["steps"]
        if not steps:
            raise ValueError("route has no steps")
        frame = pd.DataFrame({"intersection": [0 if s.get("maneuver", "") == "" else 1 for s in steps], **RIDER})
        scores = tree.predict_proba(frame[featdef])[:, not_severe]
        routes.append([{"score": float(score), "lat": s["end_location"]["lat"], "lng": s["end_location"]["lng"]}
                       for score, s in zip(scores, steps)])
        totals.append(float(scores.mean()))
    with open(options["local_json_gen"], "w") as fh:
        fh.write(json.dumps(json.dumps({"routes": routes, "totalScores": totals})))


if __name__ == "__main__":
    options_local, _runmodels = get_global_configs()
    prepared = model_prepare(**options_local)
    __score_manual_generic_route_and_save_to_file(*prepared, **options_local)
