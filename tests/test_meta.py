"""Meta-alerts end to end: simulator -> App -> SQLite -> webhook receivers, one cycle at a time.

Every test drives the real ``App`` (``Pipeline``) over loopback sockets with the
simulator's clock linked to notifier's (``LinkedClock``): "a minute passes" is one
``clock.advance(60)``, and nothing sleeps (the one real wait is SQLite's busy timeout,
cut to 50 ms). Outages are the simulator's fault injection (or a port nobody listens
on); a failing channel is a webhook URL on a dead port; the unwritable state file is
another SQLite connection holding the write lock.
"""

from __future__ import annotations

import sqlite3
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import notifier.statefile
from notifier.core.meta import AUTH_FAILED, CHANNEL_FAILING, JOB_MISSING, META_JOB, SOURCE_DOWN, STATE_UNWRITABLE
from notifier.daemon import Daemon
from notifier.errors import StateError
from notifier.simulator import ManualClock, Simulator, parse_scenario
from tests.conftest import WriteConfig
from tests.pipeline_support import NODE_EXCEPTION, LinkedClock, Pipeline, source_toml, webhook_toml
from tests.support.smtp_server import free_port
from tests.support.webhook_receiver import WebhookReceiver

PROJECT_ID = "b384b9e9ab9b4ee8994c8633aabc9505"

# job_a and job_b: five nodes each in EXCEPTION (ten node alerts); job_c: one of its two nodes in EXCEPTION
SCENARIO = f"""
project_id = "{PROJECT_ID}"
epoch_start = 1551409406000
loop = false
""" + "".join(
    f'\n[[job]]\nname = "{job}"\nstatus = "NORMAL"\n'
    + "".join(f'\n[[job.node]]\nname = "{node}"\ntype = "DLI SQL"\nstatus = "{status}"\n' for node, status in nodes)
    for job, nodes in [
        ("job_a", [(f"A{i}", "EXCEPTION") for i in range(1, 6)]),
        ("job_b", [(f"B{i}", "EXCEPTION") for i in range(1, 6)]),
        ("job_c", [("C1", "NORMAL"), ("C2", "EXCEPTION")]),
    ]
)

AK, SK = "AKIA-META-TEST-0123456789", "sk-meta-test-do-not-leak-9876543210"
AK_ENV, SK_ENV = "NOTIFIER_TEST_META_AK", "NOTIFIER_TEST_META_SK"

MakePipeline = Callable[..., Pipeline]

UNTHROTTLED = "max_requests_per_second = 10000\n"
"""Appended to [source]: the client spaces requests in real time (20/s by default); these tests never wait."""


def sim_source(url: str) -> str:
    """[source] for the simulator: no auth, no retries, no real-time request spacing."""
    return source_toml(url) + UNTHROTTLED


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(parse_scenario(tomllib.loads(SCENARIO), name="meta"), clock=ManualClock()) as s:
        yield s


@pytest.fixture
def clock(sim: Simulator) -> LinkedClock:
    """notifier's clock, linked to the simulator's scenario clock (overrides the plain one of conftest)."""
    return LinkedClock(sim)


@pytest.fixture
def make_pipeline(write_config: WriteConfig, sim: Simulator, clock: LinkedClock) -> Iterator[MakePipeline]:
    """Build pipelines polling the simulator; every one is closed after the test."""
    made: list[Pipeline] = []

    def make(channels: str, *, jobs: tuple[str, ...] = ("job_c",), rules: str = NODE_EXCEPTION, meta: str = "",
             source: str | None = None) -> Pipeline:
        names = ", ".join(f'"{j}"' for j in jobs)
        extra = '[schedule]\ninterval = "60s"\n' + (f"\n[meta]\n{meta}\n" if meta else "")
        path = write_config(source=source or sim_source(sim.url), rules=rules, channels=channels,
                            jobs=f"names = [{names}]", extra=extra)
        made.append(Pipeline(path, clock))
        return made[-1]

    yield make
    for p in made:
        p.close()


