"""The Alertmanager channel against loopback stand-ins: config, payload, HA sends, the outbox supersede rule,
and the sync in the running pipeline (re-posts, mutes, no duplicate messages, an outage).

The same behaviour against a real Alertmanager is in tests/test_alertmanager_real.py.
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
import traceback
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from notifier import statefile
from notifier.channels import CHANNEL_TYPES
from notifier.channels.alertmanager import (
    API_PATH,
    SYNC_GROUP,
    TYPE,
    AlertmanagerChannel,
    AlertmanagerSettings,
    merge,
    parse,
    sync_payload,
)
from notifier.checks import check
from notifier.core.models import Alert, Notification
from notifier.core.mutes import Matchers, Silence
from notifier.errors import ChannelError, ConfigError
from notifier.outbox import NewNotification
from notifier.simulator import ManualClock, Simulator, load_scenario
from notifier.state import CycleWrite, StateStore
from notifier.strict_toml import TableReader
from tests.conftest import WriteConfig
from tests.pipeline_support import NODE_EXCEPTION, LinkedClock, Pipeline, source_toml, webhook_toml
from tests.support.webhook_receiver import WebhookReceiver

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
TOKEN = "am-b3arer-S3cret"
PASSWORD = "basic-pa55-S3cret"
ROOT = Path(__file__).resolve().parent.parent


def reader(**table: Any) -> TableReader:
    return TableReader({"type": "alertmanager", **table}, file="notifier.toml", where="channels.am")


def alert(node: str = "DLI_SMS_GES", status: str = "firing", **fields: Any) -> Alert:
    return Alert(status=status, rule="node-exception", severity="critical", fingerprint=f"fp-{node}",  # type: ignore[arg-type]
                 job="job_sms", node=node, node_type="DLI SQL", state="EXCEPTION", previous_state="NORMAL",
                 since=T0, starts_at=T0, ends_at=T0 + timedelta(minutes=5) if status == "resolved" else None,
                 summary=f"{node} entered EXCEPTION", **fields)


def row(payload: Any, id: int = 1) -> Notification:  # noqa: A002
    return Notification(id=id, channel="am", group=SYNC_GROUP, payload=payload, created_at=T0, key=f"test-{id}")


# --- parse ----------------------------------------------------------------------------

def test_parse_one_url_and_the_defaults() -> None:
    """`url` alone: one Alertmanager, a re-post every minute, a 10 s timeout, no labels, no credentials."""
    settings = parse(reader(url="http://am.example:9093/"))
    assert settings == AlertmanagerSettings(urls=("http://am.example:9093",))
    assert (settings.resend, settings.timeout) == (60.0, 10.0)


def test_parse_everything() -> None:
    """An HA pair, static labels, a generator URL, the re-post interval and a bearer token's variable."""
    settings = parse(reader(urls=["http://am-a:9093", "http://am-b:9093/prefix"], labels={"team": "data"},
                            generator_url="https://notifier.example/{fingerprint}", resend="30s", timeout="5s",
                            bearer_token_env="AM_TOKEN"))
    assert settings.urls == ("http://am-a:9093", "http://am-b:9093/prefix")
    assert (settings.labels, settings.resend, settings.timeout) == ((("team", "data"),), 30.0, 5.0)
    assert (settings.generator_url, settings.bearer_token_env) == ("https://notifier.example/{fingerprint}", "AM_TOKEN")
    assert "am-a" not in repr(settings)  # URLs may carry credentials: never in a repr


