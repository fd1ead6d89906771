"""One verdict for every HTTP-based channel: retry, give up, and what to say about it.

Like Alertmanager's ``Retrier.Check``, the channel does not guess per integration:
network errors, timeouts, 408, 429 and 5xx are worth retrying (429/503 with the
server's ``Retry-After``); every other non-2xx answer is permanent, because sending
the same request again gets the same answer.

Webhook URLs often carry their secret in the path or query (Slack's
``/services/T/B/XXX``, ``?token=``), so every URL is redacted before it reaches an error
message or a log line (Alertmanager's ``notify.RedactURL``). httpx itself logs each
request's full URL at INFO; importing this module installs a filter on the ``httpx``
logger that redacts those too.
"""

from __future__ import annotations

import email.utils
import logging
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from urllib.parse import urlsplit

import httpx

from notifier.clock import utcnow
from notifier.core.models import Clock
from notifier.errors import ChannelError

log = logging.getLogger(__name__)

REDACTED = "***"
EXCERPT_CHARS = 200
MIN_SECRET_CHARS = 4
RETRYABLE_STATUSES = frozenset({408, 425, 429})
"""4xx answers that mean "not now" rather than "never"; every 5xx is retryable too."""


def redact_url(url: str | httpx.URL) -> str:
    """Keep scheme, host and port; replace credentials, path and query by ``***``.

    ``https://user:pw@hooks.example.com/services/T/B/XXX?token=1`` becomes
    ``https://hooks.example.com/***?***``: enough to tell which endpoint failed,
    nothing a reader of the logs could replay.
    """
    try:
        parts = urlsplit(str(url))
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return REDACTED
    if not parts.scheme or not host:
        return REDACTED
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    path = parts.path if parts.path in ("", "/") else f"/{REDACTED}"
    query = f"?{REDACTED}" if parts.query else ""
    return f"{parts.scheme}://{netloc}{path}{query}"


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each secret (and of each secret URL's path/query) by ``***``."""
    for secret in sorted(_secret_parts(secrets), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def _secret_parts(secrets: Iterable[str]) -> set[str]:
    parts: set[str] = set()
    for secret in secrets:
        if len(secret) < MIN_SECRET_CHARS:  # scrubbing "a" would mangle every message
            continue
        parts.add(secret)
        try:
            split = urlsplit(secret)
        except ValueError:
            continue
        if split.scheme and split.netloc:
            for piece in (split.path, split.query, split.password or "", split.username or ""):
                if len(piece) >= MIN_SECRET_CHARS:
                    parts.add(piece)
    return parts


def excerpt(body: bytes | str, limit: int = EXCERPT_CHARS) -> str:
    """The start of a response body on one line: enough to see an error code."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def is_retryable_status(status: int) -> bool:
    """408, 425, 429 and every 5xx: the server may answer differently later."""
    return status in RETRYABLE_STATUSES or 500 <= status <= 599


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from ``now``: delta-seconds or an HTTP-date; None if absent or garbled."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds and seconds != float("inf") else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now if now is not None else utcnow()
    return max(0.0, (when - now).total_seconds())


def status_error(status: int, body: bytes | str, headers: Mapping[str, str], *, url: str | httpx.URL,
                 what: str, now: datetime | None = None, secrets: Iterable[str] = ()) -> ChannelError | None:
    """None for a 2xx answer, else the ChannelError that says whether to retry.

    The message holds the status, a short body excerpt and the redacted URL; the
    excerpt is scrubbed of ``secrets`` in case the server echoes the request back.
    """
    if 200 <= status <= 299:
        return None
    retryable = is_retryable_status(status)
    retry_after = parse_retry_after(_header(headers, "retry-after"), now) if retryable else None
    detail = excerpt(body)
    message = f"{what} answered HTTP {status} url={redact_url(url)}"
    if detail:
        message += f" body={scrub(detail, [str(url), *secrets])!r}"
    if retry_after is not None:
        message += f" retry_after={retry_after:g}s"
    return ChannelError(message, retryable=retryable, retry_after=retry_after)


def check_response(response: httpx.Response, *, what: str, clock: Clock = utcnow,
                   secrets: Iterable[str] = ()) -> None:
    """Return on 2xx, else raise the ChannelError that ``status_error`` builds."""
    error = status_error(response.status_code, response.content, response.headers, url=response.request.url,
                         what=what, now=clock(), secrets=secrets)
    if error is not None:
        raise error


def transport_error(exc: httpx.HTTPError, *, url: str | httpx.URL, what: str,
                    secrets: Iterable[str] = ()) -> ChannelError:
    """Classify an exception httpx raised before any answer arrived.

    Timeouts, refused or reset connections and a server that hung up mid-answer are
    retryable; a URL or protocol httpx cannot use at all is not. The text of httpx's
    error is scrubbed of the URL and ``secrets`` before it is quoted.
    """
    retryable = isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError,
                                 httpx.ProxyError))
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    reason = scrub(str(exc) or type(exc).__name__, [str(url), *secrets])
    return ChannelError(f"{what} request {kind} url={redact_url(url)}: {type(exc).__name__}: {reason}",
                        retryable=retryable)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    if isinstance(headers, httpx.Headers):
        return headers.get(name)
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


class RedactHttpxUrls(logging.Filter):
    """Redact ``httpx.URL`` arguments of the httpx logger's records ("HTTP Request: POST <url> ...")."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, httpx.URL) for a in args):
            record.args = tuple(redact_url(a) if isinstance(a, httpx.URL) else a for a in args)
        return True


def install_log_redaction() -> None:
    """Attach ``RedactHttpxUrls`` to the httpx logger once (idempotent)."""
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, RedactHttpxUrls) for f in logger.filters):
        logger.addFilter(RedactHttpxUrls())


install_log_redaction()
