"""Parts 2 and 3: how soon a change is alerted at the API's limit, for notifier and for the naive poller.

10,000 jobs x 10 nodes in the simulator's scale mode (per period 0.1 % of the jobs change,
half at node level under a NORMAL job, half at job level; each change held 900 s, longer
than the naive poller's sweep, so that both see nearly every change), a
rate limit of 30 requests/s per user and 50 ms per answer; notifier runs as
``notifier run`` (interval 60 s, ``max_requests_per_second = 20``, ``[jobs] discover =
true``, rules on a node and on a job in EXCEPTION, a webhook channel to a local receiver).

A **scaled clock** makes it fit the time budget: every duration is divided by ``k`` and
every rate multiplied by ``k`` (k = 10: interval 6 s, 200 requests/s, limit 300/s, 5 ms
latency, period 6 s, hold 90 s). Every figure is given back in virtual (unscaled) seconds,
with k in its line. What does not scale: CPU time. Each real millisecond a process
computes counts k virtual ones, so both pollers look slower than they would be; the
naive poller, whose every request waits for its CPU, most (see ``naive_unscaled_*``).

The naive poller (``bench.naive``) runs at the same time against its own simulator (same
scenario, same seed, same limits) and its own receiver, so both see the same machine.

Each ground-truth change start (``Simulator.changes``) that begins after the warm-up and
ends (plus one interval) before the run does is matched to the first firing alert for its
job (and node) that arrives after it: job-level and node-level detection times (median,
p95, max) and the share detected (a node change that reverts before its job's next
status fetch is never seen by any poller). The achieved sweep is the longest time between
two status fetches of one job (the simulator's request log); requests per second (mean,
and the busiest real second against the limit) and throttled answers come from the
simulator.

    python -m bench.detect [--k 10] [--duration 3000] [--warmup 600] [--no-naive]
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    ENV,
    JOB_RULE,
    NODE_RULE,
    PROJECT,
    PY,
    ROOT,
    SimProcess,
    emit,
    median,
    notifier_run,
    percentile,
    proc_cpu,
    say,
    workdir,
    write_config,
)
from bench.receiver import Arrival, Receiver

INTERVAL, RATE, LIMIT, LATENCY, PERIOD, HOLD = 60.0, 20.0, 30.0, 0.05, 60.0, 900.0
RATIO_TARGET = 8.0
CHANGE_SHARE = 0.001  # 1 % a minute held 5 min keeps ~500 jobs troubled, re-fetched every cycle: see the README
Key = tuple[str, str]  # (job, node): node "" for the job itself


def ours_alerts(a: Arrival) -> Iterable[Key]:
    doc = a.doc if isinstance(a.doc, dict) else {}
    for alert in doc.get("alerts", ()):
        if alert.get("status") == "firing" and alert.get("rule") in ("node-exception", "job-exception"):
            yield alert.get("job", ""), alert.get("node") or ""


def naive_alerts(a: Arrival) -> Iterable[Key]:
    doc = a.doc if isinstance(a.doc, dict) else {}
    if doc.get("status") == "EXCEPTION":
        yield doc.get("job", ""), doc.get("node") or ""


def analyse(who: str, stats: dict[str, Any], arrivals: list[Arrival], extract: Callable[[Arrival], Iterable[Key]],
            mono_t0: float, began: float, ended: float, args: argparse.Namespace) -> dict[str, float]:
    """Print the figures of one poller; returns the job-level median (virtual s) and the per-request time."""
    k = args.k
    warm = began + args.warmup / k
    hold, slack = args.hold / k, INTERVAL / k
    seen: dict[Key, list[float]] = defaultdict(list)
    for a in arrivals:
        for key in extract(a):
            seen[key].append(a.t)
    for times in seen.values():
        times.sort()
    delays: dict[str, list[float]] = {"job": [], "node": []}
    total = {"job": 0, "node": 0}
    for t, job, node, status, _previous in stats.get("changes", ()):
        start = mono_t0 + t
        if status != "EXCEPTION" or start < warm or start + hold + slack > ended:
            continue
        kind = "node" if node else "job"
        total[kind] += 1
        times = seen.get((job, node), [])
        i = bisect.bisect_left(times, start)
        if i < len(times) and times[i] <= start + hold + slack:
            delays[kind].append((times[i] - start) * k)
    common = {"k": k, "jobs": args.jobs, "who": who}
    out: dict[str, float] = {}
    for kind in ("job", "node"):
        d = delays[kind]
        missed = total[kind] - len(d)
        with_misses = d + [float("inf")] * missed  # a change never alerted counts as never
        overall = percentile(with_misses, 50) if with_misses else float("nan")
        emit(f"{who}_detect_{kind}_median_s", median(d), unit="virtual s", p95_s=round(percentile(d, 95), 1),
             max_s=round(max(d), 1) if d else None, detected=len(d), changes=total[kind],
             detected_share=round(len(d) / total[kind], 3) if total[kind] else None,
             median_all_s=None if overall == float("inf") else round(overall, 1),
             note="median/p95/max of the detected changes; median_all counts a missed change as never (null: "
                  "half or more were missed)", **common)
        out[kind] = median(d)
        out[f"{kind}_all"] = overall

    window = (warm, ended)
    fetches: dict[str, list[float]] = defaultdict(list)
    count = 0
    for t, job in stats.get("status", ()):
        m = mono_t0 + t
        if window[0] <= m <= window[1]:
            fetches[job].append(m)
            count += 1
    lists = [mono_t0 + t for t in stats.get("list", ()) if window[0] <= mono_t0 + t <= window[1]]
    gaps = [max(b - a for a, b in itertools.pairwise(ts)) for ts in fetches.values() if len(ts) > 1]
    span = window[1] - window[0]
    sweep = max(gaps) * k if gaps else float("nan")
    emit(f"{who}_sweep_max_s", sweep, unit="virtual s", per_job_median_s=round(median(gaps) * k, 1) if gaps else None,
         jobs_fetched_twice=len(gaps), window_s=round(span * k), sweeps_observed=round(span * k / sweep, 2)
         if gaps else None, **common)
    everything = sorted([m for ts in fetches.values() for m in ts] + lists)
    busiest, j = 0, 0
    for i, m in enumerate(everything):  # the most requests in any one real second (the limit's window)
        while everything[j] <= m - 1.0:
            j += 1
        busiest = max(busiest, i - j + 1)
    mean_rate = len(everything) / span / k if span > 0 else float("nan")
    emit(f"{who}_requests_per_s", mean_rate, unit="virtual req/s", budget=args.budget if who == "notifier" else None,
         limit=LIMIT, busiest_real_second=busiest, busiest_virtual_rate=round(busiest / k, 1),
         status_requests=count, list_requests=len(lists), target=f"< {LIMIT:g} (the API's limit)",
         ok=busiest / k <= LIMIT, **common)
    emit(f"{who}_throttled", stats.get("throttled"), unit="answers (429)", target="0",
         ok=stats.get("throttled") == 0, **common)
    out["per_request"] = span / count if count else float("nan")
    return out


def cycles_of(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("event") == "cycle_done":
            out.append(doc)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--k", type=float, default=10.0, help="clock scale (default 10)")
    parser.add_argument("--duration", type=float, default=3000.0, help="virtual seconds to run (default 3000)")
    parser.add_argument("--warmup", type=float, default=600.0, help="virtual seconds before changes count "
                                                                    "(default 600: the first sweep)")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hold", type=float, default=HOLD, help=f"virtual seconds a change lasts (default {HOLD:g})")
    parser.add_argument("--change-share", type=float, default=CHANGE_SHARE,
                        help=f"share of the jobs that change per period (default {CHANGE_SHARE:g}: 10 a minute)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baseline (part 3)")
    parser.add_argument("--log", type=Path, help="keep notifier's JSON log here")
    parser.add_argument("--budget", type=float, default=RATE, help="notifier's max_requests_per_second, virtual "
                                                                    f"(default {RATE:g}; a diagnostic knob)")
    args = parser.parse_args(argv)
    k = args.k
    sim_args = ["--jobs", str(args.jobs), "--mode", "scale", "--period", str(PERIOD / k), "--hold", str(args.hold / k),
                "--change-share", str(args.change_share),
                "--seed", str(args.seed), "--rate-limit", str(LIMIT * k), "--latency", str(LATENCY / k),
                "--record", str(int(args.duration / k * LIMIT * k * 1.2) + 10_000), "--dump"]
    real = args.duration / k
    with workdir("detect") as d:
        ours_sim, naive_sim = SimProcess(sim_args).start(), None
        ours_hook, naive_hook = Receiver().__enter__(), None
        naive: subprocess.Popen[str] | None = None
        try:
            config = write_config(d, ours_sim.url, interval=INTERVAL / k, rate=args.budget * k,
                                  rules=NODE_RULE + JOB_RULE, channel=f'type = "webhook"\nurl = "{ours_hook.url}"',
                                  extra="[noise]\nflap_threshold = 0\n")
            if not args.no_naive:
                naive_sim, naive_hook = SimProcess(sim_args).start(), Receiver().__enter__()
            say(f"detect: {args.jobs} jobs, k = {k:g}, {args.duration:g} virtual s = {real:.0f} real s"
                + ("" if args.no_naive else ", notifier and the naive poller side by side"))
            with notifier_run(config, d / "run.log", level="info") as proc:
                began = time.monotonic()
                if naive_sim is not None and naive_hook is not None:
                    naive = subprocess.Popen(
                        [PY, "-m", "bench.naive", "--endpoint", naive_sim.url, "--project", PROJECT, "--hook",
                         naive_hook.url, "--interval", str(INTERVAL / k), "--duration", str(real), "--state",
                         str(d / "naive.json")], stdout=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
                cpu0 = {"notifier": proc_cpu(proc.pid), "notifier_sim": ours_sim.cpu()}
                if naive is not None and naive_sim is not None:
                    cpu0 |= {"naive": proc_cpu(naive.pid), "naive_sim": naive_sim.cpu()}
                time.sleep(real)
                ended = time.monotonic()
                cpu = {"notifier": proc_cpu(proc.pid) - cpu0["notifier"],
                       "notifier_sim": ours_sim.cpu() - cpu0["notifier_sim"]}
                if naive is not None and naive_sim is not None:
                    cpu |= {"naive": proc_cpu(naive.pid) - cpu0["naive"],
                            "naive_sim": naive_sim.cpu() - cpu0["naive_sim"]}
            if naive is not None:
                out, _ = naive.communicate(timeout=60)
                say(f"naive: {out.strip()}")
            ours_stats = ours_sim.stop()
            naive_stats = naive_sim.stop() if naive_sim is not None else {}
        finally:
            ours_sim.stop()
            ours_hook.__exit__()
            if naive_sim is not None:
                naive_sim.stop()
            if naive_hook is not None:
                naive_hook.__exit__()
            if naive is not None and naive.poll() is None:
                naive.kill()
        cycles = cycles_of(d / "run.log")
        if args.log:
            args.log.write_text((d / "run.log").read_text(errors="replace"))
        errors = [line for line in (d / "run.log").read_text(errors="replace").splitlines()
                  if '"ERROR"' in line or '"WARNING"' in line]
    for line in errors[:5]:
        say(f"notifier: {line[:300]}")
    emit("cores_used", {n: round(c / real, 2) for n, c in cpu.items()}, unit="cores (CPU s / wall s)", k=k,
         note="2 cores on this machine; CPU is the one thing the scaled clock does not scale")
    durations = [c.get("duration_ms") for c in cycles if c.get("duration_ms") is not None]
    sweeps = [c.get("sweep_s") for c in cycles if c.get("sweep_s") is not None]
    emit("notifier_cycles", len(cycles), k=k, cycle_median_s=round(median(durations) / 1000 * k, 1) if durations
         else None, reported_sweep_max_s=round(max(sweeps) * k) if sweeps else None,
         throttled_in_log=sum(c.get("throttled") or 0 for c in cycles), unit="cycles")
    ours = analyse("notifier", ours_stats, ours_hook.since(), ours_alerts, ours_sim.mono_t0, began, ended, args)
    if naive_hook is not None and naive_sim is not None:
        theirs = analyse("naive", naive_stats, naive_hook.since(), naive_alerts, naive_sim.mono_t0, began, ended,
                         args)
        ratio = theirs["job"] / ours["job"]
        everything = theirs["job_all"] / ours["job_all"]
        emit("naive_over_notifier_job_median", ratio, unit="x", k=k, target=f">= {RATIO_TARGET:g}",
             ok=ratio >= RATIO_TARGET, over_all_changes=None if everything != everything or everything == float("inf")
             else round(everything, 2), note="medians of detected changes; over_all_changes counts misses as never "
                                             "(null: the naive poller missed half or more)")
        # CPU does not scale: the naive poller's real time per request is latency/k + its overhead o, so its
        # virtual sweep is N(L + k o) where unscaled it would be N(L + o).
        overhead = theirs["per_request"] - LATENCY / k
        factor = (LATENCY + overhead) / (LATENCY + k * overhead)
        emit("naive_unscaled_detect_job_median_s", theirs["job"] * factor, unit="virtual s (estimate)", k=k,
             overhead_ms_per_request=round(overhead * 1000, 2), factor=round(factor, 3),
             note="naive's job median x (L + o) / (L + k o): what it would be without the scaled clock")
        emit("naive_over_notifier_job_median_unscaled", theirs["job"] * factor / ours["job"], unit="x (estimate)",
             k=k, target=f">= {RATIO_TARGET:g}", ok=theirs["job"] * factor / ours["job"] >= RATIO_TARGET)
    return 0


if __name__ == "__main__":
    sys.exit(main())
