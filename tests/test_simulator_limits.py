"""The simulator's gateway limits (per-user rate limit, latency) and its scale mode, over real sockets.

The rate limit's window runs on an injected ``limit_clock`` (a ManualClock here), so nothing
waits for real time; scenario time is a ManualClock too.
"""

from __future__ import annotations

import collections
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from notifier.cli import main
from notifier.errors import ConfigError
from notifier.simulator import (
    DEFAULT_LIMITS,
    DEFAULT_PROJECT_ID,
    UNLIMITED,
    Change,
    Limits,
    ManualClock,
    ScaleModel,
    Scenario,
    Simulator,
    load_scenario,
    parse_scenario,
)
from notifier.simulator.options import SimulateOptions, simulation

PROJECT = DEFAULT_PROJECT_ID
ROOT = Path(__file__).resolve().parents[1]
SMALL = f"""
project_id = "{PROJECT}"

[[job]]
name = "job_a"

[[job.node]]
name = "N"
type = "DLI SQL"
"""
STATUS = f"/v1/{PROJECT}/jobs/job_a/status"
LIST = f"/v1/{PROJECT}/jobs"
THROTTLE_MSG = "The throttling threshold has been reached: policy user over ratelimit,limit:{},time:1 second"


class Env:
    """A started simulator, its scenario clock, its limit clock, and clients to close."""

    def __init__(self, sim: Simulator, clock: ManualClock, limit_clock: ManualClock) -> None:
        self.sim, self.clock, self.limit_clock = sim, clock, limit_clock
        self.clients: list[httpx.Client] = []

    def client(self, **headers: str) -> httpx.Client:
        c = httpx.Client(base_url=self.sim.url, timeout=10, headers=headers)
        self.clients.append(c)
        return c


Start = Callable[..., Env]


def scenario(text: str = SMALL, file: str = "limits.toml") -> Scenario:
    return parse_scenario(tomllib.loads(textwrap.dedent(text)), file=file)


@pytest.fixture
def start() -> Iterator[Start]:
    envs: list[Env] = []

    def _start(sc: Scenario | None = None, **kwargs: Any) -> Env:
        clock, limit_clock = ManualClock(), ManualClock(1000.0)
        sim = Simulator(sc if sc is not None else scenario(), clock=clock, limit_clock=limit_clock, **kwargs).start()
        env = Env(sim, clock, limit_clock)
        envs.append(env)
        return env

    yield _start
    for env in envs:
        for c in env.clients:
            c.close()
        env.sim.stop()


def codes(client: httpx.Client, n: int, path: str = STATUS, **kwargs: Any) -> list[int]:
    return [client.get(path, **kwargs).status_code for _ in range(n)]


def signed(ak: str) -> dict[str, str]:
    """An Authorization header naming ``ak`` (auth = "none": the simulator only reads whose it is)."""
    return {"Authorization": f"SDK-HMAC-SHA256 Access={ak}, SignedHeaders=host;x-sdk-date, Signature=00"}


# --- the rate limit --------------------------------------------------------------------

def test_31st_request_in_a_second_is_throttled_like_the_gateway(start: Start) -> None:
    """30 requests in a second are served; the 31st is 429 APIG.0308 naming the limit and the request id."""
    env = start()
    client = env.client()
    assert env.sim.rate_limit == 30
    assert codes(client, 30) == [200] * 30
    refused = client.get(STATUS)
    assert refused.status_code == 429
    body = refused.json()
    assert body["error_code"] == "APIG.0308"
    assert body["error_msg"] == THROTTLE_MSG.format(30)
    assert body["request_id"] == refused.headers["X-Request-Id"] and len(body["request_id"]) == 32
    assert "Retry-After" not in refused.headers  # the gateway documents none
    assert (env.sim.served, env.sim.throttled) == (30, 1)
    assert env.sim.served_by_user() == {"anonymous": 30}
    assert env.sim.throttled_by_user() == {"anonymous": 1}


