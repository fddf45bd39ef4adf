"""Code that runs inside the model's process, on the model's own interpreter.

Standard library only, Python 3.7 and newer, and it never imports the rest of the
package: the watcher starts these files by path (``python3 .../modelside/host.py``), so
neither the watcher's dependencies nor its Python version reach the model. Two checks
hold this (``tests/unit/test_boundaries.py`` and vermin in ``make static-checks``).
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
HOST = HERE / "host.py"
"""The worker loop: ``python3 HOST --entry MODULE_OR_PATH:FACTORY ...``."""
REFERENCE = HERE / "reference.py"
"""The embedded reference model: a script (upstream's flags) and an entry (``create``)."""
FORKSERVER = HERE / "forkserver.py"
"""The ``fork`` runner's entry: preload once, fork a child per request that runs the unchanged script."""
CYCLESAFE = HERE / "cyclesafe.py"
"""The adapter for upstream cyclesafe's model.py (an entry, ``create``): prepares once, scores per request."""

ENTRIES = {"reference": REFERENCE, "cyclesafe": CYCLESAFE}
"""Entries ``--model-entry`` names by a word, each a file here whose factory is ``create``."""
