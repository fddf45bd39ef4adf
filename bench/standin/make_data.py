"""A generated crash-records CSV of the size and shape of the one upstream's model reads, for the stand-in model.

Why generated: the benchmark needs a model that *prepares* a real-sized table on every
run, as upstream's does, without shipping (or fetching) upstream's data file. The rows
are made from the published crash table's counts (``CRASH_TABLE`` of the embedded
reference model): 2,213 complete rows whose three binary features and
severity reproduce each cell's row count and share of crashes that were not severe,
plus 19 incomplete rows the model must drop: 2,232 data rows, as in the TxDOT export
upstream uses. Like that export it has 25 columns, most of them text the model parses
or ignores, and a few lines of preamble before the header.

Deterministic: the same seed writes the same bytes, so every setup of the benchmark
prepares the same table.

Run on the watcher's venv (the table is the package's), by the benchmark or as
``.venv/bin/python bench/standin/make_data.py OUT.csv [--seed N]``; the stand-in (the
bench venv) only reads the CSV.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

from modelgen_watcher.modelside.reference import CRASH_TABLE

INCOMPLETE_ROWS = 19
"""Rows with one feature unknown (2,232 in the export, 2,213 complete)."""

DEFAULT_SEED = 2017

HEADER = [
    "Crash ID", "Average Daily Traffic Amount", "Average Daily Traffic Year", "Crash Death Count",
    "Crash Incapacitating Injury Count", "Crash Non-incapacitating Injury Count", "Crash Not Injured Count",
    "Crash Possible Injury Count", "Crash Severity", "Crash Time", "Crash Year", "Day of Week",
    "Intersecting Street Name", "Intersection Related", "Latitude", "Light Condition", "Longitude",
    "Manner of Collision", "Medical Advisory Flag", "Object Struck", "Road Base Type", "Speed Limit",
    "Street Name", "Surface Condition", "Weather Condition",
]

# The vocabulary of each feature; the stand-in maps these back to 0/1 (its own copy: it must not import this file).
INTERSECTION = {1: ["Intersection", "Intersection Related"], 0: ["Non Intersection", "Driveway Access"]}
DAYLIGHT = {1: ["Daylight"], 0: ["Dark, Lighted", "Dark, Not Lighted", "Dusk", "Dawn"]}
MANNER = {
    0: ["One Motor Vehicle - Turning Left", "One Motor Vehicle - Turning Right", "One Motor Vehicle - Backing"],
    1: ["One Motor Vehicle - Going Straight", "One Motor Vehicle - Other", "Same Direction - Both Going Straight"],
}
NOT_SEVERE = ["Non-Incapacitating Injury", "Possible Injury", "Not Injured"]
SEVERE = ["Incapacitating Injury", "Killed"]
UNKNOWN = {"Intersection Related": "Not Reported", "Light Condition": "Unknown", "Manner of Collision": "Unknown"}

STREETS = ["GUADALUPE ST", "CONGRESS AVE S", "LAMAR BLVD N", "RIVERSIDE DR E", "MANOR RD", "SPEEDWAY",
           "DUVAL ST", "CESAR CHAVEZ ST W", "BARTON SPRINGS RD", "AIRPORT BLVD", "OLTORF ST E", "38TH ST W"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _row(rng: random.Random, crash_id: int, intersection: str, light: str, manner: str, severity: str) -> list[str]:
    counts = dict.fromkeys(("death", "incap", "nonincap", "possible"), 0)
    injured = {"Killed": "death", "Incapacitating Injury": "incap", "Non-Incapacitating Injury": "nonincap",
               "Possible Injury": "possible"}.get(severity)
    if injured:
        counts[injured] = 1
    located = rng.random() > 0.1
    adt = rng.random() < 0.15
    return [
        str(crash_id),
        str(rng.randrange(2000, 150000)) if adt else "No Data",
        "2014" if adt else "No Data",
        str(counts["death"]),
        str(counts["incap"]),
        str(counts["nonincap"]),
        str(rng.choice([0, 1, 1, 1, 2])),
        str(counts["possible"]),
        severity,
        f"{rng.randrange(24):02d}{rng.randrange(60):02d}".lstrip("0") or "0",
        str(rng.randrange(2010, 2018)),
        rng.choice(DAYS),
        "N/A" if rng.random() < 0.4 else rng.choice(STREETS),
        intersection,
        f"{30.2672 + rng.uniform(-0.08, 0.08):.9f}" if located else "No Data",
        light,
        f"{-97.7431 + rng.uniform(-0.08, 0.08):.9f}" if located else "No Data",
        manner,
        "Yes" if rng.random() < 0.003 else "No",
        "Not Applicable",
        "No Data" if rng.random() < 0.85 else "Flex Base (Granular)",
        str(rng.choice([25, 30, 30, 35, 35, 40, 45, -1, 0])),
        rng.choice(STREETS),
        "Dry" if rng.random() < 0.94 else "Wet",
        "Clear" if rng.random() < 0.84 else rng.choice(["Cloudy", "Rain"]),
    ]


def rows(seed: int = DEFAULT_SEED) -> list[list[str]]:
    """Every data row, shuffled; the complete ones reproduce CRASH_TABLE exactly."""
    rng = random.Random(seed)
    out: list[list[str]] = []
    ids = iter(rng.sample(range(11_000_000, 15_000_000), sum(n for n, _ in CRASH_TABLE.values()) + INCOMPLETE_ROWS))
    for (i, d, m), (n, share) in sorted(CRASH_TABLE.items()):
        not_severe = round(n * share)
        for k in range(n):
            severity = rng.choice(NOT_SEVERE) if k < not_severe else rng.choice(SEVERE)
            out.append(_row(rng, next(ids), rng.choice(INTERSECTION[i]), rng.choice(DAYLIGHT[d]),
                            rng.choice(MANNER[m]), severity))
    columns = sorted(UNKNOWN)
    for k in range(INCOMPLETE_ROWS):
        row = _row(rng, next(ids), rng.choice(INTERSECTION[1]), rng.choice(DAYLIGHT[1]), rng.choice(MANNER[0]),
                   rng.choice(NOT_SEVERE))
        unknown = columns[k % len(columns)]
        row[HEADER.index(unknown)] = UNKNOWN[unknown]
        out.append(row)
    rng.shuffle(out)
    return out


def write_crash_csv(path: Path, seed: int = DEFAULT_SEED) -> Path:
    """Write the table (preamble, header, rows) to ``path``; the same seed gives the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["Generated crash records for modelgen-watcher's benchmark (not real data)."])
        writer.writerow([f"Seed {seed}; complete rows reproduce the public crash table's counts and shares."])
        writer.writerow([])
        writer.writerow(HEADER)
        writer.writerows(rows(seed))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    write_crash_csv(args.out, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