def test_the_window_slides(start: Start) -> None:
    """A request leaves the window one second after it was served; then the budget has room again."""
    env = start()
    client = env.client()
    assert codes(client, 20) == [200] * 20
    env.limit_clock.advance(0.5)
    assert codes(client, 10) == [200] * 10
    assert codes(client, 1) == [429]
    env.limit_clock.advance(0.5)  # the first 20 are exactly one second old: out of the window
    assert codes(client, 20) == [200] * 20
    assert codes(client, 1) == [429]
    env.limit_clock.advance(0.5)  # the 10 from t=0.5 left
    assert codes(client, 10) == [200] * 10
    assert codes(client, 1) == [429]


def test_refused_requests_do_not_use_up_the_window(start: Start) -> None:
    """Requests refused at 0.5 s do not count: at 1 s the whole budget is back."""
    env = start()
    client = env.client()
    assert codes(client, 30) == [200] * 30
    env.limit_clock.advance(0.5)
    assert codes(client, 5) == [429] * 5
    env.limit_clock.advance(0.5)
    assert codes(client, 30) == [200] * 30
    assert (env.sim.served, env.sim.throttled) == (60, 5)


def test_two_access_keys_have_separate_budgets(start: Start) -> None:
    env = start()
    one, two = env.client(**signed("AK_ONE")), env.client(**signed("AK_TWO"))
    assert codes(one, 30) == [200] * 30
    assert codes(one, 1) == [429]
    assert codes(two, 30) == [200] * 30
    assert codes(two, 1) == [429]
    assert env.sim.served_by_user() == {"ak:AK_ONE": 30, "ak:AK_TWO": 30}


def test_two_tokens_have_separate_budgets_and_the_ak_wins_over_a_token(start: Start) -> None:
    env = start()
    one, two = env.client(**{"X-Auth-Token": "token-one"}), env.client(**{"X-Auth-Token": "token-two"})
    both = env.client(**{"X-Auth-Token": "token-one"}, **signed("AK_X"))
    assert codes(one, 30) == [200] * 30
    assert codes(one, 1) == [429]
    assert codes(two, 30) == [200] * 30
    assert codes(both, 30) == [200] * 30  # signed: the AK's budget, not token-one's
    assert env.sim.served_by_user() == {"token:token-one": 30, "token:token-two": 30, "ak:AK_X": 30}


def test_anonymous_clients_share_one_budget(start: Start) -> None:
    """Without credentials every client is the same user, on separate connections too."""
    env = start()
    a, b = env.client(), env.client()
    assert codes(a, 15) == [200] * 15
    assert codes(b, 15) == [200] * 15
    assert codes(a, 1) == [429]
    assert codes(b, 1) == [429]


def test_list_is_limited_other_paths_and_iam_are_not(start: Start) -> None:
    """Status and list share the budget; IAM's token API and unknown paths are neither limited nor counted."""
    env = start()
    client = env.client()
    assert codes(client, 15) == [200] * 15
    assert codes(client, 15, LIST, params={"jobType": "REAL_TIME"}) == [200] * 15
    assert codes(client, 1, LIST) == [429]
    login = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "notifier", "password": "simulator-password", "domain": {"name": "simulator"}}}},
        "scope": {"project": {"id": PROJECT}}}}
    assert [client.post("/v3/auth/tokens", json=login).status_code for _ in range(40)] == [201] * 40
    assert codes(client, 40, "/v2/nothing") == [404] * 40
    assert (env.sim.served, env.sim.throttled) == (30, 1)


def test_a_configured_limit_is_named_in_the_message(start: Start) -> None:
    env = start(rate_limit=5)
    client = env.client()
    assert codes(client, 5) == [200] * 5
    assert client.get(STATUS).json()["error_msg"] == THROTTLE_MSG.format(5)


@pytest.mark.parametrize("off", [0, None])
def test_no_limit(start: Start, off: float | None) -> None:
    env = start(rate_limit=off)
    assert env.sim.rate_limit == 0
    assert codes(env.client(), 100) == [200] * 100
    assert (env.sim.served, env.sim.throttled) == (100, 0)


def test_bad_credentials_are_refused_before_the_limit_and_do_not_count(start: Start) -> None:
    """auth = "token": a 401 is the gateway's first answer and uses up no budget."""
    env = start(scenario(SMALL.replace('project_id', 'auth = "token"\nproject_id')), rate_limit=3)
    anonymous, good = env.client(), env.client(**{"X-Auth-Token": "simulator-token"})
    assert codes(anonymous, 10) == [401] * 10
    assert codes(good, 4) == [200, 200, 200, 429]
    assert (env.sim.served, env.sim.throttled) == (3, 1)


