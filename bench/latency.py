"""Part 4b: detect-to-deliver, from the status request that saw a change to the webhook request arriving.

The real service (``notifier run``, interval 1 s, ``[jobs] discover = true``, no rate
limit) polls 100 jobs x 10 nodes from the simulator (its own process); a webhook channel
posts to a receiver on loopback. Each round flips one node of 8 random jobs (EXCEPTION, or
back to NORMAL: a firing or a resolved message) at a random moment of the cycle and waits
for the 8 messages; per message the latency is its arrival minus the scenario time of the
first status request for that job at or after the flip (the simulator's request log; its
clock is CLOCK_MONOTONIC like the receiver's). 16 rounds: 128 samples, enough for a p99.
Flap damping is off (the same nodes flip every few seconds by design).

    python -m bench.latency [--rounds 16] [--per-round 8]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence

from bench.common import (
    JOB_RULE,
    NODE_RULE,
    SimProcess,
    emit,
    job_names,
    median,
    notifier_run,
    percentile,
    say,
    workdir,
    write_config,
)
from bench.receiver import Arrival, Receiver

JOBS, NODE, TARGET_MS = 100, "node_03", 1000.0


def matches(a: Arrival, job: str, status: str) -> bool:
    doc = a.doc if isinstance(a.doc, dict) else {}
    return any(x.get("job") == job and x.get("node") == NODE and x.get("status") == status
               for x in doc.get("alerts", ()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--per-round", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    names = job_names(JOBS)
    down: set[str] = set()
    samples: list[float] = []
    lost = 0
    sim_args = ["--jobs", str(JOBS), "--mode", "synthetic", "--record", "50000"]
    with workdir("latency") as d, SimProcess(sim_args) as sim, Receiver() as hook:
        config = write_config(d, sim.url, interval=1.0, rate=1000.0, rules=NODE_RULE + JOB_RULE,
                              channel=f'type = "webhook"\nurl = "{hook.url}"', extra="[noise]\nflap_threshold = 0\n")
        with notifier_run(config, d / "run.log"):
            time.sleep(3.0)  # the first cycles establish the state
            for _ in range(args.rounds):
                time.sleep(rng.uniform(0.0, 1.0))  # anywhere in the cycle
                start = len(hook)
                flips = []
                for job in rng.sample(names, args.per_round):
                    status = "NORMAL" if job in down else "EXCEPTION"
                    down.symmetric_difference_update({job})
                    t = sim.command("node", job, NODE, status)["t"]
                    flips.append((job, "firing" if status == "EXCEPTION" else "resolved", t))
                hook.wait(lambda items, s=start, f=flips: all(any(matches(a, j, st) for a in items[s:])
                                                               for j, st, _ in f), timeout=15.0)
                arrivals = hook.since(start)
                for job, status, t in flips:
                    got = next((a for a in arrivals if matches(a, job, status)), None)
                    seen = sim.command("first", job, t)["t"]
                    if got is None or seen is None:
                        lost += 1
                        continue
                    samples.append((got.t - (sim.mono_t0 + seen)) * 1000)
        if (d / "run.log").stat().st_size:
            say((d / "run.log").read_text()[-2000:])
    p99 = percentile(samples, 99)
    emit("detect_to_deliver_p50_ms", median(samples), unit="ms", samples=len(samples), jobs=JOBS, interval_s=1)
    emit("detect_to_deliver_p99_ms", p99, unit="ms", samples=len(samples), max_ms=round(max(samples), 1),
         target=f"< {TARGET_MS:g}", ok=p99 < TARGET_MS and lost == 0, lost=lost)
    say(f"poll -> webhook over {len(samples)} changes: p50 {median(samples):.0f} ms, p99 {p99:.0f} ms, "
        f"max {max(samples):.0f} ms, lost {lost}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
