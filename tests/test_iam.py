"""auth = "iam": IAM password-method tokens against the bundled simulator over real sockets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import pytest

from notifier.app import Fetched, _auth_error, describe_auth
from notifier.config import SourceConfig, load_config
from notifier.core.models import FetchResult
from notifier.errors import ConfigError, SourceError
from notifier.simulator import IamSettings, ManualClock, Scenario, Simulator
from notifier.source.client import DgcClient
from notifier.source.iam import TOKEN_PATH, refresh_margin
from tests.support.fakes import START, FakeClock

T = TypeVar("T")
USER, PASSWORD, DOMAIN = "alice", "correct-horse-battery-staple", "acme"
ENVIRON = {"HUAWEICLOUD_IAM_USER": USER, "HUAWEICLOUD_IAM_PASSWORD": PASSWORD}
JOBS = tuple(f"job_{i}" for i in range(8))


@dataclass
class World:
    sim: Simulator
    clock: FakeClock  # notifier's clock; the simulator's scenario clock moves with it

    def config(self, **changes: object) -> SourceConfig:
        base = SourceConfig(endpoint=self.sim.url, project_id=self.sim.project_id, auth="iam",
                            iam_endpoint=self.sim.url, iam_domain=DOMAIN, retries=0)
        return replace(base, **changes)  # type: ignore[arg-type]

    def run(self, call: Callable[[DgcClient], Awaitable[T]], *, config: SourceConfig | None = None,
            environ: dict[str, str] | None = None) -> tuple[T, DgcClient]:
        async def main() -> tuple[T, DgcClient]:
            async with DgcClient(config or self.config(), clock=self.clock, sleep=self.clock.async_sleep,
                                 monotonic=self.clock.monotonic, environ=environ or ENVIRON) as client:
                return await call(client), client
        return asyncio.run(main())

    def posts(self) -> int:
        return sum(1 for r in self.sim.requests if r.method == "POST" and r.path == TOKEN_PATH)

    def tokens_sent(self) -> set[str]:
        return {r.headers["x-auth-token"] for r in self.sim.requests if "x-auth-token" in r.headers}


@pytest.fixture
def world() -> Iterator[World]:
    scenario = replace(Scenario.synthetic(jobs=len(JOBS), nodes=1), epoch_start_ms=int(START.timestamp() * 1000))
    scenario = replace(scenario, jobs=tuple(replace(j, name=f"job_{i}") for i, j in enumerate(scenario.jobs)))
    iam = IamSettings(user=USER, password=PASSWORD, domain=DOMAIN, require_token=True)
    scenario_clock = ManualClock()
    with Simulator(scenario, clock=scenario_clock, iam=iam) as sim:
        yield World(sim, FakeClock(on_advance=scenario_clock.advance))


def test_token_is_fetched_once_and_sent_as_x_auth_token(world: World) -> None:
    """One IAM POST serves many concurrent requests; each carries the issued token in X-Auth-Token."""
    result, client = world.run(lambda c: c.fetch_all(JOBS))
    assert not result.errors and len(result.snapshots) == len(JOBS)
    assert world.posts() == 1 and world.sim.tokens_issued == 1
    (token,) = world.tokens_sent()
    assert world.sim.token_valid(token)
    assert client.iam is not None and client.iam.fetches == 1


def test_token_is_refreshed_before_it_expires(world: World) -> None:
    """A 24 h token is reused for 21 h, then replaced 2.4 h before expiry while the old one still works."""
    async def cycles(client: DgcClient) -> list[FetchResult]:
        results = [await client.fetch_all(JOBS)]
        world.clock.advance(21 * 3600)
        results.append(await client.fetch_all(JOBS))
        assert world.sim.tokens_issued == 1
        world.clock.advance(3600)  # 22 h: inside the 2.4 h margin
        results.append(await client.fetch_all(JOBS))
        return results

    results, _ = world.run(cycles)
    assert all(not r.errors for r in results)
    assert world.posts() == 2
    sent = [r.headers["x-auth-token"] for r in world.sim.requests if r.method == "GET"]
    old, new = sent[0], sent[-1]
    assert old != new and set(sent) == {old, new}
    assert world.sim.token_valid(old) and world.sim.token_valid(new)  # proactive: nothing was refused


def test_revoked_token_gets_exactly_one_refetch_then_succeeds(world: World) -> None:
    """The API refuses a revoked token with 401: concurrent requests share one new token and all succeed."""
    async def revoke_between(client: DgcClient) -> FetchResult:
        await client.fetch_all(JOBS)
        world.sim.revoke_tokens()
        return await client.fetch_all(JOBS)

    result, client = world.run(revoke_between)
    assert not result.errors and len(result.snapshots) == len(JOBS)
    assert world.posts() == 2
    assert client.stats.errors["auth"] == 0


def test_persistent_401_refetches_once_per_request_then_reports_auth(world: World) -> None:
    """A token the API keeps refusing: one fresh token and one more try, then a FetchError of kind auth."""
    world.sim.set_fault(job="job_0", kind="http_error", status=401, error_code="APIG.0301",
                        error_msg="Incorrect IAM authentication information")
    result, _ = world.run(lambda c: c.fetch_all(("job_0",)))
    (error,) = result.errors
    assert error.kind == "auth" and error.status_code == 401 and "APIG.0301" in error.message
    assert world.posts() == 2
    assert sum(1 for r in world.sim.requests if r.method == "GET") == 2


def test_bad_credentials_are_an_auth_error_naming_the_iam_endpoint(world: World) -> None:
    """A wrong password: every job fails with kind auth naming IAM's URL, one IAM request in all, and the
    auth-failed meta alert's text says where the user and password come from."""
    environ = {**ENVIRON, "HUAWEICLOUD_IAM_PASSWORD": "wrong-password"}
    result, client = world.run(lambda c: c.fetch_all(JOBS), environ=environ)
    assert not result.snapshots and len(result.errors) == len(JOBS)
    assert {e.kind for e in result.errors} == {"auth"}
    message = result.errors[0].message
    assert f"IAM {world.sim.url}" in message and "IAM.0004" in message and "HTTP 401" in message
    assert world.posts() == 1  # the refusal is remembered, not asked again per job
    assert not any(r.method == "GET" for r in world.sim.requests)
    fetched = Fetched(result=result, names=JOBS, watched=JOBS, at=world.clock())
    text = _auth_error(fetched, client._config)
    assert text is not None and "IAM.0004" in text
    assert "user from environment variable HUAWEICLOUD_IAM_USER" in text
    assert "password from environment variable HUAWEICLOUD_IAM_PASSWORD" in text


