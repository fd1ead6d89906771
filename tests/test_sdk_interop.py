"""The official DGC SDK (huaweicloudsdkdgc) against the simulator, both ways, so neither can drift from the SDK.

The SDK signs its requests with huaweicloudsdkcore and the simulator, in an ``auth = "aksk"``
scenario, verifies them; the simulator answers and the SDK's models parse the answers into
the fields it documents. Then notifier's parser reads what the SDK models and must agree
with what notifier's own client reads. Everything stays on 127.0.0.1 (plain http, which
the SDK accepts as an endpoint; no proxy is consulted).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkcore.utils.http_utils import sanitize_for_serialization
from huaweicloudsdkdgc.v1 import DgcClient as SdkDgcClient
from huaweicloudsdkdgc.v1 import ListJobsRequest, ShowJobStatusRequest

from notifier.config import SourceConfig
from notifier.core.models import JobSnapshot
from notifier.simulator import AuthSettings, ManualClock, Simulator, load_scenario
from notifier.source.client import DgcClient
from notifier.source.parse import parse_status

AK, SK = "SDK-INTEROP-AK-0123456789", "sdk-interop-sk-do-not-leak-9876543210"
AUTH = AuthSettings(mode="aksk", ak=AK, sk=SK)
SEED_TYPES = {"CREATE_GES_DIR": "Create OBS", "CS_SMS_PROCESS": "ExecuteCloudStream", "DELETE_GES_DIR": "Delete OBS",
              "DIS_EVENT": "ExecuteDISStream", "DIS_INPUT": "ExecuteDISStream", "DLI_SMS_GES": "DLI SQL",
              "DLI_SMS_PROCESS": "DLI SQL"}
SEED_STATUSES = {name: "NORMAL" for name in SEED_TYPES} | {"DELETE_GES_DIR": "STOPPED", "DLI_SMS_GES": "EXCEPTION"}


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's HTTP client (requests) honours proxy variables: none may send loopback traffic elsewhere."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")


def _simulator(name: str, style: str) -> Simulator:
    """A bundled scenario in the given shape, behind AK/SK checks, at a fixed epoch (answers comparable across runs)."""
    scenario = load_scenario(name)
    scenario = replace(scenario, response_style=style, auth=AUTH,
                       epoch_start_ms=scenario.epoch_start_ms or 1_700_000_000_000)
    return Simulator(scenario, clock=ManualClock())


@pytest.fixture(params=["document", "sdk"])
def seed(request: pytest.FixtureRequest) -> Iterator[Simulator]:
    """The API page's example job, answered in the page's shape and in the SDK's."""
    with _simulator("seed", request.param) as sim:
        yield sim


def sdk_client(sim: Simulator, sk: str = SK) -> SdkDgcClient:
    """The SDK client as a user builds it for one project, pointed at the simulator."""
    config = HttpConfig.get_default_config()
    config.timeout = (5, 5)
    credentials = BasicCredentials(AK, sk, sim.project_id)
    client: SdkDgcClient = (SdkDgcClient.new_builder().with_credentials(credentials).with_endpoints([sim.url])
                            .with_http_config(config).build())
    return client


def notifier_snapshot(sim: Simulator, job: str = "job_sms") -> JobSnapshot:
    config = SourceConfig(endpoint=sim.url, project_id=sim.project_id, auth="aksk", ak_env="I_AK", sk_env="I_SK",
                          timeout=5.0, retries=0, max_requests_per_second=1e6)

    async def main() -> JobSnapshot:
        async with DgcClient(config, environ={"I_AK": AK, "I_SK": SK}) as client:
            return await client.fetch_status(job)

    return asyncio.run(main())


# --- show job status ---------------------------------------------------------------------