@pytest.mark.parametrize(("table", "key", "message"), [
    ({}, "url", "required key is missing"),
    ({"url": "http://am:9093", "urls": ["http://am2:9093"]}, "urls", "either url .* or urls"),
    ({"urls": []}, "urls", "non-empty list"),
    ({"urls": "http://am:9093"}, "urls", "non-empty list"),
    ({"url": "ftp://am:9093/secretpath"}, "url", r"http:// or https://.*ftp://am:9093/\*\*\*"),
    ({"url": "am:9093"}, "url", "http:// or https://"),
    ({"urls": ["http://am:9093", "http://:9093"]}, "urls", r"urls\[1\]: the URL has no host"),
    ({"url": "http://am:99999"}, "url", "not a valid URL"),
    ({"url": "http://am:9093/?token=secretpath"}, "url", "no query"),
    ({"url": "http://notifier:secretpath@am:9093"}, "url", "credentials do not belong in the config file"),
    ({"urls": ["http://am:9093", "http://am:9093/"]}, "urls", "listed twice"),
    ({"url": "http://am:9093", "resend": "0s"}, "resend", "positive"),
    ({"url": "http://am:9093", "timeout": "soon"}, "timeout", "invalid duration"),
    ({"url": "http://am:9093", "labels": {"severity": "low"}}, "severity", "set by notifier itself"),
    ({"url": "http://am:9093", "labels": {"bad-name": "x"}}, "bad-name", "not a valid label name"),
    ({"url": "http://am:9093", "generator_url": "https://x.example/{host}"}, "generator_url", "unknown placeholder"),
    ({"url": "http://am:9093", "bearer_token_env": "A", "bearer_token_file": "/f"}, "bearer_token_file", "not both"),
    ({"url": "http://am:9093", "basic_auth_user": "notifier"}, "basic_auth_password_env", "needs both"),
    ({"url": "http://am:9093", "basic_auth_password_env": "P"}, "basic_auth_user", "needs both"),
    ({"url": "http://am:9093", "basic_auth_user": "u", "basic_auth_password_env": "P", "bearer_token_env": "T"},
     "bearer_token_env", "bearer token or basic auth"),
    ({"url": "http://am:9093", "resends": "1m"}, "resends", r"unknown key \(did you mean 'resend'"),
], ids=["missing-url", "url-and-urls", "empty-urls", "urls-not-list", "non-http", "no-scheme", "no-host", "bad-port",
        "query", "userinfo", "duplicate", "zero-resend", "bad-timeout", "builtin-label", "bad-label-name",
        "bad-generator-url", "token-env-and-file", "user-without-password", "password-without-user",
        "bearer-and-basic", "unknown-key"])
def test_parse_rejects(table: dict[str, Any], key: str, message: str) -> None:
    """Every bad [channels.am] is a ConfigError naming the file, the table and the key, never a URL's path."""
    with pytest.raises(ConfigError, match=message) as info:
        parse(reader(**table))
    assert (info.value.file, info.value.key) == ("notifier.toml", key)
    assert (info.value.where or "").startswith("channels.am")
    assert "secretpath" not in str(info.value)


def test_registered() -> None:
    """`type = "alertmanager"` resolves to this module's ChannelType."""
    assert CHANNEL_TYPES["alertmanager"] is TYPE and TYPE.name == "alertmanager"


def test_the_readme_example_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README's Alertmanager channel example is valid as written (and `notifier check` renders for it)."""
    readme = (ROOT / "README.md").read_text()
    rest = readme[readme.index("<!-- example: alertmanager-channel -->"):]
    start = rest.index("```toml\n") + len("```toml\n")
    channel = textwrap.dedent(rest[start:rest.index("```", start)])
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.toml").write_text(NODE_EXCEPTION)
    (tmp_path / "notifier.toml").write_text(source_toml("http://127.0.0.1:9") + '[jobs]\nnames = ["job_sms"]\n'
                                            '[state]\npath = "state.db"\n[paths]\nrules = "rules"\n' + channel)
    monkeypatch.setenv("ALERTMANAGER_TOKEN", "t")
    assert check(tmp_path / "notifier.toml").problems == ()


