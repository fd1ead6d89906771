"""Email: one ``multipart/alternative`` message (plain text, then HTML) per group, over SMTP.

compose
    renders the named blocks ``subject``, ``text`` and ``html`` of ``<template>.email.j2``
    (the HTML inside ``{% autoescape true %}``), each falling back to a built-in version if
    it fails. It also fixes the ``Message-ID`` and ``Date`` then, so the payload stored in
    the outbox is the whole message: a retry resends the same mail, and a receiving
    server that already has it can tell.

send
    ``smtplib`` with ``security`` "ssl" (implicit TLS, 465), "starttls" (587) or "none"
    (25), certificates verified against the system store or ``ca_file``; never silently
    unverified, and never a plain-text fallback when STARTTLS is missing. AUTH only when
    a username is configured, and never over an unencrypted connection. Failures are
    sorted like the SMTP reply codes sort them: 4xx and network trouble are retried, 5xx,
    refused logins and untrusted certificates are permanent, with the fix in the message.
"""

from __future__ import annotations

import html
import logging
import re
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Any, Literal

from notifier.channels.base import ChannelType
from notifier.core.models import MessageGroup, Notification, Payload
from notifier.errors import ChannelError, ConfigError
from notifier.render import (
    SEVERITY_COLOR,
    Renderer,
    headline,
    message_context,
    plain_text,
    status_label,
    worst_severity,
)
from notifier.secrets import Secret, read_secret
from notifier.strict_toml import TableReader

log = logging.getLogger(__name__)

Security = Literal["starttls", "ssl", "none"]
SECURITIES: tuple[Security, ...] = ("starttls", "ssl", "none")
DEFAULT_PORTS: Mapping[str, int] = {"starttls": 587, "ssl": 465, "none": 25}
DEFAULT_PASSWORD_ENV = "SMTP_PASSWORD"
MSGID_DOMAIN = "notifier.invalid"
"""Right-hand side of every Message-ID: fixed, so compose needs no settings and no DNS."""
MAX_SUBJECT = 200


# --- settings -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class EmailSettings:
    """``[channels.NAME]`` with ``type = "email"``."""

    host: str
    sender: str  # the ``from`` key
    to: tuple[str, ...]
    port: int = 587
    security: Security = "starttls"
    username_env: str | None = None
    username_file: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    timeout: float = 10.0
    ca_file: str | None = None

    @property
    def auth(self) -> bool:
        """AUTH is used exactly when a username is configured."""
        return bool(self.username_env or self.username_file)

    @property
    def credentials_source(self) -> str:
        """Where the login comes from, for error messages (names, never values)."""
        user = f"file {self.username_file}" if self.username_file else f"environment variable {self.username_env}"
        pw = f"file {self.password_file}" if self.password_file else f"environment variable {self.password_env}"
        return f"{user} and {pw}"


def parse(reader: TableReader) -> EmailSettings:
    """Validate the channel table; a login over an unencrypted connection is refused."""
    host = reader.str("host")
    security = reader.choice("security", SECURITIES, "starttls")
    port = reader.int("port", DEFAULT_PORTS[security], minimum=1)
    sender = reader.str("from")
    to = reader.str_list("to")
    username_env, username_file = reader.env_or_file("username")
    password_env, password_file = reader.env_or_file("password")
    timeout = reader.seconds("timeout", 10.0, positive=True)
    ca_file = reader.str("ca_file", None)
    reader.finish(known=("type",))

    if not host.strip():
        raise reader.error("host", "must not be empty")
    if port > 65535:
        raise reader.error("port", f"must be at most 65535, got {port}")
    if not _is_address(sender):
        raise reader.error("from", f"expected an address like \"notifier@example.com\", got {sender!r}")
    if not to:
        raise reader.error("to", "needs at least one address")
    for address in to:
        if not _is_address(address):
            raise reader.error("to", f"expected addresses like \"oncall@example.com\", got {address!r}")
    auth = bool(username_env or username_file)
    if not auth and (password_env or password_file):
        raise reader.error("password_env" if password_env else "password_file",
                           "a password without a username: set username_env (or username_file) too")
    if auth and security == "none":
        raise reader.error("security", "AUTH over an unencrypted connection would send the password in clear: "
                                       "use security = \"starttls\" or \"ssl\"")
    if ca_file and security == "none":
        raise reader.error("ca_file", "ca_file needs security = \"starttls\" or \"ssl\"")
    if auth and not (password_env or password_file):
        password_env = DEFAULT_PASSWORD_ENV
    return EmailSettings(host=host.strip(), sender=sender, to=to, port=port, security=security,
                         username_env=username_env, username_file=username_file, password_env=password_env,
                         password_file=password_file, timeout=timeout, ca_file=ca_file)


