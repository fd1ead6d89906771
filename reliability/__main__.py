"""``python -m reliability`` (what ``make reliability`` runs): every campaign in turn, then where the time went.

Each campaign prints its own figures as JSON lines; this adds one summary line per campaign
and a total. Exit 0 only when every campaign met all its targets. ``--seed N`` is passed to
each campaign (each prints the seed it used, so one failing campaign can be replayed alone).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence

from reliability import crash_campaign, fault_campaign


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=None, help="the seed for every campaign (default: random each)")
    parser.add_argument("--kills", type=int, default=100, help="SIGKILLs of the crash campaign (default 100)")
    args = parser.parse_args(argv)
    seed = [] if args.seed is None else ["--seed", str(args.seed)]
    campaigns: list[tuple[str, Callable[[Sequence[str]], int], list[str]]] = [
        ("crash", crash_campaign.main, ["--kills", str(args.kills), *seed]),
        ("faults", fault_campaign.main, seed),
    ]
    summary: dict[str, dict[str, object]] = {}
    started = time.monotonic()
    for name, run, campaign_args in campaigns:
        began = time.monotonic()
        code = run(campaign_args)
        summary[name] = {"ok": code == 0, "seconds": round(time.monotonic() - began, 1)}
        print(json.dumps({"campaign_done": name, **summary[name]}), flush=True)
    ok = all(s["ok"] for s in summary.values())
    print(json.dumps({"reliability": "ok" if ok else "FAILED", "campaigns": summary,
                      "wall_time_s": round(time.monotonic() - started, 1)}), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
