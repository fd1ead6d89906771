"""Several sources in one instance: ``[sources.NAME]`` against one simulator serving two projects.

Over real sockets: the simulator serves the projects ``sales`` and ``ops`` with their own AK/SK
(and, for sales, a workspace); notifier polls both and posts to real webhook receivers. Each has
a job named ``job_sms``: two jobs, two alerts, two messages.
"""

from __future__ import annotations

import asyncio
import logging
import textwrap
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from notifier import checks
from notifier.app import App, CycleReport
from notifier.config import load_config
from notifier.core.meta import AUTH_FAILED, CHANNEL_FAILING
from notifier.core.models import Alert, fingerprint, job_key, split_job_key
from notifier.core.mutes import Matchers
from notifier.errors import ConfigError
from notifier.metrics import Metrics
from notifier.render import alert_line
from notifier.runtime import build_clients, shared_rates
from notifier.simulator import ManualClock, Simulator, parse_scenario
from notifier.state import StateStore
from tests.pipeline_support import LinkedClock, Pipeline
from tests.support.two_projects import OPS, OPS_AK, OPS_SK, SALES, SALES_AK, SALES_SK
from tests.support.webhook_receiver import WebhookReceiver
from tests.test_cli import notifier

SCENARIO = f"""
auth = "aksk"

[[project]]
id = "{SALES}"
name = "sales"
workspace = "ws-sales"

[project.credentials]
ak = "{SALES_AK}"
sk = "{SALES_SK}"

[[project.job]]
name = "job_sms"

[[project.job.node]]
name = "SALES_NODE"
type = "DLI SQL"

[[project.job]]
name = "job_sales_only"

[[project.job.node]]
name = "SALES_ONLY_NODE"
type = "DLI SQL"

[[project]]
id = "{OPS}"
name = "ops"

[project.credentials]
ak = "{OPS_AK}"
sk = "{OPS_SK}"

[[project.job]]
name = "job_sms"

[[project.job.node]]
name = "OPS_NODE"
type = "ExecuteDISStream"
"""

NODE_EXCEPTION = """
[[rule]]
name = "node-exception"
scope = "node"
status = ["EXCEPTION"]
severity = "critical"
"""

ENV = {"SALES_AK": SALES_AK, "SALES_SK": SALES_SK, "OPS_AK": OPS_AK, "OPS_SK": OPS_SK, "WRONG_SK": "not-the-sk"}


def source_toml(name: str, url: str, project: str, ak: str, *, sk: str | None = None, workspace: str = "",
                jobs: str = 'names = ["job_sms"]', extra: str = "", timeout: str = "2s") -> str:
    """A ``[sources.NAME]`` table (AK/SK from the env vars ``ak``/``sk``, no retries) and its jobs."""
    ws = f'workspace = "{workspace}"\n' if workspace else ""
    return (f'[sources.{name}]\nendpoint = "{url}"\nproject_id = "{project}"\n{ws}auth = "aksk"\n'
            f'ak_env = "{ak}_AK"\nsk_env = "{sk or ak + "_SK"}"\ntimeout = "{timeout}"\nretries = 0\n{extra}'
            f'\n[sources.{name}.jobs]\n{jobs}\n\n')


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    scenario = parse_scenario(tomllib.loads(SCENARIO), file="two.toml", name="two")
    with Simulator(scenario, clock=ManualClock()) as s:
        yield s


@pytest.fixture
def clock(sim: Simulator) -> LinkedClock:
    return LinkedClock(sim)


@pytest.fixture
def hooks() -> Iterator[tuple[WebhookReceiver, WebhookReceiver]]:
    """Two receivers: the notifier format and Alertmanager's webhook format."""
    with WebhookReceiver() as plain, WebhookReceiver() as am:
        yield plain, am


Write = Callable[..., Path]


@pytest.fixture
def write(tmp_path: Path, hooks: tuple[WebhookReceiver, WebhookReceiver]) -> Write:
    """Write notifier.toml (the given source tables, two webhook channels) and the rules; returns its path."""
    plain, am = hooks

    def write_(sources: str, rules: str = NODE_EXCEPTION, channels: str = "") -> Path:
        (tmp_path / "rules").mkdir(exist_ok=True)
        (tmp_path / "rules" / "rules.toml").write_text(textwrap.dedent(rules))
        path = tmp_path / "notifier.toml"
        path.write_text(sources + '[state]\npath = "state.db"\n\n[paths]\nrules = "rules"\n\n'
                        f'[channels.hook]\ntype = "webhook"\nurl = "{plain.url}"\n\n'
                        f'[channels.am]\ntype = "webhook"\nurl = "{am.url}"\nformat = "alertmanager"\n\n'
                        + channels)
        path.chmod(0o600)
        return path

    return write_


@pytest.fixture
def pipelines(clock: LinkedClock) -> Iterator[Callable[[Path], Pipeline]]:
    made: list[Pipeline] = []

    def make(path: Path) -> Pipeline:
        made.append(Pipeline(path, clock))
        return made[-1]

    yield make
    for p in made:
        p.close()


