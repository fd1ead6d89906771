"""Meta-alerts: the watcher watches itself.

When notifier cannot see (the API is unreachable, refuses the credentials, a configured
job does not exist) or cannot speak (a channel keeps failing, the state file cannot be
written), that is an alert like any other: built-in rules with their own names, the same
lifecycle (fire once, repeat, resolve once), routed to ``[meta] channels``.

The shell measures a ``Health`` each cycle; ``meta_conditions`` turns it into
conditions (and the facts their messages show) for ``lifecycle.advance``. The one
exception is notifier-state-unwritable: while it holds nothing can be stored, so the
shell sends it straight to the channels (``state_alert``) and queues its resolve with
the first commit that works again. A source
outage never resolves job alerts (failed jobs are not evaluated) and sends no storm
when it ends: the job alerts it hid are still firing and were already announced.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from notifier.core import summary
from notifier.core.models import (
    DEFAULT_SOURCE,
    Alert,
    Condition,
    EntityState,
    FetchResult,
    Rule,
    Severity,
    fingerprint,
    job_key,
)

SOURCE_DOWN = "notifier-source-down"
AUTH_FAILED = "notifier-auth-failed"
JOB_MISSING = "notifier-job-missing"
STATE_UNWRITABLE = "notifier-state-unwritable"
CHANNEL_FAILING = "notifier-channel-failing"
META_RULES = (SOURCE_DOWN, AUTH_FAILED, JOB_MISSING, STATE_UNWRITABLE, CHANNEL_FAILING)

META_JOB = "notifier"
"""The ``job`` of meta-alerts that are not about one DataArts job (the webhook ``group``). A source's
own (source-down, auth-failed) are ``job_key(source, META_JOB)``: ``prod/notifier``, the bare name
for the default source; the global ones (channel-failing, state-unwritable) are the bare name."""

GLOBAL_META = (STATE_UNWRITABLE, CHANNEL_FAILING)
"""Meta rules about notifier itself, not about one source: judged once per cycle, not per source."""

_TEXT: Mapping[str, tuple[str, str, str]] = {
    # rule: (state word, firing summary, resolved summary); fields as in core.summary plus {detail}
    SOURCE_DOWN: ("DOWN", "DGC source{source_name} failing for {duration}: {detail}",
                  "DGC source{source_name} is back after {duration}"),
    AUTH_FAILED: ("AUTH_FAILED", "DGC API refused the credentials{of_source}: {detail}",
                  "DGC authentication{of_source} works again after {duration}"),
    JOB_MISSING: ("MISSING", "{job}{of_source} does not exist in DataArts Studio: {detail}",
                  "{job}{of_source}: no longer missing after {duration}"),
    STATE_UNWRITABLE: ("UNWRITABLE", "state file cannot be written: {detail}",
                       "state file writable again after {duration}"),
    CHANNEL_FAILING: ("FAILING", "channel {node} is failing: {detail}",
                      "channel {node} delivers again after {duration}"),
}


@dataclass(frozen=True, slots=True)
class MetaPolicy:
    """``[meta]``: where meta-alerts go and when they fire."""

    channels: tuple[str, ...] = ()  # empty: every channel
    source_failures: int = 3  # cycles in a row before notifier-source-down
    job_missing: int = 3  # cycles in a row of DLF.0100 before notifier-job-missing
    channel_stuck: float = 900.0  # seconds a notification may wait before notifier-channel-failing
    repeat: float = 4 * 3600.0


DEFAULT_META = MetaPolicy()

@dataclass(frozen=True, slots=True)
class Streak:
    """Something has held for ``cycles`` cycles in a row, since ``since`` (the first of them)."""

    cycles: int
    since: datetime


@dataclass(frozen=True, slots=True)
class Health:
    """What the shell measured about notifier itself this cycle (about one source, and the global part)."""

    source_failures: Streak | None = None  # the source failed this cycle and these before it
    source_error: str | None = None  # the error of this cycle, when the source failed
    auth_error: str | None = None  # this cycle's auth refusal, with where the secret came from
    missing: Mapping[str, Streak] = field(default_factory=dict)  # job key -> "no such job" in a row
    source: str = DEFAULT_SOURCE  # whose source_failures, auth_error and missing these are
    failing_channels: Mapping[str, tuple[str, datetime]] = field(default_factory=dict)  # channel -> (why, since)


def meta_rules(policy: MetaPolicy, channels: tuple[str, ...]) -> tuple[Rule, ...]:
    """The built-in rules, routed to ``policy.channels`` (every channel when empty)."""
    routed = policy.channels or channels
    severity: dict[str, Severity] = {SOURCE_DOWN: "critical", AUTH_FAILED: "critical", STATE_UNWRITABLE: "critical"}
    return tuple(
        Rule(name=name, scope="job", channels=routed, status=(state,), severity=severity.get(name, "warning"),
             repeat=policy.repeat, summary=firing, resolved_summary=resolved, file="(built-in)")
        for name, (state, firing, resolved) in _TEXT.items()
    )


def missing_streaks(previous: Mapping[str, Streak], result: FetchResult, now: datetime, *,
                    fine: Collection[str] | None = None, watched: Collection[str] | None = None) -> dict[str, Streak]:
    """Cycles in a row each job answered "no such job"; a job fetched fine drops out.

    ``fine`` names the jobs fetched fine (default: ``result``'s snapshots). A job whose
    fetch failed otherwise (timeout, 5xx), or that was not asked this cycle (the fetch
    planner asks for a job only when it can tell something), keeps its streak: no news is
    not "found". A job no longer ``watched`` drops out.
    """
    found = set(fine) if fine is not None else {s.name for s in result.snapshots}
    out = {job: streak for job, streak in previous.items()
           if job not in found and (watched is None or job in watched)}
    for error in result.errors:
        if error.kind == "not_found":
            old = previous.get(error.job)
            out[error.job] = Streak(old.cycles + 1, old.since) if old is not None else Streak(1, now)
    return out


@dataclass(frozen=True, slots=True)
class MetaFacts:
    """Conditions for ``advance`` (with the detail to quote) and the entities their messages describe."""

    conditions: tuple[Condition, ...]
    entities: Mapping[tuple[str, str], EntityState]


def meta_conditions(health: Health, policy: MetaPolicy, now: datetime, active: Collection[str] = ()) -> MetaFacts:
    """Which meta-alerts hold now, each dated from when its trouble began (the first failed cycle).

    ``active`` names the meta rules with a pending or firing alert. While the source fails,
    an active source-down or auth-failed keeps holding whatever this cycle's failure is:
    a 401 after timeouts is not "the source is back", timeouts after a 401 are not "auth
    works again". Each resolves only on a cycle that proves it (an answer, an accepted
    request). A new auth refusal does not start source-down: auth-failed says it.
    """
    held: dict[tuple[str, str, str], tuple[str, datetime]] = {}  # (rule, job, node) -> (detail, since)
    down = health.source_failures
    own = job_key(health.source, META_JOB)
    auth_now = health.auth_error is not None
    if auth_now or (down is not None and AUTH_FAILED in active):
        held[(AUTH_FAILED, own, "auth")] = (health.auth_error or health.source_error or "", now)
    if (down is not None and down.cycles >= policy.source_failures and health.source_error is not None
            and (not auth_now or SOURCE_DOWN in active)):
        held[(SOURCE_DOWN, own, "source")] = (f"{down.cycles} cycles in a row; {health.source_error}",
                                                   down.since)
    for job, missing in sorted(health.missing.items()):
        if missing.cycles >= policy.job_missing:
            held[(JOB_MISSING, job, "")] = (f"DLF.0100 for {missing.cycles} cycles in a row; check [jobs] names "
                                            "(`notifier check --online` lists the jobs that exist)", missing.since)
    for channel, (why, since) in sorted(health.failing_channels.items()):
        held[(CHANNEL_FAILING, META_JOB, channel)] = (why, since)
    conditions = tuple(Condition(rule, job, node, since, detail=detail)
                       for (rule, job, node), (detail, since) in held.items())
    entities = {(job, node): EntityState(job=job, node=node, status=_TEXT[rule][0], since=since)
                for (rule, job, node), (_, since) in held.items()}  # since: when it began, as the alert says
    return MetaFacts(conditions=conditions, entities=entities)


def state_alert(rule: Rule, detail: str, since: datetime, now: datetime, *, resolved: bool) -> Alert:
    """notifier-state-unwritable, built outside the lifecycle: its state cannot be stored while it holds."""
    state = _TEXT[STATE_UNWRITABLE][0]
    fields = summary.fields(rule, job=META_JOB, node="state", node_type="", state=state, previous_state=None,
                            duration=(now - since).total_seconds(), detail=detail)
    text = summary.custom((rule.resolved_summary if resolved else rule.summary) or "", fields) or ""
    return Alert(
        status="resolved" if resolved else "firing", rule=rule.name, severity=rule.severity,
        fingerprint=fingerprint(rule.name, META_JOB, "state"), job=META_JOB, node="state", node_type=None,
        state="OK" if resolved else state, previous_state=state if resolved else None, since=since,
        starts_at=since, ends_at=now if resolved else None, summary=text, template=rule.template,
        channels=rule.channels,
    )
