"""Several projects on one simulator port, each with its own workspace, credentials and jobs.

Over real loopback sockets: plain httpx signed by huaweicloudsdkcore's own ``Signer``, the
official DGC SDK client, and notifier's ``DgcClient``. Each project sees only its jobs; another
project's valid credentials get 403; a project's workspace header is enforced; the rate limit
stays per user, so projects sharing credentials share one budget.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer
from huaweicloudsdkdgc.v1 import DgcClient as SdkDgcClient
from huaweicloudsdkdgc.v1 import ListJobsRequest, ShowJobStatusRequest

from notifier.config import SourceConfig
from notifier.errors import ConfigError, SourceError
from notifier.simulator import (
    DEFAULT_PROJECT_ID,
    AuthSettings,
    JobScript,
    ManualClock,
    NodeScript,
    Project,
    Scenario,
    Simulator,
    load_scenario,
    parse_scenario,
)
from notifier.simulator.scenario import SCENARIO_DIR
from notifier.simulator.server import project_lines
from notifier.source.client import DgcClient
from notifier.source.signer import sign
from tests.support.two_projects import OPS, OPS_AK, OPS_SK, SALES, SALES_AK, SALES_SK

EXAMPLE = SCENARIO_DIR / "two_projects.toml"
TWO = f"""
epoch_start = 1551409406000
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
status = "EXCEPTION"
"""
SALES_WS = {"workspace": "ws-sales"}


def two(text: str = TWO, file: str = "two.toml") -> Scenario:
    return parse_scenario(tomllib.loads(textwrap.dedent(text)), file=file, name="two")


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(two(), clock=ManualClock()) as s:
        yield s


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5, trust_env=False) as client:
        yield client


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's HTTP client (requests) honours proxy variables: none may send loopback traffic elsewhere."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")


def sdk_signed(method: str, url: str, ak: str, sk: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    """The headers huaweicloudsdkcore's Signer sends for this request (dated now, as the SDK dates it)."""
    parts = urlsplit(url)
    query = [(k, v) for k, _, v in (p.partition("=") for p in parts.query.split("&") if p)]
    params = {"Content-Type": "application/json",
              "X-Sdk-Date": datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ"), **(headers or {})}
    request = SdkRequest(method=method, schema=parts.scheme, host=parts.netloc, resource_path=parts.path,
                         query_params=query, header_params=params, body="")
    return dict(Signer(BasicCredentials(ak, sk)).sign(request).header_params)


def get(http: httpx.Client, sim: Simulator, project: str, tail: str, ak: str, sk: str,
        headers: dict[str, str] | None = None) -> httpx.Response:
    url = f"{sim.url}/v1/{project}/jobs{tail}"
    return http.get(url, headers=sdk_signed("GET", url, ak, sk, headers))


def sdk_client(sim: Simulator, project: str, ak: str, sk: str) -> SdkDgcClient:
    """The official SDK client as a user builds it for one project, pointed at the simulator."""
    config = HttpConfig.get_default_config()
    config.timeout = (5, 5)
    client: SdkDgcClient = (SdkDgcClient.new_builder().with_credentials(BasicCredentials(ak, sk, project))
                            .with_endpoints([sim.url]).with_http_config(config).build())
    return client


def notifier_fetch(sim: Simulator, project: str, ak: str, sk: str, *, workspace: str = "",
                   job: str = "job_sms") -> Any:
    """notifier's own client for one project: (the job's snapshot, the listed job names), or the SourceError."""
    config = SourceConfig(endpoint=sim.url, project_id=project, workspace=workspace, auth="aksk", ak_env="P_AK",
                          sk_env="P_SK", timeout=5.0, retries=2, backoff=0.01, backoff_max=0.01,
                          max_requests_per_second=1e6)

    async def main() -> Any:
        async with DgcClient(config, environ={"P_AK": ak, "P_SK": sk}) as client:
            try:
                return await client.fetch_status(job), await client.list_jobs()
            except SourceError as exc:
                return exc

    return asyncio.run(main())


# --- the example scenario and the Python API ------------------------------------------------

def test_the_example_scenario_serves_two_projects_with_their_own_credentials() -> None:
    """two_projects.toml: sales (workspace ws-sales) and ops, different AKs, each a job_sms of its own."""
    scenario = load_scenario(EXAMPLE)
    assert [(p.label, p.id, p.workspace, p.auth.mode) for p in scenario.projects] == [
        ("sales", SALES, "ws-sales", "aksk"), ("ops", OPS, "", "aksk")]
    assert scenario.projects[0].auth.ak != scenario.projects[1].auth.ak
    assert scenario.project_id == SALES and len(scenario.jobs) == 3
    assert [j.workspace for j in scenario.projects[0].jobs] == ["ws-sales"]  # the project's workspace, implied


def test_the_example_scenario_tells_the_two_stories(http: httpx.Client) -> None:
    """sales' DLI_SMS_GES fails at 4 s and recovers at 12 s; ops' job_etl fails at 8 s; ops' job_sms stays NORMAL."""
    scenario = load_scenario(EXAMPLE)
    sales, ops = scenario.projects
    clock = ManualClock()
    with Simulator(scenario, clock=clock) as sim:
        def status(project: Project, job: str) -> dict[str, Any]:
            headers = {"workspace": project.workspace} if project.workspace else {}
            response = get(http, sim, project.id, f"/{job}/status", project.auth.ak, project.auth.sk, headers)
            assert response.status_code == 200, response.text
            return dict(response.json())

        def nodes(doc: dict[str, Any]) -> dict[str, str]:
            return {n["name"]: n["status"] for n in doc["nodes"]}

        assert nodes(status(sales, "job_sms"))["DLI_SMS_GES"] == "NORMAL"
        clock.set(5)
        assert nodes(status(sales, "job_sms"))["DLI_SMS_GES"] == "EXCEPTION"
        assert status(ops, "job_etl")["status"] == "NORMAL"
        clock.set(9)
        assert status(ops, "job_etl")["status"] == "EXCEPTION"
        assert status(ops, "job_sms")["status"] == "NORMAL"
        clock.set(13)
        assert nodes(status(sales, "job_sms"))["DLI_SMS_GES"] == "NORMAL"


def _node(name: str) -> NodeScript:
    return NodeScript(name=name, type="DLI SQL")


def test_projects_are_built_in_code_too(http: httpx.Client) -> None:
    """Scenario.of_projects serves Project values; as_project turns a one-project scenario (seed) into one."""
    a = Project(id="proj-a", jobs=(JobScript(name="job_a", nodes=(_node("N"),)),), workspace="ws-a",
                auth=AuthSettings(mode="aksk", ak=SALES_AK, sk=SALES_SK), name="a")
    seed = load_scenario("seed").as_project("proj-seed", auth=AuthSettings(mode="aksk", ak=OPS_AK, sk=OPS_SK))
    scenario = Scenario.of_projects(a, seed, name="in-code")
    with Simulator(scenario, clock=ManualClock()) as sim:
        assert get(http, sim, "proj-a", "/job_a/status", SALES_AK, SALES_SK, {"workspace": "ws-a"}).status_code == 200
        doc = get(http, sim, "proj-seed", "/job_sms/status", OPS_AK, OPS_SK).json()
        assert doc["name"] == "job_sms" and len(doc["nodes"]) == 7
        assert sim.project("a") is sim.projects[0] and sim.project_id == "proj-a"
        assert [r.project for r in sim.requests] == ["proj-a", "proj-seed"]
        assert [r.path for r in sim.requests_for("a")] == ["/v1/proj-a/jobs/job_a/status"]


@pytest.mark.parametrize(("build", "message"), [
    pytest.param(lambda a: Scenario.of_projects(a, a), "served twice", id="same-id-twice"),
    pytest.param(lambda a: Scenario.of_projects(), "at least one project", id="no-project"),
    pytest.param(lambda a: Scenario.of_projects(a, jobs=()), "comes from the projects", id="jobs-given"),
    pytest.param(lambda a: Scenario.of_projects(a, Project(id="b", jobs=a.jobs, name="b",
                                                           auth=AuthSettings(mode="aksk", ak=a.auth.ak, sk="x"))),
                 "an AK has one SK", id="ak-with-two-sks"),
    pytest.param(lambda a: Project(id="c", jobs=(JobScript(name="j", nodes=(), workspace="ws-x"),), workspace="ws-c"),
                 "serves workspace 'ws-c' only", id="job-of-another-workspace"),
    pytest.param(lambda a: Project(id="a/b", jobs=()), "without '/'", id="slash-in-id"),
])
def test_inconsistent_projects_are_refused(build: Callable[[Project], Any], message: str) -> None:
    """Scenario.of_projects and Project check what the file parser checks: a ValueError saying what is wrong."""
    a = Project(id="a", jobs=(JobScript(name="j", nodes=()),), auth=AuthSettings(mode="aksk", ak="AK-A", sk="sk-a"))
    with pytest.raises(ValueError, match=message):
        build(a)


def test_a_multi_project_scenario_keeps_its_projects_jobs() -> None:
    """Its jobs are the projects': replacing them alone is refused; Simulator(auth=) is for one-project scenarios."""
    scenario = two()
    with pytest.raises(ValueError, match="replacing its projects"):
        replace(scenario, jobs=scenario.jobs[:1])
    assert replace(scenario, response_style="sdk").projects == scenario.projects
    with pytest.raises(ValueError, match="its projects'"):
        Simulator(scenario, auth=AuthSettings())


def test_a_one_project_scenario_is_its_one_project() -> None:
    """Without [[project]] nothing changes: served() is the scenario's project, credentials and jobs."""
    scenario = load_scenario("demo")
    (project,) = scenario.served()
    assert (project.id, project.workspace, project.auth, project.jobs) == (
        DEFAULT_PROJECT_ID, "", scenario.auth, scenario.jobs)
    assert scenario.projects == ()


# --- each project sees only its own jobs ------------------------------------------------------

def test_each_project_lists_and_serves_only_its_jobs(sim: Simulator, http: httpx.Client) -> None:
    """Same job name, two projects: each path answers with its own project's job and list."""
    sales = get(http, sim, SALES, "/job_sms/status", SALES_AK, SALES_SK, SALES_WS).json()
    ops = get(http, sim, OPS, "/job_sms/status", OPS_AK, OPS_SK).json()
    assert [n["name"] for n in sales["nodes"]] == ["SALES_NODE"]
    assert [n["name"] for n in ops["nodes"]] == ["OPS_NODE"]
    listed = get(http, sim, SALES, "?jobType=REAL_TIME&limit=100", SALES_AK, SALES_SK, SALES_WS).json()
    assert sorted(j["name"] for j in listed["jobs"]) == ["job_sales_only", "job_sms"]
    listed = get(http, sim, OPS, "?jobType=REAL_TIME&limit=100", OPS_AK, OPS_SK).json()
    assert [j["name"] for j in listed["jobs"]] == ["job_sms"]
    missing = get(http, sim, OPS, "/job_sales_only/status", OPS_AK, OPS_SK)
    assert (missing.status_code, missing.json()["error_code"]) == (400, "DLF.0100")


def test_the_official_sdk_reaches_each_project_with_its_credentials(sim: Simulator) -> None:
    """huaweicloudsdkdgc, one client per project (credentials with its project id), lists and reads its own jobs."""
    sales = sdk_client(sim, SALES, SALES_AK, SALES_SK)
    ops = sdk_client(sim, OPS, OPS_AK, OPS_SK)
    listed = sales.list_jobs(ListJobsRequest(job_type="REAL_TIME", limit=100, offset=0, workspace="ws-sales"))
    assert sorted(j.name for j in listed.jobs) == ["job_sales_only", "job_sms"]
    assert [n.name for n in ops.show_job_status(ShowJobStatusRequest(job_name="job_sms")).nodes] == ["OPS_NODE"]
    with pytest.raises(ClientRequestException) as info:
        sdk_client(sim, SALES, OPS_AK, OPS_SK).show_job_status(
            ShowJobStatusRequest(job_name="job_sms", workspace="ws-sales"))
    assert (info.value.status_code, info.value.error_code) == (403, "APIG.0302")


def test_notifier_client_reaches_each_project_as_its_own_source(sim: Simulator) -> None:
    """DgcClient per project (signer, workspace header): each sees its job_sms and its list, not the other's."""
    sales = notifier_fetch(sim, SALES, SALES_AK, SALES_SK, workspace="ws-sales")
    ops = notifier_fetch(sim, OPS, OPS_AK, OPS_SK)
    assert not isinstance(sales, SourceError) and not isinstance(ops, SourceError), (sales, ops)
    (sales_snap, sales_jobs), (ops_snap, ops_jobs) = sales, ops
    assert [n.name for n in sales_snap.nodes] == ["SALES_NODE"] and sorted(sales_jobs) == ["job_sales_only", "job_sms"]
    assert [(n.name, n.status) for n in ops_snap.nodes] == [("OPS_NODE", "EXCEPTION")] and ops_jobs == ("job_sms",)
    assert {r.project for r in sim.requests_for("sales")} == {SALES}
    assert {r.user for r in sim.requests_for("ops")} == {f"ak:{OPS_AK}"}


# --- another project's credentials are refused ------------------------------------------------

def test_another_projects_valid_credentials_get_403(sim: Simulator, http: httpx.Client) -> None:
    """Signed correctly, but with ops' AK/SK, for sales: 403 APIG.0302 with the request id; nothing is served."""
    for tail in ("/job_sms/status", "?jobType=REAL_TIME"):
        response = get(http, sim, SALES, tail, OPS_AK, OPS_SK, SALES_WS)
        assert response.status_code == 403, response.text
        body = response.json()
        assert body["error_code"] == "APIG.0302"
        assert body["error_msg"].startswith("The IAM user is not authorized to access the API: ")
        assert body["request_id"] == response.headers["x-request-id"]
        assert OPS_AK not in body["error_msg"] and OPS_SK not in response.text
    assert sim.served == 0 and sim.throttled == 0  # refused before the rate limit, like a 401


def test_another_projects_ak_with_a_wrong_sk_is_401_not_403(sim: Simulator, http: httpx.Client) -> None:
    """The foreign AK's signature is still checked (with its own SK): a forgery is 401, whichever project."""
    response = get(http, sim, SALES, "/job_sms/status", OPS_AK, "forged-sk-0123456789", SALES_WS)
    assert (response.status_code, response.json()["error_code"]) == (401, "APIG.0301")
    assert "verify aksk signature fail" in response.json()["error_msg"]
    unknown = get(http, sim, SALES, "/job_sms/status", "UNKNOWN-AK-000000", SALES_SK, SALES_WS)
    assert unknown.json()["error_msg"].endswith("ak:******,err:ak not exist")


def test_notifier_client_with_another_projects_credentials_gets_an_auth_error(sim: Simulator) -> None:
    """403 reaches notifier as kind auth (not retried), naming APIG.0302 and the request id, no secret."""
    error = notifier_fetch(sim, SALES, OPS_AK, OPS_SK, workspace="ws-sales")
    assert isinstance(error, SourceError)
    assert (error.kind, error.status_code, error.error_code) == ("auth", 403, "APIG.0302")
    (request,) = sim.requests_for("sales")
    assert str(error).endswith(f"(HTTP 403, request id {request.request_id})")
    assert OPS_SK not in str(error)


TOKENS = """
auth = "token"

[[project]]
id = "proj-c"

[project.credentials]
token = "token-of-c-0123456789"

[[project.job]]
name = "j"

[[project]]
id = "proj-d"

[project.credentials]
token = "token-of-d-0123456789"

[[project.job]]
name = "j"
"""


def _login(sim: Simulator, http: httpx.Client, project_id: str) -> str:
    iam = sim.iam
    issued = http.post(f"{sim.url}/v3/auth/tokens", json={"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": iam.user, "password": iam.password, "domain": {"name": iam.domain}}}},
        "scope": {"project": {"id": project_id}}}})
    assert issued.status_code == 201 and issued.json()["token"]["project"]["id"] == project_id
    return issued.headers["x-subject-token"]


