"""Alertmanager's shapes for notifier's alerts: labels, annotations, the postable alert of
``POST /api/v2/alerts``, and the webhook payload Alertmanager sends its receivers.

Shared by the webhook channel's ``format = "alertmanager"`` and the Alertmanager channel,
so an alert reads the same whether Alertmanager relayed it or notifier posted it itself.

Labels (identity and routing: Alertmanager groups, routes, silences and inhibits by them):
``alertname`` (the rule), ``job``, ``node`` (absent on a job-level alert), ``node_type``
(absent when unknown), ``severity``, ``source``, ``project_id`` and ``workspace`` (from the
source, through ``Alert.labels``; absent when empty), plus static labels: the channel's
``labels``, then the rule's (``Alert.labels``), which win over the channel's. Neither may
name a built-in label: ``core.labels`` refuses that when the file is loaded.

Annotations (what a person reads): ``summary``, ``state``, ``previous_state``, ``since``,
``log_path`` (empty ones left out), and notifier's own hints: ``notifier_fingerprint``,
``notifier_silence`` and ``notifier_ack``, the exact commands that mute it in notifier.

Fingerprint: the webhook payload's ``fingerprint`` is notifier's own (rule + job + node, 16
hex digits like Alertmanager's), not Alertmanager's hash of the label set. It survives an
edit of a static label, so a receiver's incident keeps its identity across a config change,
and it is what ``notifier alerts`` prints and ``notifier ack`` takes. Alertmanager, fed by
the Alertmanager channel, still computes its own from the labels, as it always does.

Times are RFC 3339 in UTC as Go writes them (``2019-03-01T03:04:25Z``, a fraction only when
there is one); a firing alert's ``endsAt`` in the webhook payload is Go's zero time
``0001-01-01T00:00:00Z``, as Alertmanager hides an end that has not come yet. Labels and
annotations are sorted by name, as Go encodes maps, so equal alerts give equal bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from string import Formatter
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, urlsplit

from notifier.config import SourceConfig
from notifier.core.models import Alert, MessageGroup
from notifier.render import silence_command
from notifier.rulefile import check_labels
from notifier.strict_toml import TableReader

WEBHOOK_VERSION = "4"
"""Alertmanager's webhook payload version (``notify/webhook``)."""

ZERO_TIME = "0001-01-01T00:00:00Z"
"""Go's zero ``time.Time``: the ``endsAt`` of a firing alert in Alertmanager's webhook payload."""

GROUP_BY = ("job", "source")
"""The ``groupLabels``: notifier sends one message per job (of one source)."""

ROUTE_KEY = "{}"
"""The route part of ``groupKey``: Alertmanager's root route, the only one notifier has."""

GENERATOR_FIELDS = ("rule", "job", "node", "source", "fingerprint", "project_id", "workspace")
"""Placeholders a ``generator_url`` may hold, each replaced by the alert's value, URL-quoted."""

NO_LABELS: Mapping[str, str] = MappingProxyType({})


# --- labels and annotations -----------------------------------------------------------

def source_labels(source: SourceConfig) -> dict[str, str]:
    """What an alert carries about its source: ``project_id`` and ``workspace``, the empty ones left out."""
    return {k: v for k, v in (("project_id", source.project_id), ("workspace", source.workspace)) if v}


def with_labels(alert: Alert, extra: Mapping[str, str]) -> Alert:
    """The alert with ``extra`` (the source's labels) under its own."""
    return replace(alert, labels={**extra, **alert.labels}) if extra else alert


SourceFacts = Mapping[str, Mapping[str, str]]
"""Source name -> its ``source_labels``: what each source's alerts carry."""


def facts_of(sources: Mapping[str, SourceConfig]) -> dict[str, dict[str, str]]:
    """Every configured source's labels, by source name."""
    return {name: source_labels(source) for name, source in sources.items()}


