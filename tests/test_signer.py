"""AK/SK signing: byte-for-byte agreement with huaweicloudsdkcore's own Signer."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import quote, urlsplit

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer import signer as sdk_signer_module
from huaweicloudsdkcore.signer.signer import Signer

from notifier.source.signer import canonical_query, canonical_uri, sign

AK = "AccessKey"
SK = "SecretKey"
NOW = datetime(2024, 5, 17, 8, 30, 15, tzinfo=timezone.utc)


class _FrozenDatetime(datetime):
    """Stands in for ``datetime`` inside the SDK's signer module, whose only clock is ``utcnow()``."""

    @classmethod
    def utcnow(cls) -> datetime:  # type: ignore[override]
        return NOW.replace(tzinfo=None)


@pytest.fixture()
def frozen_sdk_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdk_signer_module, "datetime", _FrozenDatetime)


def _sdk_sign(method: str, endpoint: str, resource_path: str, query: list[tuple[str, object]],
              headers: dict[str, str], body: bytes | str) -> SdkRequest:
    """Build the SdkRequest as ``huaweicloudsdkcore.client.Client.build_future_request`` does and sign it."""
    parts = urlsplit(endpoint)
    request = SdkRequest(method=method, schema=parts.scheme, host=parts.netloc, resource_path=resource_path,
                         query_params=list(query), header_params=dict(headers), body=body)
    return Signer(BasicCredentials(AK, SK)).sign(request)


def _ours(method: str, endpoint: str, resource_path: str, query: list[tuple[str, object]],
          headers: dict[str, str], body: bytes) -> tuple[str, dict[str, str]]:
    qs = canonical_query(query)
    url = endpoint + resource_path + (f"?{qs}" if qs else "")
    return url, sign(method, url, headers, body, AK, SK, NOW)


def _job_path(project: str, job: str) -> str:
    # The SDK substitutes path parameters with quote(str(v), safe='').
    return f"/v1/{quote(project, safe='')}/jobs/{quote(job, safe='')}/status"


CASES = [
    pytest.param("GET", "https://dayu-dlf.cn-north-4.myhuaweicloud.com", _job_path("b384b9e9", "job_sms"), [],
                 {"Content-Type": "application/json", "workspace": "ws-1234", "User-Agent": "notifier/0.1"}, b"",
                 id="get-status-workspace"),
    pytest.param("GET", "https://dayu-dlf.cn-north-4.myhuaweicloud.com", "/v1/b384b9e9/jobs",
                 [("jobType", "REAL_TIME"), ("offset", 1000), ("limit", 1000)],
                 {"Content-Type": "application/json", "workspace": "ws-1234"}, b"", id="get-list-query"),
    pytest.param("POST", "https://iam.cn-north-4.myhuaweicloud.com", "/v3/auth/tokens", [("nocatalog", True)],
                 {"Content-Type": "application/json;charset=UTF-8"},
                 b'{"auth": {"identity": {"methods": ["password"]}}, "n": "\xc3\xa4"}', id="post-json-body"),
    pytest.param("POST", "https://example.myhuaweicloud.com", "/v1/upload", [],
                 {"Content-Type": "text/plain"}, b"plain body", id="post-unsigned-payload"),
    pytest.param("GET", "https://dayu-dlf.cn-north-4.myhuaweicloud.com",
                 _job_path("p1", "job sms/\u00e4~(x)*!'"), [], {"Content-Type": "application/json"}, b"",
                 id="path-needing-encoding"),
    pytest.param("GET", "http://127.0.0.1:8080", "/v1/p/jobs",
                 [("jobName", "a b+c&d=e"), ("empty", ""), ("z", "1"), ("a", "2"), ("tags", "t1,t2")],
                 {"X-Project-Id": "p", "TEST_UNDERSCORE": "not signed", "Accept": " application/json "}, b"",
                 id="host-port-odd-query-underscore-header"),
    pytest.param("DELETE", "https://example.myhuaweicloud.com", "/", [], {}, b"", id="root-path-no-headers"),
]


@pytest.mark.parametrize(("method", "endpoint", "path", "query", "headers", "body"), CASES)
def test_matches_sdk_signer(frozen_sdk_clock: None, method: str, endpoint: str, path: str,
                            query: list[tuple[str, object]], headers: dict[str, str], body: bytes) -> None:
    """Every header the SDK adds when signing, we add with the same value, and the URL matches."""
    signed = _sdk_sign(method, endpoint, path, query, headers, body)
    url, ours = _ours(method, endpoint, path, query, headers, body)
    sdk_added = {k: v for k, v in signed.header_params.items() if k not in headers}
    assert ours == sdk_added
    assert url == signed.url


