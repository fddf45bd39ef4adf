"""Write the stand-in checkout's crash data: one row per crash, from the reference model's crash table.

    python3 tests/containers/crash_rows.py OUT.csv

Each cell of the table (intersection, daylight, manner) becomes its row count of crashes,
round(rows x share) of them not severe, so a tree fitted on the rows predicts the table's
shares (to the 6 digits the table gives them). Standard library only: the container test
runs it with the machine's python3, the package put on ``sys.path`` by hand.

(``bench/standin/make_data.py`` writes the same crashes as a TxDOT-shaped export, whose
preparation is part of what the benchmark measures; the container's stand-in needs only
the four columns it fits on.)
"""

import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from modelgen_watcher.modelside.reference import CRASH_TABLE


def main(out: str) -> None:
    with open(out, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["intersection", "daylight", "manner", "not_severe"])
        for (intersection, daylight, manner), (rows, share) in sorted(CRASH_TABLE.items()):
            not_severe = round(rows * share)
            assert round(not_severe / rows, 6) == share, (intersection, daylight, manner)
            for i in range(rows):
                writer.writerow([intersection, daylight, manner, int(i < not_severe)])


if __name__ == "__main__":
    main(sys.argv[1])
