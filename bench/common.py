"""What every benchmark part shares: figures, child processes with their rusage, the simulator process, configs.

Figures go to stdout, one JSON object a line (``emit``); everything for people goes to
stderr (``say``). Children are run with ``os.wait4`` so each one's CPU time and peak RSS
are its own; the simulator always runs in a process of its own (``SimProcess``), so its
CPU never lands on the client's account, and ``/proc/PID/stat`` tells what it used.
"""

from __future__ import annotations

import json
import math
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
HOST = "127.0.0.1"
PROJECT = "b384b9e9ab9b4ee8994c8633aabc9505"  # the simulator's default project (the API doc's example)
CONCURRENCY = 16  # notifier's default [source] concurrency: the floor uses the same
TIMEOUT = 10.0  # notifier's default [source] timeout
CLK_TCK = os.sysconf("SC_CLK_TCK")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


# --- figures --------------------------------------------------------------------------

FIGURES: list[dict[str, Any]] = []  # every line emitted by this process, for the final summary

def emit(figure: str, value: Any, *, target: str | None = None, ok: bool | None = None, **extra: Any) -> dict[str, Any]:
    """One JSON line on stdout: {"figure", ...extra (jobs, k, unit...), "value", "target", "ok"}."""
    line: dict[str, Any] = {"figure": figure}
    line.update((k, v) for k, v in extra.items() if v is not None)
    line["value"] = _round(value)
    if target is not None:
        line["target"] = target
        if ok is not None:
            line["ok"] = ok
    print(json.dumps(line), flush=True)
    FIGURES.append(line)
    return line


