"""Plain, frozen data that flows through the pipeline.

    source --JobSnapshot--> diff --EntityState/Transition--> rules --Condition/Event-->
    lifecycle --AlertState/Alert--> render --Notification--> outbox --> channels

Everything here is immutable and holds timezone-aware UTC datetimes, so the functional
core (diff, rules, lifecycle) can be tested as pure functions with an injected ``now``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

Clock = Callable[[], datetime]
"""Returns the current time as an aware UTC datetime; injected everywhere time matters."""


def utcnow() -> datetime:
    """The production clock."""
    return datetime.now(timezone.utc)


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
    return _ALIASES.get(s, s)


COUNTER_NAMES = ("totalGetBytes", "totalGetRecords", "totalPutBytes", "totalPutRecords")
"""The per-node counters of the status API, by their API names (used in rules: ``stalled``)."""


# --- what the source reports ----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One node of a job, as the status API reported it."""

    name: str
    status: str
    type: str = ""
    log_path: str | None = None
    running_data: str | None = None  # the API sends a JSON document encoded as a string; kept raw
    counters: Mapping[str, int] = field(default_factory=dict)


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
"""(job, node); node is "" for the job itself."""


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
    counters: Mapping[str, int] = field(default_factory=dict)
    counters_since: Mapping[str, datetime] = field(default_factory=dict)

    @property
    def key(self) -> EntityKey:
        return (self.job, self.node)

    @property
    def is_job(self) -> bool:
        return self.node == ""


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
    summary: str | None = None  # optional one-line str.format summary; placeholders: notifier.summary.SUMMARY_FIELDS
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
    template: str = "default"
    channels: tuple[str, ...] = ()


# --- notifications --------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class MessageGroup:
    """Alerts of one job that go out together on one channel in one cycle."""

    channel: str
    group: str  # the job name
    alerts: tuple[Alert, ...]
    template: str = "default"


Payload = Mapping[str, Any]
"""A rendered, channel-ready message: JSON-serialisable, stored as is in the outbox."""


@dataclass(frozen=True, slots=True)
class Notification:
    """One message queued for one channel; ``id`` orders messages per channel."""

    id: int
    channel: str
    group: str  # the job name
    payload: Payload
    created_at: datetime
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str | None = None