def test_sdk_request_is_verified_and_served(seed: Simulator) -> None:
    """The SDK's own signature (huaweicloudsdkcore, real clock) passes the simulator's gateway checks."""
    response = sdk_client(seed).show_job_status(ShowJobStatusRequest(job_name="job_sms"))
    assert response.status_code == 200
    (request,) = seed.requests
    assert request.headers["authorization"].startswith(f"SDK-HMAC-SHA256 Access={AK}, SignedHeaders=")
    assert request.path == f"/v1/{seed.project_id}/jobs/job_sms/status"


def test_sdk_parses_the_fields_both_descriptions_share(seed: Simulator) -> None:
    """Whatever the shape, the SDK reads name, status, lastUpdateTime and each node's name, status and log path."""
    response = sdk_client(seed).show_job_status(ShowJobStatusRequest(job_name="job_sms"))
    assert (response.name, response.status, response.end_time) == ("job_sms", "NORMAL", None)
    assert response.last_update_time == "1551409406000"  # the SDK types times as strings
    assert {n.name: n.status for n in response.nodes} == SEED_STATUSES
    logs = {n.name: n.log_path for n in response.nodes if n.log_path}
    assert set(logs) == {"CS_SMS_PROCESS", "DIS_EVENT", "DIS_INPUT"}
    assert all(path.startswith("obs://dlf-log-b384b9e9ab9b4ee8994c8633aabc9505/job_sms/") for path in logs.values())
    running = {n.name: json.loads(n.running_data) for n in response.nodes if n.running_data}
    assert running["DIS_INPUT"] == {"streamName": "dis-input"}


def test_sdk_parses_every_field_it_models_from_the_sdk_shape() -> None:
    """In the SDK's shape nothing the SDK models is left empty: starttime, nodeType, the extension fields."""
    with _simulator("seed", "sdk") as sim:
        response = sdk_client(sim).show_job_status(ShowJobStatusRequest(job_name="job_sms"))
    assert response.starttime == "1551409465000"
    assert (response.create_user, response.last_modifiy_user) == ("simulator", "simulator")
    assert {n.name: n.node_type for n in response.nodes} == SEED_TYPES
    for node in response.nodes:
        assert isinstance(node.last_instance_status, str) and node.last_instance_status
        assert isinstance(node.extend_counter, str) and isinstance(json.loads(node.extend_counter), dict)


def test_the_page_shape_is_what_the_sdk_does_not_model() -> None:
    """The API page's startTime and node `type` are invisible to the SDK: why notifier reads both spellings."""
    with _simulator("seed", "document") as sim:
        response = sdk_client(sim).show_job_status(ShowJobStatusRequest(job_name="job_sms"))
    assert response.starttime is None
    assert {n.node_type for n in response.nodes} == {None}


def test_notifier_reads_what_the_sdk_models_as_its_client_reads_the_answer(seed: Simulator) -> None:
    """The SDK's model of the answer, re-serialized under the API's names, parses to notifier's own snapshot."""
    response = sdk_client(seed).show_job_status(ShowJobStatusRequest(job_name="job_sms"))
    modelled = parse_status("job_sms", json.dumps(sanitize_for_serialization(response)).encode())
    direct = notifier_snapshot(seed)
    assert (modelled.status, modelled.last_update_time, modelled.end_time) == (
        direct.status, direct.last_update_time, direct.end_time)
    assert [(n.name, n.status, n.log_path, n.running_data) for n in modelled.nodes] == [
        (n.name, n.status, n.log_path, n.running_data) for n in direct.nodes]
    assert {n.name: n.type for n in direct.nodes} == SEED_TYPES  # notifier reads `type` and `nodeType`
    if seed.scenario.response_style == "sdk":
        assert modelled.start_time == direct.start_time
        assert {n.name: n.type for n in modelled.nodes} == SEED_TYPES


def test_notifier_reads_both_shapes_alike() -> None:
    """Page shape or SDK shape (string times and counters, STARTING), the snapshots are the same."""
    snapshots = []
    for style in ("document", "sdk"):
        with _simulator("demo", style) as sim:
            snapshots.append([notifier_snapshot(sim, job) for job in ("job_sms", "job_orders", "job_clicks")])
    assert snapshots[0] == snapshots[1]
    assert snapshots[1][1].status == "STARTTING"