def test_tokens_are_a_projects_own(http: httpx.Client) -> None:
    """auth = "token": another project's static token and an IAM token scoped to another project get 403."""
    with Simulator(two(TOKENS), clock=ManualClock()) as sim:
        def code(project: str, token: str) -> tuple[int, str]:
            response = http.get(f"{sim.url}/v1/{project}/jobs/j/status", headers={"X-Auth-Token": token})
            return response.status_code, response.json().get("error_code", "")

        assert code("proj-c", "token-of-c-0123456789") == (200, "")
        assert code("proj-c", "token-of-d-0123456789") == (403, "APIG.0302")
        scoped_to_d = _login(sim, http, "proj-d")
        assert code("proj-d", scoped_to_d) == (200, "")
        assert code("proj-c", scoped_to_d) == (403, "APIG.0302")
        assert code("proj-c", "sim-never-issued") == (401, "APIG.0301")


# --- the workspace header ---------------------------------------------------------------------

@pytest.mark.parametrize(("headers", "said"), [
    pytest.param({}, "the request sent no workspace header", id="missing"),
    pytest.param({"workspace": "ws-other"}, "the request's workspace header is 'ws-other'", id="wrong"),
])
def test_a_projects_workspace_header_is_enforced(sim: Simulator, http: httpx.Client, headers: dict[str, str],
                                                 said: str) -> None:
    """sales serves workspace ws-sales only: without it or with another, status and list are 400 DLF.0810."""
    for tail in ("/job_sms/status", "?jobType=REAL_TIME"):
        response = get(http, sim, SALES, tail, SALES_AK, SALES_SK, headers)
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["error_code"] == "DLF.0810"
        assert body["error_msg"].startswith("Workspace does not exists: ") and said in body["error_msg"]
    assert get(http, sim, SALES, "/job_sms/status", SALES_AK, SALES_SK, SALES_WS).status_code == 200


