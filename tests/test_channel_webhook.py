"""The webhook channel over a real loopback socket, and the shared HTTP verdicts of notifier/httputil.py."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import traceback
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from notifier import __version__
from notifier.channels import CHANNEL_TYPES
from notifier.channels.webhook import (
    TYPE,
    WebhookChannel,
    WebhookSettings,
    compose,
    encode_body,
    parse,
    sign,
    webhook_payload,
)
from notifier.core.models import MessageGroup
from notifier.errors import ChannelError, ConfigError, TemplateError
from notifier.httputil import (
    excerpt,
    is_retryable_status,
    parse_retry_after,
    redact_url,
    scrub,
)
from notifier.render import Renderer, message_context, sample_groups
from notifier.strict_toml import TableReader
from tests.support import fakes
from tests.support.webhook_receiver import WebhookReceiver

T0 = datetime(2019, 3, 1, 3, 4, 25, tzinfo=timezone.utc)
NOW = T0 + timedelta(minutes=4)
SAMPLE_IDS = ("node", "grouped", "resolved", "job-and-event")
SIGNING_SECRET = "hmac-s3cret-value"
PATH_SECRET = "T0001/B0002/pathS3cretToken"
QUERY_SECRET = "qu3ryS3cretToken"
HEADER_SECRET = "Bearer headerS3cretToken"
SECRETS = (SIGNING_SECRET, "pathS3cretToken", QUERY_SECRET, "headerS3cretToken")


def reader(**table: Any) -> TableReader:
    return TableReader({"type": "webhook", **table}, file="notifier.toml", where="channels.hook")


# the webhook channel's outbox rows; the group is the payload's own
notification = partial(fakes.notification, id=42, channel="hook", created_at=NOW)


@pytest.fixture
def make_channel() -> Iterator[Any]:
    """Build WebhookChannels and close them all after the test."""
    made: list[WebhookChannel] = []

    def make(url: str | None = None, *, environ: dict[str, str] | None = None, clock: Any = None,
             **settings: Any) -> WebhookChannel:
        kwargs: dict[str, Any] = {"environ": environ or {}}
        if clock is not None:
            kwargs["clock"] = clock
        channel = WebhookChannel("hook", WebhookSettings(url=url, **settings), **kwargs)
        made.append(channel)
        return channel

    yield make
    for channel in made:
        channel.close()


# --- parse ----------------------------------------------------------------------------

def test_parse_minimal() -> None:
    """A URL alone is enough: no signature, 10 s timeout, no extra headers."""
    assert parse(reader(url="https://example.com/alerts")) == WebhookSettings(url="https://example.com/alerts")


def test_parse_everything() -> None:
    """Every documented key is read into the settings."""
    settings = parse(reader(url_env="HOOK_URL", secret_file="/run/creds/hook",
                            timeout="2500ms", headers={"Authorization": HEADER_SECRET, "X-Team": "data"}))
    assert settings == WebhookSettings(url=None, url_env="HOOK_URL", secret_env=None,
                                       secret_file="/run/creds/hook", timeout=2.5,
                                       headers=(("Authorization", HEADER_SECRET), ("X-Team", "data")))


def test_settings_repr_hides_url_and_headers() -> None:
    """The settings object can be logged: its repr shows neither the URL nor header values."""
    settings = parse(reader(url=f"https://example.com/{PATH_SECRET}", headers={"Authorization": HEADER_SECRET}))
    assert "S3cret" not in repr(settings)


@pytest.mark.parametrize(("table", "key", "message"), [
    ({"url": "https://example.com/a", "secrets_env": "X"}, "secrets_env", r"unknown key \(did you mean 'secret_env'"),
    ({}, "url", "required key is missing"),
    ({"url": "ftp://example.com/secretpath"}, "url", r"http:// or https://.*ftp://example\.com/\*\*\*"),
    ({"url": "example.com/alerts"}, "url", "http:// or https://"),
    ({"url": "https:///alerts"}, "url", "no host"),
    ({"url": "http://example.com:99999/"}, "url", "not a valid URL"),
    ({"url": "https://example.com/a", "url_env": "HOOK_URL"}, "url_env", "either url or url_env"),
    ({"url": "https://example.com/a", "secret_env": "S", "secret_file": "/f"}, "secret_file",
     "set secret_env or secret_file, not both"),
    ({"url": 5}, "url", "expected a string"),
    ({"url": "https://example.com/a", "timeout": "soon"}, "timeout", "invalid duration"),
    ({"url": "https://example.com/a", "timeout": "0s"}, "timeout", "positive"),
    ({"url": "https://example.com/a", "headers": {"X-A": 1}}, "X-A", "expected a string"),
    ({"url": "https://example.com/a", "headers": {"Content-Type": "text/plain"}}, "Content-Type", "sets this header"),
    ({"url": "https://example.com/a", "headers": {"X-A": "a\r\nX-B: b"}}, "X-A", "line breaks"),
    ({"url": "https://example.com/a", "headers": {"Bad Name": "x"}}, "Bad Name", "header name"),
], ids=["unknown-key", "missing-url", "non-http-url", "no-scheme", "no-host", "bad-port", "url-and-url-env",
        "secret-env-and-file", "url-not-string", "bad-timeout", "zero-timeout", "header-not-string", "reserved-header",
        "header-injection", "bad-header-name"])
def test_parse_rejects(table: dict[str, Any], key: str, message: str) -> None:
    """Every bad [channels.hook] is a ConfigError naming the file, table and key."""
    with pytest.raises(ConfigError, match=message) as info:
        parse(reader(**table))
    assert info.value.file == "notifier.toml"
    assert info.value.key == key
    assert (info.value.where or "").startswith("channels.hook")
    assert "secretpath" not in str(info.value)


def test_registered() -> None:
    """`type = "webhook"` resolves to this module's ChannelType."""
    assert CHANNEL_TYPES["webhook"] is TYPE and TYPE.name == "webhook"


