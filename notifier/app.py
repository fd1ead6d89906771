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
import json
import logging
import secrets
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from notifier.channels import CHANNEL_TYPES, alertmanager
from notifier.channels.am_payload import facts_of, with_source_labels
from notifier.clock import utcnow
from notifier.config import ChannelConfig, Config, SourceConfig
from notifier.core.amsync import Synced
from notifier.core.cycle import CyclePlan, group_alerts, plan_cycle
from notifier.core.fetchplan import FetchPlan, Listed, plan_fetch
from notifier.core.flap import FlapState
from notifier.core.incidents import Conversation, Drawn, Incident, IncidentKey, plan_incidents
from notifier.core.meta import GLOBAL_META, STATE_UNWRITABLE, Health, Streak, missing_streaks, state_alert
from notifier.core.models import (
    DEFAULT_SOURCE,
    AlertState,
    Clock,
    EntitiesByJob,
    EntityKey,
    EntityState,
    FetchError,
    FetchResult,
    MessageGroup,
    Notification,
    Payload,
    job_key,
    source_of,
    split_job_key,
)
from notifier.delivery import Deliverer, DeliveryReport
from notifier.errors import SourceError, StateError
from notifier.fetching import FetchMemory, budget_of, round_fits, round_size, stored_figures, sweep_figures, sweep_json
from notifier.lock import ProcessLock
from notifier.logs import event
from notifier.outbox import NewNotification
from notifier.render import Renderer
from notifier.runtime import Runtime, Wiring, load_runtime
from notifier.source.client import DgcClient, JobListing, select_jobs
from notifier.state import (
    FETCH_SWEEP_KEY,
    JOBS_MISSING_KEY,
    SOURCE_FAILING_SINCE_KEY,
    SOURCE_FAILURES_KEY,
    CycleWrite,
    StateStore,
    meta_key,
)
from notifier.statefile import from_ms, to_ms

log = logging.getLogger(__name__)


class ButtonHealth(Protocol):
    """What the poller asks a Socket Mode listener (``slack_actions.ButtonListener``)."""

    names: tuple[str, ...]

    def down(self) -> tuple[str, datetime] | None:
        """Why and since when the connection is down; None while it is up."""

def compose(runtime: Runtime, groups: Sequence[MessageGroup], now: datetime,
            conversations: Sequence[Conversation | None] = (), owners: Mapping[str, str] | None = None,
            ) -> tuple[NewNotification, ...]:
    """Render every group for its channel; a broken user template falls back, never drops the alert.

    ``conversations`` (one per group, from ``core.incidents``) thread a group's messages
    on channels that keep one conversation per incident; ``owners`` are the jobs' owners.
    """
    out: list[NewNotification] = []
    fallback_renderer: Renderer | None = None
    for index, group in enumerate(groups):
        channel = runtime.config.channels[group.channel]
        conversation = conversations[index] if index < len(conversations) else None
        owner = (owners or {}).get(group.group)
        try:
            payloads = _render(runtime.renderer, channel, group, conversation, owner, now)
        except Exception:
            log.exception("composing failed, retrying with the built-in templates channel=%s job=%s",
                          group.channel, group.group)
            fallback_renderer = fallback_renderer or Renderer(None)
            payloads = _render(fallback_renderer, channel, replace(group, template="default"), conversation, owner,
                               now)
        out.extend(NewNotification(channel=group.channel, group=group.group, payload=p) for p in payloads)
    return tuple(out)


def _render(renderer: Renderer, channel: ChannelConfig, group: MessageGroup, conversation: Conversation | None,
            owner: str | None, now: datetime) -> tuple[Payload, ...]:
    kind = CHANNEL_TYPES[channel.type]
    if conversation is not None and kind.compose_incident is not None:
        return kind.compose_incident(renderer, channel.settings, group, conversation, now, owner)
    return kind.compose_for(renderer, channel.settings, group, now)


def routed_channels(runtime: Runtime) -> frozenset[str]:
    """Channels where a rule's ``slack_channel`` picks the destination (Slack with a bot token)."""
    return frozenset(name for name, ch in runtime.config.channels.items()
                     if ch.type == "slack" and ch.settings.mode == "token")


def new_incident_id() -> str:
    """Random, so two state files (or a reset one) never name two incidents alike."""
    return secrets.token_hex(8)


def threaded_channels(runtime: Runtime) -> frozenset[str]:
    """Channels that keep one conversation (a Slack thread) per incident."""
    channels = runtime.config.channels
    return frozenset(name for name, ch in channels.items() if CHANNEL_TYPES[ch.type].threaded(ch.settings))