def test_a_project_without_a_workspace_selects_by_the_header_as_before(sim: Simulator, http: httpx.Client) -> None:
    """ops sets no workspace: its jobs are in the default one, and another header finds no job (DLF.0100)."""
    assert get(http, sim, OPS, "/job_sms/status", OPS_AK, OPS_SK).status_code == 200
    response = get(http, sim, OPS, "/job_sms/status", OPS_AK, OPS_SK, {"workspace": "ws-sales"})
    assert (response.status_code, response.json()["error_code"]) == (400, "DLF.0100")


def test_notifier_client_without_the_workspace_gets_the_error(sim: Simulator) -> None:
    """A source missing `workspace` is told so, with the code, rather than that its job is missing."""
    error = notifier_fetch(sim, SALES, SALES_AK, SALES_SK)
    assert isinstance(error, SourceError) and (error.status_code, error.error_code) == (400, "DLF.0810")
    assert "Workspace does not exists" in str(error)


def test_an_unknown_project_is_404_naming_the_served_ones(sim: Simulator, http: httpx.Client) -> None:
    response = get(http, sim, "0" * 32, "/job_sms/status", SALES_AK, SALES_SK)
    assert (response.status_code, response.json()["error_code"]) == (404, "SIM.0404")
    assert SALES in response.json()["error_msg"] and OPS in response.json()["error_msg"]


