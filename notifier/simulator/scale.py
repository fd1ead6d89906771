"""Scale mode: many jobs whose statuses change at a known rate, computed from a hash, never stored.

Scenario time is cut into periods of ``period`` seconds. In period ``m`` job ``j`` draws a
*candidate* change from ``blake2b(seed, j, m)`` (Python's ``hash()`` is salted per process;
this is the same in every run): with probability ``change_share`` a change starts at an
offset inside the period (millisecond resolution), also from the hash. With probability
``node_share`` it is node-level (one node, chosen by the hash, goes EXCEPTION; the job stays
NORMAL and its lastUpdateTime does not move), else job-level (the job goes EXCEPTION and
lastUpdateTime moves to the change time; the nodes are untouched). It lasts ``hold``
seconds; then the job or node is NORMAL again (a job-level recovery moves lastUpdateTime
once more).

A candidate that would start while the same job already has an *accepted* change active is
skipped, so a job has at most one active change. Whether a candidate is accepted depends on
the run of overlapping candidates before it (a candidate with no other one less than
``hold`` before it is always accepted): the walk back is O(hold/period) hash evaluations and
the run is short unless ``change_share * hold / period`` approaches 1.

What a job looks like at ``t`` (``state``) costs O(hold/period) hash evaluations; its
lastUpdateTime needs the last job-level change however long ago it was, which a per-job
memo (``(period bound, last change)``, only ever correct, so threads may race on it) keeps
amortised O(1) while time moves forward. ``changes(t0, t1)`` is the ground truth for
benchmarks: every start and end in ``[t0, t1)``, computed by the same functions the APIs
use. This module is pure (``hashlib``, ``struct``, ``math``).
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass, field
from typing import NamedTuple

NORMAL = "NORMAL"
EXCEPTION = "EXCEPTION"

_PACK = struct.Struct("<qqq").pack
_MASK53 = (1 << 53) - 1
_U53 = float(1 << 53)
_INT64 = 1 << 63


class Change(NamedTuple):
    """One status change of the ground truth, in scenario seconds."""

    t: float
    job: str
    node: str  # "" for a job-level change
    status: str  # the new status
    previous: str


class ScaleState(NamedTuple):
    """What scale mode puts on top of a NORMAL job at one moment."""

    status: str  # the job's status: EXCEPTION during a job-level change, else NORMAL
    since: float | None  # scenario seconds of the job's last job-level event; None: none yet
    node: int  # index of the node in EXCEPTION during a node-level change, else -1


class _Draw(NamedTuple):
    start: float
    node: int  # -1: job level


class _Happened(NamedTuple):
    """An accepted change: its period, start and node (-1: job level)."""

    period: int
    start: float
    node: int


class _Window(NamedTuple):
    """A job's accepted changes in periods [lo, hi), and the start of its last job-level change before lo."""

    lo: int
    hi: int
    changes: tuple[_Happened, ...]
    before: float | None


def job_name(j: int, jobs: int) -> str:
    """The name of job ``j`` of ``jobs`` (as ``Scenario.synthetic`` names them: job_0000 ... job_9999)."""
    return f"job_{j:0{len(str(jobs - 1))}d}"


def node_name(n: int) -> str:
    return f"node_{n:02d}"