def test_faults_do_not_apply_to_a_throttled_answer(start: Start) -> None:
    """The 429 is the gateway's: a fault with a count is not used up by it."""
    env = start(rate_limit=1)
    client = env.client()
    assert codes(client, 1) == [200]
    env.sim.set_fault(kind="http_error", status=503, count=1)
    assert codes(client, 2) == [429, 429]
    env.limit_clock.advance(1)
    assert codes(client, 2) == [503, 429]


def test_concurrent_requests_get_exactly_the_budget(start: Start) -> None:
    """8 connections x 10 requests at once, within one (frozen) second: exactly 30 are served."""
    env = start()
    results: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(base_url=env.sim.url, timeout=10) as c:
            got = codes(c, 10)
        with lock:
            results.extend(got)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert collections.Counter(results) == {200: 30, 429: 50}
    assert (env.sim.served, env.sim.throttled) == (30, 50)


def test_limit_values_are_checked() -> None:
    with pytest.raises(ValueError, match="rate_limit must be a finite number"):
        Simulator(scenario(), rate_limit=-1)
    with pytest.raises(ValueError, match="latency must be"):
        Simulator(scenario(), latency=float("nan"))


# --- latency ---------------------------------------------------------------------------

def test_latency_is_slept_before_every_dgc_answer(start: Start) -> None:
    """Status, list and 429 answers wait ``latency`` (through the injected sleep); IAM and other paths do not."""
    slept: list[float] = []
    env = start(latency=0.05, rate_limit=3, sleep=slept.append)
    client = env.client()
    assert codes(client, 2) + codes(client, 1, LIST) == [200, 200, 200]
    assert codes(client, 1) == [429]
    assert slept == [0.05] * 4
    client.get("/v2/nothing")
    assert len(slept) == 4
    env.sim.set_fault(kind="latency", delay=1)
    env.limit_clock.advance(1)
    client.get(STATUS)
    assert slept[-1] == pytest.approx(1.05)


def test_latency_from_the_scenario_file_is_real(start: Start) -> None:
    """With the default sleep a status answer takes at least the latency (tiny: no timing goal)."""
    env = start(scenario(SMALL + '\n[limits]\nlatency = "20ms"\n'))
    assert env.sim.latency == pytest.approx(0.02)
    client = env.client()
    began = time.monotonic()
    assert client.get(STATUS).status_code == 200
    assert time.monotonic() - began >= 0.02


def test_latency_does_not_serialise_requests(start: Start) -> None:
    """16 requests sleep at the same time: the sleep is a barrier that only 16 concurrent sleepers pass."""
    barrier = threading.Barrier(16)
    env = start(latency=0.05, rate_limit=0, sleep=lambda seconds: barrier.wait(timeout=20))
    results: list[int] = []

    def worker() -> None:
        with httpx.Client(base_url=env.sim.url, timeout=30) as c:
            results.append(c.get(STATUS).status_code)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [200] * 16
    assert not barrier.broken


def test_stop_does_not_wait_for_the_latency() -> None:
    """A request sleeping a minute of latency does not hold stop() up."""
    sim = Simulator(scenario(), clock=ManualClock(), latency=60.0).start()
    errors: list[BaseException] = []

    def request() -> None:
        try:
            httpx.get(sim.url + STATUS, timeout=30)
        except httpx.TransportError as exc:
            errors.append(exc)

    thread = threading.Thread(target=request)
    thread.start()
    deadline = time.monotonic() + 10
    while not len(sim.requests) and time.monotonic() < deadline:
        time.sleep(0.01)
    began = time.monotonic()
    sim.stop()
    thread.join(30)
    assert time.monotonic() - began < 10
    assert not thread.is_alive()


# --- [limits] in a scenario file -------------------------------------------------------

