"""DgcClient over real loopback sockets against a scripted fake DGC API."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from notifier.config import JobsConfig, SourceConfig
from notifier.core.models import FetchError, FetchResult, JobSnapshot
from notifier.errors import ConfigError, SourceError
from notifier.source.client import DgcClient, RateLimiter, retry_delay, select_jobs
from notifier.source.signer import sign
from tests.support.fakes import FakeClock, MaxRng

T = TypeVar("T")
PROJECT = "proj"
STATUS_PATH = f"/v1/{PROJECT}/jobs/{{}}/status"
LIST_PATH = f"/v1/{PROJECT}/jobs"
NOT_FOUND = {"error_code": "DLF.0100", "error_msg": "The job does not exists."}


def status_body(job: str, status: str = "NORMAL", nodes: int = 2) -> dict[str, Any]:
    return {"name": job, "status": status, "startTime": 1551409465000,
            "nodes": [{"name": f"N{i}", "status": "NORMAL", "type": "DLI SQL", "totalPutRecords": i}
                      for i in range(nodes)]}


# --- the fake API ----------------------------------------------------------------------

@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes | dict[str, Any] | list[Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to hold the answer (cut short at teardown)


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names as sent


class FakeApi:
    """Answers by path from per-path scripts (the last reply repeats) or a handler; records requests."""

    def __init__(self) -> None:
        self.url = ""
        self.lock = threading.Lock()
        self.scripts: dict[str, list[Reply]] = {}
        self.handler: Callable[[Seen], Reply] | None = None
        self.requests: list[Seen] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.release = threading.Event()

    def on(self, path: str, *replies: Reply) -> None:
        self.scripts[path] = list(replies)

    def count(self, path: str) -> int:
        return sum(1 for r in self.requests if r.path == path)

    def answer(self, seen: Seen) -> Reply:
        with self.lock:
            self.requests.append(seen)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            script = self.scripts.get(seen.path)
            if script:
                return script.pop(0) if len(script) > 1 else script[0]
        if self.handler is not None:
            return self.handler(seen)
        return Reply(400, NOT_FOUND)

    def done(self) -> None:
        with self.lock:
            self.in_flight -= 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5
    server: _Server

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        seen = Seen("GET", parts.path, dict(parse_qsl(parts.query, keep_blank_values=True)),
                    {k: v for k, v in self.headers.items()})
        api = self.server.api
        reply = api.answer(seen)
        try:
            if reply.delay:
                api.release.wait(reply.delay)
            body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True  # the client gave up (timeout test)
        finally:
            api.done()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True

    def __init__(self, api: FakeApi) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.api = api

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # broken pipes after client timeouts are expected


@pytest.fixture()
def api() -> Iterator[FakeApi]:
    fake = FakeApi()
    server = _Server(fake)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- injected time and jitter ----------------------------------------------------------

def _config(api: FakeApi, **overrides: Any) -> SourceConfig:
    base = SourceConfig(endpoint=api.url, project_id=PROJECT, auth="none", timeout=2.0, concurrency=4,
                        max_requests_per_second=1e6, retries=2, backoff=0.1, backoff_max=1.0)
    return replace(base, **overrides)


def run(config: SourceConfig, call: Callable[[DgcClient], Awaitable[T]], *, time: FakeClock | None = None,
        **kwargs: Any) -> tuple[T, DgcClient]:
    """Build a client with fake time and jitter, run one call, close the client."""
    time = time or FakeClock()

    async def main() -> tuple[T, DgcClient]:
        async with DgcClient(config, sleep=time.async_sleep, monotonic=time.monotonic, rng=MaxRng(),
                             **kwargs) as client:
            return await call(client), client

    return asyncio.run(main())


# --- fetching --------------------------------------------------------------------------

def test_fetch_status_success(api: FakeApi) -> None:
    """A 200 answer becomes a snapshot; the request carries JSON content type and no auth."""
    api.on(STATUS_PATH.format("job_sms"), Reply(200, status_body("job_sms", "EXCEPTION", nodes=3)))
    snap, client = run(_config(api), lambda c: c.fetch_status("job_sms"))
    assert (snap.name, snap.status, len(snap.nodes)) == ("job_sms", "EXCEPTION", 3)
    (seen,) = api.requests
    assert seen.headers["Content-Type"] == "application/json"
    assert not {"workspace", "X-Auth-Token", "Authorization"} & set(seen.headers)
    assert client.stats.requests == 1 and client.stats.retries == 0


def test_not_found_is_not_retried(api: FakeApi) -> None:
    """400 DLF.0100 becomes a not_found FetchError after exactly one request."""
    time = FakeClock()
    result, client = run(_config(api), lambda c: c.fetch_all(["job_sms"]), time=time)
    assert result == FetchResult(snapshots=(), errors=(FetchError(
        job="job_sms", kind="not_found", message="job_sms: DLF.0100 The job does not exists. - no such job in this "
        "workspace: check the job name and [source] workspace (HTTP 400)", status_code=400, error_code="DLF.0100"),))
    assert api.count(STATUS_PATH.format("job_sms")) == 1
    assert time.sleeps == []
    assert client.stats.errors == {"not_found": 1}


@pytest.mark.parametrize(("status", "body"), [
    pytest.param(401, {"error_code": "APIG.0301", "error_msg": "Incorrect IAM authentication information"},
                 id="401"),
    pytest.param(403, {"error_code": "DLF.6888", "error_msg": "No permission"}, id="403"),
    pytest.param(404, b"", id="404"),
])
def test_client_errors_are_not_retried(api: FakeApi, status: int, body: Any) -> None:
    """Answers that will not change on a retry (401/403/404) are asked once."""
    api.on(STATUS_PATH.format("j"), Reply(status, body))
    result, _ = run(_config(api), lambda c: c.fetch_all(["j"]))
    assert result.errors[0].status_code == status
    assert api.count(STATUS_PATH.format("j")) == 1


def test_server_error_then_success_is_retried(api: FakeApi) -> None:
    """A 500 is retried after a jittered backoff and the second answer wins."""
    time = FakeClock()
    api.on(STATUS_PATH.format("j"), Reply(500, {"error_code": "DLF.0001", "error_msg": "busy"}),
           Reply(200, status_body("j")))
    snap, client = run(_config(api), lambda c: c.fetch_status("j"), time=time)
    assert snap.status == "NORMAL"
    assert api.count(STATUS_PATH.format("j")) == 2
    assert time.sleeps == [0.1]
    assert (client.stats.requests, client.stats.retries, client.stats.errors) == (2, 1, {})


def test_backoff_doubles_and_is_capped(api: FakeApi) -> None:
    """Persistent 503s back off 0.1, 0.2, 0.4 ... capped at backoff_max, then fail as server errors."""
    time = FakeClock()
    api.on(STATUS_PATH.format("j"), Reply(503, b"<html>down</html>"))
    result, _ = run(_config(api, retries=5, backoff_max=0.5), lambda c: c.fetch_all(["j"]), time=time)
    assert time.sleeps == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert result.errors[0].kind == "server" and api.count(STATUS_PATH.format("j")) == 6


@pytest.mark.parametrize(("headers", "expected_sleep"), [
    pytest.param({"Retry-After": "2"}, 2.0, id="retry-after-seconds"),
    pytest.param({"Retry-After": "600"}, 60.0, id="retry-after-capped-at-60s"),
    pytest.param({}, 5.0, id="no-header-backs-off-2-to-5s"),
])
def test_throttled_honours_retry_after(api: FakeApi, headers: dict[str, str], expected_sleep: float) -> None:
    """429 waits as long as Retry-After says (at most 60 s), or 2-5 s without it, then succeeds."""
    time = FakeClock()
    api.on(STATUS_PATH.format("j"),
           Reply(429, {"error_code": "APIG.0308", "error_msg": "The request is throttled."}, headers),
           Reply(200, status_body("j")))
    snap, _ = run(_config(api), lambda c: c.fetch_status("j"), time=time)
    assert snap.status == "NORMAL"
    assert time.sleeps == [pytest.approx(expected_sleep)]


def test_timeouts_are_retried_then_reported(api: FakeApi) -> None:
    """An API slower than the timeout is retried, then reported as a timeout FetchError."""
    time = FakeClock()
    api.on(STATUS_PATH.format("slow"), Reply(200, status_body("slow"), delay=3.0))
    result, client = run(_config(api, timeout=0.2, retries=1), lambda c: c.fetch_all(["slow"]), time=time)
    (error,) = result.errors
    assert (error.job, error.kind) == ("slow", "timeout")
    assert "no answer within 0.2s" in error.message
    assert api.count(STATUS_PATH.format("slow")) == 2
    assert time.sleeps == [0.1]
    assert client.stats.errors == {"timeout": 1}


def test_connection_refused_is_a_network_error(api: FakeApi) -> None:
    """Nothing listening on the port: retried, then a network FetchError."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    time = FakeClock()
    result, _ = run(_config(api, endpoint=f"http://127.0.0.1:{port}", retries=1), lambda c: c.fetch_all(["j"]),
                    time=time)
    assert result.errors[0].kind == "network"
    assert time.sleeps == [0.1]