@dataclass(frozen=True, slots=True)
class Fetched:
    """What the I/O half of one round of a cycle brings back for the synchronous half."""

    result: FetchResult
    names: tuple[str, ...]  # the jobs watched this cycle (or, when discovery failed, known)
    watched: tuple[str, ...] | None  # None when discovery failed: forget no job
    at: datetime
    discovery_error: str | None = None
    discovery_auth: bool = False  # discovery failed because the credentials were refused
    requests: int = 0  # HTTP requests this round sent (the list included in round 0), retries included
    retries: int = 0
    owners: Mapping[str, str] = field(default_factory=dict)  # job -> its DataArts owner (from the list API)
    round: int = 0  # 0: the list and the urgent jobs; 1, 2, ...: the sweep share, a round at a time
    rest: tuple[str, ...] = ()  # the sweep jobs still to fetch this cycle
    plan: FetchPlan | None = None
    listed: Mapping[str, Listed] | None = None  # this cycle's list answer for the watched jobs (None: no list)
    listed_ok: bool = False  # the list was answered this cycle: evidence that the source works
    throttled: int = 0
    started: datetime | None = None  # when the cycle's first round began (the sweep's deadline counts from it)
    source: str = DEFAULT_SOURCE  # whose round this is ([sources.NAME]); names, results and owners are job keys


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
    throttled: int = 0  # answers refused for the user's rate limit
    urgent: int = 0  # jobs fetched first because the list or the state said so
    swept: int = 0  # jobs fetched as the sweep's share
    deferred: int = 0  # urgent jobs the budget left for the next cycle
    sweep: float | None = None  # seconds since the least recently fetched job was fetched (the achieved sweep)
    sweep_target: float | None = None  # the sweep the planner keeps (configured, or the fastest the budget allows)
    source: str = DEFAULT_SOURCE  # the source this report is about (a cycle of several: the first's name)
    sources: Mapping[str, CycleReport] = field(default_factory=dict)  # a cycle of several sources: each one's

    @classmethod
    def combine(cls, reports: Sequence[CycleReport]) -> CycleReport:
        """One report for a cycle of several sources (each a whole cycle of its own); ``sources`` keeps each one."""
        if len(reports) == 1:
            return replace(reports[0], sources={reports[0].source: reports[0]})
        first = reports[0]
        failed = [r for r in reports if r.source_failed]
        sweeps = [r.sweep for r in reports if r.sweep is not None]
        targets = [r.sweep_target for r in reports if r.sweep_target is not None]
        return replace(
            failed[0] if failed else first, at=max(r.at for r in reports), jobs=sum(r.jobs for r in reports),
            fetched=sum(r.fetched for r in reports), errors=tuple(e for r in reports for e in r.errors),
            transitions=sum(r.transitions for r in reports), notifications=sum(r.notifications for r in reports),
            firing=sum(r.firing for r in reports), source_failed=bool(failed),
            source_failures=max(r.source_failures for r in reports), requests=sum(r.requests for r in reports),
            retries=sum(r.retries for r in reports), throttled=sum(r.throttled for r in reports),
            urgent=sum(r.urgent for r in reports), swept=sum(r.swept for r in reports),
            deferred=sum(r.deferred for r in reports), sweep=max(sweeps) if sweeps else None,
            sweep_target=max(targets) if targets else None, source=first.source,
            sources={r.source: r for r in reports})

    @property
    def failure(self) -> str | None:
        """Why the source failed this cycle, in one line; None when it did not (several: each failing one's)."""
        if not self.source_failed:
            return None
        if len(self.sources) > 1:
            return "; ".join(f"source {name}: {r.failure}" for name, r in self.sources.items() if r.source_failed)
        return source_failure(self.discovery_error, self.errors)

    def log(self, duration_ms: int | None = None, late: Sequence[str] = ()) -> None:
        """The one line (or JSON object) a cycle leaves in the journal; ``late``: sources still polling, not in it."""
        event(log, logging.INFO, "cycle done", jobs=self.jobs, fetched=self.fetched, errors=len(self.errors),
              transitions=self.transitions, notifications=self.notifications, firing=self.firing,
              requests=self.requests, retries=self.retries, throttled=self.throttled or None, urgent=self.urgent,
              swept=self.swept, deferred=self.deferred or None,
              sweep_s=None if self.sweep is None else round(self.sweep),
              source_failing_cycles=self.source_failures or None,
              sources_failing=",".join(n for n, r in self.sources.items() if r.source_failed) or None
              if len(self.sources) > 1 else None,
              sources_late=",".join(late) or None, duration_ms=duration_ms)

    def then(self, later: CycleReport) -> CycleReport:
        """This round's report followed by a later round's of the same cycle: one report for the cycle."""
        return replace(later, at=self.at, fetched=self.fetched + later.fetched, errors=(*self.errors, *later.errors),
                       transitions=self.transitions + later.transitions,
                       notifications=self.notifications + later.notifications, requests=self.requests + later.requests,
                       retries=self.retries + later.retries, throttled=self.throttled + later.throttled,
                       urgent=self.urgent, swept=self.swept + later.swept, deferred=self.deferred,
                       discovery_error=self.discovery_error,
                       sweep=later.sweep if later.sweep is not None else self.sweep,
                       sweep_target=self.sweep_target, source=self.source)


@dataclass
class SourceView:
    """What the poller remembers about one source between cycles: its planner's memory and its streaks."""

    name: str
    memory: FetchMemory  # what the fetch planner remembers between cycles (not in the state file)
    failures: int = 0
    failing_since: datetime | None = None  # the first cycle of the current source failure
    missing: dict[str, Streak] = field(default_factory=dict)  # job key -> cycles in a row it was not found
    start: _CycleStart | None = None  # the cycle's first round: what later ones build on


