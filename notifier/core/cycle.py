"""One poll cycle's decisions, with no I/O: diff, evaluate, advance, group.

``plan_cycle`` takes what was remembered and what the source answered and returns
everything the shell must write and send; ``group_alerts`` turns the alerts to send
into one message per channel, job and template. ``notifier.app.Poller`` is the shell
around both: fetch, plan, render, commit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from notifier.core.diff import diff_job
from notifier.core.flap import DEFAULT_FLAP, FlapPolicy, FlapState, damp
from notifier.core.inhibit import inhibition_filter
from notifier.core.lifecycle import advance, firing_alert, resolved_alert
from notifier.core.meta import CHANNEL_FAILING, DEFAULT_META, META_RULES, Health, MetaPolicy, meta_conditions
from notifier.core.models import (
    Alert,
    AlertState,
    EntitiesByJob,
    EntityKey,
    EntityState,
    FetchResult,
    MessageGroup,
    Rule,
    Transition,
)
from notifier.core.mutes import Mute, chain, mute_filter
from notifier.core.rules import evaluate


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
    forgotten: tuple[str, ...] = ()  # jobs no longer watched, whose state was dropped
    flaps: Mapping[str, FlapState] = field(default_factory=dict)  # the complete new set
    flap_upserts: tuple[FlapState, ...] = ()
    flap_deletes: tuple[str, ...] = ()


def plan_cycle(rules: Sequence[Rule], entities: Mapping[EntityKey, EntityState],
               alerts: Mapping[str, AlertState], result: FetchResult, watched: Collection[str] | None,
               now: datetime, *, mutes: Sequence[Mute] = (), acked: Collection[str] = (),
               health: Health | None = None, meta_policy: MetaPolicy = DEFAULT_META,
               flaps: Mapping[str, FlapState] | None = None, flap_policy: FlapPolicy = DEFAULT_FLAP) -> CyclePlan:
    """Diff, evaluate and advance the lifecycle for one cycle.

    ``mutes`` (silences, maintenance windows) and inhibition decide what is sent, never
    what is tracked; ``acked`` fingerprints send no repeats. ``health`` (what the shell
    measured about notifier itself) adds the meta-alerts; their rules must be in ``rules``
    (``core.meta.meta_rules``) and are judged every cycle, whatever job they name.
    ``flaps`` (the remembered flap states; None turns damping off) hold back the
    messages of alerts that keep coming and going (``core.flap``).

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

    forgotten: list[str] = []
    if watched is not None:
        failed = {e.job for e in result.errors}
        for job in sorted(set(old.groups) - set(watched) - evaluated - failed):
            forgotten.append(job)
            evaluated.add(job)
            deletes.extend(groups.pop(job))

    new_entities = EntitiesByJob(groups)
    unevaluated = groups.keys() - evaluated
    current = new_entities if not unevaluated else EntitiesByJob({j: g for j, g in groups.items() if j in evaluated})
    conditions, events = evaluate(rules, current, transitions, now)
    judged: Mapping[EntityKey, EntityState] = current
    always: tuple[str, ...] = ()
    if health is not None:
        meta = meta_conditions(health, meta_policy, now, {a.rule for a in alerts.values() if a.rule in META_RULES})
        conditions, judged, always = (*conditions, *meta.conditions), _Overlay(meta.entities, current), META_RULES
    notify_filter = chain(inhibition_filter(rules), mute_filter(mutes))
    outcome = advance(rules, conditions, events, alerts, judged, evaluated, now, notify_filter=notify_filter,
                      acked=acked, always_judged=always)
    notify, new_flaps = outcome.notify, dict(flaps or {})
    if flaps is not None:
        by_name = {rule.name: rule for rule in rules}
        damped = damp(outcome.notify, alerts, outcome.states, flaps,
                      lambda rule, job: job in evaluated or rule in always, flap_policy, now,
                      lambda flap, state: _settle(by_name, flap, state, judged, now))
        notify, new_flaps = notify_filter(damped.notify, outcome.states, now), dict(damped.flaps)
    states = _unsent(outcome.states, alerts, notify, now)
    alert_upserts = tuple(s for fp, s in states.items() if alerts.get(fp) != s)
    alert_deletes = tuple(fp for fp in alerts if fp not in states)
    old_flaps = flaps or {}
    return CyclePlan(
        entities=new_entities, upserts=tuple(upserts), deletes=tuple(deletes), transitions=tuple(transitions),
        alerts=states, alert_upserts=alert_upserts, alert_deletes=alert_deletes, notify=notify,
        forgotten=tuple(forgotten), flaps=new_flaps,
        flap_upserts=tuple(f for fp, f in new_flaps.items() if old_flaps.get(fp) != f),
        flap_deletes=tuple(fp for fp in old_flaps if fp not in new_flaps),
    )


