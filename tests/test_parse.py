"""Parsing DGC responses: snapshots from status bodies, kinds from error bodies, job list pages."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from notifier.core.fetchplan import Listed
from notifier.errors import SourceError
from notifier.httputil import HeaderMapping, parse_retry_after, source_excerpt
from notifier.source.parse import (
    MISSING_NODE_STATUS,
    parse_error,
    parse_job_list,
    parse_status,
)

# The API document's example answer for job_sms, copied verbatim (tabs included).
SEED_BODY = (Path(__file__).parent / "data" / "seed_status.json").read_text()

UTC = timezone.utc
NOW = datetime(2024, 5, 17, 8, 30, 0, tzinfo=UTC)


def _body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


# --- parse_status ----------------------------------------------------------------------

def test_seed_example_parses_into_seven_nodes() -> None:
    """The documented example gives job_sms NORMAL with 7 nodes, DLI_SMS_GES in EXCEPTION."""
    snap = parse_status("job_sms", SEED_BODY.encode())
    assert snap.name == "job_sms"
    assert snap.status == "NORMAL"
    assert [n.name for n in snap.nodes] == ["CREATE_GES_DIR", "CS_SMS_PROCESS", "DELETE_GES_DIR", "DIS_EVENT",
                                            "DIS_INPUT", "DLI_SMS_GES", "DLI_SMS_PROCESS"]
    ges = {n.name: n for n in snap.nodes}["DLI_SMS_GES"]
    assert (ges.status, ges.type, ges.log_path, ges.running_data) == ("EXCEPTION", "DLI SQL", None, None)


def test_seed_example_times_are_aware_utc() -> None:
    """Epoch milliseconds become aware UTC datetimes; an absent endTime stays None."""
    snap = parse_status("job_sms", SEED_BODY.encode())
    assert snap.start_time == datetime(2019, 3, 1, 3, 4, 25, tzinfo=UTC)
    assert snap.last_update_time == datetime(2019, 3, 1, 3, 3, 26, tzinfo=UTC)
    assert snap.end_time is None


def test_seed_example_keeps_running_data_raw_and_counters() -> None:
    """runningData stays the API's JSON string; counters and logPath come through."""
    nodes = {n.name: n for n in parse_status("job_sms", SEED_BODY.encode()).nodes}
    cs = nodes["CS_SMS_PROCESS"]
    assert cs.running_data == '{"jobName":"CS_SMS_PROCESS","jobId":"107016","App_dis-input":"app_sms_process"}'
    assert isinstance(cs.running_data, str)
    assert cs.log_path is not None and cs.log_path.startswith("obs://dlf-log-b384b9e9ab9b4ee8994c8633aabc9505/")
    assert nodes["DIS_EVENT"].counters == {"totalGetBytes": 0, "totalGetRecords": 8602,
                                           "totalPutBytes": 0, "totalPutRecords": 8596}
    assert nodes["DIS_EVENT"].type == "ExecuteDISStream"


NODE = {"name": "N1", "status": "NORMAL", "type": "DLI SQL", "totalGetBytes": 1, "totalGetRecords": 2,
        "totalPutBytes": 3, "totalPutRecords": 4}


