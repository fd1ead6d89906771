"""/metrics and /healthz over real loopback sockets, the Metrics figures, and [metrics] in notifier.toml."""

from __future__ import annotations

import platform
import re
import socket
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from notifier import __version__
from notifier.app import CycleReport
from notifier.config import MetricsConfig, load_config
from notifier.core.models import AlertState, EntityState, FetchError
from notifier.delivery import DeliveryReport
from notifier.errors import ConfigError
from notifier.metrics import Metrics, MetricsServer, outbox_gauges, serve
from notifier.outbox import NewNotification
from notifier.state import CycleWrite, StateStore
from tests.conftest import WriteConfig
from tests.pipeline_support import NODE_EXCEPTION, source_toml
from tests.support.fakes import FakeClock

INTERVAL = 60.0


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def server(metrics: Metrics, clock: FakeClock) -> Iterator[MetricsServer]:
    with serve("127.0.0.1:0", metrics, INTERVAL, clock) as handle:
        yield handle


def scrape(server: MetricsServer) -> dict[str, float]:
    """GET /metrics -> {'name{label="v",...}': value} for every sample."""
    response = httpx.get(f"{server.url}/metrics", timeout=5)
    assert response.status_code == 200
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def healthz(server: MetricsServer) -> tuple[int, str]:
    response = httpx.get(f"{server.url}/healthz", timeout=5)
    return response.status_code, response.text.strip()


def report(clock: FakeClock, **changes: object) -> CycleReport:
    values: dict[str, object] = dict(at=clock(), jobs=2, fetched=2, errors=(), transitions=3, notifications=1,
                                     firing=1, source_failed=False, requests=5, retries=1)
    values.update(changes)
    return CycleReport(**values)  # type: ignore[arg-type]


def view(clock: FakeClock) -> tuple[dict[str, AlertState], dict[tuple[str, str], EntityState]]:
    t = clock()
    entities = {e.key: e for e in (
        EntityState("job_a", "", "RUNNING", t), EntityState("job_b", "", "EXCEPTION", t),
        EntityState("job_a", "n1", "RUNNING", t), EntityState("job_a", "n2", "RUNNING", t),
        EntityState("job_b", "n1", "FAILED", t))}
    alerts = {"f1": AlertState("f1", "node-exception", "job_b", "n1", "firing", t),
              "f2": AlertState("f2", "job-stopped", "job_b", "", "pending", t)}
    return alerts, entities


def test_observe_cycle_moves_counters_and_sets_the_view(metrics: Metrics, server: MetricsServer,
                                                        clock: FakeClock) -> None:
    """A real CycleReport moves the cycle, request, retry and fetch-error counters and sets the gauges."""
    alerts, entities = view(clock)
    errors = (FetchError("job_c", "throttled", "429 Too Many Requests", status_code=429, error_code="APIGW.0308"),
              FetchError("job_d", "timeout", "timed out"))
    severity = {"node-exception": "critical", "job-stopped": "warning"}
    metrics.observe_cycle(report(clock, errors=errors), 1.5, alerts, entities, severity)
    metrics.observe_cycle(report(clock, source_failed=True, source_failures=1), 0.2, {}, entities)
    got = scrape(server)
    assert got['notifier_cycles_total{outcome="ok"}'] == 1
    assert got['notifier_cycles_total{outcome="source_failed"}'] == 1
    assert got['notifier_cycles_total{outcome="error"}'] == 0
    assert got["notifier_cycle_duration_seconds_count"] == 2
    assert got["notifier_cycle_duration_seconds_sum"] == pytest.approx(1.7)
    assert got['notifier_api_requests_total{source="default"}'] == 10
    assert got['notifier_api_retries_total{source="default"}'] == 2
    assert got["notifier_transitions_total"] == 6 and got["notifier_notifications_queued_total"] == 2
    assert got['notifier_fetch_errors_total{error_code="APIGW.0308",kind="throttled",status_code="429"}'] == 1
    assert got['notifier_fetch_errors_total{error_code="",kind="timeout",status_code=""}'] == 1
    assert got['notifier_jobs{status="RUNNING"}'] == 1 and got['notifier_jobs{status="EXCEPTION"}'] == 1
    assert got['notifier_nodes{status="RUNNING"}'] == 2 and got['notifier_nodes{status="FAILED"}'] == 1
    assert not [k for k in got if k.startswith("notifier_alerts{")]  # the latest view has no alerts
    assert got['notifier_source_failing_cycles{source="default"}'] == 1
    assert got["notifier_last_successful_cycle_timestamp_seconds"] == pytest.approx(clock().timestamp() + 1.5)
    assert got[f'notifier_build_info{{python="{platform.python_version()}",version="{__version__}"}}'] == 1


