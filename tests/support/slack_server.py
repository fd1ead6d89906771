"""A Slack-compatible HTTP server on 127.0.0.1, for driving the real ``slack_sdk`` clients.

It answers as Slack does: ``POST /api/chat.postMessage`` (JSON or form body, ``Authorization:
Bearer <token>``) with ``{"ok": true, "channel": ..., "ts": ...}``, ``POST /api/auth.test``, and
an incoming webhook at ``/services/T000/B000/XXX`` answering the text ``ok``. Like Slack, it
refuses a message over the Block Kit limits (``invalid_blocks``, ``msg_too_long``), so a test
that delivers a message also proves the message is valid.

    with SlackServer() as server:
        server.fail_next("ratelimited", retry_after=2)   # the next request gets a 429
        ... post through base_url or webhook_url ...
        assert len(server.requests) == 2 and len(server.messages) == 1

Failure kinds for ``fail_next``: "ratelimited" (HTTP 429 with Retry-After), "500", or any
Slack error code ("invalid_auth", "channel_not_found", "not_in_channel", ...): the Web API
answers it as ``{"ok": false, "error": kind}`` with HTTP 200, the webhook with the HTTP
status and plain-text body Slack's webhooks use.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs

import pytest

from tests.support.loopback import HOST, LoopbackHTTPServer

WEBHOOK_PATH = "/services/T000/B000/XXX"
CHANNEL_ID = "C123"

_WEBHOOK_ERRORS: Mapping[str, tuple[int, str]] = {
    "invalid_auth": (403, "invalid_token"),
    "invalid_token": (403, "invalid_token"),
    "no_service": (404, "no_service"),
    "channel_not_found": (404, "channel_not_found"),
    "channel_is_archived": (410, "channel_is_archived"),
    "not_in_channel": (403, "action_prohibited"),
    "action_prohibited": (403, "action_prohibited"),
}


@dataclass(frozen=True, slots=True)
class SlackRequest:
    """One request as it arrived: header names lower-cased, the body parsed (JSON or form)."""

    path: str
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True, slots=True)
class _Failure:
    kind: str
    retry_after: float | None


class SlackServer(LoopbackHTTPServer):
    """A Slack-Web-API-compatible server on loopback; start() binds an ephemeral port."""

    name = "slack-server"

    def __init__(self, host: str = HOST, port: int = 0, token: str = "xoxb-test") -> None:
        super().__init__(host, port)
        self.token = token
        self._cond = threading.Condition()
        self._requests: list[SlackRequest] = []
        self._messages: list[dict[str, Any]] = []
        self._failures: deque[_Failure] = deque()

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
        """The bodies of the messages that were accepted (answered ok)."""
        with self._cond:
            return list(self._messages)

    def wait_for(self, n: int, timeout: float = 10) -> list[dict[str, Any]]:
        """Block until at least ``n`` messages were accepted; AssertionError after ``timeout``."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._messages) >= n, timeout):
                raise AssertionError(f"expected {n} Slack messages, got {len(self._messages)}")
            return list(self._messages)

    # --- scripting ---------------------------------------------------------------------

    def fail_next(self, kind: str, times: int = 1, retry_after: float | None = None) -> None:
        """Answer the next ``times`` message posts with ``kind`` instead of accepting them."""
        with self._cond:
            self._failures.extend(_Failure(kind, retry_after) for _ in range(times))

    # --- the protocol ------------------------------------------------------------------

    def respond(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, dict[str, str], bytes]:
        """Record a request and decide the answer (status, headers, body)."""
        with self._cond:
            self._requests.append(SlackRequest(path, headers, body))
            if path == "/api/auth.test":
                return self._api(self._auth_error(headers) or {"ok": True, "user": "notifier", "team": "Test",
                                                                  "user_id": "U1", "bot_id": "B1"})
            if path not in ("/api/chat.postMessage", WEBHOOK_PATH):
                return 404, {"Content-Type": "text/plain"}, b"not found"
            webhook = path == WEBHOOK_PATH
            if not webhook and (error := self._auth_error(headers)):
                return self._api(error)
            if self._failures:
                return self._fail(self._failures.popleft(), webhook)
            error = _invalid(body)
            if error:
                return (400, {"Content-Type": "text/plain"}, error.encode()) if webhook else \
                    self._api({"ok": False, "error": error})
            self._messages.append(body)
            self._cond.notify_all()
            if webhook:
                return 200, {"Content-Type": "text/plain"}, b"ok"
            return self._api({"ok": True, "channel": CHANNEL_ID, "ts": f"{time.time():.6f}",
                              "message": {"text": body.get("text", "")}})

    def _auth_error(self, headers: Mapping[str, str]) -> dict[str, Any] | None:
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return {"ok": False, "error": "not_authed"}
        if auth.removeprefix("Bearer ") != self.token:
            return {"ok": False, "error": "invalid_auth"}
        return None

    @staticmethod
    def _api(data: Mapping[str, Any], status: int = 200,
             headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        return status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, json.dumps(data).encode()

    def _fail(self, failure: _Failure, webhook: bool) -> tuple[int, dict[str, str], bytes]:
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
            status, answer_headers, body = server.respond(self.path, headers, _parse(headers, raw))
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
        form: dict[str, Any] = {k: v[-1] for k, v in parse_qs(text).items()}
        for key, value in form.items():
            if value[:1] in ("[", "{"):
                try:
                    form[key] = json.loads(value)
                except json.JSONDecodeError:
                    pass
        return form
    return text


@pytest.fixture
def slack_server() -> Iterator[SlackServer]:
    """A running SlackServer with token "xoxb-test", stopped after the test."""
    with SlackServer() as server:
        yield server


def main() -> None:
    """``python -m tests.support.slack_server [PORT]``: a local Slack to try `notifier test-channel` against."""
    import sys
    import time

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8099
    with SlackServer(port=port) as server:
        print(f"Slack-compatible API at {server.base_url} (token xoxb-test); Ctrl-C stops", flush=True)
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
