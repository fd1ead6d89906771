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
    edits: tuple[tuple[MessageGroup, Conversation], ...] = ()  # parents to redraw without a message
    drawn: Mapping[str, Drawn] = field(default_factory=dict)  # incident id -> what its parent shows after this cycle


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
                   acks: Mapping[str, str] | None = None, drawn: Mapping[str, Drawn] | None = None) -> IncidentPlan:
    """Decide, for this cycle's groups, which open an incident, which continue one, and which incidents close.

    ``states`` are the alert states after the cycle, ``previous`` those before it; a group
    with nothing firing and no open incident (e.g. a resolve after the state was reset) is
    not threaded. The parent is a picture of the incident, redrawn when what it shows
    changes even without a message (``edits``): an incident that ends silenced shows
    "RESOLVED", and one silenced or acknowledged since it was last drawn (``drawn``:
    incident id -> what its parent showed) says so, also when a reply drawn before a
    button click overwrote the click's own edit.
    """
    firing = announced(states, rules, threaded)
    by_name = {rule.name: rule for rule in rules}
    acks = acks or {}
    drawn = drawn or {}
    incidents = dict(open_)
    opened: list[Incident] = []
    out: list[Conversation | None] = []

    def conversation(incident: Incident, *, opens: bool = False, edit_only: bool = False) -> Conversation:
        key = incident.key
        current = tuple(
            firing_alert(by_name[s.rule], s, entities.get((s.job, s.node)), entities, now, reminder=False)
            for s in sorted(firing.get(key, ()), key=lambda s: (s.node, s.rule)))
        silence = next((s for s in silences if current and s.starts_at <= now < s.ends_at
                        and all(s.matchers.match(a.rule, a.key, a.node) for a in current)), None)
        return Conversation(incident, opens=opens, closes=key not in firing, current=current,
                            nodes=sum(1 for node in entities.job(key[2]) if node[1]), edit_only=edit_only,
                            silence=silence, acked_by={a.fingerprint: acks[a.fingerprint] for a in current
                                                       if a.fingerprint in acks})

    for group in groups:
        key = key_of(group)
        incident = incidents.get(key)
        if group.channel not in threaded or (incident is None and not any(a.status == "firing" for a in group.alerts)):
            out.append(None)
            continue
        opens = incident is None
        if incident is None:
            incident = Incident(new_id(), *key, opened_at=now)
            incidents[key] = incident
            opened.append(incident)
        out.append(conversation(incident, opens=opens))

    # an incident opened by a message that leaves nothing firing (an event) is over at once: never stored
    closed = tuple(i for k, i in incidents.items() if k not in firing and i not in opened)
    spoken = {c.incident.id for c in out if c is not None}
    before = announced(previous or {}, rules, threaded)
    edits: list[tuple[MessageGroup, Conversation]] = []
    for incident in closed:  # ended without a message: the parent still says RESOLVED
        gone = [s for s in before.get(incident.key, ()) if s.rule in by_name]
        if incident.id in spoken or not gone:
            continue
        resolved = tuple(resolved_alert(by_name[s.rule], s, entities, now) for s in gone)
        group = MessageGroup(incident.channel, incident.job, resolved, resolved[0].template, incident.route or None)
        edits.append((group, Conversation(incident, opens=False, closes=True, current=(), nodes=0, edit_only=True)))
    for key, incident in incidents.items():  # silenced or acknowledged since the parent was drawn
        if incident.id in spoken or key not in firing:
            continue
        redraw = conversation(incident, edit_only=True)
        if drawing(redraw) != drawn.get(incident.id, PLAIN):
            first = redraw.current[0]
            group = MessageGroup(incident.channel, incident.job, redraw.current, first.template, first.route)
            edits.append((group, redraw))
    shown = {c.incident.id: drawing(c) for c in (*(c for c in out if c is not None), *(c for _, c in edits))
             if not c.closes}
    return IncidentPlan(conversations=tuple(out), opened=tuple(i for i in opened if i.key in firing), closed=closed,
                        edits=tuple(edits), drawn=shown)


Drawn = tuple[str | None, tuple[tuple[str, str], ...]]
"""What a parent shows beyond its alerts: the silence id, and who acknowledged which alert."""
PLAIN: Drawn = (None, ())


def drawing(conversation: Conversation) -> Drawn:
    silence = conversation.silence.id if conversation.silence is not None else None
    return (silence, tuple(sorted(conversation.acked_by.items())))
