"""The assembled application: one ``App`` per process, and the shell of a poll cycle.

``App`` builds everything a process needs from a config path, in one place: the
process lock, the state store, the ``Wiring`` (runtime, channels, client), the
``Poller`` and the ``Deliverer``. ``notifier once``, ``notifier run`` (``daemon``),
the demo and the tests all assemble it here, so there is one wiring to get right.

A cycle is ``Poller.fetch`` (async I/O: discovery and status requests) followed by
``Poller.apply`` (synchronous: ``core.cycle.plan_cycle``, render, one SQLite commit).
The daemon runs ``apply`` in a worker thread so delivery never waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from notifier.channels import CHANNEL_TYPES
from notifier.clock import utcnow
from notifier.core.cycle import group_alerts, plan_cycle
from notifier.core.models import AlertState, Clock, EntitiesByJob, FetchError, FetchResult, MessageGroup
from notifier.delivery import Deliverer, DeliveryReport
from notifier.errors import SourceError
from notifier.lock import ProcessLock
from notifier.outbox import NewNotification
from notifier.render import Renderer
from notifier.runtime import Runtime, Wiring, load_runtime
from notifier.state import SOURCE_FAILURES_KEY, CycleWrite, StateStore

log = logging.getLogger(__name__)

def compose(runtime: Runtime, groups: Sequence[MessageGroup], now: datetime) -> tuple[NewNotification, ...]:
    """Render every group for its channel; a broken user template falls back, never drops the alert."""
    out: list[NewNotification] = []
    fallback_renderer: Renderer | None = None
    for group in groups:
        kind = CHANNEL_TYPES[runtime.config.channels[group.channel].type]
        try:
            payloads = kind.compose(runtime.renderer, group, now)
        except Exception:
            log.exception("composing failed, retrying with the built-in templates channel=%s job=%s",
                          group.channel, group.group)
            fallback_renderer = fallback_renderer or Renderer(None)
            payloads = kind.compose(fallback_renderer, MessageGroup(group.channel, group.group, group.alerts), now)
        out.extend(NewNotification(channel=group.channel, group=group.group, payload=p) for p in payloads)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Fetched:
    """What the I/O half of a cycle brings back for the synchronous half."""

    result: FetchResult
    names: tuple[str, ...]  # the jobs asked for
    watched: tuple[str, ...] | None  # None when discovery failed: forget no job
    at: datetime
    discovery_error: str | None = None
    requests: int = 0  # HTTP requests this cycle sent, retries included
    retries: int = 0


@dataclass(frozen=True, slots=True)
class CycleReport:
    """What one cycle did, for logs, exit codes and (later) metrics."""

    at: datetime
    jobs: int
    fetched: int
    errors: tuple[FetchError, ...]
    transitions: int
    notifications: int
    firing: int
    source_failed: bool
    discovery_error: str | None = None
    source_failures: int = 0  # cycles in a row the source failed, this one included
    requests: int = 0
    retries: int = 0

    def summary(self) -> str:
        text = (f"cycle done jobs={self.jobs} fetched={self.fetched} errors={len(self.errors)} "
                f"transitions={self.transitions} notifications={self.notifications} firing={self.firing} "
                f"requests={self.requests} retries={self.retries}")
        return text + (f" source_failing_cycles={self.source_failures}" if self.source_failures else "")


@dataclass
class Poller:
    """Holds the remembered view between cycles; the state file is the truth on start."""

    store: StateStore
    clock: Clock = utcnow
    entities: EntitiesByJob = field(default_factory=EntitiesByJob)
    alerts: dict[str, AlertState] = field(default_factory=dict)
    source_failures: int = 0

    def __post_init__(self) -> None:
        self.entities = EntitiesByJob.group(self.store.load_entities())
        self.alerts = self.store.load_alerts()
        self.source_failures = int(self.store.get_meta(SOURCE_FAILURES_KEY) or 0)

    async def cycle(self, wiring: Wiring) -> CycleReport:
        """Fetch every watched job, then plan, render and commit in one transaction."""
        return self.apply(wiring, await self.fetch(wiring))

    async def fetch(self, wiring: Wiring) -> Fetched:
        """The I/O half of a cycle: resolve the watched jobs and fetch them all."""
        now = self.clock()
        client, jobs = wiring.client, wiring.config.jobs
        before = (client.stats.requests, client.stats.retries)
        discovery_error: str | None = None
        try:
            names = await client.resolve_jobs(jobs)
            watched: tuple[str, ...] | None = names
        except SourceError as exc:
            # discovery failed: poll the jobs we already know, and forget none of them
            log.error("job discovery failed, polling known jobs: %s", exc)
            discovery_error = str(exc)
            names = tuple(sorted(set(self.entities.groups) | set(jobs.names)))
            watched = None
        result = await client.fetch_all(names)
        return Fetched(result=result, names=names, watched=watched, at=now, discovery_error=discovery_error,
                       requests=client.stats.requests - before[0], retries=client.stats.retries - before[1])

    def apply(self, wiring: Wiring, fetched: Fetched) -> CycleReport:
        """The synchronous half of a cycle: plan, compose, commit, then adopt the new view."""
        runtime, result, now = wiring.runtime, fetched.result, fetched.at
        plan = plan_cycle(runtime.rules, self.entities, self.alerts, result, fetched.watched, now)
        for job in plan.forgotten:
            log.info("job no longer watched, forgetting its state job=%s", job)
        grouping = group_alerts(plan.notify, runtime.config.channels)
        for channel, rule in grouping.unknown:
            log.warning("alert names an unknown channel, skipped channel=%s rule=%s", channel, rule)
        notifications = compose(runtime, grouping.groups, now)
        source_failed = _source_failed(result, fetched.discovery_error)
        failures = self.source_failures + 1 if source_failed else 0
        self.store.commit_cycle(CycleWrite(
            at=now, upsert_entities=plan.upserts, delete_entities=plan.deletes,
            upsert_alerts=plan.alert_upserts, delete_alerts=plan.alert_deletes,
            notifications=notifications, meta={SOURCE_FAILURES_KEY: str(failures)},
        ))
        # adopt only after the commit succeeded: a failed commit leaves memory == disk
        self.entities = plan.entities  # immutable: adopted as is, no copy
        self.alerts = dict(plan.alerts)
        self.source_failures = failures
        report = CycleReport(
            at=now, jobs=len(fetched.names), fetched=len(result.snapshots), errors=result.errors,
            transitions=len(plan.transitions), notifications=len(notifications),
            firing=sum(1 for a in plan.alerts.values() if a.phase == "firing"),
            source_failed=source_failed, discovery_error=fetched.discovery_error, source_failures=failures,
            requests=fetched.requests, retries=fetched.retries,
        )
        log.info(report.summary())
        return report


def _source_failed(result: FetchResult, discovery_error: str | None) -> bool:
    """The source failed when discovery failed, auth was refused, or no job could be fetched at all."""
    if discovery_error is not None:
        return True
    if any(e.kind == "auth" for e in result.errors):
        return True
    return bool(result.errors) and not result.snapshots


class App:
    """One process's notifier: lock, state store, wiring, poller and deliverer, built from a config path.

    Use it inside one event loop (the DGC client's connections belong to it) and close
    it with ``aclose``. ``reload`` builds a new ``Wiring`` and swaps it in whole.
    """

    def __init__(self, config_path: Path, *, runtime: Runtime | None = None, clock: Clock = utcnow) -> None:
        self.config_path = Path(config_path)
        self.clock = clock
        runtime = runtime if runtime is not None else load_runtime(self.config_path)
        self.lock = ProcessLock(runtime.config.state_path).acquire()
        try:
            self.store = StateStore.open(runtime.config.state_path)
            try:
                self.wiring = Wiring.build(runtime, clock=clock)
                self.poller = Poller(self.store, clock)
            except BaseException:
                self.store.close()
                raise
        except BaseException:
            self.lock.release()
            raise
        self.deliverer = Deliverer(self.store.outbox, self.wiring.channels, runtime.config.delivery, clock=clock)

    @property
    def runtime(self) -> Runtime:
        return self.wiring.runtime

    async def cycle(self, *, in_thread: bool = False) -> CycleReport:
        """One poll cycle; ``in_thread`` runs the synchronous half off the event loop (the daemon)."""
        wiring = self.wiring  # one consistent wiring for the whole cycle, even across a reload
        fetched = await self.poller.fetch(wiring)
        if in_thread:
            return await asyncio.to_thread(self.poller.apply, wiring, fetched)
        return self.poller.apply(wiring, fetched)

    def deliver(self) -> DeliveryReport:
        """One delivery round over every due outbox row."""
        return self.deliverer.deliver_due()

    def load(self) -> Wiring:
        """Load and build a new wiring from the config path (blocking); NotifierError if anything is invalid."""
        return Wiring.build(load_runtime(self.config_path), clock=self.clock)

    async def adopt(self, wiring: Wiring) -> None:
        """Swap in a wiring from ``load``; the deliverer switches once a running round ends; the old one closes."""
        if wiring.config.state_path != self.runtime.config.state_path:
            log.warning("state path changed; it takes effect after a restart")
        old, self.wiring = self.wiring, wiring
        await asyncio.to_thread(self.deliverer.swap_channels, wiring.channels)
        await old.aclose()

    async def aclose(self) -> None:
        """Close the wiring, the store and the lock (in that order)."""
        try:
            await self.wiring.aclose()
        finally:
            self.store.close()
            self.lock.release()
