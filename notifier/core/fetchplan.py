"""Which jobs to ask for this cycle, within the API's request budget: the fetch plan.

One status request covers one job, and the API allows one user about 30 requests a
second, so polling 10,000 jobs every cycle cannot work (at 20 requests/s it takes 500 s).
One list request, though, gives the job-level status of 1,000 jobs. So a cycle lists
every job (ceil(N/1000) requests) and asks for a job's status only when that can tell
something new:

- **urgent**, in this order: jobs the list shows changed (status, or lastUpdateTime
  since the job was last fetched: the news, a handful a cycle, and the one thing a cycle
  must not miss), jobs overdue (not fetched for two sweeps: the promise that no job is
  ever left behind), jobs in trouble (the job or a node not NORMAL, as remembered or as
  listed: to see them recover), jobs with a pending or firing alert, jobs never fetched
  (every job in the first cycles after a fresh start: they must not crowd out the news
  and the trouble), jobs missing from the list or answering "no such job", and jobs whose
  stalled-counter rule is due for a look (``rules.stall_deadline``);
- **sweep**: a rotating share of the rest, stalest first, so that every job's nodes are
  fetched at least once per sweep: a node can fail under a job that stays NORMAL, and
  only its status request shows it.

The budget is ``rate x interval`` requests a cycle, less a margin for retries, less what
the list took. Without a configured ``full_sweep`` the sweep takes whatever the urgent
jobs leave (the fastest sweep the budget allows); with one it takes just enough to keep
it. When jobs outnumber the budget the sweep gets longer, never a job skipped: the
achievable sweep is reported (``achievable_sweep``) so ``notifier check`` and the logs
can say so with numbers.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal

from notifier.core.models import AlertState, EntitiesByJob, normalize_status

LIST_PAGE_SIZE = 1000  # jobs per list request: the API's maximum `limit`
BUDGET_SHARE = 0.95  # of rate x interval a cycle plans for; the rest is room for retries and slow answers
OVERDUE_SWEEPS = 2  # a job not fetched for this many sweeps goes first, whatever else is urgent

Reason = Literal["overdue", "changed", "new", "troubled", "alerting", "unlisted", "due", "sweep"]
_RANK: Mapping[Reason, int] = {"changed": 0, "overdue": 1, "troubled": 2, "alerting": 3, "new": 4, "unlisted": 5,
                               "due": 6}
NEVER = datetime.min.replace(tzinfo=timezone.utc)  # sorts a job never fetched before every fetched one


@dataclass(frozen=True, slots=True)
class Listed:
    """One job as the list API answered: its job-level status (normalized) and last update."""

    name: str
    status: str
    updated_at: datetime | None = None

    @classmethod
    def of(cls, name: str, status: str, updated_at: datetime | None) -> Listed:
        return cls(name, normalize_status(status), updated_at)


@dataclass(frozen=True, slots=True)
class Budget:
    """Requests per second of the source's user, seconds between cycles, and the sweep wanted (None: fastest)."""

    rate: float
    interval: float
    full_sweep: float | None = None

    @property
    def per_cycle(self) -> int:
        """Requests one cycle may plan for (list and status together)."""
        return max(1, math.floor(self.rate * self.interval * BUDGET_SHARE))


def list_requests(jobs: int) -> int:
    """List requests one cycle needs for ``jobs`` jobs (at least one: an empty project is one answer)."""
    return max(1, math.ceil(jobs / LIST_PAGE_SIZE))


def achievable_sweep(jobs: int, budget: Budget, *, listing: bool = True) -> float:
    """The shortest sweep (seconds) the budget allows for ``jobs`` jobs; never shorter than the interval.

    Each cycle spends ``list_requests`` on the list (with ``listing``) and the rest on
    status requests; the sweep is the number of cycles those take to cover every job.
    """
    if jobs <= 0:
        return budget.interval
    per_cycle = budget.per_cycle - (list_requests(jobs) if listing else 0)
    if per_cycle <= 0:
        return math.inf
    return budget.interval * math.ceil(jobs / per_cycle)