def test_limits_defaults_and_file_values() -> None:
    assert load_scenario("seed").limits == DEFAULT_LIMITS == Limits(30.0, 0.0)
    assert Simulator(load_scenario("demo")).rate_limit == 30
    sc = scenario(SMALL + '\n[limits]\nrequests_per_second = 12.5\nlatency = "50ms"\n')
    assert sc.limits == Limits(12.5, 0.05)
    sim = Simulator(sc)
    assert (sim.rate_limit, sim.latency) == (12.5, pytest.approx(0.05))
    assert scenario(SMALL + "\n[limits]\nrequests_per_second = 0\nlatency = 0.25\n").limits == Limits(0.0, 0.25)
    over = Simulator(sc, rate_limit=100, latency=None)  # the constructor wins
    assert (over.rate_limit, over.latency) == (100, 0)
    assert Scenario.synthetic(jobs=3).limits == UNLIMITED  # benchmarks of the notifier, as before
    assert Scenario.scale(3).limits == DEFAULT_LIMITS


@pytest.mark.parametrize(("table", "where", "message"), [
    ("requests_per_second = -1", "limits: requests_per_second", "at least 0"),
    ('requests_per_second = "fast"', "limits: requests_per_second", "expected a number"),
    ("requests_per_second = true", "limits: requests_per_second", "expected a number"),
    ("requests_per_second = inf", "limits: requests_per_second", "finite"),
    ('latency = "soon"', "limits: latency", "invalid duration"),
    ("latency = -1", "limits: latency", "must not be negative"),
    ("request_per_second = 5", "limits: request_per_second", "did you mean 'requests_per_second'"),
], ids=["negative", "string", "bool", "inf", "bad-latency", "negative-latency", "typo"])
def test_bad_limits_name_file_and_key(tmp_path: Path, table: str, where: str, message: str) -> None:
    path = tmp_path / "limits.toml"
    path.write_text(f"{SMALL}\n[limits]\n{table}\n")
    with pytest.raises(ConfigError, match=message) as info:
        load_scenario(path)
    assert str(path) in str(info.value) and where in str(info.value)


# --- scale mode: the model -------------------------------------------------------------

def greedy(model: ScaleModel, j: int, periods: int) -> list[tuple[float, str]]:
    """The semantics, computed the slow way: every drawn change, skipped while an accepted one is active."""
    accepted: list[tuple[float, str]] = []
    end = -1.0
    for m in range(periods):
        drawn = model.drawn(j, m)
        if drawn is not None and drawn[0] >= end:
            accepted.append(drawn)
            end = drawn[0] + model.hold
    return accepted


def test_scale_is_deterministic_for_a_seed_in_any_process() -> None:
    """Same seed, same changes (also in another process with another hash seed); another seed, others."""
    one = Scenario.scale(300, seed=5).scale_model
    two = Scenario.scale(300, seed=5).scale_model
    assert one is not None and two is not None
    changes = one.changes(0, 3600)
    assert changes and changes == two.changes(0, 3600)
    other = ScaleModel(jobs=300, seed=6)
    assert other.changes(0, 3600) != changes
    code = ("from notifier.simulator import Scenario; m = Scenario.scale(300, seed=5).scale_model; "
            "print(repr(m.changes(0, 3600)))")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == repr(changes)


