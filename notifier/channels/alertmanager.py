"""The Alertmanager channel: notifier as one more alert source of a Prometheus Alertmanager (API v2).

Alertmanager wants the state, not messages: every firing alert re-posted while it fires,
with an ``endsAt`` a few intervals ahead, and ``endsAt = now`` once it resolves. So this
channel does not take the cycle's message groups. Each round ``sync`` asks the core
(``core.amsync.plan_sync``) what every Alertmanager channel must be told and queues at
most one *sync* per channel through the outbox, which supersedes the channel's rows still
pending (``merge`` carries their resolves forward): an Alertmanager that was down gets
the latest state when it is back, not a replay.

Payload (stored in the outbox, labels and annotations rendered at enqueue)::

    {"alertmanager": 1, "at": "<queued, RFC 3339>", "ttl": <seconds>,
     "firing": [<postableAlert without endsAt>], "resolved": [<postableAlert with endsAt>]}

``send`` stamps each firing alert's ``endsAt`` with *send time* + ``ttl``, so a row that
waited in the outbox never posts an end in the past, and POSTs the list to
``{url}/api/v2/alerts`` of every configured Alertmanager (an HA pair gets every alert, as
Prometheus sends it). The row is delivered once every URL accepted it; a retry goes only
to those that did not. URLs and credentials only ever appear redacted.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from notifier import __version__
from notifier.channels.am_payload import (
    am_alert,
    facts_of,
    read_generator_url,
    read_labels,
    rfc3339,
    with_source_labels,
)
from notifier.channels.base import ChannelType
from notifier.channels.webhook import url_problem
from notifier.clock import utcnow
from notifier.core.amsync import Synced, plan_sync, ttl
from notifier.core.models import (
    Alert,
    AlertState,
    Clock,
    EntityKey,
    EntityState,
    MessageGroup,
    Notification,
    Payload,
    Rule,
)
from notifier.errors import ChannelError, ConfigError
from notifier.httputil import check_response, redact_url, transport_error
from notifier.outbox import NewNotification
from notifier.render import Renderer
from notifier.secrets import Secret, read_secret
from notifier.strict_toml import TableReader

if TYPE_CHECKING:
    from notifier.config import Config

log = logging.getLogger(__name__)

PAYLOAD_VERSION = 1
API_PATH = "/api/v2/alerts"
DEFAULT_RESEND = 60.0
"""Prometheus' ``--rules.alert.resend-delay``: a firing alert is re-posted at most this often."""
SYNC_GROUP = "(alertmanager sync)"
"""The outbox ``grp`` of a sync row: it holds every job's alerts, not one job's."""


@dataclass(frozen=True, slots=True)
class AlertmanagerSettings:
    """``[channels.NAME]`` with ``type = "alertmanager"``; credentials are names of env vars/files."""

    urls: tuple[str, ...] = field(repr=False)
    labels: tuple[tuple[str, str], ...] = ()
    generator_url: str = ""
    timeout: float = 10.0
    resend: float = DEFAULT_RESEND
    bearer_token_env: str | None = None
    bearer_token_file: str | None = None
    basic_auth_user: str | None = None
    basic_auth_password_env: str | None = None
    basic_auth_password_file: str | None = None

    @property
    def static_labels(self) -> dict[str, str]:
        return dict(self.labels)


# --- parse ----------------------------------------------------------------------------

