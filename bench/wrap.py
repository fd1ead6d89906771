"""Run ``python -m MODULE ARGS...`` and, at exit, write its own peak RSS (VmHWM) to ``$BENCH_HWM_FILE``.

A child's ``ru_maxrss`` (os.wait4) also counts the pages of the parent it was forked from
(before exec), so a small process started by a large harness looks large; VmHWM read by
the process itself is its own. The wrapper adds only ``runpy`` to what the module imports.
"""

from __future__ import annotations

import os
import runpy
import sys


def main() -> None:
    out = os.environ.pop("BENCH_HWM_FILE", None)
    module, sys.argv = sys.argv[1], [sys.argv[1], *sys.argv[2:]]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        if out:
            with open("/proc/self/status") as status:
                hwm = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
            with open(out, "w") as f:
                f.write(hwm)


if __name__ == "__main__":
    main()