@pytest.mark.parametrize(("settings", "key"), [
    ({"bearer_token_env": "AM_TOKEN"}, "bearer_token_env"),
    ({"bearer_token_file": "/nonexistent/am-token"}, "bearer_token_file"),
    ({"basic_auth_user": "u", "basic_auth_password_env": "AM_PASSWORD"}, "basic_auth_password_env"),
], ids=["token-env-unset", "token-file-missing", "password-env-unset"])
def test_create_rejects_missing_credentials(settings: dict[str, Any], key: str) -> None:
    """A credential that cannot be read fails at start-up, naming the variable or file."""
    with pytest.raises(ConfigError) as info:
        AlertmanagerChannel("am", AlertmanagerSettings(urls=("http://am:9093",), **settings), environ={})
    assert (info.value.where, info.value.key) == ("channels.am", key)


# --- payload and send -------------------------------------------------------------------

@pytest.fixture
def am_stub() -> Iterator[WebhookReceiver]:
    """A stand-in Alertmanager: records each POST /api/v2/alerts and answers 200."""
    with WebhookReceiver() as receiver:
        yield receiver


def test_a_sync_payload_holds_postable_alerts_rendered_at_enqueue() -> None:
    """Labels (static ones included), annotations, startsAt and generatorURL are fixed when queued."""
    settings = AlertmanagerSettings(urls=("http://am:9093",), labels=(("team", "data"),),
                                    generator_url="https://n.example/{job}/{fingerprint}")
    payload = sync_payload(settings, [alert()], [alert("DIS_INPUT", "resolved")], T0, 240.0)
    assert (payload["alertmanager"], payload["at"], payload["ttl"]) == (1, "2026-11-25T12:00:00Z", 240.0)
    (firing,) = payload["firing"]
    assert firing["labels"] == {"alertname": "node-exception", "job": "job_sms", "node": "DLI_SMS_GES",
                                "node_type": "DLI SQL", "severity": "critical", "source": "default", "team": "data"}
    assert "endsAt" not in firing and firing["generatorURL"] == "https://n.example/job_sms/fp-DLI_SMS_GES"
    assert payload["resolved"][0]["endsAt"] == "2026-11-25T12:05:00Z"


def test_send_stamps_ends_at_when_it_sends(am_stub: WebhookReceiver) -> None:
    """A row that waited an hour posts firing alerts ending ttl after the send, never in the past."""
    sent_at = T0 + timedelta(hours=1)
    channel = AlertmanagerChannel("am", AlertmanagerSettings(urls=(am_stub.base_url + "/prefix",)),
                                  clock=lambda: sent_at)
    channel.send(row(sync_payload(channel.settings, [alert()], [alert("DIS_INPUT", "resolved")], T0, 240.0)))
    (request,) = am_stub.requests
    assert request.path == "/prefix" + API_PATH and request.headers["content-type"] == "application/json"
    assert isinstance(request.json, list)
    firing, resolved = request.json
    assert firing["endsAt"] == "2026-11-25T13:04:00Z"  # send time + 240 s
    assert resolved["endsAt"] == "2026-11-25T12:05:00Z"  # when it resolved


def test_a_sync_with_nothing_to_say_posts_nothing(am_stub: WebhookReceiver) -> None:
    """An empty sync is delivered without a request."""
    channel = AlertmanagerChannel("am", AlertmanagerSettings(urls=(am_stub.base_url,)))
    channel.send(row(sync_payload(channel.settings, [], [], T0, 240.0)))
    assert am_stub.requests == []


def test_an_ha_pair_gets_every_alert_and_a_retry_goes_only_where_it_failed(am_stub: WebhookReceiver) -> None:
    """Delivered once both accepted; the one that refused gets the retry, the other is not posted again."""
    with WebhookReceiver() as other:
        other.respond_with(503, b"starting up", times=1)
        channel = AlertmanagerChannel("am", AlertmanagerSettings(urls=(am_stub.base_url, other.base_url)))
        notification = row(sync_payload(channel.settings, [alert()], [], T0, 240.0), id=7)
        with pytest.raises(ChannelError, match="1 of 2 Alertmanagers did not accept") as info:
            channel.send(notification)
        assert info.value.retryable and "503" in str(info.value)
        assert (len(am_stub.requests), len(other.requests)) == (1, 1)
        channel.send(notification)  # the retry
        assert (len(am_stub.requests), len(other.requests)) == (1, 2)
        channel.send(row(notification.payload, id=8))  # a new row goes to both again
        assert (len(am_stub.requests), len(other.requests)) == (2, 3)


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (500, True), (429, True)],
                         ids=["bad-request", "server-error", "too-many"])