# --- helpers ------------------------------------------------------------------------------


def alerts_of(hook: WebhookReceiver) -> list[dict[str, Any]]:
    """Every alert the receiver got, in arrival order."""
    return [a for r in hook.requests for a in r.json["alerts"]]


def meta_of(hook: WebhookReceiver, rule: str | None = None) -> list[dict[str, Any]]:
    return [a for a in alerts_of(hook) if a["rule"].startswith("notifier-") and (rule is None or a["rule"] == rule)]


def job_alerts_of(hook: WebhookReceiver) -> list[dict[str, Any]]:
    return [a for a in alerts_of(hook) if not a["rule"].startswith("notifier-")]


def statuses(alerts: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(a["rule"], a["status"]) for a in alerts]


class WriteLock:
    """Another SQLite connection holding the state file's write lock (``BEGIN EXCLUSIVE``) until released.

    What the service meets when a `notifier silence` command, an operator's ``sqlite3``
    shell or a backup tool keeps a write transaction open: its ``BEGIN IMMEDIATE`` waits
    for the busy timeout, then SQLite answers SQLITE_BUSY ("database is locked"). Readers
    are not blocked (WAL), so only the commit fails, exactly as in production.
    """

    def __init__(self, path: Path) -> None:
        self._conn: sqlite3.Connection | None = sqlite3.connect(str(path), isolation_level=None, timeout=0)

    def __enter__(self) -> WriteLock:
        assert self._conn is not None
        self._conn.execute("BEGIN EXCLUSIVE")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Roll back and close; idempotent."""
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


@pytest.fixture
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 50 ms busy timeout (instead of 10 s) for state files opened after this: a locked commit fails fast."""
    monkeypatch.setattr(notifier.statefile, "BUSY_TIMEOUT_MS", 50)


# --- 1. source outage -----------------------------------------------------------------------


@contextmanager
def source_outage(kind: str, sim: Simulator) -> Iterator[Callable[[], None]]:
    """Take the source down now; yields the call that brings it back (the simulator's fault, or a dead port)."""
    if kind == "dead-port":  # connection refused; back = a new simulator on the same port and clock
        port, scenario = sim.port, sim.scenario
        sim.stop()
        revived: list[Simulator] = []
        try:
            yield lambda: revived.append(Simulator(scenario, port=port, clock=sim.clock).start())
        finally:
            for s in revived:
                s.stop()
        return
    sim.set_fault(**{"503": {"kind": "http_error", "status": 503}, "disconnect": {"kind": "disconnect"}}[kind])
    yield sim.clear_faults


@pytest.mark.parametrize("kind", ["503", "disconnect", "dead-port"])
def test_a_30_minute_outage_sends_one_source_down_and_one_recovery_and_no_job_message(
        make_pipeline, sim, clock, webhook_receiver, kind) -> None:
    """30 failed cycles with 10 firing alerts: one source-down after 3 cycles, one resolve after, no job message."""
    p = make_pipeline(webhook_toml(webhook_receiver.url), jobs=("job_a", "job_b"))
    p.cycle()
    assert sorted((a["job"], a["node"]) for a in job_alerts_of(webhook_receiver)) == sorted(
        [("job_a", f"A{i}") for i in range(1, 6)] + [("job_b", f"B{i}") for i in range(1, 6)])
    assert all(a["status"] == "firing" for a in alerts_of(webhook_receiver))
    firing_before = {fp: s for fp, s in p.store.load_alerts().items() if s.phase == "firing"}
    assert len(firing_before) == 10
    webhook_receiver.clear()

    with source_outage(kind, sim) as end:
        for n in range(1, 31):  # interval 60 s: 30 minutes
            clock.advance(60)
            report = p.cycle()
            assert report.source_failed and report.source_failures == n
            assert len(webhook_receiver.requests) == (0 if n < 3 else 1), f"cycle {n} of the outage"
        (down,) = alerts_of(webhook_receiver)
        assert (down["rule"], down["status"], down["job"], down["node"], down["state"], down["severity"]) == (
            SOURCE_DOWN, "firing", META_JOB, "source", "DOWN", "critical")
        assert webhook_receiver.requests[0].json["group"] == META_JOB
        assert "3 cycles in a row" in down["summary"], down["summary"]
        # the job alerts the outage hid were kept exactly as they were
        assert {fp: s for fp, s in p.store.load_alerts().items() if fp in firing_before} == firing_before

        end()
        clock.advance(60)
        report = p.cycle()
        assert not report.source_failed and report.errors == ()
        for _ in range(3):  # and it stays quiet afterwards
            clock.advance(60)
            p.cycle()
    assert statuses(alerts_of(webhook_receiver)) == [(SOURCE_DOWN, "firing"), (SOURCE_DOWN, "resolved")]
    resolved = alerts_of(webhook_receiver)[1]
    assert resolved["fingerprint"] == down["fingerprint"] and resolved["ends_at"] is not None
    assert job_alerts_of(webhook_receiver) == []
    assert sum(1 for s in p.store.load_alerts().values() if s.phase == "firing") == 10