def _is_address(value: str) -> bool:
    _, address = parseaddr(value)
    local, at, domain = address.rpartition("@")
    return bool(at and local and domain and "\n" not in value and "\r" not in value)


# --- compose --------------------------------------------------------------------------

def default_subject(group: MessageGroup) -> str:
    """``[CRITICAL] job_sms: DLI_SMS_GES entered EXCEPTION``: severity first, for inbox rules and eyes."""
    return f"[{status_label(group)}] {headline(group)}"


def email_context(group: MessageGroup, now: datetime) -> dict[str, Any]:
    """``message_context`` plus the subject's parts and the colour, as the Slack template gets them."""
    worst = worst_severity(group)
    ctx = message_context(group, now)
    ctx.update(
        headline=headline(group),
        label=status_label(group),
        color=SEVERITY_COLOR["resolved"] if worst is None else SEVERITY_COLOR.get(worst, "#757575"),
    )
    return ctx


def compose(renderer: Renderer, group: MessageGroup, now: datetime) -> tuple[Payload, ...]:
    """Render subject, text and HTML, and fix the Message-ID and Date so a retry resends the same mail."""
    ctx = email_context(group, now)
    subject = renderer.render_or(lambda: default_subject(group), group.template, "email", ctx, part="subject")
    text = renderer.render_or(lambda: plain_text(group, now), group.template, "email", ctx, part="text")
    body = renderer.render_or(lambda: fallback_html(group, now), group.template, "email", ctx, part="html")
    return ({
        "subject": one_line(subject) or default_subject(group),
        "text": text.strip() + "\n",
        "html": body.strip() + "\n",
        "message_id": make_msgid(idstring=_slug(group.group), domain=MSGID_DOMAIN),
        "date": format_datetime(now.astimezone(timezone.utc)),
    },)


def fallback_html(group: MessageGroup, now: datetime) -> str:
    """The built-in HTML part: the plain message, escaped."""
    return f"<!DOCTYPE html>\n<html><body><pre>{html.escape(plain_text(group, now))}</pre></body></html>"


def one_line(text: str) -> str:
    """A subject on one line (a newline in a header would end it) and of a readable length."""
    line = " ".join(text.split())
    return line if len(line) <= MAX_SUBJECT else line[:MAX_SUBJECT - 1] + "…"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:40] or "group"


def build_message(payload: Payload, settings: EmailSettings) -> EmailMessage:
    """The MIME message for a stored payload: text part first, HTML second (clients show the last they can)."""
    missing = [k for k in ("subject", "text", "html") if not isinstance(payload.get(k), str)]
    if missing:
        raise ValueError(f"payload lacks {', '.join(missing)}")
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["Subject"] = one_line(payload["subject"])
    msg["From"] = settings.sender
    msg["To"] = ", ".join(settings.to)
    msg["Date"] = payload.get("date") or format_datetime(datetime.now(timezone.utc))
    msg["Message-ID"] = payload.get("message_id") or make_msgid(domain=MSGID_DOMAIN)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: out-of-office robots must not answer
    msg.set_content(payload["text"])
    msg.add_alternative(payload["html"], subtype="html")
    return msg


# --- send -----------------------------------------------------------------------------