def parse(reader: TableReader) -> AlertmanagerSettings:
    """Validate the table: ``url`` or ``urls`` (not both), distinct http(s) URLs, credentials by name only."""
    if reader.has("url") and reader.has("urls"):
        raise reader.error("urls", "set either url (one Alertmanager) or urls (an HA cluster), not both")
    if not reader.has("url") and not reader.has("urls"):
        raise reader.error("url", 'required key is missing: url = "http://host:9093" (or urls = [...] for an HA '
                                  "cluster)")
    urls: tuple[str, ...]
    if reader.has("url"):
        urls = (reader.str("url"),)
        key = "url"
    else:
        key = "urls"
        raw = reader.raw("urls")
        if not isinstance(raw, list) or not raw or not all(isinstance(u, str) for u in raw):
            raise reader.error("urls", "expected a non-empty list of URL strings")
        urls = tuple(raw)
    seen: set[str] = set()
    for index, url in enumerate(urls):
        where = "" if key == "url" else f"urls[{index}]: "
        problem = url_problem(url)
        parts = urlsplit(url) if problem is None else None
        if parts is not None and (parts.username is not None or parts.password is not None):
            problem = ("credentials do not belong in the config file: set basic_auth_user and "
                       "basic_auth_password_env (or _file), or bearer_token_env (or _file)")
        elif parts is not None and (parts.query or parts.fragment):
            problem = "the URL of an Alertmanager has no query or fragment (notifier appends /api/v2/alerts)"
        if problem:
            raise reader.error(key, f"{where}{problem}")
        base = url.rstrip("/")
        if base in seen:
            raise reader.error(key, f"{where}the same Alertmanager is listed twice ({redact_url(url)})")
        seen.add(base)
    bearer_env, bearer_file = reader.env_or_file("bearer_token")
    user = reader.str("basic_auth_user", None)
    password_env, password_file = reader.env_or_file("basic_auth_password")
    if (user is None) != (password_env is None and password_file is None):
        raise reader.error("basic_auth_user" if user is None else "basic_auth_password_env",
                           "basic auth needs both basic_auth_user and basic_auth_password_env (or _file)")
    if user is not None and (bearer_env or bearer_file):
        raise reader.error("bearer_token_env" if bearer_env else "bearer_token_file",
                           "set a bearer token or basic auth, not both")
    settings = AlertmanagerSettings(
        urls=tuple(u.rstrip("/") for u in urls),
        labels=read_labels(reader),
        generator_url=read_generator_url(reader),
        timeout=reader.seconds("timeout", 10.0, positive=True),
        resend=reader.seconds("resend", DEFAULT_RESEND, positive=True),
        bearer_token_env=bearer_env, bearer_token_file=bearer_file,
        basic_auth_user=user, basic_auth_password_env=password_env, basic_auth_password_file=password_file,
    )
    reader.finish(known=("type",))
    return settings


# --- the sync: what the shell queues each round -----------------------------------------

@dataclass(frozen=True, slots=True)
class SyncRound:
    """This round's syncs: the outbox rows to queue and the memory to adopt once they are committed."""

    channels: frozenset[str]  # every Alertmanager channel: left out of the message groups
    notifications: tuple[NewNotification, ...]
    synced: dict[str, Synced]


def synced_channels(config: Config) -> frozenset[str]:
    """The channels fed by ``sync`` instead of message groups."""
    return frozenset(name for name, ch in config.channels.items() if ch.type == TYPE.name)


def sync(config: Config, rules: Sequence[Rule], previous: Mapping[str, AlertState],
         states: Mapping[str, AlertState], entities: Mapping[EntityKey, EntityState], notified: Sequence[Alert],
         now: datetime, memory: Mapping[str, Synced]) -> SyncRound:
    """One sync row per Alertmanager channel whose state changed or is due for its re-post.

    ``previous``/``states``: the alert states before and after the round; ``memory``: what
    each channel's last queued sync said (in memory: after a start, every firing alert is
    posted again at once, which Alertmanager takes as a refresh).
    """
    channels = synced_channels(config)
    rows: list[NewNotification] = []
    synced = {name: s for name, s in memory.items() if name in channels}
    facts = facts_of(config.sources)
    for name in sorted(channels):
        settings: AlertmanagerSettings = config.channels[name].settings
        plan = plan_sync(name, previous, states, rules, entities, now, last=memory.get(name),
                         resend=settings.resend, notified=notified)
        if not plan.due:
            continue
        payload = sync_payload(settings, [with_source_labels(a, facts) for a in plan.firing],
                               [with_source_labels(a, facts) for a in plan.resolved], now,
                               ttl(settings.resend, config.interval))
        rows.append(NewNotification(channel=name, group=SYNC_GROUP, payload=payload, supersede=merge))
        if plan.synced is not None:
            synced[name] = plan.synced
    return SyncRound(channels=channels, notifications=tuple(rows), synced=synced)


