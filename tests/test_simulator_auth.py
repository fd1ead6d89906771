"""The simulator refuses what the API gateway refuses: bad AK/SK signatures, stale dates, missing or bad tokens.

The verifier is checked against huaweicloudsdkcore's own ``Signer`` (what the official SDK
sends is accepted; the same request tampered with is not), then notifier's client meets
the 401 end to end: through ``DgcClient`` and through the whole pipeline to an
``auth-failed`` meta-alert, with the request id in the error and no secret anywhere.
"""

from __future__ import annotations

import asyncio
import re
import tomllib
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

from notifier.config import SourceConfig
from notifier.core.meta import AUTH_FAILED
from notifier.errors import ConfigError, SourceError
from notifier.simulator import AuthSettings, ManualClock, Scenario, Simulator, parse_scenario
from notifier.source.client import DgcClient
from tests.conftest import WriteConfig
from tests.pipeline_support import NODE_EXCEPTION, LinkedClock, Pipeline, webhook_toml
from tests.support.webhook_receiver import WebhookReceiver

PROJECT = "b384b9e9ab9b4ee8994c8633aabc9505"
AK, SK = "SIMAK-AUTH-TEST-0123456789", "sim-sk-auth-test-do-not-leak-9876543210"
TOKEN = "sim-static-token-auth-test-0123456789"
NOW = datetime(2024, 5, 17, 8, 30, 15, tzinfo=timezone.utc)
REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")


def _scenario(auth: str, *, extra: str = "") -> Scenario:
    text = f"""
project_id = "{PROJECT}"
epoch_start = 1551409406000
auth = "{auth}"
{extra}

[credentials]
ak = "{AK}"
sk = "{SK}"
token = "{TOKEN}"

[[job]]
name = "job_sms"

[[job.node]]
name = "DLI_SMS_GES"
type = "DLI SQL"
status = "EXCEPTION"

[[job]]
name = "job_ws"
workspace = "ws-1"
"""
    return parse_scenario(tomllib.loads(text), name=f"auth-{auth}")


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """An aksk scenario whose wall clock is NOW, so signatures are dated deterministically."""
    with Simulator(_scenario("aksk"), clock=ManualClock(), wall_clock=NOW.timestamp) as s:
        yield s


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5, trust_env=False) as client:
        yield client


def sdk_sign(method: str, url: str, headers: dict[str, str] | None = None, *, ak: str = AK, sk: str = SK,
             date: datetime = NOW) -> tuple[str, dict[str, str]]:
    """Sign as the official SDK does (huaweicloudsdkcore's Signer); returns the URL to send and every header."""
    parts = urlsplit(url)
    query = [(k, v) for k, _, v in (p.partition("=") for p in parts.query.split("&") if p)]
    params = {"Content-Type": "application/json", "X-Sdk-Date": date.strftime("%Y%m%dT%H%M%SZ"), **(headers or {})}
    request = SdkRequest(method=method, schema=parts.scheme, host=parts.netloc, resource_path=parts.path,
                         query_params=query, header_params=params, body="")
    signed = Signer(BasicCredentials(ak, sk)).sign(request)
    return f"{parts.scheme}://{parts.netloc}{signed.uri}", dict(signed.header_params)


def status_url(sim: Simulator, job: str = "job_sms") -> str:
    return f"{sim.url}/v1/{PROJECT}/jobs/{quote(job, safe='')}/status"


def refused(response: httpx.Response) -> str:
    """Assert a gateway 401 APIG.0301 whose body names the answer's request id; return its error_msg."""
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error_code"] == "APIG.0301"
    assert REQUEST_ID.match(response.headers["x-request-id"])
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["error_msg"].startswith("Incorrect IAM authentication information: ")
    return str(body["error_msg"])


# --- what the official SDK's signer produces is accepted ---------------------------------