def two_sources(sim: Simulator, *, ops_sk: str | None = None) -> str:
    return (source_toml("sales", sim.url, SALES, "SALES", workspace="ws-sales")
            + source_toml("ops", sim.url, OPS, "OPS", sk=ops_sk))


def alerts_of(hook: WebhookReceiver) -> list[dict[str, Any]]:
    return [a for r in hook.requests for a in r.json["alerts"]]


def fail_both(sim: Simulator) -> None:
    sim.set_node_status("job_sms", "SALES_NODE", "EXCEPTION", project="sales")
    sim.set_node_status("job_sms", "OPS_NODE", "EXCEPTION", project="ops")


# --- the pure helpers ---------------------------------------------------------------------

@pytest.mark.parametrize(("source", "job", "key"), [
    ("default", "job_sms", "job_sms"),
    ("prod", "job_sms", "prod/job_sms"),
    ("stage-1", "a_b", "stage-1/a_b"),
], ids=["default-keeps-bare-names", "named", "dashes"])
def test_job_keys_round_trip(source: str, job: str, key: str) -> None:
    """A job of source S is ``S/job`` in the state; the default source keeps the bare name."""
    assert job_key(source, job) == key
    assert split_job_key(key) == (source, job)


def test_a_default_source_alert_keeps_its_fingerprint() -> None:
    """The fingerprint of a default-source alert is what it was before sources existed; another source's differs."""
    before = fingerprint("node-exception", "job_sms", "N")
    assert fingerprint("node-exception", job_key("default", "job_sms"), "N") == before
    assert fingerprint("node-exception", job_key("prod", "job_sms"), "N") != before


def test_a_source_s_meta_alerts_are_about_its_own_job_and_name_it() -> None:
    """Source-down of prod is the job ``prod/notifier`` and says "source prod"; the default's keeps its old words."""
    from datetime import datetime, timezone

    from notifier.core.lifecycle import firing_alert
    from notifier.core.meta import DEFAULT_META, SOURCE_DOWN, Health, Streak, meta_conditions, meta_rules
    from notifier.core.models import AlertState

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    rule = next(r for r in meta_rules(DEFAULT_META, ("c",)) if r.name == SOURCE_DOWN)
    said = {}
    for source in ("default", "prod"):
        health = Health(source_failures=Streak(3, t0), source_error="timed out", source=source)
        (cond,) = meta_conditions(health, DEFAULT_META, t0).conditions
        state = AlertState(fingerprint(cond.rule, cond.job, cond.node), cond.rule, cond.job, cond.node, "firing", t0)
        alert = firing_alert(rule, state, None, {}, t0, reminder=False, detail=cond.detail)
        said[source] = (cond.job, alert.source, alert.job, alert.summary)
    assert said["default"][:3] == ("notifier", "default", "notifier")
    assert said["default"][3].startswith("DGC source failing for")
    assert said["prod"][:3] == ("prod/notifier", "prod", "notifier")
    assert said["prod"][3].startswith("DGC source prod failing for")


# --- end to end ----------------------------------------------------------------------------

def test_two_sources_alert_with_their_own_source_everywhere(write: Write, pipelines, sim: Simulator,  # type: ignore[no-untyped-def]
                                                            hooks) -> None:
    """The same job name failing in two sources: two alerts, two fingerprints, two messages, each naming its source."""
    plain, am = hooks
    p = pipelines(write(two_sources(sim)))
    fail_both(sim)
    report = p.cycle()
    assert not report.source_failed and set(report.sources) == {"sales", "ops"}
    assert sorted(r.json["group"] for r in plain.requests) == ["ops/job_sms", "sales/job_sms"]
    alerts = {a["source"]: a for a in alerts_of(plain)}
    assert set(alerts) == {"sales", "ops"}
    assert alerts["sales"]["job"] == alerts["ops"]["job"] == "job_sms"
    assert (alerts["sales"]["node"], alerts["ops"]["node"]) == ("SALES_NODE", "OPS_NODE")
    assert alerts["sales"]["fingerprint"] != alerts["ops"]["fingerprint"]
    labels = {r.json["groupLabels"]["source"]: r.json["alerts"][0]["labels"] for r in am.requests}
    assert labels["sales"]["project_id"] == SALES and labels["sales"]["workspace"] == "ws-sales"
    assert labels["ops"]["project_id"] == OPS and "workspace" not in labels["ops"]
    assert labels["sales"]["job"] == labels["ops"]["job"] == "job_sms"
    stored = {a.job for a in p.store.load_alerts().values()}
    assert stored == {"sales/job_sms", "ops/job_sms"}

    sim.set_node_status("job_sms", "OPS_NODE", "NORMAL", project="ops")  # one recovers: only its resolve goes out
    plain.clear()
    p.clock.advance(60)
    p.cycle()
    assert [(a["source"], a["status"]) for a in alerts_of(plain)] == [("ops", "resolved")]


