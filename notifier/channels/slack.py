"""Slack: Block Kit messages through a bot token (``chat.postMessage``) or an incoming webhook.

compose
    is ``slack_blocks.compose``: templates rendered into messages that fit Slack's limits.

send
    posts with the real ``slack_sdk`` clients. The channel decides what is worth retrying,
    like Alertmanager's Slack notifier: network errors, 5xx and rate limits are transient;
    an ``ok: false`` answer is permanent (sending it again gets the same answer), and the
    error names the fix. A short ``Retry-After`` (up to 5 s) is waited out inside the call
    through slack_sdk's retry-handler hook; a longer one goes back to the outbox as
    ``retry_after``. ``Retry-After`` is read with ``notifier.httputil`` without a clock, so
    only delta-seconds count (what Slack sends). Posts to one Slack channel are paced to
    about one per second, which is what Slack allows per channel.

The bot token and the webhook URL (whose path is its secret) never reach an error or a
log line: errors are built from Slack's error code, not from the client's exception text.
"""

from __future__ import annotations

import fnmatch
import http.client
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.webhook import WebhookClient

from notifier.channels.base import ChannelType
from notifier.channels.slack_blocks import Message, add_note, compose
from notifier.channels.slack_threads import ACTIONS_BLOCK_ID, LOST_PARENT_NOTE, compose_incident
from notifier.core.incidents import Conversation
from notifier.core.models import SEVERITIES, MessageGroup, Notification, Payload, ThreadRef, split_job_key
from notifier.errors import ChannelError, ConfigError
from notifier.httputil import get_header, parse_retry_after
from notifier.render import Renderer, worst_severity
from notifier.rulefile import SLACK_CHANNEL, check_mentions
from notifier.secrets import Secret, read_secret
from notifier.strict_toml import TableReader

log = logging.getLogger(__name__)

_SDK_LOG = logging.getLogger(f"{__name__}.sdk")
_SDK_LOG.setLevel(logging.INFO)  # slack_sdk's DEBUG lines carry the webhook URL: never emit them

Mode = Literal["token", "webhook"]
Sleep = Callable[[float], None]
Monotonic = Callable[[], float]


MIN_POST_INTERVAL = 1.0
"""Seconds between two posts to one Slack channel (Slack allows about one per second)."""
MAX_INLINE_RETRY_AFTER = 5.0
"""A ``Retry-After`` up to this is waited inside ``send``; longer ones go back to the outbox."""
DEFAULT_TOKEN_ENV = "SLACK_BOT_TOKEN"

# --- Slack's error codes --------------------------------------------------------------
_AUTH_ERRORS = frozenset({"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive",
                          "no_permission", "not_allowed_token_type", "invalid_token", "no_service",
                          "no_service_id", "no_team", "team_disabled", "team_not_found"})
_TRANSIENT_ERRORS = frozenset({"ratelimited", "rate_limited", "internal_error", "fatal_error",
                               "service_unavailable", "request_timeout", "team_added_to_org"})
_REJECTED_PAYLOAD = frozenset({"invalid_blocks", "invalid_blocks_format", "invalid_attachments",
                               "msg_too_long", "msg_blocks_too_long", "too_many_attachments",
                               "invalid_payload", "markdown_text_conflict"})
"""Slack refused the message's shape: the channel resends it once as plain text."""


