"""The email channel, sending through smtplib to a real aiosmtpd server on loopback."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape

from notifier.channels import email as mail
from notifier.core.models import Alert, MessageGroup
from notifier.errors import ChannelError, ConfigError, TemplateError
from notifier.render import Renderer, sample_groups
from notifier.strict_toml import TableReader
from tests.support import fakes
from tests.support.smtp_server import Certs, SmtpServer

T0 = datetime(2019, 3, 1, 3, 4, 25, tzinfo=timezone.utc)
NOW = T0 + timedelta(minutes=12)
PASSWORD = "pa55-w0rd-s3cret"
CREDENTIALS = {"SMTP_USER": "alice", "SMTP_PASSWORD": PASSWORD}

# the render module's own sample alerts: a node entering EXCEPTION, and its recovery
NODE = sample_groups()[0].alerts[0]
RESOLVED = sample_groups()[2].alerts[0]


def group(*alerts: Alert, template: str = "default") -> MessageGroup:
    return MessageGroup("oncall-mail", "job_sms", alerts, template)


def parse(table: Mapping[str, Any]) -> mail.EmailSettings:
    base = {"type": "email", "host": "127.0.0.1", "from": "notifier@example.com", "to": ["oncall@example.com"]}
    return mail.TYPE.parse(TableReader({**base, **table}, file="notifier.toml", where="channels.oncall-mail"))


def channel(table: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> mail.EmailChannel:
    return mail.TYPE.create("oncall-mail", parse({"timeout": "5s", **table}), environ=environ or {})


def payload(g: MessageGroup | None = None) -> dict[str, Any]:
    (p,) = mail.TYPE.compose(Renderer(strict=True), g or group(NODE), NOW)
    return dict(p)


notification = partial(fakes.notification, channel="oncall-mail", created_at=NOW)


def parts(message: EmailMessage) -> list[tuple[str, str]]:
    return [(part.get_content_type(), part.get_content()) for part in message.iter_parts()]


# --- settings -------------------------------------------------------------------------

@pytest.mark.parametrize(("security", "port"), [("starttls", 587), ("ssl", 465), ("none", 25)],
                         ids=["starttls", "ssl", "none"])
def test_port_defaults_to_the_security_mode(security: str, port: int) -> None:
    """Without `port`, the port is the standard one for the chosen security."""
    assert parse({"security": security}).port == port


def test_a_username_brings_the_default_password_variable() -> None:
    """AUTH is on when a username is configured; the password then defaults to SMTP_PASSWORD."""
    settings = parse({"username_env": "SMTP_USER"})
    assert (settings.auth, settings.password_env) == (True, "SMTP_PASSWORD")
    assert parse({}).auth is False


@pytest.mark.parametrize(("table", "message"), [
    ({"host": ""}, r"host: must not be empty"),
    ({"from": "notifier"}, r"from: expected an address"),
    ({"to": []}, r"to: needs at least one address"),
    ({"to": ["oncall@example.com", "nobody"]}, r"to: expected addresses"),
    ({"security": "tls"}, r"security: must be one of 'starttls', 'ssl', 'none'"),
    ({"port": 70000}, r"port: must be at most 65535"),
    ({"password_env": "PW"}, r"password_env: a password without a username"),
    ({"security": "none", "username_env": "U"}, r"security: AUTH over an unencrypted connection"),
    ({"security": "none", "ca_file": "/ca.pem"}, r"ca_file: ca_file needs security"),
    ({"username_env": "U", "username_file": "/u"}, r"username_file: set username_env or username_file, not both"),
    ({"too": ["x@example.com"]}, r"too: unknown key \(did you mean 'to'\?\)"),
], ids=["empty-host", "bad-from", "no-recipients", "bad-recipient", "bad-security", "bad-port",
        "password-only", "auth-in-clear", "ca-without-tls", "two-username-sources", "typo"])
def test_parse_rejects_bad_tables(table: dict[str, Any], message: str) -> None:
    """Every mistake is a ConfigError naming the file, the table and the key."""
    with pytest.raises(ConfigError, match=r"^notifier\.toml: channels\.oncall-mail: " + message):
        parse(table)


def test_create_names_the_missing_password_variable() -> None:
    """A configured login whose password is not set is a ConfigError naming the variable."""
    with pytest.raises(ConfigError, match="missing secret: set environment variable SMTP_PASSWORD"):
        channel({"username_env": "SMTP_USER"}, environ={"SMTP_USER": "alice"})


def test_create_rejects_an_unreadable_ca_file(tmp_path: Path) -> None:
    """A ca_file that cannot be loaded is a ConfigError naming the key."""
    with pytest.raises(ConfigError, match="ca_file: cannot load the CA file"):
        channel({"ca_file": str(tmp_path / "missing.pem")})


# --- compose --------------------------------------------------------------------------

@pytest.mark.parametrize(("alerts", "subject"), [
    ((NODE,), "[CRITICAL] job_sms: DLI_SMS_GES entered EXCEPTION"),
    ((RESOLVED,), "[RESOLVED] job_sms: DLI_SMS_GES back to NORMAL after 14m"),
    ((NODE, replace(NODE, node="DIS_INPUT", severity="warning"), replace(RESOLVED, node="OBS_OUT")),
     "[CRITICAL] job_sms: 3 alerts (2 firing, 1 resolved)"),
    ((NODE, replace(NODE, node="DIS_INPUT")), "[CRITICAL] job_sms: 2 nodes in EXCEPTION"),
    ((replace(NODE, summary="DLI_SMS_GES entered EXCEPTION (was NORMAL) 5m ago"),),
     "[CRITICAL] job_sms: DLI_SMS_GES entered EXCEPTION 5m ago"),
    ((replace(NODE, node=None, node_type=None, severity="warning", state="STARTTING",
              summary="job_sms in STARTTING for 12m"),), "[WARNING] job_sms in STARTTING for 12m"),
    ((replace(NODE, node=None, event=True, severity="info", state="STOPPED", summary="job_sms: STOPPED (was NORMAL)"),),
     "[INFO] job_sms: STOPPED (was NORMAL)"),
], ids=["firing", "resolved", "mixed", "same-state", "late-firing", "job-alert", "event"])
def test_subject_says_severity_job_and_what_happened(alerts: tuple[Alert, ...], subject: str) -> None:
    """The subject leads with the worst severity (or RESOLVED), then the job and what happened."""
    assert payload(group(*alerts))["subject"] == subject


def test_payload_is_stored_whole_with_its_message_id_and_date() -> None:
    """compose fixes Message-ID and Date, and the payload survives a JSON round trip (the outbox)."""
    p = payload()
    assert p["date"] == "Fri, 01 Mar 2019 03:16:25 +0000"
    assert p["message_id"].startswith("<") and p["message_id"].endswith(".job_sms@notifier.invalid>")
    assert json.loads(json.dumps(p)) == p
    assert payload()["message_id"] != p["message_id"]


def test_a_template_without_an_html_block_falls_back_to_escaped_plain_text(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A missing block is logged and replaced by the built-in part; strict mode raises instead."""
    (tmp_path / "short.email.j2").write_text("{% block subject %}S {{ job }}{% endblock %}"
                                             "{% block text %}T{% endblock %}")
    g = group(replace(NODE, node="<b>"), template="short")
    (p,) = mail.TYPE.compose(Renderer(tmp_path), g, NOW)

    assert (p["subject"], p["text"]) == ("S job_sms", "T\n")
    assert "job_sms/&lt;b&gt;" in p["html"] and "<b>" not in p["html"]
    assert "has no block 'html'" in caplog.text
    with pytest.raises(TemplateError):
        mail.TYPE.compose(Renderer(tmp_path, strict=True), g, NOW)


