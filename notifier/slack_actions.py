"""Slack buttons: clicks arrive over Socket Mode and become silences and acknowledgements.

Socket Mode is an outbound WebSocket from the service to Slack, so a click needs no
public HTTP endpoint. ``ButtonListener`` owns one connection per app-level token
(``xapp-...``), with ``slack_sdk``'s built-in client, and handles a click in its worker
thread, never in the poller's or the deliverer's:

    click -> acknowledge the envelope at once (Slack wants it within 3 s)
          -> allowed? (``allow``: user ids, or user groups looked up with usergroups.users.list)
             no  -> an ephemeral "not allowed" to that user only; nothing changes
             yes -> write the silence / ack / expiry to the state file (the next cycle obeys it),
                    edit the message ("Silenced for 4h by @alice"), reply in its thread, log it

The supervisor thread reconnects with exponential backoff (the client's own reconnect
is off: it retries at a fixed pace); ``down_since`` feeds the ``notifier-channel-failing``
meta-alert when the connection stays down.
"""

from __future__ import annotations

import glob
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from slack_sdk import WebClient
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from notifier.channels.slack import SlackChannel
from notifier.channels.slack_threads import (
    ACK_ACTION,
    ACTIONS_BLOCK_ID,
    SILENCE_ACTIONS,
    UNSILENCE_ACTION,
    action_value,
    with_actions,
    with_status,
)
from notifier.core.durations import format_duration
from notifier.core.models import Clock, ThreadRef, split_job_key
from notifier.core.mutes import Matchers, Silence
from notifier.errors import NotifierError
from notifier.logs import event
from notifier.render import timestamp
from notifier.silences import Ack, new_silence_id
from notifier.state import StateStore

log = logging.getLogger(__name__)
_SDK_LOG = logging.getLogger(f"{__name__}.sdk")
_SDK_LOG.setLevel(logging.CRITICAL)  # it repeats our own lines at ERROR, and its DEBUG lines hold the WSS URL

COMMENT = "from Slack"
BACKOFF_MIN, BACKOFF_MAX = 1.0, 60.0
"""Seconds between reconnect attempts: doubling from the first to the last, with jitter."""
STABLE_AFTER = 30.0
"""A connection that lasted this long resets the backoff; one that drops sooner keeps it growing."""


@dataclass(frozen=True, slots=True)
class Click:
    """One button press, as much of Slack's ``block_actions`` payload as notifier uses."""

    action: str
    incident: str
    job: str
    channel: str  # the channel entry that posted the message
    silence: str | None  # Unsilence: the silence to expire
    user: str  # Slack user id
    username: str
    ref: ThreadRef  # the clicked message
    message: Mapping[str, Any]  # the clicked message as Slack has it (its blocks are edited)


def parse_click(payload: Mapping[str, Any]) -> Click | None:
    """The click in a ``block_actions`` payload, or None when it is not one of notifier's buttons."""
    if payload.get("type") != "block_actions":
        return None
    actions = payload.get("actions") or ()
    action = actions[0] if actions and isinstance(actions[0], Mapping) else {}
    name = action.get("action_id")
    if name not in (ACK_ACTION, UNSILENCE_ACTION, *SILENCE_ACTIONS):
        return None
    try:
        value = json.loads(action.get("value") or "")
        user = payload["user"]
        container = payload["container"]
        return Click(action=name, incident=str(value["i"]), job=str(value["j"]), channel=str(value["c"]),
                     silence=value.get("s"), user=str(user["id"]),
                     username=str(user.get("username") or user.get("name") or user["id"]),
                     ref=ThreadRef(str(container["channel_id"]), str(container["message_ts"])),
                     message=payload.get("message") or {})
    except (ValueError, KeyError, TypeError):
        log.warning("slack click with a payload notifier cannot read, ignored: action=%s", name)
        return None