# --- settings -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SlackSettings:
    """``[channels.NAME]`` with ``type = "slack"``: a bot token or an incoming webhook, never both."""

    mode: Mode
    channel: str | None = None  # required with a token: "#data-alerts" or a channel ID
    token_env: str | None = None
    token_file: str | None = None
    webhook_url_env: str | None = None
    webhook_url_file: str | None = None
    base_url: str | None = None  # a Slack-compatible Web API, e.g. "http://127.0.0.1:PORT/api/"
    timeout: float = 10.0
    username: str | None = None
    icon_emoji: str | None = None
    thread: bool = False  # one thread per incident (bot token only); parse() defaults it on there
    broadcast_resolved: bool = False  # the reply that resolves the incident is also shown in the channel
    mention: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # severity -> mentions, first message only
    app_token_env: str | None = None  # Socket Mode (buttons): here or in [slack]
    app_token_file: str | None = None
    allow: tuple[str, ...] = ()  # who may click: user ids (U.., W..) and user-group ids (S..); empty: everyone
    owners: Mapping[str, str] = field(default_factory=dict)  # [slack.owners]: DataArts job owner -> Slack user id
    routes: tuple[tuple[str, str], ...] = ()  # (job glob, Slack channel): first match wins, else `channel`

    def target(self, job: str) -> str | None:
        """The Slack channel a job's messages go to: the first matching route, else ``channel``.

        ``job`` is the job key: a glob with a ``/`` matches the key (``ops/*``: every job of
        source ops), any other the bare name (``job_pay_*``, as rules' ``jobs`` do, in every source).
        """
        bare = split_job_key(job)[1]
        return next((where for glob, where in self.routes
                     if fnmatch.fnmatchcase(job if "/" in glob else bare, glob)), self.channel)

    @property
    def buttons(self) -> bool:
        """Messages carry buttons only when a Socket Mode app token can receive their clicks."""
        return self.mode == "token" and bool(self.app_token_env or self.app_token_file)

    @property
    def app_token_source(self) -> str:
        return f"file {self.app_token_file}" if self.app_token_file else f"environment variable {self.app_token_env}"

    def mentions_for(self, severity: str | None, owner: str | None,
                     rule_mentions: Sequence[str] = ()) -> tuple[str, ...]:
        """Who the first message of an incident pings: by severity, the rules' own, and the job's owner."""
        out = [*self.mention.get(severity or "", ()), *rule_mentions]
        if owner and owner in self.owners:
            out.append(f"<@{self.owners[owner]}>")
        return tuple(dict.fromkeys(out))

    @property
    def secret_source(self) -> str:
        """Where the secret comes from, in words an operator can act on (never the value)."""
        if self.mode == "token":
            return f"file {self.token_file}" if self.token_file else f"environment variable {self.token_env}"
        if self.webhook_url_file:
            return f"file {self.webhook_url_file}"
        return f"environment variable {self.webhook_url_env}"


def parse(reader: TableReader) -> SlackSettings:
    """Validate the channel table: exactly one mode, a channel with a token, no unknown keys."""
    token_env, token_file = reader.env_or_file("token")
    webhook_env, webhook_file = reader.env_or_file("webhook_url")
    channel = reader.str("channel", None)
    base_url = reader.str("base_url", None)
    timeout = reader.seconds("timeout", 10.0, positive=True)
    username = reader.str("username", None)
    icon_emoji = reader.str("icon_emoji", None)
    thread = reader.bool("thread", None)
    broadcast = reader.bool("broadcast_resolved", False)
    mention = parse_mention(reader, "mention")
    app_env, app_file = reader.env_or_file("app_token")
    allow = _allow(reader)
    routes = _routes(reader)
    reader.finish(known=("type",))

    common = dict(timeout=timeout, username=username, icon_emoji=icon_emoji, mention=mention, allow=allow)
    if webhook_env or webhook_file:
        key = "webhook_url_env" if webhook_env else "webhook_url_file"
        if token_env or token_file:
            raise reader.error(key, "set either a bot token (token_env/token_file) or an incoming webhook "
                                    "(webhook_url_env/webhook_url_file), not both")
        if channel is not None:
            raise reader.error("channel", "an incoming webhook posts to the channel it was created for: "
                                          "remove `channel`, or use a bot token (token_env) to choose the channel")
        if base_url is not None:
            raise reader.error("base_url", "base_url is for the bot token mode; a webhook URL is already complete")
        for key, value in (("thread", thread), ("broadcast_resolved", broadcast or None), ("routes", routes),
                           ("mention", mention), ("allow", allow), ("app_token_env", app_env),
                           ("app_token_file", app_file)):
            if value:
                raise reader.error(key, "an incoming webhook cannot thread, edit or receive button clicks "
                                        "(Slack answers it without a message ts): use a bot token (token_env)")
        return SlackSettings(mode="webhook", webhook_url_env=webhook_env, webhook_url_file=webhook_file, **common)
    if not channel or not channel.strip():
        raise reader.error("channel", "required with a bot token: the Slack channel to post to, "
                                      "e.g. \"#data-alerts\" or a channel ID like \"C0123456789\"")
    return SlackSettings(mode="token", channel=channel.strip(),
                         token_env=None if token_file else (token_env or DEFAULT_TOKEN_ENV), token_file=token_file,
                         base_url=_parse_base_url(reader, base_url), thread=True if thread is None else thread,
                         broadcast_resolved=broadcast, app_token_env=app_env, app_token_file=app_file, routes=routes,
                         **common)


