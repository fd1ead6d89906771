"""One poll cycle, from fetch to outbox, and the runtime it needs.

``plan_cycle`` is the functional core of a cycle: it takes what was remembered and
what the source answered and returns everything to write, with no I/O. ``Service``
is the thin shell around it: fetch (async httpx), plan, render, commit (SQLite, one
transaction), then wake the deliverer. APScheduler only calls ``Service.cycle``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from notifier.channels import CHANNEL_TYPES, Channel
from notifier.config import Config, load_config
from notifier.diff import diff_job
from notifier.errors import ConfigError, SourceError
from notifier.inhibit import inhibition_filter
from notifier.lifecycle import advance
from notifier.models import (
    Alert,
    AlertState,
    Clock,
    EntitiesByJob,
    EntityKey,
    EntityState,
    FetchError,
    FetchResult,
    MessageGroup,
    Rule,
    Transition,
    utcnow,
)
from notifier.render import Renderer
from notifier.rules import evaluate, load_rules
from notifier.source.client import DgcClient
from notifier.state import CycleWrite, NewNotification, StateStore

log = logging.getLogger(__name__)

SOURCE_FAILURES_KEY = "source_consecutive_failures"


# --- the loaded, validated world ------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Runtime:
    """Config, rules and templates that were validated together; replaced as a unit on reload."""

    config: Config
    rules: tuple[Rule, ...]
    renderer: Renderer


def load_runtime(config_path: Path, *, strict_templates: bool = False) -> Runtime:
    """Load config, rules and templates; raise ConfigError naming file, table/rule and key."""
    config = load_config(config_path)
    rules = load_rules(config.rules_dir, tuple(config.channels))
    if config.templates_dir is not None and not config.templates_dir.is_dir():
        raise ConfigError("templates directory does not exist", file=str(config.path), where="paths", key="templates")
    return Runtime(config=config, rules=rules, renderer=Renderer(config.templates_dir, strict=strict_templates))


def create_channels(config: Config) -> dict[str, Channel]:
    """Build every configured channel (reads secrets); ConfigError names the channel."""
    channels: dict[str, Channel] = {}
    try:
        for name, ch in config.channels.items():
            try:
                channels[name] = CHANNEL_TYPES[ch.type].create(name, ch.settings)
            except ConfigError as exc:
                raise ConfigError(exc.detail, file=str(config.path), where=f"channels.{name}", key=exc.key) from exc
    except BaseException:
        close_channels(channels)
        raise
    return channels


def close_channels(channels: Mapping[str, Channel]) -> None:
    for name, channel in channels.items():
        try:
            channel.close()
        except Exception:  # closing must never stop a shutdown
            log.exception("closing channel failed channel=%s", name)


# --- the pure plan of one cycle ---------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CyclePlan:
    """Everything a cycle decided, before rendering and writing."""

    entities: EntitiesByJob  # the complete new view
    upserts: tuple[EntityState, ...]
    deletes: tuple[EntityKey, ...]
    transitions: tuple[Transition, ...]
    alerts: Mapping[str, AlertState]
    alert_upserts: tuple[AlertState, ...]
    alert_deletes: tuple[str, ...]
    notify: tuple[Alert, ...]


def plan_cycle(rules: Sequence[Rule], entities: Mapping[EntityKey, EntityState],
               alerts: Mapping[str, AlertState], result: FetchResult, watched: Collection[str] | None,
               now: datetime) -> CyclePlan:
    """Diff, evaluate and advance the lifecycle for one cycle. Pure.

    Jobs that failed to fetch keep their state and alerts untouched: a failure is never
    taken as "all nodes gone". Jobs no longer watched (``watched`` given and without
    them) are forgotten, and their firing alerts resolve. The new view shares every
    unchanged job's group with ``entities`` (pass an EntitiesByJob to skip regrouping).
    """
    old = EntitiesByJob.group(entities)
    groups: dict[str, Mapping[EntityKey, EntityState]] = dict(old.groups)
    upserts: list[EntityState] = []
    deletes: list[EntityKey] = []
    transitions: list[Transition] = []
    evaluated: set[str] = set()

    for snapshot in result.snapshots:
        previous = old.job(snapshot.name)
        d = diff_job(previous, snapshot, now)
        evaluated.add(snapshot.name)
        changed = [entity for key, entity in d.entities.items() if previous.get(key) != entity]
        upserts.extend(changed)
        deletes.extend(d.removed)
        transitions.extend(d.transitions)
        # nothing moved: keep the remembered group, so the diff's copy can go at once
        groups[snapshot.name] = d.entities if changed or d.removed or not previous else previous

    if watched is not None:
        failed = {e.job for e in result.errors}
        for job in set(old.groups) - set(watched) - evaluated - failed:
            log.info("job no longer watched, forgetting its state job=%s", job)
            evaluated.add(job)
            deletes.extend(groups.pop(job))

    new_entities = EntitiesByJob(groups)
    unevaluated = groups.keys() - evaluated
    current = new_entities if not unevaluated else EntitiesByJob({j: g for j, g in groups.items() if j in evaluated})
    conditions, events = evaluate(rules, current, transitions, now)
    outcome = advance(rules, conditions, events, alerts, current, evaluated, now,
                      notify_filter=inhibition_filter(rules))
    alert_upserts = tuple(s for fp, s in outcome.states.items() if alerts.get(fp) != s)
    alert_deletes = tuple(fp for fp in alerts if fp not in outcome.states)
    return CyclePlan(
        entities=new_entities, upserts=tuple(upserts), deletes=tuple(deletes), transitions=tuple(transitions),
        alerts=outcome.states, alert_upserts=alert_upserts, alert_deletes=alert_deletes, notify=outcome.notify,
    )


def group_alerts(alerts: Sequence[Alert], channels: Collection[str]) -> tuple[MessageGroup, ...]:
    """One message per channel, job and template: alerts of one job in one cycle go out together."""
    groups: dict[tuple[str, str, str], list[Alert]] = defaultdict(list)
    for alert in alerts:
        for channel in alert.channels:
            if channel not in channels:
                log.warning("alert names an unknown channel, skipped channel=%s rule=%s", channel, alert.rule)
                continue
            groups[(channel, alert.job, alert.template)].append(alert)
    return tuple(MessageGroup(channel=c, group=j, alerts=tuple(a), template=t) for (c, j, t), a in groups.items())


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


# --- the shell ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Fetched:
    """What the I/O half of a cycle brings back for the synchronous half."""

    result: FetchResult
    names: tuple[str, ...]  # the jobs asked for
    watched: tuple[str, ...] | None  # None when discovery failed: forget no job
    at: datetime
    discovery_error: str | None = None


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

    def summary(self) -> str:
        return (f"cycle done jobs={self.jobs} fetched={self.fetched} errors={len(self.errors)} "
                f"transitions={self.transitions} notifications={self.notifications} firing={self.firing}")


@dataclass
class Service:
    """Holds the remembered view in memory between cycles; the state file is the truth on start."""

    runtime: Runtime
    store: StateStore
    client: DgcClient
    clock: Clock = utcnow
    entities: EntitiesByJob = field(default_factory=EntitiesByJob)
    alerts: dict[str, AlertState] = field(default_factory=dict)
    source_failures: int = 0

    def __post_init__(self) -> None:
        self.entities = EntitiesByJob.group(self.store.load_entities())
        self.alerts = self.store.load_alerts()
        self.source_failures = int(self.store.get_meta(SOURCE_FAILURES_KEY) or 0)

    async def cycle(self) -> CycleReport:
        """Fetch every watched job, then plan, render and commit in one transaction."""
        return self.apply(await self.fetch())

    async def fetch(self) -> Fetched:
        """The I/O half of a cycle: resolve the watched jobs and fetch them all."""
        now = self.clock()
        discovery_error: str | None = None
        try:
            names = await self.client.resolve_jobs(self.runtime.config.jobs)
            watched: tuple[str, ...] | None = names
        except SourceError as exc:
            # discovery failed: poll the jobs we already know, and forget none of them
            log.error("job discovery failed, polling known jobs: %s", exc)
            discovery_error = str(exc)
            names = tuple(sorted(set(self.entities.groups) | set(self.runtime.config.jobs.names)))
            watched = None
        result = await self.client.fetch_all(names)
        return Fetched(result=result, names=names, watched=watched, at=now, discovery_error=discovery_error)

    def apply(self, fetched: Fetched) -> CycleReport:
        """The synchronous half of a cycle: plan, compose, commit, then adopt the new view."""
        result, now, discovery_error = fetched.result, fetched.at, fetched.discovery_error
        plan = plan_cycle(self.runtime.rules, self.entities, self.alerts, result, fetched.watched, now)
        groups = group_alerts(plan.notify, self.runtime.config.channels)
        notifications = compose(self.runtime, groups, now)
        source_failed = _source_failed(result, discovery_error)
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
            source_failed=source_failed, discovery_error=discovery_error,
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


__all__ = [
    "CyclePlan", "CycleReport", "Fetched", "Runtime", "Service", "close_channels", "compose",
    "create_channels", "group_alerts", "load_runtime", "plan_cycle",
]
