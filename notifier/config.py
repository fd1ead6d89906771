"""``notifier.toml``: parsed once into frozen dataclasses, validated at load.

Relative paths are resolved against the config file's directory. Secrets are never
read here: only the *names* of the environment variables or files that hold them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from notifier.errors import ConfigError
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
    file = str(path)
    root = TableReader(load_toml(path), file=file, where="")
    base = path.resolve().parent

    def resolve(p: str) -> Path:
        expanded = Path(os.path.expanduser(p))
        return expanded if expanded.is_absolute() else base / expanded

    src = root.table("source")
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

    jobs_t = root.table("jobs", None) or TableReader({}, file=file, where="jobs")
    jobs = JobsConfig(
        names=jobs_t.str_list("names", ()),
        discover=jobs_t.bool("discover", False),
        include=jobs_t.str_list("include", ("*",)),
        exclude=jobs_t.str_list("exclude", ()),
    )
    jobs_t.finish()
    if not jobs.names and not jobs.discover:
        raise jobs_t.error("names", "no jobs to watch: list job names or set discover = true")

    sched = root.table("schedule", None) or TableReader({}, file=file, where="schedule")
    interval = sched.seconds("interval", 60.0, positive=True)
    sched.finish()

    state_t = root.table("state", None) or TableReader({}, file=file, where="state")
    state_path = resolve(state_t.str("path", DEFAULT_STATE_PATH))
    state_t.finish()

    paths_t = root.table("paths", None) or TableReader({}, file=file, where="paths")
    rules_dir = resolve(paths_t.str("rules", "rules"))
    templates = paths_t.str("templates", None)
    templates_dir = resolve(templates) if templates else None
    paths_t.finish()

    deliv = root.table("delivery", None) or TableReader({}, file=file, where="delivery")
    delivery = DeliveryConfig(
        expire=deliv.seconds("expire", _DELIVERY.expire, positive=True),
        backoff=deliv.seconds("backoff", _DELIVERY.backoff, positive=True),
        backoff_max=deliv.seconds("backoff_max", _DELIVERY.backoff_max, positive=True),
    )
    deliv.finish()

    channels = _channels(root.table("channels", None), file)
    root.finish()
    return Config(path=path, source=source, jobs=jobs, interval=interval, state_path=state_path,
                  rules_dir=rules_dir, templates_dir=templates_dir, delivery=delivery, channels=channels)


def _endpoint(src: TableReader) -> str:
    endpoint = src.str("endpoint").rstrip("/")
    if not endpoint.startswith(("http://", "https://")):
        raise src.error("endpoint", f"must start with https:// (or http:// for the simulator), got {endpoint!r}")
    return endpoint


def _channels(table: TableReader | None, file: str) -> dict[str, ChannelConfig]:
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


def check_channel_names(config: Config, names: tuple[str, ...], *, file: str, where: str) -> None:
    """Raise ConfigError when a rule names a channel the config does not define."""
    for name in names:
        if name not in config.channels:
            known = ", ".join(sorted(config.channels)) or "none defined"
            raise ConfigError(f"unknown channel {name!r} (channels: {known})", file=file, where=where, key="channels")
