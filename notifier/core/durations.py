"""Durations as operators write them: "90s", "10m", "1h30m", "1d", "0s"."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """Parse a Go/Prometheus-style duration; raise ValueError with the offending text."""
    if not isinstance(text, str):
        raise ValueError(f"expected a duration string like \"90s\" or \"1h30m\", got {text!r}")
    s = text.strip().lower()
    if s in ("0", ""):
        if s == "":
            raise ValueError("empty duration; write e.g. \"0s\", \"90s\", \"10m\", \"1h30m\"")
        return timedelta(0)
    pos = 0
    total = 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise ValueError(f"invalid duration {text!r}; write e.g. \"90s\", \"10m\", \"1h30m\"")
    try:
        return timedelta(seconds=total)
    except OverflowError:
        raise ValueError(f"duration {text!r} is too long") from None


def format_duration(delta: timedelta | float) -> str:
    """Render a duration (a timedelta or seconds) compactly for humans ("1h 5m", "42s")."""
    seconds = int(delta.total_seconds() if isinstance(delta, timedelta) else delta)
    if seconds < 0:
        seconds = 0
    days, rem = divmod(seconds, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    parts = [f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (minutes, "m")) if v]
    if secs and not days and not hours:
        parts.append(f"{secs}s")
    return " ".join(parts) or "0s"


def plural(count: int, word: str) -> str:
    """``1 rule``, ``2 rules``: counts in messages read as English."""
    return f"{count} {word}{'' if count == 1 else 's'}"