def test_bad_body_is_not_retried_and_others_are_unaffected(api: FakeApi, caplog: pytest.LogCaptureFixture) -> None:
    """A non-JSON 200 is a bad_response for that job only, asked once, logged with job and kind."""
    api.on(STATUS_PATH.format("a"), Reply(200, status_body("a")))
    api.on(STATUS_PATH.format("broken"), Reply(200, b"<html>maintenance</html>"))
    api.on(STATUS_PATH.format("c"), Reply(200, status_body("c", "STOPPED")))
    with caplog.at_level(logging.WARNING, logger="notifier.source.client"):
        result, _ = run(_config(api), lambda c: c.fetch_all(["a", "broken", "c"]))
    assert [s.name for s in result.snapshots] == ["a", "c"]
    (error,) = result.errors
    assert (error.job, error.kind) == ("broken", "bad_response")
    assert "maintenance" in error.message
    assert api.count(STATUS_PATH.format("broken")) == 1
    assert "job=broken kind=bad_response" in caplog.text


def test_job_name_is_path_encoded(api: FakeApi) -> None:
    """A job name with spaces or slashes stays one path segment."""
    api.on(STATUS_PATH.format("a%20b%2Fc"), Reply(200, status_body("a b/c")))
    snap, _ = run(_config(api), lambda c: c.fetch_status("a b/c"))
    assert snap.name == "a b/c"


