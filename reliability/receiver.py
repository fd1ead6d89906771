"""A webhook receiver on 127.0.0.1 that records every request and can act at the moment one arrives.

A campaign aims its kills at delivery windows through one-shot hooks:

* ``arm(before=fn)``: ``fn`` runs after the request was read and recorded, before the answer is
  written: the sender has sent and not yet heard back, so it cannot have marked the
  notification delivered (the window between send and ``mark_delivered``).
* ``arm(after=fn)``: ``fn`` runs right after the answer was written (a race with the sender's
  ``mark_delivered`` commit).

Channel faults: ``set_fault(ChannelFault(status=500, times=3))`` answers the next 3 requests with
500 (``retry_after`` adds the header), ``ChannelFault(hang=4.0)`` holds each request 4 s and closes
the connection without an answer, until ``clear_fault()``. Only a request answered 2xx
(``Received.delivered``) was delivered.

A request whose body ends before its ``Content-Length`` (the sender was killed while sending)
is not a delivery: it is counted in ``incomplete`` and not recorded.

Each request is recorded with the sender's *generation* (which process run was current when
it arrived), so a duplicate can be traced to the kill that caused it. HTTP/1.0, one request
per connection: a killed sender leaves no idle keep-alive connection behind.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

HOST = "127.0.0.1"
Hook = Callable[[], None]


@dataclass(frozen=True, slots=True)
class Received:
    """One request as it arrived."""

    key: str  # the Idempotency-Key header ("" when absent)
    notifier_id: str  # the X-Notifier-Id header ("" when absent)
    body: bytes
    doc: Any  # the parsed JSON body, None when it does not parse
    arrived: float  # time.monotonic()
    generation: int  # the sender's process run current at arrival
    answered: int | None = 200  # the status answered; None: the connection was closed without an answer
    path: str = "/hook"
    wall: float = 0.0  # time.time() at arrival (to compare with the outbox's created_at)

    @property
    def delivered(self) -> bool:
        return self.answered is not None and 200 <= self.answered < 300


@dataclass(slots=True)
class ChannelFault:
    """How to misbehave: answer ``status`` (with ``Retry-After``), or hang ``hang`` seconds and answer nothing."""

    status: int | None = None
    retry_after: float | None = None
    hang: float = 0.0
    times: int | None = None  # the next N requests only; None: until cleared


class Receiver:
    """Records POSTs, answers 200 (or as a ``ChannelFault`` says), and runs armed hooks around the answer."""

    def __init__(self, host: str = HOST, port: int = 0) -> None:
        self._lock = threading.Condition()
        self._requests: list[Received] = []
        self._before: Hook | None = None
        self._after: Hook | None = None
        self._fault: ChannelFault | None = None
        self.generation = 0
        self.incomplete = 0  # requests cut short (the sender died while sending): never processed
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="crash-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hook"

    # --- what a campaign uses ---------------------------------------------------------

    @property
    def requests(self) -> list[Received]:
        """A snapshot of everything received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def count(self) -> int:
        with self._lock:
            return len(self._requests)

    def arm(self, *, before: Hook | None = None, after: Hook | None = None) -> None:
        """Run ``before`` / ``after`` once, around the answer to the next request."""
        with self._lock:
            self._before, self._after = before, after

    def disarm(self) -> None:
        with self._lock:
            self._before = self._after = None

    def set_fault(self, fault: ChannelFault) -> None:
        with self._lock:
            self._fault = fault

    def clear_fault(self) -> None:
        with self._lock:
            self._fault = None

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float) -> bool:
        """Block until ``predicate(requests)`` holds (True) or ``timeout`` passes (False)."""
        with self._lock:
            return self._lock.wait_for(lambda: predicate(self._requests), timeout=timeout)

    # --- called by handler threads ----------------------------------------------------

    def _answer(self) -> ChannelFault | None:
        """The fault that decides this request's answer, if any (counting down ``times``)."""
        with self._lock:
            fault = self._fault
            if fault is None:
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._fault = None
            return fault

    def _record(self, request: Received) -> Hook | None:
        with self._lock:
            self._requests.append(request)
            self._lock.notify_all()
            hook, self._before = self._before, None
            return hook

    def _answered(self) -> Hook | None:
        with self._lock:
            hook, self._after = self._after, None
            return hook


def _handler_for(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"
        timeout = 10

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if len(body) < length:  # a real receiver rejects a short body: it is not a delivery
                with receiver._lock:
                    receiver.incomplete += 1
                return
            try:
                doc = json.loads(body) if body else None
            except ValueError:
                doc = None
            fault = receiver._answer()
            status = None if fault is not None and fault.hang else (fault.status if fault is not None else 200)
            before = receiver._record(Received(
                key=self.headers.get("Idempotency-Key", ""), notifier_id=self.headers.get("X-Notifier-Id", ""),
                body=body, doc=doc, arrived=time.monotonic(), generation=receiver.generation, answered=status,
                path=self.path, wall=time.time()))
            if before is not None:
                before()
            if status is None:  # hang, then drop the connection unanswered
                time.sleep(fault.hang if fault is not None else 0.0)
                self.close_connection = True
                return
            try:
                self.send_response(status)
                if fault is not None and fault.retry_after is not None:
                    self.send_header("Retry-After", f"{fault.retry_after:g}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                self.wfile.flush()
            except OSError:  # the sender was killed while we held its request
                return
            after = receiver._answered()
            if after is not None:
                after()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
            """Quiet: the campaign reads ``requests``."""

    return Handler
