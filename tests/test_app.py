"""The assembled App: one wiring for once, run and tests; reload swaps it whole; cycles report what they cost."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from notifier.app import App
from notifier.errors import ConfigError, StateError
from notifier.simulator import ManualClock, Simulator, load_scenario
from notifier.state import SOURCE_FAILURES_KEY
from tests.pipeline_support import NODE_EXCEPTION, LinkedClock, Pipeline, source_toml, webhook_toml
from tests.support.smtp_server import free_port
from tests.support.webhook_receiver import WebhookReceiver

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(load_scenario("seed"), clock=ManualClock()) as s:
        yield s


@pytest.fixture
def pipeline(write_config, sim: Simulator, webhook_receiver: WebhookReceiver) -> Iterator[Pipeline]:  # type: ignore[no-untyped-def]
    path = write_config(source=source_toml(sim.url), rules=NODE_EXCEPTION, channels=webhook_toml(webhook_receiver.url))
    p = Pipeline(path, LinkedClock(sim))
    yield p
    p.close()


def test_a_cycle_reports_the_requests_it_sent(pipeline: Pipeline) -> None:
    """One job polled once: the report counts one status request and no retry (the client's counters, per cycle)."""
    first = pipeline.cycle()
    second = pipeline.cycle()
    assert (first.requests, first.retries) == (1, 0)
    assert (second.requests, second.retries) == (1, 0)


def test_consecutive_source_failures_are_counted_persisted_and_reset(write_config) -> None:  # type: ignore[no-untyped-def]
    """Each failed cycle adds one to the count in the state file; a restart continues it."""
    path = write_config(source=source_toml(f"http://127.0.0.1:{free_port()}"), rules=NODE_EXCEPTION,
                        channels='[channels.stdout]\ntype = "console"\n')

    async def cycles(n: int) -> list[int]:
        app = await App.open(path)
        try:
            return [(await app.cycle()).source_failures for _ in range(n)]
        finally:
            await app.aclose()

    assert asyncio.run(cycles(2)) == [1, 2]
    assert asyncio.run(cycles(1)) == [3]  # a new process reads the count back
    result = subprocess.run([sys.executable, "-m", "notifier", "alerts", "-c", str(path)], capture_output=True,
                            text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "SOURCE FAILING: the last 3 cycles could not read the API" in result.stdout
    assert "POLLING" not in result.stdout  # a failed cycle measures no sweep: nothing to show before a good one


def test_a_good_cycle_resets_the_failure_count(pipeline: Pipeline) -> None:
    """The count is 0 after a cycle that read the API, on disk as in the report."""
    report = pipeline.cycle()
    assert report.source_failures == 0 and not report.source_failed
    assert pipeline.store.get_meta(SOURCE_FAILURES_KEY) == "0"


def test_reload_swaps_the_whole_wiring_and_closes_the_old_one(pipeline: Pipeline, write_config,  # type: ignore[no-untyped-def]
                                                               sim: Simulator) -> None:
    """After adopt(load()), cycles use the new rules and channels; the old client is closed."""
    app = pipeline.app
    old = app.wiring
    with WebhookReceiver() as other:
        write_config(source=source_toml(sim.url), rules=NODE_EXCEPTION.replace('"critical"', '"warning"'),
                     channels=webhook_toml(other.url))
        new = app.load()
        assert app.adopt(new) is old
        assert app.wiring is new and app.deliverer.channels == new.channels
        pipeline.run(app.retire(old))
        assert old.client._http.is_closed  # the replaced client let go of its connections
        pipeline.cycle()
        (request,) = other.requests
        assert request.json["alerts"][0]["severity"] == "warning"


def test_a_bad_reload_raises_and_leaves_the_running_wiring(pipeline: Pipeline, write_config,  # type: ignore[no-untyped-def]
                                                            sim: Simulator, webhook_receiver: WebhookReceiver) -> None:
    """load() of a broken rule file raises ConfigError; nothing was swapped, the next cycle still alerts."""
    app = pipeline.app
    running = app.wiring
    write_config(source=source_toml(sim.url), rules=NODE_EXCEPTION + 'severty = "x"\n',
                 channels=webhook_toml(webhook_receiver.url))
    with pytest.raises(ConfigError, match="severty"):
        app.load()
    assert app.wiring is running
    pipeline.cycle()
    assert len(webhook_receiver.requests) == 1


def test_a_second_app_on_the_same_state_file_is_refused(pipeline: Pipeline) -> None:
    """Two processes on one outbox could double-send: the second App fails on the lock and leaves nothing open."""
    with pytest.raises(StateError, match="another notifier process"):
        pipeline.run(App.open(pipeline.config_path))
    pipeline.cycle()  # the first one is unaffected


def test_five_nodes_failing_in_one_cycle_are_one_message(pipeline: Pipeline, sim: Simulator,
                                                          webhook_receiver: WebhookReceiver) -> None:
    """Alerts of one job that fire in the same cycle go out grouped: one webhook request with all five."""
    pipeline.cycle()  # DLI_SMS_GES fires alone
    nodes = ["CREATE_GES_DIR", "CS_SMS_PROCESS", "DIS_EVENT", "DIS_INPUT", "DLI_SMS_PROCESS"]  # the seed's others
    for node in nodes:
        sim.set_node_status("job_sms", node, "EXCEPTION")
    pipeline.clock.advance(60)
    pipeline.cycle()
    assert len(webhook_receiver.requests) == 2
    grouped = webhook_receiver.requests[1].json
    assert grouped["group"] == "job_sms" and sorted(a["node"] for a in grouped["alerts"]) == nodes