def test_unexpected_failure_of_one_job_is_isolated() -> None:
    """A bug surfacing for one job (here an injected transport raising) becomes its FetchError only."""
    def handle(request: httpx.Request) -> httpx.Response:
        if "boom" in request.url.path:
            raise RuntimeError("transport exploded")
        return httpx.Response(200, json=status_body("ok"))

    config = SourceConfig(endpoint="http://127.0.0.1:9", project_id=PROJECT, auth="none")
    result, client = run(config, lambda c: c.fetch_all(["ok", "boom"]), transport=httpx.MockTransport(handle))
    assert [s.name for s in result.snapshots] == ["ok"]
    assert [(e.job, e.kind) for e in result.errors] == [("boom", "error")]
    assert "RuntimeError: transport exploded" in result.errors[0].message
    assert client.stats.errors == {"error": 1}



def test_fetch_all_keeps_job_order_with_a_bounded_pool() -> None:
    """Results come back in the order asked, however answers interleave, with requests in flight within concurrency."""
    in_progress, peak = 0, 0

    async def handle(request: httpx.Request) -> httpx.Response:
        nonlocal in_progress, peak
        in_progress += 1
        peak = max(peak, in_progress)
        job = request.url.path.split("/")[4]
        for _ in range(1 + 5 * (int(job[1:]) % 3)):  # yield 1, 6 or 11 times, no wall clock: later jobs often
            await asyncio.sleep(0)                  # answer first (j3 before j2, j7 before j5, ...)
        in_progress -= 1
        if int(job[1:]) % 4 == 0:
            return httpx.Response(404, json={"error_code": "DLF.0100", "error_msg": "gone"})
        return httpx.Response(200, json=status_body(job))

    jobs = [f"j{i}" for i in range(40)]
    config = SourceConfig(endpoint="http://127.0.0.1:9", project_id=PROJECT, auth="none", concurrency=2,
                          max_requests_per_second=1e6)
    result, _ = run(config, lambda c: c.fetch_all(jobs), transport=httpx.MockTransport(handle))
    assert [s.name for s in result.snapshots] == [j for i, j in enumerate(jobs) if i % 4]
    assert [e.job for e in result.errors] == jobs[::4]
    assert peak == 2

