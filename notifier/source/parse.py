"""Turn DGC API response bodies into snapshots and errors: pure functions, no I/O.

Tolerant where the API is loose (unknown fields, unknown statuses, both spellings of
field names, odd counter values) and strict where a mistake would be costly: a body
that is not a job status is a ``bad_response`` error, never "a job with no nodes",
because an empty node list would look like every node vanished.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any

from notifier.core.counters import Counters
from notifier.core.models import JobSnapshot, NodeStatus, normalize_status
from notifier.errors import SourceError
from notifier.httputil import HeaderMapping, get_header, parse_retry_after, source_excerpt

log = logging.getLogger(__name__)

MISSING_NODE_STATUS = "UNKNOWN"
"""Status given to a node entry that has a name but no status (the field is optional in the API)."""

NOT_FOUND_CODES = frozenset({"DLF.0100"})
AUTH_CODES = frozenset({"APIG.0301", "APIGW.0301", "DLF.6888"})
THROTTLED_CODES = frozenset({"APIG.0308", "APIGW.0308"})


# --- job status -----------------------------------------------------------------------

def parse_status(job: str, body: bytes) -> JobSnapshot:
    """Parse a ``GET /v1/{project_id}/jobs/{job}/status`` answer into a JobSnapshot.

    The snapshot is named ``job`` (the name asked for), so state stays keyed by config.
    Raises SourceError(kind="bad_response") when the body is not a JSON object with a status.
    """
    data = _json_object(job, body, what="job status")
    status = data.get("status")
    if not isinstance(status, str) or not status.strip():
        if _first_str(data, "error_code", "errorCode"):
            raise parse_error(200, body, {}, job=job)  # an error sent with a 2xx: still name its code
        raise _bad(job, "job status response has no status", body)
    raw_nodes = data.get("nodes")
    if raw_nodes is None:
        raw_nodes = []
    elif not isinstance(raw_nodes, list):
        raise _bad(job, "job status response has nodes that are not a list", body)
    nodes, skipped = _parse_nodes(raw_nodes)
    if skipped:
        log.warning("Skipped malformed node entries job=%s skipped=%d kept=%d", job, skipped, len(nodes))
    return JobSnapshot(
        name=job,
        status=normalize_status(status),
        start_time=_epoch_ms(_first(data, "startTime", "starttime")),
        end_time=_epoch_ms(_first(data, "endTime", "endtime")),
        last_update_time=_epoch_ms(_first(data, "lastUpdateTime", "lastupdatetime")),
        nodes=nodes,
    )


def _first(data: Mapping[str, Any], *keys: str) -> Any:
    """The first of ``keys`` present with a non-null value (the SDK spells some fields differently)."""
    for key in keys:
        if data.get(key) is not None:
            return data[key]
    return None


def _parse_nodes(raw: list[Any]) -> tuple[tuple[NodeStatus, ...], int]:
    """Parse node entries; return them with the number skipped (unusable, or a repeated name: first wins)."""
    nodes: dict[str, NodeStatus] = {}
    skipped = 0
    for entry in raw:
        node = _parse_node(entry)
        if node is None or node.name in nodes:
            skipped += 1
        else:
            nodes[node.name] = node
    return tuple(nodes.values()), skipped


def _parse_node(entry: Any) -> NodeStatus | None:
    if not isinstance(entry, dict):
        return None
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        return None
    status = entry.get("status")
    node_type = entry.get("type")
    log_path = entry.get("logPath")
    # names and types repeat across every job: interned, 100,000 entities keep a few strings, not 200,000
    return NodeStatus(
        name=sys.intern(name),
        status=normalize_status(str(status)) if status not in (None, "") else MISSING_NODE_STATUS,
        type=sys.intern(node_type) if isinstance(node_type, str) else "",
        log_path=log_path if isinstance(log_path, str) and log_path else None,
        running_data=_running_data(entry.get("runningData")),
        counters=Counters.of(_counter(entry.get("totalGetBytes")), _counter(entry.get("totalGetRecords")),
                             _counter(entry.get("totalPutBytes")), _counter(entry.get("totalPutRecords"))),
    )


def _running_data(value: Any) -> str | None:
    """Keep the API's JSON-in-a-string as is; re-encode if the API sent a real object."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _counter(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return 0


def _epoch_ms(value: Any) -> datetime | None:
    """Epoch milliseconds (int, float or digit string) to an aware UTC datetime; junk -> None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, int | float) or not math.isfinite(value):
        return None
    try:
        return datetime.fromtimestamp(value / 1000, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


# --- job list -------------------------------------------------------------------------

def parse_job_list(body: bytes) -> tuple[int, tuple[str, ...], dict[str, str]]:
    """Parse a ``GET /v1/{project_id}/jobs`` page into (total, job names on this page, job -> owner).

    Entries without a usable name are skipped; a missing ``total`` counts this page only.
    The owner (who to ping in Slack, through ``[slack.owners]``) is kept when it is a string.
    """
    data = _json_object(None, body, what="job list")
    jobs = data.get("jobs")
    if jobs is None:
        jobs = []
    if not isinstance(jobs, list):
        raise _bad(None, "job list response has no list of jobs", body)
    names = tuple(j["name"] for j in jobs if isinstance(j, dict) and isinstance(j.get("name"), str) and j["name"])
    owners = {j["name"]: j["owner"] for j in jobs if isinstance(j, dict) and isinstance(j.get("name"), str)
              and isinstance(j.get("owner"), str) and j["owner"]}
    total = data.get("total")
    if isinstance(total, bool) or not isinstance(total, int):
        total = len(names)
    return total, names, owners


# --- errors ---------------------------------------------------------------------------

def parse_error(status_code: int, body: bytes, headers: HeaderMapping, *, job: str | None = None,
                now: datetime | None = None) -> SourceError:
    """Classify a non-2xx answer into a SourceError whose message names the error code.

    ``job`` prefixes the message; ``now`` is needed only to turn an HTTP-date
    ``Retry-After`` into seconds (without it such a header is ignored).
    """
    code, text, request_id = _error_fields(body)
    kind = classify(status_code, code)
    retry_after = parse_retry_after(get_header(headers, "Retry-After"), now)
    detail = " ".join(p for p in (code, text) if p) or _reason(status_code, body)
    suffix = f"HTTP {status_code}" + (f", request_id={request_id}" if request_id else "")
    message = f"{job + ': ' if job else ''}{detail} ({suffix})"
    return SourceError(message, kind=kind, status_code=status_code, error_code=code, retry_after=retry_after)


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


_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def _bad(job: str | None, problem: str, body: bytes) -> SourceError:
    excerpt = source_excerpt(body)
    prefix = f"{job}: " if job else ""
    shown = f": {excerpt!r}" if excerpt else " (empty body)"
    return SourceError(f"{prefix}{problem}{shown}", kind="bad_response")