def _routes(reader: TableReader) -> tuple[tuple[str, str], ...]:
    """``routes = { "payments_*" = "#payments" }``: ten teams, one app, one channel entry."""
    table = reader.table("routes", None)
    if table is None:
        return ()
    out = []
    for glob in table.data:
        where = table.str(glob)
        if not glob.strip():
            raise table.error(glob, "a job glob must not be empty")
        if not SLACK_CHANNEL.fullmatch(where):
            raise table.error(glob, f'expected a Slack channel like "#payments" or "C0123456789", got {where!r}')
        out.append((glob, where))
    return tuple(out)


def parse_mention(reader: TableReader, key: str) -> dict[str, tuple[str, ...]]:
    """``mention = { critical = ["<!subteam^S0123>"], warning = [] }``, or a list for every severity."""
    if reader.raw(key, None) is None:  # read, so a typo of it gets a "did you mean"
        return {}
    if not isinstance(reader.data[key], Mapping):
        return dict.fromkeys(SEVERITIES, check_mentions(reader, key, reader.str_list(key)))
    table = reader.table(key)
    out = {severity: check_mentions(table, severity, table.str_list(severity, ())) for severity in SEVERITIES}
    table.finish()
    return {severity: who for severity, who in out.items() if who}


def _allow(reader: TableReader) -> tuple[str, ...]:
    allow = reader.str_list("allow", ())
    for who in allow:
        if not re.fullmatch(r"[UWS][A-Z0-9]{2,}", who):
            raise reader.error("allow", "expected Slack user ids (U0123ABCD) or user-group ids (S0123ABCD), "
                                        f"got {who!r}")
    return allow


@dataclass(frozen=True, slots=True)
class SlackShared:
    """``[slack]``: what every Slack channel shares: the Socket Mode app token, who may click, job owners."""

    app_token_env: str | None = None
    app_token_file: str | None = None
    allow: tuple[str, ...] = ()
    owners: Mapping[str, str] = field(default_factory=dict)


def parse_shared(reader: TableReader) -> SlackShared:
    app_env, app_file = reader.env_or_file("app_token")
    allow = _allow(reader)
    owners_table = reader.optional_table("owners")
    owners = {}
    for owner in owners_table.data:
        user = owners_table.str(owner)
        if not re.fullmatch(r"[UW][A-Z0-9]{2,}", user):
            raise owners_table.error(owner, f"expected the owner's Slack user id (U0123ABCD), got {user!r}")
        owners[owner] = user
    reader.finish()
    return SlackShared(app_token_env=app_env, app_token_file=app_file, allow=allow, owners=owners)


def with_shared(settings: SlackSettings, shared: SlackShared) -> SlackSettings:
    """A channel's own keys win; ``[slack]`` fills what it left out (webhook channels take only the owners)."""
    if settings.mode == "webhook":
        return replace(settings, owners=shared.owners)
    own_token = settings.app_token_env or settings.app_token_file
    return replace(settings, owners=shared.owners, allow=settings.allow or shared.allow,
                   app_token_env=settings.app_token_env if own_token else shared.app_token_env,
                   app_token_file=settings.app_token_file if own_token else shared.app_token_file)


