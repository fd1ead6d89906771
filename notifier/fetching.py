"""The shell around ``core.fetchplan``: list the jobs, plan the cycle's status requests, remember what was fetched.

A cycle is one list (ceil(N/1000) requests) and then rounds of status requests: the
urgent jobs first, so a change the list shows is alerted seconds into the cycle rather
than after the sweep, then the sweep share in rounds of about ``ROUND_SECONDS`` of the
budget, each applied (diffed, judged, committed) as soon as it is fetched: a node failure
the sweep finds is not held back for the rest of the sweep, and at most one round's
answers are in memory at once.

``FetchMemory`` is what the planner needs between cycles and the state file does not
hold: when each job's status was last fetched, what the list said of it then, and when
its stalled-counter rules next want a look. It lives in memory: after a restart every
job is "never fetched" and the first sweep goes over them in name order, and nothing is
taken as changed that the remembered state does not show as changed.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from notifier.config import Config
from notifier.core.durations import format_duration, plural
from notifier.core.fetchplan import Budget, FetchPlan, Listed, achievable_sweep, list_requests
from notifier.core.models import EntitiesByJob, FetchResult, Rule
from notifier.core.rules import stall_deadline
from notifier.errors import SourceError
from notifier.source.client import DgcClient, JobListing

log = logging.getLogger(__name__)

ROUND_SECONDS = 5.0  # a sweep round is about this much of the request budget ...
ROUND_MIN, ROUND_MAX = 100, 1000  # ... but never fewer or more jobs than these
SWEEP_DEADLINE = 0.95  # a cycle's sweep rounds end by this share of the interval (round_fits)


def budget_of(config: Config, rate: float | None = None) -> Budget:
    """A source's budget per cycle: ``rate`` (its share of its user's, ``Wiring.rates``), else the first source's."""
    return Budget(rate=rate if rate is not None else config.source.max_requests_per_second,
                  interval=config.interval, full_sweep=config.full_sweep)


def round_size(rate: float) -> int:
    """Jobs per sweep round: ``ROUND_SECONDS`` of requests, within ``ROUND_MIN``..``ROUND_MAX``."""
    return max(ROUND_MIN, min(ROUND_MAX, math.ceil(rate * ROUND_SECONDS)))


def round_fits(size: int, rate: float, elapsed: float, interval: float) -> int:
    """How many of a sweep round's ``size`` jobs can still be fetched ``elapsed`` seconds into a cycle.

    The limiter spaces requests evenly and time spent committing rounds is not won back, so
    a cycle that asks for its whole budget runs past its interval; the scheduler then skips
    the next tick and the job-level check waits a whole cycle more. The sweep stops at
    ``SWEEP_DEADLINE`` of the interval instead: what it did not reach is the stalest next
    cycle, so the sweep lengthens a little and no job is skipped.
    """
    left = interval * SWEEP_DEADLINE - elapsed
    return max(0, min(size, math.floor(left * rate)))


def sweep_sentence(jobs: int, budget: Budget, *, listing: bool) -> str:
    """"10000 jobs at 20 req/s: job-level changes every cycle (1m), every job's nodes within 9m"."""
    head = f"{plural(jobs, 'job')} at {budget.rate:g} req/s"
    achievable = achievable_sweep(jobs, budget, listing=listing)
    if math.isinf(achievable):
        return (f"{head}: the list alone ({list_requests(jobs)} requests) takes the whole budget of a "
                f"cycle; raise the source's max_requests_per_second or [schedule] interval")
    target = max(achievable, budget.full_sweep or 0.0)
    head += (f": job-level changes every cycle ({format_duration(budget.interval)})"
             if listing else " (no job list: job-level changes only through the sweep)")
    return f"{head}, every job's nodes within {format_duration(target)}"


def budget_warning(jobs: int, budget: Budget, *, listing: bool) -> str | None:
    """Why the configured ``full_sweep`` cannot be kept for ``jobs`` jobs, with the numbers; None when it can."""
    achievable = achievable_sweep(jobs, budget, listing=listing)
    if budget.full_sweep is None or achievable <= budget.full_sweep:
        return None
    return (f"{sweep_sentence(jobs, budget, listing=listing)}, longer than [schedule] full_sweep = "
            f"{format_duration(budget.full_sweep)}: the sweep takes longer rather than skip a job (raise "
            "[source] max_requests_per_second up to the API's 30 per user, or interval, or full_sweep)")


def lists(names: int, *, discover: bool, list_total: int | None = None) -> bool:
    """Whether a cycle uses the list API: always with discovery; for named jobs when cheaper than their statuses."""
    if discover:
        return True
    return names >= 2 and (list_total is None or list_requests(list_total) < names)


