"""The API gateway's half of authentication, so the simulator refuses what the real service refuses.

In front of DataArts Factory, Huawei Cloud's API gateway (APIG) recomputes the
``SDK-HMAC-SHA256`` signature of every AK/SK request from what it received and answers
401 ``APIG.0301`` when it differs, when the AK is unknown, or when ``X-Sdk-Date`` is more
than 15 minutes off its clock; a token request without a valid ``X-Auth-Token`` gets
the same code. A simulator that served everyone let the client's 401 path go untested.

The canonical request comes from ``notifier.source.signer``: the client signs with it and
this module verifies with it, so on its own agreement would prove nothing. The tests sign
requests with huaweicloudsdkcore's own ``Signer`` (and run the official DGC SDK client)
against this verifier: both halves then agree with the SDK, not only with each other.

Refusals are worded as the gateway's documented ``error_msg`` values
("Incorrect IAM authentication information: verify aksk signature fail, ..."), with the
simulator's own precision where the documentation shows none. An unknown AK is masked,
as Huawei's documentation shows it: a message must never carry credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import parse_qsl

from notifier.simulator.scenario import AuthSettings
from notifier.source.signer import ALGORITHM, DATE_FORMAT, canonical_request, string_to_sign

PREFIX = "Incorrect IAM authentication information: "
TOKEN_NOT_FOUND = PREFIX + "x-auth-token not found"
TOKEN_INVALID = PREFIX + "decrypt token fail"
AUTHORIZATION_NOT_FOUND = PREFIX + "Authorization not found: the request is not signed (SDK-HMAC-SHA256)"
UNKNOWN_AK = PREFIX + "Get secretKey failed,ak:******,err:ak not exist"

_AUTHORIZATION = re.compile(
    rf"^{re.escape(ALGORITHM)}\s+Access=(?P<ak>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),\s*"
    r"Signature=(?P<signature>[0-9a-fA-F]+)\s*$")


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """A request as the gateway sees it: what went over the wire, before any decoding."""

    method: str
    path: str  # as sent (percent-encoded), without the query string
    query: str  # the raw query string, without "?"
    headers: Mapping[str, str]  # names lower-cased (first value of a repeated header)
    body: bytes = b""


def verify_aksk(request: ReceivedRequest, settings: AuthSettings, now: datetime) -> str | None:
    """None if the request is signed with ``settings``' AK/SK and dated within the allowed skew; else why not.

    Checked in the gateway's order: a signature at all, a known AK, a readable and recent
    ``X-Sdk-Date`` that is itself signed, every signed header present, then the signature.
    """
    authorization = request.headers.get("authorization")
    if not authorization:
        return AUTHORIZATION_NOT_FOUND
    match = _AUTHORIZATION.match(authorization)
    if match is None:
        return (f"{PREFIX}unsupported Authorization header: expected "
                f"'{ALGORITHM} Access=<AK>, SignedHeaders=<names>, Signature=<hex>'")
    if not hmac.compare_digest(match["ak"].encode(), settings.ak.encode()):
        return UNKNOWN_AK
    problem = _date_problem(request.headers.get("x-sdk-date"), settings.max_clock_skew, now)
    if problem is not None:
        return problem
    signed = tuple(name.lower() for name in match["signed"].split(";"))  # in the client's order, as signed
    problem = _signed_headers_problem(signed, request.headers)
    if problem is not None:
        return problem
    canonical = canonical_request(request.method, request.path, parse_qsl(request.query, keep_blank_values=True),
                                  {name: request.headers[name] for name in signed}, signed, request.body)
    expected = hmac.new(settings.sk.encode(), string_to_sign(canonical, request.headers["x-sdk-date"]).encode(),
                        hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, match["signature"].lower()):
        # the gateway logs its canonical request with "|" for newlines; showing it is how a client finds its mistake
        return f"{PREFIX}verify aksk signature fail, canonicalRequest:{canonical.replace(chr(10), '|')}"
    return None


def token_expired(expires_at: str) -> str:
    """The gateway's words for a token past its ``expires_at``."""
    return f"{PREFIX}token expires, expires_at: {expires_at}"


def _date_problem(value: str | None, max_skew: float, now: datetime) -> str | None:
    if not value:
        return f"{PREFIX}x-sdk-date not found"
    try:
        signed_at = datetime.strptime(value.strip(), DATE_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return f"{PREFIX}invalid x-sdk-date {value!r}, expected the format YYYYMMDDTHHMMSSZ (UTC)"
    if abs((now - signed_at).total_seconds()) > max_skew:
        minutes = f"{max_skew / 60:g} minutes"
        return (f"{PREFIX}signature expired, signature time:{signed_at.strftime(DATE_FORMAT)},"
                f"server time:{now.astimezone(timezone.utc).strftime(DATE_FORMAT)} (X-Sdk-Date is more than "
                f"{minutes} off the server's clock)")
    return None


def _signed_headers_problem(signed: tuple[str, ...], headers: Mapping[str, str]) -> str | None:
    if "x-sdk-date" not in signed:
        return f"{PREFIX}verify aksk signature fail, x-sdk-date is not among the SignedHeaders"
    missing = [name for name in signed if name not in headers]
    if missing:
        return f"{PREFIX}verify aksk signature fail, signed header {missing[0]} not found in the request"
    return None
