"""The lifecycle every loopback test server shares: bind, serve in a thread, stop cleanly."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

HOST = "127.0.0.1"


class LoopbackHTTPServer:
    """A ThreadingHTTPServer on 127.0.0.1 in a background thread; ``port=0`` binds an ephemeral port.

    ``stop()`` closes the socket (later connections are refused: an outage) and joins
    the handler threads, so no test leaks a thread. Subclasses provide ``handler()``.
    """

    name = "loopback-server"

    def __init__(self, host: str = HOST, port: int = 0) -> None:
        self.host = host
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def start(self) -> Self:
        if self._server is not None:
            return self
        server = ThreadingHTTPServer((self.host, self._port), self.handler())
        server.daemon_threads = False  # server_close() joins handler threads: nothing leaks
        server.block_on_close = True
        self._server = server
        self._port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name=f"{self.name}-{self._port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port
