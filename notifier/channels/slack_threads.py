"""One Slack thread per incident: the first message, its replies, and the parent's edits.

``compose_incident`` wraps the messages ``slack_blocks.compose`` renders for a group with
what the Slack channel needs to thread them (the payload's ``"thread"`` object):

- the incident's first message is posted to the channel and becomes the parent
  (``"opens": true``); it alone carries the mentions, and the buttons;
- every later message is a reply in the parent's thread, and carries the parent's new
  content (``"parent"``): "CRITICAL job_sms: 3 of 5 nodes in EXCEPTION", then
  "RESOLVED job_sms: resolved after 14m", its colour changed with it. The last reply may
  be broadcast to the channel (``broadcast_resolved``).

Buttons carry ``{"i": incident, "j": job, "c": channel entry}`` as their value; the
Socket Mode listener (``notifier.slack_actions``) acts on them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from notifier.channels.slack_blocks import MAX_HEADER_TEXT, RESOLVED_ICON, Message, compose, fit_limits, fit_text
from notifier.core.durations import format_duration
from notifier.core.incidents import Conversation
from notifier.core.models import MessageGroup, Payload
from notifier.render import (
    SEVERITY_COLOR,
    SEVERITY_EMOJI,
    Renderer,
    headline,
    mrkdwn_escape,
    timestamp,
    worst_severity,
)

ACTIONS_BLOCK_ID = "notifier_actions"
ACK_ACTION = "notifier_ack"
SILENCE_ACTIONS = {"notifier_silence_1h": 3600.0, "notifier_silence_4h": 4 * 3600.0}
UNSILENCE_ACTION = "notifier_unsilence"
LOST_PARENT_NOTE = (":information_source: The first message of this incident is gone (deleted, or the state file "
                    "was reset), so this one starts a new thread.")


def compose_incident(renderer: Renderer, group: MessageGroup, conversation: Conversation, now: datetime, *,
                     mentions: Sequence[str] = (), buttons: bool = False,
                     broadcast: bool = False) -> tuple[Payload, ...]:
    """The group's messages as the first message of its incident or as replies in its thread."""
    incident = conversation.incident
    if conversation.edit_only:
        parent = parent_message(renderer, group, conversation, now, buttons=buttons)
        return ({"text": parent["text"], "thread": {"id": incident.id, "parent": parent, "edit_only": True}},)
    pages = [dict(p) for p in compose(renderer, group, now)]
    out: list[Payload] = []
    for number, page in enumerate(pages):
        if conversation.opens and number == 0:
            message = _with_mentions(page, mentions)
            if buttons and not conversation.closes:
                message = with_actions(message, action_value(incident.id, incident.job, group.channel))
            fitted = fit_limits(message)  # mentions and buttons added blocks: fit again, keeping the route
            out.append({**fitted, **({"channel": page["channel"]} if "channel" in page else {}),
                        "thread": {"id": incident.id, "opens": True}})
            continue
        thread: dict[str, Any] = {"id": incident.id}
        if number == 0:
            thread["parent"] = parent_message(renderer, group, conversation, now, buttons=buttons)
            if conversation.closes and broadcast:
                thread["broadcast"] = True
        out.append({**page, "thread": thread})  # page: already within limits (compose)
    return tuple(out)


def parent_message(renderer: Renderer, group: MessageGroup, conversation: Conversation, now: datetime, *,
                   buttons: bool) -> Message:
    """What the incident's first message shows now: the alerts still firing, or that it is over."""
    incident = conversation.incident
    shown = conversation.current or tuple(a for a in group.alerts if a.status == "resolved") or group.alerts
    current = MessageGroup(group.channel, group.group, shown, group.template, group.route)
    message = dict(compose(renderer, current, now)[0])
    if conversation.closes:
        title = (f"{RESOLVED_ICON} RESOLVED  {incident.job}: resolved after "
                 f"{format_duration(now - incident.opened_at)}")
        color = SEVERITY_COLOR["resolved"]
    else:
        worst = worst_severity(current) or "info"
        icon = SEVERITY_EMOJI.get(worst, ":white_circle:")
        title = f"{icon} {worst.upper()}  {status_line(current, conversation.nodes)}"
        color = SEVERITY_COLOR.get(worst, "#757575")
    message = _with_title(message, title, color)
    message = _with_context(message, f"Opened {incident.opened_at:%Y-%m-%d %H:%M} UTC · updates in the thread")
    if conversation.closes:
        return fit_limits(message)
    silence, acked = conversation.silence, conversation.acked_by
    if buttons:
        message = with_actions(message, action_value(incident.id, incident.job, group.channel),
                               silenced=silence.id if silence else None,
                               acknowledged=bool(acked) and len(acked) == len(conversation.current))
    if silence is not None:
        message = with_status(message, silence_line(silence.author or "-", silence.ends_at, silence.id), "silence")
    if acked:
        who = ", ".join(sorted(set(acked.values())))
        whole = len(acked) == len(conversation.current)
        message = with_status(message, f"Acknowledged by {who}" if whole else
                              f"{len(acked)} of {len(conversation.current)} alerts acknowledged by {who}", "ack")
    return fit_limits(message)


