"""Prometheus metrics and a health check: ``/metrics`` and ``/healthz`` on one port (``[metrics] listen``).

``Metrics`` owns a dedicated ``CollectorRegistry`` (never the global one, so tests and two
apps in one process never share counters). Every name starts with ``notifier_``. Counters
and the cycle histogram move on each ``observe_*`` call; the gauges that describe a view
(jobs and nodes by status, alerts, the outbox) are replaced whole on each call, so a
scrape never sees half of one cycle and a status that disappeared stops being exported.

``serve`` runs a small threaded WSGI server (wsgiref + prometheus_client's
``make_wsgi_app``) in a daemon thread: ``GET /metrics`` is the exposition text,
``GET /healthz`` is 200 ``ok: last successful cycle 12s ago`` while the last successful
cycle finished less than 3 intervals ago, else 503 with one line saying why
(``no successful cycle for 3m12s (interval 60s): last error: ...``; ``starting`` before
the first cycle). ``handle.close()`` stops it and frees the port.

The daemon calls ``observe_cycle`` after each cycle, ``cycle_failed`` when one fails, and
``observe_delivery`` + ``observe_outbox(*outbox_gauges(...))`` after each delivery round.

``observe_cycle`` walks the remembered entities once (about 40 ms for 110,000, the
10,000-job case): with big fleets call it through ``asyncio.to_thread`` after ``app.cycle``
returns (the view it reads is immutable once adopted). Every method is thread-safe.
``outbox_gauges`` is one SQLite read on the store's connection: call it in the delivery
round's worker thread, not on the event loop.

Notification counters are totals over all channels: ``DeliveryReport`` has no per-channel
counts. The outbox gauges are per channel.
"""

from __future__ import annotations

import collections
import logging
import platform
import socket
import socketserver
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from notifier import __version__
from notifier.clock import utcnow
from notifier.config import parse_listen
from notifier.core.durations import format_duration
from notifier.core.models import AlertState, Clock, EntityKey, EntityState, Rule
from notifier.httputil import excerpt

if TYPE_CHECKING:
    from notifier.app import CycleReport
    from notifier.delivery import DeliveryReport
    from notifier.outbox import Outbox

log = logging.getLogger(__name__)

HEALTHY_INTERVALS = 3
"""``/healthz`` is 200 while the last successful cycle finished less than this many intervals ago."""

CYCLE_OUTCOMES = ("ok", "source_failed", "error")
DELIVERY_OUTCOMES = ("delivered", "failed", "expired")
CYCLE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def severities(rules: Iterable[Rule]) -> dict[str, str]:
    """rule name -> severity, for ``observe_cycle`` (pass ``runtime.all_rules``: the meta rules too)."""
    return {rule.name: rule.severity for rule in rules}


def outbox_gauges(outbox: Outbox, now: datetime, channels: Iterable[str] = ()
                  ) -> tuple[dict[str, int], dict[str, float]]:
    """Queued rows and the oldest one's age in seconds, per channel; ``channels`` listed with 0 when empty."""
    queued = {name: 0 for name in channels}
    oldest = dict.fromkeys(queued, 0.0)
    for channel, (count, created_at) in outbox.queued().items():
        queued[channel] = count
        oldest[channel] = max(0.0, (now - created_at).total_seconds())
    return queued, oldest


@dataclass(frozen=True, slots=True)
class _Family:
    """One gauge family of a view: its help, label names and a value per label tuple."""

    help: str
    labels: tuple[str, ...]
    values: Mapping[tuple[str, ...], float]


class _ViewCollector(Collector):
    """Gauges replaced whole (per family) under a lock: a scrape sees one cycle's view or the next's."""

    def __init__(self, families: Mapping[str, _Family]) -> None:
        self._lock = threading.Lock()
        self._families = dict(families)

    def set(self, name: str, values: Mapping[tuple[str, ...], float]) -> None:
        with self._lock:
            family = self._families[name]
            self._families[name] = _Family(family.help, family.labels, dict(values))

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            families = dict(self._families)
        for name, family in families.items():
            metric = GaugeMetricFamily(name, family.help, labels=family.labels)
            for labels, value in sorted(family.values.items()):
                metric.add_metric(labels, value)
            yield metric

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(name, f.help, labels=f.labels) for name, f in self._families.items()]