# --- 2. credentials refused -------------------------------------------------------------------


def aksk_source(url: str) -> str:
    return (f'[source]\nendpoint = "{url}"\nproject_id = "{PROJECT_ID}"\nauth = "aksk"\n'
            f'ak_env = "{AK_ENV}"\nsk_env = "{SK_ENV}"\ntimeout = "2s"\nretries = 0\n' + UNTHROTTLED)


def test_a_401_fires_auth_failed_at_once_naming_where_the_secret_came_from_and_resolves(
        make_pipeline, sim, clock, webhook_receiver, monkeypatch, caplog) -> None:
    """401 APIG.0301: auth-failed on the first cycle, naming aksk and the env vars, never the secrets; then resolved."""
    # The simulator does not verify signatures (it only serves); the gateway's 401 answer is a fault.
    monkeypatch.setenv(AK_ENV, AK)
    monkeypatch.setenv(SK_ENV, SK)
    sim.set_fault(kind="http_error", status=401, error_code="APIG.0301",
                  error_msg="Incorrect IAM authentication information: verify aksk signature fail")
    p = make_pipeline(webhook_toml(webhook_receiver.url), jobs=("job_c",), source=aksk_source(sim.url))
    report = p.cycle()
    assert [(e.kind, e.status_code) for e in report.errors] == [("auth", 401)]
    assert sim.requests[-1].headers["authorization"].startswith("SDK-HMAC-SHA256")  # really signed with AK/SK

    (alert,) = alerts_of(webhook_receiver)
    assert (alert["rule"], alert["status"], alert["job"], alert["node"], alert["severity"]) == (
        AUTH_FAILED, "firing", META_JOB, "auth", "critical")
    summary = alert["summary"]
    assert "APIG.0301" in summary and "auth = aksk" in summary, summary
    assert f"environment variable {AK_ENV}" in summary and f"environment variable {SK_ENV}" in summary, summary

    for _ in range(4):  # still refused: no repeat, and no source-down on top of it
        clock.advance(60)
        p.cycle()
    assert statuses(alerts_of(webhook_receiver)) == [(AUTH_FAILED, "firing")]

    sim.clear_faults()
    clock.advance(60)
    p.cycle()
    assert statuses(meta_of(webhook_receiver)) == [(AUTH_FAILED, "firing"), (AUTH_FAILED, "resolved")]
    assert statuses(job_alerts_of(webhook_receiver)) == [("node-exception", "firing")]  # the job is seen again
    for request in webhook_receiver.requests:
        assert SK.encode() not in request.body and AK.encode() not in request.body
    assert caplog.records and SK not in caplog.text and AK not in caplog.text


# --- 3. a job that does not exist ------------------------------------------------------------