# --- the rate limit is per user, not per project ------------------------------------------------

SHARED = f"""
auth = "aksk"

[credentials]                 # every project's unless it has its own
ak = "{SALES_AK}"
sk = "{SALES_SK}"

[[project]]
id = "proj-1"

[[project.job]]
name = "j"

[[project]]
id = "proj-2"

[[project.job]]
name = "j"

[[project]]
id = "proj-3"

[project.credentials]
ak = "{OPS_AK}"
sk = "{OPS_SK}"

[[project.job]]
name = "j"
"""


@pytest.fixture
def shared() -> Iterator[tuple[Simulator, ManualClock]]:
    limit_clock = ManualClock(1000.0)
    with Simulator(two(SHARED), clock=ManualClock(), limit_clock=limit_clock) as s:
        yield s, limit_clock


def _codes(http: httpx.Client, sim: Simulator, project: str, ak: str, sk: str, n: int) -> list[int]:
    """n status requests signed with notifier's own signer (faster than the SDK's, same bytes)."""
    url = f"{sim.url}/v1/{project}/jobs/j/status"
    now = datetime.now(timezone.utc)
    return [http.get(url, headers=sign("GET", url, {}, b"", ak, sk, now)).status_code for _ in range(n)]


def test_projects_with_the_same_credentials_share_one_budget(shared: tuple[Simulator, ManualClock],
                                                              http: httpx.Client) -> None:
    """proj-1 and proj-2 share an AK: 30 requests in a second between them, the 31st 429 wherever it goes."""
    sim, limit_clock = shared
    assert _codes(http, sim, "proj-1", SALES_AK, SALES_SK, 20) == [200] * 20
    assert _codes(http, sim, "proj-2", SALES_AK, SALES_SK, 10) == [200] * 10
    assert _codes(http, sim, "proj-2", SALES_AK, SALES_SK, 1) == [429]
    assert _codes(http, sim, "proj-1", SALES_AK, SALES_SK, 1) == [429]
    assert sim.served_by_user() == {f"ak:{SALES_AK}": 30}
    assert sim.throttled_by_user() == {f"ak:{SALES_AK}": 2}
    limit_clock.advance(1.0)
    assert _codes(http, sim, "proj-2", SALES_AK, SALES_SK, 1) == [200]