# --- headers and auth ------------------------------------------------------------------

def test_workspace_header_sent(api: FakeApi) -> None:
    """A configured workspace goes out as the ``workspace`` header."""
    api.on(STATUS_PATH.format("j"), Reply(200, status_body("j")))
    run(_config(api, workspace="ws-0042"), lambda c: c.fetch_status("j"))
    assert api.requests[0].headers["workspace"] == "ws-0042"


def test_token_header_sent(api: FakeApi) -> None:
    """auth = "token" sends the token from the configured variable as X-Auth-Token."""
    api.on(STATUS_PATH.format("j"), Reply(200, status_body("j")))
    run(_config(api, auth="token", token_env="MY_TOKEN"), lambda c: c.fetch_status("j"),
        environ={"MY_TOKEN": "tok-123"})
    assert api.requests[0].headers["X-Auth-Token"] == "tok-123"


@pytest.mark.parametrize(("auth", "environ", "variable"), [
    pytest.param("token", {}, "HUAWEICLOUD_IAM_TOKEN", id="token"),
    pytest.param("aksk", {"HUAWEICLOUD_SDK_AK": "ak"}, "HUAWEICLOUD_SDK_SK", id="sk"),
    pytest.param("aksk", {}, "HUAWEICLOUD_SDK_AK", id="ak"),
])
def test_missing_secret_is_a_config_error(api: FakeApi, auth: str, environ: dict[str, str], variable: str) -> None:
    """A missing secret fails at construction with a ConfigError naming the variable."""
    with pytest.raises(ConfigError, match=variable):
        DgcClient(_config(api, auth=auth), environ=environ)


AUTH_RE = re.compile(r"^SDK-HMAC-SHA256 Access=(?P<ak>[^,]+), SignedHeaders=(?P<signed>[a-z0-9;-]+), "
                     r"Signature=(?P<sig>[0-9a-f]{64})$")


def _verify(seen: Seen, ak: str, sk: str) -> bool:
    """Check a received request's signature the way the API gateway would: signed headers only."""
    match = AUTH_RE.match(seen.headers["Authorization"])
    assert match is not None and match["ak"] == ak
    wanted = set(match["signed"].split(";"))
    headers = {k: v for k, v in seen.headers.items() if k.lower() in wanted}
    query = "&".join(f"{k}={v}" for k, v in seen.query.items())
    url = f"http://{seen.headers['Host']}{seen.path}" + (f"?{query}" if query else "")
    expected = sign(seen.method, url, headers, b"", ak, sk, datetime.now(timezone.utc))
    return expected == {"Authorization": seen.headers["Authorization"]}