def test_an_alertmanagers_answer_decides_the_retry(am_stub: WebhookReceiver, status: int, retryable: bool) -> None:
    """400 (Alertmanager refused the alerts) is permanent; 5xx and 429 are retried."""
    am_stub.respond_with(status, b'"start time must be before end time"')
    channel = AlertmanagerChannel("am", AlertmanagerSettings(urls=(am_stub.base_url,)))
    with pytest.raises(ChannelError) as info:
        channel.send(row(sync_payload(channel.settings, [alert()], [], T0, 240.0)))
    assert info.value.retryable is retryable


def test_an_alertmanager_that_is_down_is_retried(am_stub: WebhookReceiver) -> None:
    """Connection refused: retryable, with the URL redacted."""
    url = am_stub.base_url
    am_stub.stop()
    channel = AlertmanagerChannel("am", AlertmanagerSettings(urls=(url,)))
    with pytest.raises(ChannelError, match="ConnectError") as info:
        channel.send(row(sync_payload(channel.settings, [alert()], [], T0, 240.0)))
    assert info.value.retryable


@pytest.mark.parametrize(("settings", "environ", "header"), [
    ({"bearer_token_env": "AM_TOKEN"}, {"AM_TOKEN": TOKEN}, f"Bearer {TOKEN}"),
    ({"basic_auth_user": "notifier", "basic_auth_password_env": "AM_PASSWORD"}, {"AM_PASSWORD": PASSWORD},
     "Basic bm90aWZpZXI6YmFzaWMtcGE1NS1TM2NyZXQ="),
], ids=["bearer", "basic"])
def test_credentials_are_sent_and_never_shown(am_stub: WebhookReceiver, caplog: pytest.LogCaptureFixture,
                                              settings: dict[str, Any], environ: dict[str, str], header: str) -> None:
    """The Authorization header is sent; no log record or error holds the token, the password or the header."""
    caplog.set_level(logging.DEBUG)
    url = am_stub.base_url
    channel = AlertmanagerChannel("am", AlertmanagerSettings(urls=(url,), **settings), environ=environ)
    payload = sync_payload(channel.settings, [alert()], [], T0, 240.0)
    channel.send(row(payload))
    assert am_stub.requests[0].headers["authorization"] == header
    am_stub.respond_with(500, f"refused {header} from {url}".encode())  # an echoing error body
    with pytest.raises(ChannelError) as info:
        channel.send(row(payload, id=2))
    texts = [caplog.text, str(info.value), "".join(traceback.format_exception(info.value))]
    for text in texts:
        for secret in (TOKEN, PASSWORD, header.split()[1]):
            assert secret not in text


# --- the outbox: a sync supersedes the rows still pending ----------------------------

def sync_row(firing: list[Alert], resolved: list[Alert], at: datetime) -> NewNotification:
    settings = AlertmanagerSettings(urls=("http://am:9093",))
    return NewNotification(channel="am", group=SYNC_GROUP, payload=sync_payload(settings, firing, resolved, at, 240.0),
                           supersede=merge)


def test_merge_keeps_every_resolve_the_new_sync_does_not_mention() -> None:
    """Older rows' resolves are carried forward; one firing again is left to the new row; an old firing alert
    that the new state does not mention at all ends at the new row's time."""
    settings = AlertmanagerSettings(urls=("http://am:9093",))
    older = [sync_payload(settings, [alert("A"), alert("B")], [alert("C", "resolved")], T0, 240.0),
             sync_payload(settings, [alert("B")], [alert("A", "resolved")], T0 + timedelta(minutes=1), 240.0)]
    new = sync_payload(settings, [alert("C")], [], T0 + timedelta(minutes=2), 240.0)
    merged = merge(new, older)
    assert [a["labels"]["node"] for a in merged["firing"]] == ["C"]
    ended = {a["labels"]["node"]: a["endsAt"] for a in merged["resolved"]}
    assert ended == {"A": "2026-11-25T12:05:00Z", "B": "2026-11-25T12:02:00Z"}  # C fires again: not resolved


