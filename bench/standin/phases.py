"""Where one run of the stand-in spends its time: the heavy imports, preparing the CSV, scoring one route.

Why: the runners differ only in which of these they pay per request (a process pays
all three, a forked child what its parent did not preload, a warm worker the scoring
alone), so the benchmark prints them beside its latencies. Run on the bench venv, in a
fresh process, as ``python bench/standin/phases.py DATAFILE ROUTEFILE WORKSPACE``;
prints one JSON object of seconds. The workspace should hold the pickled tree, or the
first scoring also trains one.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    datafile, routefile, workspace = argv
    t0 = time.perf_counter()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import model  # timed here: this import is the phase being measured

    t1 = time.perf_counter()
    prepared = model.prepare(datafile)
    t2 = time.perf_counter()
    model.score_and_save(prepared, workspace, routefile, os.path.join(workspace, "phases-out.json"))
    t3 = time.perf_counter()
    print(json.dumps({"imports": t1 - t0, "prepare": t2 - t1, "score": t3 - t2}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
