"""Budget-aware polling end to end: the real App against the simulator over loopback, a cycle at a time.

The budget here is 19 requests a cycle (1000 req/s x 20 ms x 0.95): one list request and
18 status requests, so 40 jobs take three cycles to sweep. The simulator's own rate limit
is off (this is about the planner, and the cycles are 20 ms of fake time apart).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from notifier.fetching import describe_sweep
from notifier.metrics import Metrics
from notifier.simulator import ManualClock, Scenario, Simulator
from notifier.source.client import RateLimiter
from notifier.state import FETCH_SWEEP_KEY
from tests.conftest import WriteConfig
from tests.pipeline_support import NODE_EXCEPTION, LinkedClock, Pipeline, source_toml, webhook_toml
from tests.support.fakes import FakeClock
from tests.support.webhook_receiver import WebhookReceiver

JOBS = 40
INTERVAL = 0.02
BUDGET = 19  # floor(1000 x 0.02 x 0.95)
JOB_EXCEPTION = '\n[[rule]]\nname = "job-exception"\nscope = "job"\nstatus = ["EXCEPTION"]\n'


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(Scenario.synthetic(jobs=JOBS, nodes=3), clock=ManualClock(), rate_limit=None) as s:
        yield s


def names() -> list[str]:
    return [f"job_{i:02d}" for i in range(JOBS)]


def make(sim: Simulator, write_config: WriteConfig, hook: WebhookReceiver, *, jobs: str) -> Pipeline:
    config = write_config(source=source_toml(sim.url) + "max_requests_per_second = 1000\n",
                          rules=NODE_EXCEPTION + JOB_EXCEPTION, channels=webhook_toml(hook.url), jobs=jobs,
                          extra=f'[schedule]\ninterval = "{INTERVAL * 1000:g}ms"\n')
    return Pipeline(config, LinkedClock(sim))


def requests_of(sim: Simulator) -> tuple[list[str], int]:
    """(jobs whose status was asked, list requests) since the last call."""
    got = sim.requests.snapshot()
    sim.requests.clear()
    status = [r.path.split("/")[-2] for r in got if r.path.endswith("/status")]
    return status, sum(1 for r in got if r.path.endswith("/jobs"))


def step(p: Pipeline, clock: FakeClock) -> None:
    clock.advance(INTERVAL)
    p.cycle()


def alerts(hook: WebhookReceiver) -> list[tuple[str, str, str, str]]:
    return [(a["status"], a["rule"], a["job"], a["node"]) for r in hook.requests for a in json.loads(r.body)["alerts"]]


@pytest.mark.parametrize("jobs", [f"names = {json.dumps(names())}", 'discover = true\ninclude = ["job_*"]'],
                         ids=["named", "discovered"])
def test_one_list_a_cycle_status_within_the_budget_and_every_job_swept(
        sim: Simulator, write_config: WriteConfig, webhook_receiver: WebhookReceiver, jobs: str) -> None:
    p = make(sim, write_config, webhook_receiver, jobs=jobs)
    try:
        report = p.cycle()
        assert (report.urgent, report.deferred) == (BUDGET - 1, JOBS - (BUDGET - 1))  # all new, capped by the budget
        asked: list[str] = []
        for cycle in range(3):
            if cycle:
                step(p, p.clock)
            status, lists = requests_of(sim)
            assert lists == 1 and len(status) == BUDGET - 1, (cycle, lists, len(status))
            asked += status
        assert len(set(asked[:2 * (BUDGET - 1)])) == 2 * (BUDGET - 1)  # nobody twice before everyone once
        assert set(asked) == set(names())
        sweep = json.loads(p.store.get_meta(FETCH_SWEEP_KEY) or "{}")
        assert sweep["jobs"] == JOBS and sweep["target_s"] == pytest.approx(3 * INTERVAL)
        assert sweep["oldest_s"] <= 3 * INTERVAL + 1e-9
        line = describe_sweep(p.store.get_meta(FETCH_SWEEP_KEY))  # what `notifier alerts` prints
        assert line is not None and line.startswith(f"POLLING: {JOBS} jobs, the least recently fetched ")
        assert " before each cycle since " in line and " (sweep target" in line
        assert "behind" not in line and "behind: the source is failing" in (describe_sweep(json.dumps(
            {**sweep, "oldest_s": 10 * INTERVAL}), failing=True) or "")
        assert "behind: the source is failing" in (describe_sweep(json.dumps(sweep), failing=True) or "")
        assert (describe_sweep(json.dumps({**sweep, "jobs": 1, "oldest_s": 0})) or "").startswith(
            "POLLING: 1 job, every one fetched in each cycle since ")
        stored = p.store.get_meta(FETCH_SWEEP_KEY)
        step(p, p.clock)  # the same figures: the row (and its time) stays, so a quiet cycle writes no meta row
        assert p.store.get_meta(FETCH_SWEEP_KEY) == stored
        metrics = Metrics()
        metrics.observe_cycle(p.cycle(), 0.01, {}, p.app.poller.entities)
        text = metrics.exposition()
        assert f'notifier_sweep_target_seconds{{source="default"}} {3 * INTERVAL}' in text
        assert 'notifier_sweep_oldest_fetch_seconds{source="default"} ' in text
        assert 'notifier_api_throttled_total{source="default"} 0.0' in text
    finally:
        p.close()


def test_a_node_failing_under_a_normal_job_is_found_by_the_sweep_then_watched_every_cycle(
        sim: Simulator, write_config: WriteConfig, webhook_receiver: WebhookReceiver) -> None:
    p = make(sim, write_config, webhook_receiver, jobs=f"names = {json.dumps(names())}")
    try:
        for _ in range(3):
            step(p, p.clock)
        requests_of(sim)
        sim.set_node_status("job_07", "node_01", "EXCEPTION")  # the job stays NORMAL: the list cannot show it
        found = []
        for _ in range(3):  # within one sweep (3 cycles)
            step(p, p.clock)
            found.append(("firing", "node-exception", "job_07", "node_01") in alerts(webhook_receiver))
        assert any(found)
        requests_of(sim)
        seen = []  # troubled now: asked every cycle, first
        for _ in range(3):
            step(p, p.clock)
            status, _ = requests_of(sim)
            seen.append(status[0] if status else None)
        assert seen == ["job_07"] * 3
        sim.set_node_status("job_07", "node_01", "NORMAL")
        step(p, p.clock)
        assert ("resolved", "node-exception", "job_07", "node_01") in alerts(webhook_receiver)
    finally:
        p.close()


def test_a_job_level_change_is_fetched_and_alerted_in_the_next_cycle(
        sim: Simulator, write_config: WriteConfig, webhook_receiver: WebhookReceiver) -> None:
    p = make(sim, write_config, webhook_receiver, jobs='discover = true')
    try:
        for _ in range(4):
            step(p, p.clock)
        requests_of(sim)
        sim.set_job_status("job_31", "EXCEPTION")
        step(p, p.clock)
        status, lists = requests_of(sim)
        assert lists == 1 and status[0] == "job_31"  # urgent: asked first, in the first round
        assert ("firing", "job-exception", "job_31", None) in alerts(webhook_receiver)
    finally:
        p.close()


def test_list_refused_polls_named_jobs_one_by_one_within_the_same_budget(
        sim: Simulator, write_config: WriteConfig, webhook_receiver: WebhookReceiver,
        caplog: pytest.LogCaptureFixture) -> None:
    sim.set_fault(endpoint="list", kind="http_error", status=403, error_code="DLF.6888",
                  error_msg="The user has no permission.")
    p = make(sim, write_config, webhook_receiver, jobs=f"names = {json.dumps(names())}")
    try:
        with caplog.at_level(logging.WARNING):
            asked: set[str] = set()
            for _ in range(3):
                step(p, p.clock)
                status, lists = requests_of(sim)
                assert len(status) == BUDGET and lists <= 1  # the refused list is asked once, then never
                asked |= set(status)
        assert asked == set(names())
        refusals = [r for r in caplog.records if "list API is refused" in r.getMessage()]
        assert len(refusals) == 1 and "DLF.6888" in refusals[0].getMessage()
        step(p, p.clock)
        assert requests_of(sim)[1] == 0
    finally:
        p.close()


def test_an_unknown_named_job_is_asked_every_cycle_and_reported_missing(
        sim: Simulator, write_config: WriteConfig, webhook_receiver: WebhookReceiver) -> None:
    p = make(sim, write_config, webhook_receiver, jobs=f'names = {json.dumps([*names()[:5], "job_typo"])}')
    try:
        for _ in range(4):
            step(p, p.clock)
            status, _ = requests_of(sim)
            assert "job_typo" in status
        assert p.app.poller.missing["job_typo"].cycles == 4
    finally:
        p.close()


def test_a_throttled_answer_pauses_every_request_and_halves_the_rate() -> None:
    """APIG.0308: the user's budget is spent elsewhere too; back off for all requests, then win the rate back."""
    import asyncio

    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(20, monotonic=lambda: now[0], sleep=sleep)

    async def run() -> None:
        await limiter.wait()
        limiter.throttled(3.0)
        assert limiter.current == 10
        await limiter.wait()
        assert slept[-1] == pytest.approx(3.0)
        await limiter.wait()
        assert slept[-1] == pytest.approx(1 / 10)
        for _ in range(10):
            limiter.answered()
        assert limiter.current == 20
        for _ in range(10):
            limiter.throttled(0.0)
        assert limiter.current == 2  # never below a tenth

    asyncio.run(run())


