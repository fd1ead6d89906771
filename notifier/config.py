"""``notifier.toml``: parsed once into frozen dataclasses, validated at load.

Relative paths are resolved against the config file's directory. Secrets are never
read here: only the *names* of the environment variables or files that hold them.
"""

from __future__ import annotations

import difflib
import os
import re
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import time, tzinfo
from pathlib import Path
from typing import Any, Literal, TypedDict, TypeVar

from notifier.core.flap import DEFAULT_FLAP, FlapPolicy
from notifier.core.maintenance import DAY_NAMES, EVERY_DAY, MaintenanceWindow
from notifier.core.meta import DEFAULT_META, MetaPolicy
from notifier.core.mutes import Matchers
from notifier.strict_toml import TableReader, load_toml

DEFAULT_CONFIG_PATH = "/etc/notifier/notifier.toml"
DEFAULT_STATE_PATH = "/var/lib/notifier/state.db"

AuthMode = Literal["aksk", "token", "none"]


@dataclass(frozen=True, slots=True)
class SourceConfig:
    endpoint: str
    project_id: str
    workspace: str = ""
    auth: AuthMode = "aksk"
    ak_env: str = "HUAWEICLOUD_SDK_AK"
    sk_env: str = "HUAWEICLOUD_SDK_SK"
    ak_file: str | None = None
    sk_file: str | None = None
    token_env: str = "HUAWEICLOUD_IAM_TOKEN"
    token_file: str | None = None
    timeout: float = 10.0
    concurrency: int = 16
    max_requests_per_second: float = 20.0
    retries: int = 3  # extra attempts after the first, on timeouts, 5xx and 429
    backoff: float = 0.5  # first retry delay in seconds (doubles, with jitter)
    backoff_max: float = 10.0


@dataclass(frozen=True, slots=True)
class JobsConfig:
    names: tuple[str, ...] = ()
    discover: bool = False
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """Outbox retry policy: exponential backoff from ``backoff`` to ``backoff_max``, give up after ``expire``."""

    expire: float = 24 * 3600.0
    backoff: float = 1.0
    backoff_max: float = 300.0


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    name: str
    type: str
    settings: Any  # the channel type's own frozen settings dataclass


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    source: SourceConfig
    jobs: JobsConfig
    interval: float = 60.0
    state_path: Path = Path(DEFAULT_STATE_PATH)
    rules_dir: Path = Path("rules")
    templates_dir: Path | None = None
    delivery: DeliveryConfig = DeliveryConfig()
    channels: Mapping[str, ChannelConfig] = field(default_factory=dict)
    maintenance: tuple[MaintenanceWindow, ...] = ()
    meta: MetaPolicy = DEFAULT_META
    noise: FlapPolicy = DEFAULT_FLAP


# defaults read from instances: with slots=True the class attributes are descriptors
_SRC = SourceConfig(endpoint="", project_id="")
_DELIVERY = DeliveryConfig()


def default_config_path() -> Path:
    return Path(os.environ.get("NOTIFIER_CONFIG") or DEFAULT_CONFIG_PATH)


def load_config(path: Path) -> Config:
    """Load and validate ``notifier.toml``; raise ConfigError naming file, table and key."""
    path = Path(path)
    root = TableReader(load_toml(path), file=str(path), where="")
    base = path.resolve().parent
    config = Config(
        path=path,
        source=_source(root.table("source")),
        jobs=_jobs(root.optional_table("jobs")),
        interval=_read(root.optional_table("schedule"), lambda t: t.seconds("interval", 60.0, positive=True)),
        state_path=_read(root.optional_table("state"), lambda t: _resolve(base, t.str("path", DEFAULT_STATE_PATH))),
        **_paths(root.optional_table("paths"), base),
        delivery=_delivery(root.optional_table("delivery")),
        channels=_channels(root.table("channels", None)),
        maintenance=_maintenance(root),
    )
    config = replace(config, meta=_meta(root.optional_table("meta"), tuple(config.channels)),
                     noise=parse_noise(root.optional_table("noise")))
    root.finish()
    return config


def parse_noise(table: TableReader) -> FlapPolicy:
    """``[noise]``: flap damping (``flap_threshold = 0`` turns it off)."""
    return _read(table, lambda t: FlapPolicy(
        threshold=t.int("flap_threshold", DEFAULT_FLAP.threshold, minimum=0),
        window=t.seconds("flap_window", DEFAULT_FLAP.window, positive=True),
        quiet=t.seconds("flap_quiet", DEFAULT_FLAP.quiet, positive=True),
    ))


