"""A Slack Socket Mode WebSocket server on 127.0.0.1, for driving the real ``slack_sdk`` Socket Mode clients.

Slack's Socket Mode: the app calls ``apps.connections.open`` with its app-level token (xapp-...),
gets a ``wss://`` URL, connects, receives a ``hello``, then envelopes (``interactive``,
``events_api``, ``slash_commands``), and must acknowledge each with ``{"envelope_id": ...}``
(Slack retries unacknowledged ones). This server plays the WebSocket end; SlackServer
(tests/support/slack_server.py) plays ``apps.connections.open`` once its ``socket_url`` is
this server's ``url`` (the ``slack_with_socket`` fixture wires them).

    with SlackServer() as slack, SocketModeServer() as sockets:
        slack.socket_url = sockets.url
        client = SocketModeClient(app_token="xapp-test", web_client=WebClient(base_url=slack.base_url))
        ... register a listener that acks, client.connect() ...
        sockets.wait_connections(1)
        envelope_id = sockets.send_interactive(block_actions(action_id="silence", value="...", message_ts=ts))
        assert sockets.wait_ack(envelope_id) == {"envelope_id": envelope_id}
        sockets.drop_connections()        # as Slack does now and then: the client must reconnect
        sockets.wait_connections(2)

The server runs its own asyncio event loop (``websockets``' asyncio server) in a background
thread; ``stop()`` closes every connection and joins the thread. Keepalive pings are answered
by ``websockets`` itself; text frames the client sends are JSON-decoded into ``received``.

In a test module: ``from tests.support.socket_mode_server import slack_with_socket, socket_mode_server``
(the ``slack_server`` fixture comes from tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from types import TracebackType
from typing import Any, Self

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.support.loopback import HOST
from tests.support.slack_server import APP_ID, BOT_ID, BOT_USER_ID, CHANNEL_ID, TEAM_ID, SlackServer

LINK_PATH = "/link/"


class SocketModeServer:
    """Slack's Socket Mode WebSocket endpoint on loopback; ``port=0`` binds an ephemeral port."""

    name = "socket-mode-server"

    def __init__(self, host: str = HOST, port: int = 0, ticket: str = "abc", app_id: str = APP_ID,
                 ping_interval: float | None = 20) -> None:
        self.host = host
        self.ping_interval = ping_interval
        """Seconds between the server's keepalive pings (websockets' default 20; None: no pings)."""
        self.ticket = ticket
        self.app_id = app_id
        self._port = port
        self._cond = threading.Condition()
        self._received: list[Any] = []
        self._accepted = 0
        self._refused = 0
        self._to_refuse = 0
        self._open: list[ServerConnection] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> Self:
        if self._thread is not None:
            return self
        ready = threading.Event()
        failed: list[BaseException] = []
        thread = threading.Thread(target=lambda: asyncio.run(self._serve(ready, failed)),
                                  name=self.name, daemon=True)
        thread.start()
        if not ready.wait(10):
            raise AssertionError("the Socket Mode server did not start within 10 s")
        if failed:
            thread.join(timeout=5)
            raise failed[0]
        thread.name = f"{self.name}-{self._port}"
        self._thread = thread
        return self

    def stop(self) -> None:
        """Close every connection (code 1001, going away), stop the loop and join its thread."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        self._thread = None
        if thread is None or loop is None or stopping is None:
            return
        loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=10)
        if thread.is_alive():
            raise AssertionError("the Socket Mode server thread did not stop within 10 s")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """The URL ``apps.connections.open`` hands out (ws://, not wss://: loopback has no TLS)."""
        return f"ws://{self.host}:{self._port}{LINK_PATH}?ticket={self.ticket}&app_id={self.app_id}"

    # --- what happened -----------------------------------------------------------------

    @property
    def received(self) -> list[Any]:
        """Every text frame the clients sent, JSON-decoded (a str if it was not JSON), in order."""
        with self._cond:
            return list(self._received)

    @property
    def connections(self) -> int:
        """How many connections were accepted so far (refused ones not counted)."""
        with self._cond:
            return self._accepted

    @property
    def open_connections(self) -> int:
        """How many connections are open now."""
        with self._cond:
            return len(self._open)

    @property
    def refused(self) -> int:
        """How many connection attempts ``refuse`` turned away."""
        with self._cond:
            return self._refused

    def wait_connections(self, n: int, timeout: float = 10) -> None:
        """Block until ``n`` connections were accepted in all and one is open (hello sent): a reconnect."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._accepted >= n and bool(self._open), timeout):
                raise AssertionError(f"expected {n} Socket Mode connections with one open, got "
                                     f"{self._accepted} accepted, {len(self._open)} open")

    def wait_ack(self, envelope_id: str, timeout: float = 10) -> dict[str, Any]:
        """Block until a client acknowledged ``envelope_id``; that frame. AssertionError after ``timeout``."""
        def ack() -> dict[str, Any] | None:
            return next((frame for frame in self._received
                         if isinstance(frame, dict) and frame.get("envelope_id") == envelope_id), None)

        with self._cond:
            if not self._cond.wait_for(lambda: ack() is not None, timeout):
                raise AssertionError(f"envelope {envelope_id} was not acknowledged within {timeout} s; "
                                     f"received {self._received}")
            found = ack()
            assert found is not None
            return found

    # --- scripting ---------------------------------------------------------------------

    def send(self, envelope: dict[str, Any]) -> None:
        """Send one JSON frame to the latest open connection; AssertionError if none is open."""
        with self._cond:
            if not self._open:
                raise AssertionError("no Socket Mode connection is open")
            connection = self._open[-1]
        self._run(connection.send(json.dumps(envelope)))

    def send_interactive(self, payload: dict[str, Any]) -> str:
        """Send an ``interactive`` envelope (e.g. ``block_actions(...)``); returns its envelope_id."""
        envelope_id = str(uuid.uuid4())
        self.send({"envelope_id": envelope_id, "type": "interactive", "accepts_response_payload": False,
                   "payload": payload})
        return envelope_id

    def send_disconnect(self, reason: str = "refresh_requested") -> None:
        """Slack's warning that it will close this connection soon: the client should open a new one."""
        self.send({"type": "disconnect", "reason": reason,
                   "debug_info": {"host": "local"}})

    def drop_connections(self, code: int = 1011, timeout: float = 10) -> int:
        """Close every open connection from the server side; returns how many. Waits until they are closed."""
        with self._cond:
            connections = list(self._open)
        for connection in connections:
            self._run(connection.close(code, "dropped by the test"), timeout)
        with self._cond:
            if not self._cond.wait_for(lambda: not any(c in self._open for c in connections), timeout):
                raise AssertionError("dropped Socket Mode connections did not close")
        return len(connections)

    def refuse(self, n: int = 1) -> None:
        """Close the next ``n`` connections right after the handshake (code 1011), before any hello."""
        with self._cond:
            self._to_refuse += n

    # --- the protocol ------------------------------------------------------------------

    def _run(self, coroutine: Coroutine[Any, Any, None], timeout: float = 10) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            coroutine.close()
            raise AssertionError("the Socket Mode server is not running")
        asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout)

    async def _serve(self, ready: threading.Event, failed: list[BaseException]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            server: Server = await serve(self._handle, self.host, self._port, process_request=self._check_path,
                                         compression=None, close_timeout=2, ping_interval=self.ping_interval)
        except OSError as e:
            failed.append(e)
            ready.set()
            return
        async with server:
            self._port = server.sockets[0].getsockname()[1]
            ready.set()
            await self._stopping.wait()
        # leaving ``async with`` closed the server, every connection (1001) and awaited the handlers

    def _check_path(self, connection: ServerConnection, request: Request) -> Response | None:
        if not request.path.startswith(LINK_PATH):
            return connection.respond(404, "no such Socket Mode endpoint\n")
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        with self._cond:
            refuse = self._to_refuse > 0
            if refuse:
                self._to_refuse -= 1
                self._refused += 1
        if refuse:
            await connection.close(1011, "refused by the test")
            return
        try:
            with self._cond:
                connections = len(self._open) + 1
            await connection.send(json.dumps({
                "type": "hello", "num_connections": connections,
                "debug_info": {"host": "local", "build_number": 1, "approximate_connection_time": 18060},
                "connection_info": {"app_id": self.app_id},
            }))
            with self._cond:
                self._accepted += 1
                self._open.append(connection)
                self._cond.notify_all()
            async for frame in connection:
                with self._cond:
                    self._received.append(_decode(frame))
                    self._cond.notify_all()
        except ConnectionClosed:
            pass
        finally:
            with self._cond:
                if connection in self._open:
                    self._open.remove(connection)
                self._cond.notify_all()


def _decode(frame: str | bytes) -> Any:
    if isinstance(frame, bytes):
        return frame
    try:
        return json.loads(frame)
    except json.JSONDecodeError:
        return frame


def block_actions(*, user_id: str = "U_ALICE", username: str = "alice", action_id: str, value: str,
                  channel_id: str = CHANNEL_ID, channel_name: str = "data-alerts", message_ts: str,
                  message: dict[str, Any] | None = None, action_text: str = "Silence 4h",
                  block_id: str = "notifier_actions", thread_ts: str | None = None) -> dict[str, Any]:
    """A ``block_actions`` interactive payload as Slack sends it when someone clicks a button.

    ``message`` is the message the button is on, e.g. ``slack_server.message(ts)``; its text,
    blocks and attachments are carried over. ``thread_ts``: the button is on a thread reply.
    """
    now = f"{time.time():.6f}"
    shown: dict[str, Any] = {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "app_id": APP_ID,
                             "team": TEAM_ID, "text": ""}
    shown.update({key: value for key, value in (message or {}).items() if key not in ("channel",)})
    shown["ts"] = message_ts
    container: dict[str, Any] = {"type": "message", "message_ts": message_ts, "channel_id": channel_id,
                                 "is_ephemeral": False}
    if thread_ts is not None:
        container["thread_ts"] = shown["thread_ts"] = thread_ts
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": username, "name": username, "team_id": TEAM_ID},
        "api_app_id": APP_ID,
        "token": "verification-token-unused-in-socket-mode",
        "container": container,
        "trigger_id": f"{int(float(now))}.1.{uuid.uuid4().hex}",
        "team": {"id": TEAM_ID, "domain": "notifier-test"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": channel_name},
        "message": shown,
        "state": {"values": {}},
        "response_url": "http://127.0.0.1/none",
        "actions": [{
            "action_id": action_id, "block_id": block_id,
            "text": {"type": "plain_text", "text": action_text, "emoji": True},
            "value": value, "type": "button", "action_ts": now,
        }],
    }


@pytest.fixture
def socket_mode_server() -> Iterator[SocketModeServer]:
    """A running SocketModeServer, stopped after the test.

    It pings every 0.1 s: slack_sdk's builtin client blocks up to 3 s in a socket read that
    ``close()`` must wait for; a ping ends the read sooner (close() then takes about 1 s).
    """
    with SocketModeServer(ping_interval=0.1) as server:
        yield server


@pytest.fixture
def slack_with_socket(slack_server: SlackServer, socket_mode_server: SocketModeServer) -> SlackServer:
    """The ``slack_server`` whose ``apps.connections.open`` hands out ``socket_mode_server``'s URL."""
    slack_server.socket_url = socket_mode_server.url
    return slack_server