@dataclass(frozen=True, slots=True, eq=False)
class ScaleModel:
    """The changes of a scale scenario: ``jobs`` x ``nodes``, ``change_share`` of the jobs changing per period."""

    jobs: int
    nodes: int = 10
    change_share: float = 0.01
    node_share: float = 0.5
    hold: float = 300.0
    period: float = 60.0
    seed: int = 0
    # job index -> its accepted changes around the time it was last asked about (see _recent)
    _windows: dict[int, _Window] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        problems = check_scale(jobs=self.jobs, nodes=self.nodes, change_share=self.change_share,
                               node_share=self.node_share, hold=self.hold, period=self.period, seed=self.seed)
        if problems:
            raise ValueError("; ".join(f"{key} {why}" for key, why in problems))

    # names

    def job_name(self, j: int) -> str:
        return job_name(j, self.jobs)

    def job_index(self, name: str) -> int:
        """The index of a job by name (ValueError when it is not one of this model's)."""
        prefix, _, digits = name.partition("_")
        if prefix != "job" or not digits.isdigit() or job_name(int(digits), self.jobs) != name \
                or int(digits) >= self.jobs:
            raise ValueError(f"no job {name!r} in this scale scenario (job_{0:0{len(str(self.jobs - 1))}d} ... "
                             f"{self.job_name(self.jobs - 1)})")
        return int(digits)

    # the model

    def _draw(self, j: int, m: int) -> _Draw | None:
        """The candidate change of job ``j`` in period ``m``, or None (most periods)."""
        d = int.from_bytes(hashlib.blake2b(_PACK(self.seed, j, m), digest_size=32).digest(), "little")
        if (d & _MASK53) / _U53 >= self.change_share:
            return None
        period = self.period
        start = m * period + math.floor(((d >> 53) & _MASK53) / _U53 * period * 1000) / 1000
        node = (d >> 159) % self.nodes if ((d >> 106) & _MASK53) / _U53 < self.node_share else -1
        return _Draw(start, node)

    def drawn(self, j: int, m: int) -> tuple[float, str] | None:
        """The candidate change job ``j`` draws in period ``m`` before overlaps are skipped: (start, node or "")."""
        d = self._draw(j, m)
        return None if d is None else (d.start, node_name(d.node) if d.node >= 0 else "")

    def _accepted(self, j: int, m: int, start: float) -> bool:
        """Whether the candidate of period ``m`` (starting at ``start``) happens, or is skipped as overlapping."""
        hold, period = self.hold, self.period
        run = [start]
        earliest = start
        k = m - 1
        while k >= 0 and (k + 2) * period + hold > earliest:
            d = self._draw(j, k)
            if d is not None:
                if earliest < d.start + hold:
                    run.append(d.start)
                    earliest = d.start
                else:
                    break  # it ended before the run began, and so did every earlier one
            k -= 1
        end = -math.inf
        accepted = False
        for s in reversed(run):  # the earliest of the run is accepted; then greedily in time order
            accepted = s >= end
            if accepted:
                end = s + hold
        return accepted

    def _bounds(self, t: float) -> tuple[int, int]:
        """Periods [lo, hi) that may hold a change active at ``t`` (with a period's margin each side)."""
        return max(0, int((t - self.hold) // self.period) - 1), int(t // self.period) + 2

    def _happening(self, j: int, lo: int, hi: int) -> list[_Happened]:
        """The accepted changes of job ``j`` in periods [lo, hi), in time order."""
        out = []
        for k in range(lo, hi):
            d = self._draw(j, k)
            if d is not None and self._accepted(j, k, d.start):
                out.append(_Happened(k, d.start, d.node))
        return out

    def _last_job_change_before(self, j: int, bound: int, stop: int = 0) -> float | None:
        """Start of the latest accepted job-level change of job ``j`` in periods [stop, bound), walking back."""
        for k in range(bound - 1, stop - 1, -1):
            d = self._draw(j, k)
            if d is not None and d.node < 0 and self._accepted(j, k, d.start):
                return d.start
        return None

    def _recent(self, j: int, t: float) -> _Window:
        """Job ``j``'s accepted changes in the periods around ``t``, and its last job-level change before them.

        Kept per job and moved forward with time, so a job polled again and again costs a
        dictionary lookup, plus one hash per period that passed since it was last asked.
        """
        lo, hi = self._bounds(t)
        old = self._windows.get(j)
        if old is not None and old.lo <= lo and hi <= old.hi:
            return old
        if old is not None and old.lo <= lo:  # time moved on: keep what is still inside, add the new periods
            before = old.before
            for h in old.changes:
                if h.period < lo and h.node < 0:
                    before = h.start
            if lo > old.hi:
                found = self._last_job_change_before(j, lo, old.hi)
                before = found if found is not None else before
            kept = [h for h in old.changes if h.period >= lo]
            window = _Window(lo, hi, (*kept, *self._happening(j, max(lo, old.hi), hi)), before)
        else:  # first question, or one about an earlier time
            window = _Window(lo, hi, tuple(self._happening(j, lo, hi)), self._last_job_change_before(j, lo))
        self._windows[j] = window
        return window

    def state(self, j: int, t: float) -> ScaleState:
        """Job ``j`` at scenario time ``t``: its status, when it last changed at job level, which node is down."""
        t = max(t, 0.0)
        window = self._recent(j, t)
        active: _Happened | None = None
        last_job: float | None = None
        for h in reversed(window.changes):
            if h.start > t:
                continue
            if active is None and t < h.start + self.hold:
                active = h
            if h.node < 0:
                last_job = h.start
                break
        if active is not None and active.node < 0:
            return ScaleState(EXCEPTION, active.start, -1)
        if last_job is None:
            last_job = window.before
        return ScaleState(NORMAL, None if last_job is None else last_job + self.hold,
                          active.node if active is not None else -1)

    def changes(self, t0: float, t1: float) -> list[Change]:
        """Every change that starts or ends in ``[t0, t1)`` (scenario seconds), sorted by time (then job, node).

        A start is (t, job, node, "EXCEPTION", "NORMAL"), an end (t + hold, job, node,
        "NORMAL", "EXCEPTION"); node is "" for a job-level change. O(jobs x (t1 - t0 + hold) /
        period) hash evaluations.
        """
        if t1 <= t0:
            return []
        hold, period = self.hold, self.period
        first = max(0, int((t0 - hold) // period) - 1)
        last = int(t1 // period) + 1
        out: list[Change] = []
        for j in range(self.jobs):
            name = ""
            for k in range(first, last + 1):
                d = self._draw(j, k)
                if d is None:
                    continue
                end = d.start + hold
                starts, ends = t0 <= d.start < t1, t0 <= end < t1
                if not (starts or ends) or not self._accepted(j, k, d.start):
                    continue
                name = name or self.job_name(j)
                node = node_name(d.node) if d.node >= 0 else ""
                if starts:
                    out.append(Change(d.start, name, node, EXCEPTION, NORMAL))
                if ends:
                    out.append(Change(end, name, node, NORMAL, EXCEPTION))
        out.sort()
        return out

    def describe(self) -> str:
        """One line for the banner of ``notifier simulate --scale``."""
        return (f"scale: {self.jobs} jobs x {self.nodes} nodes; per {self.period:g}s period {self.change_share:.2%} of "
                f"the jobs change ({self.node_share:.0%} of them at node level), each change held {self.hold:g}s; "
                f"seed {self.seed}")


def check_scale(*, jobs: object, nodes: object, change_share: object, node_share: object, hold: object,
                period: object, seed: object) -> list[tuple[str, str]]:
    """(key, what is wrong) for every bad scale parameter: one check for the API, the file and the CLI."""
    problems: list[tuple[str, str]] = []

    def integer(key: str, value: object, low: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append((key, f"must be an integer, got {value!r}"))
        elif value < low:
            problems.append((key, f"must be at least {low}, got {value}"))

    def number(key: str, value: object, *, low: float, high: float | None = None, positive: bool = False) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
            problems.append((key, f"must be a number, got {value!r}"))
        elif value < low or (positive and value <= 0) or (high is not None and value > high):
            bound = f"in [{low:g}, {high:g}]" if high is not None else "longer than zero" if positive \
                else f"at least {low:g}"
            problems.append((key, f"must be {bound}, got {value!r}"))
        elif math.isinf(value):
            problems.append((key, f"must be finite, got {value!r}"))

    integer("jobs", jobs, 1)
    integer("nodes", nodes, 1)
    number("change_share", change_share, low=0.0, high=1.0)
    number("node_share", node_share, low=0.0, high=1.0)
    number("hold", hold, low=0.0, positive=True)
    number("period", period, low=0.0, positive=True)
    if not isinstance(seed, int) or isinstance(seed, bool):
        problems.append(("seed", f"must be an integer, got {seed!r}"))
    elif not -_INT64 <= seed < _INT64:
        problems.append(("seed", f"must fit in 64 bits, got {seed}"))
    return problems