def test_full_sweep_shorter_than_the_interval_is_a_config_error(write_config: WriteConfig) -> None:
    from notifier.config import load_config
    from notifier.errors import ConfigError

    config = write_config(source='[source]\nendpoint = "http://127.0.0.1:1"\nproject_id = "p"\nauth = "none"\n',
                          rules=NODE_EXCEPTION, channels='[channels.c]\ntype = "console"\n',
                          extra='[schedule]\ninterval = "60s"\nfull_sweep = "30s"\n')
    with pytest.raises(ConfigError, match=r"schedule.*full_sweep.*at least the interval"):
        load_config(config)


def test_check_says_when_the_budget_cannot_keep_full_sweep(write_config: WriteConfig) -> None:
    """100 named jobs, 0.5 req/s, 1-minute cycles: 28 requests a cycle, 1 list + 27 status: 4 minutes a sweep."""
    from notifier.checks import check

    many = json.dumps([f"job_{i:03d}" for i in range(100)])
    source = ('[source]\nendpoint = "http://127.0.0.1:1"\nproject_id = "p"\nauth = "none"\n'
              "max_requests_per_second = 0.5\n")
    channels = '[channels.c]\ntype = "console"\n'
    tight = write_config(source=source, rules=NODE_EXCEPTION, channels=channels, jobs=f"names = {many}",
                         extra='[schedule]\ninterval = "60s"\nfull_sweep = "2m"\n')
    report = check(tight)
    assert report.exit_code == 0  # a warning, not a failure: the service still runs, with a longer sweep
    [warning] = [w for w in report.warnings if "full_sweep" in w]
    assert "100 jobs at 0.5 req/s" in warning and "every job's nodes within 4m" in warning and "2m" in warning
    assert "polling: 100 jobs at 0.5 req/s: job-level changes every cycle (1m), every job's nodes within 4m" \
        in report.summary
    roomy = write_config(source=source, rules=NODE_EXCEPTION, channels=channels, jobs=f"names = {many}",
                         extra='[schedule]\ninterval = "60s"\nfull_sweep = "10m"\n')
    report = check(roomy)
    assert not [w for w in report.warnings if "full_sweep" in w] and "within 10m" in report.summary