@pytest.mark.parametrize(("path", "headers"), [
    pytest.param(f"/v1/{PROJECT}/jobs/job_sms/status", {}, id="status"),
    pytest.param(f"/v1/{PROJECT}/jobs/job_ws/status", {"workspace": "ws-1"}, id="status-workspace"),
    pytest.param(f"/v1/{PROJECT}/jobs?jobType=REAL_TIME&offset=0&limit=1000", {}, id="list-query"),
    pytest.param(f"/v1/{PROJECT}/jobs?jobName=job%20s%26ms&jobType=REAL_TIME", {"User-Agent": "sdk/1"},
                 id="list-encoded-query"),
])
def test_sdk_signed_requests_are_served(sim: Simulator, http: httpx.Client, path: str,
                                        headers: dict[str, str]) -> None:
    """A request signed by huaweicloudsdkcore's Signer with the scenario's AK/SK gets its 200 answer."""
    url, signed = sdk_sign("GET", sim.url + path, headers)
    response = http.get(url, headers=signed)
    assert response.status_code == 200, response.text
    assert sim.requests[-1].headers["authorization"].startswith("SDK-HMAC-SHA256 Access=" + AK)
    assert response.headers["x-request-id"] == sim.requests[-1].request_id


def test_unsigned_headers_may_be_added_after_signing(sim: Simulator, http: httpx.Client) -> None:
    """Only the SignedHeaders count, as at the gateway: a proxy's extra header does not break the signature."""
    url, signed = sdk_sign("GET", status_url(sim))
    assert http.get(url, headers={**signed, "X-Forwarded-For": "10.0.0.1", "Accept": "*/*"}).status_code == 200


@pytest.mark.parametrize("offset", [timedelta(minutes=-14, seconds=-59), timedelta(minutes=14, seconds=59)])
def test_dates_within_fifteen_minutes_are_accepted(sim: Simulator, http: httpx.Client, offset: timedelta) -> None:
    """A client clock a little behind or ahead of the server's is fine."""
    url, signed = sdk_sign("GET", status_url(sim), date=NOW + offset)
    assert http.get(url, headers=signed).status_code == 200


# --- a tampered or badly signed request is refused ----------------------------------------

