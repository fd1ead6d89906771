"""The Alertmanager channel against a real Alertmanager (Debian's prometheus-alertmanager), driven end to end.

The bundled simulator plays DataArts (its scenario clock starts two minutes ago, so the times
notifier posts are today's, which Alertmanager judges against its own clock); notifier runs on the
injectable clock, moved by seconds only. Waiting is only ever for Alertmanager, an external
process: a polling loop with a deadline (``wait_until``). Without the binary these tests
skip with one line saying how to install it; in CI they fail.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from notifier.simulator import ManualClock, Simulator, load_scenario
from tests.conftest import WriteConfig
from tests.pipeline_support import NODE_EXCEPTION, LinkedClock, Pipeline, source_toml
from tests.support.alertmanager import AlertmanagerProcess, alertmanager_binary, notifications, wait_until
from tests.support.webhook_receiver import WebhookReceiver

alertmanager_binary()  # none: the module is skipped in one line saying how to install it (fails in CI)

PROJECT = "b384b9e9ab9b4ee8994c8633aabc9505"
NODE = "DLI_SMS_GES"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """The API document's example (job_sms, node DLI_SMS_GES in EXCEPTION), its scenario time starting 2 min ago.

    So notifier's clock, which the tests move by seconds, stays behind Alertmanager's: a resolve
    (endsAt = notifier's now) is in Alertmanager's past at once, as it is in production.
    """
    scenario = replace(load_scenario("seed"), epoch_start_ms=int(time.time() * 1000) - 120_000)
    with Simulator(scenario, clock=ManualClock()) as s:
        yield s


@pytest.fixture
def clock(sim: Simulator) -> LinkedClock:
    return LinkedClock(sim)


@pytest.fixture
def make(write_config: WriteConfig, sim: Simulator, clock: LinkedClock) -> Iterator[Any]:
    """Pipelines whose one channel is an Alertmanager channel posting to ``urls``."""
    made: list[Pipeline] = []

    def build(*urls: str) -> Pipeline:
        listed = ", ".join(f'"{u}"' for u in urls)
        channels = (f'[channels.am]\ntype = "alertmanager"\nurls = [{listed}]\nlabels = {{ team = "data" }}\n'
                    'generator_url = "https://notifier.example/alerts/{fingerprint}"\n')
        path = write_config(source=source_toml(sim.url), rules=NODE_EXCEPTION, channels=channels)
        made.append(Pipeline(path, clock))
        return made[-1]

    yield build
    for p in made:
        p.close()


def active(am: AlertmanagerProcess) -> dict[str, dict[str, Any]]:
    """Alerts Alertmanager holds that have not ended, by node."""
    return {a["labels"].get("node", ""): a for a in am.alerts()}


def test_a_node_in_exception_reaches_alertmanager_and_its_notification_is_grouped_by_job(
        make: Any, alertmanager: AlertmanagerProcess, am_receiver: WebhookReceiver) -> None:
    """The alert is in GET /api/v2/alerts with every label; Alertmanager notifies its receiver, grouped by job."""
    p = make(alertmanager.url)
    p.cycle()
    held = wait_until(lambda: active(alertmanager).get(NODE), "the alert in Alertmanager")
    assert held["labels"] == {"alertname": "node-exception", "job": "job_sms", "node": NODE, "node_type": "DLI SQL",
                              "severity": "critical", "source": "default", "project_id": PROJECT, "team": "data"}
    assert held["status"]["state"] == "active"
    assert held["annotations"]["state"] == "EXCEPTION" and "EXCEPTION" in held["annotations"]["summary"]
    assert held["generatorURL"].startswith("https://notifier.example/alerts/")
    (message,) = wait_until(lambda: notifications(am_receiver), "Alertmanager's webhook notification")
    assert message["status"] == "firing" and message["groupLabels"] == {"job": "job_sms"}
    assert [a["labels"]["node"] for a in message["alerts"]] == [NODE]


def test_a_recovery_resolves_it_in_alertmanager_and_the_resolved_notification_arrives(
        make: Any, sim: Simulator, clock: LinkedClock, alertmanager: AlertmanagerProcess,
        am_receiver: WebhookReceiver) -> None:
    """Back to NORMAL: the next cycle posts endsAt = now, Alertmanager drops it and notifies "resolved"."""
    p = make(alertmanager.url)
    p.cycle()
    wait_until(lambda: notifications(am_receiver), "the firing notification")
    sim.set_node_status("job_sms", NODE, "NORMAL")
    clock.advance(1)
    p.cycle()
    wait_until(lambda: NODE not in active(alertmanager), "the alert to end in Alertmanager")
    resolved = wait_until(lambda: [m for m in notifications(am_receiver) if m["status"] == "resolved"],
                          "the resolved notification")
    assert resolved[0]["groupLabels"] == {"job": "job_sms"}
    assert resolved[0]["alerts"][0]["annotations"]["state"] == "NORMAL"


def test_an_alertmanager_silence_mutes_the_alert_there(make: Any, alertmanager: AlertmanagerProcess,
                                                        am_receiver: WebhookReceiver) -> None:
    """A silence made through Alertmanager's API: the alert shows as suppressed, silenced by it, and no
    notification goes out for it."""
    silence = alertmanager.silence({"alertname": "node-exception", "job": "job_sms"})
    p = make(alertmanager.url)
    p.cycle()
    held = wait_until(lambda: active(alertmanager).get(NODE), "the alert in Alertmanager")
    assert held["status"]["state"] == "suppressed" and held["status"]["silencedBy"] == [silence]
    time.sleep(2.5)  # Alertmanager's own group_wait (1 s) and group_interval (1 s) pass: nothing may arrive
    assert notifications(am_receiver) == []


def test_an_alertmanager_that_was_down_gets_the_latest_state_in_one_post(
        make: Any, sim: Simulator, clock: LinkedClock, alertmanager: AlertmanagerProcess) -> None:
    """Rounds of changes while it is down leave one row; back up, one post: the new alert fires, the old is gone."""
    p = make(alertmanager.url)
    alertmanager.stop()
    p.cycle()  # DLI_SMS_GES fires: the post is refused
    sim.set_node_status("job_sms", "DIS_INPUT", "EXCEPTION")
    clock.advance(1)
    p.cycle()
    sim.set_node_status("job_sms", NODE, "NORMAL")
    clock.advance(1)
    p.cycle()
    assert len(p.store.outbox.rows(("pending",))) == 1 and len(p.store.outbox.rows(("superseded",))) == 2
    alertmanager.start()  # Alertmanager keeps no alerts across a restart: all it knows comes from this post
    clock.advance(30)  # past the row's retry backoff
    p.deliver()
    wait_until(lambda: "DIS_INPUT" in active(alertmanager), "the latest state in Alertmanager")
    assert set(active(alertmanager)) == {"DIS_INPUT"}
    assert alertmanager.alerts_received() == {"firing": 1.0, "resolved": 1.0}  # one post of two alerts


def test_an_ha_pair_both_get_every_alert_and_the_one_that_missed_it_gets_the_retry(
        make: Any, clock: LinkedClock, alertmanager_bin: str, tmp_path: Path, am_receiver: WebhookReceiver) -> None:
    """Two independent Alertmanagers (no gossip) both hold the alert; the one down at first gets it on retry,
    and the one that already had it is not posted again."""
    with AlertmanagerProcess(alertmanager_bin, tmp_path / "a", am_receiver.url) as first, \
            AlertmanagerProcess(alertmanager_bin, tmp_path / "b", am_receiver.url) as second:
        p = make(first.url, second.url)
        second.stop()
        p.cycle()
        wait_until(lambda: NODE in active(first), "the alert in the first Alertmanager")
        (waiting,) = p.store.outbox.rows(("pending",))
        assert "1 of 2 Alertmanagers did not accept" in (waiting.last_error or "")
        second.start()
        clock.advance(5)  # past the retry backoff, short of the next re-post
        p.deliver()
        wait_until(lambda: NODE in active(second), "the alert in the second Alertmanager")
        assert first.alerts_received() == {"firing": 1.0, "resolved": 0.0}
        assert second.alerts_received() == {"firing": 1.0, "resolved": 0.0}
        assert p.store.outbox.rows(("pending",)) == ()