@dataclass
class Poller:
    """Holds the remembered view between cycles; the state file is the truth on start.

    The view is one for all sources (a job of source S is the job key ``S/JOB``, the bare
    name for ``default``); each source's round plans and commits its own part of it
    (``_Part``), so one source's rounds never wait for another's fetch. ``apply`` is called
    for one round at a time (``App`` serialises them).
    """

    store: StateStore
    clock: Clock = utcnow
    entities: EntitiesByJob = field(default_factory=EntitiesByJob)
    alerts: dict[str, AlertState] = field(default_factory=dict)
    unwritable_since: datetime | None = None  # the state file refused a commit (in memory: it cannot be stored)
    flaps: dict[str, FlapState] = field(default_factory=dict)
    incidents: dict[IncidentKey, Incident] = field(default_factory=dict)  # open conversations (Slack threads)
    drawn: dict[str, Drawn] = field(default_factory=dict)  # what each open incident's parent shows (in memory)
    synced: dict[str, Synced] = field(default_factory=dict)  # what each Alertmanager channel was last told (in memory)
    buttons: tuple[ButtonHealth, ...] = ()  # Socket Mode connections: one down too long is a failing channel
    views: dict[str, SourceView] = field(default_factory=dict)  # source name -> its planner memory and streaks
    first: str = DEFAULT_SOURCE  # the first configured source (what the single-source properties show)

    def __post_init__(self) -> None:
        self.entities = EntitiesByJob.group(self.store.load_entities())
        self.alerts = self.store.load_alerts()
        self.flaps = self.store.load_flaps()
        self.incidents = self.store.threads.open_incidents()

    def view(self, source: str) -> SourceView:
        """One source's memory and streaks, loaded from the state file's meta rows the first time."""
        view = self.views.get(source)
        if view is None:
            since = self.store.get_meta(meta_key(SOURCE_FAILING_SINCE_KEY, source))
            missing = json.loads(self.store.get_meta(meta_key(JOBS_MISSING_KEY, source)) or "{}")
            view = self.views[source] = SourceView(
                name=source, memory=FetchMemory(started=self.clock(),
                                                label="" if source == DEFAULT_SOURCE else f"source {source}: ",
                                                swept=stored_figures(self.store.get_meta(meta_key(FETCH_SWEEP_KEY,
                                                                                                  source)))),
                failures=int(self.store.get_meta(meta_key(SOURCE_FAILURES_KEY, source)) or 0),
                failing_since=from_ms(int(since)) if since else None,
                missing={job: Streak(cycles, from_ms(ms)) for job, (cycles, ms) in missing.items()})
        return view

    # the first source's, for single-source code paths and tests
    @property
    def memory(self) -> FetchMemory:
        return self.view(self.first).memory

    @property
    def source_failures(self) -> int:
        return self.view(self.first).failures

    @property
    def source_failing_since(self) -> datetime | None:
        return self.view(self.first).failing_since

    @property
    def missing(self) -> dict[str, Streak]:
        return self.view(self.first).missing

    def watch_buttons(self, buttons: Sequence[ButtonHealth]) -> None:
        """Report these Socket Mode connections as failing channels when they stay down (``[meta] channel_stuck``)."""
        self.buttons = tuple(buttons)

    def _failing_channels(self, config: Config, now: datetime) -> dict[str, tuple[str, datetime]]:
        failing = {c: why for c, why in self.store.outbox.failing_channels(now, config.meta.channel_stuck).items()
                   if c in config.channels}
        for listener in self.buttons:
            down = listener.down()
            if down is not None and (now - down[1]).total_seconds() >= config.meta.channel_stuck:
                error, since = down
                failing[f"{'+'.join(listener.names)} (Slack buttons)"] = (
                    f"the Socket Mode connection for the buttons is down: {error}", since)
        return failing

    def _part(self, config: Config, source: str, *, planning: bool = False) -> _Part:
        """The part of the remembered view that ``source``'s rounds judge and commit.

        ``planning`` (the fetch planner, on the event loop while another round may commit in
        a thread): only the entities and alerts, whose mappings a commit replaces, never edits.
        """
        return _Part.of(self, config, source, planning=planning)

    async def fetch(self, wiring: Wiring, source: str | None = None) -> Fetched:
        """The I/O half of a cycle's first round for one source (the first by default): list the jobs, plan the
        cycle, fetch the urgent ones."""
        now = self.clock()
        config = wiring.config
        source = source if source is not None else next(iter(config.sources))
        client, jobs = wiring.clients[source], config.sources[source].jobs
        view, key = self.view(source), _keyer(source)
        before = _counts(client)
        discovery_error: str | None = None
        discovery_auth = False
        listing: JobListing | None = None
        if jobs.discover:
            try:
                listing = await client.list_all()
                names: tuple[str, ...] = tuple(map(key, select_jobs(jobs.names, listing.jobs, jobs.include,
                                                                    jobs.exclude)))
                watched: tuple[str, ...] | None = names
            except SourceError as exc:
                # discovery failed: poll the jobs we already know, and forget none of them
                log.error("job discovery failed, polling known jobs source=%s: %s", source, exc)
                discovery_error, discovery_auth = str(exc), exc.kind == "auth"
                known = {k for k in self.entities.groups if source_of(k) == source}
                names = tuple(sorted(known | set(map(key, jobs.names))))
                watched = None
        else:
            bare = tuple(dict.fromkeys(jobs.names))
            names = watched = tuple(map(key, bare))
            listing = await view.memory.list_named(client, bare)
        listed = None if listing is None else _keyed_listing(listing.jobs, names, source)
        budget = budget_of(config, wiring.rate(source))
        part = self._part(config, source, planning=True)  # as it is now, after the list's wait
        view.memory.prepare(wiring.runtime.all_rules, part.entities)
        plan = plan_fetch(names, listed, budget, now, entities=part.entities, alerts=part.alerts,
                          last_fetched=view.memory.last_fetched, seen=view.memory.seen, due=view.memory.due,
                          missing=view.missing.keys(), spent=listing.requests if listing is not None else 0)
        view.memory.tell(len(names), budget, listing=listed is not None)
        result = _keyed(await client.fetch_all(_bare(plan.urgent, source)), source)
        requests, retries, throttled = _spent(client, before)
        return Fetched(result=result, names=names, watched=watched, at=now, discovery_error=discovery_error,
                       discovery_auth=discovery_auth, owners={key(j): o for j, o in client.owners.items()},
                       rest=plan.sweep, plan=plan, listed=listed, listed_ok=listing is not None, requests=requests,
                       retries=retries, throttled=throttled, started=now, source=source)

    async def fetch_more(self, wiring: Wiring, previous: Fetched) -> Fetched | None:
        """The I/O half of the cycle's next sweep round; None when the sweep share is all fetched."""
        if not previous.rest:
            return None
        source = previous.source
        client, rate = wiring.clients[source], wiring.rate(source)
        now = self.clock()
        elapsed = (now - previous.started).total_seconds() if previous.started is not None else 0.0
        size = round_fits(round_size(rate), rate, elapsed, wiring.config.interval)
        if size == 0:
            log.debug("sweep stopped at the cycle's deadline, %d jobs left for the next cycle source=%s",
                      len(previous.rest), source)
            return None
        batch, rest = previous.rest[:size], previous.rest[size:]
        before = _counts(client)
        result = _keyed(await client.fetch_all(_bare(batch, source)), source)
        requests, retries, throttled = _spent(client, before)
        return replace(previous, result=result, at=now, discovery_error=None, discovery_auth=False,
                       round=previous.round + 1, rest=rest, listed_ok=False, requests=requests, retries=retries,
                       throttled=throttled)

    def apply(self, wiring: Wiring, fetched: Fetched) -> CycleReport:
        """The synchronous half of a round of one source: plan, compose, commit, then adopt the new view.

        Every round of a cycle builds on the state before the cycle's first round for its
        streaks (source failures, missing jobs), so a cycle of many rounds counts once.
        The round judges its source's part of the view (``_Part``) and the global
        meta-alerts when its source owns them; the other sources' parts stay as they are.
        """
        runtime, result, now = wiring.runtime, fetched.result, fetched.at
        config = runtime.config
        source = fetched.source if fetched.source in config.sources else next(iter(config.sources))
        view, part = self.view(source), self._part(config, source)
        if fetched.round == 0 or view.start is None:
            view.start = _CycleStart(view.failures, view.failing_since, dict(view.missing))
        start = view.start
        start.judge(_source_verdict(fetched), fetched.discovery_error)
        start.errors.extend(result.errors)
        start.fine.update(s.name for s in result.snapshots)
        source_failed = start.verdict is True
        failures, failing_since = start.streak(now)
        missing = missing_streaks(start.missing, FetchResult((), tuple(start.errors)), now, fine=start.fine,
                                  watched=fetched.watched)
        health = Health(
            source_failures=Streak(failures, failing_since) if failing_since is not None else None,
            source_error=start.failure() if source_failed else None,
            auth_error=_auth_error(fetched, config.sources[source]), missing=missing, source=source,
            failing_channels=self._failing_channels(config, now) if part.global_meta else {},
        )
        budget = budget_of(config, wiring.rate(source))
        oldest: float | None = None  # the achieved sweep, measured when the cycle's last round is in
        if not fetched.rest:
            fine = {s.name for s in result.snapshots}
            oldest = view.memory.oldest([j for j in fetched.names if j not in fine], now)
        swept = (sweep_figures(oldest, fetched.plan, len(fetched.names), budget)
                 if oldest is not None and fetched.plan is not None and not source_failed else "")
        silences, acks = self.store.silences.current(now), self.store.silences.acks()
        mutes = (*silences, *config.maintenance)
        plan = plan_cycle(runtime.all_rules, part.entities, part.alerts, result, fetched.watched, now,
                          mutes=mutes, acked=acks.keys(), health=health,
                          meta_policy=config.meta, flaps=part.flaps, flap_policy=config.noise)
        for job in plan.forgotten:
            log.info("job no longer watched, forgetting its state job=%s", job)
        for alert in plan.notify:  # what was decided, one line each: the journal answers "did it fire?"
            event(log, logging.INFO, f"alert {alert.status}", rule=alert.rule,
                  source=alert.source if alert.source != DEFAULT_SOURCE else None, job=alert.job,
                  node=alert.node, severity=alert.severity, fingerprint=alert.fingerprint)
        facts = facts_of(config.sources)  # each source's facts travel with its alerts (Alertmanager labels)
        notify = tuple(with_source_labels(a, facts) for a in plan.notify)
        grouping = group_alerts(notify, config.channels, routed_channels(runtime))
        entities, alerts, flaps = part.merged(plan)
        syncs = alertmanager.sync(config, runtime.all_rules, self.alerts, alerts, entities, plan.notify,
                                  now, self.synced)  # Alertmanager channels are told the state, not the messages
        grouping = replace(grouping, groups=tuple(g for g in grouping.groups if g.channel not in syncs.channels))
        for channel, rule in grouping.unknown:
            log.warning("alert names an unknown channel, skipped channel=%s rule=%s", channel, rule)
        for alert in grouping.unrouted:
            log.error("no other channel to tell that a channel is failing: %s", alert.summary)
        threaded = threaded_channels(runtime)
        incidents = plan_incidents(grouping.groups, threaded, part.incidents, plan.alerts, runtime.all_rules,
                                   plan.entities, now, new_incident_id, previous=part.alerts, silences=silences,
                                   acks={fp: ack.author or "-" for fp, ack in acks.items()}, drawn=self.drawn)
        notifications = compose(runtime, (*grouping.groups, *(g for g, _ in incidents.edits)), now,
                                (*incidents.conversations, *(c for _, c in incidents.edits)), fetched.owners)
        if self.unwritable_since is not None:  # this commit is the first that can say it works again
            notifications += compose(runtime, self._state_groups(runtime, "", now, resolved=True), now)
        notifications += syncs.notifications
        try:
            self.store.commit_cycle(CycleWrite(
                at=now, upsert_entities=plan.upserts, delete_entities=plan.deletes,
                upsert_alerts=plan.alert_upserts, delete_alerts=plan.alert_deletes, notifications=notifications,
                meta={meta_key(SOURCE_FAILURES_KEY, source): str(failures),
                      meta_key(JOBS_MISSING_KEY, source): _streaks_json(missing),
                      meta_key(SOURCE_FAILING_SINCE_KEY, source):
                          None if failing_since is None else str(to_ms(failing_since)),
                      **({meta_key(FETCH_SWEEP_KEY, source): sweep_json(swept, now)}
                         if swept and swept != view.memory.swept else {})},
                upsert_flaps=plan.flap_upserts, delete_flaps=plan.flap_deletes,
                open_incidents=incidents.opened, close_incidents=incidents.closed,
            ))
        except StateError as exc:
            self._announce_unwritable(wiring, str(exc), now)
            raise
        # adopt only after the commit succeeded: a failed commit leaves memory == disk
        self.entities = entities  # immutable: adopted as is, no copy
        self.alerts, self.flaps = alerts, flaps
        view.failures, view.failing_since = failures, failing_since
        view.missing, self.unwritable_since = missing, None
        self.synced = syncs.synced
        for incident in incidents.closed:
            self.incidents.pop(incident.key, None)
        self.incidents.update((incident.key, incident) for incident in incidents.opened)
        self.drawn = {**{k: v for k, v in self.drawn.items() if k not in {i.id for i in incidents.closed}},
                      **incidents.drawn}
        view.memory.remember(result, now, fetched.listed, self.entities)
        view.memory.swept = swept or view.memory.swept
        if fetched.watched is not None and fetched.round == 0:
            view.memory.forget_others(fetched.watched)
        first = fetched.plan if fetched.round == 0 else None  # the plan's figures are the first round's
        return CycleReport(
            at=now, jobs=len(fetched.names), fetched=len(result.snapshots), errors=result.errors,
            transitions=len(plan.transitions), notifications=len(notifications),
            firing=sum(1 for a in plan.alerts.values() if a.phase == "firing"),
            source_failed=source_failed, discovery_error=fetched.discovery_error, source_failures=failures,
            requests=fetched.requests, retries=fetched.retries, throttled=fetched.throttled,
            urgent=len(first.urgent) if first else 0,
            swept=0 if fetched.round == 0 else len(result.snapshots) + len(result.errors),
            deferred=first.deferred if first else 0, sweep=oldest,
            sweep_target=fetched.plan.sweep_target if fetched.plan else None, source=source,
        )

    def _state_groups(self, runtime: Runtime, detail: str, now: datetime, *, resolved: bool
                      ) -> tuple[MessageGroup, ...]:
        rule = next(r for r in runtime.meta_rules if r.name == STATE_UNWRITABLE)
        alert = state_alert(rule, detail, self.unwritable_since or now, now, resolved=resolved)
        return group_alerts((alert,), runtime.config.channels).groups

    def _announce_unwritable(self, wiring: Wiring, error: str, now: datetime) -> None:
        """The state file refused the commit: tell every channel directly (the outbox is in that file), once."""
        if self.unwritable_since is not None:
            return
        self.unwritable_since = now
        log.error("state file not writable; alerting the channels directly: %s", error)
        for n in compose(wiring.runtime, self._state_groups(wiring.runtime, error, now, resolved=False), now):
            try:
                wiring.channels[n.channel].send(Notification(id=0, channel=n.channel, group=n.group,
                                                             payload=n.payload, created_at=now))
            except Exception as exc:  # noqa: BLE001 (one broken channel must not stop the others)
                log.error("could not tell channel %s that the state file is not writable: %s", n.channel, exc)


