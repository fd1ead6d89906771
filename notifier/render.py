"""Jinja2 rendering: sandboxed, strict, and never the reason an alert is dropped.

Templates are looked up as ``<template>.<channel type>.j2`` in the user's template
directory first, then in the package's defaults, then as ``default.<channel type>.j2``.
A channel type that needs several parts (email: subject, text, html) defines them as
named blocks in one file and renders them with ``part=``.

Rendering errors raise ``TemplateError`` in strict mode (``notifier check``); in the
service the channel catches it, logs it and sends ``plain_text()`` instead.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from notifier.core import summary
from notifier.core.durations import format_duration
from notifier.core.models import DEFAULT_SOURCE, SEVERITIES, Alert, MessageGroup
from notifier.errors import TemplateError

log = logging.getLogger(__name__)

SEVERITY_EMOJI = {"critical": ":red_circle:", "warning": ":large_orange_circle:", "info": ":large_blue_circle:"}
SEVERITY_COLOR = {"critical": "#d32f2f", "warning": "#f9a825", "info": "#1976d2", "resolved": "#2e7d32"}


def ago(when: datetime | None, now: datetime) -> str:
    """"4 min ago", "2 h ago": how long ago, in the words an on-call reader scans fastest."""
    if when is None:
        return "unknown"
    seconds = max(0, int((now - when).total_seconds()))
    if seconds < 60:
        return "just now" if seconds < 5 else f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        h, m = divmod(seconds // 60, 60)
        return f"{h} h {m} min ago" if m else f"{h} h ago"
    return f"{seconds // 86400} d ago"


def timestamp(when: datetime | None, fmt: str = "%Y-%m-%d %H:%M UTC") -> str:
    """Format an aware datetime in UTC (servers and on-call people agree on UTC)."""
    if when is None:
        return "unknown"
    return when.astimezone(timezone.utc).strftime(fmt)


def isoformat(when: datetime | None) -> str | None:
    """RFC 3339 with a Z, as the webhook contract writes times."""
    if when is None:
        return None
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


duration = format_duration
"""The ``duration`` template filter: a timedelta or seconds, in words ("1h 5m")."""


class Renderer:
    """Loads and renders templates for every channel type."""

    def __init__(self, user_dir: Path | None = None, *, strict: bool = False) -> None:
        loaders: list[jinja2.BaseLoader] = []
        if user_dir is not None:
            loaders.append(jinja2.FileSystemLoader(str(user_dir)))
        loaders.append(jinja2.PackageLoader("notifier", "templates"))
        self.user_dir = user_dir
        self.strict = strict
        self.env = SandboxedEnvironment(
            loader=jinja2.ChoiceLoader(loaders),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            ago=ago, timestamp=timestamp, isoformat=isoformat, duration=duration,
            emoji=lambda sev: SEVERITY_EMOJI.get(sev, ":white_circle:"),
            color=lambda sev: SEVERITY_COLOR.get(sev, "#757575"),
            mrkdwn=mrkdwn_escape, silence_command=silence_command, shell_quote=shlex.quote,
        )

    def template_for(self, template: str, kind: str) -> jinja2.Template:
        """``<template>.<kind>.j2``, else ``default.<kind>.j2``; TemplateError if neither loads."""
        names = [f"{template}.{kind}.j2"] if template == "default" else [f"{template}.{kind}.j2", f"default.{kind}.j2"]
        try:
            return self.env.select_template(names)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{exc.filename or exc.name}:{exc.lineno}: {exc.message}") from exc
        except jinja2.TemplatesNotFound as exc:
            raise TemplateError(f"no template {' or '.join(names)}") from exc
        except UnicodeDecodeError as exc:
            raise TemplateError(f"{' or '.join(names)}: not UTF-8 text (byte {exc.start}); re-save it as UTF-8") \
                from exc

    def render(self, template: str, kind: str, context: Mapping[str, Any], *, part: str | None = None) -> str:
        """Render a whole template, or one named ``{% block part %}`` of it."""
        tpl = self.template_for(template, kind)
        try:
            if part is None:
                return tpl.render(context)
            block = tpl.blocks.get(part)
            if block is None:
                raise TemplateError(f"{tpl.name}: has no block {part!r}")
            ctx = tpl.new_context(dict(context))
            return jinja2.utils.concat(block(ctx))
        except TemplateError:
            raise
        except jinja2.TemplateError as exc:
            line = _template_line(exc, tpl)
            raise TemplateError(f"{tpl.name}{line}: {exc}") from exc
        except Exception as exc:  # a filter or attribute error inside a user template
            raise TemplateError(f"{tpl.name}: {type(exc).__name__}: {exc}") from exc

    def render_or(self, fallback: Callable[[], str], template: str, kind: str,
                  context: Mapping[str, Any], *, part: str | None = None) -> str:
        """Render, or log the error and return ``fallback()`` (re-raise in strict mode)."""
        try:
            return self.render(template, kind, context, part=part)
        except TemplateError as exc:
            if self.strict:
                raise
            log.error("template failed, sending the plain message instead: %s", exc)
            return fallback()


def _template_line(exc: Exception, tpl: jinja2.Template) -> str:
    """The template line of the error: jinja rewrites its frames to template line numbers."""
    tb = exc.__traceback__
    lineno = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == tpl.filename:
            lineno = tb.tb_lineno
        tb = tb.tb_next
    return f":{lineno}" if lineno else ""


def message_context(group: MessageGroup, now: datetime) -> dict[str, Any]:
    """What every template sees."""
    firing = tuple(a for a in group.alerts if a.status == "firing")
    resolved = tuple(a for a in group.alerts if a.status == "resolved")
    worst = worst_severity(group) or "info"
    return {
        "group": group.group,  # the job key: "prod/JOB" for the source prod, the bare name for default
        "job": group.group,  # what messages call the job (the source named unless it is default)
        "source": group.source,
        "job_name": group.job,  # the bare DataArts job name
        "channel": group.channel,
        "alerts": group.alerts,
        "firing": firing,
        "resolved": resolved,
        "status": "firing" if firing else "resolved",
        "severity": worst,
        "now": now,
    }


# --- what every message says ------------------------------------------------------------

def worst_severity(group: MessageGroup) -> str | None:
    """The most severe firing alert's severity; None when every alert is resolved."""
    firing = [a.severity for a in group.alerts if a.status == "firing"]
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return min(firing, key=lambda s: rank.get(s, len(rank)), default=None)