def test_a_sync_supersedes_its_channels_pending_rows_and_keeps_their_wait(store: StateStore,
                                                                         state_path: Path) -> None:
    """One pending row per Alertmanager channel, the others superseded; stuck since the first was queued."""
    hook = NewNotification(channel="hook", group="job_sms", payload={"text": "x"})
    store.commit_cycle(CycleWrite(at=T0, notifications=(sync_row([alert("A")], [], T0), hook)))
    later = T0 + timedelta(minutes=10)
    store.outbox.mark_retry(1, "503 Service Unavailable", later)
    store.commit_cycle(CycleWrite(at=later, notifications=(sync_row([], [alert("A", "resolved")], later),)))
    last = T0 + timedelta(minutes=20)
    (new_id,) = store.commit_cycle(CycleWrite(at=last, notifications=(sync_row([alert("B")], [], last),)))
    rows = {r.id: r for r in store.outbox.rows(("pending", "superseded"))}
    assert {i: r.status for i, r in rows.items()} == {1: "superseded", 2: "pending", 3: "superseded", 4: "pending"}
    (pending,) = store.outbox.pending("am", last)
    assert pending.id == new_id == 4 and pending.created_at == last and pending.attempts == 1
    assert [a["labels"]["node"] for a in pending.payload["resolved"]] == ["A"]  # the resolve survived
    failing = store.outbox.failing_channels(last, stuck_after=15 * 60)
    assert set(failing) == {"am", "hook"} and failing["am"][1] == T0  # waiting since the first sync
    store.outbox.mark_delivered(1, last)  # a send of a superseded row that was in flight: recorded as nothing
    assert store.outbox.rows(("delivered",)) == ()
    store.outbox.mark_delivered(4, last)
    assert "am" not in store.outbox.failing_channels(last, stuck_after=15 * 60)
    store.commit_cycle(CycleWrite(at=last, notifications=(sync_row([alert("B")], [], last),)))
    with sqlite3.connect(state_path) as conn:  # what a sync replaced or followed keeps no payload: no growth
        payloads = dict(conn.execute("SELECT id, payload FROM outbox WHERE channel = 'am'").fetchall())
    assert [i for i, p in payloads.items() if p != "{}"] == [5]


# --- in the pipeline --------------------------------------------------------------------

@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(load_scenario("seed"), clock=ManualClock()) as s:
        yield s


@pytest.fixture
def clock(sim: Simulator) -> LinkedClock:
    return LinkedClock(sim)


def am_toml(*urls: str, extra: str = "") -> str:
    listed = ", ".join(f'"{u}"' for u in urls)
    return f'[channels.am]\ntype = "alertmanager"\nurls = [{listed}]\nlabels = {{ team = "data" }}\n{extra}'


@pytest.fixture
def make(write_config: WriteConfig, sim: Simulator, clock: LinkedClock) -> Iterator[Any]:
    made: list[Pipeline] = []

    def build(channels: str) -> Pipeline:
        path = write_config(source=source_toml(sim.url), rules=NODE_EXCEPTION, channels=channels)
        made.append(Pipeline(path, clock))
        return made[-1]

    yield build
    for p in made:
        p.close()


def posted(am: WebhookReceiver) -> list[list[dict[str, Any]]]:
    return [r.json for r in am.requests if r.path == API_PATH and isinstance(r.json, list)]


