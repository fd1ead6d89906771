"""Maintenance windows: local wall-clock schedules across midnight and DST, their config, and muting."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from notifier.config import load_config
from notifier.core.cycle import plan_cycle
from notifier.core.maintenance import EVERY_DAY, MaintenanceWindow
from notifier.core.models import Alert, FetchResult, JobSnapshot, NodeStatus, Rule
from notifier.core.mutes import Matchers, Mute, mute_filter, muted_by
from notifier.errors import ConfigError
from tests.conftest import WriteConfig
from tests.pipeline_support import NODE_EXCEPTION, source_toml

UTC = timezone.utc
SHANGHAI = ZoneInfo("Asia/Shanghai")  # UTC+8 all year, no DST
BERLIN = ZoneInfo("Europe/Berlin")
MON, TUE, WED, THU, FRI, SAT, SUN = range(7)
ANY = Matchers()


def window(tz: ZoneInfo = SHANGHAI, days: frozenset[int] = frozenset({MON, TUE, WED, THU, FRI}),
           start: time = time(22), end: time = time(2), matchers: Matchers = ANY,
           name: str = "nightly-etl") -> MaintenanceWindow:
    return MaintenanceWindow(name=name, tz=tz, days=days, start=start, end=end, matchers=matchers)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- Asia/Shanghai, weekdays 22:00-02:00 ----------------------------------------------------
# 2026-06-01 is a Monday; Shanghai local = UTC + 8 h, so local 22:00 Monday is 14:00 UTC Monday.
WEEKDAYS = window()
FRIDAY_ONLY = window(days=frozenset({FRI}))


@pytest.mark.parametrize(("win", "now", "inside"), [
    (WEEKDAYS, utc(2026, 6, 1, 4, 0), False),     # Mon 12:00 local
    (WEEKDAYS, utc(2026, 6, 1, 13, 59), False),   # Mon 21:59
    (WEEKDAYS, utc(2026, 6, 1, 14, 0), True),     # Mon 22:00: the start is inside
    (WEEKDAYS, utc(2026, 6, 1, 15, 30), True),    # Mon 23:30
    (WEEKDAYS, utc(2026, 6, 1, 17, 30), True),    # Tue 01:30: Monday's run, after midnight
    (WEEKDAYS, utc(2026, 6, 1, 18, 0), False),    # Tue 02:00: the end is outside
    (WEEKDAYS, utc(2026, 6, 5, 17, 0), True),     # Sat 01:00: Friday's run
    (WEEKDAYS, utc(2026, 6, 6, 14, 30), False),   # Sat 22:30: Saturday is not listed
    (WEEKDAYS, utc(2026, 6, 6, 17, 0), False),    # Sun 01:00: Saturday's run would be, but does not exist
    (WEEKDAYS, utc(2026, 5, 31, 17, 0), False),   # Mon 01:00: would be Sunday's run
    (FRIDAY_ONLY, utc(2026, 6, 5, 17, 0), True),  # Sat 01:00: Friday's run
    (FRIDAY_ONLY, utc(2026, 6, 4, 17, 0), False),  # Fri 01:00: would be Thursday's run
], ids=["noon", "a-minute-before", "at-start", "before-midnight", "after-midnight", "at-end",
        "friday-run-on-saturday", "saturday-not-listed", "no-saturday-run", "no-sunday-run",
        "fri-only-saturday-1am", "fri-only-friday-1am"])
def test_window_across_midnight_belongs_to_its_start_day(win: MaintenanceWindow, now: datetime,
                                                         inside: bool) -> None:
    """A run starts on a listed day and ends the next morning; only the start day must be listed."""
    assert win.active(now) is inside


@pytest.mark.parametrize(("now", "change"), [
    (utc(2026, 6, 1, 4, 0), utc(2026, 6, 1, 14, 0)),    # Mon noon -> Mon 22:00 starts
    (utc(2026, 6, 1, 15, 0), utc(2026, 6, 1, 18, 0)),   # inside -> Tue 02:00 ends
    (utc(2026, 6, 1, 14, 0), utc(2026, 6, 1, 18, 0)),   # at the start -> its end
    (utc(2026, 6, 5, 18, 0), utc(2026, 6, 8, 14, 0)),   # Sat 02:00 ended -> Mon 22:00 (no weekend runs)
], ids=["next-start", "current-end", "at-start", "over-the-weekend"])
def test_next_change_is_the_next_start_or_end(now: datetime, change: datetime) -> None:
    """next_change gives the instant active() next flips: the end of the current run, else the next start."""
    assert WEEKDAYS.next_change(now) == change
    assert WEEKDAYS.active(change) is not WEEKDAYS.active(now)


# --- Europe/Berlin, every day 01:00-04:00, across both 2026 DST changes ----------------------
# Berlin is CET (UTC+1) in winter and CEST (UTC+2) in summer.
# Spring, Sun 2026-03-29: at 01:00 UTC the clock jumps 02:00 CET -> 03:00 CEST. The run starts
#   at 01:00 CET = 00:00 UTC and ends at 04:00 CEST = 02:00 UTC: 2 real hours.
# Autumn, Sun 2026-10-25: at 01:00 UTC the clock goes back 03:00 CEST -> 02:00 CET. The run
#   starts at 01:00 CEST = 23:00 UTC (Sat) and ends at 04:00 CET = 03:00 UTC: 4 real hours,
#   3 on the clock plus the repeated hour 02:00-03:00.
BERLIN_NIGHTLY = window(tz=BERLIN, days=EVERY_DAY, start=time(1), end=time(4), name="berlin")


@pytest.mark.parametrize(("now", "inside"), [
    (utc(2026, 3, 28, 23, 59), False),  # 00:59 CET
    (utc(2026, 3, 29, 0, 0), True),     # 01:00 CET: start
    (utc(2026, 3, 29, 0, 59), True),    # 01:59 CET, a minute before the jump
    (utc(2026, 3, 29, 1, 0), True),     # 03:00 CEST, right after it
    (utc(2026, 3, 29, 1, 59), True),    # 03:59 CEST
    (utc(2026, 3, 29, 2, 0), False),    # 04:00 CEST: end, 2 real hours after the start
    (utc(2026, 10, 24, 22, 59), False),  # 00:59 CEST
    (utc(2026, 10, 24, 23, 0), True),   # 01:00 CEST: start
    (utc(2026, 10, 25, 0, 30), True),   # 02:30 CEST, first pass
    (utc(2026, 10, 25, 1, 30), True),   # 02:30 CET, the repeated hour
    (utc(2026, 10, 25, 2, 59), True),   # 03:59 CET
    (utc(2026, 10, 25, 3, 0), False),   # 04:00 CET: end, 4 real hours after the start
    (utc(2026, 10, 25, 23, 59), False),  # Mon 00:59 CET: a normal night again ...
    (utc(2026, 10, 26, 0, 0), True),    # ... starting at 01:00 CET
], ids=["spring-before", "spring-start", "spring-before-jump", "spring-after-jump", "spring-last-minute",
        "spring-end", "autumn-before", "autumn-start", "autumn-first-pass", "autumn-repeated-hour",
        "autumn-last-minute", "autumn-end", "next-night-before", "next-night-start"])
def test_berlin_window_follows_local_time_across_dst(now: datetime, inside: bool) -> None:
    """01:00-04:00 local is 2 real hours on the spring-forward night and 3 + the repeated hour in autumn."""
    assert BERLIN_NIGHTLY.active(now) is inside


@pytest.mark.parametrize(("night", "length"), [
    (utc(2026, 3, 28, 12, 0), timedelta(hours=2)),
    (utc(2026, 3, 29, 12, 0), timedelta(hours=3)),
    (utc(2026, 10, 24, 12, 0), timedelta(hours=4)),
], ids=["spring-forward", "ordinary", "fall-back"])
def test_dst_changes_the_real_length_of_one_night(night: datetime, length: timedelta) -> None:
    """next_change from noon gives the night's start, and from there its end: the real length."""
    start = BERLIN_NIGHTLY.next_change(night)
    assert start is not None
    assert BERLIN_NIGHTLY.next_change(start) == start + length