def _tamper_path(url: str, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    return url.replace("job_sms", "job_ws"), headers


def _tamper_query(url: str, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    return url.replace("limit=1000", "limit=999"), headers


def _tamper_workspace(url: str, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    return url, {**headers, "workspace": "ws-other"}


def _tamper_signature(url: str, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    auth = headers["Authorization"]
    last = auth[-1]
    return url, {**headers, "Authorization": auth[:-1] + ("0" if last != "0" else "1")}


def _tamper_date(url: str, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    return url, {**headers, "X-Sdk-Date": (NOW + timedelta(seconds=1)).strftime("%Y%m%dT%H%M%SZ")}


def _unchanged(url: str, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    return url, headers


@pytest.mark.parametrize(("tamper", "signed_as", "message"), [
    pytest.param(_tamper_path, "GET", "verify aksk signature fail, canonicalRequest:GET|/v1/", id="other-path"),
    pytest.param(_tamper_query, "GET", "verify aksk signature fail", id="other-query"),
    pytest.param(_tamper_workspace, "GET", "verify aksk signature fail", id="signed-header-changed"),
    pytest.param(_tamper_signature, "GET", "verify aksk signature fail", id="signature-changed"),
    pytest.param(_tamper_date, "GET", "verify aksk signature fail", id="date-changed"),
    pytest.param(_unchanged, "POST", "verify aksk signature fail, canonicalRequest:GET|", id="signed-as-post"),
])
def test_tampered_requests_are_refused(sim: Simulator, http: httpx.Client, tamper: Any, signed_as: str,
                                       message: str) -> None:
    """Change anything the SDK signed (sent as GET) and the gateway's recomputed signature no longer matches."""
    url, signed = sdk_sign(signed_as, f"{sim.url}/v1/{PROJECT}/jobs/job_sms/status?limit=1000", {"workspace": ""})
    url, headers = tamper(url, signed)
    assert message in refused(http.get(url, headers=headers))


def test_the_refusal_shows_the_canonical_request_it_computed(sim: Simulator, http: httpx.Client) -> None:
    """As APIG logs it ("|" for newlines), so a client can see which part it signed differently."""
    url, signed = sdk_sign("GET", status_url(sim), sk="not-the-sk")
    message = refused(http.get(url, headers=signed))
    assert (f"canonicalRequest:GET|/v1/{PROJECT}/jobs/job_sms/status/||content-type:application/json|"
            f"host:127.0.0.1:{sim.port}|x-sdk-date:20240517T083015Z||content-type;host;x-sdk-date|") in message
    assert SK not in message and "not-the-sk" not in message


@pytest.mark.parametrize(("headers", "message"), [
    pytest.param({}, "Authorization not found", id="unsigned"),
    pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, "unsupported Authorization header", id="other-scheme"),
    pytest.param({"Authorization": "SDK-HMAC-SHA256 Access=x"}, "unsupported Authorization header", id="garbled"),
    pytest.param({"X-Auth-Token": TOKEN}, "Authorization not found", id="a-token-is-not-a-signature"),
])
def test_requests_without_a_signature_are_refused(sim: Simulator, http: httpx.Client, headers: dict[str, str],
                                                  message: str) -> None:
    """No signature, or a header in another scheme: 401, never the job's status."""
    assert message in refused(http.get(status_url(sim), headers=headers))


def test_unknown_ak_is_refused_without_echoing_it(sim: Simulator, http: httpx.Client) -> None:
    """An AK the scenario does not know: the gateway's "ak not exist", the AK masked as Huawei's docs show it."""
    url, signed = sdk_sign("GET", status_url(sim), ak="OTHER-AK-0123456789")
    message = refused(http.get(url, headers=signed))
    assert message == "Incorrect IAM authentication information: Get secretKey failed,ak:******,err:ak not exist"


@pytest.mark.parametrize("offset", [timedelta(minutes=15, seconds=1), -timedelta(hours=8)])
def test_dates_more_than_fifteen_minutes_off_are_refused(sim: Simulator, http: httpx.Client,
                                                         offset: timedelta) -> None:
    """A client clock 15 min off (or in local time, not UTC) gets "signature expired" naming both times."""
    signed_at = NOW + offset
    url, signed = sdk_sign("GET", status_url(sim), date=signed_at)
    message = refused(http.get(url, headers=signed))
    assert (f"signature expired, signature time:{signed_at:%Y%m%dT%H%M%SZ},server time:20240517T083015Z "
            "(X-Sdk-Date is more than 15 minutes off the server's clock)") in message


def test_the_allowed_skew_is_the_scenarios(http: httpx.Client) -> None:
    """[credentials] max_clock_skew narrows the window (here to 1 minute)."""
    auth = AuthSettings(mode="aksk", ak=AK, sk=SK, max_clock_skew=60.0)
    with Simulator(_scenario("aksk"), clock=ManualClock(), wall_clock=NOW.timestamp, auth=auth) as sim:
        url, signed = sdk_sign("GET", status_url(sim), date=NOW - timedelta(seconds=61))
        assert "more than 1 minutes off" in refused(http.get(url, headers=signed))


@pytest.mark.parametrize(("date", "message"), [
    pytest.param(None, "x-sdk-date not found", id="missing"),
    pytest.param("2024-05-17T08:30:15Z", "invalid x-sdk-date '2024-05-17T08:30:15Z'", id="extended-iso"),
])
def test_unreadable_dates_are_refused(sim: Simulator, http: httpx.Client, date: str | None, message: str) -> None:
    """The date must be there and in the SDK's basic format."""
    url, signed = sdk_sign("GET", status_url(sim))
    signed = {k: v for k, v in signed.items() if k != "X-Sdk-Date"}
    if date is not None:
        signed["X-Sdk-Date"] = date
    assert message in refused(http.get(url, headers=signed))


def test_a_date_outside_the_signed_headers_is_refused(sim: Simulator, http: httpx.Client) -> None:
    """An X-Sdk-Date that is not signed could be replayed for ever: refused whatever the signature."""
    url, signed = sdk_sign("GET", status_url(sim))
    signed["Authorization"] = re.sub(r"SignedHeaders=[^,]+", "SignedHeaders=host", signed["Authorization"])
    assert "x-sdk-date is not among the SignedHeaders" in refused(http.get(url, headers=signed))


def test_unknown_paths_are_not_found_before_authentication(sim: Simulator, http: httpx.Client) -> None:
    """APIG answers an API it does not publish with 404 APIG.0101, signed or not."""
    response = http.get(f"{sim.url}/v2/{PROJECT}/whatever")
    assert (response.status_code, response.json()["error_code"]) == (404, "APIG.0101")
    assert response.json()["request_id"] == response.headers["x-request-id"]


# --- token scenarios ---------------------------------------------------------------------

@pytest.fixture
def token_sim() -> Iterator[Simulator]:
    with Simulator(_scenario("token"), clock=ManualClock()) as s:
        yield s


@pytest.mark.parametrize(("headers", "message"), [
    pytest.param({}, "Incorrect IAM authentication information: x-auth-token not found", id="missing"),
    pytest.param({"X-Auth-Token": "sim-forged"}, "Incorrect IAM authentication information: decrypt token fail",
                 id="unknown"),
    pytest.param({"X-Auth-Token": TOKEN + "x"}, "Incorrect IAM authentication information: decrypt token fail",
                 id="almost-the-static-one"),
])
def test_token_scenarios_refuse_missing_or_wrong_tokens(token_sim: Simulator, http: httpx.Client,
                                                        headers: dict[str, str], message: str) -> None:
    """auth = "token": no token or a wrong one is 401 APIG.0301 in the gateway's words."""
    assert refused(http.get(status_url(token_sim), headers=headers)) == message


def test_token_scenarios_serve_the_static_token_and_issued_ones(token_sim: Simulator, http: httpx.Client) -> None:
    """The scenario's token works; so does one from the simulated IAM, until it expires."""
    assert http.get(status_url(token_sim), headers={"X-Auth-Token": TOKEN}).status_code == 200
    iam = token_sim.iam
    issued = http.post(f"{token_sim.url}/v3/auth/tokens", json={"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": iam.user, "password": iam.password, "domain": {"name": iam.domain}}}},
        "scope": {"project": {"id": PROJECT}}}})
    assert issued.status_code == 201 and REQUEST_ID.match(issued.headers["x-request-id"])
    token = issued.headers["x-subject-token"]
    assert http.get(status_url(token_sim), headers={"X-Auth-Token": token}).status_code == 200
    assert isinstance(token_sim.clock, ManualClock)
    token_sim.clock.advance(iam.token_lifetime)
    message = refused(http.get(status_url(token_sim), headers={"X-Auth-Token": token}))
    assert message == ("Incorrect IAM authentication information: token expires, expires_at: "
                       f"{issued.json()['token']['expires_at']}")


def test_auth_none_scenarios_serve_anyone(http: httpx.Client) -> None:
    """The default stays open: scenarios and tests without credentials keep working."""
    with Simulator(_scenario("none"), clock=ManualClock()) as sim:
        response = http.get(status_url(sim))
    assert response.status_code == 200 and REQUEST_ID.match(response.headers["x-request-id"])


@pytest.mark.parametrize(("extra", "key", "message"), [
    pytest.param('auth = "ak/sk"', "auth", "must be one of 'none', 'aksk', 'token'", id="auth-mode"),
    pytest.param('[credentials]\nak = ""', "ak", "must be a non-empty string", id="empty-ak"),
    pytest.param('[credentials]\nsk = " padded "', "sk", "without surrounding spaces", id="padded-sk"),
    pytest.param('[credentials]\nmax_clock_skew = "0s"', "max_clock_skew", "longer than zero", id="zero-skew"),
    pytest.param('[credentials]\nsecret = "x"', "secret", "unknown key", id="unknown-key"),
])
def test_bad_auth_settings_name_the_key(extra: str, key: str, message: str) -> None:
    """Scenario auth settings are checked like every other key."""
    text = f'project_id = "{PROJECT}"\n{extra}\n\n[[job]]\nname = "j"\n'
    with pytest.raises(ConfigError, match=message) as info:
        parse_scenario(tomllib.loads(text), file="auth.toml")
    assert info.value.key == key and info.value.file == "auth.toml"


# --- notifier's client against it ----------------------------------------------------------

def _source(sim: Simulator, **overrides: Any) -> SourceConfig:
    base = SourceConfig(endpoint=sim.url, project_id=PROJECT, auth="aksk", ak_env="T_AK", sk_env="T_SK",
                        timeout=2.0, retries=2, backoff=0.01, backoff_max=0.01, max_requests_per_second=1e6)
    return replace(base, **overrides)


def _fetch(config: SourceConfig, environ: dict[str, str], clock: datetime = NOW) -> Any:
    async def main() -> Any:
        async with DgcClient(config, environ=environ, clock=lambda: clock) as client:
            try:
                return await client.fetch_status("job_sms"), await client.list_jobs()
            except SourceError as exc:
                return exc

    return asyncio.run(main())


def test_notifier_client_is_served_with_the_right_credentials(sim: Simulator) -> None:
    """notifier's own signer passes the verifier, for both APIs."""
    result = _fetch(_source(sim), {"T_AK": AK, "T_SK": SK})
    assert not isinstance(result, SourceError), result
    snap, jobs = result
    assert snap.status == "NORMAL" and jobs == ("job_sms",)


@pytest.mark.parametrize(("environ", "clock", "meaning"), [
    pytest.param({"T_AK": AK, "T_SK": "wrong-secret-key-0123456789"}, NOW, "verify aksk signature fail",
                 id="wrong-sk"),
    pytest.param({"T_AK": "WRONG-AK-0123456789", "T_SK": SK}, NOW, "ak not exist", id="unknown-ak"),
    pytest.param({"T_AK": AK, "T_SK": SK}, NOW + timedelta(hours=1), "signature expired", id="clock-an-hour-off"),
])
def test_notifier_client_gets_an_auth_error_naming_code_and_request_id(
        sim: Simulator, environ: dict[str, str], clock: datetime, meaning: str) -> None:
    """The 401 path end to end: kind auth, APIG.0301 explained, the request id, one request, no secret."""
    error = _fetch(_source(sim), environ, clock)
    assert isinstance(error, SourceError)
    assert (error.kind, error.status_code, error.error_code) == ("auth", 401, "APIG.0301")
    (request,) = sim.requests  # a refused credential is not retried
    message = str(error)
    assert message.startswith("job_sms: APIG.0301 Incorrect IAM authentication information: ")
    assert meaning in message and "the API gateway refused the credentials" in message
    assert message.endswith(f"(HTTP 401, request id {request.request_id})"), message
    for secret in environ.values():
        assert secret not in message


# --- the whole pipeline: a refused signature fires auth-failed ------------------------------

def test_a_wrong_sk_fires_auth_failed_through_the_pipeline(
        write_config: WriteConfig, webhook_receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """notifier with a wrong SK against an aksk scenario: auth-failed fires; the right SK resolves it."""
    with Simulator(_scenario("aksk"), clock=ManualClock()) as sim:
        sim.wall_clock = sim.scenario_epoch  # notifier runs on scenario time here
        clock = LinkedClock(sim)
        monkeypatch.setenv("T_AK", AK)
        monkeypatch.setenv("T_SK", "wrong-secret-key-0123456789")
        source = (f'[source]\nendpoint = "{sim.url}"\nproject_id = "{PROJECT}"\nauth = "aksk"\n'
                  'ak_env = "T_AK"\nsk_env = "T_SK"\ntimeout = "2s"\nretries = 0\nmax_requests_per_second = 10000\n')
        path = write_config(source=source, rules=NODE_EXCEPTION, channels=webhook_toml(webhook_receiver.url))
        pipeline = Pipeline(path, clock)
        try:
            report = pipeline.cycle()
            assert [(e.kind, e.status_code, e.error_code) for e in report.errors] == [("auth", 401, "APIG.0301")]
            alerts = [a for r in webhook_receiver.requests for a in r.json["alerts"]]
            assert [(a["rule"], a["status"]) for a in alerts] == [(AUTH_FAILED, "firing")]
            assert "APIG.0301" in alerts[0]["summary"]

            monkeypatch.setenv("T_SK", SK)
            pipeline.restart()  # the secret is read at start
            clock.advance(60)
            pipeline.cycle()
        finally:
            pipeline.close()
    alerts = [a for r in webhook_receiver.requests for a in r.json["alerts"]]
    assert sorted((a["rule"], a["status"]) for a in alerts) == sorted([  # the cycle's order is the pipeline's
        (AUTH_FAILED, "firing"), (AUTH_FAILED, "resolved"), ("node-exception", "firing")])
    for request in webhook_receiver.requests:
        assert SK.encode() not in request.body
    assert SK not in caplog.text and "wrong-secret-key-0123456789" not in caplog.text
