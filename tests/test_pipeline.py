"""End to end over real sockets: simulator -> service -> SQLite -> webhook receiver."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from notifier.simulator import ManualClock, Simulator, load_scenario
from tests.conftest import WriteConfig
from tests.pipeline_support import (
    NODE_EXCEPTION,
    LinkedClock,
    Pipeline,
    source_toml,
    webhook_toml,
)
from tests.support.webhook_receiver import WebhookReceiver

MakePipeline = Callable[..., Pipeline]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(load_scenario("seed"), clock=ManualClock()) as s:
        yield s


@pytest.fixture
def clock(sim: Simulator) -> LinkedClock:
    """notifier's clock, linked to the simulator's scenario clock (overrides the plain one of conftest)."""
    return LinkedClock(sim)


@pytest.fixture
def make_pipeline(write_config: WriteConfig, sim: Simulator, clock: LinkedClock) -> Iterator[MakePipeline]:
    """Build pipelines polling the simulator and posting to a webhook; every one is closed after the test."""
    made: list[Pipeline] = []

    def make(rules: str, hook: WebhookReceiver | str, jobs: str = 'names = ["job_sms"]') -> Pipeline:
        url = hook if isinstance(hook, str) else hook.url
        path = write_config(source=source_toml(sim.url), rules=rules, channels=webhook_toml(url), jobs=jobs)
        made.append(Pipeline(path, clock))
        return made[-1]

    yield make
    for p in made:
        p.close()

def alerts_of(hook: WebhookReceiver) -> list[dict]:
    return [a for r in hook.requests for a in r.json["alerts"]]


def test_seed_example_fires_once_then_resolves_once(make_pipeline, sim, clock, webhook_receiver) -> None:
    """The API document's example fires one node alert, stays quiet, and sends one resolved message on recovery."""
    p = make_pipeline(NODE_EXCEPTION, webhook_receiver)
    p.cycle()
    assert len(webhook_receiver.requests) == 1
    body = webhook_receiver.requests[0].json
    assert body["version"] == "1" and body["status"] == "firing" and body["group"] == "job_sms"
    (alert,) = body["alerts"]
    assert (alert["rule"], alert["job"], alert["node"], alert["node_type"], alert["state"]) == (
        "node-exception", "job_sms", "DLI_SMS_GES", "DLI SQL", "EXCEPTION")
    assert alert["status"] == "firing" and alert["ends_at"] is None and alert["severity"] == "critical"

    for _ in range(3):
        clock.advance(60)
        p.cycle()
    assert len(webhook_receiver.requests) == 1

    sim.set_node_status("job_sms", "DLI_SMS_GES", "NORMAL")
    clock.advance(60)
    p.cycle()
    clock.advance(60)
    p.cycle()
    assert len(webhook_receiver.requests) == 2
    resolved = webhook_receiver.requests[1].json
    assert resolved["status"] == "resolved"
    assert resolved["alerts"][0]["fingerprint"] == alert["fingerprint"]
    assert resolved["alerts"][0]["ends_at"] is not None


def test_restart_does_not_resend_a_firing_alert(make_pipeline, sim, clock, webhook_receiver) -> None:
    """A process restart between cycles sends nothing new for an alert that already fired."""
    p = make_pipeline(NODE_EXCEPTION, webhook_receiver)
    p.cycle()
    p.restart()
    clock.advance(60)
    p.cycle()
    assert len(webhook_receiver.requests) == 1


STUCK = """
[[rule]]
name = "job-stuck-starting"
scope = "job"
status = ["STARTING"]
for = "10m"

[[rule]]
name = "node-stuck-starting"
scope = "node"
nodes = ["DIS_INPUT"]
status = ["STARTTING"]
for = "10m"
"""


def test_starting_fires_after_for_and_restart_keeps_the_clock(make_pipeline, sim, clock, webhook_receiver) -> None:
    """STARTTING fires only once `for` has elapsed, and a restart in between does not reset the clock."""
    sim.set_job_status("job_sms", "STARTTING")
    sim.set_node_status("job_sms", "DIS_INPUT", "STARTTING")
    p = make_pipeline(STUCK, webhook_receiver)
    p.cycle()
    clock.advance(6 * 60)
    p.cycle()
    assert webhook_receiver.requests == []

    p.restart()
    clock.advance(3 * 60)  # 9 minutes in: still pending
    p.cycle()
    assert webhook_receiver.requests == []
    clock.advance(61)  # 10 min 1 s since both entered STARTTING
    p.cycle()
    fired = sorted((a["rule"], a["node"]) for a in alerts_of(webhook_receiver))
    assert fired == [("job-stuck-starting", None), ("node-stuck-starting", "DIS_INPUT")]


TRANSITION = """
[[rule]]
name = "job-stopped"
scope = "job"
transition = { from = ["NORMAL"], to = ["STOPPED", "STOPPING"] }
"""


