"""The bundled DGC simulator, over real loopback sockets with httpx and a manual scenario clock."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from notifier.errors import ConfigError
from notifier.simulator import (
    BUNDLED_SCENARIOS,
    ManualClock,
    Scenario,
    Simulator,
    load_scenario,
    parse_scenario,
)

PROJECT = "b384b9e9ab9b4ee8994c8633aabc9505"
EPOCH = 1_700_000_000_000

# The success response of the API document (api/000_ec31147f1412e270.txt), verbatim.
DOC_EXAMPLE = json.loads((Path(__file__).parent / "data" / "seed_status.json").read_text())

# A small scenario most tests use: job_a scripted over time, job_b starting, job_c in workspace ws-1.
BASIC = f"""
project_id = "{PROJECT}"
epoch_start = {EPOCH}

[[job]]
name = "job_a"
extra = {{ futureField = "x" }}

[[job.node]]
name = "SRC"
type = "ExecuteDISStream"
bytes_per_record = 10
running_data = {{ streamName = "s" }}

[[job.node]]
name = "SQL"
type = "DLI SQL"
extra = {{ nodeExtra = 1 }}

[[job.step]]
duration = "5s"
rates = {{ SRC = 100 }}

[[job.step]]
duration = "5s"
nodes = {{ SQL = "EXCEPTION" }}
rates = {{ SRC = 0 }}

[[job.step]]
duration = "10s"
status = "STOPPED"
nodes = {{ SQL = "WEIRD_NEW_STATE" }}

[[job]]
name = "job_b"
status = "STARTTING"

