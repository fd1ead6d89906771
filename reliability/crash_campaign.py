"""Crash campaign: SIGKILL the real ``notifier run`` at chosen moments, restart it, and prove nothing is lost.

Method
------
The campaign runs the bundled DGC simulator (``notifier.simulator.Simulator``) and a webhook
receiver (``reliability.receiver``) in this process, and ``notifier run -c CONFIG`` as a child
process polling every ``--interval`` (default 1s) with two rules: ``node-exception`` and
``job-exception`` (fire on EXCEPTION, resolve when it ends; flap damping off, so every change
is told). Three jobs of three nodes each are driven by the campaign itself:

* **What the scenario implies.** A driver thread flips one entity (a job or a node) at a time
  between NORMAL, EXCEPTION and (nodes) STOPPED, but an entity is flipped again only once the
  state file shows its current status *committed* (the ``entity`` table, read through a
  read-only connection) and a random hold of 0.5-3 intervals has passed. So every status the
  simulator served was seen by a cycle that committed, however the kills fell, and the
  expected notifications follow from the driven sequence alone: entering EXCEPTION is one
  ``firing``, leaving it one ``resolved``; NORMAL <-> STOPPED implies nothing.
* **Kills.** Kill #1 lands while the first process creates and migrates the state file (0-20 ms
  after the file appears). Then seven strategies take turns in a seeded order, each with seeded
  delays: ``startup`` (0-1.2 s after spawn), ``in-flight`` (the receiver holds a request and the
  kill comes before the answer: sent, not yet ``mark_delivered``), ``after-response`` (0-5 ms
  after the answer: races the ``mark_delivered`` commit), ``in-commit`` (the moment
  ``/proc/PID/task/*/syscall`` shows a thread writing or syncing the state file), ``after-commit``
  (after a flip, the next write to the WAL, then 0-4 ms: the cycle's commit, or between the
  outbox write and the delivery), ``poll-offset`` (a random offset within the cycle after a poll
  request) and ``random`` (0-4 intervals after the first poll). The process is stopped with
  SIGSTOP, its system calls sampled, then SIGKILLed (SIGKILL acts where SIGSTOP stopped it).
  Every kill prints its time, strategy, delays and what the state file shows afterwards;
  ``--seed N`` replays the same decisions (the timings of a real process vary a little).
* **After every kill**: ``PRAGMA integrity_check`` on a read-only connection must say ``ok`` (a
  hot rollback journal, which a read-only connection cannot roll back, is checked on a copy);
  the campaign also records which window the kill hit, from evidence: a notification this run
  sent that is still pending (send -> mark_delivered), one it queued and never sent (outbox
  write -> delivery), a write or sync of the state file in progress, a partly written
  transaction at the end of the WAL.
* **At the end** the last run settles (every driven status committed, the outbox drained), gets
  SIGTERM and must exit 0. The receiver's requests (a request cut short by a kill is not a
  delivery) are deduplicated by ``Idempotency-Key`` (``<state file id>-<outbox id>``) and
  compared with the expectation: lost = 0, spurious = 0, no alert episode told twice after
  dedup, at most one duplicate per kill and none within one process run, one body per key,
  first deliveries in outbox-id order, no ERROR line or traceback in any run's log. Then
  ``notifier once`` on a second, fresh state file sends to the same receiver: none of its keys
  may repeat one of the first file's.

Figures are printed as JSON lines; exit 0 only when every target holds. ``make reliability``
runs it with the defaults; ``tests/test_reliability.py`` runs a short seeded version.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from notifier.simulator import JobScript, NodeScript, Scenario, Simulator
from notifier.statefile import SCHEMA_VERSION
from reliability.common import Figure, instance_id, integrity, outbox_ids, query, schema_version
from reliability.receiver import Receiver

PROJECT_ID = "b384b9e9ab9b4ee8994c8633aabc9505"
JOBS = ("crash_job_a", "crash_job_b", "crash_job_c")
NODES = (("INGEST", "ExecuteDISStream"), ("TRANSFORM", "DLI SQL"), ("PUBLISH", "ExecuteCloudStream"))
NODE_RULE, JOB_RULE = "node-exception", "job-exception"
NODE_STATUSES = ("NORMAL", "EXCEPTION", "STOPPED")
JOB_STATUSES = ("NORMAL", "EXCEPTION")
STRATEGIES = ("startup", "in-flight", "after-response", "in-commit", "after-commit", "poll-offset", "random")
SECOND_FILE = 0
"""The receiver's generation for requests from the second state file (the runs of the first are 1, 2, ...)."""
COVERAGE_MIN_KILLS = 20
"""From this many kills on, the campaign also requires each targeted window to have been hit."""

RULES = f"""
[[rule]]
name = "{NODE_RULE}"
scope = "node"
status = ["EXCEPTION"]
severity = "critical"

[[rule]]
name = "{JOB_RULE}"
scope = "job"
status = ["EXCEPTION"]
severity = "critical"
"""