def test_transition_rule_fires_once_per_transition(make_pipeline, sim, clock, webhook_receiver) -> None:
    """Each NORMAL -> STOPPED transition sends exactly one event; staying stopped sends nothing."""
    p = make_pipeline(TRANSITION, webhook_receiver)
    p.cycle()
    for status, expected in [("STOPPED", 1), ("STOPPED", 1), ("NORMAL", 1), ("STOPPED", 2), ("STOPPED", 2)]:
        sim.set_job_status("job_sms", status)
        clock.advance(60)
        p.cycle()
        assert len(webhook_receiver.requests) == expected, status
    event = alerts_of(webhook_receiver)[0]
    assert (event["rule"], event["state"], event["previous_state"]) == ("job-stopped", "STOPPED", "NORMAL")


STALLED = """
[[rule]]
name = "stream-stalled"
scope = "node"
status = ["NORMAL"]
nodes = ["DIS_INPUT"]
stalled = "totalPutRecords"
for = "15m"
"""


def test_stalled_rule_fires_when_counter_stops_for_the_duration(make_pipeline, sim, clock, webhook_receiver) -> None:
    """stream-stalled fires once totalPutRecords has not moved for 15 minutes, not before."""
    p = make_pipeline(STALLED, webhook_receiver)
    p.cycle()  # first sight of the counter
    clock.advance(10 * 60)
    sim.set_counters("job_sms", "DIS_INPUT", totalPutRecords=70342)
    p.cycle()  # it moved: the stall clock starts again here
    clock.advance(14 * 60)
    p.cycle()
    assert webhook_receiver.requests == []
    clock.advance(61)
    p.cycle()
    (alert,) = alerts_of(webhook_receiver)
    assert (alert["rule"], alert["node"], alert["state"]) == ("stream-stalled", "DIS_INPUT", "NORMAL")


@pytest.mark.parametrize("fault, kind", [
    ({"kind": "http_error", "status": 503}, "server"),
    ({"kind": "throttle", "retry_after": 1}, "throttled"),
    ({"kind": "html", "status": 200}, "bad_response"),
    ({"kind": "missing_status"}, "bad_response"),
], ids=["5xx", "429", "not-json", "no-status"])
def test_source_failure_keeps_alerts_and_sends_nothing(make_pipeline, sim, clock, webhook_receiver,
                                                       fault, kind) -> None:
    """A failed poll is an error for that job only: its firing alert is neither resolved nor re-sent."""
    p = make_pipeline(NODE_EXCEPTION, webhook_receiver)
    p.cycle()
    sim.set_fault("job_sms", **fault)
    clock.advance(60)
    report = p.cycle()
    assert [(e.job, e.kind) for e in report.errors] == [("job_sms", kind)]
    assert report.source_failed
    assert p.store.load_alerts() and len(webhook_receiver.requests) == 1

    sim.clear_faults()
    clock.advance(60)
    report = p.cycle()
    assert report.errors == () and len(webhook_receiver.requests) == 1


def test_unknown_job_is_an_error_for_that_job_only(make_pipeline, sim, clock, webhook_receiver) -> None:
    """400 DLF.0100 for one watched job does not stop the others from alerting."""
    p = make_pipeline(NODE_EXCEPTION, webhook_receiver, jobs='names = ["job_sms", "job_gone"]')
    report = p.cycle()
    assert [(e.job, e.kind, e.error_code) for e in report.errors] == [("job_gone", "not_found", "DLF.0100")]
    assert not report.source_failed
    assert len(webhook_receiver.requests) == 1


def test_channel_down_queues_then_delivers_each_once_in_order(make_pipeline, sim, clock) -> None:
    """While the webhook is down notifications queue; when it is back each is delivered once, in order."""
    hook = WebhookReceiver().start()
    port = hook.port
    url = hook.url
    hook.stop()
    p = make_pipeline(NODE_EXCEPTION + TRANSITION, url)
    p.cycle()  # node alert fires: queued, delivery fails
    for status in ("STOPPED", "NORMAL", "STOPPED"):
        sim.set_job_status("job_sms", status)
        clock.advance(60)
        p.cycle()
    pending = p.store.outbox.rows(("pending",))
    assert len(pending) == 3
    assert pending[0].attempts == 4 and all(r.attempts == 0 for r in pending[1:])  # order: later rows wait

    with WebhookReceiver(port=port) as back:
        clock.advance(3600)
        report = p.deliver()
        assert report.delivered == 3
        clock.advance(3600)
        p.deliver()
        p.cycle()
        kinds = [(r.json["alerts"][0]["rule"], r.headers["x-notifier-id"]) for r in back.requests]
    assert [k for k, _ in kinds] == ["node-exception", "job-stopped", "job-stopped"]
    instance = p.store.outbox.instance
    assert all(i.startswith(f"{instance}-") for _, i in kinds)
    ids = [int(i.rsplit("-", 1)[1]) for _, i in kinds]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert p.store.outbox.rows(("pending",)) == ()