def test_an_alertmanager_channel_is_told_every_source_s_alerts_with_their_labels(  # type: ignore[no-untyped-def]
        write: Write, pipelines, sim: Simulator, clock: LinkedClock) -> None:
    """The Alertmanager sync states the whole picture: both sources' alerts, each with its own source's labels."""
    with WebhookReceiver() as api:
        p = pipelines(write(two_sources(sim), channels=f'[channels.alertmanager]\ntype = "alertmanager"\n'
                                                       f'url = "{api.base_url}"\n'))
        fail_both(sim)
        p.cycle()
        latest = api.requests[-1].json
        labels = sorted((a["labels"]["source"], a["labels"]["project_id"], a["labels"]["job"]) for a in latest)
        assert labels == [("ops", OPS, "job_sms"), ("sales", SALES, "job_sms")]
        sim.set_node_status("job_sms", "OPS_NODE", "NORMAL", project="ops")
        clock.advance(60)
        p.cycle()
        latest = api.requests[-1].json
        ends = {a["labels"]["source"]: a.get("endsAt", "") for a in latest}
        assert set(ends) == {"sales", "ops"} and ends["ops"] < ends["sales"]  # ops resolved now, sales still firing


def test_a_failing_channel_is_one_alert_whatever_the_number_of_sources(write: Write, pipelines,  # type: ignore[no-untyped-def]
                                                                        sim: Simulator, hooks,
                                                                        clock: LinkedClock) -> None:
    """notifier-channel-failing is about notifier, not a source: judged once, one alert (job "notifier", bare)."""
    plain, am = hooks
    am.respond_with(500)
    p = pipelines(write(two_sources(sim), channels='[meta]\nchannel_stuck = "2m"\n'))
    fail_both(sim)
    for _ in range(4):
        p.cycle()
        clock.advance(60)
    p.cycle()
    failing = [a for a in alerts_of(plain) if a["rule"] == CHANNEL_FAILING]
    assert [(a["status"], a["job"], a["node"], a["source"]) for a in failing] == [
        ("firing", "notifier", "am", "default")]
    assert [a.job for a in p.store.load_alerts().values() if a.rule == CHANNEL_FAILING] == ["notifier"]


def test_same_job_in_two_sources_is_two_messages_with_the_source_in_the_text(write: Write, pipelines,  # type: ignore[no-untyped-def]
                                                                              sim: Simulator, hooks) -> None:
    """Message grouping is per (source, job): one message each; the text and the silence hint name the source."""
    plain, am = hooks
    p = pipelines(write(two_sources(sim)))
    fail_both(sim)
    p.cycle()
    assert len(plain.requests) == 2 and len(am.requests) == 2
    hints = sorted(r.json["alerts"][0]["annotations"]["notifier_silence"] for r in am.requests)
    assert hints[0].startswith("notifier silence add --rule node-exception --source ops --job job_sms --node OPS_NODE")
    assert "--source sales --job job_sms" in hints[1]
    lines = sorted(alert_line(a, p.clock()) for a in
                   (_alert(p, "sales"), _alert(p, "ops")))
    assert "ops/job_sms/OPS_NODE" in lines[0] and "sales/job_sms/SALES_NODE" in lines[1]


def _alert(p: Pipeline, source: str) -> Alert:
    """The firing alert of ``source`` as a message shows it (rebuilt from the stored state)."""
    from notifier.core.lifecycle import firing_alert

    (state,) = [a for a in p.store.load_alerts().values() if a.job.startswith(f"{source}/")]
    rule = next(r for r in p.runtime.all_rules if r.name == state.rule)
    alert = firing_alert(rule, state, None, {}, p.clock(), reminder=False)
    assert (alert.source, alert.job) == (source, "job_sms")
    return alert


def test_silences_and_acks_match_bare_job_names_and_an_optional_source(write: Write, pipelines,  # type: ignore[no-untyped-def]
                                                                      sim: Simulator) -> None:
    """``--job job_sms`` covers both sources' job_sms; ``--source ops`` narrows it to ops (silence add and ack)."""
    path = write(two_sources(sim))
    p = pipelines(path)
    fail_both(sim)
    p.cycle()
    p.close()
    c = ("-c", str(path))
    added = notifier("silence", "add", "--source", "ops", "--job", "job_sms", "--for", "1h", "--comment", "x", *c)
    assert added.returncode == 0, added.stderr
    listed = notifier("silence", "list", *c).stdout
    row = next(line for line in listed.splitlines() if "source=ops job=job_sms" in line)
    assert row.split()[-3] == "1"  # it mutes ops' alert only
    acked = notifier("ack", "--source", "ops", "--job", "job_sms", "--author", "bob", *c)
    assert acked.returncode == 0 and "ops/job_sms/OPS_NODE" in acked.stdout and "sales/" not in acked.stdout
    both = notifier("ack", "--job", "job_sms", "--author", "carol", *c)
    assert both.returncode == 0 and len(both.stdout.strip().splitlines()) == 2  # both sources' job_sms
    slash = notifier("silence", "add", "--job", "ops/job_sms", "--for", "1h", "--comment", "x", *c)
    assert slash.returncode == 2 and "--source 'ops' --job 'job_sms'" in slash.stderr


