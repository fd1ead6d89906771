"""Slack Block Kit messages that always fit Slack's limits.

``compose`` renders ``<template>.slack.j2`` (a JSON document) once per page of alerts,
then makes the result fit Slack's limits in Python, whatever the template did: at most
50 blocks, section text 3,000 characters, header 150, message text 40,000. A group too
big for one message is split into pages ("(1/3)" in the header); past ``MAX_MESSAGES``
pages the last one says "and N more". Slack rejects an oversized message outright, and
a rejected alert is a lost alert, so nothing that leaves compose can exceed a limit. A
template that fails (or renders something that is not a Slack message) is logged and
replaced by a built-in message made from ``alert_line``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from notifier.core.models import Alert, MessageGroup, Payload
from notifier.errors import TemplateError
from notifier.render import (
    SEVERITY_COLOR,
    SEVERITY_EMOJI,
    Renderer,
    alert_line,
    headline,
    message_context,
    mrkdwn_escape,
    status_label,
    worst_severity,
)

log = logging.getLogger(__name__)

Message = dict[str, Any]

RESOLVED_ICON = ":white_check_mark:"

# --- Slack's limits (https://docs.slack.dev/reference/block-kit/blocks) -----------------
MAX_BLOCKS = 50  # per message; counted over top-level and attachment blocks together
MAX_HEADER_TEXT = 150
MAX_SECTION_TEXT = 3000
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_CONTEXT_ELEMENTS = 10
MAX_MESSAGE_TEXT = 40000
MAX_MESSAGES = 10
"""Pages per group: a storm bigger than this ends with "and N more" rather than 11+ messages."""
TRUNCATED = "… (truncated)"


# --- what every message says ------------------------------------------------------------

def template_context(group: MessageGroup, page: Sequence[Alert], now: datetime) -> dict[str, Any]:
    """``message_context`` of one page, plus the group-wide title every page shares."""
    worst = worst_severity(group)
    ctx = message_context(MessageGroup(group.channel, group.group, tuple(page), group.template), now)
    ctx.update(
        headline=headline(group),
        label=status_label(group),
        icon=RESOLVED_ICON if worst is None else SEVERITY_EMOJI.get(worst, ":white_circle:"),
        color=SEVERITY_COLOR["resolved"] if worst is None else SEVERITY_COLOR.get(worst, "#757575"),
        lines=tuple(alert_line(a, now) for a in page),
        total=len(group.alerts),
    )
    return ctx


# --- compose --------------------------------------------------------------------------

def compose(renderer: Renderer, group: MessageGroup, now: datetime) -> tuple[Payload, ...]:
    """Render a group into one or more Slack messages, each within every Slack limit."""
    pages, omitted = paginate(lambda page: render_page(renderer, group, page, now), group.alerts)
    out: list[Payload] = []
    for number, message in enumerate(pages, 1):
        if len(pages) > 1:
            message = _number_page(message, number, len(pages))
        if omitted and number == len(pages):
            message = add_note(message, f":warning: …and {omitted} more alerts of {mrkdwn_escape(group.group)} "
                                         "not shown here: `notifier alerts` lists them all.")
        out.append(fit_limits(message))
    if group.route:  # a rule's slack_channel: the channel entry posts there instead of its own
        return tuple({**message, "channel": group.route} for message in out)
    return tuple(out)


def render_page(renderer: Renderer, group: MessageGroup, page: Sequence[Alert], now: datetime) -> Message:
    """Render the template for one page; fall back to the built-in message if it fails."""
    ctx = template_context(group, page, now)
    try:
        message = parse_message(renderer.render(group.template, "slack", ctx))
    except TemplateError as exc:
        if renderer.strict:
            raise
        log.error("slack template failed, sending the built-in message instead: group=%s error=%s", group.group, exc)
        return builtin_message(ctx, page, now)
    if not message["text"].strip():  # notifications and screen readers show only the text
        message["text"] = mrkdwn_escape(f"{ctx['label']} {ctx['headline']}")
    return message


def parse_message(rendered: str) -> Message:
    """The template's JSON as a message dict; TemplateError if it is not a Slack message."""
    try:
        data = json.loads(rendered)
    except json.JSONDecodeError as exc:
        raise TemplateError(f"slack template did not render JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise TemplateError(f"slack template must render a JSON object, got {type(data).__name__}")
    text = data.get("text", "")
    blocks = data.get("blocks", [])
    attachments = data.get("attachments", [])
    if not isinstance(text, str):
        raise TemplateError("slack template: \"text\" must be a string")
    if not _dict_list(blocks):
        raise TemplateError("slack template: \"blocks\" must be a list of objects")
    if not _dict_list(attachments) or not all(_dict_list(a.get("blocks", [])) for a in attachments):
        raise TemplateError("slack template: \"attachments\" must be a list of objects with a \"blocks\" list")
    if not (text.strip() or blocks or attachments):
        raise TemplateError("slack template rendered an empty message")
    message: Message = {"text": text}
    if blocks:
        message["blocks"] = blocks
    if attachments:
        message["attachments"] = attachments
    return message


def _dict_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, dict) for v in value)


def builtin_message(ctx: Mapping[str, Any], page: Sequence[Alert], now: datetime) -> Message:
    """The message sent when the template fails: header, colour and one plain line per alert."""
    title = f"{ctx['icon']} {ctx['label']}  {ctx['headline']}"
    lines = [mrkdwn_escape(alert_line(a, now)) for a in page]
    return {
        "text": mrkdwn_escape(f"{ctx['label']} {ctx['headline']}"),
        "blocks": [_header_block(title)],
        "attachments": [{"color": ctx["color"], "blocks": [_section(t) for t in pack_lines(lines, MAX_SECTION_TEXT)]}],
    }