def status_label(group: MessageGroup) -> str:
    """"CRITICAL" (the worst firing severity) or "RESOLVED" when nothing fires any more."""
    worst = worst_severity(group)
    return "RESOLVED" if worst is None else worst.upper()


def headline(group: MessageGroup) -> str:
    """"job_sms: DLI_SMS_GES entered EXCEPTION": the one line a Slack header or a mail subject says.

    A job alert's summary already starts with the job ("job_orders in STARTTING for 12m"):
    it is not prefixed twice.
    """
    what, job = _what(group.alerts), group.group
    return what if what == job or what.startswith((f"{job} ", f"{job}:")) else f"{job}: {what}"


def _what(alerts: Sequence[Alert]) -> str:
    if len(alerts) == 1:
        return summary.headline(alerts[0])
    firing = [a for a in alerts if a.status == "firing"]
    n_resolved = len(alerts) - len(firing)
    if firing and n_resolved:
        return f"{len(alerts)} alerts ({len(firing)} firing, {n_resolved} resolved)"
    if not firing:
        return f"{len(alerts)} alerts resolved"
    states = {a.state for a in firing}
    if len(states) == 1 and all(a.node for a in firing):
        return f"{len(firing)} nodes in {states.pop()}"
    return f"{len(alerts)} alerts firing"


def silence_command(alert: Alert, duration: str = "2h") -> str:
    """The exact command that silences this alert (rule, job and node), to paste into a shell."""
    node = f" --node {shlex.quote(alert.node)}" if alert.node else ""
    source = f" --source {shlex.quote(alert.source)}" if alert.source != DEFAULT_SOURCE else ""
    return (f"notifier silence add --rule {shlex.quote(alert.rule)}{source} --job {shlex.quote(alert.job)}{node} "
            f'--for {duration} --comment "..."')


def mrkdwn_escape(value: object) -> str:
    """Escape &, < and > so names and summaries cannot become links or @channel mentions."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def alert_line(alert: Alert, now: datetime) -> str:
    """One plain line per alert: the built-in fallback that needs no template."""
    head = "RESOLVED" if alert.status == "resolved" else alert.severity.upper()
    where = f"{alert.key}/{alert.node}" if alert.node else alert.key
    line = (f"[{head}] {where}: {alert.summary or alert.state} "
            f"(rule {alert.rule}, since {timestamp(alert.since)}, {ago(alert.since, now)})")
    if alert.log_path:
        line += f" log: {alert.log_path}"
    return line


def plain_text(group: MessageGroup, now: datetime) -> str:
    """The built-in message sent when a template fails: plain, complete, and always renderable."""
    return "\n".join(alert_line(a, now) for a in group.alerts)


def sample_groups(channel: str = "sample") -> tuple[MessageGroup, ...]:
    """Alerts of every shape, for ``notifier check`` to render every template against."""
    t0 = datetime(2019, 3, 1, 3, 4, 25, tzinfo=timezone.utc)
    node = Alert(
        status="firing", rule="node-exception", severity="critical", fingerprint="0123456789abcdef",
        job="job_sms", node="DLI_SMS_GES", node_type="DLI SQL", state="EXCEPTION", previous_state="NORMAL",
        since=t0, starts_at=t0, log_path="obs://dlf-log-example/job_sms/DLI_SMS_GES.job",
        summary="DLI_SMS_GES entered EXCEPTION (was NORMAL)", job_status="NORMAL",
        counters={"totalGetBytes": 0, "totalGetRecords": 208, "totalPutBytes": 0, "totalPutRecords": 208},
    )
    job = Alert(
        status="firing", rule="job-stuck-starting", severity="warning", fingerprint="fedcba9876543210",
        job="job_orders", node=None, node_type=None, state="STARTTING", previous_state=None,
        since=t0, starts_at=t0, summary="job_orders in STARTTING for 12m", job_status="STARTTING",
    )
    resolved = replace(node, status="resolved", state="NORMAL", previous_state="EXCEPTION",
                       ends_at=t0 + timedelta(minutes=14), summary="DLI_SMS_GES back to NORMAL after 14m")
    event = replace(job, rule="job-stopped", state="STOPPED", previous_state="NORMAL", event=True,
                    summary="job_orders: STOPPED (was NORMAL)", job_status="STOPPED")
    return (
        MessageGroup(channel, "job_sms", (node,)),
        MessageGroup(channel, "job_sms", (node, replace(node, node="DIS_INPUT", fingerprint="1111111111111111"))),
        MessageGroup(channel, "job_sms", (resolved,)),
        MessageGroup(channel, "job_orders", (job, event)),
    )