def test_every_sample_group_composes_in_strict_mode() -> None:
    """The default template renders every sample shape (node, job, event, resolved) without error."""
    for g in sample_groups("oncall-mail"):
        (p,) = mail.TYPE.compose(Renderer(strict=True), g, NOW)
        assert p["subject"].startswith("[") and p["text"].strip() and "</html>" in p["html"]


# --- delivery -------------------------------------------------------------------------

def test_plain_delivery_has_exact_headers_and_both_parts(smtp_server: SmtpServer) -> None:
    """Without TLS the mail arrives with exact headers and multipart/alternative: text, then HTML."""
    p = payload()
    ch = channel({"security": "none", "port": smtp_server.port, "from": "Notifier <notifier@example.com>",
                  "to": ["oncall@example.com", "dba@example.com"]})
    ch.send(notification(p))

    (received,) = smtp_server.wait_for(1)
    m = received.message
    assert (received.mail_from, received.rcpt_tos) == (
        "notifier@example.com", ("oncall@example.com", "dba@example.com"))
    assert received.tls is False
    assert m["Subject"] == "[CRITICAL] job_sms: DLI_SMS_GES entered EXCEPTION"
    assert m["From"] == "Notifier <notifier@example.com>"
    assert m["To"] == "oncall@example.com, dba@example.com"
    assert m["Date"] == "Fri, 01 Mar 2019 03:16:25 +0000"
    assert m["Message-ID"] == p["message_id"]
    assert m["Auto-Submitted"] == "auto-generated"
    assert m.get_content_type() == "multipart/alternative"
    (text_type, text), (html_type, html) = parts(m)
    assert (text_type, html_type) == ("text/plain", "text/html")
    assert "State:       NORMAL -> EXCEPTION" in text and "Log:         obs://dlf-log-example/" in text
    assert "<td style=\"padding:2px 0\">NORMAL → EXCEPTION</td>" in html


