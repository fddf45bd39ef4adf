"""``python -m modelgen_watcher`` is the ``modelgen-watcher`` command."""

import sys

from .cli import main

sys.exit(main())