def test_projects_with_other_credentials_have_their_own_budget(shared: tuple[Simulator, ManualClock],
                                                                http: httpx.Client) -> None:
    """proj-3's own AK is another user: its 30 are untouched by the others' exhausted budget."""
    sim, _ = shared
    assert _codes(http, sim, "proj-1", SALES_AK, SALES_SK, 31) == [200] * 30 + [429]
    assert _codes(http, sim, "proj-3", OPS_AK, OPS_SK, 31) == [200] * 30 + [429]
    assert sim.served_by_user() == {f"ak:{SALES_AK}": 30, f"ak:{OPS_AK}": 30}
    assert {(r.project, r.user) for r in sim.requests} == {
        ("proj-1", f"ak:{SALES_AK}"), ("proj-3", f"ak:{OPS_AK}")}


def test_iam_tokens_of_one_user_share_its_budget(http: httpx.Client) -> None:
    """Two tokens of the simulated IAM user, scoped to two projects, are one user: a new token is no new budget."""
    with Simulator(two(TOKENS), clock=ManualClock(), limit_clock=ManualClock(1000.0)) as sim:
        c, d = _login(sim, http, "proj-c"), _login(sim, http, "proj-d")

        def codes(project: str, token: str, n: int) -> list[int]:
            return [http.get(f"{sim.url}/v1/{project}/jobs/j/status", headers={"X-Auth-Token": token}).status_code
                    for _ in range(n)]

        assert codes("proj-c", c, 15) + codes("proj-d", d, 15) == [200] * 30
        assert codes("proj-d", d, 1) == [429]
        assert codes("proj-c", "token-of-c-0123456789", 1) == [200]  # the static token is its own user
        assert sim.served_by_user() == {f"iam:{sim.iam.user}": 30, "token:token-of-c-0123456789": 1}