def test_a_retry_sends_the_same_message_id(smtp_server: SmtpServer) -> None:
    """Sending one stored payload twice sends the same Message-ID and Date (receivers can de-duplicate)."""
    p = payload()
    ch = channel({"security": "none", "port": smtp_server.port})
    ch.send(notification(p))
    ch.send(notification(p))

    first, second = smtp_server.wait_for(2)
    assert first.message["Message-ID"] == second.message["Message-ID"] == p["message_id"]
    assert first.message["Date"] == second.message["Date"]


def test_html_part_escapes_alert_fields(smtp_server: SmtpServer) -> None:
    """A node called "<script>" is escaped in the HTML part and left as it is in the text part."""
    p = payload(group(replace(NODE, node="<script>alert(1)</script>", summary="x < y & z")))
    channel({"security": "none", "port": smtp_server.port}).send(notification(p))

    (received,) = smtp_server.wait_for(1)
    (_, text), (_, html) = parts(received.message)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html
    assert "x &lt; y &amp; z" in html
    assert "<script>alert(1)</script>" in text


def test_starttls_with_a_private_ca(starttls_server: SmtpServer, certs: Certs) -> None:
    """STARTTLS to a server with a certificate from a private CA works when ca_file names that CA."""
    channel({"port": starttls_server.port, "ca_file": str(certs.ca_file)}).send(notification(payload()))

    (received,) = starttls_server.wait_for(1)
    assert received.tls is True


def test_an_untrusted_certificate_is_permanent(starttls_server: SmtpServer) -> None:
    """Without ca_file the self-signed chain is not trusted: no mail, a permanent error naming the fix."""
    with pytest.raises(ChannelError, match=r"is not trusted .*: set ca_file in \[channels\.oncall-mail\]") as info:
        channel({"port": starttls_server.port}).send(notification(payload()))

    assert info.value.retryable is False
    assert starttls_server.mails == []


def test_starttls_never_falls_back_to_plain_text(smtp_server: SmtpServer) -> None:
    """A server that does not offer STARTTLS gets nothing: the error is permanent and says so."""
    with pytest.raises(ChannelError, match="does not support STARTTLS") as info:
        channel({"port": smtp_server.port}).send(notification(payload()))

    assert info.value.retryable is False
    assert smtp_server.mails == []


def test_ssl_mode_with_a_private_ca(certs: Certs) -> None:
    """Implicit TLS ("ssl") delivers when the certificate is trusted through ca_file."""
    with SmtpServer(tls="ssl", certs=certs) as server:
        channel({"security": "ssl", "port": server.port, "ca_file": str(certs.ca_file)}).send(notification(payload()))
        (received,) = server.wait_for(1)
    assert received.tls is True


def test_auth_success(certs: Certs) -> None:
    """With username_env and password_env the channel logs in before sending."""
    with SmtpServer(tls="starttls", certs=certs, users={"alice": PASSWORD}) as server:
        ch = channel({"port": server.port, "ca_file": str(certs.ca_file), "username_env": "SMTP_USER",
                      "password_env": "SMTP_PASSWORD"}, environ=CREDENTIALS)
        ch.send(notification(payload()))
        (received,) = server.wait_for(1)
    assert received.auth_user == "alice"


