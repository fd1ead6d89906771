"""A real HTTP server on 127.0.0.1 that records what it receives and answers as scripted.

Channels are tested over a real socket, not by patching httpx: what the receiver
records is exactly what went over the wire (headers, body bytes), which is what a
signature or a payload contract is about.

    with WebhookReceiver() as receiver:
        receiver.respond_with(500, times=1)     # the first request fails, the rest get 200
        ... send to receiver.url ...
        first, second = receiver.wait_for(2)

Responses: scripted answers with ``times=N`` are used first, in the order they were
scripted; after them comes the standing answer (the last ``respond_with(..., times=None)``,
initially 200 with an empty body).
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from tests.support.loopback import HOST, LoopbackHTTPServer


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request as it arrived: header names lower-cased, the body as sent, and its JSON if it parses."""

    path: str
    headers: dict[str, str]
    body: bytes
    json: Any | None
    method: str = "POST"


@dataclass(slots=True)
class _Response:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    times: int | None = None  # None: the standing answer


class WebhookReceiver(LoopbackHTTPServer):
    """A webhook endpoint on loopback that records requests and answers as scripted."""

    name = "webhook-receiver"

    def __init__(self, host: str = HOST, port: int = 0) -> None:
        super().__init__(host, port)
        self._cond = threading.Condition()
        self._requests: list[ReceivedRequest] = []
        self._script: deque[_Response] = deque()
        self._standing = _Response(200)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        return _handler_for(self)

    # --- what tests use ---------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/hook"

    @property
    def requests(self) -> list[ReceivedRequest]:
        """A snapshot of the requests received so far, in arrival order."""
        with self._cond:
            return list(self._requests)

    def respond_with(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                     times: int | None = None) -> None:
        """Script the next ``times`` answers, or (times=None) the standing answer after them."""
        response = _Response(status, body, dict(headers or {}), times)
        with self._cond:
            if times is None:
                self._standing = response
            elif times > 0:
                self._script.append(response)

    def wait_for(self, n: int, timeout: float = 10.0) -> list[ReceivedRequest]:
        """Block until at least ``n`` requests arrived; AssertionError after ``timeout`` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._requests) >= n, timeout=timeout):
                raise AssertionError(f"expected {n} requests within {timeout}s, got {len(self._requests)}")
            return list(self._requests)

    def clear(self) -> None:
        """Forget the requests received so far (scripted answers stay)."""
        with self._cond:
            self._requests.clear()

    def reset_responses(self) -> None:
        """Drop scripted answers and answer 200 again."""
        with self._cond:
            self._script.clear()
            self._standing = _Response(200)

    # --- called by the handler thread -------------------------------------------------

    def _record(self, request: ReceivedRequest) -> _Response:
        with self._cond:
            self._requests.append(request)
            self._cond.notify_all()
            if not self._script:
                return self._standing
            response = self._script[0]
            assert response.times is not None
            response.times -= 1
            if response.times <= 0:
                self._script.popleft()
            return response


def _handler_for(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection: no idle keep-alive threads at stop()
        timeout = 5  # a client that connects and never sends cannot hang stop()

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            try:
                parsed = json.loads(body) if body else None
            except ValueError:
                parsed = None
            request = ReceivedRequest(
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                json=parsed,
                method=self.command,
            )
            response = receiver._record(request)
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if response.body and self.command != "HEAD":
                self.wfile.write(response.body)

        do_POST = do_PUT = do_PATCH = do_GET = do_DELETE = _handle

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            """Quiet: tests read ``receiver.requests``, not stderr."""

    return Handler


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A started receiver, stopped after the test."""
    with WebhookReceiver() as receiver:
        yield receiver