def test_aksk_requests_are_signed_and_verify(api: FakeApi, caplog: pytest.LogCaptureFixture) -> None:
    """Every aksk request carries a well-formed Authorization that verifies; secrets never reach the logs."""
    api.on(STATUS_PATH.format("j"), Reply(200, status_body("j")))
    api.handler = lambda seen: Reply(200, {"total": 1, "jobs": [{"name": "j"}]})
    environ = {"HUAWEICLOUD_SDK_AK": "MYAK", "HUAWEICLOUD_SDK_SK": "very-secret-sk"}
    now = datetime(2024, 5, 17, 8, 30, 15, tzinfo=timezone.utc)

    async def both(c: DgcClient) -> None:
        await c.fetch_status("j")
        await c.list_jobs()

    with caplog.at_level(logging.DEBUG):
        run(_config(api, auth="aksk", workspace="ws1"), both, environ=environ, clock=lambda: now)
    assert len(api.requests) == 2
    for seen in api.requests:
        assert seen.headers["X-Sdk-Date"] == "20240517T083015Z"
        match = AUTH_RE.match(seen.headers["Authorization"])
        assert match is not None and "workspace" in match["signed"].split(";")
        assert _verify(seen, "MYAK", "very-secret-sk")
    assert "very-secret-sk" not in caplog.text
    assert "Signature=" not in caplog.text


def test_aksk_retry_is_signed_afresh(api: FakeApi, clock: Any) -> None:
    """A retried request gets a new X-Sdk-Date and a new, valid signature."""
    api.on(STATUS_PATH.format("j"), Reply(502, b"bad gateway"), Reply(200, status_body("j")))
    environ = {"HUAWEICLOUD_SDK_AK": "MYAK", "HUAWEICLOUD_SDK_SK": "sk"}

    def ticking() -> datetime:
        return clock.advance(7)

    run(_config(api, auth="aksk"), lambda c: c.fetch_status("j"), environ=environ, clock=ticking)
    first, second = api.requests
    assert first.headers["X-Sdk-Date"] != second.headers["X-Sdk-Date"]
    assert first.headers["Authorization"] != second.headers["Authorization"]
    assert _verify(first, "MYAK", "sk") and _verify(second, "MYAK", "sk")


# --- what errors say -------------------------------------------------------------------

def test_error_answers_name_their_request_id(api: FakeApi) -> None:
    """The X-Request-Id of a refused request is in the FetchError message: what Huawei support asks for."""
    api.on(STATUS_PATH.format("j"), Reply(403, {"error_code": "DLF.6888", "error_msg": "No permission."},
                                          headers={"X-Request-Id": "3b2f0c1d9e8a47b6a5c4d3e2f1a0b9c8"}))
    result, _ = run(_config(api), lambda c: c.fetch_all(["j"]))
    (error,) = result.errors
    assert error.message == ("j: DLF.6888 No permission. - no permission: the IAM user lacks DataArts Studio "
                             "rights for this workspace (HTTP 403, request id 3b2f0c1d9e8a47b6a5c4d3e2f1a0b9c8)")


@pytest.mark.parametrize(("body", "problem"), [
    pytest.param(b'{"status": "NORMAL", "nodes": [{"name": "N1", "totalPutRecords": "lots"}]}',
                 "j: job status response: node 'N1' field 'totalPutRecords' must be a whole number", id="wrong-type"),
    pytest.param(b'{"status": "NORMAL", "nod', "j: job status response is not JSON", id="truncated"),
])
def test_unusable_2xx_answers_name_their_request_id(api: FakeApi, body: bytes, problem: str) -> None:
    """A 200 whose body cannot be used is a bad_response naming the field (or the problem) and the request id."""
    api.on(STATUS_PATH.format("j"), Reply(200, body, headers={"X-Request-Id": "abc123"}))
    result, client = run(_config(api), lambda c: c.fetch_all(["j"]))
    (error,) = result.errors
    assert error.kind == "bad_response" and error.message.startswith(problem), error.message
    assert error.message.endswith("(HTTP 200, request id abc123)")
    assert client.stats.errors == {"bad_response": 1}