_SYSCALLS = {  # the system calls SQLite makes on its files, by number
    "x86_64": {1: "write", 17: "pread64", 18: "pwrite64", 72: "fcntl", 74: "fsync", 75: "fdatasync",
               77: "ftruncate"},
    "aarch64": {64: "write", 67: "pread64", 68: "pwrite64", 25: "fcntl", 82: "fsync", 83: "fdatasync",
                46: "ftruncate"},
}.get(platform.machine(), {})
WRITE_SYSCALLS = frozenset({"write", "pwrite64", "fsync", "fdatasync", "ftruncate"})


Entity = tuple[str, str]
"""(job, node); node is "" for the job itself, as in the state file's ``entity`` table."""


# --- settings and records ---------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Settings:
    kills: int = 100
    seed: int | None = None
    interval: float = 1.0
    workdir: Path | None = None  # None: a temporary directory, removed when every target holds
    keep: bool = False
    out: TextIO = sys.stdout
    quiet: bool = False  # no per-kill lines (the figures are always printed)


@dataclass(frozen=True, slots=True)
class Kill:
    """One SIGKILL and what the state file showed after it."""

    n: int
    generation: int
    strategy: str
    t: float  # seconds since the campaign started
    delay_ms: float | None  # the seeded delay the strategy waited after its trigger
    fallback: bool  # the trigger did not come within its deadline; killed anyway
    syscall: str | None  # a state-file system call in progress when SIGSTOP had stopped the process
    trigger_syscall: str | None  # in-commit: the write or sync seen just before the SIGSTOP
    integrity: str  # "ok" or what integrity_check said
    integrity_on_copy: bool  # a hot rollback journal: checked on a copy (see integrity())
    torn_wal: bool  # the WAL ends in a transaction without its commit frame
    sent_unmarked: int  # rows the receiver got from this run that are still pending
    queued_unsent: int  # rows this run queued that are pending and were never received
    schema_version: int | None

    @property
    def inside_commit(self) -> bool:
        return in_commit(self.syscall) or in_commit(self.trigger_syscall)

    def line(self) -> dict[str, Any]:
        return {"kill": self.n, "t": round(self.t, 3), "generation": self.generation, "strategy": self.strategy,
                "delay_ms": None if self.delay_ms is None else round(self.delay_ms, 2),
                "fallback": self.fallback, "syscall": self.syscall, "trigger_syscall": self.trigger_syscall,
                "integrity": self.integrity, "integrity_on_copy": self.integrity_on_copy,
                "torn_wal": self.torn_wal, "sent_unmarked": self.sent_unmarked,
                "queued_unsent": self.queued_unsent, "schema_version": self.schema_version}


@dataclass(slots=True)
class Result:
    seed: int
    figures: list[Figure] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    workdir: Path | None = None

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.figures)

    def value(self, name: str) -> Any:
        return next(f.value for f in self.figures if f.name == name)

    def failures(self) -> list[Figure]:
        return [f for f in self.figures if not f.ok]


class ProcessDied(Exception):
    """``notifier run`` exited on its own while the campaign waited for a trigger."""


# --- the state file, read from outside ----------------------------------------------------

def committed_statuses(db: Path) -> dict[Entity, str] | None:
    rows = query(db, "SELECT job, node, status FROM entity")
    return None if rows is None else {(job, node): status for job, node, status in rows}


def wal_torn(wal: Path) -> bool:
    """Whether the WAL's valid frames end in a frame that is not a commit frame (a transaction cut short).

    WAL format (sqlite.org/fileformat.html): a 32-byte header with page size and two salts,
    then frames of a 24-byte header (page number, database size after commit or 0, salts)
    and a page. Frames whose salts differ from the header's are left over from before a reset.
    """
    try:
        data = wal.read_bytes()
    except OSError:
        return False
    if len(data) < 32:
        return False
    page_size = struct.unpack(">I", data[8:12])[0]
    salts = data[16:24]
    last_commit: bool | None = None
    offset = 32
    while offset + 24 + page_size <= len(data):
        if data[offset + 8:offset + 16] != salts:
            break
        last_commit = struct.unpack(">I", data[offset + 4:offset + 8])[0] != 0
        offset += 24 + page_size
    return last_commit is False


def state_syscall(pid: int, db: Path, *, writes_only: bool = False) -> str | None:
    """``"fdatasync state.db-wal"`` when a thread of ``pid`` is in a system call on the state file, else None.

    Read from ``/proc/PID/task/TID/syscall`` (number and arguments of the call a thread is in;
    the first argument of these calls is the file descriptor). A write or sync wins over a
    read or lock; ``writes_only`` ignores reads and locks.
    """
    found = None
    with suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with suppress(OSError, ValueError, IndexError):
                fields = Path(f"/proc/{pid}/task/{task}/syscall").read_text().split()
                name = _SYSCALLS.get(int(fields[0]))
                if name is None or (writes_only and name not in WRITE_SYSCALLS):
                    continue
                target = os.readlink(f"/proc/{pid}/fd/{int(fields[1], 16)}")
                if target in (str(db), f"{db}-wal", f"{db}-shm", f"{db}-journal"):
                    found = f"{name} {Path(target).name}"
                    if name in WRITE_SYSCALLS:
                        return found
    return found


