"""The DGC API client: the imperative shell around ``parse`` and ``signer``.

One ``httpx.AsyncClient`` with a pool sized to ``concurrency``; every request goes

    semaphore (in-flight bound) -> rate limiter (evenly spaced starts) -> auth headers -> send

(``auth = "iam"`` first takes the shared token from ``iam.TokenSource``; a 401 to it gets
one fresh token and one more try per request.)

and is retried with exponential backoff and full jitter on timeouts, connection errors,
5xx and throttling (honouring ``Retry-After``), never on answers that will not change
(400/401/403/404, unparseable bodies). ``fetch_all`` isolates jobs from each other: a
failing job becomes a FetchError, the others still produce snapshots.

Every error about an answer names its request id (``X-Request-Id``), also when the
answer was a 200 with a body that could not be used: it is what Huawei support asks
for. The credentials are scrubbed from every error text, whatever the server echoed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase
from types import TracebackType
from typing import TypeVar, cast, get_args
from urllib.parse import quote

import httpx

from notifier.clock import utcnow
from notifier.config import JobsConfig, SourceConfig
from notifier.core.fetchplan import LIST_PAGE_SIZE, Listed
from notifier.core.models import DEFAULT_SOURCE, FetchError, FetchErrorKind, FetchResult, JobSnapshot
from notifier.errors import ConfigError, SourceError
from notifier.httputil import USER_AGENT, scrub
from notifier.logs import event
from notifier.secrets import Secret, read_secret
from notifier.source import parse, signer
from notifier.source.iam import TokenSource

log = logging.getLogger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
Monotonic = Callable[[], float]

RETRY_AFTER_CAP = 60.0
THROTTLED_BACKOFF = (2.0, 5.0)  # Huawei documents no Retry-After for APIG.0308: back off 2-5 s
FETCH_WORKERS_PER_SLOT = 4  # fetch_all workers per concurrency slot (see fetch_all)
RETRYABLE_KINDS = frozenset({"timeout", "network", "server", "throttled"})
_FETCH_ERROR_KINDS = frozenset(get_args(FetchErrorKind))


@dataclass(slots=True)
class ClientStats:
    """Counters for metrics: HTTP requests sent, retries, and final errors by kind."""

    requests: int = 0
    retries: int = 0
    throttled: int = 0  # answers refused for the user's rate (APIG.0308, 429): each slowed every request
    errors: Counter[str] = field(default_factory=Counter)
    last_answer: float = 0.0  # time.monotonic() of the last request that ended (answer, timeout or refusal)

    def answered(self) -> None:
        """A request ended: the cycle is making progress (the daemon's watchdog reads this)."""
        self.last_answer = time.monotonic()


class RateLimiter:
    """Evenly spaced request starts, at most ``rate`` per second and no bursts; slower after the API throttles.

    DGC allows 30 requests/s per user; a token bucket would let a full bucket go out
    at once on top of the steady rate, so slots are spaced instead. One limiter serves
    every request of a source (list and status): the budget is the user's, not the
    endpoint's. A throttled answer (``APIG.0308``, 429) means something else spends the
    same user's budget: every request waits out the backoff, and the rate halves (down to
    a tenth), then grows back by a twentieth of it per answer that was not throttled.
    """

    def __init__(self, rate: float, *, monotonic: Monotonic, sleep: Sleep) -> None:
        self.rate = rate
        self.current = rate
        self._monotonic = monotonic
        self._sleep = sleep
        self._next = float("-inf")
        self._gate = asyncio.Lock()  # one waiter at a time takes the next slot

    async def wait(self) -> None:
        """Return when this request may start: ``1 / current`` s after the previous start, at the earliest.

        The next slot counts from when the previous request really started, not from when
        it was due: a waiter that wakes late (the event loop was busy parsing or planning)
        does not let the ones behind it out in a burst to catch up.
        """
        async with self._gate:
            now = self._monotonic()
            if self._next > now:
                await self._sleep(self._next - now)
                now = max(now, self._monotonic())
            self._next = max(now, self._next) + 1.0 / self.current

    def throttled(self, pause: float) -> None:
        """The API refused a request for its rate: no request starts for ``pause`` seconds, then at half the rate."""
        self.current = max(self.rate / 10, self.current / 2)
        self._next = max(self._next, self._monotonic() + pause)

    def answered(self) -> None:
        """A request was served: win back some of the rate a throttle took."""
        if self.current < self.rate:
            self.current = min(self.rate, self.current + self.rate / 20)


def retry_delay(attempt: int, error: SourceError, config: SourceConfig, rng: random.Random) -> float:
    """Seconds to wait before retry number ``attempt + 1``.

    ``Retry-After`` is honoured (capped at 60 s); throttling without it backs off 2-5 s;
    anything else gets full jitter over ``backoff * 2**attempt`` capped at ``backoff_max``.
    """
    if error.retry_after is not None:
        return min(error.retry_after, RETRY_AFTER_CAP)
    if error.kind == "throttled":
        return rng.uniform(*THROTTLED_BACKOFF)
    return rng.uniform(0.0, min(config.backoff_max, config.backoff * 2.0 ** min(attempt, 64)))


def select_jobs(explicit: Iterable[str], listed: Iterable[str], include: Sequence[str],
                exclude: Sequence[str]) -> tuple[str, ...]:
    """Explicit names, then listed names matching an include glob and no exclude glob; de-duplicated, order kept."""
    chosen = [name for name in listed
              if any(fnmatchcase(name, p) for p in include) and not any(fnmatchcase(name, p) for p in exclude)]
    return tuple(dict.fromkeys([*explicit, *chosen]))


class DgcClient:
    """Asks the DGC API for real-time job statuses; secrets are read once, here."""

    def __init__(self, config: SourceConfig, *, transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], datetime] = utcnow, sleep: Sleep = asyncio.sleep,
                 monotonic: Monotonic = time.monotonic, environ: Mapping[str, str] | None = None,
                 rng: random.Random | None = None, limiters: MutableMapping[str, RateLimiter] | None = None) -> None:
        """``limiters`` (user identity -> limiter) shares one limiter among the clients of one user (``user``)."""
        self._config = config
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._base = f"{config.endpoint.rstrip('/')}/v1/{quote(config.project_id, safe='')}"
        self._semaphore = asyncio.Semaphore(config.concurrency)
        self._headers = _base_headers(config)
        self._token: Secret | None = None
        self._aksk: tuple[Secret, Secret] | None = None
        iam_credentials: tuple[Secret, Secret] | None = None
        if config.auth == "token":
            self._token = _secret(config.token_env, config.token_file, environ)
        elif config.auth == "aksk":
            self._aksk = (_secret(config.ak_env, config.ak_file, environ),
                          _secret(config.sk_env, config.sk_file, environ))
        elif config.auth == "iam":
            iam_credentials = (_secret(config.iam_user_env, config.iam_user_file, environ),
                               _secret(config.iam_password_env, config.iam_password_file, environ))
        self.user = _user_identity(config, self._token, self._aksk, iam_credentials)
        fresh = RateLimiter(config.max_requests_per_second, monotonic=monotonic, sleep=sleep)
        self._limiter = fresh if limiters is None else limiters.setdefault(self.user, fresh)
        limits = httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=config.concurrency)
        self._http = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(config.timeout), limits=limits,
                                       follow_redirects=False)
        self.iam: TokenSource | None = None
        if iam_credentials is not None:
            user, password = iam_credentials
            self.iam = TokenSource(config, self._http, user=user, password=password, clock=clock)
        self.stats = ClientStats()
        self.owners: dict[str, str] = {}  # job -> its owner, as the last job list said (for Slack mentions)

    @property
    def limiter(self) -> RateLimiter:
        """The rate limiter this client's requests wait for: its user's, shared by the sources of that user."""
        return self._limiter

    async def __aenter__(self) -> DgcClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- public operations ------------------------------------------------------------

    async def fetch_status(self, job: str) -> JobSnapshot:
        """One job's status; raises SourceError (with ``kind``) once retries are spent."""
        answer = await self._get(f"/jobs/{quote(job, safe='')}/status", (), job=job)
        return self._parsed(lambda b: parse.parse_status(job, b), answer)

    async def fetch_all(self, jobs: Sequence[str]) -> FetchResult:
        """Every job's status, concurrently; per-job failures become FetchError entries, never raise.

        A fixed pool of workers takes jobs in turn: one task per job would hold 10,000
        coroutines (and their answers) at once. The pool is larger than ``concurrency``
        so that jobs asleep in a retry backoff do not leave connection slots idle; the
        semaphore still bounds requests in flight. Results keep the order of ``jobs``.
        """
        results: list[JobSnapshot | FetchError | None] = [None] * len(jobs)
        pending = iter(enumerate(jobs))

        async def worker() -> None:
            for i, job in pending:  # shared iterator: each job is taken by exactly one worker
                results[i] = await self._fetch_one(job)

        workers = min(len(jobs), self._config.concurrency * FETCH_WORKERS_PER_SLOT)
        await asyncio.gather(*(worker() for _ in range(workers)))
        return FetchResult(snapshots=tuple(r for r in results if isinstance(r, JobSnapshot)),
                           errors=tuple(r for r in results if isinstance(r, FetchError)))

    async def list_jobs(self) -> tuple[str, ...]:
        """Names of all REAL_TIME jobs (``list_all``'s)."""
        return tuple((await self.list_all()).jobs)

    async def list_all(self) -> JobListing:
        """Every REAL_TIME job with its job-level status, paging with ``limit=1000`` until ``total`` are listed.

        The API documents ``offset`` ambiguously ("number of pages"), and may return fewer
        records than asked: offsets count records received; if a page past the first brings
        nothing new before ``total`` is reached, offsets are retried as page numbers.
        """
        jobs: dict[str, Listed] = {}
        offset, useful_pages, by_page, requests = 0, 0, False, 0
        while True:
            query = (("jobType", "REAL_TIME"), ("limit", LIST_PAGE_SIZE), ("offset", offset))
            requests += 1
            page = self._parsed(parse.parse_job_list, await self._get("/jobs", query, job=None))
            self.owners.update(page.owners)
            before = len(jobs)
            jobs.update((j.name, j) for j in page.jobs if j.name not in jobs)
            if len(jobs) >= page.total:
                break
            if len(jobs) == before:  # past the end, or offset means something else
                if by_page or offset == 0:
                    break
                by_page = True
                log.info("Job list offset looks like a page number, switching paging mode total=%d", page.total)
                offset = useful_pages
                continue
            useful_pages += 1
            offset = useful_pages if by_page else offset + len(page.jobs)
        if len(jobs) < page.total:
            log.warning("Job list incomplete listed=%d total=%d", len(jobs), page.total)
        return JobListing(jobs, requests, page.total)

    async def resolve_jobs(self, jobs: JobsConfig) -> tuple[str, ...]:
        """The jobs to watch: explicit names plus, with ``discover``, listed names passing the globs."""
        listed = await self.list_jobs() if jobs.discover else ()
        return select_jobs(jobs.names, listed, jobs.include, jobs.exclude)

    # --- plumbing ---------------------------------------------------------------------

    async def _fetch_one(self, job: str) -> JobSnapshot | FetchError:
        try:
            return await self.fetch_status(job)
        except SourceError as exc:
            kind = cast(FetchErrorKind, exc.kind) if exc.kind in _FETCH_ERROR_KINDS else "error"
            error = FetchError(job=job, kind=kind, message=str(exc), status_code=exc.status_code,
                               error_code=exc.error_code)
            event(log, logging.WARNING, "could not fetch job status", job=job, kind=error.kind,
                  error_code=error.error_code, error=error.message)
        except Exception as exc:  # noqa: BLE001 - one job's bug must not sink the whole cycle
            self.stats.errors["error"] += 1
            error = FetchError(job=job, kind="error", message=f"{job}: unexpected {type(exc).__name__}: {exc}")
            event(log, logging.ERROR, "could not fetch job status", job=job, kind="error", error=error.message,
                  exc_info=True)
        return error

    def _parsed(self, parser: Callable[[bytes], T], answer: _Success) -> T:
        """Run a parser on a 2xx answer, counting its errors like transport errors and naming the answer in them."""
        try:
            return parser(answer.body)
        except SourceError as exc:
            self.stats.errors[exc.kind] += 1
            if answer.request_id and answer.request_id in str(exc):
                raise self._scrubbed(exc) from None
            suffix = parse.answer_suffix(answer.status_code, answer.request_id)
            raise self._scrubbed(exc, f"{exc} ({suffix})") from None

    def _scrubbed(self, error: SourceError, message: str | None = None) -> SourceError:
        """``error`` with ``message`` (default: its own) rid of the credentials, in case the server echoed one."""
        text = message if message is not None else str(error)
        clean = scrub(text, self._secret_values())
        if clean == str(error):
            return error
        return SourceError(clean, kind=error.kind, status_code=error.status_code, error_code=error.error_code,
                           retry_after=error.retry_after)

    def _secret_values(self) -> list[str]:
        return [s.reveal() for s in (self._token, *(self._aksk or ())) if s is not None]

    async def _get(self, path: str, query: Iterable[tuple[str, object]], *, job: str | None) -> _Success:
        """GET ``path`` (below /v1/{project_id}) with retries; the 2xx answer."""
        qs = signer.canonical_query(query)  # sent exactly as signed
        url = f"{self._base}{path}" + (f"?{qs}" if qs else "")
        attempt = 0
        reauthenticated = False  # auth = "iam": one fresh token per request after a 401
        while True:
            try:
                return await self._attempt(url, job)
            except _RefusedToken as refused:
                if reauthenticated or self.iam is None:
                    self.stats.errors[refused.error.kind] += 1
                    if self.iam is not None:
                        self.iam.rejected(refused.error)  # every other request fails from memory for a while
                    raise refused.error from None
                self.iam.invalidate(refused.token)
                reauthenticated = True
            except SourceError as error:
                delay = retry_delay(attempt, error, self._config, self._rng)
                if error.kind == "throttled":  # the user's budget is spent: every request of this source slows
                    self.stats.throttled += 1
                    self._limiter.throttled(delay)
                if error.kind not in RETRYABLE_KINDS or attempt >= self._config.retries:
                    self.stats.errors[error.kind] += 1
                    raise
                attempt += 1
                self.stats.retries += 1
                log.info("Retrying request job=%s kind=%s attempt=%d delay=%.2fs%s", job or "(the job list)",
                         error.kind, attempt, delay,
                         "" if self._config.name == DEFAULT_SOURCE else f" source={self._config.name}")
                await self._sleep(delay)

    async def _attempt(self, url: str, job: str | None) -> _Success:
        prefix = f"{job}: " if job else ""
        iam_token = await _iam_token(self.iam, prefix) if self.iam is not None else None
        async with self._semaphore:
            await self._limiter.wait()
            headers = self._request_headers("GET", url)  # signed per attempt: a retry gets a fresh date
            if iam_token is not None:
                headers["X-Auth-Token"] = iam_token.reveal()
            self.stats.requests += 1
            try:
                response = await self._http.get(url, headers=headers)
            except httpx.TimeoutException as exc:
                raise SourceError(f"{prefix}no answer within {self._config.timeout:g}s ({type(exc).__name__})",
                                  kind="timeout") from exc
            except httpx.TransportError as exc:
                raise SourceError(f"{prefix}cannot reach the API: {type(exc).__name__}: {exc}",
                                  kind="network") from exc
            except httpx.RequestError as exc:
                raise SourceError(f"{prefix}request failed: {type(exc).__name__}: {exc}", kind="error") from exc
            finally:
                self.stats.answered()  # however it ended, the cycle moved on
        if response.is_success:
            self._limiter.answered()
            return _Success(response.status_code, response.content, parse.request_id_of(response.headers))
        error = self._scrubbed(parse.parse_error(response.status_code, response.content, response.headers, job=job,
                                                 now=self._clock()))
        if iam_token is not None and response.status_code == 401:
            raise _RefusedToken(error, iam_token)
        raise error

    def _request_headers(self, method: str, url: str) -> dict[str, str]:
        headers = dict(self._headers)
        if self._token is not None:
            headers["X-Auth-Token"] = self._token.reveal()
        elif self._aksk is not None:
            ak, sk = self._aksk
            headers.update(signer.sign(method, url, headers, b"", ak.reveal(), sk.reveal(), self._clock()))
        return headers


