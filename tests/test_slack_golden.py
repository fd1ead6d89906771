"""Golden files for the Slack thread of one incident: the first message, its replies, and the parent's edits.

Every message is also checked with slack_sdk's own Block Kit models, so a block Slack would
refuse (unknown type, text too long, a button without a text) fails here and not in a channel.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from slack_sdk.models.blocks import Block

from notifier.channels.slack_threads import (
    ACK_ACTION,
    ACTIONS_BLOCK_ID,
    UNSILENCE_ACTION,
    action_value,
    compose_incident,
    with_actions,
    with_status,
)
from notifier.core.durations import format_duration
from notifier.core.incidents import Conversation, Incident
from notifier.core.models import Alert, MessageGroup
from notifier.render import Renderer, timestamp
from tests.test_channel_slack import NODE, NOW, RESOLVED, T0, all_blocks, check_golden

INCIDENT = Incident(id="0123456789abcdef", channel="team-slack", route="", job="job_sms", opened_at=T0)
MENTIONS = ("<!subteam^S0123ABC>", "<@U0ALICE>")
SILENCE_ID = "abc123"
SECOND = replace(NODE, node="DIS_INPUT", node_type="DIS Stream", fingerprint="fedcba9876543210",
                 summary="DIS_INPUT entered EXCEPTION (was NORMAL)",
                 log_path="obs://dlf-log-example/job_sms/DIS_INPUT.job")
SECOND_RESOLVED = replace(SECOND, status="resolved", state="NORMAL", previous_state="EXCEPTION",
                          since=T0 + timedelta(minutes=14), ends_at=T0 + timedelta(minutes=14),
                          summary="DIS_INPUT back to NORMAL after 14m")
RESOLVED_AT = INCIDENT.opened_at + timedelta(minutes=14)
VALUE = action_value(INCIDENT.id, INCIDENT.job, INCIDENT.channel)


def group(*alerts: Alert) -> MessageGroup:
    return MessageGroup("team-slack", "job_sms", alerts, "default")


def conversation(*, opens: bool = False, closes: bool = False, current: Sequence[Alert] = (),
                 nodes: int = 5) -> Conversation:
    return Conversation(INCIDENT, opens=opens, closes=closes, current=tuple(current), nodes=nodes)


def incident_messages(alerts: Sequence[Alert], conv: Conversation, now: datetime, *,
                      broadcast: bool = False) -> tuple[dict[str, Any], ...]:
    """compose_incident as the Slack channel calls it with buttons on (mentions given every time, on purpose)."""
    return tuple(dict(p) for p in compose_incident(Renderer(), group(*alerts), conv, now, mentions=MENTIONS,
                                                   buttons=True, broadcast=broadcast))


# --- checks -----------------------------------------------------------------------------

def assert_valid_block_kit(message: Mapping[str, Any]) -> None:
    """Every block, top-level and in attachments, is one slack_sdk knows and finds valid; the text fits."""
    assert isinstance(message.get("text"), str) and 0 < len(message["text"]) <= 40000
    blocks = [*message.get("blocks", ()), *(b for a in message.get("attachments", ()) for b in a.get("blocks", ()))]
    assert blocks, "a message without blocks"
    for block in blocks:
        parsed = Block.parse(dict(block))
        assert parsed is not None, f"slack_sdk does not know this block type: {block.get('type')!r}"
        parsed.validate_json()  # the block's own limits (header text 150, section text 3000, ...)
        parsed.to_dict()  # validate_json does not look inside elements: to_dict validates each (button text 75, ...)


def header(message: Mapping[str, Any]) -> str:
    return next(b["text"]["text"] for b in message["blocks"] if b["type"] == "header")


def buttons(message: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(action_id, visible text) of each button, in order; [] when there is no actions block."""
    blocks = [b for b in message.get("blocks", ()) if b.get("type") == "actions"]
    assert len(blocks) <= 1
    return [(e["action_id"], e["text"]["text"]) for b in blocks for e in b["elements"]]


def status_lines(message: Mapping[str, Any]) -> list[str]:
    return [e["text"] for b in message.get("blocks", ()) if str(b.get("block_id")).startswith("notifier_status")
            for e in b["elements"]]