# --- create ---------------------------------------------------------------------------

@pytest.mark.parametrize(("settings", "environ", "key", "message"), [
    ({"url_env": "HOOK_URL"}, {}, "url_env", "HOOK_URL"),
    ({"url_env": "HOOK_URL"}, {"HOOK_URL": f"ftp://example.com/{PATH_SECRET}"}, "url_env", "http:// or https://"),
    ({"url": "https://example.com/a", "secret_env": "HOOK_SECRET"}, {}, "secret_env", "HOOK_SECRET"),
    ({"url": "https://example.com/a", "secret_file": "/nonexistent/hook-secret"}, {}, "secret_file", "cannot read"),
], ids=["url-env-unset", "url-env-not-http", "secret-env-unset", "secret-file-missing"])
def test_create_rejects(settings: dict[str, Any], environ: dict[str, str], key: str, message: str) -> None:
    """Missing or unusable secrets fail at start-up, naming the variable or file but never a value."""
    with pytest.raises(ConfigError, match=message) as info:
        WebhookChannel("hook", WebhookSettings(**settings), environ=environ)
    assert (info.value.where, info.value.key) == ("channels.hook", key)
    assert "S3cret" not in str(info.value)


def test_create_reads_url_from_env(make_channel: Any) -> None:
    """url_env supplies the URL; only its redacted form is exposed."""
    channel = make_channel(url_env="HOOK_URL", environ={"HOOK_URL": f"https://hooks.example.com/{PATH_SECRET}"})
    assert channel.redacted_url == "https://hooks.example.com/***"


# --- the payload contract -------------------------------------------------------------

def test_payload_contract_for_the_seed_alert() -> None:
    """webhook_payload() is exactly the payload in ARCHITECTURE.md "Contracts": UTC times with Z, nulls where absent."""
    assert webhook_payload(sample_groups()[0]) == {
        "version": "1", "status": "firing", "group": "job_sms",
        "alerts": [{
            "status": "firing", "rule": "node-exception", "severity": "critical",
            "fingerprint": "0123456789abcdef", "source": "default", "job": "job_sms", "node": "DLI_SMS_GES",
            "node_type": "DLI SQL", "state": "EXCEPTION", "previous_state": "NORMAL", "since": "2019-03-01T03:04:25Z",
            "starts_at": "2019-03-01T03:04:25Z", "ends_at": None,
            "log_path": "obs://dlf-log-example/job_sms/DLI_SMS_GES.job",
            "summary": "DLI_SMS_GES entered EXCEPTION (was NORMAL)",
        }],
    }


def test_payload_resolved_and_job_scope() -> None:
    """A resolved group says resolved with ends_at; a job-scope alert has null node fields."""
    resolved = webhook_payload(sample_groups()[2])
    assert (resolved["status"], resolved["alerts"][0]["status"]) == ("resolved", "resolved")
    assert resolved["alerts"][0]["ends_at"] == "2019-03-01T03:18:25Z"
    job = webhook_payload(sample_groups()[3])["alerts"][0]
    assert (job["node"], job["node_type"], job["previous_state"], job["log_path"]) == (None, None, None, None)


