"""``python -m bench.nothing [MODULE...]``: import the modules named, then exit: the start-up baselines."""

from __future__ import annotations

import importlib
import sys

for name in sys.argv[1:]:
    importlib.import_module(name)