def assert_no_mentions(message: Mapping[str, Any]) -> None:
    text = json.dumps(message)
    for mention in MENTIONS:
        assert mention not in text
    assert "cc " not in text


def parent_of(reply: Mapping[str, Any]) -> dict[str, Any]:
    parent = reply["thread"]["parent"]
    assert_valid_block_kit(parent)
    return dict(parent)


# --- the incident's first message ---------------------------------------------------------

def test_first_message_opens_the_thread_with_mentions_and_buttons() -> None:
    """The first message is the parent: thread opens, the mentions once, Acknowledge / Silence 1h / Silence 4h."""
    (message,) = incident_messages([NODE], conversation(opens=True, current=[NODE]), NOW)
    assert_valid_block_kit(message)

    assert message["thread"] == {"id": "0123456789abcdef", "opens": True}
    assert header(message) == ":red_circle: CRITICAL  job_sms: DLI_SMS_GES entered EXCEPTION"
    assert message["attachments"][0]["color"] == "#d32f2f"
    assert message["text"].startswith("<!subteam^S0123ABC> <@U0ALICE> ")
    assert [t for _, t in buttons(message)] == ["Acknowledge", "Silence 1h", "Silence 4h"]
    actions = next(b for b in message["blocks"] if b["type"] == "actions")
    assert actions["block_id"] == ACTIONS_BLOCK_ID
    assert {json.loads(e["value"])["i"] for e in actions["elements"]} == {"0123456789abcdef"}
    assert "cc <!subteam^S0123ABC> <@U0ALICE>" in json.dumps(message["blocks"])
    check_golden("slack_thread_open.json", message)


# --- replies ------------------------------------------------------------------------------

def test_reply_while_firing_edits_the_parent_to_count_the_nodes() -> None:
    """A second node fails: a reply in the thread about it, the parent now "2 of 5 nodes in EXCEPTION"."""
    (reply,) = incident_messages([SECOND], conversation(current=[NODE, SECOND], nodes=5), NOW)
    assert_valid_block_kit(reply)
    parent = parent_of(reply)

    assert set(reply["thread"]) == {"id", "parent"}
    assert reply["thread"]["id"] == "0123456789abcdef"
    assert header(reply) == ":red_circle: CRITICAL  job_sms: DIS_INPUT entered EXCEPTION"
    assert buttons(reply) == []
    assert_no_mentions(reply)

    assert header(parent) == ":red_circle: CRITICAL  job_sms: 2 of 5 nodes in EXCEPTION"
    assert parent["attachments"][0]["color"] == "#d32f2f"
    assert "DLI_SMS_GES" in json.dumps(parent) and "DIS_INPUT" in json.dumps(parent)
    assert [t for _, t in buttons(parent)] == ["Acknowledge", "Silence 1h", "Silence 4h"]
    check_golden("slack_thread_reply_firing.json", reply)


def test_reply_that_resolves_the_incident_is_broadcast_and_the_parent_says_resolved() -> None:
    """The last nodes recover: the reply goes to the channel too; the parent is green, resolved, without buttons."""
    (reply,) = incident_messages([RESOLVED, SECOND_RESOLVED], conversation(closes=True, current=[]), RESOLVED_AT,
                                 broadcast=True)
    assert_valid_block_kit(reply)
    parent = parent_of(reply)

    assert reply["thread"]["id"] == "0123456789abcdef" and reply["thread"]["broadcast"] is True
    assert header(reply).startswith(":white_check_mark: RESOLVED  ")
    assert reply["attachments"][0]["color"] == "#2e7d32"
    assert buttons(reply) == []
    assert_no_mentions(reply)

    assert header(parent) == ":white_check_mark: RESOLVED  job_sms: resolved after 14m"
    assert parent["attachments"][0]["color"] == "#2e7d32"
    assert buttons(parent) == []
    assert not any(b["type"] == "actions" for b in all_blocks(parent))
    check_golden("slack_thread_reply_resolved.json", reply)