def test_a_firing_alert_is_re_posted_every_resend_interval_and_not_in_between(make: Any, clock: LinkedClock,
                                                                              am_stub: WebhookReceiver) -> None:
    """Alertmanager hears about a firing alert at once, then once a minute (resend), however often notifier polls."""
    p = make(am_toml(am_stub.base_url))
    p.cycle()
    assert [[a["labels"]["node"] for a in body] for body in posted(am_stub)] == [["DLI_SMS_GES"]]
    first = posted(am_stub)[0][0]
    assert first["labels"]["project_id"] == "b384b9e9ab9b4ee8994c8633aabc9505"
    assert first["labels"]["team"] == "data" and first["startsAt"] == "2019-03-01T03:03:26Z"
    for seconds in (20, 20, 20):
        clock.advance(seconds)
        p.cycle()
    assert len(posted(am_stub)) == 2  # at 60 s, not at 20 s or 40 s
    assert posted(am_stub)[1][0]["labels"] == first["labels"]


def test_a_recovery_is_posted_at_once_with_ends_at_then(make: Any, sim: Simulator, clock: LinkedClock,
                                                        am_stub: WebhookReceiver) -> None:
    """The node back to NORMAL: the next cycle posts it with endsAt = that cycle's time."""
    p = make(am_toml(am_stub.base_url))
    p.cycle()
    sim.set_node_status("job_sms", "DLI_SMS_GES", "NORMAL")
    clock.advance(5)
    p.cycle()
    (resolved,) = posted(am_stub)[-1]
    assert resolved["endsAt"] == clock().strftime("%Y-%m-%dT%H:%M:%SZ")
    assert resolved["annotations"]["state"] == "NORMAL"


def test_notifiers_silences_mute_its_messages_not_alertmanager(make: Any, clock: LinkedClock,
                                                                am_stub: WebhookReceiver,
                                                                webhook_receiver: WebhookReceiver) -> None:
    """A silenced alert sends no message to the webhook, and is still pushed to Alertmanager (its silences decide)."""
    p = make(am_toml(am_stub.base_url) + webhook_toml(webhook_receiver.url))
    now = clock()
    p.store.silences.add(Silence(id="s1", matchers=Matchers(job="job_sms"), starts_at=now,
                                 ends_at=now + timedelta(hours=2), created_at=now, comment="maintenance"))
    p.cycle()
    assert webhook_receiver.requests == []
    assert [a["labels"]["alertname"] for a in posted(am_stub)[0]] == ["node-exception"]


def test_an_alertmanager_channel_gets_the_sync_and_no_messages(make: Any, am_stub: WebhookReceiver,
                                                               webhook_receiver: WebhookReceiver) -> None:
    """The webhook gets its message; the Alertmanager channel one sync row, not the message as well."""
    p = make(am_toml(am_stub.base_url) + webhook_toml(webhook_receiver.url))
    p.cycle()
    assert len(webhook_receiver.requests) == 1
    rows = p.store.outbox.rows(("delivered",))
    assert [(r.channel, r.group) for r in rows if r.channel == "am"] == [("am", SYNC_GROUP)]
    assert len(am_stub.requests) == 1


def test_an_alertmanager_that_was_down_gets_the_latest_state_in_one_post(make: Any, sim: Simulator,
                                                                         clock: LinkedClock,
                                                                         am_stub: WebhookReceiver) -> None:
    """Five rounds of changes and re-posts while it refuses: one row waits, and one POST says where things are."""
    p = make(am_toml(am_stub.base_url))
    am_stub.respond_with(503)
    p.cycle()
    sim.set_node_status("job_sms", "DIS_INPUT", "EXCEPTION")
    for _ in range(2):
        clock.advance(60)
        p.cycle()
    sim.set_node_status("job_sms", "DLI_SMS_GES", "NORMAL")
    for _ in range(2):
        clock.advance(60)
        p.cycle()
    assert len(p.store.outbox.rows(("pending",))) == 1
    assert len(p.store.outbox.rows(("superseded",))) == 4
    am_stub.reset_responses()
    am_stub.clear()
    clock.advance(30)  # past the last row's backoff, short of the next re-post
    p.deliver()
    (body,) = posted(am_stub)
    states = {a["labels"]["node"]: "resolved" if a["annotations"]["state"] == "NORMAL" else "firing" for a in body}
    assert states == {"DIS_INPUT": "firing", "DLI_SMS_GES": "resolved"}
    clock.advance(1)
    p.cycle()
    assert len(posted(am_stub)) == 1  # nothing new to say until the next re-post


