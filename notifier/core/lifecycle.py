"""The alert lifecycle of Prometheus/Alertmanager: inactive -> pending -> firing -> resolved.

``advance`` is a pure step from one cycle's alert states to the next, given which rule
conditions hold now and which events happened. It decides what must be *sent*:

- a condition that has held for the rule's ``for`` fires once (first run included: a
  node already in EXCEPTION is news), then is quiet until ``repeat`` has passed;
- a firing alert whose condition stopped holding is resolved once (if the rule says
  ``resolved = true``); a pending one just disappears;
- a job whose fetch failed this cycle is not in ``evaluated_jobs``: its alerts are kept
  exactly as they were, since "no data" is not "recovered";
- an event (transition rule) is sent once and leaves no state.

Clocks come from the persisted entity states (``Condition.active_since``) and the
persisted alert states, so a restart neither resets a ``for`` timer nor re-sends an
alert.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TypedDict

from notifier.core import summary
from notifier.core.models import (
    Alert,
    AlertState,
    Condition,
    EntityKey,
    EntityState,
    Event,
    Rule,
    fingerprint,
    source_of,
    split_job_key,
)

NotifyFilter = Callable[[tuple[Alert, ...], Mapping[str, AlertState], datetime], tuple[Alert, ...]]
"""Decides which candidate alerts are actually sent: returns a subset of the *same* objects, in order."""


def send_all(alerts: tuple[Alert, ...], states: Mapping[str, AlertState], now: datetime) -> tuple[Alert, ...]:
    """The default notify filter: keep everything (``core.inhibit`` provides the one the cycle uses).

    A filter sees every candidate of the cycle at once (firing, reminders, resolved,
    events) together with the complete new alert states, so an inhibition can look for
    a firing job-scope alert of the same job, and a silence can match rule/job/node.
    ``advance`` records ``last_notified_at`` only for firing alerts the filter kept: a
    muted alert is offered again every cycle and goes out as soon as the mute ends, and a
    firing alert that was never sent is never "resolved" either (Alertmanager's rule).
    """
    return alerts


@dataclass(frozen=True, slots=True)
class LifecycleResult:
    """The outcome of one cycle: the alert states to persist and the alerts to send."""

    states: Mapping[str, AlertState]  # the complete new set of alert states, by fingerprint
    notify: tuple[Alert, ...]  # what must be sent now (firing, reminders, resolved, events)


def advance(rules: Sequence[Rule], conditions: Sequence[Condition], events: Sequence[Event],
            previous: Mapping[str, AlertState], entities: Mapping[EntityKey, EntityState],
            evaluated_jobs: Collection[str], now: datetime, *,
            notify_filter: NotifyFilter = send_all, acked: Collection[str] = (),
            always_judged: Collection[str] = ()) -> LifecycleResult:
    """Advance every alert by one cycle.

    ``previous`` is the persisted alert states; ``entities`` the current entity states
    (used for the facts an alert shows); ``evaluated_jobs`` the jobs whose status was
    fetched this cycle: only their alerts may change. A state whose rule no longer
    exists is dropped silently. Unchanged states come back equal (==) to the previous
    ones, so the store can write only what changed. ``acked`` fingerprints (acknowledged
    by a person) send no more repeats; their resolve is still sent.
    """
    by_name = {rule.name: rule for rule in rules}
    evaluated = frozenset(evaluated_jobs)
    states: dict[str, AlertState] = {}
    candidates: list[Alert] = []
    due: dict[int, str] = {}  # id(alert) -> fingerprint, for firing alerts that update last_notified_at

    held: set[str] = set()
    for cond in conditions:
        rule = by_name.get(cond.rule)
        if rule is None or rule.is_event or (cond.job not in evaluated and rule.name not in always_judged):
            continue
        fp = fingerprint(cond.rule, cond.job, cond.node)
        if fp in held:
            continue  # the same condition reported twice: judge it once
        held.add(fp)
        state, alert = _step_condition(rule, cond, fp, previous.get(fp), entities, now, acked=fp in acked)
        states[fp] = state
        if alert is not None:
            candidates.append(alert)
            due[id(alert)] = fp

    for fp, old in previous.items():
        if fp in held:
            continue
        rule = by_name.get(old.rule)
        if rule is None or rule.is_event:
            continue  # rule removed (or turned into an event rule) on reload: nothing left to resolve
        if old.job not in evaluated and rule.name not in always_judged:
            states[fp] = old  # no fresh data for this job: keep the alert exactly as it was
            continue
        if old.phase == "firing" and rule.resolved and old.last_notified_at is not None:
            candidates.append(resolved_alert(rule, old, entities, now))

    for ev in events:
        rule = by_name.get(ev.rule)
        if rule is not None and rule.is_event:
            candidates.append(_event_alert(rule, ev, entities))

    candidates.sort(key=_order)
    sent = notify_filter(tuple(candidates), states, now)
    for alert in sent:
        due_fp = due.get(id(alert))
        if due_fp is not None:
            states[due_fp] = replace(states[due_fp], last_notified_at=now, notified=states[due_fp].notified + 1)
    return LifecycleResult(states=states, notify=tuple(sent))


def _order(alert: Alert) -> tuple[str, str, str, bool, str]:
    return (alert.key, alert.node or "", alert.rule, alert.event, alert.status)


def _step_condition(rule: Rule, cond: Condition, fp: str, old: AlertState | None,
                    entities: Mapping[EntityKey, EntityState], now: datetime, *,
                    acked: bool = False) -> tuple[AlertState, Alert | None]:
    """One holding condition: stay pending, fire, remind, or stay quiet.

    The returned state carries the *previous* ``last_notified_at``; ``advance`` sets it
    to ``now`` once the alert survives the notify filter.
    """
    entity = entities.get((cond.job, cond.node))
    facts = _facts(entity, old)
    if old is not None and old.phase == "firing":
        state = replace(old, **facts)
        last = old.last_notified_at
        if last is None or (not acked and rule.repeat > 0 and (now - last).total_seconds() >= rule.repeat):
            return state, firing_alert(rule, state, entity, entities, now, reminder=last is not None,
                                        detail=cond.detail)
        return state, None

    # a pending alert keeps the time it became active, like Prometheus' activeAt
    active_since = old.active_since if old is not None else cond.active_since
    if (now - active_since).total_seconds() >= rule.for_:
        state = AlertState(fingerprint=fp, rule=rule.name, job=cond.job, node=cond.node, phase="firing",
                           active_since=active_since, fired_at=now, last_notified_at=None, **facts)
        return state, firing_alert(rule, state, entity, entities, now, reminder=False, detail=cond.detail)
    state = AlertState(fingerprint=fp, rule=rule.name, job=cond.job, node=cond.node, phase="pending",
                       active_since=active_since, **facts)
    return state, None


class _Facts(TypedDict, total=False):
    """The last known facts an alert state keeps (the ``AlertState`` fields of the same names)."""

    state: str
    node_type: str
    log_path: str | None


def _facts(entity: EntityState | None, old: AlertState | None) -> _Facts:
    """The last known facts an alert state keeps for a resolved message about a vanished node."""
    if entity is not None:
        return {"state": entity.status, "node_type": entity.node_type, "log_path": entity.log_path}
    if old is not None:
        return {"state": old.state, "node_type": old.node_type, "log_path": old.log_path}
    return {}


def _job_status(entities: Mapping[EntityKey, EntityState], job: str) -> str | None:
    entity = entities.get((job, ""))
    return entity.status if entity is not None else None


def firing_alert(rule: Rule, state: AlertState, entity: EntityState | None,
                  entities: Mapping[EntityKey, EntityState], now: datetime, *, reminder: bool,
                  detail: str = "") -> Alert:
    subject = state.node or state.job
    if entity is None:  # the caller passed a condition without its entity: say what the state knows
        entity = EntityState(job=state.job, node=state.node, status=state.state, since=state.active_since,
                             node_type=state.node_type, log_path=state.log_path)
    text = summary.firing(rule, subject=subject, entity=entity, active_since=state.active_since, now=now,
                          reminder=reminder)
    if rule.summary:
        text = summary.custom(rule.summary, summary.fields(
            rule, job=state.job, node=state.node, node_type=entity.node_type, state=entity.status,
            previous_state=entity.previous_status, duration=(now - state.active_since).total_seconds(),
            detail=detail)) or text
    return Alert(
        status="firing", rule=rule.name, severity=rule.severity, fingerprint=state.fingerprint,
        source=source_of(state.job), job=split_job_key(state.job)[1], node=state.node or None,
        node_type=entity.node_type if state.node else None,
        state=entity.status, previous_state=entity.previous_status, since=entity.since,
        starts_at=state.active_since, log_path=entity.log_path, summary=text,
        job_status=_job_status(entities, state.job), counters=dict(entity.counters),
        template=rule.template, channels=rule.channels, route=rule.slack_channel,
        mentions=rule.mention, sent_before=state.notified, labels=dict(rule.labels),
    )


def resolved_alert(rule: Rule, old: AlertState, entities: Mapping[EntityKey, EntityState], now: datetime) -> Alert:
    entity = entities.get((old.job, old.node))
    text = summary.resolved(rule, subject=old.node or old.job, entity=entity, last_state=old.state,
                            active_since=old.active_since, now=now)
    if rule.resolved_summary:
        text = summary.custom(rule.resolved_summary, summary.fields(
            rule, job=old.job, node=old.node, node_type=old.node_type, state=old.state, previous_state=None,
            duration=(now - old.active_since).total_seconds())) or text
    counters: Mapping[str, int]
    if entity is None and rule.resolved_summary:  # a built-in meta-alert: its trouble is over
        state, previous_state, since, node_type, log_path, counters = (
            "OK", old.state, old.active_since, old.node_type, old.log_path, {})
    elif entity is None:  # the node (or job) is gone: report the last facts we had
        state, previous_state, since, node_type, log_path, counters = (
            old.state, None, old.active_since, old.node_type, old.log_path, {})
    else:
        state, previous_state, since, node_type, log_path, counters = (
            entity.status, entity.previous_status, entity.since, entity.node_type, entity.log_path,
            dict(entity.counters))
    return Alert(
        status="resolved", rule=rule.name, severity=rule.severity, fingerprint=old.fingerprint,
        source=source_of(old.job), job=split_job_key(old.job)[1], node=old.node or None,
        node_type=node_type if old.node else None, state=state, previous_state=previous_state, since=since,
        starts_at=old.active_since, ends_at=now,
        log_path=log_path, summary=text, job_status=_job_status(entities, old.job), counters=counters,
        template=rule.template, channels=rule.channels, route=rule.slack_channel,
        mentions=rule.mention, labels=dict(rule.labels),
    )


def _event_alert(rule: Rule, ev: Event, entities: Mapping[EntityKey, EntityState]) -> Alert:
    t = ev.transition
    entity = entities.get((t.job, t.node))
    current = entity if entity is not None and entity.status == t.to_status else None
    text = summary.event(t)
    if rule.summary:
        text = summary.custom(rule.summary, summary.fields(
            rule, job=t.job, node=t.node, node_type=t.node_type, state=t.to_status,
            previous_state=t.from_status, duration=0.0)) or text
    return Alert(
        status="firing", rule=rule.name, severity=rule.severity, fingerprint=fingerprint(rule.name, t.job, t.node),
        source=source_of(t.job), job=split_job_key(t.job)[1], node=t.node or None,
        node_type=t.node_type if t.node else None, state=t.to_status, previous_state=t.from_status,
        since=current.since if current is not None else t.at, starts_at=t.at,
        log_path=entity.log_path if entity is not None else None, summary=text,
        job_status=_job_status(entities, t.job), counters=dict(entity.counters) if entity is not None else {},
        event=True, template=rule.template, channels=rule.channels, route=rule.slack_channel,
        mentions=rule.mention, labels=dict(rule.labels),
    )
