"""Faults in what notifier talks to, end to end: nothing lost, nothing re-sent, one meta-alert per outage.

Source: the simulator's own fault injection (5xx bursts, APIG.0308 throttling with and without
Retry-After, HTML error pages, truncated JSON, dropped connections, an endpoint that accepts and
never answers). Channels: a webhook answering 500 or hanging, Slack rate limiting and 500s, an
SMTP server that is down; the other channels are unaffected and the failed one catches up in order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from notifier.simulator import ManualClock, Simulator, load_scenario
from tests.conftest import WriteConfig
from tests.pipeline_support import NODE_EXCEPTION, LinkedClock, Pipeline, source_toml, webhook_toml
from tests.support.fakes import FakeClock
from tests.support.slack_server import SlackServer
from tests.support.smtp_server import SmtpServer, free_port
from tests.support.webhook_receiver import WebhookReceiver


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(load_scenario("seed"), clock=ManualClock()) as s:
        yield s


@pytest.fixture
def clock(sim: Simulator) -> LinkedClock:
    return LinkedClock(sim)


def alerts(hook: WebhookReceiver, rule: str | None = None) -> list[dict[str, Any]]:
    return [a for r in hook.requests for a in r.json["alerts"] if rule is None or a["rule"] == rule]


SOURCE_FAULTS = {
    "5xx burst": {"kind": "http_error", "status": 503},
    "APIG.0308 with Retry-After": {"kind": "throttle", "retry_after": 30},
    "APIG.0308 without Retry-After": {"kind": "throttle", "retry_after": 0},
    "HTML error page": {"kind": "html", "status": 502},
    "truncated JSON": {"kind": "truncated_json"},
    "dropped connection": {"kind": "disconnect"},
    "accepts and never answers": {"kind": "latency", "delay": 3600},
}


@pytest.mark.parametrize("fault", SOURCE_FAULTS.values(), ids=SOURCE_FAULTS.keys())
def test_a_source_outage_neither_resolves_nor_resends_and_says_so_once(
        write_config: WriteConfig, sim: Simulator, clock: LinkedClock, webhook_receiver: WebhookReceiver,
        fault: dict[str, Any]) -> None:
    source = source_toml(sim.url).replace('timeout = "2s"', 'timeout = "0.3s"')
    p = Pipeline(write_config(source=source, rules=NODE_EXCEPTION, channels=webhook_toml(webhook_receiver.url)),
                 clock)
    try:
        p.cycle()
        assert [a["status"] for a in alerts(webhook_receiver, "node-exception")] == ["firing"]
        sim.set_fault(**fault)
        for _ in range(6):  # every cycle returns (the client's timeout bounds it); the service goes on
            clock.advance(60)
            report = p.cycle()
            assert report.source_failed and report.fetched == 0
        sim.clear_faults()
        for _ in range(2):
            clock.advance(60)
            assert not p.cycle().source_failed
    finally:
        p.close()
    assert [a["status"] for a in alerts(webhook_receiver, "node-exception")] == ["firing"]  # not resolved, not re-sent
    assert [a["status"] for a in alerts(webhook_receiver, "notifier-source-down")] == ["firing", "resolved"]


def test_one_broken_channel_delays_no_other_and_catches_up_in_order(
        write_config: WriteConfig, sim: Simulator, clock: LinkedClock, webhook_receiver: WebhookReceiver,
        slack_server: SlackServer, slack_paced: FakeClock) -> None:
    """A hanging webhook, Slack 429/500 and a dead SMTP server, one after the other and together."""
    smtp_port = free_port()
    channels = (webhook_toml(webhook_receiver.url) + 'timeout = "0.5s"\n'
                + f'[channels.team]\ntype = "slack"\nchannel = "#ops"\nbase_url = "{slack_server.base_url}"\n'
                + f'[channels.mail]\ntype = "email"\nhost = "127.0.0.1"\nport = {smtp_port}\nsecurity = "none"\n'
                  'from = "notifier@example.com"\nto = ["oncall@example.com"]\ntimeout = "1s"\n')
    p = Pipeline(write_config(source=source_toml(sim.url), rules=NODE_EXCEPTION, channels=channels), clock)
    try:
        webhook_receiver.respond_with(500, times=2)
        slack_server.fail_next("ratelimited", retry_after=1)
        slack_server.fail_next("500")
        p.cycle()  # SMTP is down (nothing listens), the webhook says 500, Slack 429: all queued
        assert p.store.outbox.rows(("pending",)), "the failures must be queued, not dropped"
        sim.set_node_status("job_sms", "DIS_INPUT", "EXCEPTION")
        clock.advance(60)
        p.cycle()
        with SmtpServer(port=smtp_port) as smtp:
            for _ in range(8):  # backoff rounds until every channel is drained
                clock.advance(300)
                p.deliver()
            mails = smtp.mails
        assert p.store.outbox.rows(("pending", "failed", "expired")) == ()
    finally:
        p.close()
    order = ["DLI_SMS_GES", "DIS_INPUT"]
    assert [a["node"] for a in alerts(webhook_receiver) if a["status"] == "firing"][-2:] == order
    keys = list(dict.fromkeys(r.headers["idempotency-key"] for r in webhook_receiver.requests))
    assert len(keys) == 2  # retries resent the same two notifications, nothing else
    slack_texts = [m["text"] for m in slack_server.messages]
    assert len(slack_texts) == 2 and "DLI_SMS_GES" in slack_texts[0] and "DIS_INPUT" in slack_texts[1]
    subjects = [str(m.message["Subject"]) for m in mails]
    assert len(subjects) == 2 and "DLI_SMS_GES" in subjects[0] and "DIS_INPUT" in subjects[1]


def test_a_webhook_that_accepts_and_never_answers_times_out_and_blocks_no_one(
        write_config: WriteConfig, sim: Simulator, clock: LinkedClock, webhook_receiver: WebhookReceiver) -> None:
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; nobody ever reads or answers
    try:
        channels = (webhook_toml(f"http://127.0.0.1:{silent.getsockname()[1]}/hook", name="stuck")
                    + 'timeout = "0.3s"\n' + webhook_toml(webhook_receiver.url))
        p = Pipeline(write_config(source=source_toml(sim.url), rules=NODE_EXCEPTION, channels=channels), clock)
        try:
            report = p.cycle()
            assert report.notifications == 2 and len(webhook_receiver.requests) == 1  # hook got its message
            (stuck,) = p.store.outbox.rows(("pending",))
            assert stuck.channel == "stuck" and stuck.attempts == 1 and "timed out" in (stuck.last_error or "").lower()
        finally:
            p.close()
    finally:
        silent.close()
