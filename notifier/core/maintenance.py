"""Maintenance windows: recurring mutes on local wall-clock times (``[[maintenance]]``).

A window that starts on one of its ``days`` runs from ``start`` that day to ``end``; when
``end <= start`` it crosses midnight and ends at ``end`` the next day. Only the start day
must be listed: with ``days = {Friday}`` and 22:00-02:00, Saturday 01:00 is inside,
Friday 01:00 is not. ``start == end`` is rejected (a window of zero length).

Times are local wall-clock times of the window's zone, so a DST change moves the real
length of that night's window, not its clock times: Europe/Berlin 01:00-04:00 on the
night of the spring-forward change (2026-03-29, 02:00 -> 03:00) is 2 real hours long; on
the autumn change (2026-10-25, 03:00 -> 02:00) it is 3 real hours plus the repeated hour.
Precisely, one night's window begins at the first instant the clock reads ``start`` or
later and ends at the last instant the clock reads ``end`` (the second pass through a
repeated hour); a time the clock skips is reached when the clock jumps past it. So a
window is always one unbroken stretch of time and never flickers off and on inside a
repeated hour; a window lying wholly inside a skipped hour does not happen that night.

There is no cron syntax on purpose: days plus start and end times cover maintenance
schedules, and cron would add a dependency and a second language to read.

Pure: the zone arrives as a ``tzinfo`` (the config loader builds the ``ZoneInfo``), ``now``
is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from functools import lru_cache

from notifier.core.mutes import Matchers, Mute

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Day names as config files spell them; the index is ``date.weekday()`` (0 = Monday)."""

EVERY_DAY = frozenset(range(7))

_UTC = timezone.utc


@dataclass(frozen=True, slots=True)
class MaintenanceWindow(Mute):
    """A recurring mute (``[[maintenance]]`` in notifier.toml).

    ``days`` are the weekdays a window may *start* on (0 = Monday); ``start`` and ``end``
    are naive local times in ``tz``. See the module docstring for midnight and DST.

    ``Mute`` is named as a base (it is a protocol, structural anyway) so that mypy checks
    the fit here and types ``(*silences, *windows)`` as a tuple of mutes, not of objects.
    """

    name: str
    tz: tzinfo
    days: frozenset[int]
    start: time
    end: time
    matchers: Matchers
    comment: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a maintenance window needs a name")
        if not self.days or not self.days <= EVERY_DAY:
            raise ValueError(f"days must be a non-empty set of 0 (Monday) .. 6 (Sunday), got {sorted(self.days)}")
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("start and end are naive local times; the zone is tz")
        if self.start == self.end:
            raise ValueError(f"a window of zero length: start and end are both {self.start:%H:%M}")

    @property
    def label(self) -> str:
        return f"maintenance {self.name}"

    @property
    def crosses_midnight(self) -> bool:
        return self.end < self.start

    def active(self, now: datetime) -> bool:
        """Whether ``now`` (timezone-aware) lies inside one of the window's runs."""
        return any(s <= now < e for s, e in self._runs_around(now, before=2, after=1))

    def next_change(self, now: datetime) -> datetime | None:
        """When ``active`` next changes after ``now`` (UTC): the current run's end, else the next start."""
        runs = sorted(self._runs_around(now, before=2, after=8))
        merged: list[tuple[datetime, datetime]] = []
        for s, e in runs:  # DST can make runs touch or overlap: one stretch, one change
            if merged and s <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], e))
            else:
                merged.append((s, e))
        for s, e in merged:
            if now < s:
                return s
            if now < e:
                return e
        return None

    def describe(self) -> str:
        """``mon,tue,wed,thu,fri 22:00-02:00 Asia/Shanghai``: the schedule in the config's words."""
        days = "every day" if self.days == EVERY_DAY else ",".join(DAY_NAMES[d] for d in sorted(self.days))
        zone = getattr(self.tz, "key", None) or str(self.tz)
        return f"{days} {self.start:%H:%M}-{self.end:%H:%M} {zone}"

    def _runs_around(self, now: datetime, *, before: int, after: int) -> list[tuple[datetime, datetime]]:
        """The runs starting on local dates ``before`` days before ``now``'s to ``after`` days after it."""
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError(f"now must be timezone-aware, got {now!r}")
        today = now.astimezone(self.tz).date()
        runs = []
        for offset in range(-before, after + 1):
            day = today + timedelta(days=offset)
            if day.weekday() in self.days:
                run = _run(self.tz, self.start, self.end, day)
                if run is not None:
                    runs.append(run)
        return runs


@lru_cache(maxsize=4096)
def _run(tz: tzinfo, start: time, end: time, day: date) -> tuple[datetime, datetime] | None:
    """The UTC stretch of the run starting on local ``day``; None if DST leaves nothing of it."""
    begins = _first_reading(datetime.combine(day, start), tz)
    end_day = day + timedelta(days=1) if end <= start else day
    ends = _last_reading(datetime.combine(end_day, end), tz)
    return (begins, ends) if begins < ends else None


def _offsets(wall: datetime, tz: tzinfo) -> tuple[timedelta, timedelta]:
    """UTC offsets of a naive wall time with fold=0 and fold=1 (PEP 495): equal unless DST is changing."""
    first, second = wall.replace(tzinfo=tz, fold=0).utcoffset(), wall.replace(tzinfo=tz, fold=1).utcoffset()
    if first is None or second is None:
        raise ValueError(f"time zone {tz!r} gives no UTC offset")
    return first, second


def _first_reading(wall: datetime, tz: tzinfo) -> datetime:
    """The first instant the clock reads ``wall`` or later (the first pass through a repeated hour)."""
    before, after = _offsets(wall, tz)
    if before >= after:  # an ordinary time, or a repeated one (fold=0 is the earlier pass)
        return (wall - before).replace(tzinfo=_UTC)
    return _jump_past(wall, tz, before, after)


def _last_reading(wall: datetime, tz: tzinfo) -> datetime:
    """The last instant the clock reads ``wall`` (the second pass through a repeated hour)."""
    before, after = _offsets(wall, tz)
    if before >= after:
        return (wall - after).replace(tzinfo=_UTC)
    return _jump_past(wall, tz, before, after)


def _jump_past(wall: datetime, tz: tzinfo, before: timedelta, after: timedelta) -> datetime:
    """The instant the clock skips over ``wall`` (a time in a spring-forward gap).

    fold=0 gives the offset before the change (PEP 495): ``wall - after`` is before the
    jump, ``wall - before`` after it; time zone changes fall on whole seconds, so bisect
    over the seconds in between.
    """
    lo = (wall - after).replace(tzinfo=_UTC)
    low, high = 0, int((after - before).total_seconds())
    while high - low > 1:
        mid = (low + high) // 2
        if (lo + timedelta(seconds=mid)).astimezone(tz).replace(tzinfo=None) >= wall:
            high = mid
        else:
            low = mid
    return lo + timedelta(seconds=high)