def test_matchers_store_the_source_in_the_job_column() -> None:
    """A source glob is stored as ``SOURCE/JOB`` (no schema change); a stored bare glob matches every source."""
    ops = Matchers(job="job_*", source="ops")
    assert ops.match("r", "ops/job_sms", "N") and not ops.match("r", "sales/job_sms", "N")
    assert not ops.match("r", "job_sms", "N")  # the default source's job
    assert Matchers.stored("*", ops.stored_job, "*") == Matchers(job="job_*", source="ops")
    every = Matchers.stored("*", "job_*", "*")
    assert every.source == "*" and every.match("r", "ops/job_sms", None) and every.match("r", "job_sms", None)


def test_a_rule_selects_its_sources(write: Write, pipelines, sim: Simulator, hooks) -> None:  # type: ignore[no-untyped-def]
    """``sources = ["sal*"]`` fires for sales only; ``jobs`` still matches the bare job name."""
    plain, _ = hooks
    rules = NODE_EXCEPTION + 'sources = ["sal*"]\njobs = ["job_sms"]\n'
    p = pipelines(write(two_sources(sim), rules))
    fail_both(sim)
    p.cycle()
    assert [(a["source"], a["job"]) for a in alerts_of(plain)] == [("sales", "job_sms")]


def test_bad_credentials_of_one_source_never_stop_the_other(write: Write, pipelines, sim: Simulator,  # type: ignore[no-untyped-def]
                                                          hooks) -> None:
    """ops' SK is wrong: notifier-auth-failed names ops, and sales' node alert goes out in the same cycle."""
    plain, _ = hooks
    p = pipelines(write(two_sources(sim, ops_sk="WRONG_SK")))
    fail_both(sim)
    report = p.cycle()
    assert report.source_failed and report.sources["ops"].source_failed
    assert not report.sources["sales"].source_failed
    got = {(a["rule"], a["source"]) for a in alerts_of(plain)}
    assert ("node-exception", "sales") in got and (AUTH_FAILED, "ops") in got
    assert ("node-exception", "ops") not in got
    auth = next(a for a in alerts_of(plain) if a["rule"] == AUTH_FAILED)
    assert "of source ops" in auth["summary"] and "OPS_AK" in auth["summary"]  # the env var's name, never a value
    assert OPS_SK not in str(alerts_of(plain)) and "not-the-sk" not in str(alerts_of(plain))

    metrics = Metrics()
    metrics.observe_cycle(report, 0.1, p.app.poller.alerts, p.app.poller.entities)
    text = generate_latest(metrics.registry).decode()
    assert 'notifier_api_requests_total{source="ops"} 1.0' in text
    assert 'notifier_api_requests_total{source="sales"} 1.0' in text
    assert 'notifier_source_failing_cycles{source="ops"} 1.0' in text
    assert 'notifier_source_failing_cycles{source="sales"} 0.0' in text

    shown = notifier("alerts", "-c", str(p.config_path)).stdout
    assert "SOURCE FAILING (ops): the last 1 cycle could" in shown and "SOURCE FAILING (sales)" not in shown
    assert "POLLING sales: 1 job," in shown and "POLLING ops" not in shown  # ops never had a good cycle
    assert "sales/job_sms/SALES_NODE" in shown and "ops/notifier/auth" in shown


def test_sources_of_one_user_share_one_limiter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """Same AK (from two env vars) is one user: one limiter at the smaller rate, a warning, the budget split."""
    monkeypatch.setenv("COPY_AK", SALES_AK)
    url = "http://127.0.0.1:9"
    path = tmp_path / "n.toml"
    (tmp_path / "rules").mkdir()
    path.write_text(source_toml("a", url, SALES, "SALES", extra="max_requests_per_second = 20\n")
                    + source_toml("b", url, OPS, "COPY", sk="SALES_SK", extra="max_requests_per_second = 10\n")
                    + source_toml("c", url, OPS, "OPS") + '[paths]\nrules = "rules"\n')
    path.chmod(0o600)
    config = load_config(path)

    async def build() -> tuple[Any, dict[str, float]]:
        clients = build_clients(config)
        try:
            return ({n: c.limiter for n, c in clients.items()}, shared_rates(config, clients))
        finally:
            for c in clients.values():
                await c.aclose()

    with caplog.at_level("WARNING"):
        limiters, rates = asyncio.run(build())
    assert limiters["a"] is limiters["b"] and limiters["c"] is not limiters["a"]
    assert limiters["a"].rate == 10 and limiters["c"].rate == 20
    assert rates == {"a": 5.0, "b": 5.0, "c": 20.0}
    assert "sources.a, sources.b: max_requests_per_second" in caplog.text and SALES_AK not in caplog.text
    report = checks.check(path)
    assert any("using 10 requests/s" in w for w in report.warnings)


