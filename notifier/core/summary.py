"""One plain-English line per alert: what happened to which job or node, and for how long.

The summary is what a reader sees first (Slack text, email subject, webhook
``summary``), so it names the node (or the job for job alerts), the status and a
duration. A rule may bring its own ``summary``: a ``str.format`` string over the
fields in ``SUMMARY_FIELDS`` (no attribute or index access, checked when the rule is
loaded). Resolved alerts always use the default wording, because a custom line is
written for the firing case ("{node} is broken") and would lie on recovery.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from datetime import datetime

from notifier.core.durations import format_duration
from notifier.core.models import DEFAULT_SOURCE, Alert, EntityState, Rule, Transition, split_job_key

SUMMARY_FIELDS = ("job", "source", "node", "node_type", "state", "previous_state", "rule", "severity", "duration",
                  "counter")
"""Placeholders a rule's ``summary`` may use, e.g. ``"{job}/{node} is {state} since {duration}"``."""

_FRESH_SECONDS = 60.0  # below this, "3s ago" is noise: the message already shows the time


def check_format(text: str) -> str | None:
    """Return why ``text`` is not a usable summary format, or None when it is."""
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as exc:
        return f"invalid format ({exc}); write literal braces as {{{{ and }}}}"
    for _literal, field, spec, conversion in parts:
        if field is None:
            continue
        if conversion not in (None, "r", "s", "a"):
            return f"unknown conversion !{conversion} in {{{field}!{conversion}}}; use !r, !s or !a, or none"
        if field not in SUMMARY_FIELDS:
            return f"unknown placeholder {{{field}}}; use {', '.join('{' + f + '}' for f in SUMMARY_FIELDS)}"
        if spec and "{" in spec:
            return f"nested placeholders are not supported in {{{field}:{spec}}}"
    return None


class _Safe(dict[str, str]):
    """Leaves an unknown placeholder visible instead of raising: a summary never loses an alert."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def custom(fmt: str, fields: Mapping[str, str]) -> str | None:
    """Fill a rule's own summary format; None when it cannot be filled (the caller uses the default)."""
    try:
        return fmt.format_map(_Safe(fields))
    except (ValueError, TypeError, KeyError, AttributeError, IndexError):
        return None


def fields(rule: Rule, *, job: str, node: str, node_type: str, state: str, previous_state: str | None,
           duration: float, detail: str = "") -> dict[str, str]:
    """The values a custom summary can use (``detail``: built-in meta rules only); ``job`` is a job key."""
    source, bare = split_job_key(job)
    return {
        "job": bare, "source": source, "node": node, "node_type": node_type, "state": state,
        "previous_state": previous_state or "", "rule": rule.name, "severity": rule.severity,
        "duration": format_duration(duration), "counter": rule.stalled or "", "detail": detail,
        # built-in meta rules only: name the source unless it is the default one
        "source_name": "" if source == DEFAULT_SOURCE else f" {source}",
        "of_source": "" if source == DEFAULT_SOURCE else f" of source {source}",
    }


def firing(rule: Rule, *, subject: str, entity: EntityState, active_since: datetime, now: datetime,
           reminder: bool) -> str:
    """"DLI_SMS_GES entered EXCEPTION (was NORMAL)", "job_orders in STARTTING for 12m", ..."""
    held = (now - active_since).total_seconds()
    if rule.stalled:
        return f"{subject}: {rule.stalled} has not moved for {format_duration(held)}"
    if reminder:
        return f"{subject} still in {entity.status} after {format_duration(held)}"
    if rule.for_ == 0 and entity.previous_status:
        ago = f" {format_duration(held)} ago" if held >= _FRESH_SECONDS else ""
        return f"{subject} entered {entity.status}{_was(entity.previous_status)}{ago}"
    if held >= _FRESH_SECONDS or rule.for_ > 0:  # with `for`, how long it held is the point
        return f"{subject} in {entity.status} for {format_duration(held)}"
    return f"{subject} in {entity.status}"


def resolved(rule: Rule, *, subject: str, entity: EntityState | None, last_state: str,
             active_since: datetime, now: datetime) -> str:
    """"DLI_SMS_GES back to NORMAL after 14m", "DIS_INPUT: totalPutRecords moving again after 20m", ..."""
    held = format_duration((now - active_since).total_seconds())
    if entity is None:
        return f"{subject} is gone (was {last_state} for {held})"
    if entity.status == "NORMAL" and last_state != "NORMAL":
        return f"{subject} back to NORMAL after {held}"
    if rule.stalled and entity.status == last_state:
        return f"{subject}: {rule.stalled} moving again after {held}"
    if entity.status != last_state:
        return f"{subject} left {last_state} after {held} (now {entity.status})"
    return f"{subject}: rule {rule.name} no longer applies ({entity.status}, after {held})"


def event(transition: Transition) -> str:
    """"job_sms: STOPPED (was NORMAL)"."""
    subject = transition.node or transition.job
    return f"{subject}: {transition.to_status}{_was(transition.from_status)}"


def headline(alert: Alert) -> str:
    """The alert's line for a Slack header or a mail subject, where the body already says where it came from.

    A firing condition drops its "(was NORMAL)"; an event keeps it (the transition is
    the news); a resolved alert keeps its whole summary.
    """
    who = alert.node or alert.job
    if alert.status == "resolved":
        return alert.summary or f"{who} back to {alert.state}"
    if not alert.summary:
        return f"{who} entered {alert.state}"
    if alert.event or not alert.previous_state:
        return alert.summary
    return alert.summary.replace(_was(alert.previous_state), "", 1) or alert.summary


def _was(previous: str | None) -> str:
    """Where a state came from, as every summary writes it."""
    return f" (was {previous})" if previous else ""