@dataclass(slots=True)
class _CycleStart:
    """The streaks as they were before a cycle's first round, and what its rounds have shown so far."""

    failures: int
    since: datetime | None
    missing: dict[str, Streak]
    verdict: bool | None = None  # True: the source failed this cycle; False: it answered; None: nothing asked yet
    discovery_error: str | None = None
    errors: list[FetchError] = field(default_factory=list)
    fine: set[str] = field(default_factory=set)  # jobs fetched fine this cycle

    def judge(self, verdict: bool | None, discovery_error: str | None) -> None:
        """A round's verdict: one failed round fails the cycle (counted once however many rounds it has)."""
        if discovery_error is not None:
            self.discovery_error = discovery_error
        if verdict is True or (verdict is False and self.verdict is None):
            self.verdict = verdict

    def streak(self, now: datetime) -> tuple[int, datetime | None]:
        """Cycles in a row the source failed, and since when: unchanged while this cycle has shown nothing."""
        if self.verdict is None:
            return self.failures, self.since
        if self.verdict:
            return self.failures + 1, self.since or now
        return 0, None

    def failure(self) -> str:
        return source_failure(self.discovery_error, self.errors)


@dataclass(frozen=True, slots=True)
class _Part:
    """One source's part of the remembered view, and the rest, which its round leaves as it is.

    A job key belongs to its source; a key of a source no longer configured belongs to the
    source that owns the global meta-alerts (``default`` when configured, else the first), so
    its state is forgotten like an unwatched job's. The global meta-alerts
    (``core.meta.GLOBAL_META``) and bare-named incidents go with that owner too. With one
    source the part is the whole view (no copy).
    """

    source: str
    global_meta: bool  # this source's rounds judge the global meta-alerts
    entities: EntitiesByJob
    alerts: Mapping[str, AlertState]
    flaps: Mapping[str, FlapState]
    incidents: Mapping[IncidentKey, Incident]
    rest: tuple[Mapping[str, Mapping[EntityKey, EntityState]], Mapping[str, AlertState], Mapping[str, FlapState]]

    @classmethod
    def of(cls, poller: Poller, config: Config, source: str, *, planning: bool = False) -> _Part:
        names = tuple(config.sources)
        owner_of_global = DEFAULT_SOURCE if DEFAULT_SOURCE in config.sources else names[0]
        entities_now, alerts_now = poller.entities, poller.alerts  # one consistent pair, even across a commit
        if len(names) == 1:
            if planning:
                return cls(source, True, entities_now, alerts_now, {}, {}, ({}, {}, {}))
            return cls(source, True, entities_now, alerts_now, poller.flaps, poller.incidents, ({}, {}, {}))

        def owner(key: str) -> str:
            of = source_of(key)
            return of if of in config.sources else owner_of_global

        def owns(rule: str, job: str) -> bool:
            return (owner_of_global if rule in GLOBAL_META else owner(job)) == source

        mine: dict[str, Mapping[EntityKey, EntityState]] = {}
        other: dict[str, Mapping[EntityKey, EntityState]] = {}
        for key, group in entities_now.groups.items():
            (mine if owner(key) == source else other)[key] = group
        alerts = {fp: a for fp, a in alerts_now.items() if owns(a.rule, a.job)}
        if planning:
            return cls(source, source == owner_of_global, EntitiesByJob(mine), alerts, {}, {}, ({}, {}, {}))
        flaps = {fp: f for fp, f in poller.flaps.items() if owns(f.rule, f.job)}
        return cls(source, source == owner_of_global, EntitiesByJob(mine), alerts, flaps,
                   {k: i for k, i in poller.incidents.items() if owner(k[2]) == source},
                   (other, {fp: a for fp, a in alerts_now.items() if fp not in alerts},
                    {fp: f for fp, f in poller.flaps.items() if fp not in flaps}))

    def merged(self, plan: CyclePlan) -> tuple[EntitiesByJob, dict[str, AlertState], dict[str, FlapState]]:
        """The whole view after this part's round: its new part beside the rest, untouched."""
        groups, alerts, flaps = self.rest
        if not groups and not alerts and not flaps:
            return plan.entities, dict(plan.alerts), dict(plan.flaps)
        return (EntitiesByJob({**groups, **plan.entities.groups}), {**alerts, **plan.alerts},
                {**flaps, **plan.flaps})