def test_check_warns_about_a_rule_whose_sources_match_none(write: Write, sim: Simulator) -> None:
    """A ``sources`` glob matching no configured source can never fire: ``notifier check`` says so, per rule."""
    report = checks.check(write(two_sources(sim), NODE_EXCEPTION + 'sources = ["prod"]\n'))
    assert any("sources: 'prod' matches none of the configured sources (sales, ops)" in w for w in report.warnings)
    assert report.exit_code == 0 and "polling (sales):" in report.summary and "polling (ops):" in report.summary


def test_check_with_a_discovering_source_says_when_its_jobs_are_known(write: Write, sim: Simulator) -> None:
    """Offline, a discovering source's job count is unknown: the summary says so instead of omitting the source."""
    path = write(source_toml("sales", sim.url, SALES, "SALES", workspace="ws-sales")
                 + source_toml("ops", sim.url, OPS, "OPS", jobs="discover = true"))
    report = checks.check(path)
    assert report.exit_code == 0 and "polling (sales): 1 job at 20 req/s" in report.summary, report.summary
    assert "polling (ops): the jobs discovered at start (--online counts them" in report.summary
    assert not sim.requests


def test_check_online_lists_a_source_while_another_does_not_answer(write: Write, sim: Simulator) -> None:
    """An unanswering source fails with its own timeout and its own error line; the others are listed and counted."""
    sim.set_fault(kind="latency", delay=3, project="ops", endpoint="list")
    path = write(source_toml("ops", sim.url, OPS, "OPS", jobs="discover = true", timeout="0.5s")
                 + source_toml("sales", sim.url, SALES, "SALES", workspace="ws-sales", jobs="discover = true"))
    report = checks.check(path, online=True)
    assert report.exit_code == 1 and "online (sales): 2 REAL_TIME jobs listed, 2 would be watched" in report.summary
    (error,) = report.source_errors
    assert "sources.ops" in error and "could not ask the list API" in error and "polling (ops)" not in report.summary


def test_a_single_source_state_file_opens_as_the_default_source_without_refiring(  # type: ignore[no-untyped-def]
        write: Write, pipelines, sim: Simulator, hooks, clock: LinkedClock) -> None:
    """A firing alert of a lone [source] stays firing, unsent, when the config becomes [sources.default] + another."""
    plain, _ = hooks
    lone = (f'[source]\nendpoint = "{sim.url}"\nproject_id = "{SALES}"\nworkspace = "ws-sales"\nauth = "aksk"\n'
            'ak_env = "SALES_AK"\nsk_env = "SALES_SK"\ntimeout = "2s"\nretries = 0\n\n'
            '[jobs]\nnames = ["job_sms"]\n\n')
    fail_both(sim)
    p = pipelines(write(lone))
    p.cycle()
    (before,) = alerts_of(plain)
    assert before["source"] == "default" and before["job"] == "job_sms"
    p.close()

    plain.clear()
    p = pipelines(write(source_toml("default", sim.url, SALES, "SALES", workspace="ws-sales")
                        + source_toml("ops", sim.url, OPS, "OPS")))
    clock.advance(60)
    p.cycle()
    assert [(a["source"], a["node"]) for a in alerts_of(plain)] == [("ops", "OPS_NODE")]  # default's: no re-fire
    stored = p.store.load_alerts()
    assert before["fingerprint"] in stored and stored[before["fingerprint"]].job == "job_sms"

    sim.set_node_status("job_sms", "SALES_NODE", "NORMAL", project="sales")
    plain.clear()
    clock.advance(60)
    p.cycle()
    assert [(a["source"], a["status"], a["fingerprint"]) for a in alerts_of(plain)] == [
        ("default", "resolved", before["fingerprint"])]


def test_a_removed_source_is_forgotten_and_its_alerts_resolve_once(write: Write, pipelines,  # type: ignore[no-untyped-def]
                                                                  sim: Simulator, hooks, clock: LinkedClock) -> None:
    """ops leaves the config: its firing alert resolves once, its state goes; sales is untouched."""
    plain, _ = hooks
    fail_both(sim)
    p = pipelines(write(two_sources(sim)))
    p.cycle()
    p.close()
    plain.clear()
    p = pipelines(write(source_toml("sales", sim.url, SALES, "SALES", workspace="ws-sales")))
    clock.advance(60)
    p.cycle()
    assert [(a["source"], a["status"]) for a in alerts_of(plain)] == [("ops", "resolved")]
    assert {a.job for a in p.store.load_alerts().values()} == {"sales/job_sms"}
    assert not [k for k in p.store.load_entities() if k[0].startswith("ops/")]
    plain.clear()
    clock.advance(60)
    p.cycle()
    assert plain.requests == []


