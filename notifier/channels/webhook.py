"""The webhook channel: the JSON payload (a contract: ARCHITECTURE.md, "Contracts"), POSTed to a URL.

Two formats. ``format = "notifier"`` (the default) is notifier's own payload, a contract
with two sources that must agree: the default template ``default.webhook.j2`` (which a
user may override to suit another receiver) and ``webhook_payload()`` in Python, the
reference the template is tested against and the fallback when a template fails or does
not produce a JSON object. ``format = "alertmanager"`` is exactly the payload Alertmanager
posts to its webhook receivers (``channels.am_payload``), no template involved, so a
receiver written for Alertmanager works unchanged; it takes ``receiver``, ``labels``,
``external_url`` and ``generator_url``.

Delivery: one POST of ``json.dumps(payload)`` in compact form, optionally signed with
HMAC-SHA256 over exactly those bytes (``X-Notifier-Signature: sha256=<hex>``), with the
notification key in ``Idempotency-Key``/``X-Notifier-Id`` (``<state file id>-<outbox id>``,
unique across state files and restarts) so a receiver can drop the duplicates that
at-least-once delivery produces. ``notifier.httputil`` decides what is
retryable (and reads ``Retry-After``); the URL (which may hold a secret) only ever appears redacted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from notifier import __version__
from notifier.channels.am_payload import am_webhook_payload, read_generator_url, read_labels, read_url
from notifier.channels.base import ChannelType
from notifier.clock import utcnow
from notifier.core.models import Alert, Clock, MessageGroup, Notification, Payload
from notifier.errors import ConfigError, TemplateError
from notifier.httputil import check_response, redact_url, transport_error
from notifier.render import Renderer, isoformat, message_context
from notifier.secrets import Secret, read_secret
from notifier.strict_toml import TableReader

log = logging.getLogger(__name__)

PAYLOAD_VERSION = "1"
SIGNATURE_HEADER = "X-Notifier-Signature"
ID_HEADERS = ("Idempotency-Key", "X-Notifier-Id")
RESERVED_HEADERS = frozenset(h.lower() for h in (
    "Content-Type", "Content-Length", "Host", "Transfer-Encoding", SIGNATURE_HEADER, *ID_HEADERS))
"""Headers notifier sets itself; a static header must not override them."""

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 field-name

Format = Literal["notifier", "alertmanager"]
FORMATS: tuple[Format, ...] = ("notifier", "alertmanager")
ALERTMANAGER_KEYS = ("receiver", "labels", "external_url", "generator_url")
"""Keys that only shape the Alertmanager payload: an error with ``format = "notifier"``, which would ignore them."""


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """``[channels.NAME]`` with ``type = "webhook"``; secrets are names of env vars/files, never values."""

    url: str | None = field(default=None, repr=False)  # exactly one of url / url_env
    url_env: str | None = None
    secret_env: str | None = None
    secret_file: str | None = None
    timeout: float = 10.0
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    format: Format = "notifier"
    receiver: str | None = None  # format = "alertmanager": the payload's receiver; None: the channel's name
    labels: tuple[tuple[str, str], ...] = ()  # format = "alertmanager": static labels, under the rule's
    external_url: str = ""  # format = "alertmanager": the payload's externalURL
    generator_url: str = ""  # format = "alertmanager": each alert's generatorURL, with {job}-style placeholders


# --- parse ----------------------------------------------------------------------------

def parse(reader: TableReader) -> WebhookSettings:
    """Validate the channel table: a usable http(s) URL or the env var that holds one."""
    url = reader.str("url", None)
    url_env = reader.str("url_env", None)
    if url is not None and url_env is not None:
        raise reader.error("url_env", "set either url or url_env, not both")
    if url is None and url_env is None:
        raise reader.error("url", "required key is missing (or set url_env to the name of an environment variable)")
    if url is not None:
        problem = url_problem(url)
        if problem:
            raise reader.error("url", problem)
    if url_env is not None and not url_env.strip():
        raise reader.error("url_env", "must name an environment variable")
    timeout = reader.seconds("timeout", 10.0, positive=True)
    secret_env, secret_file = reader.env_or_file("secret")
    fmt = reader.choice("format", FORMATS, "notifier")
    if fmt != "alertmanager":
        for key in ALERTMANAGER_KEYS:
            if reader.has(key):
                raise reader.error(key, 'only used with format = "alertmanager"')
    receiver = reader.str("receiver", None)
    if receiver is not None and not receiver.strip():
        raise reader.error("receiver", "must not be empty (leave it out to use the channel's name)")
    settings = WebhookSettings(
        url=url,
        url_env=url_env,
        secret_env=secret_env,
        secret_file=secret_file,
        timeout=timeout,
        headers=_headers(reader.table("headers", None)),
        format=fmt,
        receiver=receiver,
        labels=read_labels(reader),
        external_url=read_url(reader, "external_url"),
        generator_url=read_generator_url(reader),
    )
    reader.finish(known=("type",))
    return settings


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be posted to, in words that never repeat its path or query."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return f"not a valid URL: {redact_url(url)!r}"
    if parts.scheme not in ("http", "https"):
        return f"must be an http:// or https:// URL, got {redact_url(url) if parts.netloc else 'no scheme'!r}"
    if not parts.hostname:
        return "the URL has no host"
    return None


def _headers(table: TableReader | None) -> tuple[tuple[str, str], ...]:
    if table is None:
        return ()
    out: list[tuple[str, str]] = []
    for name in list(table.data):
        if not _TOKEN.match(name):
            raise table.error(name, "not a valid HTTP header name")
        if name.lower() in RESERVED_HEADERS:
            raise table.error(name, "notifier sets this header itself")
        value = table.raw(name)
        if not isinstance(value, str):
            raise table.error(name, f"expected a string, got {type(value).__name__}")  # never echo the value
        if "\r" in value or "\n" in value:
            raise table.error(name, "header values cannot contain line breaks")
        out.append((name, value))
    table.finish()
    return tuple(out)


# --- compose --------------------------------------------------------------------------

def alert_payload(alert: Alert) -> dict[str, Any]:
    """One element of the payload's ``alerts``: every contract field, null where absent."""
    return {
        "status": alert.status,
        "rule": alert.rule,
        "severity": alert.severity,
        "fingerprint": alert.fingerprint,
        "source": alert.source,
        "job": alert.job,
        "node": alert.node,
        "node_type": alert.node_type,
        "state": alert.state,
        "previous_state": alert.previous_state,
        "since": isoformat(alert.since),
        "starts_at": isoformat(alert.starts_at),
        "ends_at": isoformat(alert.ends_at),
        "log_path": alert.log_path,
        "summary": alert.summary,
    }


