"""``notifier.toml``: parsed once into frozen dataclasses, validated at load.

Relative paths are resolved against the config file's directory. Secrets are never
read here: only the *names* of the environment variables or files that hold them.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypedDict, TypeVar

from notifier.core.flap import DEFAULT_FLAP, FlapPolicy
from notifier.core.maintenance import MaintenanceWindow
from notifier.core.meta import DEFAULT_META, MetaPolicy
from notifier.core.models import DEFAULT_SOURCE  # a lone [source]'s name: its jobs keep bare names
from notifier.strict_toml import TableReader, load_toml, refuse_world_writable
from notifier.windowfile import parse_maintenance

DEFAULT_CONFIG_PATH = "/etc/notifier/notifier.toml"
DEFAULT_STATE_PATH = "/var/lib/notifier/state.db"

AuthMode = Literal["aksk", "token", "iam", "none"]

SOURCE_NAME = re.compile(r"[A-Za-z0-9_-]+")
"""What a ``[sources.NAME]`` may be called: it goes into job keys (``NAME/JOB``), labels and meta keys."""



@dataclass(frozen=True, slots=True)
class JobsConfig:
    names: tuple[str, ...] = ()
    discover: bool = False
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()


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
    # auth = "iam": a token from IAM's password method, fetched and refreshed by notifier.source.iam
    iam_endpoint: str = ""  # e.g. "https://iam.cn-north-4.myhuaweicloud.com" (required with auth = "iam")
    iam_user_env: str = "HUAWEICLOUD_IAM_USER"
    iam_user_file: str | None = None
    iam_password_env: str = "HUAWEICLOUD_IAM_PASSWORD"
    iam_password_file: str | None = None
    iam_domain: str = ""  # the account (domain) name (required with auth = "iam")
    iam_project: str = ""  # project name to scope the token to; "" scopes it by project_id
    timeout: float = 10.0
    concurrency: int = 16
    max_requests_per_second: float = 20.0
    retries: int = 3  # extra attempts after the first, on timeouts, 5xx and 429
    backoff: float = 0.5  # first retry delay in seconds (doubles, with jitter)
    backoff_max: float = 10.0
    name: str = DEFAULT_SOURCE  # [sources.NAME]; a lone [source] is "default"
    jobs: JobsConfig = JobsConfig()  # its [jobs] ([sources.NAME.jobs])
    named: bool = False  # from a [sources.NAME] table (not a lone [source])

    @property
    def table(self) -> str:
        """Where it was configured, for messages: ``source`` or ``sources.prod``."""
        return f"sources.{self.name}" if self.named else "source"

    @property
    def jobs_table(self) -> str:
        """``jobs`` or ``sources.prod.jobs``."""
        return f"sources.{self.name}.jobs" if self.named else "jobs"


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
class MetricsConfig:
    """``[metrics]``: where ``/metrics`` and ``/healthz`` listen; ``listen = None`` (the default) is off."""

    listen: str | None = None  # "HOST:PORT" as validated by parse_listen


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    source: SourceConfig  # the first source (single-source code paths only)
    jobs: JobsConfig  # the first source's jobs
    interval: float = 60.0
    stall_timeout: float | None = None  # None: max(3 intervals, 10 min); see daemon's watchdog
    full_sweep: float | None = None  # every job's nodes fetched at least this often; None: as the budget allows
    state_path: Path = Path(DEFAULT_STATE_PATH)
    rules_dir: Path = Path("rules")
    templates_dir: Path | None = None
    watch: bool = True  # [paths] watch: apply edits to config, rules and templates without a signal
    delivery: DeliveryConfig = DeliveryConfig()
    channels: Mapping[str, ChannelConfig] = field(default_factory=dict)
    maintenance: tuple[MaintenanceWindow, ...] = ()
    meta: MetaPolicy = DEFAULT_META
    noise: FlapPolicy = DEFAULT_FLAP
    metrics: MetricsConfig = MetricsConfig()
    sources: Mapping[str, SourceConfig] = field(default_factory=dict)
    """Every source by name, in config order (``source`` is the first); filled from ``source`` when empty."""

    def __post_init__(self) -> None:
        if not self.sources:
            object.__setattr__(self, "sources", {self.source.name: replace(self.source, jobs=self.jobs)})


# defaults read from instances: with slots=True the class attributes are descriptors
_SRC = SourceConfig(endpoint="", project_id="")
_DELIVERY = DeliveryConfig()


def default_config_path() -> Path:
    return Path(os.environ.get("NOTIFIER_CONFIG") or DEFAULT_CONFIG_PATH)


def load_config(path: Path) -> Config:
    """Load and validate ``notifier.toml``; raise ConfigError naming file, table and key."""
    path = Path(path)
    refuse_world_writable(path)
    root = TableReader(load_toml(path), file=str(path), where="")
    base = path.resolve().parent
    sources = _sources(root)
    first = next(iter(sources.values()))
    config = Config(
        path=path,
        source=first,
        jobs=first.jobs,
        sources=sources,
        **_schedule(root.optional_table("schedule")),
        state_path=_read(root.optional_table("state"), lambda t: _resolve(base, t.str("path", DEFAULT_STATE_PATH))),
        **_paths(root.optional_table("paths"), base),
        delivery=_delivery(root.optional_table("delivery")),
        channels=_channels(root.table("channels", None), root.optional_table("slack")),
        maintenance=parse_maintenance(root),
        metrics=_read(root.optional_table("metrics"), _metrics),
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


def parse_listen(value: str, *, any_port: bool = False) -> tuple[str, int]:
    """``"127.0.0.1:9464"``, ``"[::1]:9464"``, ``"0.0.0.0:9464"`` -> (host, port); ValueError says what is wrong.

    ``any_port`` also accepts port 0 (the system picks a free one: tests); a config may not say 0.
    """
    if not isinstance(value, str):
        raise ValueError(f'expected "HOST:PORT" such as "127.0.0.1:9464", got {value!r}')
    host, sep, port_text = value.strip().rpartition(":")
    if not sep:
        if value.strip().isdigit():
            raise ValueError(f'a port without a host: say "127.0.0.1:{value.strip()}" (this machine only) or '
                             f'"0.0.0.0:{value.strip()}" (every interface)')
        raise ValueError(f'expected "HOST:PORT" such as "127.0.0.1:9464", got {value!r} (no port)')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f'an IPv6 address goes in brackets, e.g. "[::1]:9464", got {value!r}')
    if not host or any(c.isspace() for c in host) or "/" in host:
        raise ValueError(f'expected a host before the port ("127.0.0.1" for this machine only, "0.0.0.0" for '
                         f"every interface), got {value!r}")
    if not port_text.isdigit() or not (0 if any_port else 1) <= int(port_text) <= 65535:
        raise ValueError(f"expected a port from 1 to 65535 after the host, got {value!r}")
    return host, int(port_text)


def _metrics(table: TableReader) -> MetricsConfig:
    """``[metrics] listen = "HOST:PORT"``: serve /metrics and /healthz there (absent: off)."""
    listen = table.str("listen", None)
    if listen is None:
        return MetricsConfig()
    try:
        parse_listen(listen)
    except ValueError as exc:
        raise table.error("listen", str(exc)) from None
    return MetricsConfig(listen=listen.strip())


T = TypeVar("T")


def _read(table: TableReader, read: Callable[[TableReader], T]) -> T:
    """Read a table's values with ``read``, then reject any key it did not read."""
    value = read(table)
    table.finish()
    return value


