"""Huawei Cloud AK/SK request signing (``SDK-HMAC-SHA256``), as the SDK core does it.

A byte-for-byte re-implementation of ``huaweicloudsdkcore.signer.signer.Signer`` so that
production code needs no SDK: the service checks the signature against its own
canonical form of the request, so every detail below (which headers, how the path and
query are encoded, the trailing ``/``) must match the SDK exactly, quirks included.

    CanonicalRequest = METHOD \\n CanonicalURI \\n CanonicalQuery \\n CanonicalHeaders \\n
                       SignedHeaders \\n hex(sha256(body))
    StringToSign     = "SDK-HMAC-SHA256" \\n X-Sdk-Date \\n hex(sha256(CanonicalRequest))
    Signature        = hex(hmac_sha256(SK, StringToSign))
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from notifier.httputil import get_header

ALGORITHM = "SDK-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
HEADER_DATE = "X-Sdk-Date"
HEADER_HOST = "Host"
HEADER_AUTHORIZATION = "Authorization"
HEADER_CONTENT_SHA256 = "X-Sdk-Content-Sha256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

QueryParams = Iterable[tuple[str, object]]


def sign(method: str, url: str, headers: Mapping[str, str], body: bytes, ak: str, sk: str,
         now: datetime) -> dict[str, str]:
    """Return the headers to add to a request so that the service accepts it.

    Always ``Authorization``; ``X-Sdk-Date`` unless ``headers`` already has one (then
    that date is signed, as the SDK does); ``Host`` (the URL's host[:port]) unless
    ``headers`` has one; ``X-Sdk-Content-Sha256`` for non-JSON bodies. Every returned
    header is also signed, so the caller must send them exactly as returned.
    """
    if not ak or not sk:
        raise ValueError("ak and sk are required to sign a request")
    parts = urlsplit(url)
    added: dict[str, str] = {}
    content_type = get_header(headers, "Content-Type")
    if content_type and not content_type.startswith(("application/json", "application/bson")):
        added[HEADER_CONTENT_SHA256] = UNSIGNED_PAYLOAD
    date = get_header(headers, HEADER_DATE)
    if date is None:
        date = format_date(now)
        added[HEADER_DATE] = date
    if get_header(headers, HEADER_HOST) is None:
        added[HEADER_HOST] = parts.netloc
    all_headers = {**headers, **added}
    signed = signed_header_names(all_headers)
    canonical = canonical_request(method, parts.path, parse_qsl(parts.query, keep_blank_values=True),
                                  all_headers, signed, body)
    signature = hmac.new(sk.encode(), string_to_sign(canonical, date).encode(), hashlib.sha256).hexdigest()
    added[HEADER_AUTHORIZATION] = f"{ALGORITHM} Access={ak}, SignedHeaders={';'.join(signed)}, Signature={signature}"
    return added


def format_date(now: datetime) -> str:
    """``X-Sdk-Date`` for an aware (or naive UTC) datetime; the service allows 15 min of skew."""
    if now.tzinfo is not None:
        now = now.astimezone(timezone.utc)
    return now.strftime(DATE_FORMAT)


def string_to_sign(canonical: str, date: str) -> str:
    return f"{ALGORITHM}\n{date}\n{hashlib.sha256(canonical.encode()).hexdigest()}"


def canonical_request(method: str, path: str, query: QueryParams, headers: Mapping[str, str],
                      signed: Iterable[str], body: bytes) -> str:
    """The SDK's CanonicalRequest; ``path`` as sent on the wire (percent-encoded)."""
    signed = tuple(signed)
    lowered = {k.lower(): str(v).strip() for k, v in headers.items()}
    canonical_headers = "".join(f"{name}:{lowered[name]}\n" for name in signed)
    return "\n".join((method.upper(), canonical_uri(path), canonical_query(query), canonical_headers,
                      ";".join(signed), _payload_hash(headers, body)))


def canonical_uri(path: str) -> str:
    """Decode, re-encode each segment with only ``~`` (and unreserved chars) kept, end in ``/``."""
    uri = "/".join(_encode(segment) for segment in unquote(path).split("/"))
    return uri if uri.endswith("/") else uri + "/"


def canonical_query(params: QueryParams) -> str:
    """Sorted ``k=v`` pairs joined by ``&``; list values expand sorted, booleans lower-case.

    Also the query string a client should send, so that what is signed is what goes out.
    """
    pairs: list[str] = []
    for key, value in _sorted_pairs(params):
        k = _encode(key)
        if isinstance(value, list):
            pairs.extend(f"{k}={_encode(str(v))}" for v in sorted(value))
        elif isinstance(value, bool):
            pairs.append(f"{k}={_encode(str(value).lower())}")
        else:
            pairs.append(f"{k}={_encode(str(value))}")
    return "&".join(pairs)


def signed_header_names(headers: Mapping[str, str]) -> tuple[str, ...]:
    """Every header whose name has no ``_``, lower-cased and sorted (duplicates collapse)."""
    return tuple(sorted({k.lower() for k in headers if "_" not in k}))


def _payload_hash(headers: Mapping[str, str], body: bytes) -> str:
    if not body:
        return EMPTY_SHA256
    declared = get_header(headers, HEADER_CONTENT_SHA256)
    return declared or hashlib.sha256(body).hexdigest()


def _encode(s: str) -> str:
    return quote(s, safe="~")


def _sorted_pairs(params: QueryParams) -> list[tuple[str, object]]:
    """Sort the (key, value) tuples themselves, as the SDK does; fall back for mixed value types."""
    pairs = list(params)
    try:
        return sorted(pairs)
    except TypeError:
        return sorted(pairs, key=lambda pair: (pair[0], str(pair[1])))
