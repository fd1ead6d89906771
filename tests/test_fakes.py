"""The shared test doubles of tests/support/fakes.py behave as the tests relying on them assume."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from notifier.simulator import ManualClock
from tests.support.fakes import START, FakeClock, MaxRng, notification


def test_clock_moves_only_when_told_and_all_its_faces_agree() -> None:
    """advance() returns the new now; wall time, monotonic time and a linked clock move together."""
    linked = ManualClock()
    clock = FakeClock(on_advance=linked.advance)
    assert clock() == clock.now == START == datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
    base = clock.monotonic()
    assert clock.advance(90) == START + timedelta(seconds=90) == clock()
    clock.now = START + timedelta(minutes=5)
    assert (clock.monotonic() - base, linked()) == (300.0, 300.0)
    assert clock.sleeps == []


def test_sleeps_are_recorded_and_move_the_clock() -> None:
    """sleep and async_sleep wait no wall time: they record the wait and advance the clock by it."""
    clock = FakeClock(datetime(2024, 3, 1, tzinfo=timezone.utc))
    clock.sleep(1.5)
    asyncio.run(clock.async_sleep(0.5))
    assert clock.sleeps == [1.5, 0.5]
    assert clock() == datetime(2024, 3, 1, 0, 0, 2, tzinfo=timezone.utc)


def test_clock_refuses_a_naive_start() -> None:
    """Production code compares aware UTC datetimes; a naive fake clock would hide bugs."""
    with pytest.raises(ValueError, match="aware UTC"):
        FakeClock(datetime(2026, 11, 25, 12, 0))


def test_max_rng_draws_the_top_of_every_range() -> None:
    """Jittered delays come out at their maximum, so tests can state them exactly."""
    rng = MaxRng()
    assert (rng.uniform(0.5, 2.0), rng.random()) == (2.0, 1.0)


def test_notification_factory_defaults() -> None:
    """A str is the text payload; the group is the payload's own, else job_sms."""
    plain = notification("boom", 7, channel="stdout")
    assert (plain.id, plain.channel, plain.group, dict(plain.payload), plain.created_at) == (
        7, "stdout", "job_sms", {"text": "boom"}, START)
    assert notification({"group": "job_orders"}).group == "job_orders"