class ButtonListener:
    """One Socket Mode connection and the clicks it brings, for the channel entries sharing one app token."""

    def __init__(self, app_token: str, names: tuple[str, ...], channels: Callable[[], Mapping[str, Any]],
                 store: StateStore, clock: Clock, *, base_url: str | None = None,
                 backoff: tuple[float, float] = (BACKOFF_MIN, BACKOFF_MAX), ping_interval: float = 10.0) -> None:
        self.names = names
        self._channels = channels
        self._store = store
        self._clock = clock
        self._backoff = backoff
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._down_since: datetime | None = clock()
        self._last_error = "not connected yet"
        web = WebClient(base_url=base_url or WebClient.BASE_URL, logger=_SDK_LOG)
        self._client = SocketModeClient(app_token=app_token, web_client=web, auto_reconnect_enabled=False,
                                        ping_interval=ping_interval, logger=_SDK_LOG,
                                        on_error_listeners=[self._on_error])
        self._client.socket_mode_request_listeners.append(self._on_request)
        self._thread = threading.Thread(target=self._supervise, name="notifier-slack-buttons", daemon=True)

    # --- the connection ---------------------------------------------------------------

    def start(self) -> ButtonListener:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._client.close()

    @property
    def connected(self) -> bool:
        return self._client.is_connected()

    def down(self) -> tuple[str, datetime] | None:
        """Why and since when the connection is down; None while it is up."""
        with self._lock:
            return None if self._down_since is None else (self._last_error, self._down_since)

    def _supervise(self) -> None:
        """Keep one connection up; back off while connecting fails or a connection keeps dropping at once."""
        delay = self._backoff[0]
        rng = random.Random()
        connected_at: float | None = None
        while not self._stop.is_set():
            if self._client.is_connected():
                with self._lock:
                    if self._down_since is not None:
                        event(log, logging.INFO, "slack buttons connected", channels=",".join(self.names))
                    self._down_since = None
                if connected_at is not None and time.monotonic() - connected_at >= STABLE_AFTER:
                    delay = self._backoff[0]  # it held: the next outage starts from the shortest wait again
                self._stop.wait(0.2)
                continue
            with self._lock:
                if self._down_since is None:
                    self._down_since = self._clock()
                    event(log, logging.WARNING, "slack buttons disconnected, reconnecting",
                          channels=",".join(self.names))
            if connected_at is not None and time.monotonic() - connected_at < STABLE_AFTER:
                self._stop.wait(delay / 2 + rng.uniform(0, delay / 2))  # it dropped at once: do not hammer
                delay = min(self._backoff[1], delay * 2)
            try:
                self._client.connect_to_new_endpoint(force=True)
                connected_at = time.monotonic()
                continue
            except Exception as exc:  # noqa: BLE001 (any failure: wait and try again)
                connected_at = None
                self._set_error(_describe(exc))
                event(log, logging.WARNING, "slack buttons cannot connect, will retry", channels=",".join(self.names),
                      error=self._last_error, retry_in_s=round(delay, 1))
            self._stop.wait(delay / 2 + rng.uniform(0, delay / 2))
            delay = min(self._backoff[1], delay * 2)

    def _on_error(self, error: Exception) -> None:
        self._set_error(_describe(error))
        event(log, logging.WARNING, "slack buttons connection error", error=self._last_error)

    def _set_error(self, error: str) -> None:
        with self._lock:
            self._last_error = error

    # --- clicks -----------------------------------------------------------------------

    def _on_request(self, client: Any, request: SocketModeRequest) -> None:
        try:  # within 3 s, so first; if it fails Slack sends the envelope again and the click is handled then
            client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))
        except Exception as exc:  # noqa: BLE001
            event(log, logging.WARNING, "slack click not acknowledged, Slack will send it again", error=_describe(exc))
            return
        if request.type != "interactive":
            return
        click = parse_click(request.payload)
        if click is None:
            return
        try:
            self.handle(click)
        except Exception:  # a click must never take the listener down
            log.exception("slack click failed: action=%s user=%s job=%s", click.action, click.user, click.job)

    def handle(self, click: Click) -> None:
        """Check who clicked, do what the button says, and tell the channel."""
        channel = self._channels().get(click.channel)
        if not isinstance(channel, SlackChannel) or click.channel not in self.names:
            log.warning("slack click for a channel this listener does not serve, ignored: channel=%s", click.channel)
            return
        if not self._allowed(channel, click.user):
            event(log, logging.WARNING, "slack click refused: user not in allow", user=click.user,
                  username=click.username, action=click.action, job=click.job)
            channel.ephemeral(click.ref.place, click.user,
                              f"You are not allowed to {_verb(click.action)} notifier alerts: ask an admin to add "
                              f"your Slack user id {click.user} to `allow` in [channels.{click.channel}] or [slack].")
            return
        now = self._clock()
        silenced, acknowledged = _button_state(click.message)
        if click.action == ACK_ACTION:
            firing = [a for a in self._store.load_alerts().values() if a.job == click.job and a.phase == "firing"]
            self._store.silences.ack(Ack(a.fingerprint, now, click.username, COMMENT) for a in firing)
            status, kind = f"Acknowledged by <@{click.user}>: no more reminders; the resolve is still sent.", "ack"
            acknowledged = True
            details = f"alerts={len(firing)}"
        elif click.action == UNSILENCE_ACTION:
            expired = bool(click.silence) and self._store.silences.expire(str(click.silence), now)
            status, silenced, kind = f"Unsilenced by <@{click.user}>.", None, "silence"
            details = f"silence={click.silence} expired={expired}"
        else:
            duration = SILENCE_ACTIONS[click.action]
            silence = Silence(id=new_silence_id(), matchers=_job_matchers(click.job), starts_at=now,
                              ends_at=now + timedelta(seconds=duration), created_at=now, comment=COMMENT,
                              author=click.username)
            self._store.silences.add(silence)
            status = (f"Silenced for {format_duration(duration)} by <@{click.user}> (until "
                      f"{timestamp(silence.ends_at)}; `notifier silence expire {silence.id}`).")
            silenced, kind = silence.id, "silence"
            details = f"silence={silence.id}"
        event(log, logging.INFO, "slack action", action=click.action, user=click.user, username=click.username,
              job=click.job, incident=click.incident, result=details)
        value = action_value(click.incident, click.job, click.channel)
        edited = with_status(with_actions(click.message, value, silenced=silenced, acknowledged=acknowledged),
                             None if click.action == UNSILENCE_ACTION else status, kind)
        try:
            channel.update(click.ref, {k: edited[k] for k in ("text", "blocks", "attachments") if k in edited})
        except Exception as exc:  # noqa: BLE001 (the action is done; the edit is a courtesy)
            log.warning("slack click done, but the message could not be edited: %s", exc)
        channel.reply(click.ref, status)

    def _allowed(self, channel: SlackChannel, user: str) -> bool:
        allow = channel.settings.allow
        if not allow or user in allow:
            return True
        for group in (g for g in allow if g.startswith("S")):
            try:
                if user in channel.group_members(group):
                    return True
            except NotifierError as exc:
                log.warning("cannot read Slack user group %s (needs the usergroups:read scope): %s", group, exc)
        return False


