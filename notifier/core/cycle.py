"""One poll cycle's decisions, with no I/O: diff, evaluate, advance, group.

``plan_cycle`` takes what was remembered and what the source answered and returns
everything the shell must write and send; ``group_alerts`` turns the alerts to send
into one message per channel, job and template. ``notifier.app.Cycle`` is the shell
around both: fetch, plan, render, commit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from notifier.core.diff import diff_job
from notifier.core.inhibit import inhibition_filter
from notifier.core.lifecycle import advance
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


def plan_cycle(rules: Sequence[Rule], entities: Mapping[EntityKey, EntityState],
               alerts: Mapping[str, AlertState], result: FetchResult, watched: Collection[str] | None,
               now: datetime) -> CyclePlan:
    """Diff, evaluate and advance the lifecycle for one cycle.

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
    outcome = advance(rules, conditions, events, alerts, current, evaluated, now,
                      notify_filter=inhibition_filter(rules))
    alert_upserts = tuple(s for fp, s in outcome.states.items() if alerts.get(fp) != s)
    alert_deletes = tuple(fp for fp in alerts if fp not in outcome.states)
    return CyclePlan(
        entities=new_entities, upserts=tuple(upserts), deletes=tuple(deletes), transitions=tuple(transitions),
        alerts=outcome.states, alert_upserts=alert_upserts, alert_deletes=alert_deletes, notify=outcome.notify,
        forgotten=tuple(forgotten),
    )


@dataclass(frozen=True, slots=True)
class Grouping:
    """The messages to render, and the (channel, rule) pairs that named a channel nobody configured."""

    groups: tuple[MessageGroup, ...]
    unknown: tuple[tuple[str, str], ...] = ()


def group_alerts(alerts: Sequence[Alert], channels: Collection[str]) -> Grouping:
    """One message per channel, job and template: alerts of one job in one cycle go out together."""
    groups: dict[tuple[str, str, str], list[Alert]] = defaultdict(list)
    unknown: dict[tuple[str, str], None] = {}
    for alert in alerts:
        for channel in alert.channels:
            if channel not in channels:
                unknown[(channel, alert.rule)] = None
                continue
            groups[(channel, alert.job, alert.template)].append(alert)
    return Grouping(
        groups=tuple(MessageGroup(channel=c, group=j, alerts=tuple(a), template=t) for (c, j, t), a in groups.items()),
        unknown=tuple(unknown),
    )
