"""Flap damping: an alert that keeps coming and going says so once, then waits until it is stable."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from notifier.core.cycle import CyclePlan, plan_cycle
from notifier.core.flap import DEFAULT_FLAP, FlapPolicy
from notifier.core.models import FetchResult, JobSnapshot, NodeStatus, Rule
from tests.pipeline_support import NODE_EXCEPTION, LinkedClock, Pipeline, source_toml, webhook_toml

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
MIN = timedelta(minutes=1)
RULES = (Rule(name="node-exception", scope="node", channels=("c",), status=("EXCEPTION",)),)


def poll(status: str) -> FetchResult:
    return FetchResult(snapshots=(JobSnapshot(name="job_sms", status="NORMAL", nodes=(NodeStatus("A", status),)),))


class Timeline:
    """Plans cycles one minute apart with flap damping on, carrying the state like the service."""

    def __init__(self, policy: FlapPolicy = DEFAULT_FLAP) -> None:
        self.policy = policy
        self.plan: CyclePlan | None = None
        self.now = T0

    def cycle(self, status: str) -> list[tuple[str, str]]:
        p = self.plan
        self.plan = plan_cycle(RULES, p.entities if p else {}, p.alerts if p else {}, poll(status), None, self.now,
                               flaps=p.flaps if p else {}, flap_policy=self.policy)
        self.now += MIN
        return [(a.status, a.summary) for a in self.plan.notify]


def flip(i: int) -> str:
    return "EXCEPTION" if i % 2 == 0 else "NORMAL"


def test_a_node_flapping_every_cycle_for_an_hour_sends_three_messages() -> None:
    """Firing, resolved, then one 'flapping' notice; nothing more for the rest of the hour."""
    t = Timeline()
    sent = [(i, m) for i in range(60) for m in t.cycle(flip(i))]
    assert [i for i, _ in sent] == [0, 1, 2]
    (_, (status, text)) = sent[2]
    assert status == "firing" and "A is flapping: 3 changes in 30m" in text
    assert text.startswith("A entered EXCEPTION")  # what is wrong comes first


@pytest.mark.parametrize(("last", "status", "words"), [
    ("EXCEPTION", "firing", "stopped flapping, stable for 15m: still EXCEPTION"),
    ("NORMAL", "resolved", "stopped flapping, stable for 15m: NORMAL"),
], ids=["settles-firing", "settles-clear"])
def test_once_stable_for_the_quiet_time_one_message_gives_the_final_state(last: str, status: str, words: str) -> None:
    """After the notice, 15 quiet minutes end the flapping with exactly one message of the state it settled in."""
    t = Timeline()
    for i in range(3):
        t.cycle(flip(i))  # fires, resolves, fires: flapping from the third
    t.cycle(last if last == "NORMAL" else "NORMAL")  # one more change, still damped
    if last == "EXCEPTION":
        t.cycle("EXCEPTION")
    sent = [m for _ in range(40) for m in t.cycle(last)]
    assert len(sent) == 1
    assert sent[0][0] == status and sent[0][1].endswith(words)


def test_a_slow_change_is_not_flapping() -> None:
    """Changes further apart than the window never reach the threshold: every one is sent."""
    t = Timeline()
    sent = [m for i in range(4) for m in [*t.cycle(flip(i)), *[x for _ in range(40) for x in t.cycle(flip(i))]]]
    assert [s for s, _ in sent] == ["firing", "resolved", "firing", "resolved"]


def test_threshold_zero_turns_damping_off() -> None:
    """flap_threshold = 0: every change is a message, as without damping."""
    t = Timeline(FlapPolicy(threshold=0))
    assert len([m for i in range(10) for m in t.cycle(flip(i))]) == 10


def test_flapping_survives_a_restart(write_config, webhook_receiver) -> None:  # type: ignore[no-untyped-def]
    """The changes are in the state file: a restart in the middle of the flapping does not start the count over."""
    from notifier.simulator import ManualClock, Simulator, load_scenario

    with Simulator(load_scenario("seed"), clock=ManualClock()) as sim:
        path = write_config(source=source_toml(sim.url), rules=NODE_EXCEPTION,
                            channels=webhook_toml(webhook_receiver.url))
        p = Pipeline(path, LinkedClock(sim))
        try:
            for i in range(30):
                sim.set_node_status("job_sms", "DLI_SMS_GES", flip(i))
                p.cycle()
                p.clock.advance(60)
                if i == 10:
                    p.restart()
        finally:
            p.close()
    sent = [a for r in webhook_receiver.requests for a in r.json["alerts"]]
    assert [a["status"] for a in sent] == ["firing", "resolved", "firing"]
    assert "is flapping" in sent[2]["summary"]


def test_a_flapping_alert_that_settles_inside_a_silence_is_sent_once_the_silence_ends() -> None:
    """Held back by damping, then by a silence: when the silence ends and it still fires, it goes out once."""
    from notifier.core.cycle import plan_cycle as plan
    from notifier.core.mutes import Matchers, Silence

    t = Timeline()
    assert len([m for i in range(5) for m in t.cycle(flip(i))]) == 3  # firing, resolved, flapping notice
    silence = Silence("s1", Matchers(rule="node-exception"), T0, t.now + 30 * MIN, T0, "maintenance")
    sent: list[tuple[int, str]] = []
    for i in range(60):
        p = t.plan
        assert p is not None
        t.plan = plan(RULES, p.entities, p.alerts, poll("EXCEPTION"), None, t.now, flaps=p.flaps,
                      mutes=(silence,))
        sent += [(i, a.status) for a in t.plan.notify]
        t.now += MIN
    assert sent == [(30, "firing")]  # the minute the silence ended (it settled at 15, inside it)
    assert t.plan is not None and next(iter(t.plan.alerts.values())).notified == 1  # this episode: just this one


def test_a_damped_firing_message_does_not_count_as_sent() -> None:
    """'sent N times' counts what went out: messages damping held back do not count."""
    t = Timeline()
    for i in range(5):
        t.cycle(flip(i))  # the fifth (a firing) is held back
    assert t.plan is not None
    (state,) = t.plan.alerts.values()
    assert state.last_notified_at is None and state.notified == 0


def test_nothing_settles_while_the_job_cannot_be_fetched() -> None:
    """No 'stopped flapping' without data: a job whose fetch fails for 20 minutes stays quiet."""
    from notifier.core.models import FetchError

    t = Timeline()
    for i in range(3):
        t.cycle(flip(i))
    failing = FetchResult(snapshots=(), errors=(FetchError(job="job_sms", kind="timeout", message="timeout"),))
    p = t.plan
    for _ in range(20):
        assert p is not None
        p = plan_cycle(RULES, p.entities, p.alerts, failing, None, t.now, flaps=p.flaps)
        assert p.notify == ()
        t.now += MIN


def test_an_alert_that_never_changes_leaves_no_flap_row() -> None:
    """Damping writes nothing for an alert that just fires and stays firing."""
    t = Timeline()
    t.cycle("EXCEPTION")
    for _ in range(45):
        t.cycle("EXCEPTION")
        assert t.plan is not None and not t.plan.flap_upserts
    assert t.plan is not None and t.plan.flaps == {}  # its one change is out of the window: forgotten
