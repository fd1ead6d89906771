"""Plain, frozen data that flows through the pipeline.

    source --JobSnapshot--> diff --EntityState/Transition--> rules --Condition/Event-->
    lifecycle --AlertState/Alert--> render --Notification--> outbox --> channels

Everything here is immutable and holds timezone-aware UTC datetimes, so the functional
core (diff, rules, lifecycle) can be tested as pure functions with an injected ``now``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, ItemsView, Iterator, KeysView, Mapping, ValuesView
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from notifier.core.counters import NO_COUNTERS

Clock = Callable[[], datetime]
"""Returns the current time as an aware UTC datetime; injected everywhere time matters."""


# --- statuses -------------------------------------------------------------------------

STARTING = "STARTTING"
"""The API's own spelling of "starting"; the canonical form inside notifier."""

KNOWN_STATUSES = (STARTING, "NORMAL", "EXCEPTION", "STOPPING", "STOPPED")

_ALIASES = {"STARTING": STARTING}


def normalize_status(value: str) -> str:
    """Upper-case a status and map the list-jobs spelling STARTING to STARTTING.

    Unknown values are kept as they are: rules can still match them.
    """
    s = value.strip().upper()
    return sys.intern(_ALIASES.get(s, s))  # interned: 110,000 entities share a handful of status strings


# --- what the source reports ----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One node of a job, as the status API reported it."""

    name: str
    status: str
    type: str = ""
    log_path: str | None = None
    running_data: str | None = None  # the API sends a JSON document encoded as a string; kept raw
    counters: Mapping[str, int] = NO_COUNTERS  # the parser gives Counters


@dataclass(frozen=True, slots=True)
class JobSnapshot:
    """One job's status response, parsed."""

    name: str
    status: str
    start_time: datetime | None = None
    end_time: datetime | None = None
    last_update_time: datetime | None = None
    nodes: tuple[NodeStatus, ...] = ()


FetchErrorKind = Literal["not_found", "auth", "throttled", "server", "timeout", "network", "bad_response", "error"]


@dataclass(frozen=True, slots=True)
class FetchError:
    """A job whose status could not be had this cycle; its state and alerts stay as they were."""

    job: str
    kind: FetchErrorKind
    message: str
    status_code: int | None = None
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What one poll of all watched jobs produced."""

    snapshots: tuple[JobSnapshot, ...]
    errors: tuple[FetchError, ...] = ()


# --- what notifier remembers (state file) --------------------------------------------

EntityKey = tuple[str, str]
"""(job, node); node is "" for the job itself. ``job`` is a job key (``job_key``)."""

DEFAULT_SOURCE = "default"
"""The source of a lone ``[source]`` table, and of every job named without a source."""


def job_key(source: str, job: str) -> str:
    """How the core names job ``job`` of source ``source``: ``"prod/JOB"``, the bare name for ``default``.

    DataArts job names cannot contain ``/`` (the name is a URL path segment), so the key
    is unambiguous; the default source keeps bare names, so a state file written before
    sources existed keeps its keys and fingerprints.
    """
    return job if source == DEFAULT_SOURCE else f"{source}/{job}"


def split_job_key(key: str) -> tuple[str, str]:
    """``"prod/JOB"`` -> ``("prod", "JOB")``; a bare name is the default source's."""
    source, sep, job = key.partition("/")
    return (source, job) if sep else (DEFAULT_SOURCE, key)


def source_of(key: str) -> str:
    """The source a job key belongs to."""
    return split_job_key(key)[0]


@dataclass(frozen=True, slots=True)
class EntityState:
    """The tracked state of a job (node == "") or of one node, persisted between polls.

    ``since`` is when the entity entered ``status``; it survives restarts, so a
    "stuck for 10 minutes" clock is never reset by one. ``counters_since`` holds, per
    counter, when its value last changed (or was first seen): the stalled-counter rule
    compares it with ``now``.
    """

    job: str
    node: str
    status: str
    since: datetime
    previous_status: str | None = None
    node_type: str = ""
    log_path: str | None = None
    started_at: datetime | None = None  # job only: the API's startTime
    counters: Mapping[str, int] = NO_COUNTERS  # diff and the state store give Counters (compact)
    counters_since: Mapping[str, datetime] = NO_COUNTERS

    @property
    def key(self) -> EntityKey:
        return (self.job, self.node)

    @property
    def is_job(self) -> bool:
        return self.node == ""


_NO_ENTITIES: Mapping[EntityKey, EntityState] = {}