_VIEW = {
    "notifier_jobs": _Family("Watched jobs by their last known status.", ("status",), {}),
    "notifier_nodes": _Family("Nodes of the watched jobs by their last known status.", ("status",), {}),
    "notifier_alerts": _Family("Active alerts (pending or firing) by rule, severity and phase.",
                               ("rule", "severity", "phase"), {}),
    "notifier_outbox_queued": _Family("Notifications waiting in the outbox, per channel.", ("channel",), {}),
    "notifier_outbox_oldest_age_seconds": _Family(
        "Age of the oldest queued notification per channel, as of the last delivery round (0: none).",
        ("channel",), {}),
    "notifier_last_successful_cycle_timestamp_seconds": _Family(
        "When the last cycle with a working source finished (Unix time; absent before the first).", (), {}),
    "notifier_source_failing_cycles": _Family("Cycles in a row the source has failed (0: it works).",
                                              ("source",), {}),
    "notifier_sweep_oldest_fetch_seconds": _Family(
        "Seconds since the least recently fetched watched job's status was fetched, at the end of the last cycle "
        "(the achieved sweep), per source.", ("source",), {}),
    "notifier_sweep_target_seconds": _Family(
        "The sweep the fetch planner keeps: [schedule] full_sweep, or the fastest the request budget allows, per "
        "source.", ("source",), {}),
}


ERROR_CHARS = 300
"""The last error quoted by /healthz, as one line of at most this many characters."""