def webhook_payload(group: MessageGroup) -> dict[str, Any]:
    """The contract payload, built without a template: the reference and the fallback."""
    return {
        "version": PAYLOAD_VERSION,
        "status": "firing" if any(a.status == "firing" for a in group.alerts) else "resolved",
        "group": group.group,
        "alerts": [alert_payload(a) for a in group.alerts],
    }


def compose(renderer: Renderer, group: MessageGroup, now: datetime) -> tuple[Payload, ...]:
    """Render ``<template>.webhook.j2`` into a JSON object; fall back to ``webhook_payload``.

    In strict mode (``notifier check``) a template that fails or is not a JSON object
    raises TemplateError instead, so it is caught before production.
    """
    try:
        text = renderer.render(group.template, "webhook", message_context(group, now))
        return (_json_object(text, group.template),)
    except TemplateError as exc:
        if renderer.strict:
            raise
        log.error("webhook template failed, sending the built-in payload instead channel=%s job=%s: %s",
                  group.channel, group.group, exc)
        return (webhook_payload(group),)


def compose_with_settings(renderer: Renderer, settings: WebhookSettings, group: MessageGroup, now: datetime
                          ) -> tuple[Payload, ...]:
    """The channel's format: Alertmanager's webhook payload as is, else ``compose`` (the template)."""
    if settings.format == "alertmanager":
        return (am_webhook_payload(group, receiver=settings.receiver or group.channel,
                                   static_labels=dict(settings.labels), external_url=settings.external_url,
                                   generator_url=settings.generator_url, now=now),)
    return compose(renderer, group, now)


