"""Buttons end to end: a click arrives over Socket Mode (real slack_sdk client, local WebSocket server) and
becomes a silence or an acknowledgement in the state file, an edited message and a thread reply."""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest

from notifier import silencecli
from notifier.simulator import ManualClock, Simulator, load_scenario
from notifier.slack_actions import ButtonListener, listeners_for
from tests.conftest import WriteConfig
from tests.pipeline_support import NODE_EXCEPTION, LinkedClock, Pipeline, source_toml
from tests.support.fakes import FakeClock
from tests.support.slack_server import SlackServer
from tests.support.socket_mode_server import SocketModeServer, block_actions

Setup = Callable[..., tuple[Pipeline, ButtonListener]]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(load_scenario("seed"), clock=ManualClock()) as s:
        yield s


@pytest.fixture
def clock(sim: Simulator) -> LinkedClock:
    return LinkedClock(sim)


@pytest.fixture(autouse=True)
def env(slack_paced: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-test")


@pytest.fixture
def setup(write_config: WriteConfig, sim: Simulator, clock: LinkedClock,
          slack_with_socket: SlackServer, socket_mode_server: SocketModeServer) -> Iterator[Setup]:
    made: list[tuple[Pipeline, ButtonListener]] = []

    def make(extra: str = "", rules: str = NODE_EXCEPTION) -> tuple[Pipeline, ButtonListener]:
        channels = (f'[slack]\napp_token_env = "SLACK_APP_TOKEN"\n{extra}\n'
                    f'[channels.team]\ntype = "slack"\nchannel = "#data-alerts"\n'
                    f'base_url = "{slack_with_socket.base_url}"\n')
        p = Pipeline(write_config(source=source_toml(sim.url), rules=rules, channels=channels), clock)
        (listener,) = listeners_for(p.app.wiring.channels, p.store, clock, lambda: p.app.wiring.channels,
                                    backoff=(0.05, 0.2), ping_interval=0.2)
        made.append((p, listener.start()))
        socket_mode_server.wait_connections(1)
        return made[-1]

    yield make
    for p, listener in made:
        listener.close()
        p.close()


def buttons(message: dict) -> dict[str, dict]:
    """The clicked message's buttons by visible text."""
    (actions,) = [b for b in message["blocks"] if b["type"] == "actions"]
    return {e["text"]["text"]: e for e in actions["elements"]}


def click(server: SocketModeServer, slack_server: SlackServer, ts: str, text: str, *,
          user: str = "U0ALICE", username: str = "alice", ack_within: float = 10) -> dict:
    """Press the button with this text on the message ``ts`` as Slack has it now; wait for the ack."""
    message = slack_server.message(ts)
    assert message is not None
    button = buttons(message)[text]
    envelope = server.send_interactive(block_actions(
        user_id=user, username=username, action_id=button["action_id"], value=button["value"], channel_id="C123",
        message_ts=ts, message=message, action_text=text))
    return server.wait_ack(envelope, timeout=ack_within)


def test_silence_4h_from_slack_silences_the_job_edits_the_message_and_replies(
        setup, sim, clock, slack_with_socket, socket_mode_server, capsys) -> None:
    p, _ = setup()
    p.cycle()
    (parent,) = slack_with_socket.posts
    assert set(buttons(parent.body)) == {"Acknowledge", "Silence 1h", "Silence 4h"}

    ack = click(socket_mode_server, slack_with_socket, parent.ts, "Silence 4h")
    assert set(ack) == {"envelope_id"}
    slack_with_socket.wait_updates(1)
    slack_with_socket.wait_for(2)
    (silence,) = p.store.silences.current(clock())
    assert (silence.author, silence.comment, silence.matchers.job, silence.matchers.rule) == (
        "alice", "from Slack", "job_sms", "*")
    assert silence.ends_at - silence.starts_at == timedelta(hours=4)
    now = slack_with_socket.message(parent.ts)
    assert now is not None and "Silenced for 4h by <@U0ALICE>" in json.dumps(now)
    assert set(buttons(now)) == {"Acknowledge", "Unsilence"}
    reply = slack_with_socket.posts[1]
    assert reply.body["thread_ts"] == parent.ts and silence.id in reply.body["text"]
    silencecli._list(argparse.Namespace(), p.store, (), clock())  # what `notifier silence list` prints, at `now`
    listed = capsys.readouterr().out
    assert silence.id in listed and "rule=*" not in listed and "job=job_sms" in listed and "alice: from Slack" in listed

    sim.set_node_status("job_sms", "DIS_INPUT", "EXCEPTION")  # silenced: nothing is posted for the job
    clock.advance(60)
    p.cycle()
    assert len(slack_with_socket.posts) == 2
    redrawn = slack_with_socket.updates[1]  # the next cycle draws the parent from the state file: same picture
    assert redrawn.ts == parent.ts and f"`notifier silence expire {silence.id}`" in json.dumps(redrawn.body)
    assert set(buttons(redrawn.body)) == {"Acknowledge", "Unsilence"}

    click(socket_mode_server, slack_with_socket, parent.ts, "Unsilence")
    slack_with_socket.wait_updates(3)
    assert p.store.silences.current(clock()) == ()
    assert set(buttons(slack_with_socket.message(parent.ts))) == {"Acknowledge", "Silence 1h", "Silence 4h"}


def test_acknowledge_stops_repeats_but_not_the_resolve(setup, sim, clock, slack_with_socket,
                                                       socket_mode_server) -> None:
    p, _ = setup(rules=NODE_EXCEPTION + 'repeat = "1h"\n')
    p.cycle()
    parent = slack_with_socket.posts[0]
    click(socket_mode_server, slack_with_socket, parent.ts, "Acknowledge", user="U0BOB", username="bob")
    slack_with_socket.wait_updates(1)
    slack_with_socket.wait_for(2)
    assert [a.author for a in p.store.silences.acks().values()] == ["bob"]
    assert "Acknowledge" not in buttons(slack_with_socket.message(parent.ts))

    for _ in range(3):  # past the 1h repeat: no reminder
        clock.advance(30 * 60)
        p.cycle()
    assert len(slack_with_socket.posts) == 2

    sim.set_node_status("job_sms", "DLI_SMS_GES", "NORMAL")
    clock.advance(60)
    p.cycle()
    resolve = slack_with_socket.posts[2]
    assert resolve.body["thread_ts"] == parent.ts and "NORMAL" in resolve.body["text"]


def test_a_user_outside_the_allowlist_changes_nothing(setup, slack_with_socket, socket_mode_server, clock) -> None:
    slack_with_socket.usergroups = {"S0ONCALL": ["U0CAROL"]}
    p, _ = setup(extra='allow = ["U0BOB", "S0ONCALL"]\n')
    p.cycle()
    parent = slack_with_socket.posts[0]
    click(socket_mode_server, slack_with_socket, parent.ts, "Silence 1h", user="U0MALLORY", username="mallory")
    (refusal,) = slack_with_socket.wait_ephemerals(1)
    assert refusal.user == "U0MALLORY" and "not allowed" in refusal.body["text"]
    assert p.store.silences.current(clock()) == () and slack_with_socket.updates == []

    click(socket_mode_server, slack_with_socket, parent.ts, "Silence 1h", user="U0CAROL", username="carol")
    slack_with_socket.wait_updates(1)  # a member of the allowed user group may
    assert [s.author for s in p.store.silences.current(clock())] == ["carol"]


def test_a_dropped_connection_is_reconnected_and_polling_never_waits(
        setup, sim, clock, slack_with_socket, socket_mode_server) -> None:
    p, _ = setup()
    p.cycle()
    socket_mode_server.drop_connections()
    p.cycle()  # polling and delivery go on while the buttons reconnect
    socket_mode_server.wait_connections(2)
    parent = slack_with_socket.posts[0]
    click(socket_mode_server, slack_with_socket, parent.ts, "Silence 1h")
    slack_with_socket.wait_updates(1)
    assert len(p.store.silences.current(clock())) == 1
    assert slack_with_socket.connection_opens >= 2


class _Down:
    names = ("team",)

    def __init__(self, since: datetime) -> None:
        self.since = since

    def down(self) -> tuple[str, datetime] | None:
        return ("Slack answered invalid_auth", self.since)


def test_buttons_down_for_long_raise_channel_failing(setup, clock, slack_with_socket, socket_mode_server) -> None:
    p, _ = setup()
    p.app.poller.watch_buttons([_Down(clock())])
    p.cycle()
    assert not any("notifier-channel-failing" in json.dumps(post.body) for post in slack_with_socket.posts)
    clock.advance(3600)
    p.cycle()
    failing = [post for post in slack_with_socket.posts if "Slack buttons" in json.dumps(post.body)]
    assert failing and "invalid_auth" in json.dumps(failing[0].body)


def test_clicks_are_acknowledged_before_the_work(setup, slack_with_socket, socket_mode_server) -> None:
    """The ack goes out first: with Slack's Web API hanging, the envelope is still answered within Slack's 3 s."""
    p, _ = setup()
    p.cycle()
    parent = slack_with_socket.posts[0]
    gate = threading.Event()
    original = slack_with_socket.respond

    def slow(path, headers, body):  # chat.update hangs until the ack was seen
        if path.endswith("chat.update"):
            gate.wait(30)
        return original(path, headers, body)
    slack_with_socket.respond = slow  # type: ignore[method-assign]
    try:
        click(socket_mode_server, slack_with_socket, parent.ts, "Silence 1h", ack_within=3)
    finally:
        gate.set()
    slack_with_socket.wait_updates(1)


def test_a_redrawn_parent_keeps_saying_who_acknowledged(setup, sim, clock, slack_with_socket,
                                                        socket_mode_server) -> None:
    """A second node failing after an ack re-draws the parent: the ack is still shown, Acknowledge is back."""
    p, _ = setup()
    p.cycle()
    parent = slack_with_socket.posts[0]
    click(socket_mode_server, slack_with_socket, parent.ts, "Acknowledge", user="U0BOB", username="bob")
    slack_with_socket.wait_updates(1)
    sim.set_node_status("job_sms", "DIS_INPUT", "EXCEPTION")
    clock.advance(60)
    p.cycle()
    now = slack_with_socket.message(parent.ts)
    assert now is not None and "1 of 2 alerts acknowledged by bob" in json.dumps(now)
    assert "Acknowledge" in buttons(now)


def test_a_refused_connection_is_retried_with_backoff_and_reported_down_meanwhile(
        setup, slack_with_socket, socket_mode_server, caplog) -> None:
    slack_with_socket.fail_next("internal_error", times=2, method="apps.connections.open")
    socket_mode_server.drop_connections()
    with caplog.at_level("WARNING", logger="notifier.slack_actions"):
        _, listener = setup()
    assert slack_with_socket.connection_opens >= 3  # two refusals, then the connection that is up now
    assert "slack buttons cannot connect, will retry" in caplog.text and "internal_error" in caplog.text
    deadline = time.monotonic() + 10  # the supervisor notices the connection within its 0.2 s check
    while listener.down() is not None:
        assert time.monotonic() < deadline, "the listener never reported the connection up"
        time.sleep(0.02)


def test_the_post_that_replaces_a_deleted_parent_keeps_the_buttons(setup, sim, clock, slack_with_socket) -> None:
    p, _ = setup()
    p.cycle()
    slack_with_socket.delete_message(slack_with_socket.posts[0].ts)
    sim.set_node_status("job_sms", "DIS_INPUT", "EXCEPTION")
    clock.advance(60)
    p.cycle()
    fallback = slack_with_socket.posts[1]
    assert "thread_ts" not in fallback.body
    assert set(buttons(fallback.body)) == {"Acknowledge", "Silence 1h", "Silence 4h"}