def in_commit(syscall: str | None) -> bool:
    """A sample of ``state_syscall`` shows a write or sync: the process was inside a commit."""
    return syscall is not None and syscall.split()[0] in WRITE_SYSCALLS


# --- the scenario and the driver ---------------------------------------------------------

def scenario() -> Scenario:
    nodes = tuple(NodeScript(name=name, type=kind) for name, kind in NODES)
    return Scenario(project_id=PROJECT_ID, jobs=tuple(JobScript(name=job, nodes=nodes) for job in JOBS),
                    name="crash-campaign", description="three jobs of three nodes, driven by the crash campaign")


def entities() -> tuple[Entity, ...]:
    return tuple((job, node) for job in JOBS for node in ("", *(name for name, _ in NODES)))


class Driver(threading.Thread):
    """Flips entities, each only once its current status is committed in the state file."""

    def __init__(self, sim: Simulator, db: Path, rng: random.Random, interval: float) -> None:
        super().__init__(name="crash-driver", daemon=True)
        self._sim, self._db, self._rng, self._interval = sim, db, rng, interval
        self._lock = threading.Lock()
        self._sequences: dict[Entity, list[str]] = {e: ["NORMAL"] for e in entities()}
        self._ready_at: dict[Entity, float | None] = dict.fromkeys(self._sequences)
        self.flips = 0
        self.flipped = threading.Event()  # set at every flip; the commit strategy clears and waits for it
        self._frozen = threading.Event()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self._interval / 5):
            committed = committed_statuses(self._db)
            if committed is None:
                continue
            now = time.monotonic()
            for entity, sequence in self._sequences.items():
                if committed.get(entity) != sequence[-1]:
                    self._ready_at[entity] = None
                    continue
                ready = self._ready_at[entity]
                if ready is None:
                    self._ready_at[entity] = now + self._rng.uniform(0.5, 3.0) * self._interval
                elif now >= ready and not self._frozen.is_set():
                    self._flip(entity)

    def _flip(self, entity: Entity) -> None:
        job, node = entity
        with self._lock:
            sequence = self._sequences[entity]
            status = self._rng.choice([s for s in (NODE_STATUSES if node else JOB_STATUSES) if s != sequence[-1]])
            sequence.append(status)  # recorded before the simulator serves it
            if node:
                self._sim.set_node_status(job, node, status)
            else:
                self._sim.set_job_status(job, status)
            self._ready_at[entity] = None
            self.flips += 1
        self.flipped.set()

    def freeze(self) -> None:
        """No more flips: the scenario's last statuses hold."""
        self._frozen.set()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def settled(self) -> bool:
        """Every entity's last driven status is committed."""
        committed = committed_statuses(self._db) or {}
        with self._lock:
            return all(committed.get(e) == seq[-1] for e, seq in self._sequences.items())

    def sequences(self) -> dict[Entity, list[str]]:
        with self._lock:
            return {e: list(seq) for e, seq in self._sequences.items()}


def expected_notifications(sequences: dict[Entity, list[str]]) -> dict[tuple[str, str, str], list[str]]:
    """(rule, job, node) -> the statuses of the notifications the driven sequence implies, in order."""
    out: dict[tuple[str, str, str], list[str]] = {}
    for (job, node), sequence in sequences.items():
        told = []
        for before, after in itertools.pairwise(sequence):
            if after == "EXCEPTION":
                told.append("firing")
            elif before == "EXCEPTION":
                told.append("resolved")
        out[(NODE_RULE if node else JOB_RULE, job, node)] = told
    return out


# --- the campaign --------------------------------------------------------------------------

