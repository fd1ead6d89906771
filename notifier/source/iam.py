"""``auth = "iam"``: an IAM token from the password method, cached and refreshed before it expires.

``TokenSource.token()`` POSTs ``{iam_endpoint}/v3/auth/tokens`` with Huawei's documented
password-method body (user name, password, account/domain name; scoped to the project by
name when ``iam_project`` is set, else by ``project_id``), reads the token from the
``X-Subject-Token`` header and ``token.expires_at`` (and ``issued_at``) from the body.

- One fetch at a time (an ``asyncio.Lock``); requests that waited for a fetch take its
  outcome, token or error, instead of fetching again.
- Refreshed ahead of expiry: ``refresh_margin`` before it ends. The token's life is measured
  on IAM's own timestamps and placed on our clock at the fetch, so clock skew does not matter.
- ``invalidate(token)`` (the DGC API answered 401) drops the cached token if it is still the
  one that was refused; the client then asks once more.
- A failed fetch is remembered for a moment (``AUTH_FAILURE_HOLD`` for refused credentials),
  so 10,000 jobs with a wrong password cost one IAM request, not 10,000.

Errors are ``SourceError`` naming the redacted IAM endpoint; neither the password nor a
token ever enters a message or a log line (``Secret`` keeps them out of reprs, and a
filter on httpcore's loggers blanks the ``X-Subject-Token`` its DEBUG trace would print).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from notifier.config import SourceConfig
from notifier.errors import SourceError
from notifier.httputil import (
    USER_AGENT,
    get_header,
    is_retryable_status,
    parse_retry_after,
    redact_url,
    scrub,
    source_excerpt,
)
from notifier.secrets import Secret
from notifier.source import parse

log = logging.getLogger(__name__)

TOKEN_PATH = "/v3/auth/tokens"
REFRESH_FRACTION = 0.1  # refresh when 10 % of the token's life is left ...
REFRESH_BEFORE = timedelta(hours=1)  # ... or 1 h, whichever comes sooner ...
REFRESH_MAX_FRACTION = 0.5  # ... but never in the first half of its life (short-lived tokens)
AUTH_FAILURE_HOLD = 30.0  # seconds a refused login is answered from memory
FAILURE_HOLD = 1.0  # seconds any other failed fetch is (collapses a burst of retries)


def refresh_margin(life: timedelta) -> timedelta:
    """How long before expiry to refresh: max(10 % of life, 1 h), capped at half the life.

    A 24 h token is refreshed 2.4 h before it ends, a 2 h one 1 h before, a 10 min one 5 min before.
    """
    return min(max(life * REFRESH_FRACTION, REFRESH_BEFORE), life * REFRESH_MAX_FRACTION)


@dataclass(frozen=True, slots=True)
class Token:
    value: Secret
    expires_at: datetime  # as IAM says
    refresh_at: datetime  # on our clock


@dataclass(frozen=True, slots=True)
class _Failure:
    message: str
    kind: str
    status_code: int | None
    error_code: str | None
    until: datetime

    def error(self) -> SourceError:
        return SourceError(self.message, kind=self.kind, status_code=self.status_code, error_code=self.error_code)


class TokenSource:
    """IAM tokens for one user and project, shared by every request of a ``DgcClient``."""

    def __init__(self, config: SourceConfig, http: httpx.AsyncClient, *, user: Secret, password: Secret,
                 clock: Callable[[], datetime]) -> None:
        self._url = f"{config.iam_endpoint.rstrip('/')}{TOKEN_PATH}"
        self.endpoint = redact_url(config.iam_endpoint)  # what messages name
        self._http = http
        self._user = user
        self._password = password
        self._domain = config.iam_domain
        self._scope: dict[str, Any] = ({"project": {"name": config.iam_project}} if config.iam_project
                                       else {"project": {"id": config.project_id}})
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: Token | None = None
        self._failure: _Failure | None = None
        self._generation = 0  # fetches finished; a waiter that sees it move takes that fetch's outcome
        self.fetches = 0  # IAM requests sent (metrics, tests)

    async def token(self) -> Secret:
        """A token valid for a while yet: the cached one, or a fresh one (one fetch at a time)."""
        seen = self._generation
        async with self._lock:
            now = self._clock()
            failure = self._failure
            if failure is not None and (self._generation != seen or now < failure.until):
                current = self._unexpired(now)
                if current is not None:  # a refresh failed: the old token serves until it expires
                    return current.value
                raise failure.error()
            if self._token is not None and now < self._token.refresh_at:
                return self._token.value
            try:
                self._token = await self._fetch(now)
                self._failure = None
            except SourceError as exc:
                hold = AUTH_FAILURE_HOLD if exc.kind == "auth" else FAILURE_HOLD
                self._failure = _Failure(str(exc), exc.kind, exc.status_code, exc.error_code,
                                         now + timedelta(seconds=hold))
                current = self._unexpired(now)
                if current is not None:
                    log.warning("IAM token refresh failed, using the current token until it expires endpoint=%s",
                                self.endpoint)
                    return current.value
                self._token = None
                raise
            finally:
                self._generation += 1
            return self._token.value

    def _unexpired(self, now: datetime) -> Token | None:
        return self._token if self._token is not None and now < self._token.expires_at else None

    def invalidate(self, refused: Secret) -> None:
        """The API refused ``refused``: forget it, unless a newer token already replaced it."""
        if self._token is not None and self._token.value is refused:
            log.info("IAM token refused by the API, fetching a new one endpoint=%s", self.endpoint)
            self._token = None

    def rejected(self, error: SourceError) -> None:
        """A freshly fetched token was refused too: hold off fetching for a while (no login per job)."""
        self._token = None
        self._failure = _Failure(str(error), "auth", error.status_code, error.error_code,
                                 self._clock() + timedelta(seconds=AUTH_FAILURE_HOLD))

    # --- the request ------------------------------------------------------------------

    def _body(self) -> bytes:
        user = {"name": self._user.reveal(), "password": self._password.reveal(), "domain": {"name": self._domain}}
        doc = {"auth": {"identity": {"methods": ["password"], "password": {"user": user}}, "scope": self._scope}}
        return json.dumps(doc).encode()

    async def _fetch(self, now: datetime) -> Token:
        self.fetches += 1
        where = f"IAM {self.endpoint}"
        headers = {"Content-Type": "application/json;charset=utf8", "User-Agent": USER_AGENT}
        try:
            response = await self._http.post(self._url, content=self._body(), headers=headers)
        except httpx.TimeoutException as exc:
            raise SourceError(f"{where}: no answer to the token request ({type(exc).__name__})",
                              kind="timeout") from None
        except httpx.TransportError as exc:
            raise SourceError(f"{where}: cannot reach IAM: {type(exc).__name__}", kind="network") from None
        except httpx.RequestError as exc:
            raise SourceError(f"{where}: token request failed: {type(exc).__name__}", kind="error") from None
        if not response.is_success:
            raise self._refused(response, now)
        return self._token_from(response, now)

    def _refused(self, response: httpx.Response, now: datetime) -> SourceError:
        status = response.status_code
        error = parse.parse_error(status, response.content, response.headers, now=now)
        if is_retryable_status(status):
            kind = "throttled" if status == 429 else "server"
            retry_after = parse_retry_after(get_header(response.headers, "Retry-After"), now)
        else:
            kind, retry_after = ("auth" if status in (400, 401, 403) else "error"), None
        detail = scrub(str(error), self._secrets())
        return SourceError(f"IAM {self.endpoint} refused the token request: {detail}", kind=kind,
                           status_code=status, error_code=error.error_code, retry_after=retry_after)

    def _token_from(self, response: httpx.Response, now: datetime) -> Token:
        where = f"IAM {self.endpoint}"
        value = get_header(response.headers, "X-Subject-Token")
        if not value:
            raise SourceError(f"{where}: token response without an X-Subject-Token header "
                              f"(HTTP {response.status_code})", kind="bad_response")
        secret = Secret(value)
        try:
            doc = json.loads(response.content)
            token = doc["token"]
            expires_at = _timestamp(token["expires_at"])
            issued_at = _timestamp(token["issued_at"]) if token.get("issued_at") else now
        except (ValueError, TypeError, KeyError, UnicodeDecodeError):
            body = scrub(source_excerpt(response.content), [value, *self._secrets()])
            raise SourceError(f"{where}: token response without a readable token.expires_at: {body!r}",
                              kind="bad_response") from None
        life = expires_at - issued_at
        if life <= timedelta(0):
            raise SourceError(f"{where}: token expires_at {expires_at.isoformat()} is not after its issued_at",
                              kind="bad_response")
        refresh_at = now + life - refresh_margin(life)
        log.info("IAM token obtained endpoint=%s expires_at=%s refresh_at=%s", self.endpoint,
                 expires_at.isoformat(), refresh_at.isoformat())
        return Token(secret, expires_at, refresh_at)

    def _secrets(self) -> list[str]:
        return [self._password.reveal(), *(t.value.reveal() for t in (self._token,) if t is not None)]


_SUBJECT_TOKEN = re.compile(r"(\(b'x-subject-token', b')[^']*(')", re.IGNORECASE)


class RedactSubjectToken(logging.Filter):
    """httpcore's DEBUG trace prints response headers, ``X-Subject-Token`` (a live token) among them."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg
        if isinstance(message, str) and "ubject-" in message:
            record.msg = _SUBJECT_TOKEN.sub(r"\1***\2", message)
        return True


def install_log_redaction() -> None:
    """Attach ``RedactSubjectToken`` to httpcore's HTTP/1.1 and HTTP/2 loggers once (idempotent)."""
    for name in ("httpcore.http11", "httpcore.http2"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSubjectToken) for f in logger.filters):
            logger.addFilter(RedactSubjectToken())


install_log_redaction()


def _timestamp(value: Any) -> datetime:
    """IAM's ``2020-01-04T09:05:22.701000Z`` (any fraction, ``Z`` or an offset) as an aware UTC datetime."""
    if not isinstance(value, str):
        raise TypeError(f"expected a timestamp string, got {type(value).__name__}")
    when = datetime.fromisoformat(value.strip())
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)