def test_a_missing_job_fires_after_three_cycles_naming_the_job_and_resolves_when_removed_from_config(
        make_pipeline, sim, clock, webhook_receiver, write_config) -> None:
    """DLF.0100 for a configured job: job-missing on the 3rd cycle (a restart keeps the count), resolved on removal."""
    p = make_pipeline(webhook_toml(webhook_receiver.url), jobs=("job_c", "job_gone"))
    report = p.cycle()
    assert [(e.job, e.kind, e.error_code) for e in report.errors] == [("job_gone", "not_found", "DLF.0100")]
    clock.advance(60)
    p.restart()  # the count is in the state file
    p.cycle()
    assert meta_of(webhook_receiver) == []  # 2 cycles: not yet
    clock.advance(60)
    p.cycle()
    (missing,) = meta_of(webhook_receiver)
    assert (missing["rule"], missing["status"], missing["job"], missing["state"], missing["severity"]) == (
        JOB_MISSING, "firing", "job_gone", "MISSING", "warning")
    assert "job_gone" in missing["summary"] and "DLF.0100" in missing["summary"], missing["summary"]
    assert [r.json["group"] for r in webhook_receiver.requests if r.json["alerts"][0]["rule"] == JOB_MISSING] == [
        "job_gone"]
    assert meta_of(webhook_receiver, SOURCE_DOWN) == []  # job_c answered: the source is fine

    for _ in range(3):
        clock.advance(60)
        p.cycle()
    assert statuses(meta_of(webhook_receiver)) == [(JOB_MISSING, "firing")]

    write_config(source=sim_source(sim.url), rules=NODE_EXCEPTION, channels=webhook_toml(webhook_receiver.url),
                 jobs='names = ["job_c"]', extra='[schedule]\ninterval = "60s"\n')
    p.run(p.app.retire(p.app.adopt(p.app.load())))
    clock.advance(60)
    p.cycle()
    assert statuses(meta_of(webhook_receiver)) == [(JOB_MISSING, "firing"), (JOB_MISSING, "resolved")]
    assert meta_of(webhook_receiver)[1]["job"] == "job_gone"


def test_a_missing_job_resolves_when_the_job_appears(make_pipeline, sim, clock, webhook_receiver) -> None:
    """A job answering the API's DLF.0100 document for 3 cycles fires job-missing; its first real answer resolves it."""
    # "appears": the simulator cannot add a job at run time, so job_b is made to answer exactly what
    # the API answers for a job that does not exist (400 DLF.0100) until the fault is cleared.
    sim.set_fault("job_b", kind="http_error", status=400, error_code="DLF.0100", error_msg="The job does not exists.")
    p = make_pipeline(webhook_toml(webhook_receiver.url), jobs=("job_c", "job_b"))
    for _ in range(2):
        p.cycle()
        clock.advance(60)
    assert meta_of(webhook_receiver) == []
    p.cycle()
    assert statuses(meta_of(webhook_receiver)) == [(JOB_MISSING, "firing")]
    assert meta_of(webhook_receiver)[0]["job"] == "job_b"

    sim.clear_faults()
    clock.advance(60)
    p.cycle()
    assert statuses(meta_of(webhook_receiver)) == [(JOB_MISSING, "firing"), (JOB_MISSING, "resolved")]
    assert meta_of(webhook_receiver)[1]["job"] == "job_b"
    assert sorted(a["node"] for a in job_alerts_of(webhook_receiver) if a["job"] == "job_b") == [
        f"B{i}" for i in range(1, 6)]


# --- 4. a channel that keeps failing ---------------------------------------------------------