def test_alert_gauge_carries_rule_severity_and_phase(metrics: Metrics, server: MetricsServer,
                                                     clock: FakeClock) -> None:
    """Alerts are counted by rule, the rule's severity (from the mapping; '' when unknown) and phase."""
    alerts, entities = view(clock)
    metrics.observe_cycle(report(clock), 1.0, alerts, entities, {"node-exception": "critical"})
    got = scrape(server)
    assert got['notifier_alerts{phase="firing",rule="node-exception",severity="critical"}'] == 1
    assert got['notifier_alerts{phase="pending",rule="job-stopped",severity=""}'] == 1


def test_delivery_and_outbox_gauges(metrics: Metrics, server: MetricsServer, store: StateStore,
                                    clock: FakeClock) -> None:
    """Delivery totals count by outcome; outbox_gauges reads queued rows and the oldest age per channel."""
    metrics.observe_delivery(DeliveryReport(delivered=3, retried=2, failed=1, expired=1))
    store.commit_cycle(CycleWrite(at=clock(), notifications=(
        NewNotification("slack", "job_a", {"text": "1"}), NewNotification("slack", "job_a", {"text": "2"}))))
    clock.advance(30)
    store.commit_cycle(CycleWrite(at=clock(), notifications=(NewNotification("mail", "job_a", {"text": "3"}),)))
    clock.advance(12)
    queued, oldest = outbox_gauges(store.outbox, clock(), ("slack", "mail", "hook"))
    assert queued == {"slack": 2, "mail": 1, "hook": 0} and oldest == {"slack": 42.0, "mail": 12.0, "hook": 0.0}
    metrics.observe_outbox(queued, oldest)
    got = scrape(server)
    assert got['notifier_notifications_total{outcome="delivered"}'] == 3
    assert got['notifier_notifications_total{outcome="failed"}'] == 1
    assert got['notifier_notifications_total{outcome="expired"}'] == 1
    assert got["notifier_notification_retries_total"] == 2
    assert got['notifier_outbox_queued{channel="slack"}'] == 2 and got['notifier_outbox_queued{channel="hook"}'] == 0
    assert got['notifier_outbox_oldest_age_seconds{channel="slack"}'] == 42.0


def test_healthz_starting_ok_then_stale(metrics: Metrics, server: MetricsServer, clock: FakeClock) -> None:
    """503 "starting" before any cycle, 200 after a good one, 503 with the age once 3 intervals have passed."""
    assert healthz(server) == (503, "starting")
    metrics.observe_cycle(report(clock), 2.0, {}, {})
    clock.advance(14)
    assert healthz(server) == (200, "ok: last successful cycle 12s ago")
    clock.advance(3 * INTERVAL - 12 - 1)
    assert healthz(server)[0] == 200
    clock.advance(14)
    assert healthz(server) == (503, "no successful cycle for 3m13s (interval 1m): "
                                    "no cycle has finished since (is one stuck?)")


def test_healthz_quotes_the_last_error(metrics: Metrics, server: MetricsServer, clock: FakeClock) -> None:
    """Once stale, /healthz says why: the source's error, or the exception a cycle raised."""
    metrics.observe_cycle(report(clock), 0.0, {}, {})
    clock.advance(120)
    metrics.observe_cycle(report(clock, source_failed=True, fetched=0, errors=(
        FetchError("job_a", "server", "HTTP 503 from DGC\nbody"),)), 0.5, {}, {})
    clock.advance(72)
    assert healthz(server) == (503, "no successful cycle for 3m12s (interval 1m): "
                                    "last error: the source failed: HTTP 503 from DGC body")
    metrics.cycle_failed("state file not writable: disk I/O error")
    status, text = healthz(server)
    assert status == 503 and text.endswith("last error: state file not writable: disk I/O error")
    assert scrape(server)['notifier_cycles_total{outcome="error"}'] == 1


def test_healthz_without_any_successful_cycle(metrics: Metrics, server: MetricsServer) -> None:
    """Cycles ran but none succeeded: 503 at once, with the error (not "starting")."""
    metrics.cycle_failed("boom")
    assert healthz(server) == (503, "no successful cycle yet (1 tried, interval 1m): last error: boom")