def test_test_channel_posts_a_test_alert(make: Any, am_stub: WebhookReceiver) -> None:
    """`notifier test-channel am` posts one firing TEST alert, with the channel's labels and an end ahead."""
    p = make(am_toml(am_stub.base_url))
    result = subprocess.run([sys.executable, "-m", "notifier", "test-channel", "am", "-c", str(p.config_path)],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "ok: test message delivered through channel am (alertmanager)" in result.stdout
    ((test_alert,),) = posted(am_stub)
    assert test_alert["annotations"]["summary"].startswith("TEST from notifier")
    assert test_alert["labels"]["team"] == "data"
    assert test_alert["endsAt"] > datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def test_an_alertmanager_down_for_long_is_a_failing_channel_though_its_rows_are_new(
        make: Any, clock: LinkedClock, am_stub: WebhookReceiver, webhook_receiver: WebhookReceiver) -> None:
    """Each re-post replaces the waiting row, yet the wait counts from the first: after 15 min the other
    channels hear notifier-channel-failing about it."""
    p = make(am_toml(am_stub.base_url) + webhook_toml(webhook_receiver.url))
    am_stub.respond_with(503)
    p.cycle()
    for _ in range(16):
        clock.advance(60)
        p.cycle()
    (waiting,) = p.store.outbox.rows(("pending",))
    assert waiting.created_at == clock() and waiting.channel == "am"  # fresh: the latest state never expires
    alerts = [a for r in webhook_receiver.requests for a in r.json["alerts"]]
    failing = [a for a in alerts if a["rule"] == "notifier-channel-failing"]
    assert [a["node"] for a in failing] == ["am"]


def test_a_restart_re_posts_what_fires_and_still_sends_a_resolve(make: Any, sim: Simulator, clock: LinkedClock,
                                                                 am_stub: WebhookReceiver) -> None:
    """The memory of what was told is gone after a restart: the alerts firing before stand in for it."""
    p = make(am_toml(am_stub.base_url))
    sim.set_node_status("job_sms", "DIS_INPUT", "EXCEPTION")
    p.cycle()
    p.restart()
    clock.advance(1)
    p.cycle()  # nothing changed: everything firing is posted again at once
    sim.set_node_status("job_sms", "DIS_INPUT", "NORMAL")
    p.restart()
    clock.advance(1)
    p.cycle()
    first, again, after = posted(am_stub)
    assert sorted(a["labels"]["node"] for a in again) == sorted(a["labels"]["node"] for a in first)
    states = {a["labels"]["node"]: a["annotations"]["state"] for a in after}
    assert states == {"DLI_SMS_GES": "EXCEPTION", "DIS_INPUT": "NORMAL"}  # one still firing, one resolved


def test_the_v5_migration_keeps_outbox_rows_ids_and_the_id_counter(tmp_path: Path) -> None:
    """The outbox is rebuilt for 'superseded': pending rows survive as they were, and a purged id is never reused
    (it is the second half of every notification key)."""
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as conn:
        for statements in statefile.MIGRATIONS[:4]:
            for statement in statements:
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 4")
        for i in range(1, 4):
            conn.execute("INSERT INTO outbox (channel, grp, payload, created_at) VALUES ('hook', 'job_sms', ?, 0)",
                         (f'{{"n": {i}}}',))
        conn.execute("DELETE FROM outbox WHERE id = 3")  # purged: its id must not come back
    path.chmod(0o600)
    with StateStore.open(path) as store:
        assert [n.payload for n in store.outbox.pending("hook", T0)] == [{"n": 1}, {"n": 2}]
        (new_id,) = store.commit_cycle(CycleWrite(at=T0, notifications=(sync_row([alert()], [], T0),)))
        assert new_id == 4