def with_source_labels(alert: Alert, facts: SourceFacts) -> Alert:
    """The alert with its own source's ``project_id``/``workspace`` under its labels (none for an unknown source)."""
    return with_labels(alert, facts.get(alert.source, NO_LABELS))


def am_labels(alert: Alert, static: Mapping[str, str] = NO_LABELS) -> dict[str, str]:
    """The alert's label set: ``static`` (the channel's), then ``alert.labels``, then the built-ins."""
    labels = {**static, **alert.labels}
    labels.update(alertname=alert.rule, job=alert.job, severity=alert.severity, source=alert.source,
                  node=alert.node or "", node_type=alert.node_type or "")
    return {k: v for k, v in sorted(labels.items()) if v}  # Alertmanager: an empty label is no label


def am_annotations(alert: Alert) -> dict[str, str]:
    """What a person reads about the alert, and the commands that mute it in notifier."""
    annotations = {
        "summary": alert.summary,
        "state": alert.state,
        "previous_state": alert.previous_state or "",
        "since": rfc3339(alert.since),
        "log_path": alert.log_path or "",
        "notifier_fingerprint": alert.fingerprint,
        "notifier_silence": silence_command(alert),
        "notifier_ack": f"notifier ack {alert.fingerprint}",
    }
    return {k: v for k, v in sorted(annotations.items()) if v}


# --- the API v2 alert -----------------------------------------------------------------

def am_alert(alert: Alert, *, static_labels: Mapping[str, str] = NO_LABELS, generator_url: str = "",
             ends_at: datetime | None) -> dict[str, Any]:
    """One element of ``POST /api/v2/alerts`` (Alertmanager's ``postableAlert``).

    ``ends_at`` is the caller's: a firing alert is re-posted with an end a few intervals
    ahead (Alertmanager resolves it when that passes), a resolved one with its end; None
    leaves it out (Alertmanager then applies its ``resolve_timeout``). An empty
    ``generatorURL`` is left out too: the API wants a URI there.
    """
    body: dict[str, Any] = {
        "labels": am_labels(alert, static_labels),
        "annotations": am_annotations(alert),
        "startsAt": rfc3339(alert.starts_at),
    }
    if ends_at is not None:
        body["endsAt"] = rfc3339(ends_at)
    link = generator_link(generator_url, alert)
    if link:
        body["generatorURL"] = link
    return body


# --- the webhook payload --------------------------------------------------------------

def am_webhook_payload(group: MessageGroup, *, receiver: str, static_labels: Mapping[str, str] = NO_LABELS,
                       external_url: str = "", generator_url: str = "", now: datetime) -> dict[str, Any]:
    """Exactly what Alertmanager's webhook notifier posts (``notify/webhook.Message``) for ``group``.

    Keys in Go's order (``template.Data`` first, then ``version``, ``groupKey``,
    ``truncatedAlerts``); ``now`` ends a resolved alert that carries no end of its own.
    """
    alerts = [_webhook_alert(a, static_labels, generator_url, now) for a in group.alerts]
    common_labels = _common([a["labels"] for a in alerts])
    group_labels = {k: common_labels[k] for k in sorted(GROUP_BY) if k in common_labels}
    return {
        "receiver": quote_meta(receiver),
        "status": "firing" if any(a.status == "firing" for a in group.alerts) else "resolved",
        "alerts": alerts,
        "groupLabels": group_labels,
        "commonLabels": common_labels,
        "commonAnnotations": _common([a["annotations"] for a in alerts]),
        "externalURL": external_url,
        "version": WEBHOOK_VERSION,
        "groupKey": f"{ROUTE_KEY}:{label_set_string(group_labels)}",
        "truncatedAlerts": 0,
    }