def _json_object(text: str, template: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise TemplateError(f"{template}.webhook.j2: output is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise TemplateError(f"{template}.webhook.j2: output must be a JSON object, got {type(value).__name__}")
    return value


# --- send -----------------------------------------------------------------------------

def encode_body(payload: Payload) -> bytes:
    """The exact bytes sent and signed: compact JSON, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def sign(secret: bytes, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of the body, as GitHub-style receivers verify it."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookChannel:
    """POSTs each notification's payload; one httpx client for the channel's lifetime."""

    def __init__(self, name: str, settings: WebhookSettings, *, environ: Mapping[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None, clock: Clock = utcnow) -> None:
        self.name = name
        self.settings = settings
        self._clock = clock
        self._url = _read_url(name, settings, environ)
        self._redacted = redact_url(self._url.reveal())
        secret = _read_signing_secret(name, settings, environ)
        self._secret = secret
        self._secrets = tuple(s.reveal() for s in (self._url, secret) if s) + tuple(v for _, v in settings.headers)
        self._client = httpx.Client(timeout=settings.timeout, follow_redirects=False, transport=transport)

    @property
    def redacted_url(self) -> str:
        """Where this channel posts, safe to print."""
        return self._redacted

    def headers_for(self, notification: Notification, body: bytes) -> dict[str, str]:
        headers = dict(self.settings.headers)
        headers.update({
            "Content-Type": "application/json",
            "User-Agent": f"notifier/{__version__}",
            **{h: notification.idempotency_key for h in ID_HEADERS},
        })
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret.reveal().encode(), body)
        return headers

    def send(self, notification: Notification) -> None:
        """One POST; ChannelError(retryable=...) on any failure, with the URL redacted."""
        body = encode_body(notification.payload)
        what = f"webhook {self.name}"
        try:
            response = self._client.post(self._url.reveal(), content=body, headers=self.headers_for(notification, body))
        except httpx.HTTPError as exc:
            raise transport_error(exc, url=self._url.reveal(), what=what, secrets=self._secrets) from exc
        check_response(response, what=what, clock=self._clock, secrets=self._secrets)
        log.debug("webhook delivered channel=%s id=%s status=%d url=%s",
                  self.name, notification.id, response.status_code, self._redacted)

    def close(self) -> None:
        self._client.close()


def _read_url(name: str, settings: WebhookSettings, environ: Mapping[str, str] | None) -> Secret:
    """The configured URL, or the one in ``url_env``, checked like a configured one."""
    if settings.url is not None:
        return Secret(settings.url)
    try:
        url = read_secret(env=settings.url_env, what=f"channels.{name}", environ=environ)
    except ConfigError as exc:
        raise ConfigError(exc.detail, where=f"channels.{name}", key="url_env") from None
    assert url is not None  # required=True
    problem = url_problem(url.reveal())
    if problem:
        raise ConfigError(f"environment variable {settings.url_env}: {problem}", where=f"channels.{name}",
                          key="url_env")
    return url


def _read_signing_secret(name: str, settings: WebhookSettings, environ: Mapping[str, str] | None) -> Secret | None:
    if not (settings.secret_env or settings.secret_file):
        return None
    try:
        return read_secret(env=settings.secret_env, file=settings.secret_file, what=f"channels.{name}", environ=environ)
    except ConfigError as exc:
        key = "secret_file" if settings.secret_file else "secret_env"
        raise ConfigError(exc.detail, where=f"channels.{name}", key=key) from None


def create(name: str, settings: WebhookSettings) -> WebhookChannel:
    return WebhookChannel(name, settings)


TYPE = ChannelType(name="webhook", parse=parse, create=create, compose=compose,
                   compose_with_settings=compose_with_settings)