def _keyer(source: str) -> Callable[[str], str]:
    """Bare job name -> the job key of ``source`` (``job_key``); the identity for the default source."""
    if source == DEFAULT_SOURCE:
        return str
    return lambda job: job_key(source, job)


def _bare(keys: Sequence[str], source: str) -> tuple[str, ...]:
    """Job keys of ``source`` -> the names its API knows."""
    return tuple(keys) if source == DEFAULT_SOURCE else tuple(split_job_key(k)[1] for k in keys)


def _keyed(result: FetchResult, source: str) -> FetchResult:
    """The client's answer (bare names) in job keys: what the core judges."""
    if source == DEFAULT_SOURCE:
        return result
    return FetchResult(tuple(replace(s, name=job_key(source, s.name)) for s in result.snapshots),
                       tuple(replace(e, job=job_key(source, e.job)) for e in result.errors))


def _keyed_listing(listed: Mapping[str, Listed], names: Sequence[str], source: str) -> dict[str, Listed]:
    """The list answer for the watched jobs (``names``, job keys), keyed like them."""
    if source == DEFAULT_SOURCE:
        return {n: listed[n] for n in names if n in listed}
    out = {}
    for name in names:
        item = listed.get(split_job_key(name)[1])
        if item is not None:
            out[name] = item
    return out


