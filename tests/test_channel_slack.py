"""The Slack channel, driven through the real slack_sdk clients against a loopback Slack server."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from notifier.channels import slack, slack_blocks
from notifier.core.models import Alert, MessageGroup
from notifier.errors import ChannelError, ConfigError, TemplateError
from notifier.render import Renderer
from notifier.strict_toml import TableReader
from tests.support import fakes
from tests.support.fakes import FakeClock
from tests.support.slack_server import WEBHOOK_PATH, SlackServer

GOLDEN = Path(__file__).parent / "golden"
TOKEN = "xoxb-test"
T0 = datetime(2019, 3, 1, 3, 4, 25, tzinfo=timezone.utc)
NOW = T0 + timedelta(minutes=12)

NODE = Alert(
    status="firing", rule="node-exception", severity="critical", fingerprint="0123456789abcdef",
    job="job_sms", node="DLI_SMS_GES", node_type="DLI SQL", state="EXCEPTION", previous_state="NORMAL",
    since=T0, starts_at=T0, log_path="obs://dlf-log-example/job_sms/DLI_SMS_GES.job",
    summary="DLI_SMS_GES entered EXCEPTION (was NORMAL)", job_status="NORMAL",
    counters={"totalGetBytes": 1024, "totalGetRecords": 208, "totalPutBytes": 512, "totalPutRecords": 207},
)
RESOLVED = replace(NODE, status="resolved", state="NORMAL", previous_state="EXCEPTION",
                   since=T0 + timedelta(minutes=14), ends_at=T0 + timedelta(minutes=14),
                   summary="DLI_SMS_GES back to NORMAL after 14m")


def group(*alerts: Alert, template: str = "default") -> MessageGroup:
    return MessageGroup("team-slack", "job_sms", alerts, template)


def parse(table: Mapping[str, Any]) -> slack.SlackSettings:
    return slack.TYPE.parse(TableReader({"type": "slack", **table}, file="notifier.toml", where="channels.team-slack"))


def compose(g: MessageGroup, renderer: Renderer | None = None, now: datetime = NOW) -> tuple[dict[str, Any], ...]:
    return tuple(dict(p) for p in slack.TYPE.compose(renderer or Renderer(), g, now))


notification = partial(fakes.notification, channel="team-slack", created_at=NOW)


@pytest.fixture
def token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)


@pytest.fixture
def channel(slack_server: SlackServer, clock: FakeClock, token_env: None) -> Iterator[slack.SlackChannel]:
    """A token-mode channel posting to #data-alerts on the loopback server; it sleeps on the fake clock."""
    settings = parse({"channel": "#data-alerts", "base_url": slack_server.base_url, "timeout": "5s"})
    ch = slack.TYPE.create("team-slack", settings, sleep=clock.sleep, monotonic=clock.monotonic)
    yield ch
    ch.close()