class Metrics:
    """Every figure notifier exports, on its own registry; fed by the daemon after cycles and deliveries."""

    def __init__(self, *, version: str = __version__) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._lock = threading.Lock()
        self._last_success: datetime | None = None  # when the last ok cycle finished
        self._last_error: str | None = None  # why the latest cycle was not ok (None: it was)
        self._attempts = 0  # cycles observed, ok or not
        self._slowest = 0.0  # seconds the slowest recent cycle took: a long sweep is not "unhealthy"

        build = Gauge("notifier_build_info", "notifier's version (always 1).", ("version", "python"), registry=r)
        build.labels(version, platform.python_version()).set(1)
        self.cycles = Counter("notifier_cycles", "Poll cycles by outcome: ok, source_failed (the cycle ran but "
                              "the source failed), error (the cycle raised).", ("outcome",), registry=r)
        for outcome in CYCLE_OUTCOMES:
            self.cycles.labels(outcome)
        self.cycle_duration = Histogram("notifier_cycle_duration_seconds", "Wall time of a completed poll cycle.",
                                        buckets=CYCLE_BUCKETS, registry=r)
        self.api_requests = Counter("notifier_api_requests", "HTTP requests sent to the DGC API, retries "
                                    "included, per source.", ("source",), registry=r)
        self.api_retries = Counter("notifier_api_retries", "HTTP requests to the DGC API that were retries, per "
                                   "source.", ("source",), registry=r)
        self.api_throttled = Counter("notifier_api_throttled", "DGC API answers refused for the user's rate limit "
                                     "(APIG.0308, 429); each one slowed every request of the source's user.",
                                     ("source",), registry=r)
        self.fetch_errors = Counter("notifier_fetch_errors", "Jobs whose status could not be fetched, by error "
                                    "kind, HTTP status and DGC error code ('' when none).",
                                    ("kind", "status_code", "error_code"), registry=r)
        self.transitions = Counter("notifier_transitions", "Entity status changes seen.", registry=r)
        self.queued = Counter("notifier_notifications_queued", "Notifications put in the outbox by cycles.",
                              registry=r)
        self.notifications = Counter("notifier_notifications", "Outbox rows finished, by outcome (all channels "
                                     "together).", ("outcome",), registry=r)
        for outcome in DELIVERY_OUTCOMES:
            self.notifications.labels(outcome)
        self.retries = Counter("notifier_notification_retries", "Failed sends that will be tried again (all "
                               "channels together).", registry=r)
        self._view = _ViewCollector(_VIEW)
        self._view.set("notifier_source_failing_cycles", {})
        self._sweeps: dict[str, tuple[float | None, float | None]] = {}  # source -> (oldest, target) last seen
        self._failing: dict[str, int] = {}  # source -> cycles in a row it failed, as its last cycle said
        r.register(self._view)

    # --- fed by the daemon ------------------------------------------------------------

    def observe_cycle(self, report: CycleReport, duration_s: float, alerts: Mapping[str, AlertState],
                      entities: Mapping[EntityKey, EntityState], severity: Mapping[str, str] | None = None,
                      sources: Collection[str] | None = None) -> None:
        """A cycle completed (``app.cycle`` returned): count it and replace the view gauges.

        A source missing from ``report`` (still polling) keeps its last per-source figures;
        one missing from ``sources`` (the configured ones, when given) loses them.
        """
        if sources is not None:
            self._failing = {n: f for n, f in self._failing.items() if n in sources}
            self._sweeps = {n: v for n, v in self._sweeps.items() if n in sources}
        outcome = "source_failed" if report.source_failed else "ok"
        with self._lock:
            self._slowest = max(duration_s, 0.9 * self._slowest)  # forgets a one-off slow cycle slowly
        finished = report.at + timedelta(seconds=max(0.0, duration_s))
        self.cycles.labels(outcome).inc()
        self.cycle_duration.observe(max(0.0, duration_s))
        per_source = report.sources or {report.source: report}
        for name, one in per_source.items():
            self.api_requests.labels(name).inc(one.requests)
            self.api_retries.labels(name).inc(one.retries)
            self.api_throttled.labels(name).inc(one.throttled)
        self.transitions.inc(report.transitions)
        self.queued.inc(report.notifications)
        for error in report.errors:
            self.fetch_errors.labels(error.kind, "" if error.status_code is None else str(error.status_code),
                                     error.error_code or "").inc()

        jobs: collections.Counter[str] = collections.Counter()
        nodes: collections.Counter[str] = collections.Counter()
        for entity in entities.values():
            (nodes if entity.node else jobs)[entity.status] += 1
        by_rule: collections.Counter[tuple[str, ...]] = collections.Counter()
        sev = severity or {}
        for alert in alerts.values():
            by_rule[(alert.rule, sev.get(alert.rule, ""), alert.phase)] += 1
        self._view.set("notifier_jobs", {(s,): n for s, n in jobs.items()})
        self._view.set("notifier_nodes", {(s,): n for s, n in nodes.items()})
        self._view.set("notifier_alerts", dict(by_rule))
        self._failing.update((n, r.source_failures) for n, r in per_source.items())  # a late source keeps its own
        self._view.set("notifier_source_failing_cycles", {(n,): f for n, f in self._failing.items()})
        for name, one in per_source.items():  # a source whose cycle did not finish its sweep keeps its last figures
            oldest, target = self._sweeps.get(name, (None, None))
            if one.sweep is not None:  # the achieved sweep: how long ago the least recently fetched job was fetched
                oldest = one.sweep
            if one.sweep_target is not None and one.sweep_target != float("inf"):
                target = one.sweep_target
            self._sweeps[name] = (oldest, target)
        self._view.set("notifier_sweep_oldest_fetch_seconds",
                       {(n,): o for n, (o, _) in self._sweeps.items() if o is not None})
        self._view.set("notifier_sweep_target_seconds",
                       {(n,): t for n, (_, t) in self._sweeps.items() if t is not None})
        with self._lock:
            self._attempts += 1
            if report.source_failed:
                self._last_error = "the source failed: " + excerpt(report.failure or "", ERROR_CHARS)
            else:
                self._last_success, self._last_error = finished, None
                self._view.set("notifier_last_successful_cycle_timestamp_seconds", {(): finished.timestamp()})

    def cycle_failed(self, error: str) -> None:
        """A cycle raised (state file, config, a bug): count it; ``/healthz`` quotes ``error``."""
        self.cycles.labels("error").inc()
        with self._lock:
            self._attempts += 1
            self._last_error = excerpt(error, ERROR_CHARS)

    def observe_delivery(self, report: DeliveryReport) -> None:
        """One delivery round finished (``app.deliver`` returned)."""
        self.notifications.labels("delivered").inc(report.delivered)
        self.notifications.labels("failed").inc(report.failed)
        self.notifications.labels("expired").inc(report.expired)
        self.retries.inc(report.retried)

    def observe_outbox(self, queued_by_channel: Mapping[str, int], oldest_age_s: Mapping[str, float]) -> None:
        """Replace the outbox gauges (``outbox_gauges`` computes both arguments)."""
        self._view.set("notifier_outbox_queued", {(c,): n for c, n in queued_by_channel.items()})
        self._view.set("notifier_outbox_oldest_age_seconds", {(c,): a for c, a in oldest_age_s.items()})

    # --- read by /healthz ---------------------------------------------------------------

    def health(self, now: datetime, interval: float) -> tuple[bool, str]:
        """(healthy, one line why): healthy while the last ok cycle finished < 3 intervals before ``now``.

        A sweep longer than the interval (10,000 jobs at 20 requests/s: ~500 s) widens the
        window by the slowest recent cycle's duration, so a working service never reads as down.
        """
        with self._lock:
            last, error, attempts, slowest = self._last_success, self._last_error, self._attempts, self._slowest
        every = _words(timedelta(seconds=interval))
        if attempts == 0:
            return False, "starting"
        why = f"last error: {error}" if error else "no cycle has finished since (is one stuck?)"
        if last is None:
            return False, f"no successful cycle yet ({attempts} tried, interval {every}): {why}"
        age = now - last
        if age.total_seconds() < HEALTHY_INTERVALS * interval + slowest:
            return True, f"ok: last successful cycle {_words(age)} ago"
        return False, f"no successful cycle for {_words(age)} (interval {every}): {why}"

    def exposition(self) -> str:
        """The text format of everything on the registry (what ``/metrics`` serves)."""
        return generate_latest(self.registry).decode()