def sync_payload(settings: AlertmanagerSettings, firing: Sequence[Alert], resolved: Sequence[Alert],
                 at: datetime, ttl_seconds: float) -> dict[str, Any]:
    """The row to queue: postable alerts rendered now, firing ones without ``endsAt`` (``send`` stamps it)."""
    static, link = settings.static_labels, settings.generator_url
    return {
        "alertmanager": PAYLOAD_VERSION,
        "at": rfc3339(at),
        "ttl": ttl_seconds,
        "firing": [am_alert(a, static_labels=static, generator_url=link, ends_at=None) for a in firing],
        "resolved": [am_alert(a, static_labels=static, generator_url=link, ends_at=a.ends_at or at)
                     for a in resolved],
    }


def merge(new: Payload, older: Sequence[Payload]) -> Payload:
    """The superseding payload: ``new``, plus the resolves of ``older`` rows (oldest first) it does not mention.

    An alert an older row said fires and ``new`` does not mention at all ended since (it is
    neither firing nor resolved now, e.g. its rule stopped routing here): it is resolved at
    ``new``'s time. So a superseded row never takes a resolve with it.
    """
    mentioned = {_identity(a) for a in (*new["firing"], *new["resolved"])}
    carried: dict[tuple[tuple[str, str], ...], Any] = {}
    for old in older:
        for alert in old.get("firing", ()):
            if _identity(alert) not in mentioned:
                carried[_identity(alert)] = {**alert, "endsAt": new["at"]}
        for alert in old.get("resolved", ()):
            if _identity(alert) not in mentioned:
                carried[_identity(alert)] = alert
    if not carried:
        return new
    return {**new, "resolved": [*new["resolved"], *carried.values()]}


