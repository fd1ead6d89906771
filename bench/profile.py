"""``--profile``: where a steady cycle and ``notifier once`` spend CPU and memory at 10,000 jobs x 10 nodes.

Needs pyinstrument in the venv (``.venv/bin/pip install pyinstrument``); it is not a
dependency of notifier. The simulator (synthetic, counters moving) runs in its own
process; a first ``notifier once`` makes the steady state file. Then, each in its own
process:

* **steady cycle**: ``App.open`` on the steady file, ``Daemon.run_cycle`` under pyinstrument.
  pyinstrument samples one thread, so ``asyncio.to_thread`` runs its function inline here
  (the same work, on the loop's thread).
* **once**: ``notifier once`` under pyinstrument from its first import to its exit.
* **memory**: tracemalloc from before the first import: what is held after imports, after
  ``App.open`` (the remembered view), and the peak during a steady cycle, with the lines
  that allocated the most; VmRSS and VmHWM (reset before the cycle) beside them.

Each prints the top functions by self time and by total time, and self time per library.

    python -m bench.profile [--jobs 10000] [--top 25]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import runpy
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import PY, SimProcess, run_child, say, workdir, write_config


def _vm(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _library(path: str) -> str:
    p = path.replace("\\", "/")
    if "/notifier/" in p:
        rest = p.split("/notifier/", 1)[1]
        return "notifier/" + (rest.split("/", 1)[0] if "/" in rest else rest)
    if "site-packages/" in p:
        return p.split("site-packages/", 1)[1].split("/", 1)[0]
    if p.startswith("<"):
        return p
    return "stdlib:" + p.rsplit("/", 1)[-1]


def summarize(session: Any, top: int) -> dict[str, Any]:
    """Self and total time per function, self time per library, from a pyinstrument session."""
    root = session.root_frame()
    self_time: dict[tuple[str, str, int], float] = defaultdict(float)
    total_time: dict[tuple[str, str, int], float] = defaultdict(float)
    by_lib: dict[str, float] = defaultdict(float)

    def walk(frame: Any, path: frozenset[tuple[str, str, int]]) -> None:
        key = (frame.function or "?", frame.file_path_short or frame.file_path or "?", frame.line_no or 0)
        own = frame.time - sum(c.time for c in frame.children)
        self_time[key] += own
        by_lib[_library(frame.file_path or "?")] += own
        if key not in path:  # recursion counted once
            total_time[key] += frame.time
        for child in frame.children:
            walk(child, path | {key})

    if root is not None:
        walk(root, frozenset())
    duration = root.time if root is not None else 0.0

    def rows(d: dict[tuple[str, str, int], float]) -> list[list[Any]]:
        return [[f"{fn} ({file}:{line})", round(t, 3), round(t / duration * 100, 1) if duration else None]
                for (fn, file, line), t in sorted(d.items(), key=lambda kv: -kv[1])[:top]]

    return {"duration_s": round(duration, 3), "cpu_s": round(session.cpu_time, 3),
            "self": rows(self_time), "total": rows(total_time),
            "libraries": [[lib, round(t, 3), round(t / duration * 100, 1) if duration else None]
                          for lib, t in sorted(by_lib.items(), key=lambda kv: -kv[1])[:15]]}


async def _inline(func: Any, /, *args: Any, **kwargs: Any) -> Any:
    return func(*args, **kwargs)


def cycle_worker(config: Path, top: int) -> dict[str, Any]:
    from pyinstrument import Profiler

    from notifier.app import App
    from notifier.daemon import Daemon

    asyncio.to_thread = _inline  # type: ignore[assignment]  # one thread, so the sampler sees all of it

    async def main() -> dict[str, Any]:
        app = await App.open(config)
        try:
            daemon = Daemon(app)
            profiler = Profiler(interval=0.001, async_mode="disabled")
            profiler.start()
            report = await daemon.run_cycle()
            session = profiler.stop()
            if report is None:
                raise RuntimeError("the cycle failed")
            return {**summarize(session, top), "requests": report.requests}
        finally:
            await app.aclose()

    return asyncio.run(main())


def once_worker(config: Path, top: int) -> dict[str, Any]:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001, async_mode="disabled")
    sys.argv = ["notifier", "once", "-c", str(config), "--log-level", "warning"]
    profiler.start()
    try:
        runpy.run_module("notifier", run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    session = profiler.stop()
    return summarize(session, top)


def memory_worker(config: Path, top: int) -> dict[str, Any]:
    import tracemalloc

    tracemalloc.start(1)
    out: dict[str, Any] = {"rss_start_mb": _vm("VmRSS")}
    from notifier.app import App
    from notifier.daemon import Daemon

    def lines(snapshot: tracemalloc.Snapshot, base: tracemalloc.Snapshot | None = None) -> list[list[Any]]:
        stats = snapshot.compare_to(base, "lineno") if base is not None else snapshot.statistics("lineno")
        return [[f"{s.traceback[0].filename.split('site-packages/')[-1].split('/work/main/')[-1]}:"
                 f"{s.traceback[0].lineno}", round((getattr(s, 'size_diff', None) or s.size) / 2**20, 2), s.count]
                for s in stats[:top]]

    def by_file(snapshot: tracemalloc.Snapshot) -> list[list[Any]]:
        return [[s.traceback[0].filename.split("site-packages/")[-1].split("/work/main/")[-1],
                 round(s.size / 2**20, 2)] for s in snapshot.statistics("filename")[:12]]

    imported = tracemalloc.take_snapshot()
    out.update(rss_after_imports_mb=_vm("VmRSS"), traced_after_imports_mb=tracemalloc.get_traced_memory()[0] / 2**20,
               imports_by_file=by_file(imported))

    async def main() -> None:
        app = await App.open(config)
        try:
            opened = tracemalloc.take_snapshot()
            out.update(rss_after_open_mb=_vm("VmRSS"), traced_after_open_mb=tracemalloc.get_traced_memory()[0] / 2**20,
                       open_lines=lines(opened, imported))
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS: the cycle's own peak from here
            tracemalloc.reset_peak()
            t0 = time.perf_counter()
            await Daemon(app).run_cycle()
            out.update(cycle_wall_s=time.perf_counter() - t0, hwm_during_cycle_mb=_vm("VmHWM"),
                       traced_peak_during_cycle_mb=tracemalloc.get_traced_memory()[1] / 2**20,
                       rss_after_cycle_mb=_vm("VmRSS"),
                       cycle_lines=lines(tracemalloc.take_snapshot(), opened))
        finally:
            await app.aclose()

    asyncio.run(main())
    return out


def _print_profile(title: str, p: dict[str, Any]) -> None:
    say(f"\n=== {title}: {p['duration_s']} s sampled, {p['cpu_s']} s CPU ===")
    say("  self time per library:")
    for lib, t, pct in p["libraries"]:
        say(f"    {pct:5.1f}%  {t:7.3f}s  {lib}")
    say("  top functions by self time:")
    for name, t, pct in p["self"]:
        say(f"    {pct:5.1f}%  {t:7.3f}s  {name}")
    say("  top functions by total time:")
    for name, t, pct in p["total"]:
        say(f"    {pct:5.1f}%  {t:7.3f}s  {name}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    workers = {"cycle": cycle_worker, "once": once_worker, "memory": memory_worker}
    if argv and argv[0] in workers:
        print(json.dumps(workers[argv[0]](Path(argv[1]), int(argv[2]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    try:
        import pyinstrument  # noqa: F401
    except ImportError:
        say("--profile needs pyinstrument: .venv/bin/pip install pyinstrument")
        return 2
    sim_args = ["--jobs", str(args.jobs), "--mode", "synthetic", "--record", "1000"]
    with workdir("profile") as d, SimProcess(sim_args) as sim:
        config = write_config(d, sim.url)
        first = run_child([PY, "-m", "notifier", "once", "-c", str(config), "--log-level", "warning"])
        if first.code != 0:
            say(first.stderr[-2000:])
            return 1
        results = {}
        for name in ("cycle", "once", "memory"):
            steady = d / "steady.db"
            if not steady.exists():
                steady.write_bytes((d / "state.db").read_bytes())
            (d / "state.db").write_bytes(steady.read_bytes())
            results[name] = run_child([PY, "-m", "bench.profile", name, str(config), str(args.top)]).json()
    _print_profile(f"steady cycle, {args.jobs} jobs ({results['cycle']['requests']} requests)", results["cycle"])
    _print_profile(f"notifier once, {args.jobs} jobs (imports included)", results["once"])
    m = results["memory"]
    say(f"\n=== memory, {args.jobs} jobs (tracemalloc on: the process is larger and slower than usual) ===")
    say(f"  VmRSS: start {m['rss_start_mb']:.0f} MB, after imports {m['rss_after_imports_mb']:.0f} MB, after App.open "
        f"{m['rss_after_open_mb']:.0f} MB, peak during the cycle {m['hwm_during_cycle_mb']:.0f} MB, after it "
        f"{m['rss_after_cycle_mb']:.0f} MB")
    say(f"  traced Python memory: after imports {m['traced_after_imports_mb']:.1f} MB, after open "
        f"{m['traced_after_open_mb']:.1f} MB, peak during the cycle {m['traced_peak_during_cycle_mb']:.1f} MB")
    say("  imports, by file:")
    for f, mb in m["imports_by_file"]:
        say(f"    {mb:7.2f} MB  {f}")
    say("  held after App.open (beyond imports), by line:")
    for where, mb, n in m["open_lines"]:
        say(f"    {mb:7.2f} MB  {n:>8} blocks  {where}")
    say("  grown over the steady cycle, by line:")
    for where, mb, n in m["cycle_lines"]:
        say(f"    {mb:7.2f} MB  {n:>8} blocks  {where}")
    print(json.dumps({"profile": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