def test_a_cycle_that_overruns_its_interval_is_followed_at_once_not_a_tick_later(
        sim: Simulator, write_config: WriteConfig, webhook_receiver: WebhookReceiver,
        caplog: pytest.LogCaptureFixture) -> None:
    """The scheduler skips the tick a running cycle overlaps; the daemon runs it itself, right away."""
    from notifier.daemon import Daemon

    config = write_config(source=source_toml(sim.url), rules=NODE_EXCEPTION,
                          channels=webhook_toml(webhook_receiver.url), jobs=f"names = {json.dumps(names()[:3])}",
                          extra='[schedule]\ninterval = "1h"\n')
    p = Pipeline(config, LinkedClock(sim))
    ticks = iter(range(0, 10**9, 7200))  # every look at the monotonic clock is 2 h later: each cycle overruns 1 h
    daemon = Daemon(p.app, monotonic=lambda: float(next(ticks)))
    try:
        with caplog.at_level(logging.INFO, logger="notifier.daemon"):
            p.run(daemon.serve(max_cycles=3, duration=30))  # duration: a guard; otherwise the 2nd tick is 1 h away
        assert daemon._cycles == 3
        assert sum("cycle overran its interval" in r.getMessage() for r in caplog.records) == 2
    finally:
        p.close()