def test_signed_headers_are_lowercased_sorted_and_skip_underscores(frozen_sdk_clock: None) -> None:
    """Names with ``_`` are left out; the rest (plus host and x-sdk-date) are lower-cased and sorted."""
    headers = {"Content-Type": "application/json", "workspace": "w", "X_Custom": "x", "Zeta": "z"}
    _, ours = _ours("GET", "https://h.example.com", "/v1/p/jobs", [], headers, b"")
    assert "SignedHeaders=content-type;host;workspace;x-sdk-date;zeta," in ours["Authorization"]


def test_date_header_from_now_in_utc() -> None:
    """``X-Sdk-Date`` is ``now`` in UTC, in the SDK's basic ISO format, whatever the input zone."""
    cst = timezone(timedelta(hours=8))
    headers = sign("GET", "https://h.example.com/x", {}, b"", AK, SK, NOW.astimezone(cst))
    assert headers["X-Sdk-Date"] == "20240517T083015Z"
    assert headers["Host"] == "h.example.com"


def test_given_date_and_host_are_signed_not_replaced() -> None:
    """A request that already carries X-Sdk-Date and Host gets only an Authorization header."""
    headers = {"X-Sdk-Date": "20200608T023900Z", "host": "other.example.com"}
    added = sign("GET", "https://h.example.com/x", headers, b"", AK, SK, NOW)
    assert set(added) == {"Authorization"}


def test_signature_changes_with_the_date() -> None:
    """Two requests one second apart carry different signatures (a retry must be re-signed)."""
    first = sign("GET", "https://h.example.com/x", {}, b"", AK, SK, NOW)
    second = sign("GET", "https://h.example.com/x", {}, b"", AK, SK, NOW + timedelta(seconds=1))
    assert first["Authorization"] != second["Authorization"]


def test_missing_credentials_are_refused() -> None:
    """Signing with an empty AK or SK is a programming error, not an unsigned request."""
    with pytest.raises(ValueError, match="ak and sk"):
        sign("GET", "https://h.example.com/x", {}, b"", "", SK, NOW)


# --- the SDK's own test vectors (huaweicloud-sdk-core/tests/test_signer.py) ------------

SDK_VECTOR_HEADERS = {"X-Sdk-Date": "20200608T023900Z", "TEST_UNDERSCORE": "TEST_VALUE"}


@pytest.mark.parametrize(("method", "body", "signature"), [
    pytest.param("GET", b"", "cfb4171acec81de07d50e53d57eb77edd537414d66ddb1d7d780f128e12cd842", id="get"),
    pytest.param("POST", b'{"name":"test","id":1}',
                 "436b1ac0a1ae03705934bb70ef2f2e09f7bfed2117d731a38235053199323a1f", id="post"),
])
def test_sdk_published_vectors(method: str, body: bytes, signature: str) -> None:
    """The SDK's own fixed-date vectors produce the exact Authorization value it asserts."""
    added = sign(method, "https://service.endpoint.myhuaweicloud.com/resources?size=1",
                 SDK_VECTOR_HEADERS, body, AK, SK, NOW)
    assert added["Authorization"] == (
        f"SDK-HMAC-SHA256 Access=AccessKey, SignedHeaders=host;x-sdk-date, Signature={signature}")


def test_sdk_canonical_query_vector() -> None:
    """Booleans lower-case, lists expand sorted, everything but unreserved chars and ~ encoded."""
    query = [("limit", 1), ("enable", True), ("test", "一 (&=?!#%.*)"), ("path", "/tmp/123"), ("multi", [1, 2, 3])]
    assert canonical_query(query) == ("enable=true&limit=1&multi=1&multi=2&multi=3"
                                      "&path=%2Ftmp%2F123&test=%E4%B8%80%20%28%26%3D%3F%21%23%25.%2A%29")
    assert canonical_query(query) == Signer.process_canonical_query_string(SdkRequest(query_params=list(query)))


@pytest.mark.parametrize(("path", "expected"), [
    pytest.param("/v1/p/jobs/job_sms/status", "/v1/p/jobs/job_sms/status/", id="plain"),
    pytest.param("/v1/p/jobs/a%20b/status/", "/v1/p/jobs/a%20b/status/", id="encoded-trailing-slash"),
    pytest.param("", "/", id="empty"),
])
def test_canonical_uri(path: str, expected: str) -> None:
    """The canonical URI re-encodes each segment and always ends with a slash."""
    assert canonical_uri(path) == expected