def _identity(alert: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Alertmanager's identity of an alert: its label set."""
    return tuple(sorted(alert["labels"].items()))


# --- compose: a message sent outside the sync ------------------------------------------

def compose_with_settings(renderer: Renderer, settings: AlertmanagerSettings, group: MessageGroup, now: datetime
                          ) -> tuple[Payload, ...]:
    """A sync-shaped payload for a group that does not come from the sync (``notifier test-channel``, a state
    file that cannot be written): its firing alerts posted with the channel's default TTL, its resolved ones ended.
    """
    firing = [a for a in group.alerts if a.status == "firing"]
    resolved = [a for a in group.alerts if a.status == "resolved"]
    return (sync_payload(settings, firing, resolved, now, ttl(settings.resend, settings.resend)),)


def compose(renderer: Renderer, group: MessageGroup, now: datetime) -> tuple[Payload, ...]:
    """``compose_with_settings`` without the channel's static labels and ``generator_url`` (callers use
    ``ChannelType.compose_for``, which passes the settings)."""
    return compose_with_settings(renderer, AlertmanagerSettings(urls=()), group, now)


# --- send -----------------------------------------------------------------------------

def postable_alerts(payload: Payload, now: datetime) -> list[dict[str, Any]]:
    """The JSON list to POST: firing alerts end ``ttl`` after ``now`` (the send), resolved ones as queued."""
    ends = rfc3339(now + timedelta(seconds=float(payload["ttl"])))
    return [*({**a, "endsAt": ends} for a in payload.get("firing", ())), *payload.get("resolved", ())]


class AlertmanagerChannel:
    """POSTs each sync to every configured Alertmanager; one httpx client for the channel's lifetime."""

    def __init__(self, name: str, settings: AlertmanagerSettings, *, environ: Mapping[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None, clock: Clock = utcnow) -> None:
        self.name = name
        self.settings = settings
        self._clock = clock
        self._auth, secrets = _authorization(name, settings, environ)
        self._secrets = (*secrets, *settings.urls)
        self._client = httpx.Client(timeout=settings.timeout, follow_redirects=False, transport=transport)
        self._accepted: tuple[str, set[str]] = ("", set())  # (outbox row's key, URLs that took it): a retry skips them

    @property
    def redacted_urls(self) -> tuple[str, ...]:
        """Where this channel posts, safe to print."""
        return tuple(redact_url(u) for u in self.settings.urls)

    def send(self, notification: Notification) -> None:
        """POST the alerts to every Alertmanager not yet holding them; ChannelError names the ones that failed."""
        alerts = postable_alerts(notification.payload, self._clock())
        if not alerts:
            return
        body = json.dumps(alerts, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", "User-Agent": f"notifier/{__version__}", **self._auth}
        key, accepted = self._accepted
        if not notification.key or key != notification.key:  # a hand-made notification (test-channel) has no key
            accepted = set()
        errors: list[ChannelError] = []
        for url in self.settings.urls:
            if url in accepted:
                continue
            what = f"alertmanager {self.name} ({redact_url(url)})"
            try:
                response = self._client.post(url + API_PATH, content=body, headers=headers)
                check_response(response, what=what, clock=self._clock, secrets=self._secrets)
            except httpx.HTTPError as exc:
                errors.append(transport_error(exc, url=url + API_PATH, what=what, secrets=self._secrets))
                continue
            except ChannelError as exc:
                errors.append(exc)
                continue
            accepted.add(url)
            log.debug("alertmanager accepted channel=%s id=%s alerts=%d url=%s", self.name, notification.id,
                      len(alerts), redact_url(url))
        if not errors:
            self._accepted = ("", set())
            return
        self._accepted = (notification.key, accepted)
        count = len(self.settings.urls)
        lead = f"{len(errors)} of {count} Alertmanagers did not accept the alerts: " if count > 1 else ""
        retry_after = max((e.retry_after for e in errors if e.retry_after is not None), default=None)
        raise ChannelError(lead + "; ".join(str(e) for e in errors),
                           retryable=any(e.retryable for e in errors), retry_after=retry_after)

    def close(self) -> None:
        self._client.close()


def _authorization(name: str, settings: AlertmanagerSettings, environ: Mapping[str, str] | None
                   ) -> tuple[dict[str, str], tuple[str, ...]]:
    """The ``Authorization`` header (bearer token or basic auth) from its env var or file, and what to scrub."""
    where = f"channels.{name}"
    try:
        if settings.bearer_token_env or settings.bearer_token_file:
            token = _reveal(read_secret(env=settings.bearer_token_env, file=settings.bearer_token_file, what=where,
                                        environ=environ))
            return {"Authorization": f"Bearer {token}"}, (token,)
        if settings.basic_auth_user is not None:
            password = _reveal(read_secret(env=settings.basic_auth_password_env,
                                           file=settings.basic_auth_password_file, what=where, environ=environ))
            pair = base64.b64encode(f"{settings.basic_auth_user}:{password}".encode()).decode()
            return {"Authorization": f"Basic {pair}"}, (password, pair)
    except ConfigError as exc:
        key = ("bearer_token_file" if settings.bearer_token_file else "bearer_token_env"
               if settings.bearer_token_env else
               "basic_auth_password_file" if settings.basic_auth_password_file else "basic_auth_password_env")
        raise ConfigError(exc.detail, where=where, key=key) from None
    return {}, ()


def _reveal(secret: Secret | None) -> str:
    assert secret is not None  # read_secret(required=True) returns one or raises
    return secret.reveal()


def create(name: str, settings: AlertmanagerSettings) -> AlertmanagerChannel:
    return AlertmanagerChannel(name, settings)


TYPE = ChannelType(name="alertmanager", parse=parse, create=create, compose=compose,
                   compose_with_settings=compose_with_settings)