@pytest.mark.parametrize(("fields", "attr", "expected"), [
    pytest.param({"status": "NORMAL", "nodes": [NODE], "owner": "x", "extra": {"a": [1]}}, "status", "NORMAL",
                 id="unknown-fields-ignored"),
    pytest.param({"status": "PAUSE"}, "status", "PAUSE", id="unknown-status-kept"),
    pytest.param({"status": "STARTING"}, "status", "STARTTING", id="starting-alias"),
    pytest.param({"status": " normal "}, "status", "NORMAL", id="status-normalized"),
    pytest.param({"status": "NORMAL", "starttime": 1551409465000}, "start_time",
                 datetime(2019, 3, 1, 3, 4, 25, tzinfo=UTC), id="sdk-starttime-spelling"),
    pytest.param({"status": "NORMAL", "startTime": "1551409465000"}, "start_time",
                 datetime(2019, 3, 1, 3, 4, 25, tzinfo=UTC), id="time-as-digit-string"),
    pytest.param({"status": "NORMAL", "startTime": "", "endTime": None}, "start_time", None,
                 id="empty-time-is-none"),
    pytest.param({"status": "NORMAL", "lastUpdateTime": 1551409406000.0}, "last_update_time",
                 datetime(2019, 3, 1, 3, 3, 26, tzinfo=UTC), id="float-millis"),
    pytest.param({"status": "NORMAL", "starttime": "1551409465000", "startTime": None}, "start_time",
                 datetime(2019, 3, 1, 3, 4, 25, tzinfo=UTC), id="sdk-string-time-when-page-spelling-is-null"),
    pytest.param({"status": "NORMAL", "endTime": 1551409500123}, "end_time",
                 datetime(2019, 3, 1, 3, 5, 0, 123000, tzinfo=UTC), id="end-time-millis"),
    pytest.param({"status": "NORMAL"}, "nodes", (), id="missing-nodes-is-zero-nodes"),
    pytest.param({"status": "NORMAL", "nodes": None}, "nodes", (), id="null-nodes-is-zero-nodes"),
    pytest.param({"status": "NORMAL", "name": "other"}, "name", "job_x", id="named-as-asked"),
])
def test_status_fields(fields: dict[str, object], attr: str, expected: object) -> None:
    """Status bodies are read tolerantly, field by field."""
    assert getattr(parse_status("job_x", _body(**fields)), attr) == expected


@pytest.mark.parametrize(("node", "attr", "expected"), [
    pytest.param({"name": "n", "status": "STARTING"}, "status", "STARTTING", id="node-starting-alias"),
    pytest.param({"name": "n", "status": "OVERLOAD"}, "status", "OVERLOAD", id="node-unknown-status"),
    pytest.param({"name": "n"}, "status", MISSING_NODE_STATUS, id="node-missing-status"),
    pytest.param({"name": "n", "status": "NORMAL", "runningData": {"b": 1, "a": "x"}}, "running_data",
                 '{"a":"x","b":1}', id="running-data-object-dumped"),
    pytest.param({"name": "n", "status": "NORMAL", "runningData": "not json {"}, "running_data", "not json {",
                 id="running-data-string-kept"),
    pytest.param({"name": "n", "status": "NORMAL", "logPath": ""}, "log_path", None, id="empty-log-path"),
    pytest.param({"name": "n", "status": "NORMAL", "nodeType": "DLI SQL"}, "type", "DLI SQL",
                 id="sdk-node-type"),
    pytest.param({"name": "n", "status": "NORMAL", "type": "Create OBS", "nodeType": "OBSManager"}, "type",
                 "Create OBS", id="page-type-wins-over-sdk-node-type"),
    pytest.param({"name": "n", "status": "NORMAL", "type": None, "nodeType": "DLISQL"}, "type", "DLISQL",
                 id="null-type-falls-back-to-node-type"),
    pytest.param({"name": "n", "status": "NORMAL"}, "type", "", id="no-type"),
    pytest.param({"name": "n", "status": "NORMAL", "totalGetBytes": "12", "totalGetRecords": None,
                  "totalPutBytes": " 3 ", "totalPutRecords": ""}, "counters",
                 {"totalGetBytes": 12, "totalPutBytes": 3}, id="string-counters-and-absent-ones"),
    pytest.param({"name": "n", "status": "NORMAL", "totalPutRecords": 7.0}, "counters", {"totalPutRecords": 7},
                 id="integral-float-counter"),
    pytest.param({"name": "n", "status": "NORMAL"}, "counters", {}, id="no-counters-is-not-zero-counters"),
])
def test_node_fields(node: dict[str, object], attr: str, expected: object) -> None:
    """Node entries are read tolerantly: aliases, raw runningData, counters defaulting to 0."""
    (parsed,) = parse_status("j", _body(status="NORMAL", nodes=[node])).nodes
    assert getattr(parsed, attr) == expected


