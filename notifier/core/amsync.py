"""What one Alertmanager channel must be told this round, decided from the tracked alert state (pure).

Alertmanager keeps an alert firing only while its client keeps telling it so: Prometheus
re-posts every firing alert with an ``endsAt`` a few evaluation intervals ahead, at most every
``--rules.alert.resend-delay``, and posts ``endsAt = now`` once it resolves. An alert that is
not re-posted resolves by itself when its ``endsAt`` passes, so a client that dies takes its
alerts with it instead of leaving them firing for ever.

The truth an Alertmanager channel is fed is therefore the tracked state (``AlertState`` per
fingerprint, phase ``firing``), not the round's messages: notifier's silences, maintenance
windows, inhibition, acks and flap damping decide what *its messages* say (``CyclePlan.notify``),
and Alertmanager is told every firing alert whose rule routes to the channel, muted or not, so
its own silences and inhibition work on the whole picture.

``plan_sync`` compares the alerts firing now with what the channel's last sync said
(``Synced``, the shell's memory; after a restart, the alerts firing before the round) and
returns every firing alert, the ones resolved since, and whether a post is due. Event rules
(transitions) have no lifecycle and are not pushed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from notifier.core.lifecycle import firing_alert, resolved_alert
from notifier.core.meta import CHANNEL_FAILING, META_RULES
from notifier.core.models import Alert, AlertState, EntityKey, EntityState, Rule

RESEND_SLACK = 0.1
"""A re-post is due once the last one is 90 % of the interval old: a cycle that starts a few
milliseconds early must not skip a whole interval."""

TTL_INTERVALS = 4
"""A firing alert's ``endsAt`` is this many re-post intervals (or poll intervals, if longer) after
the post, as Prometheus does: three posts can be lost before Alertmanager resolves it."""


@dataclass(frozen=True, slots=True)
class Synced:
    """What a channel's last queued sync said: when it was queued and the alerts it said were firing."""

    at: datetime
    firing: Mapping[str, Alert]  # fingerprint -> the alert as posted


@dataclass(frozen=True, slots=True)
class SyncPlan:
    """One channel's sync for this round: post ``firing`` and ``resolved`` when ``due``."""

    channel: str
    firing: tuple[Alert, ...]
    resolved: tuple[Alert, ...]
    due: bool
    synced: Synced | None  # the memory to adopt once the round is committed (unchanged when not due)


def ttl(resend: float, interval: float) -> float:
    """Seconds a posted firing alert stays firing in Alertmanager without another post."""
    return TTL_INTERVALS * max(resend, interval)


def routes_to(rule: Rule, alert_node: str, channel: str) -> bool:
    """Whether the rule sends its alerts to ``channel`` (a failing channel is never told about itself)."""
    return channel in rule.channels and not (rule.name == CHANNEL_FAILING and alert_node == channel)


def plan_sync(channel: str, previous: Mapping[str, AlertState], states: Mapping[str, AlertState],
              rules: Sequence[Rule], entities: Mapping[EntityKey, EntityState], now: datetime, *,
              last: Synced | None, resend: float, notified: Iterable[Alert] = ()) -> SyncPlan:
    """The firing alerts routed to ``channel``, those resolved since the last sync, and whether to post.

    ``previous`` and ``states`` are the alert states before and after the round; ``last``
    is what the channel's last sync said (None after a start: then the alerts firing in
    ``previous`` are taken as told). ``notified`` are the round's messages: a meta-alert's
    message quotes its condition's detail, which the state does not keep, so it is
    preferred (and remembered) over one rebuilt from the state. A post is due when the set
    of firing alerts changed, something resolved, or (while something fires) the last post
    is ``resend`` seconds old, less ``RESEND_SLACK``.
    """
    by_name = {rule.name: rule for rule in rules}
    messages = {a.fingerprint: a for a in notified if a.status == "firing" and not a.event}
    firing: dict[str, Alert] = {}
    for fp, state in states.items():
        rule = by_name.get(state.rule)
        if state.phase != "firing" or rule is None or not routes_to(rule, state.node, channel):
            continue
        alert = messages.get(fp)
        if alert is None and rule.name in META_RULES and last is not None:
            alert = last.firing.get(fp)  # keeps the detail its last message quoted
        if alert is None:
            alert = firing_alert(rule, state, entities.get((state.job, state.node)), entities, now,
                                 reminder=state.notified > 0)
        firing[fp] = alert
    told = last.firing if last is not None else _firing_before(channel, previous, by_name, entities, now)
    resolved = tuple(_resolved(told_alert, previous.get(fp), states.get(fp), by_name, entities, now)
                     for fp, told_alert in told.items()
                     if fp not in firing or identity(firing[fp]) != identity(told_alert))
    if last is None:
        due = bool(firing or resolved)
    else:
        stale = (now - last.at).total_seconds() >= resend * (1 - RESEND_SLACK)
        due = bool(resolved) or firing.keys() != told.keys() or (bool(firing) and stale)
    return SyncPlan(channel=channel, firing=tuple(firing.values()), resolved=resolved, due=due,
                    synced=Synced(at=now, firing=firing) if due else last)


def identity(alert: Alert) -> tuple[object, ...]:
    """The fields Alertmanager's label set is made of: an alert whose identity changed is a new alert there."""
    return (alert.rule, alert.job, alert.node, alert.node_type, alert.severity, alert.source,
            tuple(sorted(alert.labels.items())))


def _firing_before(channel: str, previous: Mapping[str, AlertState], rules: Mapping[str, Rule],
                   entities: Mapping[EntityKey, EntityState], now: datetime) -> dict[str, Alert]:
    """After a start nothing was told yet in memory: the alerts firing before the round stand in for it."""
    told: dict[str, Alert] = {}
    for fp, state in previous.items():
        rule = rules.get(state.rule)
        if state.phase == "firing" and rule is not None and routes_to(rule, state.node, channel):
            told[fp] = firing_alert(rule, state, None, entities, now, reminder=True)
    return told


def _resolved(told: Alert, before: AlertState | None, after: AlertState | None, rules: Mapping[str, Rule],
              entities: Mapping[EntityKey, EntityState], now: datetime) -> Alert:
    """The resolve of an alert the channel was told fires, with the label fields it was told (so it matches)."""
    rule = rules.get(told.rule)
    if after is not None and after.phase == "firing":  # still firing, but no longer as told (routing, labels)
        text = f"{told.node or told.job}: {told.rule} is no longer sent here as it was (its rule or routing changed)"
        out = replace(told, summary=text)
    elif rule is not None and before is not None:
        out = resolved_alert(rule, before, entities, now)
    else:  # the rule is gone (a reload removed it): its alerts end here
        out = replace(told, summary=f"{told.node or told.job}: rule {told.rule} was removed")
    return replace(out, status="resolved", ends_at=now, rule=told.rule, job=told.job, node=told.node,
                   node_type=told.node_type, severity=told.severity, source=told.source, labels=told.labels)
