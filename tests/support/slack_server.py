"""A Slack-compatible HTTP server on 127.0.0.1, for driving the real ``slack_sdk`` clients.

It answers as Slack does (JSON or form bodies, ``Authorization: Bearer <token>``):

- ``chat.postMessage``: ``{"ok": true, "channel": ..., "ts": ..., "message": {...}}`` with a
  deterministic, increasing ``ts`` ("1700000000.000100", "1700000000.000200", ...). A reply
  (``thread_ts``) must name a top-level message this server accepted and nobody deleted,
  else ``thread_not_found``.
- ``chat.update``: replaces the text, and the blocks/attachments the update names (like Slack,
  omitted ones are kept, an empty list removes them); an unknown or deleted ts is
  ``message_not_found``.
- ``chat.postEphemeral``, ``usergroups.users.list`` (from ``server.usergroups``), ``auth.test``.
- ``apps.connections.open`` with the app-level token (``xapp-test``): the Socket Mode URL in
  ``server.socket_url`` (see tests/support/socket_mode_server.py).
- an incoming webhook at ``/services/T000/B000/XXX`` answering the text ``ok``.

Like Slack, it refuses a message over the Block Kit limits (``invalid_blocks``, ``msg_too_long``),
so a test that delivers a message also proves the message is valid. Bot tokens and app tokens
are not interchangeable (``not_allowed_token_type``), as on Slack.

    with SlackServer() as server:
        server.fail_next("ratelimited", retry_after=2)   # the next post gets a 429
        ... post through base_url or webhook_url ...
        assert len(server.requests) == 2 and len(server.messages) == 1
        (post,) = server.posts                          # Posted(ts, channel, body)
        server.delete_message(post.ts)                  # as a person deleting it in Slack

Failure kinds for ``fail_next``: "ratelimited" (HTTP 429 with Retry-After), "500", or any
Slack error code ("invalid_auth", "channel_not_found", "message_not_found",
"cant_update_message", ...): the Web API answers it as ``{"ok": false, "error": kind}`` with
HTTP 200, the webhook with the HTTP status and plain-text body Slack's webhooks use. A failure
targets one Web API method, ``chat.postMessage`` (and the webhook) by default.
"""

from __future__ import annotations

import copy
import json
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.fakes import FakeClock
from tests.support.loopback import HOST, LoopbackHTTPServer

WEBHOOK_PATH = "/services/T000/B000/XXX"
CHANNEL_ID = "C123"
TEAM_ID = "T0TEST"
APP_ID = "A0TEST"
BOT_USER_ID = "U1"
BOT_ID = "B1"
FIRST_TS_SECONDS = 1_700_000_000
"""ts of the n-th message a server accepts: FIRST_TS_SECONDS + n * 100 microseconds."""

_WEBHOOK_ERRORS: Mapping[str, tuple[int, str]] = {
    "invalid_auth": (403, "invalid_token"),
    "invalid_token": (403, "invalid_token"),
    "no_service": (404, "no_service"),
    "channel_not_found": (404, "channel_not_found"),
    "channel_is_archived": (410, "channel_is_archived"),
    "not_in_channel": (403, "action_prohibited"),
    "action_prohibited": (403, "action_prohibited"),
}

_CONTENT_KEYS = ("text", "blocks", "attachments")

Response = tuple[int, dict[str, str], bytes]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class SlackRequest:
    """One request as it arrived: header names lower-cased, the body parsed (JSON, form or query)."""

    path: str
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True, slots=True)
class Posted:
    """An accepted post: its ts, the channel as the client named it, the body as sent."""

    ts: str
    channel: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Updated:
    """An accepted ``chat.update``: the ts it changed, the channel as named, the body as sent."""

    ts: str
    channel: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Ephemeral:
    """An accepted ``chat.postEphemeral``: channel and user as named, the body as sent."""

    channel: str
    user: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Failure:
    kind: str
    retry_after: float | None


