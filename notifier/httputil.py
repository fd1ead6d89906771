"""The HTTP helpers shared by the webhook and Slack channels and the DGC source.

The one place for what every HTTP client here reads off an answer:

- ``parse_retry_after``: the ``Retry-After`` header as seconds (delta-seconds or an
  HTTP-date relative to an injected ``now``), with one rule for odd values;
- ``get_header``: a header in any case of its name, from ``httpx.Headers``, a plain
  mapping or slack_sdk's ``{"Retry-After": ["30"]}`` form;
- ``excerpt``: the start of a response body on one printable line, for messages
  (``source_excerpt`` is the DGC source's shorter, ``...``-cut variant of it).

The webhook channel also takes its verdict here (``check_response``/``transport_error``).
Like Alertmanager's ``Retrier.Check``, it does not guess per integration: network
errors, timeouts, 408, 429 and 5xx are worth retrying (429/503 with the server's
``Retry-After``); every other non-2xx answer is permanent, because sending the same
request again gets the same answer. Slack and the DGC source classify their own
answers (Slack's error codes, the API's error codes) but read headers, ``Retry-After``
and body excerpts through this module.

This module imports neither ``notifier.channels`` nor ``notifier.source``: they import it.

Webhook URLs often carry their secret in the path or query (Slack's
``/services/T/B/XXX``, ``?token=``), so every URL is redacted before it reaches an error
message or a log line (Alertmanager's ``notify.RedactURL``). httpx itself logs each
request's full URL at INFO; importing this module installs a filter on the ``httpx``
logger that redacts those too.
"""

from __future__ import annotations

import email.utils
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from urllib.parse import urlsplit

import httpx

from notifier import __version__
from notifier.clock import utcnow
from notifier.core.models import Clock
from notifier.errors import ChannelError

log = logging.getLogger(__name__)

USER_AGENT = f"notifier/{__version__}"
"""Sent with every request to the DGC and IAM APIs, so their operators can tell who calls."""

REDACTED = "***"
EXCERPT_CHARS = 200
SOURCE_EXCERPT_CHARS = 120
"""Length of the body excerpts the DGC source quotes in its SourceError messages."""
MIN_SECRET_CHARS = 4
RETRYABLE_STATUSES = frozenset({408, 425, 429})
"""4xx answers that mean "not now" rather than "never"; every 5xx is retryable too."""

HeaderMapping = Mapping[str, str] | Mapping[str, Sequence[str]]
"""Response headers as httpx (``httpx.Headers``), a plain dict or slack_sdk (``{"Retry-After": ["30"]}``) give them."""


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


def excerpt(body: bytes | str, limit: int = EXCERPT_CHARS, *, ellipsis: str = "…") -> str:
    """The start of a body on one printable line of at most ``limit`` characters: enough to see an error code.

    Only the first ``4 * limit`` bytes (or characters) are read: a 5 MB error page costs nothing.
    They are decoded as UTF-8 with bad bytes replaced; control characters become spaces and every
    run of whitespace one space. A text longer than ``limit`` is cut and ends with ``ellipsis``.
    """
    head = body[: limit * 4]
    text = head.decode("utf-8", errors="replace") if isinstance(head, bytes) else head
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(ellipsis))] + ellipsis


def source_excerpt(body: bytes | str, limit: int = SOURCE_EXCERPT_CHARS) -> str:
    """``excerpt`` as the DGC source quotes bodies: 120 characters, cut with ASCII ``...``."""
    return excerpt(body, limit, ellipsis="...")


def is_retryable_status(status: int) -> bool:
    """408, 425, 429 and every 5xx: the server may answer differently later."""
    return status in RETRYABLE_STATUSES or 500 <= status <= 599


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds to wait (never negative), or None when it says nothing usable.

    - delta-seconds (``"120"``, ``" 1.5 "``: a number as ``float()`` reads it): that many
      seconds; a negative number is clamped to 0 (retry now);
    - an HTTP-date (``"Fri, 01 Mar 2019 03:09:25 GMT"``): seconds from the injected ``now``
      to it, 0 if it is already past (a date without a zone counts as UTC); without ``now``
      the date is ignored (None) rather than measured against a hidden clock;
    - absent, empty, garbled, NaN or infinite (either sign): None, so the caller's own
      backoff applies.
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    if now is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max((when - now).total_seconds(), 0.0)


def get_header(headers: HeaderMapping | None, name: str) -> str | None:
    """The value of header ``name`` whatever the case of its key; None if absent.

    ``httpx.Headers`` is asked directly (repeated headers come joined by ", "); a plain
    mapping gives the value of its first key equal to ``name`` ignoring case, and a list
    value (slack_sdk's form) its first item. A value that is not text counts as absent.
    """
    if headers is None:
        return None
    if isinstance(headers, httpx.Headers):
        return headers.get(name)
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            item = (value[0] if value else None) if isinstance(value, list | tuple) else value
            return item if isinstance(item, str) else None
    return None


def status_error(status: int, body: bytes | str, headers: HeaderMapping, *, url: str | httpx.URL,
                 what: str, now: datetime | None = None, secrets: Iterable[str] = ()) -> ChannelError | None:
    """None for a 2xx answer, else the ChannelError that says whether to retry.

    The message holds the status, a short body excerpt and the redacted URL; the
    excerpt is scrubbed of ``secrets`` in case the server echoes the request back.
    """
    if 200 <= status <= 299:
        return None
    retryable = is_retryable_status(status)
    retry_after = parse_retry_after(get_header(headers, "retry-after"), now) if retryable else None
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
