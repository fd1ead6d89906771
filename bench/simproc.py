"""The DGC simulator in a process of its own, for the benchmarks (``SimProcess`` in ``bench.common`` starts it).

    python -m bench.simproc --jobs 10000 --mode scale --rate-limit 300 --latency 0.005 --period 6 --hold 30

Prints one JSON line when it serves: {"url", "pid", "mono_t0" (time.monotonic() of scenario
time 0: CLOCK_MONOTONIC is the same in every process), "epoch_ms"}. Then it answers
commands on stdin, one JSON line each:

    now                      {"t": scenario seconds}
    node JOB NODE STATUS     set a node's status (runtime override); {"t": when}
    job JOB STATUS           set a job's status; {"t": when}
    first JOB T              {"t": scenario time of the first status request of JOB at or after T, or null}
    counts                   {"served", "throttled", "recorded"}

On SIGTERM it stops and writes ``--stats FILE``: counts, its own CPU seconds, with
``--dump`` every recorded request ({"status": [[t, job], ...], "list": [t, ...]}) and, in
scale mode, the ground truth ({"changes": [[t, job, node, status, previous], ...]}).

Modes: ``synthetic`` (all NORMAL, counters moving: a steady cycle), ``quiet`` (all NORMAL,
counters still: a cycle with nothing to write), ``scale`` (``Scenario.scale``: changes at a
known rate, ``Simulator.changes`` is the truth).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from notifier.simulator import Scenario, Simulator


def scenario_for(args: argparse.Namespace) -> Scenario:
    if args.mode == "scale":
        scale = getattr(Scenario, "scale", None)
        if scale is None:
            raise SystemExit("this simulator has no scale mode (Scenario.scale)")
        scenario: Scenario = scale(args.jobs, args.nodes, change_share=args.change_share, node_share=args.node_share,
                                   hold=args.hold, period=args.period, seed=args.seed)
        return scenario
    scenario = Scenario.synthetic(jobs=args.jobs, nodes=args.nodes)
    if args.mode == "quiet":  # no steps: every counter keeps its starting value, every status stays NORMAL
        scenario = replace(scenario, jobs=tuple(replace(job, steps=()) for job in scenario.jobs))
    return scenario


def build(args: argparse.Namespace) -> Simulator:
    kwargs: dict[str, Any] = {"port": args.port, "record_requests": args.record}
    accepted = inspect.signature(Simulator).parameters
    if "rate_limit" in accepted:
        kwargs["rate_limit"] = args.rate_limit or None
        kwargs["latency"] = args.latency or None
    elif args.rate_limit or args.latency:
        raise SystemExit("this simulator has no rate_limit/latency (it predates [limits])")
    return Simulator(scenario_for(args), **kwargs)


def job_of(path: str) -> str | None:
    parts = path.rstrip("/").split("/")
    return parts[4] if len(parts) == 6 and parts[5] == "status" else None


def answer(sim: Simulator, line: str) -> dict[str, Any]:
    words = line.split()
    if not words:
        return {}
    cmd = words[0]
    if cmd == "now":
        return {"t": sim.now()}
    if cmd == "node":
        sim.set_node_status(words[1], words[2], words[3])
        return {"t": sim.now()}
    if cmd == "job":
        sim.set_job_status(words[1], words[2])
        return {"t": sim.now()}
    if cmd == "first":
        job, since = words[1], float(words[2])
        for r in sim.requests.snapshot():
            if r.t >= since and job_of(r.path) == job:
                return {"t": r.t}
        return {"t": None}
    if cmd == "counts":
        return {"served": getattr(sim, "served", None), "throttled": getattr(sim, "throttled", None),
                "recorded": len(sim.requests)}
    return {"error": f"unknown command {cmd!r}"}


def stats(sim: Simulator, dump: bool) -> dict[str, Any]:
    usage = os.times()
    out: dict[str, Any] = {"served": getattr(sim, "served", None), "throttled": getattr(sim, "throttled", None),
                           "cpu": usage.user + usage.system, "now": sim.now()}
    if dump:
        status: list[list[Any]] = []
        listing: list[float] = []
        for r in sim.requests.snapshot():
            job = job_of(r.path)
            if job is not None:
                status.append([round(r.t, 4), job])
            elif r.path.rstrip("/").endswith("/jobs"):
                listing.append(round(r.t, 4))
        out.update(status=status, list=listing, recorded=len(sim.requests))
        if getattr(sim, "scale_model", None) is not None:
            out["changes"] = [[c.t, c.job, c.node, c.status, c.previous] for c in sim.changes(0.0, sim.now() + 1.0)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--mode", choices=("synthetic", "quiet", "scale"), default="synthetic")
    parser.add_argument("--change-share", type=float, default=0.01)
    parser.add_argument("--node-share", type=float, default=0.5)
    parser.add_argument("--hold", type=float, default=300.0)
    parser.add_argument("--period", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate-limit", type=float, default=0.0, help="requests/s per user; 0: none")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    parser.add_argument("--record", type=int, default=10_000, help="requests kept in the log")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stats", type=Path, required=True)
    parser.add_argument("--dump", action="store_true", help="write every recorded request and the ground truth")
    args = parser.parse_args()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    sim = build(args).start()
    lock = threading.Lock()

    def commands() -> None:
        for line in sys.stdin:
            with lock:
                try:
                    reply = answer(sim, line)
                except Exception as exc:  # noqa: BLE001 - the harness gets the error, the simulator keeps serving
                    reply = {"error": f"{type(exc).__name__}: {exc}"}
                print(json.dumps(reply), flush=True)

    print(json.dumps({"url": sim.url, "pid": os.getpid(), "mono_t0": time.monotonic() - sim.now(),
                      "epoch_ms": sim.epoch_start_ms}), flush=True)
    threading.Thread(target=commands, daemon=True, name="bench-sim-commands").start()
    try:
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    with lock:
        sim.stop()
        args.stats.write_text(json.dumps(stats(sim, args.dump)))


if __name__ == "__main__":
    main()