def all_blocks(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [*message.get("blocks", ()), *(b for a in message.get("attachments", ()) for b in a["blocks"])]


def assert_within_limits(message: Mapping[str, Any]) -> None:
    """Slack's documented limits, checked independently of the code under test."""
    assert 0 < len(message["text"]) <= 40000
    blocks = all_blocks(message)
    assert len(blocks) <= 50
    for block in blocks:
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150
        if block["type"] == "section":
            assert len(block.get("text", {}).get("text", "")) <= 3000
            assert len(block.get("fields", ())) <= 10
            assert all(len(f["text"]) <= 2000 for f in block.get("fields", ()))
        if block["type"] == "context":
            assert 0 < len(block["elements"]) <= 10


def field_texts(message: Mapping[str, Any]) -> list[str]:
    return [f["text"] for b in all_blocks(message) for f in b.get("fields", ())]


def check_golden(name: str, data: Any) -> None:
    """Compare with tests/golden/<name>; UPDATE_GOLDEN=1 rewrites the file."""
    path = GOLDEN / name
    text = json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


# --- settings -------------------------------------------------------------------------

@pytest.mark.parametrize(("table", "expected"), [
    ({"channel": "#data-alerts"},
     slack.SlackSettings(mode="token", channel="#data-alerts", token_env="SLACK_BOT_TOKEN", thread=True)),
    ({"channel": "C0123", "token_file": "/run/credentials/slack", "base_url": "http://127.0.0.1:9/api",
      "timeout": "3s", "username": "notifier", "icon_emoji": ":bell:", "thread": False, "broadcast_resolved": True,
      "mention": {"critical": ["<!subteam^S0123ABC>"]}, "app_token_env": "SLACK_APP_TOKEN", "allow": ["U0ALICE"]},
     slack.SlackSettings(mode="token", channel="C0123", token_file="/run/credentials/slack",
                         base_url="http://127.0.0.1:9/api/", timeout=3.0, username="notifier", icon_emoji=":bell:",
                         thread=False, broadcast_resolved=True, mention={"critical": ("<!subteam^S0123ABC>",)},
                         app_token_env="SLACK_APP_TOKEN", allow=("U0ALICE",))),
    ({"webhook_url_env": "SLACK_WEBHOOK_URL"},
     slack.SlackSettings(mode="webhook", webhook_url_env="SLACK_WEBHOOK_URL")),
], ids=["token-defaults", "token-everything", "webhook"])
def test_parse_accepts_both_modes(table: dict[str, Any], expected: slack.SlackSettings) -> None:
    """A valid table parses into frozen settings, with the token variable defaulting to SLACK_BOT_TOKEN."""
    assert parse(table) == expected


@pytest.mark.parametrize(("table", "message"), [
    ({}, r"channels\.team-slack: channel: required with a bot token"),
    ({"token_env": "TOKEN", "webhook_url_env": "HOOK"}, r"webhook_url_env: set either a bot token"),
    ({"webhook_url_env": "HOOK", "channel": "#a"}, r"channel: an incoming webhook posts to the channel"),
    ({"webhook_url_env": "HOOK", "base_url": "http://x/api/"}, r"base_url: base_url is for the bot token mode"),
    ({"channel": "#a", "token_env": "A", "token_file": "/f"}, r"token_file: set token_env or token_file"),
    ({"channel": "#a", "base_url": "ftp://x"}, r"base_url: expected an http\(s\) URL"),
    ({"channel": "#a", "timeout": "soon"}, r"timeout: invalid duration"),
    ({"channel": "#a", "chanel": "#b"}, r"chanel: unknown key \(did you mean 'channel'\?\)"),
], ids=["no-channel", "both-modes", "webhook-channel", "webhook-base-url", "two-token-sources", "bad-base-url",
        "bad-timeout", "typo"])
def test_parse_rejects_bad_tables(table: dict[str, Any], message: str) -> None:
    """Every mistake is a ConfigError naming the file, the table and the key."""
    with pytest.raises(ConfigError, match=r"^notifier\.toml: .*" + message):
        parse(table)


def test_create_names_the_missing_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A token that is not set is a ConfigError naming the variable."""
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    with pytest.raises(ConfigError,
                       match=r"channels\.team-slack: missing secret: set environment variable SLACK_BOT_TOKEN"):
        slack.TYPE.create("team-slack", parse({"channel": "#a"}))


def test_create_rejects_a_webhook_url_that_is_not_http_without_showing_it() -> None:
    """A malformed webhook URL is refused at start-up, and the error does not repeat the secret."""
    settings = parse({"webhook_url_env": "HOOK"})
    with pytest.raises(ConfigError, match="not an http") as info:
        slack.TYPE.create("team-slack", settings, environ={"HOOK": "hooks.slack.com/services/SECRET"})
    assert "SECRET" not in str(info.value)


# --- what arrives ---------------------------------------------------------------------

def test_single_firing_node_alert_arrives_as_block_kit(channel: slack.SlackChannel, slack_server: SlackServer) -> None:
    """A firing node alert arrives with a severity header, colour, every field, log path and counters."""
    (payload,) = compose(group(NODE))
    channel.send(notification(payload))

    (message,) = slack_server.wait_for(1)
    assert message["channel"] == "#data-alerts"
    assert message["blocks"][0]["text"]["text"] == ":red_circle: CRITICAL  job_sms: DLI_SMS_GES entered EXCEPTION"
    assert message["attachments"][0]["color"] == "#d32f2f"
    assert field_texts(message) == [
        "*Node*\nDLI_SMS_GES", "*Node type*\nDLI SQL", "*State*\nEXCEPTION", "*Previous state*\nNORMAL",
        "*Since*\n2019-03-01 03:04 UTC (12 min ago)", "*Job status*\nNORMAL",
        "*Records read / written*\n208 / 207", "*Bytes read / written*\n1,024 / 512",
    ]
    assert "obs://dlf-log-example/job_sms/DLI_SMS_GES.job" in json.dumps(message)
    assert message["text"].startswith(":red_circle: CRITICAL  job_sms: DLI_SMS_GES entered EXCEPTION")
    check_golden("slack_node_firing.json", message)


def test_resolved_alert_looks_resolved(channel: slack.SlackChannel, slack_server: SlackServer) -> None:
    """A resolved alert is green, says RESOLVED with a check mark, and shows how long it lasted."""
    (payload,) = compose(group(RESOLVED), now=T0 + timedelta(minutes=17))
    channel.send(notification(payload))

    (message,) = slack_server.wait_for(1)
    assert message["blocks"][0]["text"]["text"] == (
        ":white_check_mark: RESOLVED  job_sms: DLI_SMS_GES back to NORMAL after 14m")
    assert message["attachments"][0]["color"] == "#2e7d32"
    assert "*Started*\n2019-03-01 03:04 UTC (17 min ago)" in field_texts(message)
    assert "*Resolved*\n2019-03-01 03:18 UTC (after 14m)" in field_texts(message)
    assert not any("Silence" in json.dumps(b) for b in all_blocks(message))
    check_golden("slack_node_resolved.json", message)


def test_grouped_message_shows_each_alert_in_its_own_section() -> None:
    """Three alerts of one job: one header counting them, then one section per node, divided."""
    alerts = (NODE, replace(NODE, node="DIS_INPUT", fingerprint="1"),
              replace(RESOLVED, node="OBS_OUT", fingerprint="2"))
    (message,) = compose(group(*alerts))

    assert message["blocks"][0]["text"]["text"] == ":red_circle: CRITICAL  job_sms: 3 alerts (2 firing, 1 resolved)"
    sections = [b["text"]["text"] for b in all_blocks(message) if b["type"] == "section"]
    assert [s.split("*")[1] for s in sections] == ["DLI_SMS_GES", "DIS_INPUT", "OBS_OUT"]
    assert sections[2].startswith(":white_check_mark:")
    assert [b["type"] for b in all_blocks(message)].count("divider") == 2
    assert_within_limits(message)


def test_two_hundred_alerts_make_valid_messages_that_account_for_every_alert(
        channel: slack.SlackChannel, slack_server: SlackServer) -> None:
    """200 alerts of one job fit Slack's limits, Slack accepts them, and every alert is listed or counted."""
    alerts = tuple(replace(NODE, node=f"NODE_{i:03d}", fingerprint=f"{i:016d}",
                           status="resolved" if i % 5 == 0 else "firing") for i in range(200))
    payloads = compose(group(*alerts))

    for i, payload in enumerate(payloads, 1):
        assert_within_limits(payload)
        channel.send(notification(payload, id=i))
    messages = slack_server.wait_for(len(payloads))
    shown = set(re.findall(r"NODE_\d{3}", json.dumps([all_blocks(m) for m in messages])))
    more = sum(int(n) for m in messages for n in re.findall(r"and (\d+) more alerts", json.dumps(all_blocks(m))))
    assert len(shown) + more == 200
    assert "200 alerts (160 firing, 40 resolved)" in messages[0]["blocks"][0]["text"]["text"]


def test_a_group_too_big_for_ten_messages_is_split_numbered_and_counted(tmp_path: Path) -> None:
    """With a template of three blocks per alert, pages are numbered (n/10) and the rest is "and N more"."""
    (tmp_path / "verbose.slack.j2").write_text(
        '{"text": {{ headline|tojson }}, "blocks": [{"type": "header", "text": {"type": "plain_text", '
        '"text": {{ headline|tojson }}}}], "attachments": [{"color": {{ color|tojson }}, "blocks": ['
        '{% for a in alerts %}{"type": "section", "text": {"type": "mrkdwn", "text": {{ a.node|tojson }}}},'
        '{"type": "context", "elements": [{"type": "mrkdwn", "text": {{ a.state|tojson }}}]},'
        '{"type": "divider"}{{ "," if not loop.last else "" }}{% endfor %}]}]}')
    alerts = tuple(replace(NODE, node=f"NODE_{i:03d}", fingerprint=f"{i:016d}") for i in range(200))

    messages = compose(group(*alerts, template="verbose"), Renderer(tmp_path, strict=True))

    assert len(messages) == slack_blocks.MAX_MESSAGES
    assert [m["blocks"][0]["text"]["text"][-7:] for m in messages[:2]] == [" (1/10)", " (2/10)"]
    for message in messages:
        assert_within_limits(message)
    shown = set(re.findall(r"NODE_\d{3}", json.dumps([all_blocks(m) for m in messages])))
    (more,) = re.findall(r"and (\d+) more alerts", json.dumps(all_blocks(messages[-1])))
    assert len(shown) + int(more) == 200 and int(more) > 0
    assert f"and {more} more alerts" in messages[-1]["text"]


def test_oversized_texts_are_truncated_not_rejected(channel: slack.SlackChannel, slack_server: SlackServer) -> None:
    """A 5,000-character summary and a 300-character job name are cut to fit, and Slack accepts the message."""
    long = replace(NODE, job="J" * 300, summary="x" * 5000, log_path="obs://" + "l" * 2500)
    (payload,) = compose(MessageGroup("team-slack", "J" * 300, (long,)))

    assert_within_limits(payload)
    assert payload["blocks"][0]["text"]["text"].endswith(slack_blocks.TRUNCATED)
    channel.send(notification(payload))
    assert len(slack_server.wait_for(1)) == 1


def test_node_names_cannot_mention_anyone() -> None:
    """mrkdwn text is escaped, so "<!channel>" in a node name stays text (the header is plain_text anyway)."""
    (message,) = compose(group(replace(NODE, node="<!channel>", summary="<!here> & co")))

    mrkdwn = message["attachments"][0]["blocks"]
    assert "&lt;!channel&gt;" in mrkdwn[0]["text"]["text"] and "&lt;!here&gt; &amp; co" in mrkdwn[0]["text"]["text"]
    assert "<!" not in json.dumps(mrkdwn) and "<!" not in message["text"]
    assert message["blocks"][0]["text"]["type"] == "plain_text"


@pytest.mark.parametrize("template", [
    '{"text": {{ no_such_variable|tojson }}}',
    '{"text": "unterminated',
    '["a list, not a message"]',
], ids=["undefined-variable", "not-json", "not-an-object"])
def test_a_broken_template_falls_back_to_the_built_in_message(
        tmp_path: Path, template: str, caplog: pytest.LogCaptureFixture) -> None:
    """A failing template is logged and replaced by the built-in message; strict mode raises instead."""
    (tmp_path / "broken.slack.j2").write_text(template)
    g = group(NODE, template="broken")

    (message,) = compose(g, Renderer(tmp_path))

    assert message["blocks"][0]["text"]["text"] == ":red_circle: CRITICAL  job_sms: DLI_SMS_GES entered EXCEPTION"
    assert "[CRITICAL] job_sms/DLI_SMS_GES" in message["attachments"][0]["blocks"][0]["text"]["text"]
    assert "slack template failed" in caplog.text
    with pytest.raises(TemplateError):
        compose(g, Renderer(tmp_path, strict=True))


def test_every_sample_group_composes_within_limits() -> None:
    """The default template renders every sample shape (node, job, event, resolved) in strict mode."""
    from notifier.render import sample_groups

    for g in sample_groups("team-slack"):
        for message in slack.TYPE.compose(Renderer(strict=True), g, NOW):
            assert_within_limits(message)
            json.dumps(message)


# --- webhook mode ---------------------------------------------------------------------

def webhook_channel(server: SlackServer, clock: FakeClock) -> slack.SlackChannel:
    return slack.TYPE.create("team-slack", parse({"webhook_url_env": "SLACK_WEBHOOK_URL"}),
                             environ={"SLACK_WEBHOOK_URL": server.webhook_url},
                             sleep=clock.sleep, monotonic=clock.monotonic)


def test_webhook_mode_delivers(slack_server: SlackServer, clock: FakeClock) -> None:
    """Through an incoming webhook the same Block Kit arrives, without a token."""
    (payload,) = compose(group(NODE))
    webhook_channel(slack_server, clock).send(notification(payload))

    (message,) = slack_server.wait_for(1)
    (request,) = slack_server.requests
    assert request.path == WEBHOOK_PATH and "authorization" not in request.headers
    assert message["blocks"] == payload["blocks"] and message["attachments"] == payload["attachments"]


@pytest.mark.parametrize(("kind", "retryable", "says"), [
    ("invalid_token", False,
     "was revoked or its app removed: create a new webhook and update environment variable SLACK_WEBHOOK_URL"),
    ("channel_is_archived", False, "unarchive it, or create a new webhook"),
    ("no_service", False, "create a new webhook"),
    ("500", True, "will retry"),
], ids=["invalid-token", "archived", "no-service", "server-error"])
def test_webhook_errors_are_classified_without_the_url(
        slack_server: SlackServer, clock: FakeClock, caplog: pytest.LogCaptureFixture,
        kind: str, retryable: bool, says: str) -> None:
    """Webhook errors say what to do, and neither the error nor the log shows the webhook URL."""
    caplog.set_level(logging.DEBUG)
    slack_server.fail_next(kind)
    with pytest.raises(ChannelError) as info:
        webhook_channel(slack_server, clock).send(notification(compose(group(NODE))[0]))

    assert info.value.retryable is retryable
    assert says in str(info.value)
    assert WEBHOOK_PATH not in str(info.value) and WEBHOOK_PATH not in caplog.text


# --- rate limits and pacing -----------------------------------------------------------

def test_rate_limited_post_waits_retry_after_then_delivers_once(
        channel: slack.SlackChannel, slack_server: SlackServer, clock: FakeClock) -> None:
    """A 429 with Retry-After: 2 is waited out (injected sleep) and the message is delivered exactly once."""
    slack_server.fail_next("ratelimited", retry_after=2)
    channel.send(notification(compose(group(NODE))[0]))

    assert clock.sleeps == [2.0]
    assert len(slack_server.requests) == 2
    assert len(slack_server.wait_for(1)) == 1


def test_a_long_retry_after_goes_back_to_the_outbox(
        channel: slack.SlackChannel, slack_server: SlackServer, clock: FakeClock) -> None:
    """A Retry-After longer than 5 s is not slept through: the outbox gets retry_after and retries later."""
    slack_server.fail_next("ratelimited", retry_after=30)
    with pytest.raises(ChannelError) as info:
        channel.send(notification(compose(group(NODE))[0]))

    assert (info.value.retryable, info.value.retry_after) == (True, 30.0)
    assert clock.sleeps == [] and len(slack_server.requests) == 1


def test_posts_to_one_slack_channel_are_paced_one_per_second(
        channel: slack.SlackChannel, slack_server: SlackServer, clock: FakeClock) -> None:
    """Two posts in a row wait about a second between them; a post after a pause does not wait."""
    (payload,) = compose(group(NODE))
    channel.send(notification(payload, 1))
    channel.send(notification(payload, 2))
    assert clock.sleeps == [pytest.approx(1.0)]

    clock.advance(5)
    channel.send(notification(payload, 3))
    assert clock.sleeps == [pytest.approx(1.0)]
    assert len(slack_server.wait_for(3)) == 3


# --- errors ---------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "fix"), [
    ("invalid_auth", "check environment variable SLACK_BOT_TOKEN: it must hold a valid bot token"),
    ("channel_not_found", "create the channel or fix `channel` in [channels.team-slack]"),
    ("not_in_channel", "invite the bot: /invite @app in #data-alerts"),
], ids=["invalid-auth", "channel-not-found", "not-in-channel"])
def test_permanent_errors_name_the_fix_and_not_the_token(
        channel: slack.SlackChannel, slack_server: SlackServer, caplog: pytest.LogCaptureFixture,
        kind: str, fix: str) -> None:
    """Auth and channel errors are not retried; the error says how to fix it, never the token.

    The channel does not log it as well: the delivery's "failed permanently" line (or
    test-channel's FAILED line) reports the error once.
    """
    caplog.set_level(logging.DEBUG)
    slack_server.fail_next(kind)
    with pytest.raises(ChannelError) as info:
        channel.send(notification(compose(group(NODE))[0]))

    assert info.value.retryable is False
    assert kind in str(info.value) and fix in str(info.value)
    assert fix not in caplog.text
    assert TOKEN not in str(info.value) and TOKEN not in caplog.text