@dataclass(frozen=True, slots=True)
class JobListing:
    """The list API's answer over all pages: each job's job-level status, and what the listing cost."""

    jobs: Mapping[str, Listed]
    requests: int
    total: int


@dataclass(frozen=True, slots=True)
class _Success:
    """A 2xx answer: its body, and what names it in an error about that body."""

    status_code: int
    body: bytes
    request_id: str | None


async def _iam_token(iam: TokenSource, prefix: str) -> Secret:
    """The shared IAM token (fetched under the token source's lock); its errors get the job's prefix."""
    try:
        return await iam.token()
    except SourceError as exc:
        raise SourceError(f"{prefix}{exc}", kind=exc.kind, status_code=exc.status_code,
                          error_code=exc.error_code, retry_after=exc.retry_after) from None


class _RefusedToken(Exception):
    """The API answered 401 to an IAM token: ``DgcClient._get`` fetches a new one once."""

    def __init__(self, error: SourceError, token: Secret) -> None:
        super().__init__(str(error))
        self.error = error
        self.token = token


def _secret(env: str, file: str | None, environ: Mapping[str, str] | None) -> Secret:
    secret = read_secret(env=env, file=file, what="source", environ=environ)
    if secret is None:  # read_secret raises for required secrets; this keeps the type honest
        raise ConfigError(f"missing secret: set environment variable {env}", where="source")
    return secret


def _user_identity(config: SourceConfig, token: Secret | None, aksk: tuple[Secret, Secret] | None,
                   iam: tuple[Secret, Secret] | None) -> str:
    """Who the API counts this client's requests against (its 30 requests/s are per user): a digest.

    Same AK (whatever env var or file it came from), same token, or same IAM user of one
    account is one user; a digest, so the identity can be compared and never shows a secret.
    """
    parts: tuple[str, ...]
    if aksk is not None:
        parts = ("aksk", aksk[0].reveal())
    elif token is not None:
        parts = ("token", token.reveal())
    elif iam is not None:
        parts = ("iam", config.iam_endpoint, config.iam_domain, iam[0].reveal())
    else:
        parts = ("none", config.endpoint, config.project_id)
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _base_headers(config: SourceConfig) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if config.workspace:
        headers["workspace"] = config.workspace
    return headers
