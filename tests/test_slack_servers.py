"""The loopback Slack servers behave like Slack for the real slack_sdk clients (tests of test infrastructure)."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.client import BaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from tests.support.slack_server import CHANNEL_ID, Ephemeral, Posted, SlackServer, Updated
from tests.support.socket_mode_server import SocketModeServer, block_actions

SECTION = {"type": "section", "text": {"type": "mrkdwn", "text": "*NodeDown* on node-1"}}


@pytest.fixture
def web(slack_server: SlackServer) -> WebClient:
    return WebClient(token="xoxb-test", base_url=slack_server.base_url)


def error_of(info: pytest.ExceptionInfo[SlackApiError]) -> str:
    return str(info.value.response["error"])


def test_posts_get_increasing_ts_and_threads_need_a_live_parent(web: WebClient, slack_server: SlackServer) -> None:
    top = web.chat_postMessage(channel="#data-alerts", text="firing", blocks=[SECTION])
    reply = web.chat_postMessage(channel="#data-alerts", text="still firing", thread_ts=top["ts"],
                                 reply_broadcast=True)

    assert (top["ok"], top["channel"], top["ts"], reply["ts"]) == (True, CHANNEL_ID, "1700000000.000100",
                                                                   "1700000000.000200")
    assert top["message"]["blocks"] == [SECTION] and reply["message"]["thread_ts"] == top["ts"]
    assert slack_server.posts == [
        Posted(top["ts"], "#data-alerts", {"channel": "#data-alerts", "text": "firing", "blocks": [SECTION]}),
        Posted(reply["ts"], "#data-alerts", {"channel": "#data-alerts", "text": "still firing",
                                             "thread_ts": top["ts"], "reply_broadcast": True}),
    ]
    assert slack_server.messages == [post.body for post in slack_server.posts]
    assert slack_server.replies(top["ts"]) == slack_server.posts[1:]

    for parent in ("1699999999.000100", reply["ts"]):  # unknown, and a reply (not top-level)
        with pytest.raises(SlackApiError) as info:
            web.chat_postMessage(channel="#data-alerts", text="x", thread_ts=parent)
        assert error_of(info) == "thread_not_found"

    slack_server.delete_message(top["ts"])
    with pytest.raises(SlackApiError) as info:
        web.chat_postMessage(channel="#data-alerts", text="resolved", thread_ts=top["ts"])
    assert error_of(info) == "thread_not_found"
    assert slack_server.message(top["ts"]) is None and len(slack_server.posts) == 2


def test_updates_replace_the_message_like_slack(web: WebClient, slack_server: SlackServer) -> None:
    ts = web.chat_postMessage(channel="#data-alerts", text="firing", blocks=[SECTION])["ts"]

    answer = web.chat_update(channel=CHANNEL_ID, ts=ts, text="silenced by alice")
    assert (answer["ok"], answer["ts"], answer["text"]) == (True, ts, "silenced by alice")
    current = slack_server.message(ts)
    assert current is not None and current["text"] == "silenced by alice"
    assert current["blocks"] == [SECTION]  # as on Slack: blocks not named in the update are kept

    web.chat_update(channel=CHANNEL_ID, ts=ts, text="resolved", blocks=[])
    assert "blocks" not in (slack_server.message(ts) or {})
    assert [u.body["text"] for u in slack_server.wait_updates(2)] == ["silenced by alice", "resolved"]
    assert slack_server.updates[0] == Updated(ts, CHANNEL_ID, {"channel": CHANNEL_ID, "ts": ts,
                                                               "text": "silenced by alice"})

    with pytest.raises(SlackApiError) as info:
        web.chat_update(channel=CHANNEL_ID, ts=ts, text="x",
                        blocks=[{"type": "header", "text": {"type": "mrkdwn", "text": "x"}}])
    assert error_of(info) == "invalid_blocks"

    slack_server.fail_next("cant_update_message", method="chat.update")
    with pytest.raises(SlackApiError) as info:
        web.chat_update(channel=CHANNEL_ID, ts=ts, text="again")
    assert error_of(info) == "cant_update_message"
    assert web.chat_postMessage(channel="#data-alerts", text="posts are not affected")["ok"]

    slack_server.delete_message(ts)
    with pytest.raises(SlackApiError) as info:
        web.chat_update(channel=CHANNEL_ID, ts=ts, text="too late")
    assert error_of(info) == "message_not_found"
    assert len(slack_server.updates) == 2


def test_ephemerals_and_usergroups(web: WebClient, slack_server: SlackServer) -> None:
    answer = web.chat_postEphemeral(channel=CHANNEL_ID, user="U_ALICE", text="Silenced for 4h")
    assert answer["ok"] and answer["message_ts"]
    assert slack_server.wait_ephemerals(1) == [
        Ephemeral(CHANNEL_ID, "U_ALICE", {"channel": CHANNEL_ID, "user": "U_ALICE", "text": "Silenced for 4h"})]

    slack_server.usergroups = {"S_ONCALL": ["U_ALICE", "U_BOB"]}
    assert web.usergroups_users_list(usergroup="S_ONCALL")["users"] == ["U_ALICE", "U_BOB"]
    with pytest.raises(SlackApiError) as info:
        web.usergroups_users_list(usergroup="S_NOPE")
    assert error_of(info) == "no_such_subteam"


def test_tokens_are_not_interchangeable(slack_server: SlackServer, socket_mode_server: SocketModeServer) -> None:
    app = WebClient(token="xapp-test", base_url=slack_server.base_url)
    calls: list[tuple[Callable[[], object], str, str]] = [
        (lambda: app.apps_connections_open(app_token="xoxb-test"), "bot", "not_allowed_token_type"),
        (lambda: app.apps_connections_open(app_token="xapp-wrong"), "wrong", "invalid_auth"),
        (lambda: app.apps_connections_open(app_token="xapp-test"), "no url yet", "internal_error"),
        (app.auth_test, "app", "not_allowed_token_type"),
    ]
    for call, token, error in calls:
        with pytest.raises(SlackApiError) as info:
            call()
        assert error_of(info) == error, token

    slack_server.socket_url = socket_mode_server.url
    assert app.apps_connections_open(app_token="xapp-test")["url"] == socket_mode_server.url
    assert slack_server.connection_opens == 4
    assert WebClient(token="xoxb-test", base_url=slack_server.base_url).auth_test()["bot_id"] == "B1"


def socket_client(base_url: str, seen: queue.Queue[SocketModeRequest]) -> SocketModeClient:
    """The builtin Socket Mode client against the loopback servers; each request is acked, then queued."""

    def ack(client: BaseSocketModeClient, request: SocketModeRequest) -> None:
        client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))
        seen.put(request)

    client = SocketModeClient(app_token="xapp-test", web_client=WebClient(base_url=base_url),
                              auto_reconnect_enabled=True, ping_interval=0.2)
    client.socket_mode_request_listeners.append(ack)
    return client


def test_builtin_socket_mode_client_acks_and_reconnects(
        slack_with_socket: SlackServer, socket_mode_server: SocketModeServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="slack_sdk")
    web = WebClient(token="xoxb-test", base_url=slack_with_socket.base_url)
    ts = web.chat_postMessage(channel="#data-alerts", text="firing", blocks=[SECTION])["ts"]
    threads_before = set(threading.enumerate())
    seen: queue.Queue[SocketModeRequest] = queue.Queue()
    client = socket_client(slack_with_socket.base_url, seen)
    try:
        client.connect()
        socket_mode_server.wait_connections(1)
        envelope_id = socket_mode_server.send_interactive(
            block_actions(action_id="silence_4h", value="fp:abc", message_ts=ts, message=slack_with_socket.message(ts)))

        assert socket_mode_server.wait_ack(envelope_id) == {"envelope_id": envelope_id}
        request = seen.get(timeout=5)
        assert request.type == "interactive" and request.envelope_id == envelope_id
        assert request.payload["actions"][0]["action_id"] == "silence_4h"
        assert request.payload["message"]["blocks"] == [SECTION] and request.payload["message"]["ts"] == ts
        assert socket_mode_server.received == [{"envelope_id": envelope_id}]  # nothing for the hello

        assert socket_mode_server.drop_connections() == 1
        socket_mode_server.wait_connections(2)
        assert slack_with_socket.connection_opens >= 2
        again = socket_mode_server.send_interactive(block_actions(action_id="ack", value="fp:abc", message_ts=ts))
        socket_mode_server.wait_ack(again)
        assert seen.get(timeout=5).payload["actions"][0]["action_id"] == "ack"

        socket_mode_server.refuse(1)  # the first reconnect is closed at once: the client tries again
        socket_mode_server.drop_connections()
        socket_mode_server.wait_connections(3)
        socket_mode_server.wait_ack(socket_mode_server.send_interactive(
            block_actions(action_id="ack", value="fp:abc", message_ts=ts)))  # connected: safe to close()
        assert (socket_mode_server.refused, socket_mode_server.open_connections) == (1, 1)
    finally:
        client.close()

    assert not client.is_connected()
    leftover = [t for t in set(threading.enumerate()) - threads_before if t.is_alive()]
    assert leftover == [], leftover
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