def test_sdk_sends_the_workspace_header_signed() -> None:
    """A job of another workspace: the SDK signs its `workspace` header and the simulator serves that job."""
    scenario = replace(load_scenario("seed"), auth=AUTH)
    scenario = replace(scenario, jobs=(replace(scenario.jobs[0], workspace="ws-1"),))
    with Simulator(scenario, clock=ManualClock()) as sim:
        response = sdk_client(sim).show_job_status(ShowJobStatusRequest(job_name="job_sms", workspace="ws-1"))
        assert response.name == "job_sms"
        assert "workspace" in sim.requests[-1].headers["authorization"].split("SignedHeaders=")[1].split(",")[0]
        with pytest.raises(ClientRequestException) as info:
            sdk_client(sim).show_job_status(ShowJobStatusRequest(job_name="job_sms"))
    assert (info.value.status_code, info.value.error_code) == (400, "DLF.0100")


# --- list jobs ---------------------------------------------------------------------------

@pytest.mark.parametrize("style", ["document", "sdk"])
def test_sdk_lists_jobs_with_every_field_the_list_page_shows(style: str) -> None:
    """ListJobs: total, and per job the documented fields, typed as the SDK types them."""
    with _simulator("demo", style) as sim:
        response = sdk_client(sim).list_jobs(ListJobsRequest(job_type="REAL_TIME", limit=1000, offset=0))
        assert "jobType=REAL_TIME" in "&".join(f"{k}={v}" for k, v in sim.requests[-1].query.items())
    assert response.total == 3
    jobs = {j.name: j for j in response.jobs}
    assert set(jobs) == {"job_sms", "job_orders", "job_clicks"}
    orders = jobs["job_orders"]
    assert (orders.job_type, orders.status, orders.owner, orders.create_user) == (
        "REAL_TIME", "STARTING", "orders-team", "orders-team")
    for job in response.jobs:
        assert isinstance(job.priority, int)
        assert all(isinstance(t, int) for t in (job.create_time, job.start_time, job.last_update_time))


def test_sdk_pages_through_the_list() -> None:
    """limit and offset go out as the SDK sends them (signed query) and page the list."""
    with _simulator("demo", "document") as sim:
        client = sdk_client(sim)
        pages = [client.list_jobs(ListJobsRequest(job_type="REAL_TIME", limit=2, offset=offset))
                 for offset in (0, 2)]
    assert [p.total for p in pages] == [3, 3]
    assert [len(p.jobs) for p in pages] == [2, 1]
    assert len({j.name for p in pages for j in p.jobs}) == 3


# --- errors ------------------------------------------------------------------------------

def test_sdk_reads_error_code_message_and_request_id(seed: Simulator) -> None:
    """A missing job: the SDK's exception carries DLF.0100, its message and the X-Request-Id."""
    with pytest.raises(ClientRequestException) as info:
        sdk_client(seed).show_job_status(ShowJobStatusRequest(job_name="no_such_job"))
    error = info.value
    assert (error.status_code, error.error_code, error.error_msg) == (400, "DLF.0100", "The job does not exists.")
    assert error.request_id == seed.requests[-1].request_id and len(error.request_id) == 32


def test_sdk_with_a_wrong_sk_is_refused_like_by_the_gateway(seed: Simulator) -> None:
    """The SDK signing with another SK: 401 APIG.0301 "verify aksk signature fail", with a request id."""
    with pytest.raises(ClientRequestException) as info:
        sdk_client(seed, sk="not-the-right-secret-key").show_job_status(ShowJobStatusRequest(job_name="job_sms"))
    error: Any = info.value
    assert (error.status_code, error.error_code) == (401, "APIG.0301")
    assert error.error_msg.startswith("Incorrect IAM authentication information: verify aksk signature fail")
    assert error.request_id == seed.requests[-1].request_id