def test_a_timing_out_source_never_holds_back_the_others_round(write: Write, sim: Simulator,  # type: ignore[no-untyped-def]
                                                              clock: LinkedClock) -> None:
    """While ops' requests time out, sales' round is committed (and heard by ``on_round``) long before ops' ends."""
    fail_both(sim)
    sim.set_fault(kind="latency", delay=2.5, project="ops")  # past the 2 s timeout
    path = write(two_sources(sim))

    async def main() -> tuple[list[tuple[str, float, bool]], CycleReport | None]:
        app = await App.open(path, clock=clock)
        heard: list[tuple[str, float, bool]] = []
        started = time.monotonic()
        try:
            report = await app.cycle_until(None, on_round=lambda r: heard.append(
                (r.source, time.monotonic() - started, r.source_failed)))
        finally:
            await app.aclose()
        return heard, report

    heard, report = asyncio.run(main())
    assert [(s, failed) for s, _, failed in heard] == [("sales", False), ("ops", True)]
    assert heard[0][1] < 1.5 <= heard[1][1]
    assert report is not None and report.source_failed and report.sources["ops"].errors[0].kind == "timeout"


SLOW = 2.5  # seconds ops takes to answer: well past sales' round, within its 5 s timeout


def slow_ops(write: Write, sim: Simulator) -> Path:
    """Both sources' job_sms failing; ops answers every request SLOW seconds late."""
    fail_both(sim)
    sim.set_fault(kind="latency", delay=SLOW, project="ops")
    return write(source_toml("sales", sim.url, SALES, "SALES", workspace="ws-sales")
                 + source_toml("ops", sim.url, OPS, "OPS", timeout="5s"))


async def leave_ops_late(app: App, on_round: Callable[[CycleReport], None] | None = None) -> CycleReport | None:
    """A cycle ended (``enough``) as soon as sales' round is in: ops goes on alone."""
    enough = asyncio.Event()

    def heard(report: CycleReport) -> None:
        if report.source == "sales":
            enough.set()
        if on_round is not None:
            on_round(report)

    return await app.cycle_until(None, enough=enough, on_round=heard)


def test_a_slow_source_goes_on_alone_and_is_not_started_again_while_it_runs(  # type: ignore[no-untyped-def]
        write: Write, sim: Simulator, clock: LinkedClock, caplog: pytest.LogCaptureFixture) -> None:
    """``enough`` ends a cycle with the sources done; ops, still polling, joins the cycle in which it ends."""
    path = slow_ops(write, sim)

    async def main() -> tuple[CycleReport | None, int, CycleReport | None]:
        app = await App.open(path, clock=clock)
        try:
            first = await leave_ops_late(app)
            ops_asked = len(sim.requests_for("ops"))
            second = await app.cycle_until(None)  # sales again; ops' first cycle, which it waits for
        finally:
            await app.aclose()
        return first, ops_asked, second

    with caplog.at_level(logging.INFO, logger="notifier.app"):
        first, ops_asked, second = asyncio.run(main())
    done = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cycle done")]
    assert len(done) == 2 and "sources_late=ops" in done[0] and "sources_late" not in done[1]
    assert first is not None and set(first.sources) == {"sales"} and first.firing == 1
    assert second is not None and set(second.sources) == {"sales", "ops"}
    assert not second.sources["ops"].source_failed and second.sources["ops"].firing == 1
    assert len(sim.requests_for("ops")) == ops_asked  # ops' cycle was not started a second time
    assert len(sim.requests_for("sales")) == 2  # a status request each cycle


def test_a_late_source_that_ended_between_cycles_is_collected_and_started_again(  # type: ignore[no-untyped-def]
        write: Write, sim: Simulator, clock: LinkedClock, caplog: pytest.LogCaptureFixture) -> None:
    path = slow_ops(write, sim)

    async def main() -> CycleReport | None:
        app = await App.open(path, clock=clock)
        try:
            await leave_ops_late(app)
            while "ops" in app.late_progress():  # ops' late cycle ends between two cycles
                await asyncio.sleep(0.05)
            sim.clear_faults()
            return await app.cycle_until(None)
        finally:
            await app.aclose()

    with caplog.at_level(logging.WARNING):
        report = asyncio.run(main())
    assert report is not None and set(report.sources) == {"sales", "ops"}
    assert report.sources["ops"].firing == 1
    assert len([r for r in sim.requests_for("ops") if "/status" in r.path]) == 2  # started again at once
    assert not [r for r in caplog.records if "still running" in r.getMessage()]