class Campaign:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.seed = settings.seed if settings.seed is not None else random.SystemRandom().randrange(1, 2**31)
        self.rng = random.Random(self.seed)
        self.workdir = settings.workdir or Path(tempfile.mkdtemp(prefix="notifier-crash-"))
        self.db = self.workdir / "state.db"
        self.second_db = self.workdir / "state-second.db"
        self.config = self.workdir / "notifier.toml"
        self.logs = self.workdir / "logs"
        self.t0 = time.monotonic()
        self.time: defaultdict[str, float] = defaultdict(float)  # where the wall time goes, in seconds
        self.kills: list[Kill] = []
        self.unexpected_exits: list[str] = []
        self.generation = 0
        self._spawned_at = 0.0
        self._spawns: list[float] = []  # monotonic spawn time per generation (index = generation - 1)
        self._proc: subprocess.Popen[bytes] | None = None
        self._kill_lock = threading.Lock()
        self._killed = threading.Event()
        self._kill_syscall: str | None = None
        self._trigger_syscall: str | None = None
        self._kill_at = 0.0
        self._sim_t0 = 0.0  # monotonic time of the simulator's scenario time 0

    # --- output -----------------------------------------------------------------------

    def emit(self, doc: dict[str, Any], *, always: bool = False) -> None:
        if always or not self.s.quiet:
            print(json.dumps(doc, sort_keys=False), file=self.s.out, flush=True)

    # --- the child process ------------------------------------------------------------

    def _write_config(self, sim: Simulator, receiver: Receiver) -> None:
        (self.workdir / "rules").mkdir(parents=True, exist_ok=True)
        (self.workdir / "rules" / "crash.toml").write_text(RULES)
        self.logs.mkdir(exist_ok=True)
        names = ", ".join(f'"{job}"' for job in JOBS)
        self.config.write_text(
            f'[source]\nendpoint = "{sim.url}"\nproject_id = "{PROJECT_ID}"\nauth = "none"\ntimeout = "2s"\n'
            f'retries = 0\n\n[schedule]\ninterval = "{self.s.interval:g}s"\n\n[jobs]\nnames = [{names}]\n\n'
            f'[state]\npath = "state.db"\n\n[paths]\nrules = "rules"\nwatch = false\n\n'
            f'[noise]\nflap_threshold = 0\n\n[channels.hook]\ntype = "webhook"\nurl = "{receiver.url}"\n'
            f'timeout = "5s"\n')

    def _spawn(self, receiver: Receiver) -> subprocess.Popen[bytes]:
        self.generation += 1
        receiver.generation = self.generation
        self._killed.clear()
        self._spawned_at = time.monotonic()
        self._spawns.append(self._spawned_at)
        with open(self.logs / f"run-{self.generation:03d}.log", "wb") as log:  # the child keeps its own descriptor
            self._proc = subprocess.Popen([sys.executable, "-m", "notifier", "run", "-c", str(self.config)],
                                          stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        return self._proc

    def _kill(self, trigger: str | None = None, *, generation: int | None = None) -> None:
        """SIGKILL the current process once (safe from any thread).

        ``trigger``: the system call that aimed the kill; ``generation``: kill only that run (a
        receiver hook armed for one run must never kill the next one).
        """
        with self._kill_lock:
            proc = self._proc
            if proc is None or self._killed.is_set() or generation not in (None, self.generation):
                return
            self._kill_at = time.monotonic()
            self._kill_syscall = None
            with suppress(ProcessLookupError):
                # Stopped first, so the system call sample shows where the kill lands; SIGKILL then acts
                # where SIGSTOP stopped it (both take effect at the same point: the return to user space)
                os.kill(proc.pid, signal.SIGSTOP)
                self._kill_syscall = state_syscall(proc.pid, self.db)
                os.kill(proc.pid, signal.SIGKILL)
            self._trigger_syscall = trigger
            self._killed.set()

    def _alive(self) -> None:
        proc = self._proc
        if proc is not None and not self._killed.is_set() and proc.poll() is not None:
            raise ProcessDied(f"generation {self.generation} exited with {proc.returncode}")

    def _wait(self, predicate: Callable[[], bool], timeout: float, step: float = 0.005) -> bool:
        """Poll ``predicate`` until it holds (True) or ``timeout`` passes (False); ProcessDied if the child exits."""
        deadline = time.monotonic() + timeout
        while not predicate():
            self._alive()
            if time.monotonic() > deadline:
                return False
            if step:
                time.sleep(step)
        return True

    def _sleep(self, seconds: float) -> None:
        self._wait(lambda: False, seconds, step=min(0.005, max(seconds, 0.0)))

    # --- strategies: each waits for its moment and kills; returns (delay waited after the trigger, fallback) --

    def _trigger(self, strategy: str, u: float, sim: Simulator, receiver: Receiver,
                 driver: Driver) -> tuple[float | None, bool]:
        deadline = max(10.0, 15 * self.s.interval)
        iv = self.s.interval
        if strategy == "first-start":  # while the state file is created and migrated
            hit = self._wait(self.db.exists, deadline, step=0.0005)
            delay = u * 0.02
        elif strategy == "startup":
            hit, delay = True, u * 1.2
        elif strategy in ("in-flight", "after-response"):
            generation = self.generation
            wait = 0.0 if strategy == "in-flight" else u * 0.005

            def kill_now() -> None:
                if wait:
                    time.sleep(wait)
                self._kill(generation=generation)
            if strategy == "in-flight":
                receiver.arm(before=kill_now)
            else:
                receiver.arm(after=kill_now)
            hit = self._wait(self._killed.is_set, deadline)
            receiver.disarm()
            self._kill(generation=generation)  # the fallback, when no request came
            return (None if strategy == "in-flight" else wait), not hit
        elif strategy == "in-commit":  # a thread writing or syncing the state file
            pid = self._proc.pid if self._proc is not None else 0
            seen: list[str] = []

            def writing() -> bool:
                call = state_syscall(pid, self.db, writes_only=True)
                if call is not None:
                    seen.append(call)
                return call is not None
            hit = self._wait(writing, deadline, step=0.0002)
            self._kill(seen[-1] if seen else None)
            return 0.0, not hit
        elif strategy == "after-commit":  # the next commit after a flip (it queues notifications), then 0-4 ms
            wal = Path(f"{self.db}-wal")
            driver.flipped.clear()
            hit = self._wait(driver.flipped.is_set, deadline)
            before = _stat(wal)
            hit = hit and self._wait(lambda: _stat(wal) != before, deadline, step=0.0001)
            delay = u * 0.004
        elif strategy == "poll-offset":
            n = len(sim.requests)
            hit = self._wait(lambda: len(sim.requests) > n, deadline)
            delay = u * iv
        elif strategy == "random":
            hit = self._wait(lambda: self._polled_since(sim, self._spawned_at), deadline)
            delay = u * 4 * iv
        else:
            raise ValueError(f"unknown strategy {strategy!r}")
        if hit and delay:
            if delay < 0.01:
                time.sleep(delay)
            else:
                self._sleep(delay)
        self._kill()
        return delay, not hit

    def _polled_since(self, sim: Simulator, since: float) -> bool:
        requests = sim.requests.snapshot()
        return bool(requests) and requests[-1].t + self._sim_t0 >= since

    def _plan(self) -> list[tuple[str, float, float]]:
        """(strategy, delay draw, downtime draw) per kill: all the seeded decisions, drawn up front."""
        order: list[str] = []
        while len(order) < self.s.kills - 1:
            turn = list(STRATEGIES)
            self.rng.shuffle(turn)
            order.extend(turn)
        return [(strategy, self.rng.random(), self.rng.random())
                for strategy in ["first-start", *order[: self.s.kills - 1]]]

    # --- one kill -------------------------------------------------------------------------

    def _kill_once(self, n: int, strategy: str, u: float, sim: Simulator, receiver: Receiver,
                   driver: Driver) -> Kill | None:
        known = max(outbox_ids(self.db, "pending") | outbox_ids(self.db, "delivered"), default=0)
        proc = self._spawn(receiver)
        try:
            delay, fallback = self._trigger(strategy, u, sim, receiver, driver)
        except ProcessDied as exc:
            receiver.disarm()
            self.unexpected_exits.append(f"{exc}; log: {self.logs / f'run-{self.generation:03d}.log'}")
            self.emit({"unexpected_exit": str(exc), "generation": self.generation})
            return None
        proc.wait(timeout=30)
        self.time["processes up: running until the SIGKILL"] += self._kill_at - self._spawned_at
        started = time.monotonic()
        check, on_copy = integrity(self.db)
        self.time["integrity checks"] += time.monotonic() - started
        received = self._received_ids(receiver)
        sent_now = self._received_ids(receiver, self.generation)
        pending = outbox_ids(self.db, "pending")
        queued_now = {i for i in pending if i > known}
        kill = Kill(n=n, generation=self.generation, strategy=strategy, t=self._kill_at - self.t0,
                    delay_ms=None if delay is None else delay * 1000, fallback=fallback, syscall=self._kill_syscall,
                    trigger_syscall=self._trigger_syscall, integrity=check, integrity_on_copy=on_copy,
                    torn_wal=wal_torn(Path(f"{self.db}-wal")),
                    sent_unmarked=len(pending & sent_now), queued_unsent=len(queued_now - received),
                    schema_version=schema_version(self.db))
        self.time["post-kill inspection"] += time.monotonic() - started
        return kill

    def _received_ids(self, receiver: Receiver, generation: int | None = None) -> set[int]:
        """Outbox ids the receiver got (from one process run, or from any)."""
        out = set()
        for request in receiver.requests:
            _, _, tail = request.key.rpartition("-")
            if tail.isdigit() and generation in (None, request.generation):
                out.add(int(tail))
        return out

    # --- the whole run ----------------------------------------------------------------------

    def run(self) -> Result:
        result = Result(seed=self.seed, workdir=self.workdir)
        self.emit({"campaign": "crash", "seed": self.seed, "kills": self.s.kills, "interval": self.s.interval,
                   "workdir": str(self.workdir),
                   "replay": f"python reliability/crash_campaign.py --seed {self.seed} --kills {self.s.kills} "
                             f"--interval {self.s.interval:g}"}, always=True)
        started = time.monotonic()
        with Simulator(scenario(), record_requests=1_000_000) as sim, Receiver() as receiver:
            self._sim_t0 = time.monotonic() - sim.now()
            self._write_config(sim, receiver)
            driver = Driver(sim, self.db, random.Random(self.seed * 7919 + 1), self.s.interval)
            driver.start()
            self.time["setup"] += time.monotonic() - started
            try:
                for n, (strategy, u, down) in enumerate(self._plan(), start=1):
                    kill = self._kill_once(n, strategy, u, sim, receiver, driver)
                    if kill is not None:
                        self.kills.append(kill)
                        self.emit(kill.line())
                    pause = time.monotonic()
                    time.sleep(down * self.s.interval / 2)  # down for a while: statuses may change meanwhile
                    self.time["deliberate downtime"] += time.monotonic() - pause
                final_exit, settled = self._settle(sim, receiver, driver)
                second_exit = self._second_state_file(sim, receiver)
            finally:
                driver.stop()
                if self._proc is not None and self._proc.poll() is None:
                    self._proc.kill()
                    self._proc.wait(timeout=10)
            self._save_evidence(receiver, driver)
            startup = self.startup_seconds([r.t + self._sim_t0 for r in sim.requests])
            self.time["processes up: start-up (spawn to first poll)"] += startup
            self.time["processes up: running until the SIGKILL"] -= startup
            started = time.monotonic()
            result.kills = self.kills
            result.figures = self._figures(receiver, driver, final_exit, settled, second_exit, sim)
            self.time["analysis"] += time.monotonic() - started
        return result

    def _save_evidence(self, receiver: Receiver, driver: Driver) -> None:
        """What happened, for a failure's post-mortem: received.jsonl, driven.json, kills.jsonl in the work dir."""
        with open(self.workdir / "received.jsonl", "w") as out:
            for r in receiver.requests:
                out.write(json.dumps({"key": r.key, "generation": r.generation, "t": round(r.arrived - self.t0, 4),
                                      "body": r.body.decode(errors="replace")}) + "\n")
        sequences = {f"{job}/{node}" if node else job: seq for (job, node), seq in driver.sequences().items()}
        (self.workdir / "driven.json").write_text(json.dumps(sequences, indent=1))
        with open(self.workdir / "kills.jsonl", "w") as out:
            for kill in self.kills:
                out.write(json.dumps(kill.line()) + "\n")

    def _settle(self, sim: Simulator, receiver: Receiver, driver: Driver) -> tuple[int | None, str]:
        """The last run: no more flips, every status committed, the outbox drained, then SIGTERM."""
        started = time.monotonic()
        proc = self._spawn(receiver)
        driver.freeze()
        budget = max(60.0, 30 * self.s.interval)
        state = "settled"
        log = self.logs / f"run-{self.generation:03d}.log"
        try:
            # running (signal handlers installed: a SIGTERM before that is the default action, death) and one
            # cycle done since this run started, so the drain below is this run's work too
            if not self._wait(lambda: self._cycles_logged(log) >= 1, budget, step=0.05):
                state = "the last run never completed a cycle"
            elif not self._wait(driver.settled, budget, step=0.05):
                state = "statuses not all committed"
            elif not self._wait(lambda: self._drained(receiver), budget, step=0.05):
                state = "outbox not drained"
        except ProcessDied as exc:
            self.unexpected_exits.append(str(exc))
            return proc.returncode, f"process exited: {exc}"
        self.time["final run: settle and drain"] += time.monotonic() - started
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            code = None
        self.time["final run: SIGTERM to exit"] += time.monotonic() - started
        return code, state

    @staticmethod
    def _cycles_logged(log: Path) -> int:
        """Cycles a run has finished, from its log ("cycle done" lines; the service is up by then)."""
        try:
            return log.read_text(errors="replace").count("cycle done")
        except OSError:
            return 0

    def _second_state_file(self, sim: Simulator, receiver: Receiver) -> int:
        """``notifier once`` on a fresh state file, to the same receiver: its keys must not repeat the first file's."""
        started = time.monotonic()
        receiver.generation = SECOND_FILE
        for job in JOBS:  # something firing, so the new file has news to tell
            sim.set_node_status(job, NODES[0][0], "EXCEPTION")
        config = self.workdir / "notifier-second.toml"
        config.write_text(self.config.read_text().replace('path = "state.db"', f'path = "{self.second_db.name}"'))
        with open(self.logs / "run-second-state-file.log", "wb") as log:
            code = subprocess.run([sys.executable, "-m", "notifier", "once", "-c", str(config)], stdout=log,
                                  stderr=subprocess.STDOUT, cwd=self.workdir, timeout=60).returncode
        self.time["second state file (notifier once)"] += time.monotonic() - started
        return code

    def _drained(self, receiver: Receiver) -> bool:
        delivered = outbox_ids(self.db, "delivered")
        return not outbox_ids(self.db, "pending") and delivered <= self._received_ids(receiver)

    # --- the verdict --------------------------------------------------------------------------

    def _figures(self, receiver: Receiver, driver: Driver, final_exit: int | None, settled: str, second_exit: int,
                 sim: Simulator) -> list[Figure]:
        requests = [r for r in receiver.requests if r.generation != SECOND_FILE]
        second = [r for r in receiver.requests if r.generation == SECOND_FILE]
        second_instance = instance_id(self.second_db)
        collisions = len({r.key for r in second} & {r.key for r in requests})
        second_malformed = sum(1 for r in second if not r.key.startswith(f"{second_instance}-")
                               or second_instance == instance_id(self.db))
        expected = expected_notifications(driver.sequences())
        instance = instance_id(self.db)
        key_format = re.compile(rf"^{re.escape(instance or '?')}-(\d+)$")

        copies: dict[str, list[int]] = defaultdict(list)  # key -> generations it arrived in
        bodies: dict[str, set[bytes]] = defaultdict(set)
        first: list[tuple[int, Any]] = []  # (outbox id, doc) of each key's first arrival, in arrival order
        malformed = 0
        for r in requests:
            match = key_format.match(r.key)
            if match is None or r.notifier_id != r.key:
                malformed += 1
            if r.key not in copies:
                first.append((int(match.group(1)) if match else -1, r.doc))
            copies[r.key].append(r.generation)
            bodies[r.key].add(r.body)
        duplicates = len(requests) - len(copies)
        unparseable = sum(1 for r in requests if not isinstance(r.doc, dict))
        same_run = sum(len(g) - len(set(g)) for g in copies.values())
        per_kill: Counter[int] = Counter()  # killed generation -> duplicates it caused
        for generations in copies.values():
            for earlier in generations[:-1]:
                per_kill[earlier] += 1
        ids = [i for i, _ in first]
        out_of_order = sum(1 for a, b in itertools.pairwise(ids) if b <= a)

        received: dict[tuple[str, str, str], list[str]] = defaultdict(list)
        episodes_seen: set[tuple[str, str, str]] = set()
        repeated = 0  # an alert episode told again under another key
        for _, doc in first:
            for alert in (doc or {}).get("alerts", []) if isinstance(doc, dict) else []:
                episode = (str(alert.get("fingerprint")), str(alert.get("status")), str(alert.get("starts_at")))
                if episode in episodes_seen:
                    repeated += 1
                    continue
                episodes_seen.add(episode)
                received[(str(alert.get("rule")), str(alert.get("job")), alert.get("node") or "")].append(
                    str(alert.get("status")))
        lost = spurious = mismatched = 0
        examples: list[str] = []
        for key in sorted(set(expected) | set(received)):
            want, got = expected.get(key, []), received.get(key, [])
            w, g = Counter(want), Counter(got)
            lost += sum((w - g).values())
            spurious += sum((g - w).values())
            if want != got:
                mismatched += 1
                if len(examples) < 5:
                    examples.append(f"{'/'.join(k for k in key if k)}: expected {want}, received {got}")
        episodes = sum(len(v) for v in expected.values())
        alerts_received = sum(len(d.get("alerts", [])) for r in requests if isinstance(d := r.doc, dict))
        integrity_failures = [k for k in self.kills if k.integrity != "ok"]
        final_check = integrity(self.db)[0]
        not_pending = {s: len(outbox_ids(self.db, s)) for s in ("failed", "expired")}
        errors = self._logged(" ERROR ", "Traceback", "CRITICAL")
        warnings = self._logged(" WARNING ")
        if examples:
            self.emit({"mismatches": examples}, always=True)
        if errors:
            self.emit({"logged_errors": errors[:5]}, always=True)
        if warnings:
            self.emit({"logged_warnings": warnings[:5]}, always=True)
        if self.unexpected_exits:
            self.emit({"unexpected_exits": self.unexpected_exits[:5]}, always=True)
        for bad in integrity_failures[:5]:
            self.emit({"integrity_failure": bad.line()}, always=True)

        kills = len(self.kills)
        strategies = Counter(k.strategy for k in self.kills)
        windows = {
            "send->mark_delivered (sent, still pending)": sum(1 for k in self.kills if k.sent_unmarked),
            "outbox write->delivery (queued, not sent)": sum(1 for k in self.kills if k.queued_unsent),
            "inside a commit (write or sync of the state file)": sum(1 for k in self.kills if k.inside_commit),
            "partly written WAL transaction": sum(1 for k in self.kills if k.torn_wal),
            "during schema creation/migration": sum(1 for k in self.kills if (k.schema_version or 0) < SCHEMA_VERSION),
        }
        coverage = kills >= COVERAGE_MIN_KILLS
        commit_window = sum(1 for k in self.kills if k.inside_commit or k.torn_wal)
        figs = [
            Figure("kills", kills, f">= {self.s.kills}", kills >= self.s.kills),
            Figure("kills_by_strategy", dict(sorted(strategies.items()))),
            Figure("kill_fallbacks (trigger did not come, killed anyway)", sum(k.fallback for k in self.kills)),
            Figure("kill_windows", windows),
            Figure("kills_between_send_and_mark_delivered", windows["send->mark_delivered (sent, still pending)"],
                   ">= 1" if coverage else None, not coverage or windows[
                       "send->mark_delivered (sent, still pending)"] >= 1),
            Figure("kills_between_outbox_write_and_delivery", windows["outbox write->delivery (queued, not sent)"],
                   ">= 1" if coverage else None, not coverage or windows[
                       "outbox write->delivery (queued, not sent)"] >= 1),
            Figure("kills_inside_sqlite_commits", commit_window, ">= 1" if coverage else None,
                   not coverage or commit_window >= 1),
            Figure("transitions_driven", driver.flips),
            Figure("episodes", episodes, ">= 1", episodes >= 1),
            Figure("notifications_received", len(requests)),
            Figure("alerts_received", alerts_received),
            Figure("notifications_after_dedup", len(copies)),
            Figure("requests_cut_short (sender killed while sending; not deliveries)", receiver.incomplete),
            Figure("unparseable_bodies", unparseable, "0", unparseable == 0),
            Figure("lost", lost, "0", lost == 0),
            Figure("spurious", spurious, "0", spurious == 0),
            Figure("sequence_mismatches", mismatched, "0", mismatched == 0),
            Figure("duplicates", duplicates, f"<= kills ({kills})", duplicates <= kills),
            Figure("max_duplicates_per_kill", max(per_kill.values(), default=0), "<= 1",
                   max(per_kill.values(), default=0) <= 1),
            Figure("duplicates_within_one_run", same_run, "0", same_run == 0),
            Figure("duplicates_after_dedup", repeated, "0", repeated == 0),
            Figure("key_conflicts (one key, different bodies)", sum(len(b) > 1 for b in bodies.values()), "0",
                   all(len(b) == 1 for b in bodies.values())),
            Figure("malformed_keys", malformed, "0", malformed == 0),
            Figure("first_deliveries_out_of_id_order", out_of_order, "0", out_of_order == 0),
            Figure("second_state_file_exit_code", second_exit, "0", second_exit == 0),
            Figure("second_state_file_notifications", len(second), ">= 1", len(second) >= 1),
            Figure("key_collisions_across_state_files", collisions, "0", collisions == 0),
            Figure("second_state_file_keys_not_its_own", second_malformed, "0", second_malformed == 0),
            Figure("integrity_checks", len(self.kills) + 1),
            Figure("integrity_checks_on_a_copy (hot rollback journal)", sum(k.integrity_on_copy for k in self.kills)),
            Figure("integrity_failures", len(integrity_failures) + (final_check != "ok"), "0",
                   not integrity_failures and final_check == "ok"),
            Figure("unexpected_exits", len(self.unexpected_exits), "0", not self.unexpected_exits),
            Figure("outbox_failed_or_expired", sum(not_pending.values()), "0", not any(not_pending.values())),
            Figure("logged_errors", len(errors), "0", not errors),
            Figure("logged_warnings", len(warnings)),
            Figure("final_run", settled, "settled", settled == "settled"),
            Figure("final_exit_code", final_exit, "0", final_exit == 0),
            Figure("source_requests", len(sim.requests)),
        ]
        return figs

    def _logged(self, *words: str) -> list[str]:
        """Lines of every run's log holding one of ``words`` (a SIGKILL itself leaves none: it is never caught)."""
        out = []
        for path in sorted(self.logs.glob("run-*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if any(word in line for word in words):
                    out.append(f"{path.name}: {line.strip()[:300]}")
        return out

    def startup_seconds(self, sim_requests: Sequence[float]) -> float:
        """Sum over runs of spawn -> first poll request (imports, config, state file, first cycle start)."""
        total = 0.0
        times = sorted(sim_requests)
        for i, spawned in enumerate(self._spawns):
            ends = self._spawns[i + 1] if i + 1 < len(self._spawns) else float("inf")
            first = next((t for t in times if spawned <= t < ends), None)
            if first is not None:
                total += first - spawned
        return total


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def run_campaign(settings: Settings) -> Result:
    """Run the campaign, print its figures, and clean up the work directory when every target holds."""
    campaign = Campaign(settings)
    started = time.monotonic()
    result = campaign.run()
    wall = time.monotonic() - started
    result.figures.append(Figure("wall_time_s", round(wall, 1)))
    for figure in result.figures:
        campaign.emit(figure.line(), always=True)
    times = dict(campaign.time)
    accounted = sum(times.values())
    times["other (waiting, restarts)"] = max(0.0, wall - accounted)
    campaign.emit({"time_s": {k: round(v, 1) for k, v in sorted(times.items(), key=lambda kv: -kv[1])}},
                  always=True)
    campaign.emit({"result": "ok" if result.ok else "FAILED", "seed": result.seed,
                   "failed": [f.name for f in result.failures()],
                   "workdir": str(campaign.workdir) if not result.ok or settings.keep else None}, always=True)
    if result.ok and not settings.keep and settings.workdir is None:
        shutil.rmtree(campaign.workdir, ignore_errors=True)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--kills", type=int, default=100, help="how many SIGKILLs (default 100)")
    parser.add_argument("--seed", type=int, default=None, help="replay a campaign (default: a random seed, printed)")
    parser.add_argument("--interval", type=float, default=1.0, help="notifier's poll interval in seconds (default 1)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep config, state file and logs here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory even when all targets hold")
    parser.add_argument("--quiet", action="store_true", help="print only the figures, not every kill")
    args = parser.parse_args(argv)
    if args.kills < 1 or args.interval <= 0:
        parser.error("--kills must be >= 1 and --interval > 0")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    result = run_campaign(Settings(kills=args.kills, seed=args.seed, interval=args.interval,
                                   workdir=args.workdir, keep=args.keep, quiet=args.quiet))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