@pytest.mark.parametrize("status", ["STARTING", "STARTTING", "NORMAL", "EXCEPTION", "STOPPING", "STOPPED",
                                    "PAUSE", "ABNORMAL", "DISABLE", "OVERLOAD", "INIT"])
def test_every_documented_status_is_kept(status: str) -> None:
    """The page's five statuses and the SDK's five more come through for job and node (STARTING as STARTTING)."""
    snap = parse_status("j", _body(status=status, nodes=[{"name": "n", "status": status}]))
    expected = "STARTTING" if status == "STARTING" else status
    assert (snap.status, snap.nodes[0].status) == (expected, expected)


# What huaweicloudsdkdgc's ShowJobStatusResponse / RealTimeNodeStatus model, with the SDK's types: times and
# the extension fields as strings, `starttime` and `nodeType` spelt its way; plus the newer API page's
# bufferRecords and jobInstanceId. Nothing here is in the 2019 API page's example.
SDK_SHAPED = {
    "name": "job_sms", "status": "STARTING", "starttime": "1551409465000", "endTime": None,
    "lastUpdateTime": "1551409406000", "createUser": "alice", "lastModifiyUser": "bob",
    "nodes": [
        {"name": "DIS_INPUT", "status": "OVERLOAD", "nodeType": "ExecuteDISStream", "lastInstanceStatus": "success",
         "logPath": "obs://bucket/DIS_INPUT.job", "runningData": "{\"streamName\":\"dis-input\"}",
         "extendCounter": "{\"a\":1}", "bufferRecords": 0, "jobInstanceId": 123456},
        {"name": "DLI_SMS_GES", "status": "ABNORMAL", "nodeType": "DLI SQL", "lastInstanceStatus": "fail",
         "extendCounter": None, "bufferRecords": "17", "jobInstanceId": "123456", "totalPutRecords": "208"},
    ],
}


def test_sdk_shaped_answer_parses_like_the_page_shaped_one() -> None:
    """The SDK's field names and string types give the same snapshot the API page's shape would."""
    snap = parse_status("job_sms", json.dumps(SDK_SHAPED).encode())
    assert (snap.status, snap.start_time, snap.last_update_time, snap.end_time) == (
        "STARTTING", datetime(2019, 3, 1, 3, 4, 25, tzinfo=UTC), datetime(2019, 3, 1, 3, 3, 26, tzinfo=UTC), None)
    dis, ges = snap.nodes
    assert (dis.name, dis.status, dis.type, dis.log_path, dis.running_data, dict(dis.counters)) == (
        "DIS_INPUT", "OVERLOAD", "ExecuteDISStream", "obs://bucket/DIS_INPUT.job", '{"streamName":"dis-input"}', {})
    assert (ges.status, ges.type, dict(ges.counters)) == ("ABNORMAL", "DLI SQL", {"totalPutRecords": 208})


@pytest.mark.parametrize("extra", [
    pytest.param({"lastInstanceStatus": 3, "extendCounter": {"x": [1]}, "bufferRecords": "many",
                  "jobInstanceId": None}, id="ignored-sdk-fields-of-any-type"),
    pytest.param({"futureField": {"nested": [1, 2]}, "type2": 7}, id="unknown-fields"),
])
def test_fields_notifier_does_not_use_never_fail_a_node(extra: dict[str, object]) -> None:
    """Fields the pipeline has no place for are ignored whatever their type: they cannot fail a job."""
    (node,) = parse_status("j", _body(status="NORMAL", nodes=[{"name": "n", "status": "NORMAL", **extra}])).nodes
    assert (node.name, node.status) == ("n", "NORMAL")