# --- faults and runtime control stay in their project -------------------------------------------

def test_faults_and_overrides_apply_to_their_project_only(http: httpx.Client) -> None:
    """A [[project.fault]], a job's fault and set_job_status(project=) touch one project's job_sms, not the other's."""
    text = TWO + """
[[project.fault]]
kind = "http_error"
status = 503
"""  # under the last [[project]]: ops
    with Simulator(two(text), clock=ManualClock()) as sim:
        assert get(http, sim, OPS, "/job_sms/status", OPS_AK, OPS_SK).status_code == 503
        assert get(http, sim, SALES, "/job_sms/status", SALES_AK, SALES_SK, SALES_WS).status_code == 200
        sim.clear_faults()
        sim.set_fault(job="job_sms", project="sales", kind="http_error", status=502)
        assert get(http, sim, SALES, "/job_sms/status", SALES_AK, SALES_SK, SALES_WS).status_code == 502
        assert get(http, sim, OPS, "/job_sms/status", OPS_AK, OPS_SK).status_code == 200
        sim.clear_faults()
        with pytest.raises(ValueError, match="several projects; pass project="):
            sim.set_job_status("job_sms", "STOPPED")
        sim.set_job_status("job_sms", "STOPPED", project=OPS)
        assert get(http, sim, OPS, "/job_sms/status", OPS_AK, OPS_SK).json()["status"] == "STOPPED"
        assert get(http, sim, SALES, "/job_sms/status", SALES_AK, SALES_SK, SALES_WS).json()["status"] == "NORMAL"