class _Schedule(TypedDict):
    interval: float
    stall_timeout: float | None
    full_sweep: float | None


def _schedule(table: TableReader) -> _Schedule:
    """``[schedule]``: how often to poll, how often every job's nodes must be fetched (``full_sweep``), and how
    long a cycle may go without progress before the watchdog gives up."""
    def read(t: TableReader) -> _Schedule:
        interval = t.seconds("interval", 60.0, positive=True)
        full_sweep = t.seconds("full_sweep", None, positive=True)
        if full_sweep is not None and full_sweep < interval:
            raise t.error("full_sweep", f"must be at least the interval ({interval:g}s): a job's status is fetched "
                                        "at most once a cycle")
        return _Schedule(interval=interval, stall_timeout=t.seconds("stall_timeout", None, positive=True),
                         full_sweep=full_sweep)
    return _read(table, read)


def _resolve(base: Path, value: str) -> Path:
    """``~`` expanded; a relative path is relative to the config file's directory."""
    expanded = Path(os.path.expanduser(value))
    return expanded if expanded.is_absolute() else base / expanded


SOURCE_KEYS = (
    "endpoint", "project_id", "workspace", "auth", "ak_env", "ak_file", "sk_env", "sk_file", "token_env",
    "token_file", "iam_endpoint", "iam_user_env", "iam_user_file", "iam_password_env", "iam_password_file",
    "iam_domain", "iam_project", "timeout", "concurrency", "max_requests_per_second", "retries", "backoff",
    "backoff_max",
)
"""Every key of ``[source]``: checked first, so ``projct_id`` is reported as a typo, not as a missing key."""


def _sources(root: TableReader) -> dict[str, SourceConfig]:
    """``[source]`` + ``[jobs]`` (the source ``default``), or ``[sources.NAME]`` tables with ``[sources.NAME.jobs]``."""
    if not root.has("sources"):
        source = _source(root.table("source"))
        return {source.name: replace(source, jobs=_jobs(root.optional_table("jobs")))}
    for key, shape in (("source", "[sources.NAME]"), ("jobs", "[sources.NAME.jobs]")):
        if root.has(key):
            raise root.error(key, f"[{key}] and [sources.NAME] do not mix: with several sources every source is "
                                  f"a {shape} table (a lone [source] + [jobs] is the source named "
                                  f"{DEFAULT_SOURCE!r}: [sources.{DEFAULT_SOURCE}] keeps its state)")
    table = root.table("sources")
    if not table.data:
        raise root.error("sources", "no [sources.NAME] table: name at least one source")
    out: dict[str, SourceConfig] = {}
    for name in list(table.data):
        if not SOURCE_NAME.fullmatch(name):
            raise table.error(name, "a source name is letters, digits, '_' and '-' (it names the source in "
                                    "alerts, labels and the state file)")
        src = table.table(name)
        jobs = src.table("jobs", None)
        if jobs is None:
            raise src.error("jobs", f"each source has its own jobs: add [sources.{name}.jobs] with names = [...] "
                                    "or discover = true")
        source = replace(_source(src, extra=("jobs",)), name=name, named=True)
        out[name] = replace(source, jobs=_jobs(jobs))
    table.finish()
    return out