def test_a_2xx_error_document_names_its_request_id_once(api: FakeApi) -> None:
    """An error document sent with 200 (its own request_id in the body) is named once, not twice."""
    api.on(STATUS_PATH.format("j"), Reply(200, {"error_code": "DLF.0100", "error_msg": "gone", "request_id": "r-1"},
                                          headers={"X-Request-Id": "r-1"}))
    result, _ = run(_config(api), lambda c: c.fetch_all(["j"]))
    assert result.errors[0].kind == "not_found"
    assert result.errors[0].message.count("r-1") == 1


def test_credentials_echoed_by_the_server_are_scrubbed(api: FakeApi) -> None:
    """Whatever a gateway echoes back (an AK, a token), notifier's error text never carries it."""
    environ = {"HUAWEICLOUD_SDK_AK": "AK-ECHOED-0123456789", "HUAWEICLOUD_SDK_SK": "sk-never-shown-0123456789"}
    echo = {"error_code": "APIG.0301", "error_msg": "Incorrect IAM authentication information: Get secretKey "
            "failed,ak:AK-ECHOED-0123456789,err:ak not exist; sk-never-shown-0123456789"}
    api.on(STATUS_PATH.format("j"), Reply(401, echo))
    result, _ = run(_config(api, auth="aksk"), lambda c: c.fetch_all(["j"]), environ=environ)
    (error,) = result.errors
    assert error.kind == "auth" and "ak:***,err:ak not exist" in error.message
    assert all(secret not in error.message for secret in environ.values())


def test_a_node_reporting_node_type_keeps_it(api: FakeApi) -> None:
    """The SDK's spelling `nodeType` gives the node its type (node_types rules can match it)."""
    api.on(STATUS_PATH.format("j"), Reply(200, {"status": "NORMAL", "starttime": "1551409465000",
                                                "nodes": [{"name": "N", "status": "NORMAL", "nodeType": "DLI SQL"}]}))
    snap, _ = run(_config(api), lambda c: c.fetch_status("j"))
    assert [(n.name, n.type) for n in snap.nodes] == [("N", "DLI SQL")]
    assert snap.start_time == datetime(2019, 3, 1, 3, 4, 25, tzinfo=timezone.utc)


# --- concurrency and rate --------------------------------------------------------------

def test_concurrency_bound_respected(api: FakeApi) -> None:
    """With concurrency 3, the server never sees more than 3 requests in flight (and does see 3)."""
    api.handler = lambda seen: Reply(200, status_body(seen.path.split("/")[4]), delay=0.1)
    jobs = [f"job{i}" for i in range(12)]
    result, _ = run(_config(api, concurrency=3), lambda c: c.fetch_all(jobs))
    assert len(result.snapshots) == 12 and not result.errors
    assert api.max_in_flight == 3


def test_queued_requests_do_not_spend_their_timeout_waiting(api: FakeApi) -> None:
    """Jobs waiting for a concurrency slot start their timeout only when sent, so none times out."""
    api.handler = lambda seen: Reply(200, status_body(seen.path.split("/")[4]), delay=0.1)
    result, _ = run(_config(api, concurrency=1, timeout=0.3, retries=0),
                    lambda c: c.fetch_all([f"j{i}" for i in range(5)]))
    assert result.errors == ()
    assert len(result.snapshots) == 5


def test_rate_limit_spaces_requests(api: FakeApi) -> None:
    """At 10 requests/s, request starts are spaced 0.1 s apart through the injected sleep."""
    time = FakeClock()
    api.handler = lambda seen: Reply(200, status_body(seen.path.split("/")[4]))
    result, client = run(_config(api, max_requests_per_second=10, concurrency=5),
                         lambda c: c.fetch_all([f"j{i}" for i in range(5)]), time=time)
    assert len(result.snapshots) == 5
    assert time.sleeps == [pytest.approx(0.1)] * 4
    assert client.stats.requests == 5


