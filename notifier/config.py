"""``notifier.toml``: parsed once into frozen dataclasses, validated at load.

Relative paths are resolved against the config file's directory. Secrets are never
read here: only the *names* of the environment variables or files that hold them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict, TypeVar

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
    )
    root.finish()
    return config


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


def _source(src: TableReader) -> SourceConfig:
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
