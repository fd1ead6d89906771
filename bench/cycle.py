"""Part 1 (CPU of a cycle) and part 4a (what a cycle writes): N jobs x 10 nodes from the simulator on loopback.

Per size, with the simulator (synthetic: all NORMAL, counters moving; no rate limit, no
latency) in its own process, each measurement in a process of its own:

* **floor**: bare concurrent httpx fetches of every job's status (16 in flight, the
  notifier's limits and timeout, bodies read, nothing parsed): CPU (``time.process_time``
  around the sweep), wall, the process's peak RSS.
* **run**: the real ``App`` under the real ``Daemon`` (``Daemon.run_cycle``: what every tick
  of ``notifier run`` does, list API + statuses + plan + commit + metrics + housekeeping)
  opened on a steady state file; CPU (process_time, all threads) and wall of each steady
  cycle, rows changed (``total_changes``) and bytes the commit appended to the WAL (the
  WAL is checkpointed-and-truncated from a side connection before each cycle, so its size
  afterwards is every byte the cycle wrote; the same pages reach the main file later, at a
  checkpoint), peak RSS.
* **once**: ``notifier once`` as a whole process against a copy of the steady state file:
  rusage CPU minus ``python -c pass`` (interpreter start-up only: importing notifier is
  counted against ``once``), wall, peak RSS.

The steady state file comes from a first ``notifier once`` on an empty state (its CPU is
reported too: the first cycle inserts every row). Measurements are interleaved (floor,
run, once, then the reverse order, ...; a single round is bracketed by two floors) so
machine noise lands on all of them; figures are medians over rounds. The simulator's own
CPU over each measured stretch comes from /proc/PID/stat.

    python -m bench.cycle                      # 1,000 and 10,000 jobs
    python -m bench.cycle --jobs 2000 --rounds 3
    python -m bench.cycle --quiet              # part 4a only: a cycle where nothing changes (counters still)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    CONCURRENCY,
    PY,
    TIMEOUT,
    Child,
    SimProcess,
    copy_state,
    emit,
    interpreter_baseline,
    job_names,
    median,
    proc_cpu,
    run_child,
    say,
    workdir,
    write_config,
)

RUN_TARGET, ONCE_TARGET, RSS_TARGET_MB = 1.2, 1.5, 100.0


# --- workers (each in its own process) ------------------------------------------------

def floor_worker(url: str, jobs: int, sim_pid: int, sweeps: int) -> dict[str, Any]:
    import httpx

    from bench.common import PROJECT

    names = job_names(jobs)

    async def sweep(client: httpx.AsyncClient) -> None:
        pending = iter(names)

        async def worker() -> None:
            for name in pending:
                response = await client.get(f"{url}/v1/{PROJECT}/jobs/{name}/status")
                response.read()

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    async def main() -> list[dict[str, float]]:
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        out = []
        async with httpx.AsyncClient(timeout=httpx.Timeout(TIMEOUT), limits=limits, follow_redirects=False,
                                     headers={"Content-Type": "application/json", "User-Agent": "bench"}) as client:
            for _ in range(sweeps):
                s0, c0, w0 = proc_cpu(sim_pid), time.process_time(), time.perf_counter()
                await sweep(client)
                out.append({"cpu": time.process_time() - c0, "wall": time.perf_counter() - w0,
                            "sim_cpu": proc_cpu(sim_pid) - s0})
        return out

    return {"sweeps": asyncio.run(main())}


def _vm(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_worker(config: Path, sim_pid: int, cycles: int) -> dict[str, Any]:
    from notifier.app import App
    from notifier.daemon import Daemon

    rss_imports = _vm("VmRSS")

    async def main() -> dict[str, Any]:
        c0, w0 = time.process_time(), time.perf_counter()
        app = await App.open(config)
        opened = {"cpu": time.process_time() - c0, "wall": time.perf_counter() - w0, "rss_mb": _vm("VmRSS")}
        try:
            daemon = Daemon(app)
            db = app.store.path
            out = []
            for _ in range(cycles):
                side = sqlite3.connect(db)
                busy = side.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                side.close()
                wal = Path(f"{db}-wal")
                wal_before = wal.stat().st_size if wal.exists() else 0
                rows0 = app.store.total_changes
                s0, c0, w0 = proc_cpu(sim_pid), time.process_time(), time.perf_counter()
                report = await daemon.run_cycle()
                cpu, wall, sim = time.process_time() - c0, time.perf_counter() - w0, proc_cpu(sim_pid) - s0
                if report is None:
                    raise RuntimeError("the cycle failed (see stderr)")
                out.append({"cpu": cpu, "wall": wall, "sim_cpu": sim, "requests": report.requests,
                            "fetched": report.fetched, "errors": len(report.errors),
                            "rows": app.store.total_changes - rows0,
                            "wal_bytes": (wal.stat().st_size if wal.exists() else 0) - wal_before,
                            "checkpoint_busy": busy, "rss_mb": _vm("VmRSS")})
            return {"open": opened, "cycles": out}
        finally:
            await app.aclose()

    result = asyncio.run(main())
    result["rss_imports_mb"] = rss_imports
    result["hwm_mb"] = _vm("VmHWM")
    return result


# --- the orchestration ----------------------------------------------------------------

def _once(config: Path, sim: SimProcess) -> tuple[Child, float]:
    s0 = sim.cpu()
    child = run_child([PY, "-m", "notifier", "once", "-c", str(config), "--log-level", "warning"])
    if child.code != 0:
        raise RuntimeError(f"notifier once failed (exit {child.code}):\n{child.stderr[-3000:]}")
    return child, sim.cpu() - s0


def _schedule(rounds: int) -> list[str]:
    order = ["floor", "run", "once"]
    out: list[str] = []
    for r in range(rounds):
        out += order if r % 2 == 0 else order[::-1]
    if rounds == 1:
        out.append("floor")  # bracket the others: the floor before and after
    return out


def measure(jobs: int, rounds: int, cycles: int, baseline: Child) -> dict[str, Any]:
    """Every part-1 figure for one size; prints them and returns the medians for the scaling lines."""
    with workdir(f"cycle-{jobs}") as d, SimProcess(["--jobs", str(jobs), "--mode", "synthetic",
                                                    "--record", "1000"]) as sim:
        config = write_config(d, sim.url)
        first, first_sim = _once(config, sim)  # empty state: inserts every row; leaves the steady file
        steady = d / "steady.db"
        copy_state(d / "state.db", steady)
        floors: list[dict[str, float]] = []
        runs: list[dict[str, Any]] = []
        onces: list[tuple[Child, float]] = []
        for task in _schedule(rounds):
            for suffix in ("", "-wal", "-shm"):
                Path(f"{d / 'state.db'}{suffix}").unlink(missing_ok=True)
            copy_state(steady, d / "state.db")
            if task == "floor":
                child = run_child([PY, "-m", "bench.cycle", "floor", sim.url, str(jobs), str(sim.pid), "1"])
                floors += [{**s, "rss_mb": child.rss_mb} for s in child.json()["sweeps"]]
            elif task == "run":
                child = run_child([PY, "-m", "bench.cycle", "run", str(config), str(sim.pid), str(cycles)])
                runs.append({**child.json(), "rss_mb": child.rss_mb})
            else:
                onces.append(_once(config, sim))
            say(f"  {jobs} jobs: {task} done")
    return report(jobs, floors, runs, onces, first, first_sim, baseline)


def report(jobs: int, floors: list[dict[str, float]], runs: list[dict[str, Any]], onces: list[tuple[Child, float]],
           first: Child, first_sim: float, baseline: Child) -> dict[str, Any]:
    j = {"jobs": jobs, "nodes": 10}
    floor_cpu, floor_wall = median([f["cpu"] for f in floors]), median([f["wall"] for f in floors])
    floor_sim = median([f["sim_cpu"] for f in floors])
    emit("floor_cpu_s", floor_cpu, unit="s", samples=len(floors), **j)
    emit("floor_wall_s", floor_wall, unit="s", **j)
    emit("floor_peak_rss_mb", max(f["rss_mb"] for f in floors), unit="MB", **j)
    emit("sim_cpu_share_floor", floor_sim / floor_wall, unit="cores", sim_cpu_s=round(floor_sim, 3),
         bottleneck=floor_sim / floor_wall > 0.9, **j)

    steady = [c for r in runs for c in r["cycles"]]
    run_cpu, run_wall = median([c["cpu"] for c in steady]), median([c["wall"] for c in steady])
    run_sim = median([c["sim_cpu"] for c in steady])
    run_rss = max(r["rss_mb"] for r in runs)
    emit("run_steady_cpu_s", run_cpu, unit="s", samples=len(steady), all=[round(c["cpu"], 3) for c in steady], **j)
    emit("run_steady_cpu_ratio", run_cpu / floor_cpu, target=f"<= {RUN_TARGET}", ok=run_cpu / floor_cpu <= RUN_TARGET,
         **j)
    emit("run_steady_wall_s", run_wall, unit="s", wall_ratio=round(run_wall / floor_wall, 3), **j)
    emit("run_requests_per_cycle", median([c["requests"] for c in steady]), fetched=steady[-1]["fetched"],
         errors=sum(c["errors"] for c in steady), **j)
    emit("run_open_cpu_s", median([r["open"]["cpu"] for r in runs]), unit="s",
         note="App.open: config, rules, templates, state file loaded", **j)
    emit("run_peak_rss_mb", run_rss, unit="MB", target=f"<= {RSS_TARGET_MB:g}" if jobs >= 10_000 else None,
         ok=run_rss <= RSS_TARGET_MB, after_imports_mb=round(runs[-1]["rss_imports_mb"], 1),
         after_open_mb=round(runs[-1]["open"]["rss_mb"], 1), **j)
    emit("sim_cpu_share_run", run_sim / run_wall, unit="cores", sim_cpu_s=round(run_sim, 3),
         bottleneck=run_sim / run_wall > 0.9, **j)
    emit("writes_steady_rows", median([c["rows"] for c in steady]), unit="rows",
         note="counters move every cycle: one row per node whose counters moved", **j)
    emit("writes_steady_wal_bytes", median([c["wal_bytes"] for c in steady]), unit="bytes",
         per_row=round(median([c["wal_bytes"] for c in steady]) / max(1, median([c["rows"] for c in steady])), 1),
         **j)

    once_cpu = median([c.cpu - baseline.cpu for c, _ in onces])
    once_wall = median([c.wall for c, _ in onces])
    once_rss = max(c.rss_mb for c, _ in onces)
    emit("once_cpu_s", once_cpu, unit="s", minus="interpreter start-up", minus_s=round(baseline.cpu, 3),
         samples=len(onces), **j)
    emit("once_cpu_ratio", once_cpu / floor_cpu, target=f"<= {ONCE_TARGET}" if jobs <= 1000 else None,
         ok=once_cpu / floor_cpu <= ONCE_TARGET, **j)
    emit("once_wall_s", once_wall, unit="s", minus_start_s=round(once_wall - baseline.wall, 3), **j)
    emit("once_peak_rss_mb", once_rss, unit="MB", target=f"<= {RSS_TARGET_MB:g}" if jobs >= 10_000 else None,
         ok=once_rss <= RSS_TARGET_MB, **j)
    emit("sim_cpu_share_once", median([s for _, s in onces]) / once_wall, unit="cores", **j)
    emit("once_first_cpu_s", first.cpu - baseline.cpu, unit="s", wall_s=round(first.wall, 2),
         peak_rss_mb=round(first.rss_mb, 1), note="empty state file: every row inserted", **j)
    say(f"{jobs:>6} jobs x 10: floor {floor_cpu:.2f}s CPU ({floor_wall:.2f}s wall) | run steady {run_cpu:.2f}s CPU "
        f"= {run_cpu / floor_cpu:.2f}x | once {once_cpu:.2f}s CPU = {once_cpu / floor_cpu:.2f}x | RSS run "
        f"{run_rss:.0f} MB, once {once_rss:.0f} MB | sim {run_sim / run_wall:.2f} cores during run")
    return {"floor": floor_cpu, "run": run_cpu, "once": once_cpu}


def quiet(jobs: int) -> None:
    """Part 4a: a cycle in which nothing changes (statuses and counters still): rows and WAL bytes."""
    with workdir(f"quiet-{jobs}") as d, SimProcess(["--jobs", str(jobs), "--mode", "quiet", "--record", "1000"]) as sim:
        config = write_config(d, sim.url)
        _once(config, sim)
        child = run_child([PY, "-m", "bench.cycle", "run", str(config), str(sim.pid), "2"])
        cycles = child.json()["cycles"]
    last = cycles[-1]
    emit("writes_quiet_rows", last["rows"], unit="rows", jobs=jobs, nodes=10, target="O(changed rows) = 0",
         ok=last["rows"] == 0, all=[c["rows"] for c in cycles])
    emit("writes_quiet_wal_bytes", last["wal_bytes"], unit="bytes", jobs=jobs, nodes=10,
         all=[c["wal_bytes"] for c in cycles], note="WAL growth over one cycle after a TRUNCATE checkpoint")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "floor":
        print(json.dumps(floor_worker(argv[1], int(argv[2]), int(argv[3]), int(argv[4]))))
        return 0
    if argv and argv[0] == "run":
        print(json.dumps(run_worker(Path(argv[1]), int(argv[2]), int(argv[3]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, action="append", help="a size (repeatable; default 1000 and 10000)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3 below 5,000 jobs, "
                                                                 "else 1 bracketed by two floors)")
    parser.add_argument("--cycles", type=int, default=None, help="steady cycles per run process (default 2, 1 at "
                                                                 ">= 5,000 jobs)")
    parser.add_argument("--quiet", action="store_true", help="only the quiet-cycle writes (part 4a)")
    args = parser.parse_args(argv)
    if args.quiet:
        quiet(1000)
        return 0
    baseline, imports = interpreter_baseline()
    emit("interpreter_start_cpu_s", baseline.cpu, unit="s", wall_s=round(baseline.wall, 3),
         rss_mb=round(baseline.rss_mb, 1),
         note="interpreter start-up (python -m bench.wrap bench.nothing, ~ python -c pass): subtracted from once")
    emit("import_cpu_s", imports.cpu - baseline.cpu, unit="s", rss_mb=round(imports.rss_mb, 1),
         note="import notifier.cli, app, daemon beyond start-up (counted in once)")
    results = {}
    for jobs in args.jobs or [1000, 10_000]:
        rounds = args.rounds or (3 if jobs < 5000 else 1)
        cycles = args.cycles or (2 if jobs < 5000 else 1)
        results[jobs] = measure(jobs, rounds, cycles, baseline)
    if len(results) > 1:
        small, big = min(results), max(results)
        for what in ("floor", "run", "once"):
            scale = results[big][what] / results[small][what] / (big / small)
            emit(f"{what}_scaling", scale, unit="x linear", jobs=f"{small}->{big}",
                 target="about 1 (linear)" if what != "floor" else None, ok=scale <= 1.15 if what != "floor" else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
