"""Turn DGC API response bodies into snapshots and errors: pure functions, no I/O.

Two descriptions of the job status answer exist and disagree: the API page (and its
example) and the official SDK ``huaweicloudsdkdgc`` (``ShowJobStatusResponse``,
``RealTimeNodeStatus``). Both are read, since either may be what a region serves:

    field              API page                    SDK model                 read as
    job start          startTime (int ms)          starttime (str)           either; ms as number or digits
    endTime, lastUpdateTime  int ms                str                       number or digits
    job/node status    STARTTING, NORMAL, ...      STARTING, ..., PAUSE, ABNORMAL, DISABLE, OVERLOAD, INIT
                                                                             STARTING -> STARTTING; others as-is
    node type          type                        nodeType                  either (type first)
    counters           totalGetBytes, ... (int)    (not modelled)            number or digits; absent stays absent
    ignored            bufferRecords, jobInstanceId (newer page); lastInstanceStatus, extendCounter,
                       createUser, lastModifiyUser (SDK): nothing downstream has a place for them

Tolerant where the API is loose (unknown fields, unknown statuses, both spellings, absent
optional fields) and strict where a mistake would be costly: a body that is not a job
status is a ``bad_response`` error, never "a job with no nodes" (an empty node list would
look like every node vanished), and a field of the wrong type is a ``bad_response`` naming
the job, node and field, never a silent default (a counter read as 0 looks stalled; a
type read as "" escapes every ``node_types`` rule). A bad answer keeps the job's alerts
as they were until a good one comes.

Errors name the API's code with a short explanation of the codes worth knowing, and the
request id (``X-Request-Id`` or the body's ``request_id``): what Huawei support asks for.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from http import HTTPStatus
from types import MappingProxyType
from typing import Any

from notifier.core.counters import Counters
from notifier.core.fetchplan import Listed
from notifier.core.models import JobSnapshot, NodeStatus, normalize_status
from notifier.errors import SourceError
from notifier.httputil import HeaderMapping, get_header, parse_retry_after, source_excerpt

log = logging.getLogger(__name__)

MISSING_NODE_STATUS = "UNKNOWN"
"""Status given to a node entry that has a name but no status (the field is optional in the API)."""

NOT_FOUND_CODES = frozenset({"DLF.0100"})
AUTH_CODES = frozenset({"APIG.0301", "APIGW.0301", "DLF.6888"})
THROTTLED_CODES = frozenset({"APIG.0308", "APIGW.0308"})

_BAD_CREDENTIALS = ("the API gateway refused the credentials: a wrong AK/SK or signature, an expired or foreign "
                    "token, or a clock more than 15 minutes off")
_THROTTLED = "throttled: more requests than the API allows (30/s per user; lower [source] max_requests_per_second)"
ERROR_CODES: Mapping[str, str] = MappingProxyType({
    "DLF.0100": "no such job in this workspace: check the job name and [source] workspace",
    "DLF.3018": "the job name is not valid",
    "DLF.6888": "no permission: the IAM user lacks DataArts Studio rights for this workspace",
    "DLF.0810": "no such workspace for this project: check [source] workspace (the workspace id, not its name)",
    "APIG.0302": "these credentials are not allowed this API or project: check [source] project_id and the "
                 "IAM user's permissions for it",
    "APIG.0301": _BAD_CREDENTIALS,
    "APIGW.0301": _BAD_CREDENTIALS,
    "APIG.0308": _THROTTLED,
    "APIGW.0308": _THROTTLED,
})
"""Codes the API answers that an operator should understand at a glance: code -> what it means and what to do."""

REQUEST_ID_HEADER = "X-Request-Id"

_DIGITS = re.compile(r"^[+-]?\d+$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


# --- job status -----------------------------------------------------------------------

def parse_status(job: str, body: bytes) -> JobSnapshot:
    """Parse a ``GET /v1/{project_id}/jobs/{job}/status`` answer into a JobSnapshot.

    The snapshot is named ``job`` (the name asked for), so state stays keyed by config.
    Raises SourceError(kind="bad_response") when the body is not a JSON object with a status,
    or when a field notifier uses has the wrong type.
    """
    data = _json_object(job, body, what="job status")
    status = data.get("status")
    if status is None or (isinstance(status, str) and not status.strip()):
        if _first_str(data, "error_code", "errorCode"):
            raise parse_error(200, body, {}, job=job)  # an error sent with a 2xx: still name its code
        raise _bad(job, "job status response has no status", body)
    if not isinstance(status, str):
        raise _wrong_type(job, None, "status", "a string", status)
    raw_nodes = data.get("nodes")
    if raw_nodes is None:
        raw_nodes = []
    elif not isinstance(raw_nodes, list):
        raise _bad(job, "job status response has nodes that are not a list", body)
    nodes, skipped = _parse_nodes(job, raw_nodes)
    if skipped:
        log.warning("Skipped malformed node entries job=%s skipped=%d kept=%d", job, skipped, len(nodes))
    return JobSnapshot(
        name=job,
        status=normalize_status(status),
        start_time=_instant(job, None, data, "startTime", "starttime"),
        end_time=_instant(job, None, data, "endTime", "endtime"),
        last_update_time=_instant(job, None, data, "lastUpdateTime", "lastupdatetime"),
        nodes=nodes,
    )


def _pick(data: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[str, Any]:
    """The first of ``keys`` present with a non-null value, and that value; ("", None) if none is."""
    for key in keys:
        value = data.get(key)
        if value is not None:
            return key, value
    return "", None


def _parse_nodes(job: str, raw: list[Any]) -> tuple[tuple[NodeStatus, ...], int]:
    """Parse node entries; return them with the number skipped (unusable, or a repeated name: first wins)."""
    nodes: dict[str, NodeStatus] = {}
    skipped = 0
    for entry in raw:
        node = _parse_node(job, entry)
        if node is None or node.name in nodes:
            skipped += 1
        else:
            nodes[node.name] = node
    return tuple(nodes.values()), skipped


def _parse_node(job: str, entry: Any) -> NodeStatus | None:
    """One node entry; None if it has no usable name (it cannot be tracked), an error if a field is mistyped."""
    if not isinstance(entry, dict):
        return None
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        return None
    status = _text(job, name, entry, "status")
    node_type = _text(job, name, entry, "type", "nodeType")
    log_path = _text(job, name, entry, "logPath")
    # names and types repeat across every job: interned, 100,000 entities keep a few strings, not 200,000
    return NodeStatus(
        name=sys.intern(name),
        status=normalize_status(status) if status and status.strip() else MISSING_NODE_STATUS,
        type=sys.intern(node_type) if node_type else "",
        log_path=log_path or None,
        running_data=_running_data(job, name, entry.get("runningData")),
        counters=Counters.of(_counter(job, name, entry, "totalGetBytes"),
                             _counter(job, name, entry, "totalGetRecords"),
                             _counter(job, name, entry, "totalPutBytes"),
                             _counter(job, name, entry, "totalPutRecords")),
    )


def _text(job: str, node: str | None, data: Mapping[str, Any], *keys: str) -> str | None:
    """A string field under the first of ``keys`` present; None if absent."""
    for key in keys:  # the hot path (every field of every node of every job): no helper call
        value = data.get(key)
        if value is not None:
            if isinstance(value, str):
                return value
            raise _wrong_type(job, node, key, "a string", value)
    return None


def _running_data(job: str, node: str, value: Any) -> str | None:
    """Keep the API's JSON-in-a-string as is; re-encode if the API sent a real object."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    raise _wrong_type(job, node, "runningData", "a string (a JSON document) or an object", value)