def _source_verdict(fetched: Fetched) -> bool | None:
    """Whether this round shows the source failing (True), working (False), or nothing (None: nothing asked).

    The source failed when discovery failed, auth was refused, or jobs were asked and none
    could be fetched. "No such job" is the API answering correctly: a misspelt only job is
    notifier-job-missing, not an outage.
    """
    result = fetched.result
    if fetched.discovery_error is not None or any(e.kind == "auth" for e in result.errors):
        return True
    if any(e.kind != "not_found" for e in result.errors) and not result.snapshots:
        return True
    if result.snapshots or result.errors or fetched.listed_ok:
        return False
    return None


def _counts(client: DgcClient) -> tuple[int, int, int]:
    return client.stats.requests, client.stats.retries, client.stats.throttled


def _spent(client: DgcClient, before: tuple[int, int, int]) -> tuple[int, int, int]:
    """Requests, retries and throttled answers the client had since ``before`` (``_counts`` then)."""
    requests, retries, throttled = _counts(client)
    return requests - before[0], retries - before[1], throttled - before[2]


@dataclass(frozen=True, slots=True)
class _Running:
    """A source's cycle while it runs: a late one outlives the cycle that started it."""

    task: asyncio.Task[CycleReport | None]
    wiring: Wiring  # what it polls and commits with: a reload closes that wiring only once it ended
    since: float  # time.monotonic() at its start
    abandon: asyncio.Event  # set: its running fetch is dropped and nothing more of it is committed

    def progress(self, source: str) -> float:
        """time.monotonic() of its last progress: its start, or the end of a request of its source."""
        return max(self.since, self.wiring.clients[source].stats.last_answer)


async def _until_done(tasks: Sequence[asyncio.Task[Any]], enough: asyncio.Event | None) -> None:
    """Wait for every task; but once ``enough`` is set, only until at least one of them is done."""
    every = asyncio.ensure_future(asyncio.wait(tasks))
    waits = {every} if enough is None else {every, asyncio.ensure_future(enough.wait())}
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if not any(task.done() for task in tasks):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()  # the waits, never the tasks