def test_bad_credentials_from_list_jobs_raise_source_error(world: World) -> None:
    """Discovery with a wrong user raises a SourceError of kind auth naming the IAM endpoint."""
    with pytest.raises(SourceError) as caught:
        world.run(lambda c: c.list_jobs(), environ={**ENVIRON, "HUAWEICLOUD_IAM_USER": "mallory"})
    assert caught.value.kind == "auth" and world.sim.url in str(caught.value)


def test_unreachable_iam_is_a_network_error_naming_the_endpoint(world: World) -> None:
    """IAM not listening: kind network, the message names the endpoint (no path, no secrets)."""
    result, _ = world.run(lambda c: c.fetch_all(("job_0",)), config=world.config(iam_endpoint="http://127.0.0.1:9"))
    (error,) = result.errors
    assert error.kind == "network" and "IAM http://127.0.0.1:9" in error.message


def test_password_and_token_never_logged_or_in_errors(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """Through fetch, refresh, revocation, refusal and bad login, neither secret reaches a log line or an error."""
    caplog.set_level(logging.DEBUG)
    world.sim.set_fault(job="job_1", kind="http_error", status=401, error_code="APIG.0301")

    async def everything(client: DgcClient) -> list[str]:
        texts = [e.message for e in (await client.fetch_all(JOBS)).errors]
        world.clock.advance(23 * 3600)
        world.sim.revoke_tokens()
        texts += [e.message for e in (await client.fetch_all(JOBS)).errors]
        return texts

    texts, client = world.run(everything)
    bad, _ = world.run(lambda c: c.fetch_all(JOBS), environ={**ENVIRON, "HUAWEICLOUD_IAM_PASSWORD": PASSWORD + "x"})
    texts += [e.message for e in bad.errors]
    assert texts and world.posts() >= 3
    tokens = world.tokens_sent()
    assert len(tokens) >= 2
    everything_said = "\n".join([caplog.text, *texts, repr(client.iam), repr(client.iam.__dict__)])
    for secret in (PASSWORD, *tokens):
        assert secret not in everything_said


def test_refresh_margin() -> None:
    """max(10 % of the life, 1 h), never more than half the life."""
    assert refresh_margin(timedelta(hours=24)) == timedelta(hours=2.4)
    assert refresh_margin(timedelta(hours=2)) == timedelta(hours=1)
    assert refresh_margin(timedelta(minutes=10)) == timedelta(minutes=5)


def test_simulator_without_require_token_serves_anyone() -> None:
    """The default simulator wants no token, and its IAM still issues one for the default test user."""
    with Simulator(Scenario.synthetic(jobs=1, nodes=1), clock=ManualClock()) as sim:
        world = World(sim, FakeClock())
        environ = {"HUAWEICLOUD_IAM_USER": "notifier", "HUAWEICLOUD_IAM_PASSWORD": "simulator-password"}
        result, _ = world.run(lambda c: c.fetch_all(("job_0",)), config=world.config(iam_domain="simulator",
                                                                                  iam_project="cn-north-4"),
                              environ=environ)
        assert not result.errors and world.posts() == 1
        snap, _ = world.run(lambda c: c.fetch_status("job_0"), config=world.config(auth="none"))
        assert snap.name == "job_0"


# --- [source] keys ----------------------------------------------------------------------

def write(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "notifier.toml"
    path.write_text(f'[source]\nendpoint = "https://dgc.example.com"\nproject_id = "p"\n{source}\n'
                    '[jobs]\nnames = ["job_sms"]\n[channels.stdout]\ntype = "console"\n')
    return path


def test_iam_keys_are_read(tmp_path: Path) -> None:
    """auth = "iam" with its keys; user and password default to HUAWEICLOUD_IAM_USER/PASSWORD."""
    path = write(tmp_path, 'auth = "iam"\niam_endpoint = "https://iam.cn-north-4.myhuaweicloud.com/"\n'
                           'iam_domain = "acme"\niam_project = "cn-north-4"\n'
                           'iam_password_file = "/run/credentials/notifier.service/iam_password"\n')
    source = load_config(path).source
    assert source.auth == "iam" and source.iam_endpoint == "https://iam.cn-north-4.myhuaweicloud.com"
    assert (source.iam_domain, source.iam_project) == ("acme", "cn-north-4")
    assert (source.iam_user_env, source.iam_user_file) == ("HUAWEICLOUD_IAM_USER", None)
    assert source.iam_password_file == "/run/credentials/notifier.service/iam_password"
    assert "password from file /run/credentials/notifier.service/iam_password" in describe_auth(source)


@pytest.mark.parametrize(("extra", "key", "message"), [
    ('iam_domain = "acme"', "iam_endpoint", "required with auth"),
    ('iam_endpoint = "https://iam.example.com"', "iam_domain", "required with auth"),
    ('iam_endpoint = "iam.example.com"\niam_domain = "acme"', "iam_endpoint", "must start with https://"),
    ('iam_endpoint = "https://iam.example.com"\niam_domain = "acme"\niam_password = "hunter2"', "iam_password",
     "iam_password_env"),
    ('iam_endpoint = "https://iam.example.com"\niam_domain = "acme"\niam_user_env = "U"\niam_user_file = "/f"',
     "iam_user_file", "not both"),
])
def test_iam_key_errors(tmp_path: Path, extra: str, key: str, message: str) -> None:
    """Missing or malformed IAM keys, a password written into the config, env and file both set: ConfigError."""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, f'auth = "iam"\n{extra}\n'))
    assert caught.value.key == key and message in str(caught.value)