def _button_state(message: Mapping[str, Any]) -> tuple[str | None, bool]:
    """(the silence an Unsilence button names, whether Acknowledge is gone) in the clicked message."""
    for block in message.get("blocks") or ():
        if isinstance(block, Mapping) and block.get("block_id") == ACTIONS_BLOCK_ID:
            elements = [e for e in block.get("elements") or () if isinstance(e, Mapping)]
            ids = {e.get("action_id") for e in elements}
            silence = next((json.loads(e["value"]).get("s") for e in elements
                            if e.get("action_id") == UNSILENCE_ACTION and e.get("value")), None)
            return silence, ACK_ACTION not in ids
    return None, False


def _verb(action: str) -> str:
    return {ACK_ACTION: "acknowledge", UNSILENCE_ACTION: "unsilence"}.get(action, "silence")


def _describe(exc: BaseException) -> str:
    """An error in a few words; Slack API errors by their code (the client's text could hold a token)."""
    response = getattr(exc, "response", None)
    data = getattr(response, "data", None)
    if isinstance(data, Mapping) and isinstance(data.get("error"), str):
        return f"Slack answered {data['error']}"
    return type(exc).__name__


def listeners_for(channels: Mapping[str, Any], store: StateStore, clock: Clock,
                  current: Callable[[], Mapping[str, Any]], **options: Any) -> list[ButtonListener]:
    """One listener per distinct app token among the Slack channels that have one (not started).

    ``current`` gives the channels in use now (a reload replaces them); ``options`` go to ButtonListener.
    """
    by_token: dict[str, list[SlackChannel]] = {}
    for channel in channels.values():
        if isinstance(channel, SlackChannel) and channel.app_token is not None:
            by_token.setdefault(channel.app_token.reveal(), []).append(channel)
    return [ButtonListener(token, tuple(c.name for c in group), current, store, clock,
                           base_url=group[0].settings.base_url, **options)
            for token, group in by_token.items()]


def _job_matchers(key: str) -> Matchers:
    """A Silence button's matchers: every rule of this job of this source (the button's job is a job key)."""
    source, job = split_job_key(key)
    return Matchers(job=glob.escape(job), source=glob.escape(source))
