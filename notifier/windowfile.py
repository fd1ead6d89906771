"""``[[maintenance]]`` tables of notifier.toml -> ``MaintenanceWindow``s, strictly.

Every error names the file, the table (``maintenance 'nightly-etl'`` or ``maintenance[0]``)
and the key: an unknown time zone (with the closest IANA name), a time that is not HH:MM,
an unknown day, a window of zero length, a duplicate name.
"""

from __future__ import annotations

import difflib
import re
import zoneinfo
from collections.abc import Mapping
from datetime import time, tzinfo

from notifier.core.maintenance import DAY_NAMES, EVERY_DAY, MaintenanceWindow
from notifier.core.mutes import Matchers
from notifier.strict_toml import TableReader

MAINTENANCE_KEYS = ("name", "timezone", "days", "start", "end", "rule", "job", "node", "comment")
"""Every key a ``[[maintenance]]`` table may hold."""

_HH_MM = re.compile(r"(\d{1,2}):(\d{2})")
_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_NOT_SUGGESTED = frozenset({"localtime", "posixrules", "Factory"})  # in the zoneinfo directory, not places
_DAY_GROUPS = {"weekday": '["mon", "tue", "wed", "thu", "fri"]', "weekend": '["sat", "sun"]'}


def parse_maintenance(root: TableReader) -> tuple[MaintenanceWindow, ...]:
    """``[[maintenance]]`` tables -> windows; names unique. A single ``[maintenance]`` table is an error."""
    items = root.raw("maintenance", [])
    if not isinstance(items, list):
        got = "a single [maintenance] table" if isinstance(items, Mapping) else repr(items)
        raise root.error("maintenance", f"expected [[maintenance]] tables (an array of tables), got {got}")
    windows: list[MaintenanceWindow] = []
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        name_hint = item.get("name") if isinstance(item, Mapping) else None
        named = isinstance(name_hint, str) and name_hint.strip()
        where = f"maintenance {name_hint!r}" if named else f"maintenance[{index}]"
        reader = TableReader(item, file=root.file, where=where)
        window = _maintenance_window(reader)
        if window.name in first:
            raise reader.error("name", f"duplicate maintenance window name {window.name!r} "
                                       f"(first defined in maintenance[{first[window.name]}])")
        first[window.name] = index
        windows.append(window)
    return tuple(windows)


def _maintenance_window(r: TableReader) -> MaintenanceWindow:
    r.finish(MAINTENANCE_KEYS)  # unknown keys first: a typo explains most other errors
    name = r.str("name")
    if not name.strip() or name != name.strip():
        raise r.error("name", f"must be a non-empty name without surrounding spaces, got {name!r}")
    tz = _time_zone(r, "timezone")
    days = _days(r, "days")
    start, end = _clock_time(r, "start"), _clock_time(r, "end")
    if start == end:
        raise r.error("end", f"a window of zero length: start and end are both {start:%H:%M} "
                             "(an end at or before start crosses midnight, up to 23h59m)")
    matchers = Matchers(rule=_glob(r, "rule"), job=_glob(r, "job"), node=_glob(r, "node"))
    return MaintenanceWindow(name=name, tz=tz, days=days, start=start, end=end, matchers=matchers,
                             comment=r.str("comment", ""))


def _time_zone(r: TableReader, key: str) -> tzinfo:
    """An IANA time zone name (``Asia/Shanghai``) -> ZoneInfo; an unknown one suggests a close name."""
    name = r.str(key)
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        pass
    known = zoneinfo.available_timezones()
    if not known:
        raise r.error(key, f"unknown time zone {name!r}: no time zone data found (install the tzdata package)")
    close = _close_zone(name, known)
    hint = f" (did you mean {close!r}?)" if close else " (an IANA name such as 'Europe/Berlin' or 'UTC')"
    raise r.error(key, f"unknown time zone {name!r}{hint}")


def _close_zone(name: str, known: set[str]) -> str | None:
    """The zone meant by a misspelt name: same letters in another case, the same city, else difflib's pick."""
    by_lower = {k.lower(): k for k in sorted(known) if k not in _NOT_SUGGESTED}
    wanted = name.strip().lower()
    if wanted in by_lower:
        return by_lower[wanted]
    city = wanted.rsplit("/", 1)[-1]
    for lower, key in by_lower.items():
        if lower.rsplit("/", 1)[-1] == city:
            return key
    close = difflib.get_close_matches(wanted, list(by_lower), n=1)
    return by_lower[close[0]] if close else None


def _days(r: TableReader, key: str) -> frozenset[int]:
    values = r.str_list(key, None)
    if values is None:
        return EVERY_DAY
    if not values:
        raise r.error(key, "an empty list never opens the window; omit days for every day")
    days: set[int] = set()
    for value in values:
        day = value.strip().lower()
        if day not in DAY_NAMES:
            raise r.error(key, f"unknown day {value!r}{_day_hint(day)}; days are {', '.join(DAY_NAMES)}")
        days.add(DAY_NAMES.index(day))
    return frozenset(days)


def _day_hint(day: str) -> str:
    if day.rstrip("s") in _DAY_GROUPS:
        return f" (list them: {_DAY_GROUPS[day.rstrip('s')]})"
    candidates = {**{d: d for d in DAY_NAMES}, **dict(zip(_FULL_DAY_NAMES, DAY_NAMES, strict=True))}
    close = difflib.get_close_matches(day, list(candidates), n=1)
    return f" (did you mean {candidates[close[0]]!r}?)" if close else ""


def _clock_time(r: TableReader, key: str) -> time:
    """``"22:00"`` (HH:MM, 24-hour local time) -> time; a TOML local time (22:00:00) is accepted too."""
    value = r.raw(key)
    if isinstance(value, time) and value.tzinfo is None and not value.second and not value.microsecond:
        return value
    match = _HH_MM.fullmatch(value) if isinstance(value, str) else None
    if match is None or int(match[1]) > 23 or int(match[2]) > 59:
        hint = ' (midnight is "00:00")' if value == "24:00" else ""
        shown = value.isoformat() if isinstance(value, time) else repr(value)
        raise r.error(key, f'expected a 24-hour local time "HH:MM" such as "22:00", got {shown}{hint}')
    return time(int(match[1]), int(match[2]))


def _glob(r: TableReader, key: str) -> str:
    value = r.str(key, "*")
    if not value:
        raise r.error(key, f'an empty glob matches nothing; omit {key} (or say "*") to match all')
    return value