def test_every_metric_name_starts_with_notifier(metrics: Metrics, server: MetricsServer, clock: FakeClock) -> None:
    """The exposition holds only notifier_* names (a dedicated registry: no process or GC collectors)."""
    alerts, entities = view(clock)
    metrics.observe_cycle(report(clock, errors=(FetchError("j", "auth", "refused", 401),)), 1.0, alerts, entities)
    metrics.observe_delivery(DeliveryReport(delivered=1))
    metrics.observe_outbox({"slack": 1}, {"slack": 3.0})
    families = list(text_string_to_metric_families(httpx.get(f"{server.url}/metrics", timeout=5).text))
    names = {s.name for f in families for s in f.samples}
    assert len(families) >= 15
    assert names and all(n.startswith("notifier_") for n in names), sorted(n for n in names
                                                                          if not n.startswith("notifier_"))
    assert Metrics().exposition().count("notifier_build_info{") == 1  # two instances never share a registry


def test_unknown_path_is_404(server: MetricsServer) -> None:
    """Only /metrics and /healthz are served."""
    response = httpx.get(f"{server.url}/", timeout=5)
    assert response.status_code == 404 and "/healthz" in response.text


def test_close_frees_the_port(metrics: Metrics, clock: FakeClock) -> None:
    """After close() the port can be bound again at once, and close() twice is harmless."""
    handle = serve("127.0.0.1:0", metrics, INTERVAL, clock)
    port = handle.port
    assert httpx.get(f"{handle.url}/healthz", timeout=5).status_code == 503
    handle.close()
    handle.close()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    again = serve(f"127.0.0.1:{port}", metrics, INTERVAL, clock)
    try:
        assert again.port == port
    finally:
        again.close()


# --- [metrics] in notifier.toml ------------------------------------------------------

SOURCE = source_toml("http://127.0.0.1:9")
CHANNELS = '[channels.stdout]\ntype = "console"\n'


def test_metrics_are_off_by_default_and_listen_is_read(write_config: WriteConfig) -> None:
    """No [metrics] table: off (listen None); listen = "HOST:PORT" is kept as written."""
    path = write_config(source=SOURCE, rules=NODE_EXCEPTION, channels=CHANNELS)
    assert load_config(path).metrics == MetricsConfig(listen=None)
    for listen in ("127.0.0.1:9464", "[::1]:9464", "0.0.0.0:9100", "localhost:9464"):
        path = write_config(source=SOURCE, rules=NODE_EXCEPTION, channels=CHANNELS,
                            extra=f'[metrics]\nlisten = "{listen}"\n')
        assert load_config(path).metrics.listen == listen


@pytest.mark.parametrize(("extra", "key", "message"), [
    ('listen = "9464"', "listen", 'a port without a host: say "127.0.0.1:9464"'),
    ('listen = "localhost"', "listen", "no port"),
    ('listen = ":9464"', "listen", "expected a host"),
    ('listen = "127.0.0.1:0"', "listen", "port from 1 to 65535"),
    ('listen = "127.0.0.1:70000"', "listen", "port from 1 to 65535"),
    ('listen = "127.0.0.1:http"', "listen", "port from 1 to 65535"),
    ('listen = "::1:9464"', "listen", "IPv6 address goes in brackets"),
    ("listen = 9464", "listen", "expected a string"),
    ('listn = "127.0.0.1:9464"', "listn", "unknown key"),
], ids=["port-only", "host-only", "no-host", "port-0", "port-too-big", "port-name", "ipv6-unbracketed",
        "not-a-string", "typo"])
def test_config_errors_name_file_table_and_key(write_config: WriteConfig, extra: str, key: str,
                                               message: str) -> None:
    """A bad [metrics] listen is a ConfigError naming notifier.toml, the metrics table and the key."""
    path = write_config(source=SOURCE, rules=NODE_EXCEPTION, channels=CHANNELS, extra=f"[metrics]\n{extra}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    error = info.value
    assert (error.file, error.where, error.key) == (str(path), "metrics", key)
    assert re.search(message, error.detail), error.detail


def test_serve_refuses_an_address_in_use(metrics: Metrics, server: MetricsServer, clock: FakeClock) -> None:
    """A port already taken is an OSError at start, not a silent thread death."""
    with pytest.raises(OSError):
        serve(f"127.0.0.1:{server.port}", metrics, INTERVAL, clock).close()


def test_health_line_uses_compact_durations(metrics: Metrics, clock: FakeClock) -> None:
    """Ages read 1h5m, not "1h 5m": one token each in a log line or a probe's output."""
    metrics.observe_cycle(report(clock), 0.0, {}, {})
    ok, text = metrics.health(clock() + timedelta(hours=1, minutes=5), 3600)
    assert ok and text == "ok: last successful cycle 1h5m ago"