@pytest.mark.parametrize(("fields", "where"), [
    pytest.param({"status": ["NORMAL"]}, "field 'status' must be a string, got array ['NORMAL']", id="job-status"),
    pytest.param({"status": "NORMAL", "startTime": "yesterday"},
                 "field 'startTime' must be epoch milliseconds (a number or a string of digits), got string "
                 "'yesterday'", id="job-start-time"),
    pytest.param({"status": "NORMAL", "starttime": True}, "field 'starttime' must be epoch milliseconds",
                 id="sdk-start-time-boolean"),
    pytest.param({"status": "NORMAL", "lastUpdateTime": 1e300}, "field 'lastUpdateTime' must be epoch",
                 id="time-out-of-range"),
    pytest.param({"status": "NORMAL", "nodes": [{"name": "N1", "status": 3}]},
                 "node 'N1' field 'status' must be a string, got number 3", id="node-status"),
    pytest.param({"status": "NORMAL", "nodes": [{"name": "N1", "nodeType": 7}]},
                 "node 'N1' field 'nodeType' must be a string, got number 7", id="node-type"),
    pytest.param({"status": "NORMAL", "nodes": [{"name": "N1", "type": {"a": 1}}]},
                 "node 'N1' field 'type' must be a string, got object", id="node-type-object"),
    pytest.param({"status": "NORMAL", "nodes": [{"name": "N1", "logPath": 5}]},
                 "node 'N1' field 'logPath' must be a string", id="log-path"),
    pytest.param({"status": "NORMAL", "nodes": [{"name": "N1", "runningData": 5}]},
                 "node 'N1' field 'runningData' must be a string (a JSON document) or an object", id="running-data"),
    pytest.param({"status": "NORMAL", "nodes": [{"name": "N1", "totalPutRecords": 1.5}]},
                 "node 'N1' field 'totalPutRecords' must be a whole number (or a string of digits), got number 1.5",
                 id="fractional-counter"),
    pytest.param({"status": "NORMAL", "nodes": [{"name": "N1", "totalGetBytes": True}]},
                 "node 'N1' field 'totalGetBytes' must be a whole number", id="boolean-counter"),
    pytest.param({"status": "NORMAL", "nodes": [{"name": "N1", "totalGetRecords": "12 records"}]},
                 "node 'N1' field 'totalGetRecords' must be a whole number", id="wordy-counter"),
    pytest.param({"status": "NORMAL", "nodes": [{"name": "N1", "totalGetRecords": "9" * 5000}]},
                 "node 'N1' field 'totalGetRecords' must be a whole number", id="counter-too-long-to-convert"),
    pytest.param({"status": "NORMAL", "startTime": "1e999"}, "field 'startTime' must be epoch", id="infinite-time"),
])
def test_wrong_typed_field_is_a_clear_error(fields: dict[str, object], where: str) -> None:
    """A used field of the wrong type fails the job's answer, naming job, node and field: never a silent default."""
    with pytest.raises(SourceError) as info:
        parse_status("job_sms", _body(**fields))
    assert info.value.kind == "bad_response"
    assert str(info.value).startswith(f"job_sms: job status response: {where}"), str(info.value)