# --- scenario files ---------------------------------------------------------------------------

_P = '[[project]]\nid = "p1"\nname = "one"\n'
_J = '[[project.job]]\nname = "j"\n'


@pytest.mark.parametrize(("text", "where", "message"), [
    pytest.param(f'project_id = "p"\n{_P}{_J}', "project_id", "each [[project]] table names its own `id`",
                 id="project-id-too"),
    pytest.param(f'[[job]]\nname = "j"\n{_P}{_J}', "job", "write [[project.job]]", id="top-level-job"),
    pytest.param(f'[scale]\njobs = 10\n{_P}{_J}', "scale", "not with [[project]] tables", id="scale"),
    pytest.param('[[project]]\nname = "x"\n' + _J, "project[0]: id", "required key is missing", id="no-id"),
    pytest.param(_P, "project[one]: job", "at least one", id="no-jobs"),
    pytest.param(f'{_P}workspaces = "w"\n{_J}', "project[one]: workspaces", "did you mean 'workspace'",
                 id="typo"),
    pytest.param(f'{_P}auth = "sso"\n{_J}', "project[one]: auth", "must be one of", id="auth-mode"),
    pytest.param(f'{_P}{_J}{_P}{_J}', "project[one]: id", "defined twice", id="duplicate-id"),
    pytest.param(f'{_P}{_J}[[project]]\nid = "p2"\nname = "one"\n{_J}', "project[one]: name", "used twice",
                 id="duplicate-name"),
    pytest.param(f'{_P}workspace = "ws-1"\n{_J}workspace = "ws-2"\n', "project[one].job[j]: workspace",
                 "serves workspace 'ws-1' only", id="job-in-another-workspace"),
    pytest.param(f'{_P}{_J}[[project.job.step]]\nnodes = {{ X = "EXCEPTION" }}\n',
                 "project[one].job[j].step[0].nodes: X", "no node of that name", id="job-error-names-project"),
    pytest.param(f'{_P}[project.credentials]\nak = ""\n{_J}', "project[one].credentials: ak",
                 "non-empty string", id="empty-ak"),
    pytest.param(f'auth = "aksk"\n{_P}[project.credentials]\nak = "A"\nsk = "one"\n{_J}'
                 f'[[project]]\nid = "p2"\n[project.credentials]\nak = "A"\nsk = "two"\n{_J}',
                 "project[p2].credentials: sk", "an AK has one SK", id="ak-with-two-sks"),
    pytest.param(f'{_P}{_J}[[fault]]\nkind = "disconnect"\nproject = "nope"\n', "fault[0]: project",
                 "no project with that id or name", id="fault-unknown-project"),
    pytest.param(f'{_P}{_J}[[project.fault]]\nkind = "disconnect"\njob = "other"\n',
                 "project[one].fault[0]: job", "no job named 'other' in this project", id="fault-unknown-job"),
    pytest.param('project = "p1"\n', "project", "expected an array of tables ([[project]])", id="not-tables"),
])
def test_bad_project_tables_name_file_and_key(tmp_path: Path, text: str, where: str, message: str) -> None:
    """Every [[project]] error names the file, the project (by name, else id) and the key."""
    path = tmp_path / "projects.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        load_scenario(path)
    assert str(info.value).startswith(f"{path}: ") and where in str(info.value), str(info.value)