def _counter(job: str, node: str, entry: Mapping[str, Any], key: str) -> int | None:
    """A counter as an int: a whole number, or digits in a string (as the SDK types numbers); None if absent."""
    value = entry.get(key)
    if type(value) is int:  # the common case first: bool is a subclass of int, so not `isinstance`
        return value
    if value is None or value == "":
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _DIGITS.match(value.strip()):
        number = _int(value)
        if number is not None:
            return number
    raise _wrong_type(job, node, key, "a whole number (or a string of digits)", value)


def _int(digits: str) -> int | None:
    """``int(digits)``, or None for a string too long to convert (Python refuses over 4,300 digits)."""
    try:
        return int(digits.strip())
    except ValueError:
        return None


def _instant(job: str, node: str | None, data: Mapping[str, Any], *keys: str) -> datetime | None:
    """Epoch milliseconds (a number, or digits in a string as the SDK types times) to an aware UTC datetime."""
    key, value = _pick(data, keys)
    if value is None or value == "":
        return None
    ms: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        ms = float(value)
    elif isinstance(value, str) and _NUMBER.match(value.strip()):
        ms = float(value.strip())
    if ms is not None and math.isfinite(ms):
        try:
            return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            pass
    raise _wrong_type(job, node, key, "epoch milliseconds (a number or a string of digits)", value)


# --- job list -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of the list API: how many jobs it says there are, and the jobs on this page."""

    total: int
    jobs: tuple[Listed, ...]
    owners: Mapping[str, str]  # job -> owner, where the owner is a string (who to ping in Slack)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.jobs)


def parse_job_list(body: bytes) -> JobPage:
    """Parse a ``GET /v1/{project_id}/jobs`` page: the total, and each job's name, job-level status and last update.

    Entries without a usable name are skipped; a missing ``total`` counts this page only.
    An entry whose status or ``lastUpdateTime`` is missing or odd is kept with an empty
    status or no time: the fetch planner then asks for that job's status, which says.
    """
    data = _json_object(None, body, what="job list")
    jobs = data.get("jobs")
    if jobs is None:
        if _first_str(data, "error_code", "errorCode"):
            raise parse_error(200, body, {})  # an error sent with a 2xx is not "no jobs"
        jobs = []
    if not isinstance(jobs, list):
        raise _bad(None, "job list response has no list of jobs", body)
    listed: list[Listed] = []
    owners: dict[str, str] = {}
    for j in jobs:
        if not isinstance(j, dict) or not isinstance(j.get("name"), str) or not j["name"]:
            continue
        name, status = j["name"], j.get("status")
        try:
            updated = _instant(name, None, j, "lastUpdateTime", "lastupdatetime")
        except SourceError:
            updated = None
        listed.append(Listed.of(name, status if isinstance(status, str) else "", updated))
        if isinstance(j.get("owner"), str) and j["owner"]:
            owners[name] = j["owner"]
    total = data.get("total")
    if isinstance(total, str) and _DIGITS.match(total.strip()):
        total = _int(total)  # the SDK types numbers loosely; a count in a string is still a count
    if isinstance(total, bool) or not isinstance(total, int):
        total = len(listed)
    return JobPage(total, tuple(listed), owners)