def test_share_of_jobs_changing_per_period() -> None:
    """2,000 jobs, 1 % per 60 s period, held 5 min: ~19 starts a period (a few skipped as overlapping)."""
    model = ScaleModel(jobs=2000, change_share=0.01, node_share=0.5, hold=300, period=60, seed=11)
    periods = 100
    starts = [c for c in model.changes(0, periods * 60.0) if c.status == "EXCEPTION"]
    share = len(starts) / (2000 * periods)
    assert 0.0085 <= share <= 0.0105  # expected ~0.0095 (sd ~0.0002)
    node_level = sum(1 for c in starts if c.node) / len(starts)
    assert 0.42 <= node_level <= 0.58
    per_period = collections.Counter(int(c.t // 60) for c in starts)
    assert all(3 <= per_period[m] <= 45 for m in range(periods))
    assert len({c.node for c in starts if c.node}) == 10  # every node is chosen some time


@pytest.mark.parametrize("share", [0.05, 0.5, 1.0])
def test_changes_are_the_greedy_skip_of_overlapping_draws(share: float) -> None:
    """Ground truth = drawn changes, each skipped while an accepted one of its job is active; never two active."""
    model = ScaleModel(jobs=60, nodes=4, change_share=share, hold=150, period=60, seed=2)
    periods = 60
    truth = model.changes(0, periods * 60.0)
    for j in range(model.jobs):
        name = model.job_name(j)
        expected = greedy(model, j, periods)
        starts = [(c.t, c.node) for c in truth if c.job == name and c.status == "EXCEPTION"]
        assert starts == expected
        ends = [(c.t, c.node) for c in truth if c.job == name and c.status == "NORMAL"]
        assert ends == [(s + 150, n) for s, n in expected if s + 150 < periods * 60.0]
        for (s1, _), (s2, _) in itertools.pairwise(expected):
            assert s2 >= s1 + 150  # at most one active change
    assert truth == sorted(truth)
    assert all(isinstance(c, Change) and c.previous != c.status for c in truth)


def test_state_agrees_with_the_ground_truth_in_any_order() -> None:
    """state(j, t) replays changes() exactly, asked forward in time, backward, or at random."""
    model = ScaleModel(jobs=80, nodes=3, change_share=0.2, node_share=0.5, hold=100, period=30, seed=9)
    horizon = 3600.0
    by_job: dict[str, list[Change]] = collections.defaultdict(list)
    for c in model.changes(0, horizon):
        by_job[c.job].append(c)
    rng = random.Random(4)
    forward = [(j, t) for t in range(0, 3600, 7) for j in range(0, 80, 9)]
    questions = forward + forward[::-1] + [(rng.randrange(80), rng.uniform(0, horizon)) for _ in range(2000)]
    for j, t in questions:
        status, since, node = "NORMAL", None, -1
        for c in by_job[model.job_name(j)]:
            if c.t <= t:
                if c.node:
                    node = int(c.node.removeprefix("node_")) if c.status == "EXCEPTION" else -1
                else:
                    status, since = c.status, c.t
        assert tuple(model.state(j, t)) == (status, since, node), (j, t)


def test_scale_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match=r"change_share must be in \[0, 1\]"):
        Scenario.scale(10, change_share=1.5)
    with pytest.raises(ValueError, match="hold must be longer than zero"):
        Scenario.scale(10, hold=0)
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        Scenario.scale(0)


# --- scale mode through the APIs -------------------------------------------------------

def expected_views(changes: list[Change], t: float) -> dict[str, tuple[str, float, dict[str, str]]]:
    """job -> (status, since in scenario seconds, nodes not NORMAL) after replaying changes up to t."""
    views: dict[str, tuple[str, float, dict[str, str]]] = {}
    for c in changes:
        if c.t > t:
            break
        status, since, nodes = views.get(c.job, ("NORMAL", 0.0, {}))
        if c.node:
            nodes = {**nodes, c.node: c.status} if c.status != "NORMAL" else {
                k: v for k, v in nodes.items() if k != c.node}
        else:
            status, since = c.status, c.t
        views[c.job] = (status, since, nodes)
    return views


def test_status_and_list_apis_serve_the_ground_truth(start: Start) -> None:
    """At sampled times (and right at changes) both APIs show exactly what changes() says."""
    sc = Scenario.scale(40, nodes=4, change_share=0.2, node_share=0.5, hold=90, period=30, seed=7)
    env = start(sc, rate_limit=0)
    sim, client = env.sim, env.client()
    horizon = 1800.0
    truth = sim.changes(0, horizon)
    assert truth and len({c.job for c in truth}) > 20
    rng = random.Random(1)
    times = sorted({*(rng.uniform(0, horizon) for _ in range(40)), *(c.t for c in truth[::7]),
                    *(c.t - 0.001 for c in truth[3::11])})
    names = [job.name for job in sc.jobs]
    epoch = sim.epoch_start_ms
    for t in times:
        env.clock.set(t)
        expected = expected_views(truth, t)
        listed = client.get(LIST, params={"jobType": "REAL_TIME", "limit": 1000}).json()["jobs"]
        assert [item["name"] for item in listed] == names
        for item in listed:
            status, since, _ = expected.get(item["name"], ("NORMAL", 0.0, {}))
            assert (item["status"], item["lastUpdateTime"]) == (status, epoch + round(since * 1000)), (t, item)
        for name in rng.sample(names, 6) + [c.job for c in truth if c.t == t]:
            doc = client.get(f"/v1/{PROJECT}/jobs/{name}/status").json()
            status, since, nodes = expected.get(name, ("NORMAL", 0.0, {}))
            assert (doc["status"], doc["lastUpdateTime"]) == (status, epoch + round(since * 1000)), (t, name)
            assert {n["name"]: n["status"] for n in doc["nodes"] if n["status"] != "NORMAL"} == nodes, (t, name)


def first_change(truth: list[Change], *, node_level: bool) -> Change:
    return next(c for c in truth if c.status == "EXCEPTION" and bool(c.node) == node_level)


def test_node_level_change_keeps_the_job_normal_and_its_last_update_time(start: Start) -> None:
    sc = Scenario.scale(200, nodes=10, change_share=0.05, seed=3)
    env = start(sc, rate_limit=0)
    change = first_change(env.sim.changes(0, 3600), node_level=True)
    path = f"/v1/{PROJECT}/jobs/{change.job}/status"
    client = env.client()
    seen = []
    for t in (change.t - 0.001, change.t, change.t + 150, change.t + 299.999, change.t + 300):
        env.clock.set(t)
        doc = client.get(path).json()
        seen.append((doc["status"], doc["lastUpdateTime"],
                     {n["name"]: n["status"] for n in doc["nodes"]}[change.node]))
    before = seen[0][1]
    assert seen == [("NORMAL", before, "NORMAL"), ("NORMAL", before, "EXCEPTION"), ("NORMAL", before, "EXCEPTION"),
                    ("NORMAL", before, "EXCEPTION"), ("NORMAL", before, "NORMAL")]


def test_job_level_change_moves_last_update_time_and_recovers_after_hold(start: Start) -> None:
    sc = Scenario.scale(200, nodes=10, change_share=0.05, hold=120, seed=3)
    env = start(sc, rate_limit=0)
    change = first_change(env.sim.changes(0, 3600), node_level=False)
    path = f"/v1/{PROJECT}/jobs/{change.job}/status"
    client = env.client()
    epoch = env.sim.epoch_start_ms

    def at(t: float) -> tuple[str, int, set[str]]:
        env.clock.set(t)
        doc = client.get(path).json()
        return doc["status"], doc["lastUpdateTime"], {n["status"] for n in doc["nodes"]}

    assert at(change.t - 0.001)[0] == "NORMAL"
    assert at(change.t) == ("EXCEPTION", epoch + round(change.t * 1000), {"NORMAL"})
    assert at(change.t + 119.999) == ("EXCEPTION", epoch + round(change.t * 1000), {"NORMAL"})
    recovered = ("NORMAL", epoch + round((change.t + 120) * 1000), {"NORMAL"})
    assert at(change.t + 120) == recovered
    later = next((c.t for c in env.sim.changes(change.t + 120, 7200) if c.job == change.job
                  and c.t > change.t + 120), 7200.0)
    assert at(later - 0.001) == recovered  # lastUpdateTime stays at the recovery until the next change


def test_scale_table_in_a_scenario_file(tmp_path: Path) -> None:
    path = tmp_path / "scale.toml"
    path.write_text(f'project_id = "{PROJECT}"\n[scale]\njobs = 120\nnodes = 3\nchange_share = 0.1\n'
                    'hold = "2m"\nperiod = "30s"\nseed = 4\n[limits]\nrequests_per_second = 0\n')
    sc = load_scenario(path)
    model = sc.scale_model
    assert model is not None
    assert (model.jobs, model.nodes, model.change_share, model.node_share, model.hold, model.period, model.seed) \
        == (120, 3, 0.1, 0.5, 120.0, 30.0, 4)
    assert [j.name for j in sc.jobs][:2] == ["job_000", "job_001"] and len(sc.jobs[0].nodes) == 3
    assert sc.limits.requests_per_second == 0
    assert model.changes(0, 3600) == ScaleModel(jobs=120, nodes=3, change_share=0.1, hold=120, period=30,
                                                seed=4).changes(0, 3600)


@pytest.mark.parametrize(("text", "where", "message"), [
    ("[scale]\njobs = 10\nchange_share = 2\n", "scale: change_share", r"must be in \[0, 1\]"),
    ("[scale]\nnodes = 3\n", "scale: jobs", "required key is missing"),
    ('[scale]\njobs = 10\nhold = "0s"\n', "scale: hold", "longer than zero"),
    ("[scale]\njobs = 10\nseeds = 1\n", "scale: seeds", "did you mean 'seed'"),
    ('[scale]\njobs = 10\n[[job]]\nname = "x"\n', "job", "not both"),
], ids=["share", "no-jobs", "zero-hold", "typo", "with-jobs"])
def test_bad_scale_table_names_file_and_key(tmp_path: Path, text: str, where: str, message: str) -> None:
    path = tmp_path / "scale.toml"
    path.write_text(f'project_id = "{PROJECT}"\n{text}')
    with pytest.raises(ConfigError, match=message) as info:
        load_scenario(path)
    assert str(path) in str(info.value) and where in str(info.value)


def test_changes_needs_a_scale_scenario() -> None:
    with pytest.raises(ValueError, match="not a scale scenario"):
        Simulator(scenario()).changes(0, 10)


# --- the command line ------------------------------------------------------------------

def test_simulate_help_lists_the_new_flags() -> None:
    out = subprocess.run([sys.executable, "-m", "notifier", "simulate", "--help"], capture_output=True, text=True,
                         check=True, cwd=ROOT, env={**os.environ, "COLUMNS": "200"}).stdout
    for flag in ("--scale N", "--nodes N", "--change-share SHARE", "--node-share SHARE", "--period DURATION",
                 "--hold DURATION", "--seed SEED", "--rate-limit REQ_PER_S", "--latency DURATION"):
        assert flag in out
    assert "default: the scenario's [limits], 30" in " ".join(out.split())
    assert "0 = unlimited" in out and "e.g. 50ms" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["--nodes", "5"], "--nodes only apply with --scale N"),
    (["--scale", "10", "--scenario", "seed"], "not both"),
    (["--scale", "10", "--change-share", "2"], r"--change-share must be in \[0, 1\]"),
    (["--scale", "0"], "--scale must be at least 1"),
    (["--scale", "10", "--hold", "forever"], "--hold: invalid duration"),
    (["--latency", "soon"], "--latency: invalid duration"),
    (["--rate-limit", "-3"], "--rate-limit must be"),
])
def test_simulate_rejects_bad_options(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", *argv]) == 2
    assert message.replace("\\", "") in capsys.readouterr().err


def test_simulate_on_a_port_in_use_says_so_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A simulator left running from an earlier step holds the port: an error and exit 2, not a traceback."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert main(["simulate", "--scenario", "seed", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port}: Address already in use (another simulator")
    assert "Traceback" not in err and err.count("\n") == 1