class SlackServer(LoopbackHTTPServer):
    """A Slack-Web-API-compatible server on loopback; start() binds an ephemeral port."""

    name = "slack-server"

    def __init__(self, host: str = HOST, port: int = 0, token: str = "xoxb-test",
                 app_token: str = "xapp-test") -> None:
        super().__init__(host, port)
        self.token = token
        self.app_token = app_token
        self.socket_url: str | None = None
        """What ``apps.connections.open`` answers (a SocketModeServer's ``url``); None: internal_error."""
        self.usergroups: dict[str, list[str]] = {}
        """User group id -> member user ids, for ``usergroups.users.list``."""
        self._cond = threading.Condition()
        self._requests: list[SlackRequest] = []
        self._posts: list[Posted] = []
        self._updates: list[Updated] = []
        self._ephemerals: list[Ephemeral] = []
        self._stored: dict[str, dict[str, Any]] = {}
        self._deleted: set[str] = set()
        self._issued = 0
        self._connection_opens = 0
        self._failures: dict[str, deque[_Failure]] = {}
        self._methods: dict[str, Callable[[dict[str, str], Any], Response]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "apps.connections.open": self._connections_open,
            "usergroups.users.list": self._usergroup_users,
        }

    def handler(self) -> type[BaseHTTPRequestHandler]:
        return _handler_for(self)

    @property
    def base_url(self) -> str:
        """The Web API base URL to give slack_sdk's WebClient (``base_url``)."""
        return f"http://{self.host}:{self.port}/api/"

    @property
    def webhook_url(self) -> str:
        return f"http://{self.host}:{self.port}{WEBHOOK_PATH}"

    # --- what arrived ------------------------------------------------------------------

    @property
    def requests(self) -> list[SlackRequest]:
        """Every request, in order, including refused ones."""
        with self._cond:
            return list(self._requests)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The bodies of the messages that were accepted (answered ok), webhook ones included."""
        with self._cond:
            return [post.body for post in self._posts]

    @property
    def posts(self) -> list[Posted]:
        """The accepted posts with their ts (webhook posts too, with channel CHANNEL_ID)."""
        with self._cond:
            return list(self._posts)

    @property
    def updates(self) -> list[Updated]:
        """The accepted ``chat.update`` calls, in order."""
        with self._cond:
            return list(self._updates)

    @property
    def ephemerals(self) -> list[Ephemeral]:
        """The accepted ``chat.postEphemeral`` calls, in order."""
        with self._cond:
            return list(self._ephemerals)

    @property
    def connection_opens(self) -> int:
        """How many times ``apps.connections.open`` was called (refused calls included)."""
        with self._cond:
            return self._connection_opens

    def message(self, ts: str) -> dict[str, Any] | None:
        """The message with this ts as it is now (after updates), as Slack shows it; None if unknown or deleted."""
        with self._cond:
            if ts in self._deleted or ts not in self._stored:
                return None
            return copy.deepcopy(self._stored[ts])

    def replies(self, thread_ts: str) -> list[Posted]:
        """The accepted posts in the thread of ``thread_ts``, in order."""
        with self._cond:
            return [post for post in self._posts if post.body.get("thread_ts") == thread_ts]

    def wait_for(self, n: int, timeout: float = 10) -> list[dict[str, Any]]:
        """Block until at least ``n`` messages were accepted; AssertionError after ``timeout``."""
        return [post.body for post in self._wait(lambda: self._posts, n, "Slack messages", timeout)]

    def wait_updates(self, n: int, timeout: float = 10) -> list[Updated]:
        """Block until at least ``n`` updates were accepted; AssertionError after ``timeout``."""
        return self._wait(lambda: self._updates, n, "chat.update calls", timeout)

    def wait_ephemerals(self, n: int, timeout: float = 10) -> list[Ephemeral]:
        """Block until at least ``n`` ephemeral messages were accepted; AssertionError after ``timeout``."""
        return self._wait(lambda: self._ephemerals, n, "ephemeral messages", timeout)

    def _wait(self, items: Callable[[], Sequence[_T]], n: int, what: str, timeout: float) -> list[_T]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(items()) >= n, timeout):
                raise AssertionError(f"expected {n} {what}, got {len(items())}")
            return list(items())

    # --- scripting ---------------------------------------------------------------------

    def fail_next(self, kind: str, times: int = 1, retry_after: float | None = None,
                  method: str = "chat.postMessage") -> None:
        """Answer the next ``times`` calls of ``method`` with ``kind`` instead of accepting them.

        ``method`` is a Web API method name ("chat.postMessage" also covers the webhook,
        "chat.update", "chat.postEphemeral", "apps.connections.open", ...).
        """
        with self._cond:
            self._failures.setdefault(method, deque()).extend(_Failure(kind, retry_after) for _ in range(times))

    def delete_message(self, ts: str) -> None:
        """A person deletes the message: later updates get message_not_found, replies thread_not_found."""
        with self._cond:
            if ts not in self._stored:
                raise AssertionError(f"no Slack message with ts {ts}")
            self._deleted.add(ts)

    # --- the protocol ------------------------------------------------------------------

    def respond(self, path: str, headers: dict[str, str], body: Any) -> Response:
        """Record a request and decide the answer (status, headers, body)."""
        with self._cond:
            self._requests.append(SlackRequest(path, headers, body))
            if path == WEBHOOK_PATH:
                return self._webhook(body)
            if not path.startswith("/api/"):
                return 404, {"Content-Type": "text/plain"}, b"not found"
            method = path.removeprefix("/api/")
            handler = self._methods.get(method)
            if handler is None:
                return self._api({"ok": False, "error": "unknown_method", "req_method": method})
            return handler(headers, body)

    # each method runs with self._cond held

    def _auth_test(self, headers: dict[str, str], body: Any) -> Response:
        return self._bot_call("auth.test", headers) or self._api(
            {"ok": True, "url": "https://test.slack.com/", "team": "Test", "user": "notifier", "team_id": TEAM_ID,
             "user_id": BOT_USER_ID, "bot_id": BOT_ID})

    def _post_message(self, headers: dict[str, str], body: Any) -> Response:
        if refused := self._bot_call("chat.postMessage", headers):
            return refused
        error = _invalid(body) or self._thread_error(body)
        if error:
            return self._api({"ok": False, "error": error})
        ts = self._accept(body, str(body.get("channel", "")))
        return self._api({"ok": True, "channel": CHANNEL_ID, "ts": ts, "message": copy.deepcopy(self._stored[ts])})

    def _update(self, headers: dict[str, str], body: Any) -> Response:
        if refused := self._bot_call("chat.update", headers):
            return refused
        ts = str(body.get("ts", "")) if isinstance(body, dict) else ""
        if ts not in self._stored or ts in self._deleted:
            return self._api({"ok": False, "error": "message_not_found"})
        if error := _invalid(body):
            return self._api({"ok": False, "error": error})
        self._updates.append(Updated(ts, str(body.get("channel", "")), body))
        stored = self._stored[ts]
        for key in _CONTENT_KEYS:
            if key in body:
                stored[key] = body[key]
                if key != "text" and not body[key]:
                    del stored[key]  # an empty list removes the blocks/attachments
        stored["edited"] = {"user": BOT_USER_ID, "ts": self._next_ts()}
        self._cond.notify_all()
        return self._api({"ok": True, "channel": CHANNEL_ID, "ts": ts, "text": stored.get("text", ""),
                          "message": copy.deepcopy(stored)})

    def _post_ephemeral(self, headers: dict[str, str], body: Any) -> Response:
        if refused := self._bot_call("chat.postEphemeral", headers):
            return refused
        if isinstance(body, dict) and not body.get("user"):
            return self._api({"ok": False, "error": "invalid_arguments"})
        if error := _invalid(body):
            return self._api({"ok": False, "error": error})
        self._ephemerals.append(Ephemeral(str(body.get("channel", "")), str(body["user"]), body))
        self._cond.notify_all()
        return self._api({"ok": True, "message_ts": self._next_ts()})

    def _connections_open(self, headers: dict[str, str], body: Any) -> Response:
        self._connection_opens += 1
        self._cond.notify_all()
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return self._api({"ok": False, "error": "not_authed"})
        token = auth.removeprefix("Bearer ")
        if token != self.app_token:
            bot_like = token == self.token or token.startswith(("xoxb-", "xoxp-"))
            return self._api({"ok": False, "error": "not_allowed_token_type" if bot_like else "invalid_auth"})
        if failure := self._next_failure("apps.connections.open"):
            return self._fail(failure, webhook=False)
        if self.socket_url is None:
            return self._api({"ok": False, "error": "internal_error"})
        return self._api({"ok": True, "url": self.socket_url})

    def _usergroup_users(self, headers: dict[str, str], body: Any) -> Response:
        if refused := self._bot_call("usergroups.users.list", headers):
            return refused
        group = body.get("usergroup") if isinstance(body, dict) else None
        if group not in self.usergroups:
            return self._api({"ok": False, "error": "no_such_subteam"})
        return self._api({"ok": True, "users": list(self.usergroups[group])})

    def _webhook(self, body: Any) -> Response:
        if failure := self._next_failure("chat.postMessage"):
            return self._fail(failure, webhook=True)
        if error := _invalid(body):
            return 400, {"Content-Type": "text/plain"}, error.encode()
        self._accept(body, CHANNEL_ID)
        return 200, {"Content-Type": "text/plain"}, b"ok"

    # --- helpers (self._cond held) -------------------------------------------------------

    def _bot_call(self, method: str, headers: Mapping[str, str]) -> Response | None:
        """The refusal of a call needing the bot token (auth, then a scripted failure), or None."""
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return self._api({"ok": False, "error": "not_authed"})
        token = auth.removeprefix("Bearer ")
        if token != self.token:
            return self._api({"ok": False, "error": "not_allowed_token_type" if token == self.app_token
                              else "invalid_auth"})
        if failure := self._next_failure(method):
            return self._fail(failure, webhook=False)
        return None

    def _next_failure(self, method: str) -> _Failure | None:
        failures = self._failures.get(method)
        return failures.popleft() if failures else None

    def _next_ts(self) -> str:
        self._issued += 1
        micros = self._issued * 100
        return f"{FIRST_TS_SECONDS + micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _thread_error(self, body: dict[str, Any]) -> str | None:
        thread_ts = body.get("thread_ts")
        if not thread_ts:
            return None
        parent = self._stored.get(str(thread_ts))
        if parent is None or "thread_ts" in parent or thread_ts in self._deleted:
            return "thread_not_found"
        return None

    def _accept(self, body: dict[str, Any], channel: str) -> str:
        ts = self._next_ts()
        stored: dict[str, Any] = {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "app_id": APP_ID,
                                  "team": TEAM_ID, "ts": ts, "text": body.get("text") or ""}
        stored.update({key: copy.deepcopy(body[key]) for key in ("blocks", "attachments") if body.get(key)})
        if body.get("thread_ts"):
            stored["thread_ts"] = str(body["thread_ts"])
        self._stored[ts] = stored
        self._posts.append(Posted(ts, channel, body))
        self._cond.notify_all()
        return ts

    @staticmethod
    def _api(data: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
        return status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, json.dumps(data).encode()

    def _fail(self, failure: _Failure, webhook: bool) -> Response:
        if failure.kind == "ratelimited":
            retry = {"Retry-After": f"{failure.retry_after if failure.retry_after is not None else 1:g}"}
            if webhook:
                return 429, {"Content-Type": "text/plain", **retry}, b"rate_limited"
            return self._api({"ok": False, "error": "ratelimited"}, 429, retry)
        if failure.kind == "500":
            return 500, {"Content-Type": "text/html"}, b"<html><body>Internal Server Error</body></html>"
        if webhook:
            status, text = _WEBHOOK_ERRORS.get(failure.kind, (400, failure.kind))
            return status, {"Content-Type": "text/plain"}, text.encode()
        return self._api({"ok": False, "error": failure.kind})


def _invalid(body: Any) -> str | None:
    """The error Slack would answer for a message over its limits, or None."""
    if not isinstance(body, dict):
        return "invalid_payload"
    text = body.get("text") or ""
    blocks = body.get("blocks") or []
    attachments = body.get("attachments") or []
    if not (text or blocks or attachments):
        return "no_text"
    if len(text) > 40000:
        return "msg_too_long"
    for group in (blocks, *(a.get("blocks") or [] for a in attachments)):
        if len(group) > 50 or any(_block_invalid(b) for b in group):
            return "invalid_blocks"
    return None


def _block_invalid(block: Mapping[str, Any]) -> bool:
    kind = block.get("type")
    text = (block.get("text") or {}).get("text", "")
    if kind == "header":
        return not text or len(text) > 150 or block["text"].get("type") != "plain_text"
    if kind == "section":
        fields = block.get("fields") or []
        return (len(text) > 3000 or len(fields) > 10 or any(len(f.get("text", "")) > 2000 for f in fields)
                or not (text or fields))
    if kind == "context":
        elements = block.get("elements") or []
        return not elements or len(elements) > 10
    return kind not in ("divider", "image", "actions", "rich_text")


def _handler_for(server: SlackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            self._answer(*server.respond(urlsplit(self.path).path, headers, _parse(headers, raw)))

        def do_GET(self) -> None:  # noqa: N802 (slack_sdk sends some methods, e.g. usergroups.users.list, as GET)
            url = urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            self._answer(*server.respond(url.path, headers, _form(url.query)))

        def _answer(self, status: int, answer_headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for key, value in answer_headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
            pass

    return Handler


def _parse(headers: Mapping[str, str], raw: bytes) -> Any:
    """JSON bodies as they are; form bodies as a dict, with JSON-looking values (blocks) decoded."""
    kind = headers.get("content-type", "")
    text = raw.decode("utf-8", "replace")
    if kind.startswith("application/json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    if kind.startswith("application/x-www-form-urlencoded"):
        return _form(text)
    return text


def _form(text: str) -> dict[str, Any]:
    """A form or query string as a dict, with JSON-looking values (blocks) decoded."""
    form: dict[str, Any] = {k: v[-1] for k, v in parse_qs(text).items()}
    for key, value in form.items():
        if value[:1] in ("[", "{"):
            try:
                form[key] = json.loads(value)
            except json.JSONDecodeError:
                pass
    return form


@pytest.fixture
def slack_paced(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Slack pacing (one post a second per channel) waits on a fake clock, and SLACK_BOT_TOKEN is the test token.

    For tests that build Slack channels the way the service does (``SHARED_PACER``); returns the pacing clock.
    """
    from notifier.channels import slack

    pace = FakeClock()
    monkeypatch.setattr(slack, "SHARED_PACER", slack.Pacer(pace.sleep, pace.monotonic))
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    return pace


@pytest.fixture
def slack_server() -> Iterator[SlackServer]:
    """A running SlackServer with token "xoxb-test" (app token "xapp-test"), stopped after the test."""
    with SlackServer() as server:
        yield server


def main() -> None:
    """``python -m tests.support.slack_server [PORT]``: a local Slack to try `notifier test-channel` against.

    It serves Socket Mode too (``apps.connections.open`` hands out a local WebSocket), so an app
    token ``xapp-test`` checks out and ``notifier run`` connects its buttons.
    """
    import sys
    import time

    from tests.support.socket_mode_server import SocketModeServer

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8099
    with SlackServer(port=port) as server, SocketModeServer() as sockets:
        server.socket_url = sockets.url
        print(f"Slack-compatible API at {server.base_url} (bot token xoxb-test, app token xapp-test); "
              "Ctrl-C stops", flush=True)
        seen = 0
        try:
            while True:
                for message in server.messages[seen:]:
                    print(json.dumps(message, ensure_ascii=False), flush=True)
                seen = len(server.messages)
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