def _round(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        return round(value, 4) if abs(value) < 100 else round(value, 1)
    return value


def say(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# --- processes ------------------------------------------------------------------------

def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a running process has used, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass(frozen=True, slots=True)
class Child:
    """A finished child process: exit code, output, CPU seconds, peak RSS (MB) and wall seconds."""

    code: int
    stdout: str
    stderr: str
    cpu: float
    rss_mb: float
    wall: float

    def json(self) -> dict[str, Any]:
        """The last stdout line as JSON (workers print their figures there)."""
        lines = [line for line in self.stdout.splitlines() if line.startswith("{")]
        if self.code != 0 or not lines:
            raise RuntimeError(f"child failed (exit {self.code}):\n{self.stderr[-3000:]}")
        data: dict[str, Any] = json.loads(lines[-1])
        return data


def run_child(argv: Sequence[str], *, timeout: float = 600.0, env: Mapping[str, str] | None = None) -> Child:
    """Run ``argv`` to the end; CPU user+sys from its rusage (os.wait4), peak RSS from its own VmHWM.

    ``[PY, "-m", MODULE, ...]`` runs under ``bench.wrap``, which writes the process's VmHWM at
    exit: ``ru_maxrss`` would also count the harness's pages from before the exec. Other
    commands fall back to ``ru_maxrss``.
    """
    argv = list(argv)
    fd, hwm_file = tempfile.mkstemp(prefix="bench-hwm-")
    os.close(fd)
    env = dict(env or ENV)
    if argv[:2] == [PY, "-m"]:
        argv = [PY, "-m", "bench.wrap", *argv[2:]]
        env["BENCH_HWM_FILE"] = hwm_file
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=ROOT)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        hwm = Path(hwm_file).read_text().strip()
        Path(hwm_file).unlink()
        rss_mb = int(hwm) / 1024 if hwm else usage.ru_maxrss / 1024
        return Child(proc.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                     usage.ru_utime + usage.ru_stime, rss_mb, wall)


def interpreter_baseline(runs: int = 5) -> tuple[Child, Child]:
    """(interpreter start-up, the same plus ``import notifier.cli, notifier.app, notifier.daemon``), medians by CPU.

    Both run as ``python -m bench.wrap bench.nothing [MODULE...]``: the same wrapper as the
    measured ``notifier once``, so subtracting the first removes the interpreter's start-up
    and the wrapper's (a few ms), nothing of notifier's.
    """
    bare = [run_child([PY, "-m", "bench.nothing"]) for _ in range(runs)]
    imports = [run_child([PY, "-m", "bench.nothing", "notifier.cli", "notifier.app", "notifier.daemon"])
               for _ in range(runs)]
    return (sorted(bare, key=lambda c: c.cpu)[runs // 2], sorted(imports, key=lambda c: c.cpu)[runs // 2])


# --- the simulator in its own process -------------------------------------------------

@dataclass(slots=True)
class SimProcess:
    """``python -m bench.simproc`` with its arguments; a context manager; ``stats()`` after ``stop()``."""

    args: Sequence[str]
    proc: subprocess.Popen[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    stats_path: Path | None = None
    _stats: dict[str, Any] | None = None

    def start(self, timeout: float = 60.0) -> SimProcess:
        fd, name = tempfile.mkstemp(prefix="bench-sim-", suffix=".json")
        os.close(fd)
        self.stats_path = Path(name)
        self.proc = subprocess.Popen([PY, "-m", "bench.simproc", *self.args, "--stats", name], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=None, text=True, env=ENV, cwd=ROOT, bufsize=1)
        line = self._readline(timeout)
        self.info = json.loads(line)
        return self

    def _readline(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.proc.kill()
            raise RuntimeError("simulator did not answer in time")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"simulator exited (code {self.proc.poll()})")
        return line

    def command(self, *words: object, timeout: float = 30.0) -> dict[str, Any]:
        """A command on the simulator's stdin (see bench.simproc); its JSON answer."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(" ".join(str(w) for w in words) + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self._readline(timeout))
        return answer

    @property
    def url(self) -> str:
        return str(self.info["url"])

    @property
    def pid(self) -> int:
        return int(self.info["pid"])

    @property
    def mono_t0(self) -> float:
        """time.monotonic() (CLOCK_MONOTONIC, the same in every process) of scenario time 0."""
        return float(self.info["mono_t0"])

    def cpu(self) -> float:
        return proc_cpu(self.pid)

    def stop(self) -> dict[str, Any]:
        """SIGTERM; the simulator writes its stats (request log, ground truth, counts) and exits."""
        if self.proc is None:
            return self._stats or {}
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        if self.stats_path is not None and self.stats_path.exists():
            text = self.stats_path.read_text()
            self.stats_path.unlink()
            self._stats = json.loads(text) if text else {}
        return self._stats or {}

    def __enter__(self) -> SimProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- configs --------------------------------------------------------------------------

NODE_RULE = '[[rule]]\nname = "node-exception"\nscope = "node"\nstatus = ["EXCEPTION"]\nrepeat = "0s"\n\n'
JOB_RULE = '[[rule]]\nname = "job-exception"\nscope = "job"\nstatus = ["EXCEPTION"]\nrepeat = "0s"\n\n'


def write_config(d: Path, url: str, *, interval: float = 60.0, rate: float = 1_000_000.0,
                 rules: str | None = None, channel: str = 'type = "console"', extra: str = "",
                 state: str = "state.db") -> Path:
    """A notifier.toml in ``d`` watching every listed job (``[jobs] discover = true``)."""
    (d / "rules").mkdir(exist_ok=True)
    text = rules if rules is not None else (ROOT / "rules" / "default.toml").read_text()
    (d / "rules" / "rules.toml").write_text(text)
    config = d / "notifier.toml"
    config.write_text(
        f'[source]\nendpoint = "{url}"\nproject_id = "{PROJECT}"\nauth = "none"\n'
        f"concurrency = {CONCURRENCY}\ntimeout = \"{TIMEOUT:g}s\"\nmax_requests_per_second = {rate:g}\n\n"
        f'[jobs]\ndiscover = true\n\n[schedule]\ninterval = "{interval:g}s"\n\n[state]\npath = "{state}"\n\n'
        f'[paths]\nrules = "rules"\n\n[channels.out]\n{channel}\n\n{extra}')
    return config


def copy_state(src: Path, dst: Path) -> None:
    """Copy a closed state file (and a WAL if one was left)."""
    for suffix in ("", "-wal"):
        if Path(f"{src}{suffix}").exists():
            shutil.copyfile(f"{src}{suffix}", f"{dst}{suffix}")


@contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{prefix}-") as tmp:
        yield Path(tmp)


def job_names(jobs: int) -> list[str]:
    """The simulator's synthetic/scale job names (job_0000 ... job_9999)."""
    width = len(str(jobs - 1))
    return [f"job_{j:0{width}d}" for j in range(jobs)]


@contextmanager
def notifier_run(config: Path, log: Path, *, level: str = "warning") -> Iterator[subprocess.Popen[bytes]]:
    """``notifier run`` in its own process (JSON log lines to ``log``); SIGTERM and wait on exit."""
    with log.open("wb") as err:
        proc = subprocess.Popen([PY, "-m", "notifier", "run", "-c", str(config), "--log-level", level,
                                 "--log-format", "json"], stdout=subprocess.DEVNULL, stderr=err, env=ENV, cwd=ROOT)
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