def test_reply_without_broadcast_stays_in_the_thread() -> None:
    """broadcast=False (the default): the resolving reply has no "broadcast" in its thread."""
    (reply,) = incident_messages([RESOLVED], conversation(closes=True, current=[]), RESOLVED_AT)
    assert_valid_block_kit(reply)
    assert_valid_block_kit(parent_of(reply))
    assert "broadcast" not in reply["thread"]


# --- clicks on the parent -----------------------------------------------------------------

def firing_parent() -> dict[str, Any]:
    (reply,) = incident_messages([SECOND], conversation(current=[NODE, SECOND]), NOW)
    return parent_of(reply)


def silenced(parent: Mapping[str, Any]) -> dict[str, Any]:
    """The parent as ButtonListener.handle edits it after "Silence 4h" (the status line worded as it words it)."""
    duration = 4 * 3600.0
    status = (f"Silenced for {format_duration(duration)} by <@U0ALICE> (until "
              f"{timestamp(NOW + timedelta(seconds=duration))}; `notifier silence expire {SILENCE_ID}`).")
    return with_status(with_actions(parent, VALUE, silenced=SILENCE_ID), status, "silence")


def test_silence_4h_click_replaces_the_silence_buttons_with_unsilence() -> None:
    edited = silenced(firing_parent())
    assert_valid_block_kit(edited)

    assert buttons(edited) == [(ACK_ACTION, "Acknowledge"), (UNSILENCE_ACTION, "Unsilence")]
    unsilence = next(e for b in edited["blocks"] if b["type"] == "actions" for e in b["elements"]
                     if e["action_id"] == UNSILENCE_ACTION)
    assert json.loads(unsilence["value"]) == {"i": "0123456789abcdef", "j": "job_sms", "c": "team-slack",
                                              "s": SILENCE_ID}
    assert status_lines(edited) == [
        "Silenced for 4h by <@U0ALICE> (until 2019-03-01 07:16 UTC; `notifier silence expire abc123`)."]
    # the status line sits right above the buttons
    kinds = [b.get("block_id") for b in edited["blocks"]]
    assert kinds[-2:] == ["notifier_status_silence", ACTIONS_BLOCK_ID]
    assert header(edited) == ":red_circle: CRITICAL  job_sms: 2 of 5 nodes in EXCEPTION"
    check_golden("slack_thread_parent_silenced.json", edited)


def test_acknowledge_click_removes_acknowledge() -> None:
    """Acknowledge on the silenced parent: Acknowledge goes, Unsilence stays, both status lines stay."""
    status = "Acknowledged by <@U0ALICE>: no more reminders; the resolve is still sent."
    edited = with_status(with_actions(silenced(firing_parent()), VALUE, silenced=SILENCE_ID, acknowledged=True),
                         status, "ack")
    assert_valid_block_kit(edited)

    assert buttons(edited) == [(UNSILENCE_ACTION, "Unsilence")]
    assert len(status_lines(edited)) == 2 and status_lines(edited)[-1] == status
    check_golden("slack_thread_parent_acknowledged.json", edited)


def test_acknowledge_click_on_a_fresh_parent_keeps_the_silence_buttons() -> None:
    edited = with_status(with_actions(firing_parent(), VALUE, acknowledged=True), "Acknowledged by <@U0ALICE>.", "ack")
    assert_valid_block_kit(edited)
    assert [t for _, t in buttons(edited)] == ["Silence 1h", "Silence 4h"]


@pytest.mark.parametrize("block", [
    {"type": "actions", "block_id": ACTIONS_BLOCK_ID, "elements": [
        {"type": "button", "action_id": ACK_ACTION, "text": {"type": "plain_text", "text": "x" * 76}, "value": "v"}]},
    {"type": "header", "text": {"type": "plain_text", "text": "x" * 151}},
    {"type": "no_such_block"},
], ids=["long-button-text", "long-header", "unknown-type"])
def test_the_validator_itself_rejects_what_slack_rejects(block: dict[str, Any]) -> None:
    """assert_valid_block_kit is not a no-op: slack_sdk refuses these."""
    with pytest.raises(Exception):  # noqa: B017 (AssertionError or SlackObjectFormationError)
        assert_valid_block_kit({"text": "x", "blocks": [block]})