def _words(delta: timedelta) -> str:
    """``3m12s``, ``12s``, ``1h5m``: format_duration without the spaces (a health line is one token each)."""
    return format_duration(delta).replace(" ", "")


# --- the HTTP server ------------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr for every scrape; errors still reach the logger; a silent client is dropped."""

    timeout = 10  # seconds: a client that sends half a request does not hold a thread forever

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        log.debug("metrics http: " + format, *args)


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup (``getfqdn``), which can hang where DNS is broken."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()


class MetricsServer:
    """A running ``/metrics`` + ``/healthz`` server; ``close()`` stops it and frees the port."""

    def __init__(self, server: _Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self._closed = False
        self.host, self.port = str(server.server_address[0]), int(server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        """Stop serving, close the listening socket and wait for the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(listen: str, metrics: Metrics, interval: float, clock: Clock = utcnow) -> MetricsServer:
    """Serve ``metrics`` on ``listen`` ("HOST:PORT"; port 0 picks a free one) in a daemon thread.

    Raises OSError when the address cannot be bound (in use, no such interface).
    """
    host, port = parse_listen(listen, any_port=True)
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    server_class = type("_BoundServer", (_Server,), {"address_family": family})
    server: _Server = server_class((host, port), _QuietHandler)
    server.set_app(_app(metrics, interval, clock))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name="notifier-metrics", daemon=True)
    thread.start()
    handle = MetricsServer(server, thread)
    log.info("metrics and health check listening on %s (/metrics, /healthz)", handle.url)
    return handle


def _app(metrics: Metrics, interval: float, clock: Clock
         ) -> Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]:
    prometheus = make_wsgi_app(metrics.registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            body: Iterable[bytes] = prometheus(environ, start_response)
            return body
        if path == "/healthz":
            ok, text = metrics.health(clock(), interval)
            return _text(start_response, "200 OK" if ok else "503 Service Unavailable", text)
        return _text(start_response, "404 Not Found", "not found: try /metrics or /healthz")

    return app


def _text(start_response: StartResponse, status: str, text: str) -> Iterator[bytes]:
    body = (text + "\n").encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                            ("Cache-Control", "no-store")])
    yield body