def test_simulate_options_mean_what_they_say() -> None:
    run = simulation(SimulateOptions(scale=50, nodes=3, change_share=0.2, node_share=0.1, period="30s", hold="2m",
                                     seed=9, rate_limit=0, latency="50ms"))
    model = run.scenario.scale_model
    assert model is not None
    assert (model.jobs, model.nodes, model.change_share, model.node_share, model.period, model.hold, model.seed) \
        == (50, 3, 0.2, 0.1, 30.0, 120.0, 9)
    assert (run.rate_limit, run.latency) == (0, pytest.approx(0.05))
    default = simulation(SimulateOptions())
    assert default.scenario.name == "demo"
    assert Simulator(default.scenario, rate_limit=default.rate_limit).rate_limit == 30


def test_simulate_scale_serves_and_says_its_limits() -> None:
    """`notifier simulate --scale` prints the limits and the scale, serves the jobs, and stops on SIGTERM."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "notifier", "simulate", "--scale", "50", "--port", "0",
                             "--rate-limit", "5", "--latency", "10ms", "--change-share", "0.1"],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(4)]
        assert "scenario 'scale-50x10'" in lines[0]
        assert lines[2].strip() == ("rate limit 5 requests/s per user (AK, token, or all anonymous clients together; "
                                    "beyond it 429 APIG.0308); latency 10 ms per status/list answer")
        assert lines[3].startswith("  scale: 50 jobs x 10 nodes; per 60s period 10.00% of the jobs change")
        url = lines[0].split(" at ")[1].split()[0]
        answers = [httpx.get(f"{url}/v1/{PROJECT}/jobs/job_00/status", timeout=5) for _ in range(6)]
        assert [a.status_code for a in answers[:5]] == [200] * 5
        assert answers[0].json()["name"] == "job_00"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