async def _unless(stops: Sequence[asyncio.Event], fetch: Coroutine[Any, Any, Fetched | None]) -> Fetched | None:
    """``fetch``'s result, or None when one of ``stops`` is set first (the fetch is then cancelled: nothing of it
    was written)."""
    task = asyncio.ensure_future(fetch)
    stopping = [asyncio.ensure_future(stop.wait()) for stop in stops]
    try:
        await asyncio.wait({task, *stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in stopping:
            waiting.cancel()
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        log.info("the running fetch was abandoned (nothing of it was committed)")
        return None
    return task.result()


def _app_tokens(config: Config) -> dict[str, tuple[str | None, str | None]]:
    """Where each Slack channel's app token comes from: the Socket Mode listeners start with the service."""
    return {name: (ch.settings.app_token_env, ch.settings.app_token_file)
            for name, ch in config.channels.items() if ch.type == "slack"}


def _streaks_json(streaks: dict[str, Streak]) -> str:
    return json.dumps({job: [s.cycles, to_ms(s.since)] for job, s in sorted(streaks.items())})


def source_failure(discovery_error: str | None, errors: Sequence[FetchError]) -> str:
    """Why a cycle could not read the source: the discovery error, else the first job's (and how many more)."""
    if discovery_error is not None:
        return f"job discovery failed: {discovery_error}"
    if not errors:
        return "no job could be fetched"
    return errors[0].message + (f" (and {len(errors) - 1} more jobs)" if len(errors) > 1 else "")


def _auth_error(fetched: Fetched, source: SourceConfig) -> str | None:
    """This cycle's auth refusal and where the credentials came from (names only, never values)."""
    refused = next((e.message for e in fetched.result.errors if e.kind == "auth"), None)
    if refused is None and fetched.discovery_auth:
        refused = fetched.discovery_error
    if refused is None:
        return None
    return f"{refused}; {describe_auth(source)}"


def describe_auth(source: SourceConfig) -> str:
    """``auth = aksk: AK from environment variable HUAWEICLOUD_SDK_AK, SK from file /run/...``."""
    def where(env: str, file: str | None) -> str:
        return f"file {file}" if file else f"environment variable {env}"
    if source.auth == "aksk":
        return (f"auth = aksk: AK from {where(source.ak_env, source.ak_file)}, "
                f"SK from {where(source.sk_env, source.sk_file)}")
    if source.auth == "token":
        return f"auth = token: token from {where(source.token_env, source.token_file)}"
    if source.auth == "iam":
        return (f"auth = iam: IAM {source.iam_endpoint}, user from "
                f"{where(source.iam_user_env, source.iam_user_file)}, password from "
                f"{where(source.iam_password_env, source.iam_password_file)}, domain {source.iam_domain!r}")
    return "auth = none: the endpoint wants credentials (set [source] auth)"


class App:
    """One process's notifier: lock, state store, wiring, poller and deliverer, built from a config path.

    Open it with ``App.open`` inside the event loop it will run on (the DGC client's
    connections belong to it) and close it with ``aclose``. A reload is ``load`` (build a
    new ``Wiring``), ``adopt`` (swap it in whole) and ``retire`` (close the old one).
    """

    def __init__(self, config_path: Path, wiring: Wiring, lock: ProcessLock, store: StateStore,
                 clock: Clock) -> None:
        """Use ``App.open``; this only holds parts that are already open."""
        self.config_path = config_path
        self.clock = clock
        self.wiring = wiring
        self.lock = lock
        self.store = store
        self.poller = Poller(store, clock, first=next(iter(wiring.config.sources)))
        self._applying = asyncio.Lock()  # rounds of several sources commit one at a time
        self._running: dict[str, _Running] = {}  # source -> its cycle, while it runs
        self.deliverer = Deliverer(store.outbox, wiring.channels, wiring.config.delivery, clock=clock,
                                   threads=store.threads)

    @classmethod
    async def open(cls, config_path: Path, *, runtime: Runtime | None = None, clock: Clock = utcnow) -> App:
        """Load, build and open everything; on any failure nothing stays open or locked.

        Channels come first: a missing secret is a config error (exit 2) before the state
        file or its lock is touched.
        """
        config_path = Path(config_path)
        runtime = runtime if runtime is not None else load_runtime(config_path)
        async with AsyncExitStack() as undo:
            wiring = Wiring.build(runtime, clock=clock)
            undo.push_async_callback(wiring.aclose)
            lock = ProcessLock(runtime.config.state_path).acquire()
            undo.callback(lock.release)
            store = StateStore.open(runtime.config.state_path)
            undo.callback(store.close)
            app = cls(config_path, wiring, lock, store, clock)
            undo.pop_all()
        return app

    @property
    def runtime(self) -> Runtime:
        return self.wiring.runtime

    async def cycle(self, *, in_thread: bool = False) -> CycleReport:
        """One poll cycle, all its rounds (``notifier once``, the demo, the tests)."""
        report = await self.cycle_until(None, in_thread=in_thread)
        assert report is not None  # without a stop event the first round always completes
        return report

    async def cycle_until(self, stop: asyncio.Event | None, *, in_thread: bool = False,
                          on_round: Callable[[CycleReport], None] | None = None,
                          enough: asyncio.Event | None = None) -> CycleReport | None:
        """One poll cycle: each source's first round (list, urgent jobs), then its sweep rounds; one report.

        ``in_thread`` runs each round's synchronous half off the event loop (the daemon).
        ``stop`` (set by a shutdown) abandons the fetch of the running round: nothing of it
        is written, the rounds before it are committed, and the cycle ends there (None when
        the first round is abandoned). ``on_round`` hears each round's report after its
        commit, so the daemon delivers the urgent round's alerts while the sweep goes on.

        ``enough`` (the daemon sets it at the interval) ends the cycle with the sources done
        so far: a source still polling (a slow or unreachable endpoint) goes on alone, is not
        started again while it runs, and its report joins the cycle in which it ends. So one
        source's slowness never stretches another's interval. Without it, every source ends.
        """
        started = time.monotonic()  # the duration is for people, not for decisions: the real clock
        wiring = self.wiring  # one consistent wiring for each source's cycle, even across a reload
        self.poller.first = next(iter(wiring.config.sources))
        ended = [self._running.pop(name) for name, r in list(self._running.items()) if r.task.done()]
        for name in wiring.config.sources:
            # every source's rounds run side by side: a source that times out or refuses the
            # credentials never holds back another's alerts (each round commits on its own)
            late = self._running.get(name)
            if late is not None:
                event(log, logging.WARNING, "the source's previous cycle is still running, not starting another",
                      source=name, running_s=round(time.monotonic() - late.since))
                continue
            abandon = asyncio.Event()
            task = asyncio.ensure_future(self._source_cycle(stop, abandon, wiring, name, in_thread=in_thread,
                                                            on_round=on_round))
            self._running[name] = _Running(task, wiring, time.monotonic(), abandon)
        await _until_done([r.task for r in self._running.values()], enough)
        ended += [self._running.pop(name) for name, r in list(self._running.items()) if r.task.done()]
        for name, run in self._running.items():
            event(log, logging.DEBUG, "the source is still polling at the cycle's deadline; the others go on",
                  source=name, running_s=round(time.monotonic() - run.since))
        outcomes = [r.task for r in ended if not r.task.cancelled()]
        errors = [e for e in (t.exception() for t in outcomes) if e is not None]  # each one retrieved
        if errors:  # a commit that failed fails the cycle
            raise errors[0]
        order = {name: i for i, name in enumerate(wiring.config.sources)}
        done = sorted((r for r in (t.result() for t in outcomes) if r is not None),
                      key=lambda r: order.get(r.source, len(order)))
        if not done:
            return None
        report = CycleReport.combine(done)
        report.log(duration_ms=round((time.monotonic() - started) * 1000), late=list(self._running))
        return report

    def late_progress(self) -> dict[str, float]:
        """Each source whose cycle runs now -> time.monotonic() of its last progress (the watchdog's view)."""
        return {name: r.progress(name) for name, r in self._running.items() if not r.task.done()}

    async def settle(self, wiring: Wiring | None = None) -> None:
        """Abandon the fetches of the source cycles still running (of ``wiring`` only, when given) and wait for them.

        A round being committed finishes; nothing more of them is committed. A reload calls
        it for the replaced wiring (its late cycles would commit with the old rules and
        channels, and an alert of a source the reload removed would fire again); a shutdown
        and ``aclose`` for all.
        """
        running = [r for r in self._running.values() if wiring is None or r.wiring is wiring]
        for run in running:
            run.abandon.set()
        if running:
            await asyncio.wait([r.task for r in running])

    async def _source_cycle(self, stop: asyncio.Event | None, abandon: asyncio.Event, wiring: Wiring, source: str,
                            *, in_thread: bool, on_round: Callable[[CycleReport], None] | None) -> CycleReport | None:
        """One source's rounds of a cycle (see ``cycle_until``); None when its first round was abandoned.

        ``stop`` and ``abandon`` both drop the running fetch; once ``abandon`` is set, a fetch
        that had ended is not committed either (a reload: the wiring it used is replaced).
        """
        stops = (abandon,) if stop is None else (stop, abandon)
        report: CycleReport | None = None
        fetched: Fetched | None = await _unless(stops, self.poller.fetch(wiring, source))
        while fetched is not None and not abandon.is_set():
            # the next round's requests go out while this one commits: the limiter spaces
            # requests evenly and never wins back idle time, so a cycle's commits would
            # otherwise add up to a late cycle (rounds are independent: the plan made them)
            ahead = asyncio.ensure_future(self._next_round(stops, wiring, fetched))
            try:
                done = await self._apply(wiring, fetched, in_thread=in_thread)
            except BaseException:
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)
                raise
            report = done if report is None else report.then(done)
            if on_round is not None:
                on_round(done)
            fetched = await ahead
        return report

    async def _next_round(self, stops: Sequence[asyncio.Event], wiring: Wiring, previous: Fetched
                          ) -> Fetched | None:
        # the fetch coroutine is made here, inside the task: a task cancelled before it starts leaves none unawaited
        return await _unless(stops, self.poller.fetch_more(wiring, previous))

    async def _apply(self, wiring: Wiring, fetched: Fetched, *, in_thread: bool) -> CycleReport:
        """A round's synchronous half: plan, render, one commit; never cancelled half way.

        One round at a time, whatever its source: they share the remembered view and the state file.
        """
        async with self._applying:
            if in_thread:
                return await asyncio.to_thread(self.poller.apply, wiring, fetched)
            return self.poller.apply(wiring, fetched)

    def deliver(self) -> DeliveryReport:
        """One delivery round over every due outbox row."""
        return self.deliverer.deliver_due()

    def load(self) -> Wiring:
        """Load and build a new wiring from the config path (blocking); NotifierError if anything is invalid."""
        return Wiring.build(load_runtime(self.config_path), clock=self.clock)

    def adopt(self, wiring: Wiring) -> Wiring:
        """Use ``wiring`` from the next cycle and delivery round on; return the old one for ``retire``."""
        new, running = wiring.config, self.runtime.config
        for what, changed in (("state path", new.state_path != running.state_path),
                              ("[schedule] interval", new.interval != running.interval),
                              ("[metrics] listen", new.metrics != running.metrics),
                              ("a Slack app token (buttons)", _app_tokens(new) != _app_tokens(running))):
            if changed:
                log.warning("%s changed; it takes effect after a restart (systemctl restart notifier)", what)
        old, self.wiring = self.wiring, wiring
        for name, run in self._running.items():  # a late cycle never commits with the replaced rules and channels
            if run.wiring is old and not run.task.done():
                event(log, logging.INFO, "reload: the source's late cycle is abandoned, the next starts anew",
                      source=name)
                run.abandon.set()
        self.deliverer.use_channels(wiring.channels)
        return old

    async def retire(self, old: Wiring) -> None:
        """Close a replaced wiring once no source cycle (abandoned) and no delivery round uses it any more."""
        await self.settle(old)
        await asyncio.to_thread(self.deliverer.wait_idle)
        await old.aclose()

    async def aclose(self) -> None:
        """Close the wiring, the store and the lock (in that order), once no source cycle runs (``settle``)."""
        await self.settle()
        for run in self._running.values():  # retrieved: their reports and errors go with the process
            if not run.task.cancelled():
                run.task.exception()
        self._running.clear()
        try:
            await self.wiring.aclose()
        finally:
            self.store.close()
            self.lock.release()
