"""Incidents: which messages open a conversation (a Slack thread) and which continue one.

An incident is one job's trouble on one channel destination: ``(channel, route, job)``,
where ``route`` is a rule's ``slack_channel`` ("" for the channel's own). Why the job and
not the alert: a job's nodes usually fail for one reason, a team talks about "job_sms is
broken", and one thread with "3 of 5 nodes in EXCEPTION" reads better than five threads.

    no incident --first firing message--> open (its message is the thread's parent)
    open --any later message--> a reply in the thread, and the parent edited to the current state
    open --no announced alert of the job fires on that destination any more--> closed

An incident stays open while an alert that was announced still fires, also a silenced or
acknowledged one; it closes in the cycle the last one resolves (or its rule is gone). The
shell stores incidents with the cycle's commit and the parent's Slack ``ts`` when the
parent is delivered; here it is all plain data with ``now`` and ``new_id`` passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from notifier.core.lifecycle import firing_alert, resolved_alert
from notifier.core.models import Alert, AlertState, EntitiesByJob, MessageGroup, Rule
from notifier.core.mutes import Silence

IncidentKey = tuple[str, str, str]
"""(channel, route, job); route is "" for the channel's own destination."""


@dataclass(frozen=True, slots=True)
class Incident:
    """An open conversation about one job on one channel destination."""

    id: str  # random, unique across state files: it names the thread
    channel: str
    route: str
    job: str
    opened_at: datetime

    @property
    def key(self) -> IncidentKey:
        return (self.channel, self.route, self.job)


@dataclass(frozen=True, slots=True)
class Conversation:
    """How one message group relates to its incident, and what the incident looks like now."""

    incident: Incident
    opens: bool  # this message is the incident's first: it becomes the parent
    closes: bool  # nothing of the incident fires after this cycle
    current: tuple[Alert, ...]  # every announced alert of the incident firing now (the parent shows them)
    nodes: int  # nodes the job has now, for "3 of 5 nodes"
    edit_only: bool = False  # the incident ended without a message (its resolve was muted): only edit the parent
    silence: Silence | None = None  # an active silence that mutes every alert the parent shows
    acked_by: Mapping[str, str] = field(default_factory=dict)  # fingerprint -> who acknowledged it (shown alerts)


@dataclass(frozen=True, slots=True)
class IncidentPlan:
    conversations: tuple[Conversation | None, ...]  # one per group given, None: not threaded
    opened: tuple[Incident, ...]
    closed: tuple[Incident, ...]
    quiet_ends: tuple[tuple[MessageGroup, Conversation], ...] = ()  # closed without a message: edit their parent


def key_of(group: MessageGroup) -> IncidentKey:
    return (group.channel, group.route or "", group.group)


def announced(states: Mapping[str, AlertState], rules: Sequence[Rule],
              threaded: Collection[str]) -> dict[IncidentKey, list[AlertState]]:
    """Firing alerts that were announced, by the incident they belong to (threaded channels only)."""
    by_name = {rule.name: rule for rule in rules}
    out: dict[IncidentKey, list[AlertState]] = {}
    for state in states.values():
        rule = by_name.get(state.rule)
        if rule is None or state.phase != "firing" or not state.notified:
            continue
        for channel in rule.channels:
            if channel in threaded:
                out.setdefault((channel, rule.slack_channel or "", state.job), []).append(state)
    return out


def plan_incidents(groups: Sequence[MessageGroup], threaded: Collection[str], open_: Mapping[IncidentKey, Incident],
                   states: Mapping[str, AlertState], rules: Sequence[Rule], entities: EntitiesByJob,
                   now: datetime, new_id: Callable[[], str],
                   previous: Mapping[str, AlertState] | None = None, silences: Sequence[Silence] = (),
                   acks: Mapping[str, str] | None = None) -> IncidentPlan:
    """Decide, for this cycle's groups, which open an incident, which continue one, and which incidents close.

    ``states`` are the alert states after the cycle, ``previous`` those before it; a group
    with nothing firing and no open incident (e.g. a resolve after the state was reset) is
    not threaded. An incident that ends with no message this cycle (its resolve was
    silenced) still gets its parent edited to "RESOLVED": a quiet end (``quiet_ends``).
    ``silences`` and ``acks`` (fingerprint -> author) let a re-drawn parent keep saying
    who silenced or acknowledged what.
    """
    firing = announced(states, rules, threaded)
    by_name = {rule.name: rule for rule in rules}
    incidents = dict(open_)
    opened: list[Incident] = []
    out: list[Conversation | None] = []
    for group in groups:
        key = key_of(group)
        incident = incidents.get(key)
        opens = False
        if group.channel not in threaded or (incident is None and not any(a.status == "firing" for a in group.alerts)):
            out.append(None)
            continue
        if incident is None:
            incident = Incident(new_id(), *key, opened_at=now)
            incidents[key] = incident
            opened.append(incident)
            opens = True
        current = tuple(
            firing_alert(by_name[s.rule], s, entities.get((s.job, s.node)), entities, now, reminder=False)
            for s in sorted(firing.get(key, ()), key=lambda s: (s.node, s.rule)))
        silence = next((s for s in silences if current and s.starts_at <= now < s.ends_at
                        and all(s.matchers.match(a.rule, a.job, a.node) for a in current)), None)
        out.append(Conversation(incident, opens=opens, closes=key not in firing, current=current,
                                nodes=sum(1 for node in entities.job(key[2]) if node[1]), silence=silence,
                                acked_by={a.fingerprint: (acks or {})[a.fingerprint] for a in current
                                          if a.fingerprint in (acks or {})}))
    # an incident opened by a message that leaves nothing firing (an event) is over at once: never stored
    closed = tuple(i for k, i in incidents.items() if k not in firing and i not in opened)
    spoken = {key_of(g) for g, c in zip(groups, out, strict=True) if c is not None}
    before = announced(previous or {}, rules, threaded)
    quiet: list[tuple[MessageGroup, Conversation]] = []
    for incident in closed:
        gone = [s for s in before.get(incident.key, ()) if s.rule in by_name]
        if incident.key in spoken or not gone:
            continue
        resolved = tuple(resolved_alert(by_name[s.rule], s, entities, now) for s in gone)
        group = MessageGroup(incident.channel, incident.job, resolved, resolved[0].template, incident.route or None)
        quiet.append((group, Conversation(incident, opens=False, closes=True, current=(), nodes=0, edit_only=True)))
    return IncidentPlan(conversations=tuple(out), opened=tuple(i for i in opened if i.key in firing), closed=closed,
                        quiet_ends=tuple(quiet))