def test_group_fires_if_any_alert_fires() -> None:
    """A group mixing a firing and a resolved alert has status firing."""
    firing, _, resolved, _ = sample_groups()
    mixed = MessageGroup("hook", "job_sms", (resolved.alerts[0], firing.alerts[0]))
    assert webhook_payload(mixed)["status"] == "firing"
    assert json.loads(Renderer(None, strict=True).render("default", "webhook", message_context(mixed, NOW))) == \
        webhook_payload(mixed)


@pytest.mark.parametrize("index", range(len(SAMPLE_IDS)), ids=SAMPLE_IDS)
def test_default_template_equals_python_payload(index: int) -> None:
    """The shipped template and webhook_payload() agree on every sample group."""
    group = sample_groups("hook")[index]
    assert compose(Renderer(None, strict=True), group, NOW) == (webhook_payload(group),)


def test_default_template_survives_awkward_names() -> None:
    """Quotes, backslashes, HTML characters, newlines and non-ASCII in names still give the exact payload."""
    alert = replace(sample_groups()[0].alerts[0], job='jo"b\\<x>&', node="节点\n'1'", summary="a </script> b")
    group = MessageGroup("hook", alert.job, (alert,))
    assert compose(Renderer(None, strict=True), group, NOW) == (webhook_payload(group),)


def test_every_alert_carries_its_source() -> None:
    """Every alert of the payload says its source (DESIGN.md section 9), in the template and the Python reference."""
    alert = replace(sample_groups()[0].alerts[0], source="prod-cn-north-4")
    group = MessageGroup("hook", alert.job, (alert, replace(alert, node="DIS_INPUT", source="default")))
    (payload,) = compose(Renderer(None, strict=True), group, NOW)
    assert payload == webhook_payload(group)
    assert [a["source"] for a in payload["alerts"]] == ["prod-cn-north-4", "default"]


def test_user_template_shapes_the_payload(tmp_path: Path) -> None:
    """A user template may produce another JSON object for another receiver; it is sent as rendered."""
    (tmp_path / "default.webhook.j2").write_text('{"text": {{ (job ~ " is " ~ status) | tojson }}}')
    assert compose(Renderer(tmp_path), sample_groups()[0], NOW) == ({"text": "job_sms is firing"},)


@pytest.mark.parametrize("text", ['{"version": "1",', "[1, 2]", "{{ nope }}"],
                         ids=["invalid-json", "not-an-object", "render-error"])