def test_rate_limiter_slots_without_bursts() -> None:
    """Five waits at the same instant sleep 0, 0.25, 0.5, 0.75, 1.0 s: evenly spaced, no burst."""
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    limiter = RateLimiter(4.0, monotonic=lambda: 50.0, sleep=record)

    async def main() -> None:
        for _ in range(5):
            await limiter.wait()

    asyncio.run(main())
    assert waits == [0.25, 0.5, 0.75, 1.0]


def test_rate_limiter_waiters_that_wake_late_go_out_spaced_not_in_a_burst() -> None:
    """The event loop was busy for a second: the waiters due meanwhile start a slot apart from then on.

    A fake timer: sleepers wake only when the test moves the clock, all those due at once,
    as a loop that was busy wakes them.
    """
    t = 0.0
    sleepers: list[tuple[float, asyncio.Future[None]]] = []

    async def sleep(seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        sleepers.append((t + seconds, future))
        await future

    limiter = RateLimiter(4.0, monotonic=lambda: t, sleep=sleep)
    starts: list[float] = []

    async def request() -> None:
        await limiter.wait()
        starts.append(t)

    async def main() -> None:
        nonlocal t
        tasks = [asyncio.ensure_future(request()) for _ in range(6)]
        for _ in range(3):
            await asyncio.sleep(0)
        t = 1.0  # busy until 1 s: every slot claimed for 0.25 .. 1.0 is overdue now
        while not all(task.done() for task in tasks):
            for _, future in [s for s in sleepers if s[0] <= t and not s[1].done()]:
                future.set_result(None)
            for _ in range(3):
                await asyncio.sleep(0)
            pending = [due for due, future in sleepers if not future.done()]
            if pending:
                t = max(t, min(pending))

    asyncio.run(main())
    assert starts[0] == 0.0 and starts[1] == 1.0
    assert [round(b - a, 6) for a, b in itertools.pairwise(starts[1:])] == [0.25] * 4


@pytest.mark.parametrize(("attempt", "error", "expected"), [
    pytest.param(0, SourceError("x", kind="server"), 0.5, id="first"),
    pytest.param(3, SourceError("x", kind="timeout"), 4.0, id="doubling"),
    pytest.param(9, SourceError("x", kind="network"), 10.0, id="capped"),
    pytest.param(0, SourceError("x", kind="throttled", retry_after=90.0), 60.0, id="retry-after-cap"),
    pytest.param(0, SourceError("x", kind="server", retry_after=3.0), 3.0, id="retry-after-on-503"),
    pytest.param(0, SourceError("x", kind="throttled"), 5.0, id="throttled-default"),
])
def test_retry_delay(attempt: int, error: SourceError, expected: float) -> None:
    """Backoff doubles from ``backoff`` up to ``backoff_max``; Retry-After wins, capped at 60 s."""
    config = SourceConfig(endpoint="http://127.0.0.1:1", project_id="p")
    assert retry_delay(attempt, error, config, MaxRng()) == expected


# --- listing and resolving jobs -------------------------------------------------------

def _list_handler(names: list[str], *, pages: bool = False) -> Callable[[Seen], Reply]:
    def handle(seen: Seen) -> Reply:
        limit, offset = int(seen.query["limit"]), int(seen.query["offset"])
        start = offset * limit if pages else offset
        chunk = names[start:start + limit]
        return Reply(200, {"total": len(names), "jobs": [{"name": n, "jobType": "REAL_TIME"} for n in chunk]})
    return handle


def test_list_jobs_pages_over_2500_jobs(api: FakeApi) -> None:
    """2500 jobs come back in three pages of limit 1000, REAL_TIME only, in order."""
    names = [f"job{i:04d}" for i in range(2500)]
    api.handler = _list_handler(names)
    listed, _ = run(_config(api), lambda c: c.list_jobs())
    assert listed == tuple(names)
    assert [(r.query["offset"], r.query["limit"], r.query["jobType"]) for r in api.requests] == [
        ("0", "1000", "REAL_TIME"), ("1000", "1000", "REAL_TIME"), ("2000", "1000", "REAL_TIME")]


def test_list_jobs_with_page_number_offsets(api: FakeApi) -> None:
    """A server that reads offset as a page number still yields every job."""
    names = [f"job{i:04d}" for i in range(2500)]
    api.handler = _list_handler(names, pages=True)
    listed, _ = run(_config(api), lambda c: c.list_jobs())
    assert listed == tuple(names)
    assert [r.query["offset"] for r in api.requests] == ["0", "1000", "1", "2"]


def test_list_jobs_small_server_pages(api: FakeApi) -> None:
    """A server that returns fewer records than asked (100 a page) is paged by records received."""
    names = [f"job{i:03d}" for i in range(250)]

    def handle(seen: Seen) -> Reply:
        offset = int(seen.query["offset"])
        return Reply(200, {"total": 250, "jobs": [{"name": n} for n in names[offset:offset + 100]]})

    api.handler = handle
    listed, _ = run(_config(api), lambda c: c.list_jobs())
    assert listed == tuple(names)
    assert [r.query["offset"] for r in api.requests] == ["0", "100", "200"]


def test_list_jobs_bad_page_raises(api: FakeApi) -> None:
    """A job list that is not a list document raises bad_response (discovery must not shrink silently)."""
    api.handler = lambda seen: Reply(200, b"<html>login</html>")
    with pytest.raises(SourceError) as info:
        run(_config(api), lambda c: c.list_jobs())
    assert info.value.kind == "bad_response"
    assert len(api.requests) == 1


def test_resolve_jobs_include_exclude(api: FakeApi) -> None:
    """Explicit names first, then discovered names passing include and not exclude, each once."""
    api.handler = _list_handler(["job_a", "job_b_test", "other", "job_c", "job_a"])
    jobs = JobsConfig(names=("manual", "job_c"), discover=True, include=("job_*",), exclude=("*_test",))
    resolved, _ = run(_config(api), lambda c: c.resolve_jobs(jobs))
    assert resolved == ("manual", "job_c", "job_a")


def test_resolve_jobs_without_discovery_makes_no_request(api: FakeApi) -> None:
    """Without discover, the explicit list is used as is and the API is not asked."""
    resolved, _ = run(_config(api), lambda c: c.resolve_jobs(JobsConfig(names=("b", "a", "b"))))
    assert resolved == ("b", "a")
    assert api.requests == []


@pytest.mark.parametrize(("listed", "include", "exclude", "expected"), [
    pytest.param(["a1", "a2", "b1"], ["*"], [], ("a1", "a2", "b1"), id="all"),
    pytest.param(["a1", "a2", "b1"], ["a*"], ["*2"], ("a1",), id="include-exclude"),
    pytest.param(["A1", "a1"], ["a*"], [], ("a1",), id="case-sensitive"),
    pytest.param(["a1"], [], [], (), id="no-include-nothing"),
])
def test_select_jobs(listed: list[str], include: list[str], exclude: list[str], expected: tuple[str, ...]) -> None:
    """Glob filtering is fnmatch, case-sensitive, exclude winning over include."""
    assert select_jobs((), listed, include, exclude) == expected


# --- the bundled simulator -------------------------------------------------------------

def test_seed_scenario_through_simulator() -> None:
    """The bundled simulator's seed scenario serves job_sms with its 7 nodes over a real socket."""
    simulator = pytest.importorskip("notifier.simulator")
    if not hasattr(simulator, "Simulator"):
        pytest.skip("notifier.simulator has no Simulator yet")
    with simulator.Simulator(simulator.load_scenario("seed")) as sim:
        config = SourceConfig(endpoint=sim.url, project_id=sim.project_id, auth="none")
        snap, _ = run(config, lambda c: c.fetch_status("job_sms"))
    assert isinstance(snap, JobSnapshot)
    assert len(snap.nodes) == 7
    assert {n.name: n.status for n in snap.nodes}["DLI_SMS_GES"] == "EXCEPTION"