[[job]]
name = "job_c"
workspace = "ws-1"
"""

Start = Callable[..., tuple[Simulator, httpx.Client, ManualClock]]


def scenario(text: str, file: str = "test.toml") -> Scenario:
    return parse_scenario(tomllib.loads(textwrap.dedent(text)), file=file)


@pytest.fixture
def start() -> Iterator[Start]:
    """Start simulators on 127.0.0.1:0 with a manual clock; stop them and their clients afterwards."""
    started: list[tuple[Simulator, httpx.Client]] = []

    def _start(sc: Scenario | str = BASIC, **kwargs: Any) -> tuple[Simulator, httpx.Client, ManualClock]:
        clock = ManualClock()
        sim = Simulator(sc if isinstance(sc, Scenario) else scenario(sc), clock=clock, **kwargs).start()
        client = httpx.Client(base_url=sim.url, timeout=5)
        started.append((sim, client))
        return sim, client, clock

    yield _start
    for sim, client in started:
        client.close()
        sim.stop()


def status_path(job: str, project: str = PROJECT) -> str:
    return f"/v1/{project}/jobs/{job}/status"


def list_jobs(client: httpx.Client, **params: Any) -> httpx.Response:
    return client.get(f"/v1/{PROJECT}/jobs", params={"jobType": "REAL_TIME", **params})


# --- the status API ------------------------------------------------------------------

def test_seed_serves_the_documents_example(start: Start) -> None:
    """The seed scenario answers exactly the API document's example, runningData as a JSON string."""
    _sim, client, clock = start(load_scenario("seed"))
    response = client.get(status_path("job_sms"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.json() == DOC_EXAMPLE
    clock.advance(3600)
    assert client.get(status_path("job_sms")).json() == DOC_EXAMPLE


def test_unknown_job_is_dlf_0100(start: Start) -> None:
    """A job the scenario lacks answers HTTP 400 with the documented DLF.0100 body."""
    _, client, _ = start()
    response = client.get(status_path("no_such_job"))
    assert response.status_code == 400
    assert response.json() == {"error_code": "DLF.0100", "error_msg": "The job does not exists."}


REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")


@pytest.mark.parametrize(("method", "path", "fault", "status"), [
    pytest.param("GET", status_path("job_a"), None, 200, id="status"),
    pytest.param("GET", f"/v1/{PROJECT}/jobs?jobType=REAL_TIME", None, 200, id="list"),
    pytest.param("GET", status_path("nope"), None, 400, id="dlf-0100"),
    pytest.param("GET", "/v2/other", None, 404, id="apig-0101"),
    pytest.param("GET", status_path("job_a"), {"kind": "http_error", "status": 503}, 503, id="fault-http-error"),
    pytest.param("GET", status_path("job_a"), {"kind": "throttle"}, 429, id="fault-throttle"),
    pytest.param("GET", status_path("job_a"), {"kind": "html"}, 502, id="fault-html"),
    pytest.param("GET", status_path("job_a"), {"kind": "truncated_json"}, 200, id="fault-truncated"),
    pytest.param("POST", "/v3/auth/tokens", None, 400, id="iam-bad-body"),
])
def test_every_answer_carries_a_request_id(start: Start, method: str, path: str, fault: dict[str, Any] | None,
                                           status: int) -> None:
    """X-Request-Id on every answer (32 hex digits, fresh each time), recorded with the request it answered."""
    sim, client, _ = start()
    if fault is not None:
        sim.set_fault(**fault)
    first, second = (client.request(method, path, content=b"{}" if method == "POST" else None) for _ in range(2))
    assert first.status_code == status
    assert REQUEST_ID.match(first.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    assert [r.request_id for r in sim.requests] == [first.headers["x-request-id"], second.headers["x-request-id"]]


def test_gateway_errors_name_the_request_id_in_the_body(start: Start) -> None:
    """APIG.* error bodies carry request_id (as API Gateway's do); the service's DLF.* bodies stay as documented."""
    sim, client, _ = start()
    sim.set_fault(kind="throttle", count=1)
    throttled = client.get(status_path("job_a"))
    assert throttled.json()["error_code"] == "APIG.0308"
    assert throttled.json()["request_id"] == throttled.headers["x-request-id"]
    assert set(client.get(status_path("nope")).json()) == {"error_code", "error_msg"}


def test_sdk_response_style_is_shaped_as_the_sdk_models_it(start: Start) -> None:
    """response_style = "sdk": starttime, nodeType, times and counters as strings, STARTING, the SDK's extras."""
    _, client, clock = start(BASIC.replace("epoch_start", 'response_style = "sdk"\nepoch_start'))
    clock.advance(2)
    doc = client.get(status_path("job_a")).json()
    assert {"starttime", "lastUpdateTime", "createUser", "lastModifiyUser"} <= set(doc)
    assert "startTime" not in doc and doc["starttime"] == str(EPOCH) and doc["lastUpdateTime"] == str(EPOCH)
    src, sql = doc["nodes"]
    assert (src["nodeType"], sql["nodeType"]) == ("ExecuteDISStream", "DLI SQL") and "type" not in src
    assert (src["totalGetRecords"], src["totalGetBytes"]) == ("200", "2000")
    assert isinstance(src["lastInstanceStatus"], str) and json.loads(src["extendCounter"])["totalGetRecords"] == 200
    assert isinstance(src["bufferRecords"], int) and isinstance(src["jobInstanceId"], int)
    assert doc["futureField"] == "x" and sql["nodeExtra"] == 1  # extras still served
    assert client.get(status_path("job_b")).json()["status"] == "STARTING"
    clock.advance(20)
    assert client.get(status_path("job_a")).json()["endTime"] == str(EPOCH + 10_000)


@pytest.mark.parametrize(("path", "status", "code"), [
    (status_path("job_a", project="0" * 32), 404, "SIM.0404"),
    (f"/v1/{'0' * 32}/jobs", 404, "SIM.0404"),
    ("/v2/whatever", 404, "APIG.0101"),
    (f"/v1/{PROJECT}/jobs/job_a/nodes", 404, "APIG.0101"),
], ids=["status-wrong-project", "list-wrong-project", "unknown-api", "unknown-subpath"])
def test_wrong_project_or_path(start: Start, path: str, status: int, code: str) -> None:
    """A wrong project_id or an unknown path answers 404 with an error_code naming why."""
    _, client, _ = start()
    response = client.get(path)
    assert (response.status_code, response.json()["error_code"]) == (status, code)


@pytest.mark.parametrize(("workspace", "job", "expected"), [
    (None, "job_a", 200),
    (None, "job_c", 400),
    ("ws-1", "job_c", 200),
    ("ws-1", "job_a", 400),
    ("ws-2", "job_c", 400),
], ids=["default-own", "default-other", "ws-own", "ws-other", "wrong-ws"])
def test_workspace_header_selects_workspace(start: Start, workspace: str | None, job: str, expected: int) -> None:
    """Jobs are found only in their own workspace; no header means the default workspace."""
    _, client, _ = start()
    headers = {"workspace": workspace} if workspace is not None else {}
    assert client.get(status_path(job), headers=headers).status_code == expected


def test_steps_drive_status_counters_and_last_update_time(start: Start) -> None:
    """Statuses switch at step boundaries, counters follow the rates, lastUpdateTime marks job status changes."""
    _, client, clock = start()

    def at(t: float) -> dict[str, Any]:
        clock.set(t)
        return client.get(status_path("job_a")).json()

    def node(doc: dict[str, Any], name: str) -> dict[str, Any]:
        return next(n for n in doc["nodes"] if n["name"] == name)

    early, before, after, later, stopped = at(0), at(4.99), at(5), at(9), at(10)
    assert [node(d, "SQL")["status"] for d in (early, before, after, later, stopped)] == \
        ["NORMAL", "NORMAL", "EXCEPTION", "EXCEPTION", "WEIRD_NEW_STATE"]
    assert [node(d, "SRC")["totalPutRecords"] for d in (early, before, after, later)] == [0, 499, 500, 500]
    assert node(after, "SRC")["totalGetBytes"] == 500 * 10
    assert [d["status"] for d in (early, after, stopped)] == ["NORMAL", "NORMAL", "STOPPED"]
    assert early["lastUpdateTime"] == after["lastUpdateTime"] == later["lastUpdateTime"] == EPOCH
    assert stopped["lastUpdateTime"] == stopped["endTime"] == EPOCH + 10_000
    assert "endTime" not in later
    assert at(3600)["status"] == "STOPPED"  # the last step holds


def test_unknown_values_and_extra_fields_are_served(start: Start) -> None:
    """Extra fields and unknown statuses appear as scripted; runningData is a string."""
    _, client, clock = start()
    clock.set(12)
    doc = client.get(status_path("job_a")).json()
    assert doc["futureField"] == "x"
    sql = doc["nodes"][1]
    assert (sql["status"], sql["nodeExtra"]) == ("WEIRD_NEW_STATE", 1)
    assert doc["nodes"][0]["runningData"] == '{"streamName":"s"}'


def test_loop_restarts_and_keeps_since_across_the_wrap(start: Start) -> None:
    """A looping scenario starts over; a status spanning the wrap keeps the time it was entered."""
    _, client, clock = start(f"""
        project_id = "{PROJECT}"
        epoch_start = {EPOCH}
        loop = true
        [[job]]
        name = "flappy"
        [[job.node]]
        name = "N"
        type = "DLI SQL"
        [[job.step]]
        duration = "2s"
        status = "NORMAL"
        rates = {{ N = 1 }}
        [[job.step]]
        duration = "2s"
        status = "EXCEPTION"
        [[job.step]]
        duration = "2s"
        status = "NORMAL"
    """)

    def at(t: float) -> tuple[str, int, int]:
        clock.set(t)
        doc = client.get(status_path("flappy")).json()
        return doc["status"], doc["lastUpdateTime"] - EPOCH, doc["nodes"][0]["totalPutRecords"]

    assert at(1) == ("NORMAL", 0, 1)
    assert at(3) == ("EXCEPTION", 2000, 3)  # the rate carries over into later steps
    assert at(7) == ("NORMAL", 4000, 7)  # second cycle, step 0 continues the NORMAL run begun at t=4
    assert at(9) == ("EXCEPTION", 8000, 9)


def test_runtime_overrides_replace_the_script(start: Start) -> None:
    """set_job_status/set_node_status/set_counters win from the moment they are set; clear_overrides undoes them."""
    sim, client, clock = start()
    clock.set(2)
    sim.set_job_status("job_a", "EXCEPTION")
    sim.set_node_status("job_a", "SRC", "STOPPING")
    sim.set_counters("job_a", "SRC", totalPutRecords=7)
    clock.set(3)
    doc = client.get(status_path("job_a")).json()
    assert (doc["status"], doc["lastUpdateTime"]) == ("EXCEPTION", EPOCH + 2000)
    src = doc["nodes"][0]
    assert (src["status"], src["totalPutRecords"], src["totalGetRecords"]) == ("STOPPING", 7, 300)
    sim.clear_overrides()
    assert client.get(status_path("job_a")).json()["status"] == "NORMAL"
    with pytest.raises(ValueError, match="no node 'NOPE'"):
        sim.set_node_status("job_a", "NOPE", "NORMAL")
    with pytest.raises(ValueError, match="unknown counter"):
        sim.set_counters("job_a", "SRC", records=1)


# --- the list API --------------------------------------------------------------------

def test_list_pages_through_every_job(start: Start) -> None:
    """offset/limit page through all jobs (offset counts records), default limit 10, total counts all."""
    _, client, _ = start(Scenario.synthetic(jobs=25, nodes=2, project_id=PROJECT))
    default = list_jobs(client).json()
    assert (default["total"], len(default["jobs"])) == (25, 10)
    names = [job["name"] for offset in (0, 10, 20) for job in list_jobs(client, offset=offset, limit=10).json()["jobs"]]
    assert names == [f"job_{i:02d}" for i in range(25)]
    assert len(list_jobs(client, limit=1000).json()["jobs"]) == 25
    assert set(default["jobs"][0]) == {"name", "jobType", "status", "lastUpdateTime", "owner", "priority",
                                       "createUser", "createTime", "startTime"}


def test_list_offset_can_count_pages(start: Start) -> None:
    """With list_offset = "pages" the offset is a page number."""
    _, client, _ = start(replace(Scenario.synthetic(jobs=25, nodes=1, project_id=PROJECT), list_offset="pages"))
    names = [j["name"] for j in list_jobs(client, offset=2, limit=10).json()["jobs"]]
    assert names == [f"job_{i}" for i in range(20, 25)]


@pytest.mark.parametrize("params", [
    {"limit": 0}, {"limit": 1001}, {"limit": "ten"}, {"offset": -1}, {"jobType": "STREAM"},
], ids=["limit-zero", "limit-over-1000", "limit-not-int", "negative-offset", "bad-job-type"])
def test_list_rejects_bad_parameters(start: Start, params: dict[str, Any]) -> None:
    """Out-of-range paging parameters answer 400 with an error body."""
    _, client, _ = start()
    response = list_jobs(client, **params)
    assert response.status_code == 400
    assert response.json()["error_code"] == "SIM.0400"


def test_list_filters_spells_starting_and_respects_workspace(start: Start) -> None:
    """jobName filters by substring, the list API says STARTING where the status API says STARTTING."""
    _, client, _ = start()
    assert [j["name"] for j in list_jobs(client).json()["jobs"]] == ["job_a", "job_b"]
    only_b = list_jobs(client, jobName="_b").json()
    assert (only_b["total"], only_b["jobs"][0]["status"]) == (1, "STARTING")
    assert client.get(status_path("job_b")).json()["status"] == "STARTTING"
    ws = client.get(f"/v1/{PROJECT}/jobs", params={"jobType": "REAL_TIME"}, headers={"workspace": "ws-1"}).json()
    assert [j["name"] for j in ws["jobs"]] == ["job_c"]


def test_list_defaults_to_batch_jobs(start: Start) -> None:
    """Without jobType the API lists BATCH jobs, of which the simulator has none."""
    _, client, _ = start()
    assert client.get(f"/v1/{PROJECT}/jobs").json() == {"total": 0, "jobs": []}


# --- faults --------------------------------------------------------------------------

def test_latency_fault_calls_the_injected_sleep(start: Start) -> None:
    """A latency fault sleeps through the injected sleep, then answers normally."""
    slept: list[float] = []
    sim, client, _ = start(sleep=slept.append)
    sim.set_fault(kind="latency", delay="2.5s")
    assert client.get(status_path("job_a")).status_code == 200
    assert slept == [2.5]


def test_http_error_for_the_first_requests_only(start: Start) -> None:
    """count limits a fault to the first N matching requests; then answers are clean again."""
    sim, client, _ = start()
    sim.set_fault(job="job_a", kind="http_error", status=503, count=2)
    codes = [client.get(status_path("job_a")).status_code for _ in range(3)]
    assert codes == [503, 503, 200]


def test_throttle_sends_429_with_retry_after(start: Start) -> None:
    """A throttle fault answers 429 with Retry-After and APIG.0308."""
    sim, client, _ = start()
    sim.set_fault(kind="throttle", retry_after="3s")
    response = client.get(status_path("job_a"))
    assert (response.status_code, response.headers["retry-after"]) == (429, "3")
    assert response.json()["error_code"] == "APIG.0308"


@pytest.mark.parametrize(("fault", "status"), [
    ({"kind": "html", "status": 200}, 200),
    ({"kind": "html"}, 502),
    ({"kind": "truncated_json"}, 200),
    ({"kind": "empty_body"}, 200),
], ids=["html-200", "html-502", "truncated-json", "empty-body"])
def test_bodies_that_are_not_json(start: Start, fault: dict[str, Any], status: int) -> None:
    """Non-JSON body faults answer with the given status and a body json cannot parse."""
    sim, client, _ = start()
    sim.set_fault(**fault)
    response = client.get(status_path("job_a"))
    assert response.status_code == status
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


def test_missing_status_fault(start: Start) -> None:
    """missing_status drops the status field and keeps the rest (status and list API)."""
    sim, client, _ = start()
    sim.set_fault(kind="missing_status")
    doc = client.get(status_path("job_a")).json()
    assert "status" not in doc and doc["name"] == "job_a"
    assert "status" not in list_jobs(client).json()["jobs"][0]


def test_disconnect_fault_closes_without_answer(start: Start) -> None:
    """disconnect closes the connection without a response."""
    sim, client, _ = start()
    sim.set_fault(kind="disconnect", count=1)
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(status_path("job_a"))
    assert client.get(status_path("job_a")).status_code == 200


def test_scripted_fault_window_and_job_scope(start: Start) -> None:
    """A [[job.fault]] applies only to its job, inside [after, until) of scenario time."""
    sim, client, clock = start(BASIC + """
        [[job.fault]]
        kind = "http_error"
        status = 500
        after = "2s"
        until = "4s"
    """.replace("        ", ""))
    seen = []
    for t in (1, 2, 3.9, 4):
        clock.set(t)
        seen.append((client.get(status_path("job_c"), headers={"workspace": "ws-1"}).status_code,
                     client.get(status_path("job_a")).status_code))
    assert seen == [(200, 200), (500, 200), (500, 200), (200, 200)]
    clock.set(3)
    sim.clear_faults()
    assert client.get(status_path("job_c"), headers={"workspace": "ws-1"}).status_code == 200


def test_probability_is_seeded_and_repeatable(start: Start) -> None:
    """A probabilistic fault gives the same sequence for the same seed and request order."""
    runs = []
    for _ in range(2):
        sim, client, _ = start()
        sim.set_fault(kind="http_error", status=500, probability=0.5, seed=7)
        runs.append([client.get(status_path("job_a")).status_code for _ in range(20)])
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 500}


def test_newest_runtime_fault_wins(start: Start) -> None:
    """Faults set later take precedence; clear_faults restores clean answers."""
    sim, client, _ = start()
    sim.set_fault(kind="http_error", status=500)
    sim.set_fault(kind="http_error", status=504)
    assert client.get(status_path("job_a")).status_code == 504
    sim.clear_faults()
    assert client.get(status_path("job_a")).status_code == 200


# --- scenario files ------------------------------------------------------------------

_JOB = '[[job]]\nname = "j"\n[[job.node]]\nname = "N"\ntype = "DLI SQL"\n'


@pytest.mark.parametrize(("text", "where", "message"), [
    ('[[job]]\nname = "j"\n', "project_id", "required key is missing"),
    (f'project_id = "p"\nloops = true\n{_JOB}', "loops", "did you mean 'loop'"),
    ('project_id = "p"\n', "job", "at least one"),
    (f'project_id = "p"\n{_JOB}[[job.step]]\nduration = "5 sec"\n', "job[j].step[0]: duration", "invalid duration"),
    (f'project_id = "p"\n{_JOB}[[job.step]]\nnodes = {{ X = "EXCEPTION" }}\n', "nodes: X", "no node of that name"),
    (f'project_id = "p"\n{_JOB}[[job.step]]\nrates = {{ N = -1 }}\n', "rates: N", "at least 0"),
    (f'project_id = "p"\n{_JOB}[[job.step]]\nstatus = "NORMAL"\n[[job.step]]\nstatus = "STOPPED"\n',
     "job[j].step[0]: duration", "only the last step"),
    (f'project_id = "p"\n{_JOB}[[job.node]]\nname = "N"\ntype = "x"\n', "job[j]: node", "defined twice"),
    (f'project_id = "p"\n{_JOB}[[job.fault]]\nkind = "boom"\n', "fault[0]: kind", "must be one of"),
    (f'project_id = "p"\n{_JOB}[[fault]]\nkind = "latency"\n', "fault[0]: delay", "required"),
    (f'project_id = "p"\n{_JOB}[[fault]]\nkind = "http_error"\njob = "nope"\n', "fault[0]: job", "no job named"),
    (f'project_id = "p"\nepoch_start = 1551409406\n{_JOB}', "epoch_start", "seconds?"),
    (f'project_id = "p"\nresponse_style = "java"\n{_JOB}', "response_style", "must be one of 'document', 'sdk'"),
    (f'project_id = "p"\n{_JOB}extra = {{ status = "X" }}\n', "extra: status", "must not replace"),
], ids=["no-project", "typo", "no-jobs", "bad-duration", "unknown-node", "negative-rate", "missing-duration",
        "duplicate-node", "bad-fault-kind", "latency-without-delay", "fault-unknown-job", "epoch-in-seconds",
        "unknown-response-style",
        "extra-replaces-field"])
def test_bad_scenario_names_file_and_key(tmp_path: Path, text: str, where: str, message: str) -> None:
    """Every scenario error names the file, the table and the key."""
    path = tmp_path / "broken.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_scenario(path)
    assert str(path) in str(info.value) and where in str(info.value)


def test_unknown_scenario_name_lists_bundled_ones() -> None:
    """A bare name that is neither a file nor bundled says which scenarios are bundled."""
    with pytest.raises(ConfigError, match="seed, demo, two_projects, demo_sources"):
        load_scenario("nonexistent")
    assert set(BUNDLED_SCENARIOS) == {"seed", "demo", "two_projects", "demo_sources"}
    assert all(load_scenario(name).served() for name in BUNDLED_SCENARIOS)


def test_demo_scenario_timeline(start: Start) -> None:
    """The demo breaks DLI_SMS_GES from 4s to 12s, keeps job_orders starting and stalls DIS_CLICKS at 6s."""
    sim, client, clock = start(load_scenario("demo"))

    def node(job: str, name: str, t: float) -> dict[str, Any]:
        clock.set(t)
        return next(n for n in client.get(status_path(job)).json()["nodes"] if n["name"] == name)

    assert [node("job_sms", "DLI_SMS_GES", t)["status"] for t in (3.9, 4, 11.9, 12, 20)] == \
        ["NORMAL", "EXCEPTION", "EXCEPTION", "NORMAL", "NORMAL"]
    clock.set(20)
    orders = client.get(status_path("job_orders")).json()
    assert (orders["status"], orders["lastUpdateTime"]) == ("STARTTING", sim.epoch_start_ms)
    clicks = [node("job_clicks", "DIS_CLICKS", t)["totalPutRecords"] for t in (0, 5, 6, 20)]
    assert clicks[0] < clicks[1] < clicks[2] == clicks[3]


def test_synthetic_scenario_serves_every_job(start: Start) -> None:
    """Scenario.synthetic serves N NORMAL jobs of M nodes whose counters move."""
    _, client, clock = start(Scenario.synthetic(jobs=1000, nodes=10, project_id=PROJECT))
    assert list_jobs(client, limit=1000).json()["total"] == 1000
    first = client.get(status_path("job_999")).json()
    clock.advance(10)
    second = client.get(status_path("job_999")).json()
    assert (len(first["nodes"]), first["status"]) == (10, "NORMAL")
    assert all(b["totalPutRecords"] > a["totalPutRecords"]
               for a, b in zip(first["nodes"], second["nodes"], strict=True))


# --- plumbing ------------------------------------------------------------------------

def test_requests_are_recorded_on_one_keep_alive_connection(start: Start) -> None:
    """Requests are recorded with query and lower-cased headers; httpx reuses one connection; clear() empties."""
    sim, client, _ = start()
    client.get(status_path("job_a"), headers={"Workspace": "", "X-Sdk-Date": "20190301T000000Z"})
    list_jobs(client, limit=5)
    recorded = list(sim.requests)
    assert [r.path for r in recorded] == [status_path("job_a"), f"/v1/{PROJECT}/jobs"]
    assert recorded[0].headers["x-sdk-date"] == "20190301T000000Z"
    assert recorded[1].query == {"jobType": "REAL_TIME", "limit": "5"}
    assert recorded[0].client == recorded[1].client
    sim.requests.clear()
    assert len(sim.requests) == 0


def test_stop_closes_port_and_threads() -> None:
    """stop() closes the listening socket and every connection thread, even with an idle keep-alive client."""
    sim = Simulator(load_scenario("seed"), clock=ManualClock()).start()
    client = httpx.Client(base_url=sim.url)
    try:
        assert client.get(status_path("job_sms")).status_code == 200
        url = sim.url
        sim.stop()
        assert not [t for t in threading.enumerate() if t.name.startswith("dgc-simulator") and t.is_alive()]
        with pytest.raises(httpx.TransportError):
            httpx.get(url + status_path("job_sms"), timeout=2)
    finally:
        client.close()
        sim.stop()


def test_serve_prints_url_and_stops_on_sigterm() -> None:
    """serve() prints the URL and project ID, answers requests, and exits cleanly on SIGTERM."""
    code = "from notifier.simulator import load_scenario, serve; serve(load_scenario('seed'), '127.0.0.1', 0)"
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert f"project_id={PROJECT}" in first
        assert proc.stdout.readline().strip() == "auth: none (every request is served)"
        url = first.split(" at ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(url + status_path("job_sms"), timeout=5).json() == DOC_EXAMPLE
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
