"""`make bench`: one poll cycle over N jobs x 10 nodes from the simulator on loopback.

For each size it starts the simulator in its own process, then, in a fresh worker
process (so peak RSS is the cycle's own):
  1. times the bare HTTP fetches (httpx, same concurrency, bodies read, nothing parsed);
  2. times a first cycle (empty state: every row is inserted) and a steady cycle
     (counters move, statuses do not), each through the real App;
  3. reports rows written per cycle and the worker's peak RSS.
The quality bars (ARCHITECTURE.md, "Quality bars") are printed next to the figures.

    python bench/cycle.py                # 1,000 and 10,000 jobs
    python bench/cycle.py --jobs 2000    # one size
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_simulator(jobs: int, nodes: int, port: int) -> subprocess.Popen[bytes]:
    code = ("from notifier.simulator import Scenario, serve; "
            f"serve(Scenario.synthetic(jobs={jobs}, nodes={nodes}), '127.0.0.1', {port})")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("simulator did not start")


async def bare_fetch(url: str, project: str, names: list[str]) -> float:
    import httpx

    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    sem = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        async def one(name: str) -> None:
            async with sem:
                r = await client.get(f"/v1/{project}/jobs/{name}/status")
                r.read()

        t0 = time.perf_counter()
        await asyncio.gather(*(one(n) for n in names))
        return time.perf_counter() - t0


def worker(jobs: int, url: str) -> dict[str, float]:
    """Runs in its own process: bare fetch, then two real cycles; prints JSON figures."""
    from notifier.app import App
    from notifier.simulator import Scenario

    names = [job.name for job in Scenario.synthetic(jobs=jobs, nodes=10).jobs]
    project = "b384b9e9ab9b4ee8994c8633aabc9505"
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "rules").mkdir()
        (d / "rules" / "rules.toml").write_text((ROOT / "rules" / "default.toml").read_text())
        config = d / "notifier.toml"
        config.write_text(
            f'[source]\nendpoint = "{url}"\nproject_id = "{project}"\nauth = "none"\n'
            f"concurrency = {CONCURRENCY}\nmax_requests_per_second = 1000000\n\n"
            f"[jobs]\nnames = {json.dumps(names)}\n\n[state]\npath = \"state.db\"\n\n"
            '[paths]\nrules = "rules"\n\n[channels.stdout]\ntype = "console"\n')

        async def run() -> dict[str, float]:
            bare = await bare_fetch(url, project, names)
            app = await App.open(config)
            try:
                store = app.store
                figures: dict[str, float] = {"bare_fetch_s": bare}
                for label in ("first_cycle", "steady_cycle"):
                    before = store.total_changes
                    t0 = time.perf_counter()
                    report = await app.cycle()
                    figures[f"{label}_s"] = time.perf_counter() - t0
                    figures[f"{label}_rows"] = store.total_changes - before
                    figures[f"{label}_errors"] = len(report.errors)
            finally:
                await app.aclose()
            bare2 = await bare_fetch(url, project, names)
            figures["bare_fetch_s"] = min(bare, bare2)
            return figures

        figures = asyncio.run(run())
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return figures


def measure(jobs: int) -> dict[str, float]:
    port = free_port()
    sim = start_simulator(jobs, 10, port)
    try:
        out = subprocess.run([sys.executable, __file__, "--worker", str(jobs), f"http://127.0.0.1:{port}"],
                             capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        sim.terminate()
        sim.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, action="append")
    parser.add_argument("--worker", nargs=2, metavar=("JOBS", "URL"))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(int(args.worker[0]), args.worker[1])))
        return
    sizes = args.jobs or [1000, 10000]
    results = {}
    for jobs in sizes:
        f = measure(jobs)
        results[jobs] = f
        ratio = f["steady_cycle_s"] / f["bare_fetch_s"]
        print(f"{jobs:>6} jobs x 10 nodes: bare fetch {f['bare_fetch_s']:.2f}s | first cycle {f['first_cycle_s']:.2f}s "
              f"({f['first_cycle_rows']:.0f} rows) | steady cycle {f['steady_cycle_s']:.2f}s "
              f"({f['steady_cycle_rows']:.0f} rows) = {ratio:.2f}x bare (bar: < 1.5x) | "
              f"peak RSS {f['peak_rss_mb']:.0f} MB | errors {f['steady_cycle_errors']:.0f}", flush=True)
    if len(results) > 1:
        small, big = min(results), max(results)
        scale = (results[big]["steady_cycle_s"] / results[small]["steady_cycle_s"]) / (big / small)
        print(f"scaling {small} -> {big} jobs: {scale:.2f} x linear (1.00 = linear)")
        print(f"peak RSS at {big} jobs: {results[big]['peak_rss_mb']:.0f} MB (bar: < 150 MB)")


if __name__ == "__main__":
    main()
