"""Drop-in modules for upstream cyclesafe code; put this folder on ``PYTHONPATH``.

``python -c 'import modelgen_watcher.server.compat as c; print(c.PATH)'`` prints the folder.
"""

from pathlib import Path

PATH = str(Path(__file__).parent)
