"""`notifier run` with [metrics] listen: /metrics moves with the cycles, /healthz turns 503 when the source hangs."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import httpx
import pytest

from notifier.simulator import Simulator, load_scenario
from tests.pipeline_support import NODE_EXCEPTION
from tests.support.smtp_server import free_port
from tests.test_cli import spawn, wait_until


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(load_scenario("seed")) as s:
        yield s


def sample(text: str, name: str) -> float:
    """The value of a sample (``name`` with its labels, if any) in Prometheus' text format."""
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


def test_metrics_move_and_healthz_turns_503_when_the_source_hangs(write_config, sim: Simulator) -> None:  # type: ignore[no-untyped-def]
    """Cycles and requests count up on /metrics; /healthz is 200, then 503 with a reason past 3 intervals."""
    port = free_port()
    config = write_config(
        source=(f'[source]\nendpoint = "{sim.url}"\nproject_id = "b384b9e9ab9b4ee8994c8633aabc9505"\n'
                'auth = "none"\ntimeout = "20s"\nretries = 0\n\n[schedule]\ninterval = "1s"\n'),
        rules=NODE_EXCEPTION, channels='[channels.stdout]\ntype = "console"\n',
        extra=f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    base = f"http://127.0.0.1:{port}"
    proc = spawn("run", "-c", str(config))
    try:
        def scrape() -> str:
            try:
                return httpx.get(f"{base}/metrics", timeout=2).text
            except httpx.HTTPError:
                return ""
        wait_until(lambda: "notifier_cycles_total{outcome=\"ok\"}" in scrape(), what="a cycle on /metrics")
        requests = 'notifier_api_requests_total{source="default"}'
        before = sample(scrape(), requests)
        wait_until(lambda: sample(scrape(), requests) >= before + 2, what="requests counting up")
        assert 'notifier_alerts{phase="firing",rule="node-exception",severity="critical"} 1.0' in scrape()
        ok = httpx.get(f"{base}/healthz", timeout=2)
        assert ok.status_code == 200 and ok.text.startswith("ok: last successful cycle")
        sim.set_fault(kind="latency", delay=5.0)  # every status request now hangs 5 s: > 3 intervals
        wait_until(lambda: httpx.get(f"{base}/healthz", timeout=2).status_code == 503, timeout=20,
                   what="/healthz 503")
        down = httpx.get(f"{base}/healthz", timeout=2)
        assert down.text.startswith("no successful cycle for ") and "(interval 1s)" in down.text
        sim.clear_faults()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=40)
    assert proc.returncode == 0