@dataclass(frozen=True, slots=True)
class FetchPlan:
    """The jobs to fetch this cycle: ``urgent`` first (applied at once), then the ``sweep`` share."""

    urgent: tuple[str, ...]
    sweep: tuple[str, ...]
    reasons: Mapping[Reason, int] = field(default_factory=dict)  # jobs fetched per reason
    deferred: int = 0  # urgent jobs the budget left for the next cycle (they stay urgent)
    sweep_target: float = 0.0  # seconds: the sweep this plan keeps (configured or fastest)
    achievable: float = 0.0  # seconds: the shortest sweep the budget allows

    @property
    def jobs(self) -> tuple[str, ...]:
        return (*self.urgent, *self.sweep)


def troubled_jobs(entities: EntitiesByJob) -> frozenset[str]:
    """Jobs whose job entity or any node was not NORMAL at its last fetch."""
    return frozenset(job for job, group in entities.groups.items()
                     if any(e.status != "NORMAL" for e in group.values()))


def plan_fetch(watched: Sequence[str], listed: Mapping[str, Listed] | None, budget: Budget, now: datetime, *,
               entities: EntitiesByJob, alerts: Mapping[str, AlertState], last_fetched: Mapping[str, datetime],
               seen: Mapping[str, Listed], due: Mapping[str, datetime] | None = None,
               missing: Collection[str] = (), spent: int = 0) -> FetchPlan:
    """Choose this cycle's status requests.

    ``listed`` is this cycle's list answer (None: no list this cycle, every job is judged
    by memory alone); ``seen`` what the list said of each job when it was last fetched;
    ``last_fetched`` when each job's status was last had; ``due`` when each job's
    stalled-counter rules want a fresh look; ``missing`` jobs that answered "no such job";
    ``spent`` requests this cycle already used (the list).
    """
    capacity = max(0, budget.per_cycle - spent)
    listing = listed is not None
    achievable = achievable_sweep(len(watched), budget, listing=listing)
    target = max(budget.interval, budget.full_sweep if budget.full_sweep is not None else 0.0, achievable)
    overdue_age = OVERDUE_SWEEPS * target - budget.interval  # older than two sweeps by the next cycle
    troubled = troubled_jobs(entities)
    alerting = {a.job for a in alerts.values()}
    due = due or {}

    def reason(job: str) -> Reason | None:
        last = last_fetched.get(job)
        item = listed.get(job) if listed is not None else None
        new = last is None and job not in entities.groups
        if item is not None and not new:
            before = seen.get(job)
            remembered = entities.job(job).get((job, ""))
            if ((before is not None and before.updated_at != item.updated_at)
                    or (remembered is not None and remembered.status != item.status)):
                return "changed"
        if last is not None and (now - last).total_seconds() >= overdue_age:
            return "overdue"
        if (item is not None and item.status != "NORMAL") or job in troubled:
            return "troubled"
        if job in alerting:
            return "alerting"
        if new:
            return "new"
        if (listed is not None and item is None) or job in missing:
            return "unlisted"
        deadline = due.get(job)
        if deadline is not None and deadline <= now and (last is None or last < deadline):
            return "due"
        return None

    def staleness(job: str) -> tuple[datetime, str]:
        return last_fetched.get(job, NEVER), job

    urgent: list[tuple[int, datetime, str, Reason]] = []
    rest: list[str] = []
    for job in dict.fromkeys(watched):
        why = reason(job)
        if why is None:
            rest.append(job)
        else:
            urgent.append((_RANK[why], *staleness(job), why))
    urgent.sort()
    taken = urgent[:capacity]
    reasons: dict[Reason, int] = {}
    for *_, why in taken:
        reasons[why] = reasons.get(why, 0) + 1

    room = capacity - len(taken)
    if budget.full_sweep is None:
        share = room
    else:  # just enough to keep the configured sweep: an even share, plus whatever would fall behind it
        even = math.ceil(len(watched) * budget.interval / target)
        behind = sum(1 for job in rest if job not in last_fetched
                     or (now - last_fetched[job]).total_seconds() >= target - budget.interval)
        share = min(room, max(even - len(taken), behind, 0))
    rest.sort(key=staleness)
    sweep = tuple(rest[:share])
    if sweep:
        reasons["sweep"] = len(sweep)
    return FetchPlan(urgent=tuple(job for *_, job, _why in taken), sweep=sweep, reasons=reasons,
                     deferred=len(urgent) - len(taken), sweep_target=target, achievable=achievable)