def test_bad_template_falls_back_to_python_payload(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                   text: str) -> None:
    """A template that fails or is not a JSON object yields webhook_payload() and an error log."""
    (tmp_path / "default.webhook.j2").write_text(text)
    group = sample_groups()[0]
    with caplog.at_level(logging.ERROR, logger="notifier.channels.webhook"):
        assert compose(Renderer(tmp_path), group, NOW) == (webhook_payload(group),)
    assert any("default.webhook.j2" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("text", ['{"version": "1",', "[1, 2]", "{{ nope }}"],
                         ids=["invalid-json", "not-an-object", "render-error"])
def test_bad_template_raises_in_strict_mode(tmp_path: Path, text: str) -> None:
    """`notifier check` (strict) reports a template that would fall back, naming it."""
    (tmp_path / "default.webhook.j2").write_text(text)
    with pytest.raises(TemplateError, match=r"default\.webhook\.j2"):
        compose(Renderer(tmp_path, strict=True), sample_groups()[0], NOW)


# --- send over a real socket ----------------------------------------------------------

@pytest.mark.parametrize("index", range(len(SAMPLE_IDS)), ids=SAMPLE_IDS)
def test_send_posts_the_contract(webhook_receiver: WebhookReceiver, make_channel: Any,
                                 index: int) -> None:
    """The receiver gets the contract payload as compact UTF-8 JSON with the documented headers."""
    group = sample_groups("hook")[index]
    (payload,) = compose(Renderer(None), group, NOW)
    make_channel(webhook_receiver.url).send(notification(dict(payload), id=42))
    (request,) = webhook_receiver.wait_for(1)
    assert request.method == "POST" and request.path == "/hook"
    assert request.json == webhook_payload(group)
    assert request.body == json.dumps(webhook_payload(group), separators=(",", ":"), ensure_ascii=False).encode()
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == f"notifier/{__version__}"
    assert request.headers["idempotency-key"] == request.headers["x-notifier-id"] == "42"
    assert "x-notifier-signature" not in request.headers


def test_non_ascii_is_sent_as_utf8(webhook_receiver: WebhookReceiver, make_channel: Any) -> None:
    """ensure_ascii=False: non-ASCII names travel as UTF-8 bytes, not \\u escapes."""
    make_channel(webhook_receiver.url).send(notification({"group": "作业"}))
    (request,) = webhook_receiver.wait_for(1)
    assert request.body == '{"group":"作业"}'.encode()


@pytest.mark.parametrize("source", ["env", "file"])
def test_signature_verifies_over_received_bytes(webhook_receiver: WebhookReceiver,
                                                make_channel: Any, tmp_path: Path, source: str) -> None:
    """X-Notifier-Signature is sha256=HMAC-SHA256(secret, body) over exactly the bytes received."""
    if source == "env":
        channel = make_channel(webhook_receiver.url, secret_env="HOOK_SECRET", environ={"HOOK_SECRET": SIGNING_SECRET})
    else:
        (tmp_path / "hook-secret").write_text(SIGNING_SECRET + "\n")
        channel = make_channel(webhook_receiver.url, secret_file=str(tmp_path / "hook-secret"))
    channel.send(notification(webhook_payload(sample_groups()[1])))
    (request,) = webhook_receiver.wait_for(1)
    expected = "sha256=" + hmac.new(SIGNING_SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["x-notifier-signature"], expected)
    assert sign(SIGNING_SECRET.encode(), encode_body(request.json)) == expected


def test_static_headers_are_sent(webhook_receiver: WebhookReceiver, make_channel: Any) -> None:
    """Configured extra headers go out with every request."""
    make_channel(webhook_receiver.url, headers=(("Authorization", HEADER_SECRET), ("X-Team", "data"))).send(
        notification({"group": "job_sms"}))
    (request,) = webhook_receiver.wait_for(1)
    assert (request.headers["authorization"], request.headers["x-team"]) == (HEADER_SECRET, "data")


def test_invalid_json_template_still_delivers(webhook_receiver: WebhookReceiver,
                                              make_channel: Any, tmp_path: Path) -> None:
    """End to end: a broken webhook template still gets the fallback payload to the receiver."""
    (tmp_path / "default.webhook.j2").write_text("{ not json")
    group = sample_groups("hook")[0]
    (payload,) = compose(Renderer(tmp_path), group, NOW)
    make_channel(webhook_receiver.url).send(notification(dict(payload)))
    assert webhook_receiver.wait_for(1)[0].json == webhook_payload(group)


@pytest.mark.parametrize(("status", "headers", "retryable", "retry_after"), [
    (500, {}, True, None),
    (502, {}, True, None),
    (503, {"Retry-After": "120"}, True, 120.0),
    (408, {}, True, None),
    (429, {"Retry-After": "7"}, True, 7.0),
    (429, {"Retry-After": "Fri, 01 Mar 2019 03:09:25 GMT"}, True, 60.0),
    (400, {}, False, None),
    (401, {}, False, None),
    (404, {}, False, None),
    (413, {}, False, None),
    (301, {"Location": "http://127.0.0.1:1/elsewhere"}, False, None),
], ids=["500", "502", "503-retry-after", "408", "429-retry-after-seconds", "429-retry-after-date", "400", "401",
        "404", "413", "redirect-not-followed"])
def test_http_status_verdicts(webhook_receiver: WebhookReceiver, make_channel: Any,
                              status: int, headers: dict[str, str], retryable: bool,
                              retry_after: float | None) -> None:
    """Timeout-like and server statuses are retryable (with Retry-After); other answers are permanent."""
    webhook_receiver.respond_with(status, b'{"error": "nope"}', headers)
    channel = make_channel(webhook_receiver.url, clock=lambda: NOW)
    with pytest.raises(ChannelError) as info:
        channel.send(notification({"group": "job_sms"}))
    assert (info.value.retryable, info.value.retry_after) == (retryable, retry_after)
    message = str(info.value)
    assert f"HTTP {status}" in message and "nope" in message
    assert f"url=http://127.0.0.1:{webhook_receiver.port}/***" in message
    assert len(webhook_receiver.requests) == 1  # no redirect followed, no hidden retry


def test_scripted_failure_then_success(webhook_receiver: WebhookReceiver, make_channel: Any) -> None:
    """A retry after a 500 delivers the same bytes with the same idempotency key."""
    webhook_receiver.respond_with(500, times=1)
    channel = make_channel(webhook_receiver.url)
    with pytest.raises(ChannelError):
        channel.send(notification({"group": "job_sms"}, id=9))
    channel.send(notification({"group": "job_sms"}, id=9))
    first, second = webhook_receiver.wait_for(2)
    assert first.body == second.body
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"] == "9"


def test_connection_refused_is_retryable(make_channel: Any) -> None:
    """A receiver that is down (nothing listening) is a retryable error."""
    receiver = WebhookReceiver().start()
    url = receiver.url
    receiver.stop()
    with pytest.raises(ChannelError, match="ConnectError") as info:
        make_channel(url).send(notification({"group": "job_sms"}))
    assert info.value.retryable is True


def test_timeout_is_retryable(make_channel: Any) -> None:
    """A receiver that accepts the connection but never answers times out, retryably."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # the kernel completes the handshake; nobody ever reads or answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        with pytest.raises(ChannelError, match="timed out") as info:
            make_channel(url, timeout=0.2).send(notification({"group": "job_sms"}))
    assert info.value.retryable is True


def test_no_secret_in_logs_or_errors(webhook_receiver: WebhookReceiver, make_channel: Any,
                                     caplog: pytest.LogCaptureFixture) -> None:
    """Neither the URL's path/query secrets, the signing secret nor header values reach any log record or error."""
    secret_url = f"{webhook_receiver.base_url}/{PATH_SECRET}?token={QUERY_SECRET}"
    caplog.set_level(logging.DEBUG)
    channel = make_channel(url_env="HOOK_URL", secret_env="HOOK_SECRET", headers=(("Authorization", HEADER_SECRET),),
                           environ={"HOOK_URL": secret_url, "HOOK_SECRET": SIGNING_SECRET})
    errors: list[ChannelError] = []
    channel.send(notification({"group": "job_sms"}))  # success: httpx logs the request at INFO
    # a server that echoes the request (URL, secret header) back in its error body
    webhook_receiver.respond_with(500, f"bad request to {secret_url} with {HEADER_SECRET}".encode(), times=1)
    with pytest.raises(ChannelError) as info:
        channel.send(notification({"group": "job_sms"}))
    errors.append(info.value)
    webhook_receiver.stop()
    with pytest.raises(ChannelError) as info:
        channel.send(notification({"group": "job_sms"}))
    errors.append(info.value)

    assert webhook_receiver.requests[0].path == f"/{PATH_SECRET}?token={QUERY_SECRET}"  # the secret URL was used
    assert any(r.name == "httpx" for r in caplog.records)  # the leak-prone logger did log
    texts = [r.getMessage() for r in caplog.records] + [caplog.text]
    texts += [str(e) for e in errors] + ["".join(traceback.format_exception(e)) for e in errors]
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


# --- httputil: the shared verdicts ---------------------------------------------------

@pytest.mark.parametrize(("url", "expected"), [
    ("https://hooks.slack.com/services/T0/B0/XXXX", "https://hooks.slack.com/***"),
    ("https://example.com/alerts?token=abc", "https://example.com/***?***"),
    ("https://user:pw@example.com:8443/", "https://example.com:8443/"),
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ("http://[::1]:9/x", "http://[::1]:9/***"),
    ("not a url", "***"),
    ("http://example.com:99999/x", "***"),
], ids=["path-secret", "query-secret", "userinfo", "bare-host", "ipv6", "garbage", "bad-port"])
def test_redact_url(url: str, expected: str) -> None:
    """Scheme, host and port survive; credentials, path and query become ***."""
    assert redact_url(url) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("7", 7.0), (" 0 ", 0.0), ("1.5", 1.5), ("-3", 0.0), ("", None), (None, None), ("soon", None), ("nan", None),
    ("Fri, 01 Mar 2019 03:09:25 GMT", 30.0), ("Fri, 01 Mar 2019 03:00:00 GMT", 0.0),
], ids=["seconds", "zero", "fraction", "negative", "empty", "absent", "garbage", "nan", "http-date", "past-date"])
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """Retry-After is delta-seconds or an HTTP-date relative to now, never negative; garbage is ignored."""
    assert parse_retry_after(value, T0 + timedelta(seconds=270)) == expected


@pytest.mark.parametrize(("status", "retryable"), [
    (408, True), (425, True), (429, True), (500, True), (504, True), (599, True),
    (400, False), (403, False), (404, False), (409, False), (422, False), (302, False),
], ids=str)
def test_retryable_statuses(status: int, retryable: bool) -> None:
    """408, 425, 429 and 5xx are worth retrying; every other non-2xx answer is permanent."""
    assert is_retryable_status(status) is retryable


def test_scrub_and_excerpt() -> None:
    """scrub() removes a secret URL and its path pieces; excerpt() keeps one short line."""
    url = "https://example.com/T0/abcdef?token=zzzz"
    assert scrub(f"posted to {url}; path /T0/abcdef", [url]) == "posted to ***; path ***"
    assert scrub("a b", ["a"]) == "a b"  # too short to be a secret worth mangling messages for
    assert excerpt(b"line1\n  line2") == "line1 line2"
    assert excerpt("x" * 500) == "x" * 199 + "…"