def _meta(table: TableReader, channels: tuple[str, ...]) -> MetaPolicy:
    """``[meta]``: where notifier's alerts about itself go, and when they fire."""
    policy = _read(table, lambda t: MetaPolicy(
        channels=t.str_list("channels", ()),
        source_failures=t.int("source_failures", DEFAULT_META.source_failures, minimum=1),
        job_missing=t.int("job_missing", DEFAULT_META.job_missing, minimum=1),
        channel_stuck=t.seconds("channel_stuck", DEFAULT_META.channel_stuck, positive=True),
        repeat=t.seconds("repeat", DEFAULT_META.repeat),
    ))
    for name in policy.channels:
        if name not in channels:
            close = difflib.get_close_matches(name, channels, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"channels: {', '.join(channels) or 'none defined'}"
            raise table.error("channels", f"unknown channel {name!r} ({hint})")
    return policy


T = TypeVar("T")


def _read(table: TableReader, read: Callable[[TableReader], T]) -> T:
    """Read a table's values with ``read``, then reject any key it did not read."""
    value = read(table)
    table.finish()
    return value


def _resolve(base: Path, value: str) -> Path:
    """``~`` expanded; a relative path is relative to the config file's directory."""
    expanded = Path(os.path.expanduser(value))
    return expanded if expanded.is_absolute() else base / expanded


SOURCE_KEYS = (
    "endpoint", "project_id", "workspace", "auth", "ak_env", "ak_file", "sk_env", "sk_file", "token_env",
    "token_file", "timeout", "concurrency", "max_requests_per_second", "retries", "backoff", "backoff_max",
)
"""Every key of ``[source]``: checked first, so ``projct_id`` is reported as a typo, not as a missing key."""


def _source(src: TableReader) -> SourceConfig:
    src.finish(SOURCE_KEYS)  # unknown keys first: a typo explains a "missing" required key
    ak_env, ak_file = src.env_or_file("ak", _SRC.ak_env)
    sk_env, sk_file = src.env_or_file("sk", _SRC.sk_env)
    token_env, token_file = src.env_or_file("token", _SRC.token_env)
    source = SourceConfig(
        endpoint=_endpoint(src),
        project_id=src.str("project_id"),
        workspace=src.str("workspace", ""),
        auth=src.choice("auth", ("aksk", "token", "none"), "aksk"),
        ak_env=ak_env or _SRC.ak_env,
        sk_env=sk_env or _SRC.sk_env,
        ak_file=ak_file,
        sk_file=sk_file,
        token_env=token_env or _SRC.token_env,
        token_file=token_file,
        timeout=src.seconds("timeout", _SRC.timeout, positive=True),
        concurrency=src.int("concurrency", _SRC.concurrency, minimum=1),
        max_requests_per_second=src.number("max_requests_per_second", _SRC.max_requests_per_second, minimum=0.1),
        retries=src.int("retries", _SRC.retries, minimum=0),
        backoff=src.seconds("backoff", _SRC.backoff),
        backoff_max=src.seconds("backoff_max", _SRC.backoff_max),
    )
    src.finish()
    return source


def _jobs(table: TableReader) -> JobsConfig:
    jobs = _read(table, lambda t: JobsConfig(
        names=t.str_list("names", ()),
        discover=t.bool("discover", False),
        include=t.str_list("include", ("*",)),
        exclude=t.str_list("exclude", ()),
    ))
    if not jobs.names and not jobs.discover:
        raise table.error("names", "no jobs to watch: list job names or set discover = true")
    return jobs


class _Paths(TypedDict):
    rules_dir: Path
    templates_dir: Path | None


def _paths(table: TableReader, base: Path) -> _Paths:
    def read(t: TableReader) -> _Paths:
        templates = t.str("templates", None)
        return {"rules_dir": _resolve(base, t.str("rules", "rules")),
                "templates_dir": _resolve(base, templates) if templates else None}
    return _read(table, read)


def _delivery(table: TableReader) -> DeliveryConfig:
    return _read(table, lambda t: DeliveryConfig(
        expire=t.seconds("expire", _DELIVERY.expire, positive=True),
        backoff=t.seconds("backoff", _DELIVERY.backoff, positive=True),
        backoff_max=t.seconds("backoff_max", _DELIVERY.backoff_max, positive=True),
    ))


def _endpoint(src: TableReader) -> str:
    endpoint = src.str("endpoint").rstrip("/")
    if not endpoint.startswith(("http://", "https://")):
        raise src.error("endpoint", f"must start with https:// (or http:// for the simulator), got {endpoint!r}")
    return endpoint


def _channels(table: TableReader | None) -> dict[str, ChannelConfig]:
    from notifier.channels import (
        CHANNEL_TYPES,  # channels import config helpers; avoid a cycle
    )

    if table is None:
        return {}
    out: dict[str, ChannelConfig] = {}
    for name in list(table.data):
        reader = table.table(name)
        kind = reader.choice("type", tuple(CHANNEL_TYPES))
        settings = CHANNEL_TYPES[kind].parse(reader)
        reader.finish()
        out[name] = ChannelConfig(name=name, type=kind, settings=settings)
    return out


MAINTENANCE_KEYS = ("name", "timezone", "days", "start", "end", "rule", "job", "node", "comment")
"""Every key a ``[[maintenance]]`` table may hold."""

_HH_MM = re.compile(r"(\d{1,2}):(\d{2})")
_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_NOT_SUGGESTED = frozenset({"localtime", "posixrules", "Factory"})  # in the zoneinfo directory, not places
_DAY_GROUPS = {"weekday": '["mon", "tue", "wed", "thu", "fri"]', "weekend": '["sat", "sun"]'}


def _maintenance(root: TableReader) -> tuple[MaintenanceWindow, ...]:
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
