"""``notifier demo``: one simulator serving two projects, watched as two sources.

The scenario (``demo_sources.toml``) over real sockets with a manual clock; the generated
config (two ``[sources.NAME]`` tables, owner-only, credentials by file and by environment
variable, never by value); and the command itself, whose console lines name both sources.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from notifier import demo
from notifier.app import App
from notifier.config import load_config
from notifier.secrets import read_secret
from notifier.simulator import ManualClock, Project, Simulator, load_scenario
from notifier.simulator.scenario import SCENARIO_DIR
from notifier.source.signer import sign
from tests.test_cli import notifier

SCENARIO = SCENARIO_DIR / demo.DEMO_SCENARIO


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5, trust_env=False) as client:
        yield client


def projects() -> dict[str, Project]:
    return {p.name: p for p in load_scenario(SCENARIO).served()}


def test_the_demo_scenario_is_two_projects_with_their_own_credentials() -> None:
    """sales (workspace ws-sales) and ops (none), each with an AK/SK of its own; four jobs in all."""
    sales, ops = projects()["sales"], projects()["ops"]
    assert list(projects()) == ["sales", "ops"]
    assert (sales.workspace, ops.workspace) == ("ws-sales", "")
    assert sales.auth.mode == ops.auth.mode == "aksk"
    assert sales.auth.ak != ops.auth.ak and sales.auth.sk != ops.auth.sk
    assert sorted(j.name for j in sales.jobs) == ["job_orders", "job_sms"]
    assert sorted(j.name for j in ops.jobs) == ["job_clicks", "job_etl"]


def test_the_demo_scenario_timeline_over_both_projects(http: httpx.Client) -> None:
    """sales: DLI_SMS_GES fails 4-12 s, job_orders STARTTING; ops: DIS_CLICKS stalls at 6 s, job_etl stops at 9 s."""
    sales, ops = projects()["sales"], projects()["ops"]
    clock = ManualClock()
    with Simulator(load_scenario(SCENARIO), clock=clock) as sim:
        def get(project: Project, job: str, t: float, *, signer: Project | None = None) -> httpx.Response:
            clock.set(t)
            url = f"{sim.url}/v1/{project.id}/jobs/{job}/status"
            headers = {"workspace": project.workspace} if project.workspace else {}
            creds = (signer or project).auth
            headers |= sign("GET", url, headers, b"", creds.ak, creds.sk, datetime.now(timezone.utc))
            return http.get(url, headers=headers)

        def doc(project: Project, job: str, t: float) -> dict[str, Any]:
            response = get(project, job, t)
            assert response.status_code == 200, response.text
            return dict(response.json())

        def node(project: Project, job: str, name: str, t: float) -> dict[str, Any]:
            return next(n for n in doc(project, job, t)["nodes"] if n["name"] == name)

        assert [node(sales, "job_sms", "DLI_SMS_GES", t)["status"] for t in (3.9, 4, 11.9, 12, 20)] == \
            ["NORMAL", "EXCEPTION", "EXCEPTION", "NORMAL", "NORMAL"]
        assert [doc(sales, "job_orders", t)["status"] for t in (0, 20)] == ["STARTTING", "STARTTING"]
        clicks = [node(ops, "job_clicks", "DIS_CLICKS", t)["totalPutRecords"] for t in (0, 5, 6, 20)]
        assert clicks[0] < clicks[1] < clicks[2] == clicks[3]
        assert [doc(ops, "job_etl", t)["status"] for t in (8.9, 9, 20)] == ["NORMAL", "STOPPED", "STOPPED"]
        assert get(ops, "job_etl", 0, signer=sales).status_code == 403  # sales' valid AK/SK are not ops'
        assert get(sales, "job_sms", 0, signer=ops).status_code == 403


def test_the_demo_config_has_two_sources_and_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """What App.open is given: owner-only files, [sources.sales] by file and [sources.ops] by env, no secret value."""
    seen: dict[str, Any] = {}
    sales, ops = projects()["sales"], projects()["ops"]

    class Stop(Exception):
        pass

    async def fake_open(cls: type[App], config_path: Path, **_: Any) -> App:
        text = config_path.read_text()
        config = load_config(config_path)
        seen["modes"] = {p.name: stat.S_IMODE(p.stat().st_mode)
                         for p in (config_path, *(config_path.parent / "secrets").iterdir())}
        seen["text"] = text
        seen["sources"] = {name: (s.endpoint, s.project_id, s.workspace, s.auth, s.jobs.names, s.jobs.discover)
                           for name, s in config.sources.items()}
        seen["secrets"] = {name: tuple(_reveal(env, file) for env, file in ((s.ak_env, s.ak_file),
                                                                             (s.sk_env, s.sk_file)))
                           for name, s in config.sources.items()}
        seen["files"] = {name: (s.ak_file, s.sk_file) for name, s in config.sources.items()}
        raise Stop

    monkeypatch.delenv(demo.OPS_AK_ENV, raising=False)
    monkeypatch.setenv(demo.OPS_SK_ENV, "what-was-there-before")
    monkeypatch.setattr(App, "open", classmethod(fake_open))
    with pytest.raises(Stop):
        demo.run_demo(duration=1)
    assert seen["modes"] == {"notifier.toml": 0o600, "sales_ak": 0o600, "sales_sk": 0o600}
    endpoint = seen["sources"]["sales"][0]
    assert seen["sources"] == {
        "sales": (endpoint, sales.id, "ws-sales", "aksk", ("job_orders", "job_sms"), False),
        "ops": (endpoint, ops.id, "", "aksk", (), True),
    }
    assert seen["secrets"] == {"sales": (sales.auth.ak, sales.auth.sk), "ops": (ops.auth.ak, ops.auth.sk)}
    assert seen["files"]["sales"] != (None, None) and seen["files"]["ops"] == (None, None)
    for secret in (sales.auth.ak, sales.auth.sk, ops.auth.ak, ops.auth.sk):
        assert secret not in seen["text"]
    # the environment is as it was, even though the run failed
    assert demo.OPS_AK_ENV not in os.environ and os.environ[demo.OPS_SK_ENV] == "what-was-there-before"


def _reveal(env: str, file: str | None) -> str:
    secret = read_secret(env=env, file=file, what="demo")
    assert secret is not None
    return secret.reveal()


@pytest.mark.slow
def test_notifier_demo_prints_alerts_of_both_sources() -> None:
    """`notifier demo`: exit 0; sales' exception, recovery and stuck start, ops' stalled stream and stopped job."""
    result = notifier("demo", "--duration", "18", timeout=60)
    assert result.returncode == 0, result.stderr
    heads = [line for line in result.stdout.splitlines() if line.startswith("[")]
    expected = [
        r"\[CRITICAL\] sales/job_sms: DLI_SMS_GES \(DLI SQL\) NORMAL -> EXCEPTION since .*rule=node-exception",
        r"\[RESOLVED\] sales/job_sms: DLI_SMS_GES back to NORMAL after \d+s  rule=node-exception",
        r"\[WARNING\] sales/job_orders: job STARTTING since .*rule=job-stuck-starting",
        r"\[WARNING\] ops/job_clicks: DIS_CLICKS \(ExecuteDISStream\) NORMAL since .*rule=stream-stalled",
        r"\[INFO\] ops/job_etl: job NORMAL -> STOPPED at .*rule=job-stopped",
    ]
    for pattern in expected:
        assert sum(bool(re.fullmatch(pattern, line)) for line in heads) == 1, (pattern, result.stdout)
    assert len(heads) == len(expected), result.stdout  # nothing else fired (no auth or discovery failure)
    assert heads.index(next(h for h in heads if h.startswith("[CRITICAL] sales/job_sms"))) < \
        heads.index(next(h for h in heads if h.startswith("[RESOLVED] sales/job_sms")))
    assert "source sales:" in result.stderr and "source ops:" in result.stderr
    for project in projects().values():
        assert project.auth.sk not in result.stdout + result.stderr