def test_bad_node_entries_are_skipped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Entries that are not objects, lack a name or repeat one are dropped, counted in a warning, not fatal."""
    nodes = [1, "x", None, {}, {"name": ""}, {"name": 5}, {"name": "ok", "status": "NORMAL"}, {"name": "also"},
             {"name": "ok", "status": "EXCEPTION"}]
    with caplog.at_level(logging.WARNING, logger="notifier.source.parse"):
        snap = parse_status("job_b", _body(status="EXCEPTION", nodes=nodes))
    assert [(n.name, n.status) for n in snap.nodes] == [("ok", "NORMAL"), ("also", MISSING_NODE_STATUS)]
    assert "job=job_b skipped=7 kept=2" in caplog.text


@pytest.mark.parametrize(("body", "problem"), [
    pytest.param(b"<html><body>502 Bad Gateway</body></html>", "not JSON", id="not-json"),
    pytest.param(b"", "not JSON", id="empty-body"),
    pytest.param(b"\xff\xfe\x00garbage", "not JSON", id="binary"),
    pytest.param(b'[{"status": "NORMAL"}]', "JSON array, not an object", id="json-array"),
    pytest.param(b'"NORMAL"', "JSON string, not an object", id="json-string"),
    pytest.param(b"null", "JSON null, not an object", id="json-null"),
    pytest.param(b'{"name": "job_sms", "nodes": []}', "no status", id="missing-status"),
    pytest.param(b'{"status": "", "nodes": []}', "no status", id="empty-status"),
    pytest.param(b'{"status": null}', "no status", id="null-status"),
    pytest.param(b'{"status": "NORMAL", "nodes": {"name": "a"}}', "nodes that are not a list",
                 id="nodes-not-a-list"),
])
def test_bad_status_bodies(body: bytes, problem: str) -> None:
    """A body that is not a job status is a bad_response naming the job, never an empty job."""
    with pytest.raises(SourceError, match=problem) as info:
        parse_status("job_sms", body)
    assert info.value.kind == "bad_response"
    assert str(info.value).startswith("job_sms: ")


def test_bad_body_excerpt_is_short_and_single_line() -> None:
    """The error quotes only a short, printable excerpt of a long, multi-line body."""
    body = b"<html>\n\t<head>\x07oops</head>\n" + b"x" * 5000
    with pytest.raises(SourceError) as info:
        parse_status("j", body)
    message = str(info.value)
    assert "<html> <head> oops</head>" in message
    assert "\n" not in message and "\x07" not in message
    assert len(message) < 200


def test_error_body_with_2xx_is_classified() -> None:
    """An error document answered with 200 still yields its error code and kind."""
    with pytest.raises(SourceError) as info:
        parse_status("job_sms", b'{"error_code": "DLF.0100", "error_msg": "The job does not exists."}')
    assert (info.value.kind, info.value.error_code) == ("not_found", "DLF.0100")


# --- parse_error -----------------------------------------------------------------------

@pytest.mark.parametrize(("status", "body", "kind", "code"), [
    pytest.param(400, b'{"error_code": "DLF.0100", "error_msg": "The job does not exists."}', "not_found",
                 "DLF.0100", id="dlf0100-snake"),
    pytest.param(400, b'{"errorCode": "DLF.0100", "errorMsg": "The job does not exists."}', "not_found",
                 "DLF.0100", id="dlf0100-camel"),
    pytest.param(404, b"", "not_found", None, id="http-404"),
    pytest.param(401, b'{"error_code": "APIG.0301", "error_msg": "Incorrect IAM authentication information"}',
                 "auth", "APIG.0301", id="apig0301"),
    pytest.param(401, b'{"error_code": "APIGW.0301", "error_msg": "verify aksk signature fail"}', "auth",
                 "APIGW.0301", id="apigw0301"),
    pytest.param(403, b"Forbidden", "auth", None, id="http-403"),
    pytest.param(400, b'{"error_code": "DLF.6888", "error_msg": "No permission."}', "auth", "DLF.6888",
                 id="dlf6888"),
    pytest.param(429, b'{"error_code": "APIG.0308", "error_msg": "The request is throttled."}', "throttled",
                 "APIG.0308", id="apig0308"),
    pytest.param(400, b'{"errorCode": "APIGW.0308", "errorMsg": "throttled"}', "throttled", "APIGW.0308",
                 id="apigw0308-on-400"),
    pytest.param(429, b"", "throttled", None, id="http-429"),
    pytest.param(500, b'{"error_code": "DLF.0001", "error_msg": "Internal error"}', "server", "DLF.0001",
                 id="http-500"),
    pytest.param(503, b"<html>busy</html>", "server", None, id="http-503-html"),
    pytest.param(400, b'{"error_code": "DLF.3018", "error_msg": "Invalid job name."}', "error", "DLF.3018",
                 id="other-4xx"),
    pytest.param(401, b'{"error": {"code": "401", "message": "The request requires authentication.",'
                      b' "title": "Unauthorized"}}', "auth", "401", id="iam-nested-error"),
])
def test_error_kinds(status: int, body: bytes, kind: str, code: str | None) -> None:
    """Error answers are classified by API code first, then by HTTP status."""
    error = parse_error(status, body, {}, job="job_sms")
    assert (error.kind, error.error_code, error.status_code) == (kind, code, status)
    assert str(error).startswith("job_sms: ") and f"(HTTP {status}" in str(error)


def test_error_message_names_the_code() -> None:
    """The message reads like the API doc: job, code, text, what the code means and the HTTP status."""
    error = parse_error(400, b'{"error_code":"DLF.0100","error_msg":"The job does not exists."}', {},
                        job="job_sms")
    assert str(error) == ("job_sms: DLF.0100 The job does not exists. - no such job in this workspace: check the "
                          "job name and [source] workspace (HTTP 400)")


@pytest.mark.parametrize(("code", "meaning"), [
    pytest.param("DLF.0100", "no such job", id="DLF.0100"),
    pytest.param("DLF.6888", "no permission", id="DLF.6888"),
    pytest.param("DLF.3018", "job name is not valid", id="DLF.3018"),
    pytest.param("DLF.0810", "no such workspace", id="DLF.0810"),
    pytest.param("APIG.0302", "not allowed this API or project", id="APIG.0302"),
    pytest.param("APIG.0301", "refused the credentials", id="APIG.0301"),
    pytest.param("APIGW.0301", "clock more than 15 minutes off", id="APIGW.0301"),
    pytest.param("APIG.0308", "throttled", id="APIG.0308"),
    pytest.param("APIGW.0308", "max_requests_per_second", id="APIGW.0308"),
])
def test_known_codes_are_explained(code: str, meaning: str) -> None:
    """The codes an operator meets get a few words on what they mean, in either body spelling."""
    for body in (_body(error_code=code, error_msg="text"), _body(errorCode=code, errorMsg="text")):
        message = str(parse_error(400, body, {}, job="j"))
        assert message.startswith(f"j: {code} text - ") and meaning in message, message


def test_unknown_codes_are_named_without_explanation() -> None:
    """A code notifier does not know is quoted as the API sent it, with nothing made up."""
    assert str(parse_error(400, _body(error_code="DLF.9999", error_msg="odd"), {})) == "DLF.9999 odd (HTTP 400)"


def test_error_message_without_code_quotes_the_body() -> None:
    """An error without a code says the HTTP reason and a short body excerpt."""
    assert str(parse_error(502, b"<h1>Bad\ngateway</h1>", {})) == "Bad Gateway: <h1>Bad gateway</h1> (HTTP 502)"


@pytest.mark.parametrize(("body", "headers", "expected"), [
    pytest.param(b'{"error_code": "X.1", "error_msg": "boom", "request_id": "r-42"}', {}, "r-42", id="body"),
    pytest.param(b'{"error_code": "X.1", "error_msg": "boom", "requestId": "r-43"}', {}, "r-43", id="body-camel"),
    pytest.param(b'{"error_code": "X.1", "error_msg": "boom"}', {"x-request-id": "3b2f9c"}, "3b2f9c",
                 id="header"),
    pytest.param(b'{"error_code": "X.1", "error_msg": "boom", "request_id": "body-id"}',
                 httpx.Headers({"X-Request-Id": "header-id"}), "header-id", id="header-wins"),
    pytest.param(b"<html>busy</html>", {"X-Request-Id": "html-id"}, "html-id", id="html-error-page"),
])
def test_error_message_names_the_request_id(body: bytes, headers: HeaderMapping, expected: str) -> None:
    """The request id Huawei support asks for is in the message, from X-Request-Id or the body."""
    message = str(parse_error(500, body, headers, job="j"))
    assert message.endswith(f"(HTTP 500, request id {expected})"), message


def test_error_message_without_request_id_says_only_the_status() -> None:
    """No request id anywhere: the message does not invent one (a blank header counts as none)."""
    assert str(parse_error(500, b'{"error_code": "X.1", "error_msg": "boom"}', {"X-Request-Id": " "})) == (
        "X.1 boom (HTTP 500)")


@pytest.mark.parametrize(("headers", "expected"), [
    pytest.param({"Retry-After": "2"}, 2.0, id="seconds"),
    pytest.param({"retry-after": "1.5"}, 1.5, id="lower-case-name-fractional"),
    pytest.param(httpx.Headers({"RETRY-AFTER": "9"}), 9.0, id="httpx-headers"),
    pytest.param({"Retry-After": format_datetime(NOW + timedelta(seconds=30), usegmt=True)}, 30.0,
                 id="http-date"),
    pytest.param({"Retry-After": format_datetime(NOW - timedelta(hours=1), usegmt=True)}, 0.0,
                 id="http-date-in-past"),
    pytest.param({"Retry-After": "-5"}, 0.0, id="negative"),
    pytest.param({"Retry-After": "soon"}, None, id="garbage"),
    pytest.param({}, None, id="absent"),
])
def test_retry_after_forms(headers: dict[str, str], expected: float | None) -> None:
    """Retry-After is read as delta-seconds or an HTTP-date relative to the injected now."""
    error = parse_error(429, b"", headers, now=NOW)
    assert error.retry_after == expected


def test_retry_after_http_date_needs_now() -> None:
    """Without a clock an HTTP-date cannot become seconds, so it is ignored rather than guessed."""
    assert parse_retry_after(format_datetime(NOW, usegmt=True)) is None
    assert parse_retry_after("3") == 3.0


# --- parse_job_list --------------------------------------------------------------------

def test_job_list_page() -> None:
    """A list page yields the total, the names (skipping entries without one) and the owners it names."""
    body = _body(total=2500, jobs=[{"name": "a", "jobType": "REAL_TIME", "owner": "alice"}, {"name": ""},
                                   {"owner": "x"}, "z", {"name": "b", "status": "STARTING", "owner": 7}])
    page = parse_job_list(body)
    assert (page.total, page.names, page.owners) == (2500, ("a", "b"), {"a": "alice"})


def test_job_list_items_carry_job_level_status_and_last_update() -> None:
    """The planner's cue: each item's normalized status and lastUpdateTime (a number or the SDK's digit string)."""
    page = parse_job_list(_body(total=3, jobs=[
        {"name": "a", "status": "STARTING", "lastUpdateTime": 1551409406000},
        {"name": "b", "status": "NORMAL", "lastUpdateTime": "1551409406000"},
        {"name": "c", "status": 7, "lastUpdateTime": "yesterday"}]))
    at = datetime.fromtimestamp(1551409406, tz=timezone.utc)
    assert page.jobs == (Listed("a", "STARTTING", at), Listed("b", "NORMAL", at), Listed("c", "", None))


def test_job_list_without_total_counts_the_page() -> None:
    """A missing total is taken as this page's size rather than failing; a total in a string is still read."""
    assert parse_job_list(_body(jobs=[{"name": "a"}])).total == 1
    assert parse_job_list(_body(total="1200", jobs=[{"name": "a"}])).total == 1200


def test_job_list_error_with_2xx_is_not_an_empty_list() -> None:
    """An error document answered with 200 names its code; it must not read as "there are no jobs"."""
    with pytest.raises(SourceError) as info:
        parse_job_list(_body(error_code="DLF.6888", error_msg="No permission."))
    assert (info.value.kind, info.value.error_code) == ("auth", "DLF.6888")


@pytest.mark.parametrize("body", [
    pytest.param(b"nope", id="not-json"),
    pytest.param(b"[]", id="array"),
    pytest.param(b'{"total": 3, "jobs": {"name": "a"}}', id="jobs-not-a-list"),
])
def test_bad_job_list(body: bytes) -> None:
    """A job list that is not a list document is a bad_response."""
    with pytest.raises(SourceError) as info:
        parse_job_list(body)
    assert info.value.kind == "bad_response"


def test_excerpt_truncates() -> None:
    """Excerpts end with an ellipsis when cut."""
    assert source_excerpt(b"a" * 500, limit=10) == "aaaaaaa..."