@pytest.mark.parametrize(("win", "night", "expected"), [
    # 01:00-02:30 on the autumn night: 01:00 CEST (23:00 UTC) to the *second* 02:30, 02:30 CET = 01:30 UTC
    (window(tz=BERLIN, days=EVERY_DAY, start=time(1), end=time(2, 30)), utc(2026, 10, 24, 12),
     (utc(2026, 10, 24, 23, 0), utc(2026, 10, 25, 1, 30))),
    # 02:30-05:00 on the autumn night: from the *first* 02:30, 02:30 CEST = 00:30 UTC, to 05:00 CET = 04:00 UTC
    (window(tz=BERLIN, days=EVERY_DAY, start=time(2, 30), end=time(5)), utc(2026, 10, 24, 12),
     (utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 4, 0))),
    # 02:30-05:00 on the spring night: 02:30 does not exist; it starts at the jump, 03:00 CEST = 01:00 UTC
    (window(tz=BERLIN, days=EVERY_DAY, start=time(2, 30), end=time(5)), utc(2026, 3, 28, 12),
     (utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 3, 0))),
    # 02:15-02:45 lies wholly in the skipped hour: no run that night, the next is Monday 02:15 CEST = 00:15 UTC
    (window(tz=BERLIN, days=EVERY_DAY, start=time(2, 15), end=time(2, 45)), utc(2026, 3, 28, 12),
     (utc(2026, 3, 30, 0, 15), utc(2026, 3, 30, 0, 45))),
], ids=["end-in-repeated-hour", "start-in-repeated-hour", "start-in-skipped-hour", "wholly-skipped"])
def test_a_run_is_one_unbroken_stretch_through_dst(win: MaintenanceWindow, night: datetime,
                                                   expected: tuple[datetime, datetime]) -> None:
    """A run never flickers off and on in a repeated hour; a skipped start time opens it at the jump."""
    start = win.next_change(night)
    assert start is not None
    end = win.next_change(start)
    assert (start, end) == expected
    assert end is not None
    minutes = int((end - start).total_seconds() // 60)
    assert all(win.active(start + timedelta(minutes=m)) for m in range(minutes))
    assert not win.active(start - timedelta(seconds=1)) and not win.active(end)


def test_the_window_checks_its_own_values() -> None:
    """Zero length, no days and a naive now are programming errors (the config loader words them for users)."""
    with pytest.raises(ValueError, match="zero length"):
        window(start=time(22), end=time(22))
    with pytest.raises(ValueError, match="days"):
        window(days=frozenset())
    with pytest.raises(ValueError, match="timezone-aware"):
        WEEKDAYS.active(datetime(2026, 6, 1, 12))
    assert WEEKDAYS.describe() == "mon,tue,wed,thu,fri 22:00-02:00 Asia/Shanghai"
    assert BERLIN_NIGHTLY.describe() == "every day 01:00-04:00 Europe/Berlin"


# --- muting --------------------------------------------------------------------------------

ETL = window(matchers=Matchers(rule="node-*", job="job_*"))
INSIDE, OUTSIDE = utc(2026, 6, 1, 15, 0), utc(2026, 6, 1, 4, 0)  # Mon 23:00 / 12:00 Shanghai


def alert(rule: str, job: str, node: str | None) -> Alert:
    return Alert(status="firing", rule=rule, severity="critical", fingerprint=f"{rule}/{job}/{node}", job=job,
                 node=node, node_type=None, state="EXCEPTION", previous_state="NORMAL", since=INSIDE,
                 starts_at=INSIDE)


@pytest.mark.parametrize(("rule", "job", "node", "now", "label"), [
    ("node-exception", "job_sms", "A", INSIDE, "maintenance nightly-etl"),
    ("node-exception", "job_sms", "A", OUTSIDE, None),
    ("job-exception", "job_sms", None, INSIDE, None),
    ("node-exception", "other", "A", INSIDE, None),
], ids=["matching-inside", "matching-outside", "other-rule", "other-job"])
def test_muted_by_names_the_window(rule: str, job: str, node: str | None, now: datetime, label: str | None) -> None:
    """A window is a Mute: it covers alerts its matchers match, only while active, and says so by name."""
    mutes: tuple[Mute, ...] = (ETL,)
    assert muted_by(rule, job, node, mutes, now) == label


def test_mute_filter_drops_covered_alerts_while_active() -> None:
    """mute_filter with a window keeps what it does not cover; outside the window it keeps everything."""
    alerts = (alert("node-exception", "job_sms", "A"), alert("job-exception", "job_sms", None),
              alert("node-exception", "other", "B"))
    keep = mute_filter([ETL])
    assert [a.fingerprint for a in keep(alerts, {}, INSIDE)] == ["job-exception/job_sms/None",
                                                                 "node-exception/other/B"]
    assert keep(alerts, {}, OUTSIDE) == alerts


def test_a_window_mutes_plan_cycle_and_the_alert_goes_out_when_it_ends() -> None:
    """Through plan_cycle: tracked but not sent inside the window; sent once at the first cycle after it."""
    rules = (Rule(name="node-exception", scope="node", channels=("c",), status=("EXCEPTION",)),)
    result = FetchResult(snapshots=(JobSnapshot(name="job_sms", status="NORMAL",
                                                nodes=(NodeStatus(name="A", status="EXCEPTION"),)),))
    inside = plan_cycle(rules, {}, {}, result, None, INSIDE, mutes=(ETL,))
    assert inside.notify == () and len(inside.alerts) == 1
    after = utc(2026, 6, 1, 18, 0)  # Tue 02:00 Shanghai: the window has just ended
    later = plan_cycle(rules, inside.entities, inside.alerts, result, None, after, mutes=(ETL,))
    assert [(a.rule, a.node, a.status) for a in later.notify] == [("node-exception", "A", "firing")]


# --- config --------------------------------------------------------------------------------

SOURCE = source_toml("http://127.0.0.1:9")
CHANNELS = '[channels.stdout]\ntype = "console"\n'
NIGHTLY = """
[[maintenance]]
name = "nightly-etl"
timezone = "Asia/Shanghai"
days = ["mon", "tue", "wed", "thu", "fri"]
start = "22:00"
end = "02:00"
rule = "*"
job = "job_*"
comment = "nightly load"
"""


def test_config_reads_maintenance_windows(write_config: WriteConfig) -> None:
    """[[maintenance]] tables become Config.maintenance in file order, defaults filled in."""
    extra = NIGHTLY + """
[[maintenance]]
name = "sunday-patch"
timezone = "Europe/Berlin"
days = "SUN"
start = 01:00:00
end = "04:30"
node = "load_*"
"""
    path = write_config(source=SOURCE, rules=NODE_EXCEPTION, channels=CHANNELS, extra=extra)
    nightly, sunday = load_config(path).maintenance
    assert nightly == MaintenanceWindow(name="nightly-etl", tz=SHANGHAI, days=frozenset(range(5)), start=time(22),
                                        end=time(2), matchers=Matchers(job="job_*"), comment="nightly load")
    assert nightly.label == "maintenance nightly-etl" and nightly.crosses_midnight
    assert (sunday.days, sunday.start, sunday.end) == (frozenset({SUN}), time(1), time(4, 30))
    assert sunday.matchers == Matchers(node="load_*") and sunday.comment == ""


def test_config_without_maintenance_has_none(write_config: WriteConfig) -> None:
    """No [[maintenance]] tables: an empty tuple; a window without days runs every day."""
    path = write_config(source=SOURCE, rules=NODE_EXCEPTION, channels=CHANNELS)
    assert load_config(path).maintenance == ()
    path = write_config(source=SOURCE, rules=NODE_EXCEPTION, channels=CHANNELS,
                        extra='[[maintenance]]\nname = "x"\ntimezone = "UTC"\nstart = "01:00"\nend = "02:00"\n')
    assert load_config(path).maintenance[0].days == EVERY_DAY


def table(**values: object) -> str:
    """One [[maintenance]] table: a valid one with ``values`` replaced (None drops a key)."""
    base: dict[str, object] = {"name": "nightly-etl", "timezone": "Asia/Shanghai", "start": "22:00", "end": "02:00"}
    base.update(values)
    lines = [f"{k} = {v}" if isinstance(v, list | int) else f'{k} = "{v}"' for k, v in base.items() if v is not None]
    return "[[maintenance]]\n" + "\n".join(lines) + "\n"


NAMED = "maintenance 'nightly-etl'"


@pytest.mark.parametrize(("extra", "where", "key", "message"), [
    ('[maintenance]\nname = "x"\n', "", "maintenance",
     r"expected \[\[maintenance\]\] tables .* single \[maintenance\]"),
    ("maintenance = [1]\n", "maintenance[0]", None, "expected a table"),
    (table(timezone="Asia/Shangai"), NAMED, "timezone",
     r"unknown time zone 'Asia/Shangai' \(did you mean 'Asia/Shanghai'\?\)"),
    (table(timezone="asia/shanghai"), NAMED, "timezone", r"\(did you mean 'Asia/Shanghai'\?\)"),
    (table(timezone="Shanghai"), NAMED, "timezone", r"\(did you mean 'Asia/Shanghai'\?\)"),
    (table(timezone="/etc/localtime"), NAMED, "timezone", r"unknown time zone '/etc/localtime'"),
    (table(timezone="Mars/Olympus_Mons_Base"), NAMED, "timezone", r"unknown time zone 'Mars/Olympus_Mons_Base'"),
    (table(start="25:00"), NAMED, "start", r'expected a 24-hour local time "HH:MM" .* got \'25:00\''),
    (table(end="7pm"), NAMED, "end", r"got '7pm'"),
    (table(end="24:00"), NAMED, "end", r'midnight is "00:00"'),
    (table(start="22:60"), NAMED, "start", r"got '22:60'"),
    (table(start=22), NAMED, "start", r"got 22"),
    (table(days=["mon", "tues"]), NAMED, "days", r"unknown day 'tues' \(did you mean 'tue'\?\)"),
    (table(days=["Thursday"]), NAMED, "days", r"unknown day 'Thursday' \(did you mean 'thu'\?\)"),
    (table(days=["weekdays"]), NAMED, "days", r"unknown day 'weekdays' \(list them: \[\"mon\", \"tue\", .*\"fri\"\]\)"),
    (table(days=["xyz"]), NAMED, "days", r"unknown day 'xyz'; days are mon, tue, wed, thu, fri, sat, sun$"),
    (table(days=[]), NAMED, "days", "an empty list never opens the window"),
    (table() + table(), NAMED, "name", r"duplicate maintenance window name 'nightly-etl' .*maintenance\[0\]"),
    (table(end="22:00"), NAMED, "end", "a window of zero length: start and end are both 22:00"),
    (table(jobs="job_*"), NAMED, "jobs", r"unknown key \(did you mean 'job'\?\)"),
    (table(name=None), "maintenance[0]", "name", "required key is missing"),
    (table(timezone=None), NAMED, "timezone", "required key is missing"),
    (table(start=None), NAMED, "start", "required key is missing"),
    (table(job=""), NAMED, "job", "an empty glob matches nothing"),
], ids=["single-table", "not-a-table", "tz-typo", "tz-case", "tz-city-only", "tz-absolute-path", "tz-unknown",
        "hour-25", "7pm", "24:00", "minute-60", "not-a-string", "day-typo", "day-full-name", "day-weekdays",
        "day-unknown", "no-days", "duplicate-name", "zero-length", "unknown-key", "no-name", "no-timezone", "no-start",
        "empty-glob"])
def test_config_errors_name_file_table_and_key(write_config: WriteConfig, extra: str, where: str, key: str | None,
                                               message: str) -> None:
    """Every mistake in [[maintenance]] is a ConfigError naming notifier.toml, the window and the key."""
    if extra.startswith("maintenance ="):  # a top-level key: before the first [table]
        source, extra = extra + SOURCE, ""
    else:
        source = SOURCE
    path = write_config(source=source, rules=NODE_EXCEPTION, channels=CHANNELS, extra=extra)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    error = info.value
    assert (error.file, error.where or "", error.key) == (str(path), where, key)
    assert re.search(message, error.detail), error.detail
    assert str(error).startswith(f"{path}: ")


def test_readme_example_loads(write_config: WriteConfig) -> None:
    """README's [[maintenance]] example is valid config and means what the section says."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Maintenance windows", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    path = write_config(source=SOURCE, rules=NODE_EXCEPTION, channels=CHANNELS, extra=example)
    (win,) = load_config(path).maintenance
    assert win.describe() == "mon,tue,wed,thu,fri 22:00-02:00 Asia/Shanghai"
    assert win.matchers == Matchers(job="job_*") and win.label == "maintenance nightly-etl"


def test_zones_load_without_system_time_zone_data() -> None:
    """With no system zoneinfo directory (PYTHONTZPATH empty), the tzdata dependency still provides the zones."""
    code = "import zoneinfo; assert zoneinfo.TZPATH == (); print(zoneinfo.ZoneInfo('Asia/Shanghai'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                         env={**os.environ, "PYTHONTZPATH": ""})
    assert out.stdout.strip() == "Asia/Shanghai"