# --- errors ---------------------------------------------------------------------------

def parse_error(status_code: int, body: bytes, headers: HeaderMapping, *, job: str | None = None,
                now: datetime | None = None) -> SourceError:
    """Classify a non-2xx answer into a SourceError whose message names the error code and request id.

    ``job`` prefixes the message; ``now`` is needed only to turn an HTTP-date
    ``Retry-After`` into seconds (without it such a header is ignored). The message reads
    ``job: CODE text - what the code means (HTTP 400, request id 3b2f...)``.
    """
    code, text, body_request_id = _error_fields(body)
    kind = classify(status_code, code)
    retry_after = parse_retry_after(get_header(headers, "Retry-After"), now)
    detail = " ".join(p for p in (code, text) if p) or _reason(status_code, body)
    hint = ERROR_CODES.get(code or "")
    if hint:
        detail = f"{detail} - {hint}"
    request_id = request_id_of(headers) or body_request_id
    message = f"{job + ': ' if job else ''}{detail} ({answer_suffix(status_code, request_id)})"
    return SourceError(message, kind=kind, status_code=status_code, error_code=code, retry_after=retry_after)


def request_id_of(headers: HeaderMapping) -> str | None:
    """The answer's ``X-Request-Id``, if it has a usable one."""
    value = get_header(headers, REQUEST_ID_HEADER)
    return value.strip() if value and value.strip() else None


def answer_suffix(status_code: int, request_id: str | None) -> str:
    """``HTTP 400, request id 3b2f...``: how every error names the answer it is about."""
    return f"HTTP {status_code}" + (f", request id {request_id}" if request_id else "")


def classify(status_code: int, error_code: str | None) -> str:
    """The FetchError kind for an HTTP status and API error code; the code wins when known."""
    if error_code in NOT_FOUND_CODES:
        return "not_found"
    if error_code in AUTH_CODES:
        return "auth"
    if error_code in THROTTLED_CODES:
        return "throttled"
    if status_code in (401, 403):
        return "auth"
    if status_code == 404:
        return "not_found"
    if status_code == 429:
        return "throttled"
    if 500 <= status_code <= 599:
        return "server"
    return "error"


def _error_fields(body: bytes) -> tuple[str | None, str | None, str | None]:
    """(error code, message, request id) from either spelling, or the IAM ``{"error": {...}}`` form."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, None, None
    if not isinstance(data, dict):
        return None, None, None
    nested = data.get("error")
    if isinstance(nested, dict):
        data = {**nested, **data}
    code = _first_str(data, "error_code", "errorCode", "code")
    text = _first_str(data, "error_msg", "errorMsg", "message")
    return code, text, _first_str(data, "request_id", "requestId")


def _first_str(data: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            return str(value).strip()
    return None


def _reason(status_code: int, body: bytes) -> str:
    """What to say when an error body carries no code: the HTTP phrase and a body excerpt."""
    try:
        phrase = HTTPStatus(status_code).phrase
    except ValueError:
        phrase = "unexpected status"
    excerpt = source_excerpt(body)
    return f"{phrase}: {excerpt}" if excerpt else phrase


# --- shared helpers -------------------------------------------------------------------

def _json_object(job: str | None, body: bytes, *, what: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(job, f"{what} response is not JSON", body) from exc
    if not isinstance(data, dict):
        raise _bad(job, f"{what} response is a JSON {_JSON_TYPES.get(type(data), 'value')}, not an object", body)
    return data


_JSON_TYPES = {list: "array", dict: "object", str: "string", int: "number", float: "number", bool: "boolean",
               type(None): "null"}


def _wrong_type(job: str, node: str | None, key: str, expected: str, value: Any) -> SourceError:
    """A field notifier uses came with the wrong type: name the job, the node and the field."""
    where = f"node {node!r} field {key!r}" if node is not None else f"field {key!r}"
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return SourceError(f"{job}: job status response: {where} must be {expected}, got "
                       f"{_JSON_TYPES.get(type(value), 'value')} {shown}", kind="bad_response")


def _bad(job: str | None, problem: str, body: bytes) -> SourceError:
    excerpt = source_excerpt(body)
    prefix = f"{job}: " if job else ""
    shown = f": {excerpt!r}" if excerpt else " (empty body)"
    return SourceError(f"{prefix}{problem}{shown}", kind="bad_response")
