"""``python -m bench`` (what ``make bench`` runs): every figure of the benchmark as JSON lines, in under 10 minutes.

Parts, in this order (the CPU figures first, on a quiet machine):
1. ``bench.cycle``: CPU of the floor (bare fetches), a steady ``notifier run`` cycle and
   ``notifier once`` at 1,000 and 10,000 jobs x 10 nodes; peak RSS; the simulator's share;
   rows and WAL bytes of a steady cycle (part 4a);
   ``bench.cycle --quiet``: a cycle where nothing changes (part 4a);
2. ``bench.latency``: detect-to-deliver on loopback, p50 and p99 (part 4b);
3. ``bench.detect``: detection at the API's limit on a scaled clock, notifier and the naive
   poller side by side (parts 2 and 3).
Then one line with the wall time and the figures that missed their target (also on stderr).
Exit 0 even when a target is missed: the figures are the output.

    python -m bench                         # everything
    python -m bench --k 10 --duration 3000  # part 2/3 clock scale and length (virtual seconds)
    python -m bench --only detect           # one part: cycle, quiet, latency, detect
    python -m bench --profile               # instead: where a steady cycle and once spend CPU and memory
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from bench import cycle, detect, latency, profile
from bench.common import FIGURES, say


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--profile", action="store_true", help="profile a steady cycle and once at 10,000 jobs")
    parser.add_argument("--only", choices=("cycle", "quiet", "latency", "detect"), action="append")
    parser.add_argument("--k", default="10", help="part 2/3 clock scale (default 10)")
    parser.add_argument("--duration", default="3000", help="part 2/3 virtual seconds (default 3000)")
    parser.add_argument("--warmup", default="600", help="part 2/3 virtual seconds of warm-up (default 600)")
    parser.add_argument("--jobs", action="append", help="part 1 sizes (default 1000 and 10000)")
    args = parser.parse_args(argv)
    if args.profile:
        return profile.main([])
    started = time.monotonic()
    parts = {
        "cycle": lambda: cycle.main([a for j in (args.jobs or []) for a in ("--jobs", j)]),
        "quiet": lambda: cycle.main(["--quiet"]),
        "latency": lambda: latency.main([]),
        "detect": lambda: detect.main(["--k", args.k, "--duration", args.duration, "--warmup", args.warmup]),
    }
    took = {}
    for name, run in parts.items():
        if args.only and name not in args.only:
            continue
        began = time.monotonic()
        say(f"--- bench: {name}")
        run()
        took[name] = round(time.monotonic() - began, 1)
    missed = [f["figure"] + (f" ({f['jobs']} jobs)" if "jobs" in f else "") for f in FIGURES if f.get("ok") is False]
    wall = round(time.monotonic() - started, 1)
    print(json.dumps({"figure": "bench_wall_s", "value": wall, "parts_s": took, "target": "< 600",
                      "ok": wall < 600, "missed": missed}), flush=True)
    say(f"bench: {wall:.0f} s wall ({', '.join(f'{k} {v:.0f} s' for k, v in took.items())}); "
        + (f"targets missed: {', '.join(missed)}" if missed else "every target met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