def test_top_level_auth_and_credentials_are_every_projects_defaults() -> None:
    """A project without its own auth or [project.credentials] takes the top-level ones, key by key."""
    scenario = two(SHARED)
    first, _, third = scenario.projects
    assert (first.auth.mode, first.auth.ak, first.auth.sk) == ("aksk", SALES_AK, SALES_SK)
    assert (third.auth.ak, third.auth.sk, third.auth.token) == (OPS_AK, OPS_SK, first.auth.token)


# --- what `notifier simulate` prints ------------------------------------------------------------

def test_simulate_prints_each_project_and_how_to_reach_it() -> None:
    """The CLI on the example file: per project its id, workspace, a [sources.NAME] table and the env vars."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "notifier.cli", "simulate", "--scenario", str(EXAMPLE),
                             "--port", "0"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(13)]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    text = "".join(lines)
    assert "scenario 'two_projects' at http://127.0.0.1:" in lines[0] and "2 projects" in lines[0]
    assert f"project 'sales': project_id={SALES}, workspace 'ws-sales'" in text
    assert f"project 'ops': project_id={OPS}, no workspace of its own" in text
    assert ('[sources.sales] endpoint = "http://127.0.0.1:') in text
    assert (f'project_id = "{SALES}", workspace = "ws-sales", auth = "aksk", ak_env = "SIM_SALES_AK", '
            f'sk_env = "SIM_SALES_SK"') in text
    # the shipped example's credentials are made up: printed, ready to paste
    assert "export SIM_SALES_AK=SIMAK-SALES-0000000001 SIM_SALES_SK=simulator-sales-secret-key" in text
    assert "export SIM_OPS_AK=SIMAK-OPS-0000000002 SIM_OPS_SK=simulator-ops-secret-key" in text


def test_a_scenario_files_own_secrets_are_named_not_printed(sim: Simulator) -> None:
    """Outside the package the SK is the file's business: the banner says where it is, never what it is."""
    lines = "\n".join(project_lines(sim, sim.project("sales")))
    assert f"export SIM_SALES_AK={SALES_AK}" in lines and SALES_SK not in lines
    assert "SIM_SALES_SK: this project's credentials in two.toml (not printed)" in lines


def test_the_readme_example_is_a_valid_two_project_scenario() -> None:
    """README's [[project]] example, pasted into a file, parses and serves its two projects."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## The simulator"):]
    blocks = [b.split("```", 1)[0] for b in section.split("```toml\n")[1:]]
    (example,) = [b for b in blocks if "[[project]]" in b]
    scenario = parse_scenario(tomllib.loads(example), file="README.md")
    assert [(p.label, p.workspace, p.auth.ak) for p in scenario.projects] == [
        ("sales", "ws-sales", "SIMAK-SALES-0000000001"), ("ops", "", "SIMAK-OPS-0000000002")]