def _unsent(states: Mapping[str, AlertState], previous: Mapping[str, AlertState], notify: Sequence[Alert],
            now: datetime) -> Mapping[str, AlertState]:
    """Undo "notified now" for firing alerts that damping or a mute held back after ``advance``.

    ``advance`` records a firing alert as sent when its notify filter keeps it; flap damping
    (and the mutes re-applied to its output) may still drop it. Such an alert must stay
    unsent, so it is offered again and goes out when it settles or the mute ends.
    """
    sent = {a.fingerprint for a in notify if a.status == "firing"}
    fixed = dict(states)
    for fp, state in states.items():
        if state.phase == "firing" and state.last_notified_at == now and fp not in sent:
            before = previous.get(fp)
            fixed[fp] = replace(state, last_notified_at=before.last_notified_at if before else None,
                                notified=before.notified if before else 0)
    return fixed


def _settle(rules: Mapping[str, Rule], flap: FlapState, state: AlertState | None,
            entities: Mapping[EntityKey, EntityState], now: datetime) -> Alert | None:
    """The message for an alert that stopped flapping: firing as it is now, else resolved."""
    rule = rules.get(flap.rule)
    if rule is None:
        return None
    if state is not None and state.phase == "firing":
        return firing_alert(rule, state, entities.get((state.job, state.node)), entities, now, reminder=False)
    if not rule.resolved:
        return None
    gone = AlertState(fingerprint=flap.fingerprint, rule=flap.rule, job=flap.job, node=flap.node, phase="firing",
                      active_since=flap.flapping_since or now)
    return resolved_alert(rule, gone, entities, now)


class _Overlay(Mapping[EntityKey, EntityState]):
    """The meta-alerts' entities over the real ones, without copying 110,000 of them."""

    def __init__(self, top: Mapping[EntityKey, EntityState], base: Mapping[EntityKey, EntityState]) -> None:
        self._top, self._base = top, base

    def __getitem__(self, key: EntityKey) -> EntityState:
        return self._top[key] if key in self._top else self._base[key]

    def __iter__(self) -> Iterator[EntityKey]:
        yield from self._top
        yield from (k for k in self._base if k not in self._top)

    def __len__(self) -> int:
        return len(self._top) + sum(1 for k in self._base if k not in self._top)


@dataclass(frozen=True, slots=True)
class Grouping:
    """The messages to render; (channel, rule) pairs naming a channel nobody configured; alerts with nowhere to go."""

    groups: tuple[MessageGroup, ...]
    unknown: tuple[tuple[str, str], ...] = ()
    unrouted: tuple[Alert, ...] = ()


def group_alerts(alerts: Sequence[Alert], channels: Collection[str], routed: Collection[str] | None = None) -> Grouping:
    """One message per channel, route, job and template: alerts of one job in one cycle go out together.

    A job is a job of one source (``Alert.key``): two sources' jobs of one name are two messages.

    A rule's route (``slack_channel``) splits messages only on ``routed`` channels (None: all);
    elsewhere it means nothing, and the job's alerts stay one message.
    """
    groups: dict[tuple[str, str | None, str, str], list[Alert]] = defaultdict(list)
    unknown: dict[tuple[str, str], None] = {}
    unrouted: list[Alert] = []
    for alert in alerts:
        targets = alert.channels
        if alert.rule == CHANNEL_FAILING:  # a failing channel hears about itself from the others, any others
            targets = (tuple(c for c in targets if c != alert.node)
                       or tuple(c for c in channels if c != alert.node))
            if not targets:
                unrouted.append(alert)
        for channel in targets:
            if channel not in channels:
                unknown[(channel, alert.rule)] = None
                continue
            route = alert.route if routed is None or channel in routed else None
            groups[(channel, route, alert.key, alert.template)].append(alert)
    return Grouping(
        groups=tuple(MessageGroup(channel=c, group=j, alerts=tuple(a), template=t, route=r)
                     for (c, r, j, t), a in groups.items()),
        unknown=tuple(unknown), unrouted=tuple(unrouted),
    )
