"""The HTTP helpers every HTTP client shares: Retry-After, case-insensitive headers, body excerpts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from notifier.httputil import excerpt, get_header, parse_retry_after, source_excerpt

NOW = datetime(2024, 5, 17, 8, 30, 0, tzinfo=timezone.utc)


def http_date(when: datetime) -> str:
    return format_datetime(when, usegmt=True)


@pytest.mark.parametrize(("value", "expected"), [
    ("120", 120.0),
    (" 1.5 ", 1.5),
    ("0", 0.0),
    ("-5", 0.0),
    (http_date(NOW + timedelta(seconds=30)), 30.0),
    ("Fri, 17 May 2024 08:31:00 -0000", 60.0),
    (http_date(NOW - timedelta(hours=1)), 0.0),
    (None, None),
    ("", None),
    ("   ", None),
    ("soon", None),
    ("12 seconds", None),
    ("nan", None),
    ("inf", None),
    ("-inf", None),
], ids=["delta-seconds", "fraction-padded", "zero", "negative-clamped", "http-date", "http-date-no-zone-is-utc",
        "past-date", "absent", "empty", "blank", "garbled-word", "garbled-unit", "nan", "inf", "minus-inf"])
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """Delta-seconds or an HTTP-date relative to the injected now; negatives and past dates are 0, garbage None."""
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("7", 7.0),
    (http_date(NOW), None),
], ids=["delta-seconds-need-no-clock", "http-date-ignored"])
def test_parse_retry_after_without_now(value: str, expected: float | None) -> None:
    """Without an injected now an HTTP-date is ignored, never measured against a hidden clock."""
    assert parse_retry_after(value) == expected


@pytest.mark.parametrize(("headers", "expected"), [
    ({"Retry-After": "3"}, "3"),
    ({"retry-after": "3"}, "3"),
    ({"RETRY-AFTER": "3"}, "3"),
    (httpx.Headers({"rEtRy-AfTeR": "3"}), "3"),
    ({"retry-after": ["3"]}, "3"),
    ({"Retry-After": ("3", "9")}, "3"),
    ({"retry-after": []}, None),
    ({"Content-Type": "text/plain"}, None),
    ({}, None),
    (None, None),
], ids=["title-case", "lower-case", "upper-case", "httpx-headers", "slack-list-form", "tuple-takes-first",
        "empty-list", "other-header", "no-headers", "none"])
def test_get_header(headers: Any, expected: str | None) -> None:
    """A header is found whatever the case of its key, also as slack_sdk's one-item list."""
    assert get_header(headers, "Retry-After") == expected


@pytest.mark.parametrize(("body", "limit", "expected"), [
    (b"line1\n\t  line2\r\n", 200, "line1 line2"),
    ("<h1>\x07bell\x00</h1>", 200, "<h1> bell </h1>"),
    (b"caf\xc3\xa9 \xff", 200, "café \ufffd"),
    ("x" * 500, 200, "x" * 199 + "…"),
    ("abcdefghij", 10, "abcdefghij"),
    ("abcdefghijk", 10, "abcdefghi…"),
    (b" " * 5000 + b"late", 10, ""),  # only the first 40 bytes are read: blanks, nothing to cut
    (b"", 200, ""),
], ids=["whitespace-collapsed", "control-chars-blanked", "bad-utf8-replaced", "truncated", "exactly-limit",
        "one-over-limit", "only-head-is-read", "empty"])
def test_excerpt(body: bytes | str, limit: int, expected: str) -> None:
    """A body becomes one printable line of at most ``limit`` characters, ending in … when cut."""
    assert excerpt(body, limit) == expected
    assert len(excerpt(body, limit)) <= limit


@pytest.mark.parametrize(("body", "expected"), [
    (b"a" * 500, "a" * 117 + "..."),
    (b"short\nbody", "short body"),
], ids=["cut-at-120-with-dots", "short-kept"])
def test_source_excerpt(body: bytes, expected: str) -> None:
    """The DGC source's excerpt is the same line, 120 characters at most, cut with ASCII dots."""
    assert source_excerpt(body) == expected