def test_a_failing_channel_is_announced_on_the_working_one_after_channel_stuck_and_resolves(
        make_pipeline, sim, clock, webhook_receiver) -> None:
    """A webhook on a dead port: channel-failing after channel_stuck, to the working channel only; resolved on send."""
    dead_port = free_port()
    channels = webhook_toml(webhook_receiver.url, "hook") + webhook_toml(f"http://127.0.0.1:{dead_port}/hook", "broken")
    p = make_pipeline(channels, meta='channel_stuck = "2m"')
    p.cycle()  # node-exception: delivered to hook, queued for broken
    assert statuses(alerts_of(webhook_receiver)) == [("node-exception", "firing")]
    for _ in range(2):  # 1 and 2 minutes: not yet stuck for longer than 2m
        clock.advance(60)
        p.cycle()
    assert meta_of(webhook_receiver) == []
    clock.advance(60)
    p.cycle()
    (failing,) = meta_of(webhook_receiver)
    assert (failing["rule"], failing["status"], failing["job"], failing["node"], failing["state"]) == (
        CHANNEL_FAILING, "firing", META_JOB, "broken", "FAILING")
    assert "broken" in failing["summary"], failing["summary"]
    assert all(r.channel == "broken" for r in p.store.outbox.rows(("pending",)))  # nothing about it queued for it

    for _ in range(3):
        clock.advance(60)
        p.cycle()
    assert statuses(meta_of(webhook_receiver)) == [(CHANNEL_FAILING, "firing")]

    with WebhookReceiver(port=dead_port) as back:
        clock.advance(600)  # past any retry backoff
        assert p.deliver().delivered == 1
        clock.advance(60)
        p.cycle()
        for _ in range(2):
            clock.advance(60)
            p.cycle()
        assert statuses(alerts_of(back)) == [("node-exception", "firing")]  # it never hears about itself
    assert statuses(meta_of(webhook_receiver)) == [(CHANNEL_FAILING, "firing"), (CHANNEL_FAILING, "resolved")]
    assert meta_of(webhook_receiver)[1]["node"] == "broken"
    assert p.store.outbox.rows(("pending",)) == ()


# --- 5. the state file cannot be written -----------------------------------------------------


def test_an_unwritable_state_file_is_sent_directly_once_and_resolved_after_the_next_commit(
        short_busy_timeout, make_pipeline, sim, clock, webhook_receiver) -> None:
    """The write lock held elsewhere: StateError, state-unwritable sent directly once, the daemon goes on, resolved."""
    # Why a held lock: the tests run as root, so chmod cannot stop a write, and a full disk needs a
    # mount. SQLITE_BUSY after the busy timeout is what the service really meets when another
    # process keeps a write transaction open; the busy timeout is cut from 10 s to 50 ms before
    # the App opens its file (fixture short_busy_timeout), nothing else is patched.
    p = make_pipeline(webhook_toml(webhook_receiver.url))
    p.cycle()
    assert statuses(alerts_of(webhook_receiver)) == [("node-exception", "firing")]
    daemon = Daemon(p.app)

    with WriteLock(p.store.path) as lock:
        sim.set_node_status("job_c", "C2", "NORMAL")  # a change that cannot be stored while the lock is held
        clock.advance(60)
        with pytest.raises(StateError, match="database is locked"):
            p.cycle()
        assert statuses(alerts_of(webhook_receiver)) == [("node-exception", "firing"), (STATE_UNWRITABLE, "firing")]
        unwritable = alerts_of(webhook_receiver)[1]
        assert (unwritable["job"], unwritable["node"], unwritable["state"], unwritable["severity"]) == (
            META_JOB, "state", "UNWRITABLE", "critical")
        assert "database is locked" in unwritable["summary"], unwritable["summary"]

        for _ in range(3):  # the service keeps running its cycles; no message per cycle
            clock.advance(60)
            assert p.run(daemon.run_cycle()) is None
            p.deliver()
        assert len(webhook_receiver.requests) == 2
        lock.release()

    clock.advance(60)
    report = p.run(daemon.run_cycle())
    assert report is not None and report.notifications == 2
    p.deliver()
    assert statuses(alerts_of(webhook_receiver)) == [
        ("node-exception", "firing"), (STATE_UNWRITABLE, "firing"), ("node-exception", "resolved"),
        (STATE_UNWRITABLE, "resolved")]
    resolved = alerts_of(webhook_receiver)[3]
    assert resolved["fingerprint"] == unwritable["fingerprint"] and resolved["starts_at"] == unwritable["starts_at"]
    assert resolved["ends_at"] is not None
    clock.advance(60)
    p.cycle()
    assert len(alerts_of(webhook_receiver)) == 4