class EntitiesByJob(Mapping[EntityKey, EntityState]):
    """Every remembered entity, grouped by job; a read-only Mapping keyed by (job, node).

    Why grouped: a cycle diffs job by job and replaces whole jobs. Holding the groups
    lets it build the next view by swapping one small mapping per job, where a flat
    dict had to be copied and regrouped (110,000 entries, several times) every cycle.
    The group mappings are owned by this view and never mutated.
    """

    __slots__ = ("_groups", "_len")

    def __init__(self, groups: Mapping[str, Mapping[EntityKey, EntityState]] | None = None) -> None:
        self._groups: Mapping[str, Mapping[EntityKey, EntityState]] = groups if groups is not None else {}
        self._len = sum(map(len, self._groups.values()))

    @classmethod
    def group(cls, entities: Mapping[EntityKey, EntityState]) -> EntitiesByJob:
        """Group a flat mapping (the state file's rows, a test's dict); an EntitiesByJob is returned as is."""
        if isinstance(entities, EntitiesByJob):
            return entities
        groups: dict[str, dict[EntityKey, EntityState]] = {}
        for key, entity in entities.items():
            groups.setdefault(key[0], {})[key] = entity
        return cls(groups)

    @property
    def groups(self) -> Mapping[str, Mapping[EntityKey, EntityState]]:
        """Job name -> that job's entities (the job's own under node "")."""
        return self._groups

    def job(self, name: str) -> Mapping[EntityKey, EntityState]:
        """One job's entities; empty when the job is unknown."""
        return self._groups.get(name, _NO_ENTITIES)

    def __getitem__(self, key: EntityKey) -> EntityState:
        return self._groups.get(key[0], _NO_ENTITIES)[key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and len(key) == 2 and key in self._groups.get(key[0], _NO_ENTITIES)

    def __iter__(self) -> Iterator[EntityKey]:
        for group in self._groups.values():
            yield from group

    def __len__(self) -> int:
        return self._len

    def keys(self) -> KeysView[EntityKey]:
        return KeysView(self)

    def values(self) -> ValuesView[EntityState]:
        return _GroupedValues(self)

    def items(self) -> ItemsView[EntityKey, EntityState]:
        return _GroupedItems(self)

    def __repr__(self) -> str:
        return f"EntitiesByJob({len(self._groups)} jobs, {self._len} entities)"


class _GroupedValues(ValuesView[EntityState]):
    """Iterates the groups directly instead of looking every key up again."""

    _mapping: EntitiesByJob

    def __iter__(self) -> Iterator[EntityState]:
        for group in self._mapping.groups.values():
            yield from group.values()


class _GroupedItems(ItemsView[EntityKey, EntityState]):
    """Iterates the groups directly instead of looking every key up again."""

    _mapping: EntitiesByJob

    def __iter__(self) -> Iterator[tuple[EntityKey, EntityState]]:
        for group in self._mapping.groups.values():
            yield from group.items()


@dataclass(frozen=True, slots=True)
class Transition:
    """An entity changed status between two successful polls."""

    job: str
    node: str  # "" for the job itself
    from_status: str
    to_status: str
    at: datetime
    node_type: str = ""


@dataclass(frozen=True, slots=True)
class JobDiff:
    """The result of diffing one job's new snapshot against what was remembered."""

    entities: Mapping[EntityKey, EntityState]  # the job and every node now present
    transitions: tuple[Transition, ...]
    removed: tuple[EntityKey, ...]  # nodes remembered but no longer reported


# --- rules ----------------------------------------------------------------------------

Scope = Literal["job", "node"]
Severity = Literal["critical", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("critical", "warning", "info")


@dataclass(frozen=True, slots=True)
class TransitionMatch:
    """``transition = { from = [...], to = [...] }``; an empty tuple matches any status."""

    from_status: tuple[str, ...] = ()
    to_status: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``[[rule]]`` from a rule file, validated.

    Exactly one of ``status`` (a condition with a lifecycle) and ``transition`` (an
    event: one message per transition, never resolved) is set.
    """

    name: str
    scope: Scope
    channels: tuple[str, ...]
    status: tuple[str, ...] = ()
    sources: tuple[str, ...] = ("*",)  # globs on the source name ([sources.NAME]; one source: "default")
    transition: TransitionMatch | None = None
    for_: float = 0.0  # seconds the condition must hold before firing
    jobs: tuple[str, ...] = ("*",)
    nodes: tuple[str, ...] = ("*",)
    node_types: tuple[str, ...] = ()
    severity: Severity = "warning"
    template: str = "default"
    repeat: float = 4 * 3600.0  # seconds between reminders while firing; 0 = never
    resolved: bool = True
    stalled: str | None = None  # a counter name from COUNTER_NAMES
    inhibits: tuple[str, ...] = ()
    summary: str | None = None  # optional one-line str.format; placeholders: core.summary.SUMMARY_FIELDS
    resolved_summary: str | None = None  # built-in rules only: the same for the resolved message
    slack_channel: str | None = None  # posts to this Slack channel instead of the channel entry's own
    mention: tuple[str, ...] = ()  # Slack mentions for the first message of an incident
    labels: tuple[tuple[str, str], ...] = ()  # static labels (Alertmanager payloads), sorted by name
    file: str = ""  # where it was defined, for error messages

    @property
    def is_event(self) -> bool:
        return self.transition is not None


@dataclass(frozen=True, slots=True)
class Condition:
    """A status rule's condition holds for one entity; ``active_since`` is when it started holding."""

    rule: str
    job: str
    node: str
    active_since: datetime
    detail: str = ""  # meta-alerts: what went wrong, quoted by the rule's summary as {detail}


@dataclass(frozen=True, slots=True)
class Event:
    """A transition rule matched one transition."""

    rule: str
    transition: Transition


# --- alerts ---------------------------------------------------------------------------

AlertPhase = Literal["pending", "firing"]


def fingerprint(rule: str, job: str, node: str) -> str:
    """An alert's identity: rule name + job (+ node), stable across restarts and versions."""
    import hashlib

    raw = "\x1f".join((rule, job, node))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class AlertState:
    """The lifecycle state of one alert, persisted by fingerprint.

    inactive (no row) -> pending -> firing -> resolved (row deleted once notified).
    """

    fingerprint: str
    rule: str
    job: str
    node: str
    phase: AlertPhase
    active_since: datetime
    fired_at: datetime | None = None
    last_notified_at: datetime | None = None
    # last known facts, so a resolved message can still say something when the node is gone
    state: str = ""
    node_type: str = ""
    log_path: str | None = None
    notified: int = 0  # messages sent while firing (the first one and each repeat)


AlertStatus = Literal["firing", "resolved"]


@dataclass(frozen=True, slots=True)
class Alert:
    """An alert as a message shows it: one element of the webhook payload's ``alerts``."""

    status: AlertStatus
    rule: str
    severity: Severity
    fingerprint: str
    job: str
    node: str | None
    node_type: str | None
    state: str
    previous_state: str | None
    since: datetime
    starts_at: datetime
    ends_at: datetime | None = None
    log_path: str | None = None
    summary: str = ""
    job_status: str | None = None
    counters: Mapping[str, int] = field(default_factory=dict)
    event: bool = False  # from a transition rule: never resolved
    sent_before: int = 0  # firing messages already sent for this alert: > 0 makes this one a repeat
    template: str = "default"
    channels: tuple[str, ...] = ()
    route: str | None = None  # the rule's slack_channel: a destination inside the channel entry
    mentions: tuple[str, ...] = ()  # the rule's mentions, for the first message of an incident
    source: str = "default"  # the DataArts source the alert is about ([sources.NAME]; one source: "default")
    labels: Mapping[str, str] = field(default_factory=dict)
    """Extra labels for Alertmanager payloads: the rule's ``labels``, and the source's
    ``project_id``/``workspace`` added by the shell (``core.labels.BUILTIN`` names)."""

    @property
    def key(self) -> str:
        """The job key (``job_key(source, job)``): what the state and the fingerprint name."""
        return job_key(self.source, self.job)


# --- notifications --------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class MessageGroup:
    """Alerts of one job that go out together on one channel in one cycle."""

    channel: str
    group: str  # the job key (``job_key``): the bare job name for the default source
    alerts: tuple[Alert, ...]
    template: str = "default"
    route: str | None = None  # where inside the channel (a Slack channel); None: the channel's default

    @property
    def source(self) -> str:
        return split_job_key(self.group)[0]

    @property
    def job(self) -> str:
        """The bare DataArts job name."""
        return split_job_key(self.group)[1]


Payload = Mapping[str, Any]
"""A rendered, channel-ready message: JSON-serialisable, stored as is in the outbox."""


@dataclass(frozen=True, slots=True)
class ThreadRef:
    """Where a conversation's first message is: Slack's channel id and message ``ts``."""

    place: str
    ts: str


@dataclass(frozen=True, slots=True)
class Notification:
    """One message queued for one channel; ``id`` orders messages per channel.

    A payload with ``"thread": {"id": ...}`` belongs to a conversation; ``parent`` is
    where its first message went, filled in by the deliverer (None: not known).
    """

    id: int
    channel: str
    group: str  # the job name
    payload: Payload
    created_at: datetime
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    parent: ThreadRef | None = None
    key: str = ""  # unique across state files and restarts: "<state file instance>-<id>" (outbox.py)

    @property
    def idempotency_key(self) -> str:
        """What a receiver deduplicates on (``Idempotency-Key``): the key, or the bare id for a hand-made one."""
        return self.key or str(self.id)

    @property
    def thread(self) -> str | None:
        """The conversation this message belongs to (an incident id), or None."""
        thread = self.payload.get("thread")
        value = thread.get("id") if isinstance(thread, Mapping) else None
        return value if isinstance(value, str) else None