def _webhook_alert(alert: Alert, static: Mapping[str, str], generator_url: str, now: datetime) -> dict[str, Any]:
    resolved = alert.status == "resolved"
    return {
        "status": alert.status,
        "labels": am_labels(alert, static),
        "annotations": am_annotations(alert),
        "startsAt": rfc3339(alert.starts_at),
        "endsAt": rfc3339(alert.ends_at or now) if resolved else ZERO_TIME,
        "generatorURL": generator_link(generator_url, alert),
        "fingerprint": alert.fingerprint,
    }


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """The pairs every map holds with the same value (``commonLabels``, ``commonAnnotations``)."""
    if not maps:
        return {}
    first, rest = maps[0], maps[1:]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in rest)}


# --- Go's formats ---------------------------------------------------------------------

def rfc3339(when: datetime) -> str:
    """An aware datetime as Go's ``time.Time`` marshals it in UTC (RFC 3339, trailing zeros trimmed)."""
    utc = when.astimezone(timezone.utc)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def label_set_string(labels: Mapping[str, str]) -> str:
    """``{job="job_sms", source="default"}``: Prometheus' ``LabelSet.String()``, names sorted, values Go-quoted."""
    return "{" + ", ".join(f"{k}={go_quote(labels[k])}" for k in sorted(labels)) + "}"


def go_quote(value: str) -> str:
    """Go's ``strconv.Quote`` for the characters label values hold: printable text kept, the rest escaped."""
    out = ['"']
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def quote_meta(text: str) -> str:
    """Go's ``regexp.QuoteMeta``, which Alertmanager applies to the receiver name in ``template.Data``."""
    return "".join("\\" + ch if ch in r"\.+*?()|[]{}^$" else ch for ch in text)


# --- generatorURL ---------------------------------------------------------------------

def generator_link(template: str, alert: Alert) -> str:
    """``template`` with each ``{placeholder}`` replaced by the alert's URL-quoted value ("" when unset)."""
    if not template or "{" not in template:
        return template
    values = {
        "rule": alert.rule, "job": alert.job, "node": alert.node or "", "source": alert.source,
        "fingerprint": alert.fingerprint, "project_id": alert.labels.get("project_id", ""),
        "workspace": alert.labels.get("workspace", ""),
    }
    return template.format_map({k: quote(v, safe="") for k, v in values.items()})


def generator_url_problem(template: str) -> str | None:
    """Why ``template`` cannot be a ``generator_url``, or None: an http(s) URL with known placeholders."""
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in Formatter().parse(template) if name is not None]
    except ValueError as exc:
        return f"not a valid template ({exc}); write a literal brace as {{{{ or }}}}"
    for name, spec, conv in fields:
        if name not in GENERATOR_FIELDS:
            return f"unknown placeholder {{{name}}} (known: {', '.join('{' + f + '}' for f in GENERATOR_FIELDS)})"
        if spec or conv:
            return f"placeholder {{{name}}} takes no format or conversion"
    return url_problem(template.format_map({f: "x" for f in GENERATOR_FIELDS}))


def url_problem(url: str) -> str | None:
    """Why ``url`` is not an absolute http(s) URL, or None (for ``external_url``, ``generator_url``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an absolute http:// or https:// URL"
    return None


# --- the channel keys both Alertmanager-shaped channels take ---------------------------

def read_labels(reader: TableReader) -> tuple[tuple[str, str], ...]:
    """The channel's ``labels = { team = "data" }``: sorted pairs; a bad or built-in name names its key."""
    return check_labels(reader.table("labels", None))


def read_generator_url(reader: TableReader, key: str = "generator_url") -> str:
    """``generator_url``: an http(s) URL, optionally with ``{job}``-style placeholders; "" when unset."""
    value = reader.str(key, "")
    problem = generator_url_problem(value) if value else None
    if problem:
        raise reader.error(key, problem)
    return value


def read_url(reader: TableReader, key: str) -> str:
    """An optional absolute http(s) URL such as ``external_url``; "" when unset."""
    value = reader.str(key, "")
    problem = url_problem(value) if value else None
    if problem:
        raise reader.error(key, problem)
    return value