def _source(src: TableReader, *, extra: tuple[str, ...] = ()) -> SourceConfig:
    src.finish((*SOURCE_KEYS, *extra))  # unknown keys first: a typo explains a "missing" required key
    ak_env, ak_file = src.env_or_file("ak", _SRC.ak_env)
    sk_env, sk_file = src.env_or_file("sk", _SRC.sk_env)
    token_env, token_file = src.env_or_file("token", _SRC.token_env)
    iam_user_env, iam_user_file = src.env_or_file("iam_user", _SRC.iam_user_env)
    iam_password_env, iam_password_file = src.env_or_file("iam_password", _SRC.iam_password_env)
    auth = src.choice("auth", ("aksk", "token", "iam", "none"), "aksk")
    source = SourceConfig(
        endpoint=_endpoint(src),
        project_id=src.str("project_id"),
        workspace=src.str("workspace", ""),
        auth=auth,
        ak_env=ak_env or _SRC.ak_env,
        sk_env=sk_env or _SRC.sk_env,
        ak_file=ak_file,
        sk_file=sk_file,
        token_env=token_env or _SRC.token_env,
        token_file=token_file,
        iam_endpoint=_url(src, "iam_endpoint", required=auth == "iam"),
        iam_user_env=iam_user_env or _SRC.iam_user_env,
        iam_user_file=iam_user_file,
        iam_password_env=iam_password_env or _SRC.iam_password_env,
        iam_password_file=iam_password_file,
        iam_domain=_iam_name(src, "iam_domain", required=auth == "iam"),
        iam_project=_iam_name(src, "iam_project", required=False),
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
    watch: bool


def _paths(table: TableReader, base: Path) -> _Paths:
    def read(t: TableReader) -> _Paths:
        templates = t.str("templates", None)
        beside = base / "templates"  # the default, like rules: used when it exists (`notifier init` makes it)
        return {"rules_dir": _resolve(base, t.str("rules", "rules")),
                "templates_dir": _resolve(base, templates) if templates else beside if beside.is_dir() else None,
                "watch": t.bool("watch", True)}
    return _read(table, read)


def _delivery(table: TableReader) -> DeliveryConfig:
    return _read(table, lambda t: DeliveryConfig(
        expire=t.seconds("expire", _DELIVERY.expire, positive=True),
        backoff=t.seconds("backoff", _DELIVERY.backoff, positive=True),
        backoff_max=t.seconds("backoff_max", _DELIVERY.backoff_max, positive=True),
    ))


def _endpoint(src: TableReader) -> str:
    return _url(src, "endpoint", required=True)


def _url(src: TableReader, key: str, *, required: bool) -> str:
    """An http(s) base URL without a trailing slash; "" when absent and not ``required``."""
    if not required and not src.has(key):
        return ""
    if required and key != "endpoint" and not src.has(key):
        raise src.error(key, 'required with auth = "iam", e.g. "https://iam.cn-north-4.myhuaweicloud.com"')
    endpoint = src.str(key).rstrip("/")
    if not endpoint.startswith(("http://", "https://")):
        raise src.error(key, f"must start with https:// (or http:// for the simulator), got {endpoint!r}")
    return endpoint


def _iam_name(src: TableReader, key: str, *, required: bool) -> str:
    """A plain name (account/domain, project); never a secret."""
    value = src.str(key, "").strip()
    if required and not value:
        raise src.error(key, 'required with auth = "iam": the account (domain) name the IAM user belongs to')
    return value


def _channels(table: TableReader | None, slack_table: TableReader) -> dict[str, ChannelConfig]:
    """``[channels.NAME]`` tables; ``[slack]`` (shared by every Slack channel) is merged into theirs."""
    from notifier.channels import CHANNEL_TYPES, slack  # channels import config helpers; avoid a cycle

    shared = slack.parse_shared(slack_table)
    if table is None:
        return {}
    out: dict[str, ChannelConfig] = {}
    for name in list(table.data):
        reader = table.table(name)
        kind = reader.choice("type", tuple(CHANNEL_TYPES))
        settings = CHANNEL_TYPES[kind].parse(reader)
        reader.finish()
        if kind == "slack":
            settings = slack.with_shared(settings, shared)
        out[name] = ChannelConfig(name=name, type=kind, settings=settings)
    return out