def test_a_wrong_token_is_invalid_auth(slack_server: SlackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A token the server does not know is answered invalid_auth: permanent."""
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-wrong")
    ch = slack.TYPE.create("team-slack", parse({"channel": "#data-alerts", "base_url": slack_server.base_url}))
    with pytest.raises(ChannelError, match="invalid_auth") as info:
        ch.send(notification(compose(group(NODE))[0]))
    assert info.value.retryable is False and "xoxb-wrong" not in str(info.value)


def test_server_error_is_retryable(channel: slack.SlackChannel, slack_server: SlackServer) -> None:
    """An HTTP 500 is transient."""
    slack_server.fail_next("500")
    with pytest.raises(ChannelError, match=r"failed: Slack answered HTTP 500; will retry$") as info:
        channel.send(notification(compose(group(NODE))[0]))
    assert info.value.retryable is True


def test_slack_down_is_retryable(channel: slack.SlackChannel, slack_server: SlackServer) -> None:
    """A refused connection (the server is stopped) is transient."""
    slack_server.stop()
    with pytest.raises(ChannelError, match="cannot reach Slack") as info:
        channel.send(notification(compose(group(NODE))[0]))
    assert info.value.retryable is True


def test_a_server_that_never_answers_times_out_retryably(token_env: None) -> None:
    """A connection that hangs past `timeout` is transient."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts into the backlog, never answers
        port = silent.getsockname()[1]
        ch = slack.TYPE.create("team-slack", parse({"channel": "#a", "timeout": "200ms",
                                                    "base_url": f"http://127.0.0.1:{port}/api/"}))
        with pytest.raises(ChannelError, match="cannot reach Slack") as info:
            ch.send(notification(compose(group(NODE))[0]))
    assert info.value.retryable is True


def test_a_refused_layout_is_resent_as_plain_text(
        channel: slack.SlackChannel, slack_server: SlackServer, caplog: pytest.LogCaptureFixture) -> None:
    """If Slack refuses the blocks (invalid_blocks), the text alone is sent: the alert is not lost."""
    slack_server.fail_next("invalid_blocks")
    (payload,) = compose(group(NODE))
    channel.send(notification(payload))

    (message,) = slack_server.wait_for(1)
    assert message["text"] == payload["text"] and "blocks" not in message
    assert len(slack_server.requests) == 2
    assert "sending it as plain text" in caplog.text


def test_check_asks_who_the_token_is(channel: slack.SlackChannel) -> None:
    """check() calls auth.test and reports the bot and team."""
    assert channel.check() == ("bot notifier in team Test; no app token, so no buttons "
                               "(set app_token_env for Socket Mode)")


def test_check_proves_the_app_token_too(slack_server: SlackServer, clock: FakeClock, token_env: None,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`notifier test-channel` checks both tokens: auth.test for the bot, apps.connections.open for the app."""
    settings = parse({"channel": "#data-alerts", "base_url": slack_server.base_url,
                      "app_token_env": "SLACK_APP_TOKEN"})
    slack_server.socket_url = "ws://127.0.0.1:9/link/"
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-test")
    good = slack.TYPE.create("team-slack", settings, sleep=clock.sleep, monotonic=clock.monotonic)
    assert good.check() == "bot notifier in team Test; app token ok (Socket Mode, buttons on)"
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-revoked")
    bad = slack.TYPE.create("team-slack", settings, sleep=clock.sleep, monotonic=clock.monotonic)
    with pytest.raises(ChannelError, match="environment variable SLACK_APP_TOKEN was refused") as info:
        bad.check()
    assert "xapp-revoked" not in str(info.value) and not info.value.retryable
    assert "bot notifier in team Test (bot token ok)" in str(info.value)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-wrong")
    wrong_bot = slack.TYPE.create("team-slack", settings, sleep=clock.sleep, monotonic=clock.monotonic)
    with pytest.raises(ChannelError, match=r"checking the bot token \(auth.test\) failed: invalid_auth"):
        wrong_bot.check()
    monkeypatch.setenv("SLACK_APP_TOKEN", "xoxb-not-an-app-token")
    with pytest.raises(ConfigError, match="must start with xapp-"):
        slack.TYPE.create("team-slack", settings)


@pytest.mark.parametrize(("job", "where"), [
    ("job_pay_1", "#payments"), ("ops/job_pay_1", "#payments"),  # the bare name, in every source
    ("ops/job_etl", "#ops"), ("job_etl", "#data-alerts"),  # the job key: every job of ops
    ("sales/job_etl", "#data-alerts"), ("job_pay-prod/job_etl", "#data-alerts"),  # a glob without '/': bare only
])
def test_routes_match_the_bare_job_name_or_the_job_key(job: str, where: str) -> None:
    settings = slack.SlackSettings(mode="token", channel="#data-alerts", token_env="T",
                                   routes=(("job_pay_*", "#payments"), ("ops/*", "#ops")))
    assert settings.target(job) == where