def test_a_reload_abandons_a_late_source_and_one_that_removes_it_resolves_its_alert_once(  # type: ignore[no-untyped-def]
        write: Write, sim: Simulator, clock: LinkedClock, hooks) -> None:
    """A late cycle never commits with the replaced wiring: ops' alert, fired before, is resolved and stays so."""
    plain, _ = hooks
    fail_both(sim)
    path = write(two_sources(sim))

    async def main() -> list[CycleReport | None]:
        app = await App.open(path, clock=clock)
        try:
            reports = [await app.cycle_until(None)]  # both fire
            app.deliver()
            sim.set_fault(kind="latency", delay=SLOW, project="ops")
            clock.advance(60)
            reports.append(await leave_ops_late(app))
            write(source_toml("sales", sim.url, SALES, "SALES", workspace="ws-sales"))  # ops removed
            await app.retire(app.adopt(app.load()))  # ops' late fetch is abandoned: never committed
            for _ in range(2):
                clock.advance(60)
                reports.append(await app.cycle_until(None))
                app.deliver()
        finally:
            await app.aclose()
        return reports

    reports = asyncio.run(main())
    ops = [(a["status"], r.json["group"]) for r in plain.requests for a in r.json["alerts"]
           if r.json["group"].startswith("ops/")]
    assert ops == [("firing", "ops/job_sms"), ("resolved", "ops/job_sms")]
    assert all("ops" not in r.sources for r in reports[1:] if r is not None)


def test_a_hung_late_source_is_seen_by_the_watchdog(write: Write, sim: Simulator,  # type: ignore[no-untyped-def]
                                                   clock: LinkedClock) -> None:
    """Past its cycle, a source is judged by its own requests: its silence counts, another's answers do not."""
    from notifier.daemon import Daemon

    path = slow_ops(write, sim)

    async def main() -> tuple[float, float, float]:
        app = await App.open(path, clock=clock)
        try:
            await leave_ops_late(app)
            now = time.monotonic()
            fresh = Daemon(app).stalled_for()
            later = Daemon(app, monotonic=lambda: now + 1000).stalled_for()
            await app.settle()
            return fresh, later, Daemon(app, monotonic=lambda: now + 1000).stalled_for()
        finally:
            await app.aclose()

    fresh, later, settled = asyncio.run(main())
    assert fresh < SLOW and later > 990 and settled == 0.0


def test_failing_commits_of_several_sources_fail_the_cycle_and_every_error_is_retrieved(  # type: ignore[no-untyped-def]
        write: Write, sim: Simulator, clock: LinkedClock, caplog: pytest.LogCaptureFixture) -> None:
    import gc

    from notifier.errors import StateError

    path = write(two_sources(sim))

    async def main() -> str:
        app = await App.open(path, clock=clock)

        def refuse(wiring: Any, fetched: Any) -> CycleReport:
            raise StateError(f"disk full ({fetched.source})")

        app.poller.apply = refuse  # type: ignore[method-assign]
        try:
            with pytest.raises(StateError) as raised:
                await app.cycle_until(None)
            gc.collect()
            await asyncio.sleep(0)
            return str(raised.value)
        finally:
            await app.aclose()

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        error = asyncio.run(main())
    assert error in ("disk full (sales)", "disk full (ops)")
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


def test_the_service_keeps_polling_a_source_while_another_hangs(  # type: ignore[no-untyped-def]
        write: Write, sim: Simulator, clock: LinkedClock, hooks, caplog: pytest.LogCaptureFixture) -> None:
    """The daemon ends each cycle at its interval: sales is polled every cycle while ops' one request hangs."""
    from notifier.daemon import Daemon

    fail_both(sim)
    sim.set_fault(kind="latency", delay=60.0, project="ops")
    path = write(source_toml("sales", sim.url, SALES, "SALES", workspace="ws-sales")
                 + source_toml("ops", sim.url, OPS, "OPS", timeout="60s")
                 + '[schedule]\ninterval = "1s"\n')
    plain, am = hooks
    p = Pipeline(path, clock)
    try:
        daemon = Daemon(p.app)
        with caplog.at_level(logging.INFO):
            p.run(daemon.serve(max_cycles=3, duration=30))
        # three cycles of sales, each a status request; one of ops, abandoned at the shutdown
        assert len(sim.requests_for("sales")) == 3 and len(sim.requests_for("ops")) == 1
        assert sum("previous cycle is still running" in r.getMessage() for r in caplog.records) >= 2
        assert {a["labels"]["source"] for a in alerts_of(am)} == {"sales"}
        assert [a["job"] for r in plain.requests for a in r.json["alerts"]] == ["job_sms"]
    finally:
        p.close()