def test_auth_failure_is_permanent_and_keeps_the_password_secret(
        certs: Certs, caplog: pytest.LogCaptureFixture) -> None:
    """A refused login is not retried; the error names the variables, never the password."""
    caplog.set_level(logging.DEBUG, logger="notifier")
    with SmtpServer(tls="starttls", certs=certs, users={"alice": "another password"}) as server:
        ch = channel({"port": server.port, "ca_file": str(certs.ca_file), "username_env": "SMTP_USER"},
                     environ=CREDENTIALS)
        with pytest.raises(ChannelError) as info:
            ch.send(notification(payload()))
        assert server.mails == []

    assert info.value.retryable is False
    assert "refused the login (535" in str(info.value)
    assert "check environment variable SMTP_USER and environment variable SMTP_PASSWORD" in str(info.value)
    assert PASSWORD not in str(info.value) and PASSWORD not in caplog.text
    assert "refused the login" not in caplog.text  # reported once, by whoever catches it (delivery, test-channel)


def test_server_down_is_retryable(closed_port: int) -> None:
    """Nothing listening on the port: a transient error, the outbox will retry."""
    with pytest.raises(ChannelError, match=r"cannot reach 127\.0\.0\.1:\d+ \(ConnectionRefusedError") as info:
        channel({"security": "none", "port": closed_port}).send(notification(payload()))
    assert info.value.retryable is True


@pytest.mark.parametrize(("reply", "retryable", "says"), [
    ("550 5.1.1 No such user", False, "recipients refused (oncall@example.com: 550): fix `to`"),
    ("450 4.2.1 Mailbox busy", True, "recipients deferred (oncall@example.com: 450); will retry"),
], ids=["550-permanent", "450-transient"])
def test_refused_recipients_follow_the_reply_code(reply: str, retryable: bool, says: str) -> None:
    """A 5xx refusal of every recipient is permanent; a 4xx one is retried."""
    with SmtpServer(refuse={"oncall@example.com": reply}) as server, pytest.raises(ChannelError) as info:
        channel({"security": "none", "port": server.port}).send(notification(payload()))
    assert info.value.retryable is retryable
    assert says in str(info.value)


def test_one_refused_recipient_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    """If only some recipients are refused, the rest get the mail and the refusal is logged (no retry)."""
    with SmtpServer(refuse={"gone@example.com": "550 5.1.1 No such user"}) as server:
        channel({"security": "none", "port": server.port, "to": ["oncall@example.com", "gone@example.com"]}
                ).send(notification(payload()))
        (received,) = server.wait_for(1)
    assert received.rcpt_tos == ("oncall@example.com",)
    assert "refused=gone@example.com" in caplog.text


def test_a_payload_from_another_channel_type_is_permanent() -> None:
    """A payload without subject/text/html cannot become a mail; retrying would not help."""
    with pytest.raises(ChannelError, match="is not an email") as info:
        channel({"security": "none", "port": 25}).send(notification({"text": "hi"}))
    assert info.value.retryable is False


# --- silence hints and repeats -----------------------------------------------------------

def test_a_firing_mail_carries_the_command_that_silences_it() -> None:
    """Text and HTML name the exact `notifier silence add` for the alert; a resolved mail has none."""
    firing = payload(group(NODE))
    command = ('notifier silence add --rule node-exception --job job_sms --node DLI_SMS_GES --for 2h '
               '--comment "..."')
    assert f"  Silence:     {command}" in firing["text"]
    assert str(escape(command)) in firing["html"]  # as Jinja escapes it
    assert "Silence" not in payload(group(RESOLVED))["text"]


def test_a_repeat_mail_says_how_long_it_fired_and_how_often_it_was_sent() -> None:
    """sent_before > 0 adds a Reminder line with the firing time and the count."""
    text = payload(group(replace(NODE, sent_before=2)))["text"]
    assert "  Reminder:    firing for " in text and "sent 2 times before" in text
    assert "Reminder" not in payload(group(NODE))["text"]
