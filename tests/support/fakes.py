"""The test doubles every test file shares: one fake clock, one jitter source, one notification factory."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from notifier.core.models import Notification

START = datetime(2026, 11, 25, 12, 0, 0, tzinfo=timezone.utc)


class FakeClock:
    """An injectable clock that only moves when a test says so.

    Calling it gives the wall-clock time (an aware UTC datetime, ``clock.now``); ``monotonic()``
    gives seconds on a monotonic scale that moves with it. ``advance(seconds)`` moves both and
    returns the new now; so do ``sleep`` (for code taking a ``time.sleep``) and ``async_sleep``
    (for code taking an ``asyncio.sleep``), which also record each wait in ``sleeps``.
    ``on_advance`` is called with the seconds of every move: a test links another clock to this
    one with it (the simulator's scenario clock moves together with notifier's).
    """

    def __init__(self, start: datetime = START, *, monotonic: float = 1000.0,
                 on_advance: Callable[[float], object] | None = None) -> None:
        if start.utcoffset() != timedelta(0):
            raise ValueError(f"a fake clock starts at an aware UTC time, got {start!r}")
        self._now = start
        self._monotonic = float(monotonic)
        self._on_advance = on_advance
        self.sleeps: list[float] = []

    def __call__(self) -> datetime:
        return self._now

    @property
    def now(self) -> datetime:
        return self._now

    @now.setter
    def now(self, value: datetime) -> None:
        """Jump to ``value``; the monotonic time (and a linked clock) move by the same amount."""
        self._move(value, (value - self._now).total_seconds())

    def advance(self, seconds: float) -> datetime:
        return self._move(self._now + timedelta(seconds=seconds), seconds)

    def monotonic(self) -> float:
        return self._monotonic

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)
        await asyncio.sleep(0)  # still a suspension point, as a real sleep is

    def _move(self, to: datetime, seconds: float) -> datetime:
        self._now = to
        self._monotonic += seconds
        if self._on_advance is not None:
            self._on_advance(seconds)
        return self._now


class MaxRng(random.Random):
    """A jitter source that always draws the top of the range, so delays are exact."""

    def uniform(self, a: float, b: float) -> float:
        return b

    def random(self) -> float:
        return 1.0


def notification(payload: Mapping[str, Any] | str, id: int = 1, *, channel: str = "team-slack",  # noqa: A002
                 group: str | None = None, created_at: datetime = START) -> Notification:
    """An outbox row as a channel receives it; a str payload is ``{"text": payload}``.

    ``group`` defaults to the payload's own ``group`` (a webhook body has one), else ``job_sms``.
    Test files bind their channel, id and creation time once with ``functools.partial``.
    """
    body: Mapping[str, Any] = {"text": payload} if isinstance(payload, str) else payload
    return Notification(id=id, channel=channel, group=group if group is not None else str(body.get("group", "job_sms")),
                        payload=body, created_at=created_at)