# --- config -------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "message"), [
    ('[source]\nendpoint = "http://x"\nproject_id = "p"\n[sources.a]\nendpoint = "http://x"\n',
     "source: [source] and [sources.NAME] do not mix"),
    ('[sources.a]\nendpoint = "http://x"\nproject_id = "p"\n[sources.a.jobs]\nnames = ["j"]\n[jobs]\nnames = ["j"]\n',
     "jobs: [jobs] and [sources.NAME] do not mix"),
    ('[sources."a b"]\nendpoint = "http://x"\n', "sources: a b: a source name is letters"),
    ('[sources.a]\nendpoint = "http://x"\nproject_id = "p"\n', "sources.a: jobs: each source has its own jobs"),
    ('[sources.a]\nendpoint = "http://x"\nproject_id = "p"\n[sources.a.jobs]\nnams = ["j"]\n',
     "sources.a.jobs: nams: unknown key"),
    ('[sources.a]\nendpoint = "http://x"\nprojct_id = "p"\n[sources.a.jobs]\nnames = ["j"]\n',
     "sources.a: projct_id: unknown key"),
    ('[sources.a]\nendpoint = "http://x"\nproject_id = "p"\n[sources.a.jobs]\ndiscover = false\n',
     "sources.a.jobs: names: no jobs to watch"),
    ('[sources]\n', "sources: no [sources.NAME] table"),
], ids=["source-and-sources", "jobs-and-sources", "bad-name", "no-jobs", "jobs-typo", "source-typo", "nothing-watched",
        "empty"])
def test_config_errors_name_file_table_and_key(tmp_path: Path, text: str, message: str) -> None:
    """Every error names the file, the table (``sources.a``, ``sources.a.jobs``) and the key."""
    path = tmp_path / "n.toml"
    path.write_text(text + '[channels.c]\ntype = "console"\n')
    path.chmod(0o600)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: {message}"), str(caught.value)


def test_a_lone_source_is_the_source_named_default(tmp_path: Path) -> None:
    """``[source]`` + ``[jobs]`` is ``Config.sources == {"default": ...}``; [sources.*] keep their order."""
    path = tmp_path / "n.toml"
    path.write_text('[source]\nendpoint = "http://x"\nproject_id = "p"\n[jobs]\nnames = ["j"]\n')
    path.chmod(0o600)
    config = load_config(path)
    assert list(config.sources) == ["default"] and config.sources["default"].jobs.names == ("j",)
    path.write_text('[sources.z]\nendpoint = "http://x"\nproject_id = "p"\n[sources.z.jobs]\nnames = ["j"]\n'
                    '[sources.a]\nendpoint = "http://y"\nproject_id = "q"\n[sources.a.jobs]\ndiscover = true\n')
    config = load_config(path)
    assert list(config.sources) == ["z", "a"] and config.source.name == "z" and config.jobs.names == ("j",)
    assert config.sources["a"].table == "sources.a" and config.sources["a"].jobs.discover


def test_a_missing_secret_names_the_source_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A source whose AK env var is unset: the error names sources.NAME."""
    monkeypatch.delenv("OPS_AK")
    path = tmp_path / "n.toml"
    path.write_text(source_toml("ops", "http://127.0.0.1:9", OPS, "OPS"))
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=r"sources\.ops: .*OPS_AK"):
        build_clients(load_config(path))


def test_state_keys_of_a_store(tmp_path: Path) -> None:
    """Meta keys of the default source are the old ones; another source's carry its name."""
    from notifier.state import SOURCE_FAILURES_KEY, meta_key

    assert meta_key(SOURCE_FAILURES_KEY, "default") == SOURCE_FAILURES_KEY
    assert meta_key(SOURCE_FAILURES_KEY, "prod") == f"{SOURCE_FAILURES_KEY}:prod"
    with StateStore.open(tmp_path / "s.db") as store:
        assert store.get_meta(meta_key(SOURCE_FAILURES_KEY, "prod")) is None


def test_test_channel_speaks_of_the_first_source(write: Write, sim: Simulator, hooks) -> None:  # type: ignore[no-untyped-def]
    """The sample alert is the first source's: its name, its job key, its project_id and workspace labels."""
    plain, am = hooks
    path = write(two_sources(sim))
    for channel in ("hook", "am"):
        done = notifier("test-channel", channel, "-c", str(path))
        assert done.returncode == 0, done.stderr
    [sent] = plain.requests[0].json["alerts"]
    assert sent["source"] == "sales" and plain.requests[0].json["group"] == f"sales/{sent['job']}"
    [labelled] = alerts_of(am)
    assert labelled["labels"]["source"] == "sales" and labelled["labels"]["project_id"] == SALES
    assert labelled["labels"]["workspace"] == "ws-sales"


def test_once_names_every_failing_source_even_when_its_discovery_failed(write: Write,  # type: ignore[no-untyped-def]
                                                                        sim: Simulator) -> None:
    path = write(source_toml("sales", sim.url, SALES, "SALES", workspace="ws-sales")
                 + source_toml("ops", sim.url, OPS, "OPS", sk="WRONG_SK", jobs="discover = true"))
    done = notifier("once", "-c", str(path))
    assert done.returncode == 1
    [line] = [line for line in done.stderr.splitlines() if line.startswith("source error")]
    assert line.startswith("source error (ops): job discovery failed: ") and "HTTP 401" in line
    assert "not-the-sk" not in done.stderr