# --- 6. routing ------------------------------------------------------------------------------


def test_meta_channels_route_every_meta_alert_to_those_channels_only(
        short_busy_timeout, make_pipeline, sim, clock) -> None:
    """[meta] channels = ["ops"]: job-missing, source-down and state-unwritable reach ops only; team gets job alerts."""
    with WebhookReceiver() as team, WebhookReceiver() as ops:
        rules = NODE_EXCEPTION + 'channels = ["team"]\n'
        p = make_pipeline(webhook_toml(team.url, "team") + webhook_toml(ops.url, "ops"), jobs=("job_c", "job_gone"),
                          rules=rules, meta='channels = ["ops"]')
        for _ in range(3):
            p.cycle()
            clock.advance(60)
        assert statuses(alerts_of(ops)) == [(JOB_MISSING, "firing")]

        sim.set_fault(kind="http_error", status=503)
        for _ in range(3):
            p.cycle()
            clock.advance(60)
        sim.clear_faults()
        p.cycle()
        clock.advance(60)
        assert statuses(meta_of(ops, SOURCE_DOWN)) == [(SOURCE_DOWN, "firing"), (SOURCE_DOWN, "resolved")]

        with WriteLock(p.store.path), pytest.raises(StateError):
            p.cycle()
        p.cycle()
        assert statuses(meta_of(ops, STATE_UNWRITABLE)) == [(STATE_UNWRITABLE, "firing"),
                                                            (STATE_UNWRITABLE, "resolved")]

        assert statuses(alerts_of(team)) == [("node-exception", "firing")]
        assert job_alerts_of(ops) == []


# --- what the messages say, and neighbouring failures ----------------------------------------


def test_source_down_dates_the_outage_from_its_first_failed_cycle(make_pipeline, sim, clock, webhook_receiver) -> None:
    """source-down is dated from the first failed cycle: fired 2m in it says "for 2m"; 30m later "back after 30m"."""
    p = make_pipeline(webhook_toml(webhook_receiver.url))
    p.cycle()
    webhook_receiver.clear()
    sim.set_fault(kind="http_error", status=503)
    first_failed = clock.advance(60)
    p.cycle()
    for _ in range(29):
        clock.advance(60)
        p.cycle()
    sim.clear_faults()
    back = clock.advance(60)
    p.cycle()
    down, resolved = meta_of(webhook_receiver, SOURCE_DOWN)
    assert down["starts_at"] == first_failed.isoformat().replace("+00:00", "Z")
    assert down["summary"].startswith("DGC source failing for 2m:"), down["summary"]
    assert (back - first_failed).total_seconds() == 30 * 60
    assert resolved["summary"] == "DGC source is back after 30m", resolved["summary"]


def test_a_missing_job_is_not_a_source_outage_even_when_it_is_the_only_job(
        make_pipeline, sim, clock, webhook_receiver) -> None:
    """The API answering DLF.0100 for the only configured job fires job-missing, never source-down: the API is up."""
    p = make_pipeline(webhook_toml(webhook_receiver.url), jobs=("job_gone",))
    for _ in range(5):
        p.cycle()
        clock.advance(60)
    assert statuses(meta_of(webhook_receiver)) == [(JOB_MISSING, "firing")]


def test_an_unwritable_state_file_does_not_make_the_deliverer_resend_a_delivered_row(
        short_busy_timeout, make_pipeline, sim, clock, webhook_receiver) -> None:
    """A row sent while its "delivered" mark cannot be written is sent once, not again on every delivery round."""
    p = make_pipeline(webhook_toml(webhook_receiver.url))
    p.cycle(deliver=False)  # node-exception queued, not yet sent
    with WriteLock(p.store.path):
        for _ in range(3):  # the daemon's delivery task retries a failed round at once (>= 50 ms later)
            try:
                p.deliver()
            except StateError:
                pass
            clock.advance(1)
    p.deliver()
    assert statuses(alerts_of(webhook_receiver)) == [("node-exception", "firing")]
