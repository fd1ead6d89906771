"""A webhook receiver on 127.0.0.1 that records each POST with its arrival time (time.monotonic()).

HTTP/1.0, one request per connection, answers 200 at once. ``since(i)`` returns the
requests from index ``i`` on, so a harness can wait for what a change caused.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from bench.common import HOST


@dataclass(frozen=True, slots=True)
class Arrival:
    t: float  # time.monotonic() when the body had been read
    path: str
    doc: Any


class Receiver:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._items: list[Arrival] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                t = time.monotonic()
                try:
                    doc = json.loads(body)
                except ValueError:
                    doc = None
                with receiver._cond:
                    receiver._items.append(Arrival(t, self.path, doc))
                    receiver._cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
                pass

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="bench-receiver")

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}/hook"

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def since(self, index: int = 0) -> list[Arrival]:
        with self._cond:
            return self._items[index:]

    def wait(self, predicate: Any, timeout: float) -> bool:
        """Until ``predicate(all arrivals)`` holds (True) or ``timeout`` seconds pass (False)."""
        with self._cond:
            return bool(self._cond.wait_for(lambda: predicate(self._items), timeout=timeout))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