def _parse_base_url(reader: TableReader, value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise reader.error("base_url", f"expected an http(s) URL like \"https://slack.com/api/\", got {value!r}")
    return value if value.endswith("/") else value + "/"


# --- send -----------------------------------------------------------------------------

class _PayloadRejected(Exception):
    """Slack refused the message's blocks or attachments (not the channel or the token)."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class ShortRateLimitHandler(RateLimitErrorRetryHandler):
    """slack_sdk's 429 handler, waiting through an injected ``sleep`` and only for a short ``Retry-After``.

    The built-in handler sleeps with ``time.sleep`` for any ``Retry-After``; a long one
    would block the delivery loop, so it is left to the outbox (which waits without blocking).
    """

    def __init__(self, *, max_wait: float = MAX_INLINE_RETRY_AFTER, sleep: Sleep = time.sleep,
                 max_retry_count: int = 2) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.max_wait = max_wait
        self._sleep = sleep

    def _can_retry(self, *, state: RetryState, request: HttpRequest, response: HttpResponse | None = None,
                   error: Exception | None = None) -> bool:
        if response is None or response.status_code != 429:
            return False
        wait = parse_retry_after(get_header(response.headers, "retry-after"))
        return wait is not None and wait <= self.max_wait

    def prepare_for_next_attempt(self, *, state: RetryState, request: HttpRequest,
                                 response: HttpResponse | None = None, error: Exception | None = None) -> None:
        wait = parse_retry_after(get_header(response.headers, "retry-after")) if response is not None else None
        wait = 1.0 if wait is None else wait
        log.info("slack rate limited the post; waiting as Retry-After asks: seconds=%s", wait)
        state.next_attempt_requested = True
        self._sleep(wait)
        state.increment_current_attempt()




class Pacer:
    """About one post a second per Slack channel, shared by every channel entry that posts to it.

    ``wait`` reserves the next free slot under a lock and sleeps until it, so two entries
    posting to one Slack channel from two delivery threads are paced together.
    """

    def __init__(self, sleep: Sleep = time.sleep, monotonic: Monotonic = time.monotonic,
                 interval: float = MIN_POST_INTERVAL) -> None:
        self._sleep, self._monotonic, self._interval = sleep, monotonic, interval
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}
        self._ids: dict[str, str] = {}  # "#data-alerts" -> "C0123": a channel named two ways is one channel

    def learn(self, space: str, name: str, place: str) -> None:
        """Slack said which channel id a name posts to: pace both as one from now on."""
        alias, key = f"{space}/{name}", f"{space}/{place}"
        with self._lock:
            if alias != key and self._ids.get(alias) != key:
                self._ids[alias] = key
                if alias in self._next:  # the slot the name reserved now belongs to the channel
                    self._next[key] = max(self._next[key], self._next[alias]) if key in self._next \
                        else self._next[alias]

    def wait(self, key: str) -> None:
        with self._lock:
            key = self._ids.get(key, key)
            now = self._monotonic()
            slot = max(now, self._next.get(key, now))
            self._next[key] = slot + self._interval
        if slot > now:
            self._sleep(slot - now)


SHARED_PACER = Pacer()
"""The process's pacer: every Slack channel entry built without its own clock uses it."""


class _ParentGone(Exception):
    """The thread's first message is gone (deleted, or never known): the message starts a new thread."""


_GONE_ERRORS = frozenset({"message_not_found", "cant_update_message", "thread_not_found", "edit_window_closed"})


class SlackChannel:
    """A live Slack destination; one instance per ``[channels.NAME]``, safe to share between threads."""

    def __init__(self, name: str, settings: SlackSettings, *, token: Secret | None = None,
                 webhook_url: Secret | None = None, sleep: Sleep = time.sleep,
                 monotonic: Monotonic = time.monotonic, max_inline_wait: float = MAX_INLINE_RETRY_AFTER,
                 pacer: Pacer | None = None, app_token: Secret | None = None) -> None:
        self.name = name
        self.settings = settings
        self.app_token = app_token  # Socket Mode (buttons): ``notifier.slack_actions`` connects with it
        self._sleep = sleep
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._pacer = pacer if pacer is not None else (
            SHARED_PACER if sleep is time.sleep and monotonic is time.monotonic else Pacer(sleep, monotonic))
        self._space = settings.base_url or "slack"  # pacing keys: one workspace's channel, not another's
        handlers: list[RetryHandler] = [ShortRateLimitHandler(max_wait=max_inline_wait, sleep=sleep)]
        self._client: WebClient | None = None
        self._webhook: WebhookClient | None = None
        if settings.mode == "token":
            if token is None:
                raise ValueError("token mode needs a token")
            self._client = WebClient(token=token.reveal(), base_url=settings.base_url or WebClient.BASE_URL,
                                     timeout=settings.timeout,  # type: ignore[arg-type]  # float is fine for urllib
                                     retry_handlers=handlers, logger=_SDK_LOG)
        else:
            if webhook_url is None:
                raise ValueError("webhook mode needs a webhook URL")
            self._webhook = WebhookClient(url=webhook_url.reveal(), timeout=settings.timeout,  # type: ignore[arg-type]
                                          retry_handlers=handlers, logger=_SDK_LOG)

    @property
    def _where(self) -> str:
        return self.settings.channel or "the incoming webhook"

    def send(self, notification: Notification) -> ThreadRef | None:
        """Post one stored payload; ChannelError(retryable=...) says whether the outbox should retry.

        A payload of a thread (``"thread"``, bot token only) is the incident's first message
        (posted, its ts returned) or a reply: the parent is edited first (an edit can be
        repeated harmlessly, a reply cannot), then the reply is posted in its thread. When the
        parent is gone or unknown, the reply is posted to the channel saying so, and becomes
        the new parent.
        """
        payload = notification.payload
        message = _outgoing(payload, self.name, notification.id)
        route = payload.get("channel")  # a rule's slack_channel; else the entry's routes by job
        target = route if isinstance(route, str) and route else self.settings.target(notification.group)
        thread = payload.get("thread")
        with self._lock:
            if not isinstance(thread, Mapping) or self._client is None:
                self._send(message, notification.id, target)
                return None
            parent = notification.parent
            if thread.get("edit_only"):  # only the parent changes (a quiet end, a silence): post nothing
                if parent is not None:
                    try:
                        self._edit_parent(parent, thread)
                    except _ParentGone:
                        log.info("slack thread parent is gone; nothing to edit: channel=%s thread=%s", self.name,
                                 thread.get("id"))
                return None
            if not thread.get("opens") and parent is not None:
                try:
                    self._edit_parent(parent, thread)
                    self._send(message, notification.id, parent.place, thread_ts=parent.ts,
                               reply_broadcast=bool(thread.get("broadcast")) or None)
                    return None
                except _ParentGone as exc:
                    log.warning("slack thread parent is gone, starting a new thread: channel=%s thread=%s error=%s",
                                self.name, thread.get("id"), exc)
            if not thread.get("opens"):  # it becomes the new parent: say so, and bring the buttons along
                message = add_note(message, LOST_PARENT_NOTE)
                parent_blocks = thread["parent"].get("blocks", ()) if isinstance(thread.get("parent"), Mapping) else ()
                actions = [b for b in parent_blocks if isinstance(b, Mapping) and b.get("block_id") == ACTIONS_BLOCK_ID]
                if actions:
                    message = {**message, "blocks": [*message.get("blocks", ()), *actions]}
            return self._send(message, notification.id, target)

    def _edit_parent(self, parent: ThreadRef, thread: Mapping[str, Any]) -> None:
        """Edit the parent to the payload's ``parent`` content; a layout Slack refuses is skipped, not retried."""
        content = thread.get("parent")
        if not isinstance(content, Mapping):
            return
        try:
            self.update(parent, content)
        except _PayloadRejected as exc:  # an edit is a courtesy: it must not hold the channel's queue
            log.error("slack refused the edited first message, leaving it as it was: channel=%s thread=%s error=%s",
                      self.name, thread.get("id"), exc.error)

    def update(self, ref: ThreadRef, message: Mapping[str, Any]) -> None:
        """Edit a posted message (``chat.update``); _ParentGone when Slack no longer has it."""
        assert self._client is not None
        try:
            self._client.chat_update(channel=ref.place, ts=ref.ts, text=message.get("text") or "",
                                     blocks=message.get("blocks"), attachments=message.get("attachments"))
        except SlackApiError as exc:
            if _api_code(exc) in _GONE_ERRORS:
                raise _ParentGone(_api_code(exc)) from exc
            raise self._api_error(exc) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise self._transient(f"cannot reach Slack: {_describe(exc)}") from exc

    def reply(self, ref: ThreadRef, text: str) -> None:
        """A plain reply in a thread (what a button click did)."""
        self._pacer.wait(f"{self._space}/{ref.place}")
        self._post({"text": text}, ref.place, thread_ts=ref.ts)

    def ephemeral(self, place: str, user: str, text: str) -> None:
        """A message only ``user`` sees (``chat.postEphemeral``): "you may not do that"."""
        assert self._client is not None
        try:
            self._client.chat_postEphemeral(channel=place, user=user, text=text)
        except SlackApiError as exc:
            raise self._api_error(exc) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise self._transient(f"cannot reach Slack: {_describe(exc)}") from exc

    def group_members(self, group: str) -> frozenset[str]:
        """The user ids in a Slack user group (``usergroups.users.list``, scope usergroups:read)."""
        assert self._client is not None
        try:
            return frozenset(self._client.usergroups_users_list(usergroup=group).get("users") or ())
        except SlackApiError as exc:
            raise ChannelError(f"slack channel {self.name}: cannot list the members of user group {group}: "
                               f"{_api_code(exc)} (the app needs the usergroups:read scope)",
                               retryable=_api_code(exc) in _TRANSIENT_ERRORS) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise self._transient(f"cannot reach Slack: {_describe(exc)}") from exc

    def _send(self, message: Message, notification_id: int, target: str | None, **thread: Any) -> ThreadRef | None:
        """Post (paced per Slack channel), falling back to plain text when Slack refuses the layout."""
        self._pacer.wait(f"{self._space}/{target}" if target else f"webhook/{self.name}")
        try:
            try:
                ref = self._post(message, target, **thread)
            except _PayloadRejected as exc:
                log.error("slack refused the message layout, sending it as plain text: channel=%s error=%s "
                          "notification=%s", self.name, exc.error, notification_id)
                ref = self._post({"text": message["text"] or "notifier: see `notifier alerts`"}, target, **thread)
            if ref is not None and target:
                self._pacer.learn(self._space, target, ref.place)
            return ref
        except _PayloadRejected as exc:
            raise self._permanent(exc.error, "the message was refused even as plain text: "
                                             "check the template with `notifier check`") from exc

    def check(self) -> str:
        """Ask Slack who the token belongs to (``auth.test``); ``notifier test-channel`` prints it before sending."""
        if self._client is None:
            return "incoming webhook (nothing to check without posting)"
        doing = "checking the bot token (auth.test)"
        try:
            resp = self._client.auth_test()
        except SlackApiError as exc:
            raise self._api_error(exc, doing) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise self._transient(f"cannot reach Slack: {_describe(exc)}", doing=doing) from exc
        identity = f"bot {resp.get('user')} in team {resp.get('team')}"
        if self.app_token is None:
            return f"{identity}; no app token, so no buttons (set app_token_env for Socket Mode)"
        try:  # the only way to prove an app-level token: ask for a Socket Mode URL (it is not connected to)
            self._client.apps_connections_open(app_token=self.app_token.reveal())
        except SlackApiError as exc:
            code = _api_code(exc)
            if exc.response.status_code == 429 or exc.response.status_code >= 500 or code in _TRANSIENT_ERRORS:
                raise ChannelError(f"slack channel {self.name}: {identity} (bot token ok), but checking the app token "
                                   f"failed: Slack answered {code}; try again", retryable=True) from exc
            raise ChannelError(f"slack channel {self.name}: {identity} (bot token ok), but the app token in "
                               f"{self.settings.app_token_source} was refused ({code}): it must be an app-level "
                               "token (xapp-...) with connections:write, and Socket Mode must be on in the app's "
                               "settings", retryable=False) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise self._transient(f"cannot reach Slack: {_describe(exc)}", doing="checking the app token") from exc
        return f"{identity}; app token ok (Socket Mode, buttons on)"

    def close(self) -> None:
        """Nothing to release: slack_sdk opens one connection per request."""

    def _post(self, message: Message, target: str | None = None, *, thread_ts: str | None = None,
              reply_broadcast: bool | None = None) -> ThreadRef | None:
        extra = {k: v for k, v in (("username", self.settings.username),
                                   ("icon_emoji", self.settings.icon_emoji)) if v}
        try:
            if self._client is not None:
                resp = self._client.chat_postMessage(
                    channel=target or self.settings.channel or "", unfurl_links=False, unfurl_media=False,
                    username=self.settings.username or None, icon_emoji=self.settings.icon_emoji or None,
                    thread_ts=thread_ts, reply_broadcast=reply_broadcast, **message)
                place, ts = resp.get("channel"), resp.get("ts")
                return ThreadRef(place, ts) if isinstance(place, str) and isinstance(ts, str) else None
            assert self._webhook is not None
            webhook = self._webhook.send_dict({**message, **extra, "unfurl_links": False, "unfurl_media": False})
        except SlackApiError as exc:
            if thread_ts is not None and _api_code(exc) in _GONE_ERRORS:
                raise _ParentGone(_api_code(exc)) from exc
            raise self._api_error(exc) from exc
        except SlackClientError as exc:  # its text may hold the webhook URL: say only what kind it was
            raise self._permanent(type(exc).__name__, "the Slack client refused the request; "
                                  f"check the URL in {self.settings.secret_source}") from exc
        except (OSError, http.client.HTTPException) as exc:  # URLError, refused, reset, timeout
            raise self._transient(f"cannot reach Slack: {_describe(exc)}") from exc
        if webhook.status_code != 200 or webhook.body.strip() != "ok":
            raise self._webhook_error(webhook.status_code, webhook.body.strip(), webhook.headers)
        return None

    def _api_error(self, exc: SlackApiError, doing: str | None = None) -> Exception:
        resp = exc.response
        data = resp.data if isinstance(resp.data, dict) else {}
        return self._classify(resp.status_code, _error_code(data.get("error"), resp.status_code), resp.headers,
                              doing)

    def _webhook_error(self, status: int, body: str, headers: Mapping[str, Any]) -> Exception:
        return self._classify(status, _error_code(body, status), headers)

    def _classify(self, status: int, error: str, headers: Mapping[str, Any], doing: str | None = None) -> Exception:
        if status == 429 or error in ("ratelimited", "rate_limited"):
            wait = parse_retry_after(get_header(headers, "retry-after"))
            after = "no Retry-After" if wait is None else f"Retry-After {wait:g} s"
            return self._transient(f"rate limited by Slack ({error}, {after})", retry_after=wait, doing=doing)
        if status >= 500 or error in _TRANSIENT_ERRORS:
            return self._transient(f"Slack answered {error}"
                                   + ("" if error.startswith("HTTP ") else f" (HTTP {status})"), doing=doing)
        if error in _REJECTED_PAYLOAD:
            return _PayloadRejected(error)
        return self._permanent(error, self._fix(error), doing=doing)

    def _fix(self, error: str) -> str:
        table = f"[channels.{self.name}]"
        source = self.settings.secret_source
        if self.settings.mode == "webhook":
            if error in _AUTH_ERRORS:
                return (f"the incoming webhook in {source} was revoked or its app removed: "
                        f"create a new webhook and update {source}")
            if error == "channel_not_found":
                return ("the webhook's channel no longer exists: "
                        f"create a webhook for an existing channel and update {source}")
            if error == "channel_is_archived":
                return f"the webhook's channel is archived: unarchive it, or create a new webhook and update {source}"
            if error in ("action_prohibited", "posting_to_general_channel_denied"):
                return "a workspace admin restricted posting to the webhook's channel"
            return "see https://docs.slack.dev/messaging/sending-messages-using-incoming-webhooks"
        channel = self.settings.channel
        if error in _AUTH_ERRORS:
            return f"check {source}: it must hold a valid bot token (xoxb-...) of an app installed in the workspace"
        if error == "missing_scope":
            return "give the app the chat:write scope (OAuth & Permissions) and reinstall it"
        if error == "channel_not_found":
            return (f"create the channel or fix `channel` in {table} (now {channel!r}); "
                    "for a private channel, invite the bot first")
        if error == "not_in_channel":
            return f"invite the bot: /invite @app in {channel}"
        if error == "is_archived":
            return f"{channel} is archived: unarchive it or fix `channel` in {table}"
        if error in ("restricted_action", "restricted_action_read_only_channel", "cannot_reply_to_message"):
            return f"a workspace admin restricted posting to {channel}"
        return "see https://docs.slack.dev/reference/methods/chat.postMessage#errors"

    def _permanent(self, error: str, fix: str, *, doing: str | None = None) -> ChannelError:
        message = f"slack channel {self.name}: {doing or f'posting to {self._where}'} failed: {error}: {fix}"
        return ChannelError(message, retryable=False)  # whoever catches it reports it: logged once

    def _transient(self, what: str, *, retry_after: float | None = None, doing: str | None = None) -> ChannelError:
        return ChannelError(f"slack channel {self.name}: {doing or f'posting to {self._where}'} failed: {what}; "
                            "will retry", retryable=True, retry_after=retry_after)


def _outgoing(payload: Payload, channel: str, notification_id: int) -> Message:
    """The stored payload's message keys, checked; a payload that is not a message is permanent."""
    text = payload.get("text")
    if not isinstance(text, str) or not (text or payload.get("blocks") or payload.get("attachments")):
        raise ChannelError(f"slack channel {channel}: notification {notification_id} has no Slack message",
                           retryable=False)
    message: Message = {"text": text}
    for key in ("blocks", "attachments"):
        if payload.get(key):
            message[key] = list(payload[key])
    return message


def _api_code(exc: SlackApiError) -> str:
    data = exc.response.data if isinstance(exc.response.data, dict) else {}
    return _error_code(data.get("error"), exc.response.status_code)


def _error_code(value: object, status: int) -> str:
    """Slack's error code ("channel_not_found"), or "HTTP 502" when the answer was not one (an HTML page)."""
    return value if isinstance(value, str) and re.fullmatch(r"[a-z_]{1,64}", value) else f"HTTP {status}"


def _describe(exc: BaseException) -> str:
    """A network error in a few words, without URLs (urllib's reasons never carry one)."""
    reason = getattr(exc, "reason", None)
    inner = reason if isinstance(reason, BaseException) else exc
    detail = getattr(inner, "strerror", None) or (str(reason) if isinstance(reason, str) else "") or str(inner)
    if "://" in detail:
        detail = ""
    return f"{type(inner).__name__}: {detail}" if detail else type(inner).__name__


def create(name: str, settings: SlackSettings, *, environ: Mapping[str, str] | None = None,
           sleep: Sleep = time.sleep, monotonic: Monotonic = time.monotonic) -> SlackChannel:
    """Read the token or webhook URL (ConfigError names the variable if it is missing) and build the client."""
    where = f"channels.{name}"
    if settings.mode == "token":
        token = read_secret(env=settings.token_env, file=settings.token_file, what=where, environ=environ)
        app_token = None
        if settings.buttons:
            key = "app_token_file" if settings.app_token_file else "app_token_env"
            try:
                app_token = read_secret(env=settings.app_token_env, file=settings.app_token_file, what=where,
                                        environ=environ)
            except ConfigError as exc:  # it may come from [slack]: say so
                raise ConfigError(f"{exc.detail} (the Socket Mode app token, set here or in [slack])", where=where,
                                  key=key) from None
            assert app_token is not None
            if not app_token.reveal().startswith("xapp-"):
                raise ConfigError(f"the app token in {settings.app_token_source} is not an app-level token: "
                                  "it must start with xapp- (Basic Information > App-Level Tokens)", where=where)
        return SlackChannel(name, settings, token=token, sleep=sleep, monotonic=monotonic, app_token=app_token)
    url = read_secret(env=settings.webhook_url_env, file=settings.webhook_url_file, what=where, environ=environ)
    assert url is not None
    parts = urlsplit(url.reveal())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"the incoming webhook URL in {settings.secret_source} is not an http(s) URL", where=where)
    return SlackChannel(name, settings, webhook_url=url, sleep=sleep, monotonic=monotonic)


def _compose_incident(renderer: Renderer, settings: SlackSettings, group: MessageGroup, conversation: Conversation,
                      now: datetime, owner: str | None) -> tuple[Payload, ...]:
    mentions = settings.mentions_for(worst_severity(group), owner,
                                     [m for a in group.alerts for m in a.mentions]) if conversation.opens else ()
    return compose_incident(renderer, group, conversation, now, mentions=mentions, buttons=settings.buttons,
                            broadcast=settings.broadcast_resolved)


TYPE = ChannelType(name="slack", parse=parse, create=create, compose=compose,
                   threaded=lambda settings: settings.mode == "token" and settings.thread,
                   compose_incident=_compose_incident)