@dataclass
class FetchMemory:
    """When each job was last fetched, what the list said of it then, and when its stall rules want a look."""

    started: datetime
    last_fetched: dict[str, datetime] = field(default_factory=dict)
    seen: dict[str, Listed] = field(default_factory=dict)
    due: dict[str, datetime] = field(default_factory=dict)
    due_rules: tuple[Rule, ...] | None = None  # the rules ``due`` was computed with (a reload recomputes)
    list_total: int | None = None  # jobs the list API last said the project has
    list_refused: str | None = None  # why named jobs are polled one by one (the list API refused this user)
    told: str = ""  # the sweep sentence last logged: logged again only when it changes
    swept: str = ""  # the sweep figures last stored: stored again only when they change (a quiet cycle writes nothing)
    label: str = ""  # "source prod: " before what it logs when there are several sources

    def should_list(self, names: int) -> bool:
        """Named jobs without discovery: list only when it is cheaper than asking for each job's status."""
        return self.list_refused is None and lists(names, discover=False, list_total=self.list_total)

    async def list_named(self, client: DgcClient, names: Sequence[str]) -> JobListing | None:
        """The list, for named jobs (no discovery); None when it is not used or failed (the planner copes)."""
        if not self.should_list(len(names)):
            return None
        try:
            listing = await client.list_all()
        except SourceError as exc:
            if exc.error_code == "DLF.6888" or exc.status_code == 403:  # no permission: this user may not list
                self.list_refused = str(exc)
                log.warning("%sthe list API is refused for this user, polling the %d named jobs one by one within "
                            "the budget: %s", self.label, len(names), exc)
            else:
                log.warning("%sthe job list failed this cycle, planning from memory: %s", self.label, exc)
            return None
        self.list_total = listing.total
        return listing

    def prepare(self, rules: tuple[Rule, ...], entities: EntitiesByJob) -> None:
        """Compute every job's stall deadline once per rule set (at start and after a reload)."""
        if self.due_rules is rules:
            return
        self.due_rules = rules
        self.due = {job: d for job, group in entities.groups.items()
                    if (d := stall_deadline(rules, group.values())) is not None}

    def remember(self, result: FetchResult, at: datetime, listed: Mapping[str, Listed] | None,
                 entities: EntitiesByJob) -> None:
        """The jobs fetched fine in a round: fetched ``at``, as the list showed them, with their new stall deadline."""
        rules = self.due_rules or ()
        for snapshot in result.snapshots:
            job = snapshot.name
            self.last_fetched[job] = at
            item = listed.get(job) if listed is not None else None
            if item is not None:
                self.seen[job] = item
            deadline = stall_deadline(rules, entities.job(job).values())
            if deadline is None:
                self.due.pop(job, None)
            else:
                self.due[job] = deadline

    def forget_others(self, watched: Collection[str]) -> None:
        """Jobs no longer watched leave the memory too."""
        keep = set(watched)
        for table in (self.last_fetched, self.seen, self.due):
            for job in [j for j in table if j not in keep]:
                del table[job]

    def oldest(self, watched: Sequence[str], now: datetime) -> float:
        """Seconds since the least recently fetched watched job was fetched (since start, for one never fetched)."""
        if not watched:
            return 0.0
        last = self.last_fetched
        oldest = min((last.get(job, self.started) for job in watched), default=now)
        return max(0.0, (now - oldest).total_seconds())

    def tell(self, jobs: int, budget: Budget, *, listing: bool) -> None:
        """Log how fast the budget lets the service see, once, and again when the numbers change."""
        sentence = sweep_sentence(jobs, budget, listing=listing)
        if sentence == self.told:
            return
        self.told = sentence
        warning = budget_warning(jobs, budget, listing=listing)
        if warning is not None:
            log.warning("%s%s", self.label, warning)
        else:
            log.info("%s%s", self.label, sentence)


def sweep_figures(oldest: float, plan: FetchPlan, jobs: int, budget: Budget) -> str:
    """The achieved and planned sweep and the numbers behind them, to compare with the last stored ones."""
    return json.dumps({"oldest_s": round(oldest, 3), "target_s": plan.sweep_target,
                       "achievable_s": None if math.isinf(plan.achievable) else plan.achievable, "jobs": jobs,
                       "rate": budget.rate, "interval_s": budget.interval, "full_sweep_s": budget.full_sweep},
                      separators=(",", ":"))


def sweep_json(figures: str, since: datetime) -> str:
    """The meta row `notifier alerts` reads: ``sweep_figures``, stamped with the cycle that first measured them."""
    return json.dumps({"since": since.isoformat(), **json.loads(figures)}, separators=(",", ":"))


def stored_figures(stored: str | None) -> str:
    """The ``sweep_figures`` inside a stored ``sweep_json`` ("" for none), so a restart does not rewrite the same."""
    try:
        figures = json.loads(stored or "")
    except ValueError:
        return ""
    if not isinstance(figures, dict):
        return ""
    figures.pop("since", None)
    return json.dumps(figures, separators=(",", ":"))


def describe_sweep(stored: str | None, *, failing: bool = False) -> str | None:
    """The ``POLLING`` line of ``notifier alerts`` from the stored ``sweep_json``; None before the first full cycle.

    The figures are every full cycle's since the time shown (the row is written only when they change,
    and never by a cycle in which the source failed); ``failing``: the source fails now, which, not the
    budget, is why polling is behind.
    """
    if not stored:
        return None
    try:
        d = json.loads(stored)
        oldest, target, jobs = float(d["oldest_s"]), float(d["target_s"]), int(d["jobs"])
        rate, interval = float(d["rate"]), float(d["interval_s"])
    except (ValueError, TypeError, KeyError):
        return None
    if failing:  # no failing cycle stores figures: these are from before it failed, and polling is behind
        late = "  (behind: the source is failing)"
    else:
        late = "  (behind: the budget is short for these jobs; see notifier check)" if oldest > 2 * target else ""
    try:
        when = f" since {datetime.fromisoformat(d['since']).strftime('%H:%M:%S UTC')}"
    except (KeyError, TypeError, ValueError):  # a row from before the time was stored
        when = ""
    swept = ("every one fetched in each cycle" if oldest == 0 else
             f"the least recently fetched {format_duration(oldest)} before each cycle")
    return (f"POLLING: {plural(jobs, 'job')}, {swept}{when} (sweep target {format_duration(target)}; {rate:g} req/s, "
            f"a cycle every {format_duration(interval)}){late}")