def pack_lines(lines: Iterable[str], limit: int) -> list[str]:
    """Join lines into as few texts of at most ``limit`` characters as possible (a longer line stays alone)."""
    out: list[str] = []
    for line in lines:
        if out and len(out[-1]) + 1 + len(line) <= limit:
            out[-1] += "\n" + line
        else:
            out.append(line)
    return out


def paginate(render: Callable[[Sequence[Alert]], Message],
             alerts: Sequence[Alert]) -> tuple[list[Message], int]:
    """Split alerts into the fewest pages whose rendering fits the block limit.

    Returns the rendered pages (at most ``MAX_MESSAGES``) and how many alerts did not fit.
    One block is kept free on every page for the "and N more" note.
    """
    size = max(1, len(alerts))
    while True:
        chunks = [alerts[i:i + size] for i in range(0, len(alerts), size)] or [alerts]
        pages = [render(chunk) for chunk in chunks[:MAX_MESSAGES]]
        worst = max(block_count(p) for p in pages)
        if worst <= MAX_BLOCKS - 1 or size == 1:
            return pages, sum(len(c) for c in chunks[MAX_MESSAGES:])
        size = max(1, min(size - 1, size * (MAX_BLOCKS - 1) // worst))


def block_count(message: Mapping[str, Any]) -> int:
    """Blocks in the message, top-level and inside attachments."""
    return len(message.get("blocks", ())) + sum(len(a.get("blocks", ())) for a in message.get("attachments", ()))


def fit_limits(message: Mapping[str, Any]) -> Message:
    """Truncate whatever is still over a Slack limit; the last safety net before the outbox."""
    blocks = [_fit_block(b) for b in message.get("blocks", ())]
    attachments = [dict(a, blocks=[_fit_block(b) for b in a.get("blocks", ())]) for a in message.get("attachments", ())]
    dropped = 0
    if len(blocks) + sum(len(a["blocks"]) for a in attachments) > MAX_BLOCKS:
        while len(blocks) + sum(len(a["blocks"]) for a in attachments) > MAX_BLOCKS - 1:  # room for the note
            holder = next((a["blocks"] for a in reversed(attachments) if a["blocks"]), blocks)
            holder.pop()
            dropped += 1
    out: Message = {"text": fit_text(message.get("text") or "", MAX_MESSAGE_TEXT)}
    if blocks:
        out["blocks"] = blocks
    if attachments:
        out["attachments"] = attachments
    if dropped:
        out = add_note(out, f"…and {dropped} more blocks not shown (Slack allows {MAX_BLOCKS} per message).")
    return out


def fit_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying so at the end."""
    return text if len(text) <= limit else text[:limit - len(TRUNCATED)] + TRUNCATED


def _fit_block(block: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(block)
    kind = block.get("type")
    if kind == "header":
        out["text"] = _fit_object(block.get("text"), MAX_HEADER_TEXT)
    elif kind == "section":
        if "text" in block:
            out["text"] = _fit_object(block["text"], MAX_SECTION_TEXT)
        if "fields" in block:
            out["fields"] = [_fit_object(f, MAX_FIELD_TEXT) for f in block["fields"][:MAX_FIELDS]]
    elif kind == "context":
        out["elements"] = [_fit_object(e, MAX_SECTION_TEXT) for e in block.get("elements", ())[:MAX_CONTEXT_ELEMENTS]]
    return out


def _fit_object(obj: Any, limit: int) -> Any:
    if isinstance(obj, Mapping) and isinstance(obj.get("text"), str):
        return dict(obj, text=fit_text(obj["text"], limit))
    return obj


def _header_block(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "emoji": True, "text": fit_text(text, MAX_HEADER_TEXT)}}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _number_page(message: Message, number: int, total: int) -> Message:
    """Add "(2/3)" to the header (keeping it within 150 characters) and to the text's first line."""
    suffix = f" ({number}/{total})"
    first, newline, rest = (message.get("text") or "").partition("\n")
    blocks = list(message.get("blocks", ()))
    index = next((i for i, b in enumerate(blocks)
                  if b.get("type") == "header" and isinstance(b.get("text"), Mapping)), None)
    if index is None:  # a template without a header: say it in a line of its own
        blocks.insert(0, {"type": "context", "elements": [{"type": "mrkdwn", "text": f"Part {number}/{total}"}]})
    else:
        header = blocks[index]
        text = fit_text(str(header["text"].get("text", "")), MAX_HEADER_TEXT - len(suffix)) + suffix
        blocks[index] = dict(header, text=dict(header["text"], text=text))
    return dict(message, text=first + suffix + newline + rest, blocks=blocks)


def add_note(message: Message, note: str) -> Message:
    """Append a context line to the last attachment (or the blocks) and to the text."""
    block = {"type": "context", "elements": [{"type": "mrkdwn", "text": note}]}
    out = dict(message, text=f"{message.get('text') or ''}\n{note}".strip())
    if message.get("attachments"):
        attachments = [dict(a) for a in message["attachments"]]
        attachments[-1]["blocks"] = [*attachments[-1].get("blocks", ()), block]
        out["attachments"] = attachments
    else:
        out["blocks"] = [*message.get("blocks", ()), block]
    return out