def silence_line(who: str, until: datetime, silence_id: str) -> str:
    return f"Silenced until {timestamp(until)} by {who} (`notifier silence expire {silence_id}`)"


def status_line(group: MessageGroup, nodes: int) -> str:
    """"job_sms: 3 of 5 nodes in EXCEPTION" when the firing alerts are nodes in one state, else the headline."""
    firing = [a for a in group.alerts if a.status == "firing"]
    states = {a.state for a in firing}
    if firing and nodes and len(states) == 1 and all(a.node for a in firing):
        return f"{group.group}: {len(firing)} of {nodes} nodes in {states.pop()}"
    return headline(group)


def action_value(incident: str, job: str, channel: str) -> str:
    return json.dumps({"i": incident, "j": job, "c": channel}, separators=(",", ":"))


def actions_block(value: str, *, silenced: str | None = None, acknowledged: bool = False) -> dict[str, Any]:
    """The buttons; after a silence, Unsilence (its value adds the silence id) replaces the Silence buttons."""
    def button(action: str, text: str, button_value: str = value, style: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "button", "action_id": action,
                               "text": {"type": "plain_text", "text": text, "emoji": True}, "value": button_value}
        if style:
            out["style"] = style
        return out
    elements = [] if acknowledged else [button(ACK_ACTION, "Acknowledge", style="primary")]
    if silenced is None:
        elements += [button("notifier_silence_1h", "Silence 1h"), button("notifier_silence_4h", "Silence 4h")]
    else:
        data = {**json.loads(value), "s": silenced}
        elements.append(button(UNSILENCE_ACTION, "Unsilence", json.dumps(data, separators=(",", ":")), "danger"))
    return {"type": "actions", "block_id": ACTIONS_BLOCK_ID, "elements": elements}


def with_actions(message: Mapping[str, Any], value: str, **state: Any) -> Message:
    """``message`` with its actions block replaced (or added at the end of the top-level blocks)."""
    blocks = [b for b in message.get("blocks", ()) if b.get("block_id") != ACTIONS_BLOCK_ID]
    elements = actions_block(value, **state)
    return {**message, "blocks": [*blocks, elements] if elements["elements"] else blocks}


def with_status(message: Mapping[str, Any], status: str | None, kind: str) -> Message:
    """``message`` with its ``kind`` status line ("silence", "ack") above the buttons: replaced, or removed (None)."""
    block_id = f"notifier_status_{kind}"
    blocks = [b for b in message.get("blocks", ()) if b.get("block_id") != block_id]
    if status is None:
        return {**message, "blocks": blocks}
    line = {"type": "context", "block_id": block_id, "elements": [{"type": "mrkdwn", "text": status}]}
    at = next((i for i, b in enumerate(blocks) if b.get("block_id") == ACTIONS_BLOCK_ID), len(blocks))
    return {**message, "blocks": [*blocks[:at], line, *blocks[at:]]}


def _with_mentions(message: Mapping[str, Any], mentions: Sequence[str]) -> Message:
    if not mentions:
        return dict(message)
    who = " ".join(dict.fromkeys(mentions))
    section = {"type": "section", "text": {"type": "mrkdwn", "text": f"cc {who}"}}
    return {**message, "text": f"{who} {message.get('text') or ''}".strip(), "blocks": [*message.get("blocks", ()),
                                                                                        section]}


def _with_title(message: Mapping[str, Any], title: str, color: str) -> Message:
    blocks = list(message.get("blocks", ()))
    header = {"type": "header", "text": {"type": "plain_text", "emoji": True, "text": fit_text(title, MAX_HEADER_TEXT)}}
    index = next((i for i, b in enumerate(blocks) if b.get("type") == "header"), None)
    if index is None:
        blocks.insert(0, header)
    else:
        blocks[index] = header
    attachments = [dict(a, color=color) for a in message.get("attachments", ())]
    out: Message = {**message, "text": mrkdwn_escape(" ".join(title.split()[1:])), "blocks": blocks}
    if attachments:
        out["attachments"] = attachments
    return out


def _with_context(message: Mapping[str, Any], text: str) -> Message:
    line = {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}
    return {**message, "blocks": [*message.get("blocks", ()), line]}