class EmailChannel:
    """A live SMTP destination; connects per message (alerts are rare, idle SMTP sessions time out)."""

    def __init__(self, name: str, settings: EmailSettings, *, username: Secret | None = None,
                 password: Secret | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.name = name
        self.settings = settings
        self._username = username
        self._password = password
        self._tls = tls

    def send(self, notification: Notification) -> None:
        """Deliver one stored message; ChannelError(retryable=...) says whether the outbox should retry."""
        try:
            msg = build_message(notification.payload, self.settings)
        except ValueError as exc:
            raise self._permanent(f"notification {notification.id} is not an email ({exc})",
                                  "it was composed for another channel type") from exc
        try:
            refused = self._deliver(msg)
        except ChannelError:
            raise
        except Exception as exc:
            raise self._classify(exc) from exc
        if refused:
            log.warning("some recipients were refused, the others got the mail: channel=%s refused=%s",
                        self.name, ",".join(sorted(refused)))

    def close(self) -> None:
        """Nothing to release: each send opens and closes its own SMTP session."""

    def _deliver(self, msg: EmailMessage) -> dict[str, tuple[int, bytes]]:
        s = self.settings
        client: smtplib.SMTP
        if s.security == "ssl":
            client = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=self._tls)
        else:
            client = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
        with client:
            if s.security == "starttls":
                client.starttls(context=self._tls)
            if self._username is not None and self._password is not None:
                client.login(self._username.reveal(), self._password.reveal())
            return client.send_message(msg, from_addr=parseaddr(s.sender)[1], to_addrs=list(recipients(s)))

    def _classify(self, exc: Exception) -> ChannelError:
        s = self.settings
        table = f"[channels.{self.name}]"
        if isinstance(exc, ssl.SSLCertVerificationError):
            return self._permanent(f"the certificate of {s.host}:{s.port} is not trusted ({exc.verify_message})",
                                   f"set ca_file in {table} to the CA that signed it, "
                                   "or set host to the name the certificate is for")
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            what = "STARTTLS" if s.security == "starttls" and "STARTTLS" in str(exc) else "a needed extension"
            return self._permanent(f"{s.host}:{s.port} does not support {what} ({self._redact(str(exc))})",
                                   "check host, port and security (\"ssl\" for 465, \"starttls\" for 587)")
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            reply = self._reply(exc)
            if 400 <= exc.smtp_code < 500:
                return self._transient(f"the server could not check the login now ({reply})")
            return self._permanent(f"the server refused the login ({reply})", f"check {s.credentials_source}")
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            replies = {addr: code for addr, (code, _) in exc.recipients.items()}
            if all(400 <= code < 500 for code in replies.values()):
                return self._transient(f"recipients deferred ({', '.join(f'{a}: {c}' for a, c in replies.items())})")
            return self._permanent(f"recipients refused ({', '.join(f'{a}: {c}' for a, c in replies.items())})",
                                   f"fix `to` in {table}")
        if isinstance(exc, smtplib.SMTPResponseException):
            reply = self._reply(exc)
            if 400 <= exc.smtp_code < 500 or exc.smtp_code < 0:
                return self._transient(f"the server answered {reply}")
            hint = f"fix `from` in {table}" if isinstance(exc, smtplib.SMTPSenderRefused) else "see the server's reply"
            return self._permanent(f"the server answered {reply}", hint)
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            return self._transient(f"{s.host}:{s.port} closed the connection ({self._redact(str(exc)) or 'no reason'})")
        if isinstance(exc, ssl.SSLError):
            return self._permanent(f"TLS with {s.host}:{s.port} failed ({exc.reason or exc})",
                                   "check port and security (\"ssl\" for 465, \"starttls\" for 587)")
        if isinstance(exc, (smtplib.SMTPException, OSError)):  # refused, timeout, DNS, reset
            return self._transient(f"cannot reach {s.host}:{s.port} ({_describe(exc)})")
        return self._transient(f"{type(exc).__name__}: {self._redact(str(exc))}")

    def _reply(self, exc: smtplib.SMTPResponseException) -> str:
        text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        return f"{exc.smtp_code} {self._redact(' '.join(text.split()))}"

    def _redact(self, text: str) -> str:
        """Belt and braces: a server that echoes credentials must not put them into our logs."""
        for secret in (self._password, self._username):
            if secret and secret.reveal() and secret.reveal() in text:
                text = text.replace(secret.reveal(), "***")
        return text

    def _permanent(self, what: str, fix: str) -> ChannelError:
        message = f"email channel {self.name}: {what}: {fix}"
        return ChannelError(message, retryable=False)  # whoever catches it reports it: logged once

    def _transient(self, what: str) -> ChannelError:
        return ChannelError(f"email channel {self.name}: {what}; will retry", retryable=True)


def _describe(exc: BaseException) -> str:
    """"ConnectionRefusedError: Connection refused", "timed out": the cause in a few words."""
    strerror = getattr(exc, "strerror", None)
    return f"{type(exc).__name__}: {strerror}" if strerror else (str(exc) or type(exc).__name__)


def create(name: str, settings: EmailSettings, *, environ: Mapping[str, str] | None = None) -> EmailChannel:
    """Read the login (ConfigError names a missing variable) and build the TLS context once."""
    where = f"channels.{name}"
    username = password = None
    if settings.auth:
        username = read_secret(env=settings.username_env, file=settings.username_file, what=where, environ=environ)
        password = read_secret(env=settings.password_env, file=settings.password_file, what=where, environ=environ)
    tls = None
    if settings.security != "none":
        try:
            tls = ssl.create_default_context(cafile=settings.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the CA file {settings.ca_file!r}: {getattr(exc, 'strerror', None) or exc}",
                              where=where, key="ca_file") from exc
    return EmailChannel(name, settings, username=username, password=password, tls=tls)


def recipients(settings: EmailSettings) -> Sequence[str]:
    """The bare addresses of ``to`` (what goes into RCPT TO)."""
    return [parseaddr(a)[1] for a in settings.to]


TYPE = ChannelType(name="email", parse=parse, create=create, compose=compose)
