"""What a process runs with: config, rules, templates, and the live channels and client.

``Runtime`` is the validated configuration (loaded and checked together, so a reload
takes all of it or none). ``Wiring`` adds what the runtime builds: the channel
objects (secrets read) and the DGC client. A reload builds a new ``Wiring`` beside the
running one and swaps it in one assignment; nothing reaches into the running objects.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from notifier.channels import CHANNEL_TYPES, Channel
from notifier.clock import utcnow
from notifier.config import Config, load_config
from notifier.core.meta import meta_rules
from notifier.core.models import Clock, Rule
from notifier.errors import ConfigError
from notifier.render import Renderer
from notifier.rulefile import load_rules
from notifier.source.client import DgcClient, RateLimiter
from notifier.strict_toml import refuse_world_writable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Runtime:
    """Config, rules and templates that were validated together; replaced as a unit on reload."""

    config: Config
    rules: tuple[Rule, ...]
    renderer: Renderer
    meta_rules: tuple[Rule, ...] = ()  # the built-in notifier-* rules, routed by [meta]

    @property
    def all_rules(self) -> tuple[Rule, ...]:
        return (*self.rules, *self.meta_rules)


def load_runtime(config_path: Path, *, strict_templates: bool = False) -> Runtime:
    """Load config, rules and templates; raise ConfigError naming file, table/rule and key."""
    config = load_config(config_path)
    if not config.rules_dir.is_dir():
        what = "is not a directory" if config.rules_dir.exists() else "does not exist"
        raise ConfigError(f"the rules directory {config.rules_dir} {what} (a relative path is taken from the "
                          f"config file's directory; `notifier init DIR` writes a starter one)",
                          file=str(config.path), where="paths", key="rules")
    refuse_world_writable(config.rules_dir)  # anyone could add a rule file to it
    rules = load_rules(config.rules_dir, tuple(config.channels))
    if config.templates_dir is not None and not config.templates_dir.is_dir():
        raise ConfigError("templates directory does not exist", file=str(config.path), where="paths", key="templates")
    return Runtime(config=config, rules=rules, renderer=Renderer(config.templates_dir, strict=strict_templates),
                   meta_rules=meta_rules(config.meta, tuple(config.channels)))


def create_channels(config: Config) -> dict[str, Channel]:
    """Build every configured channel (reads secrets); ConfigError names the channel."""
    channels: dict[str, Channel] = {}
    try:
        for name, ch in config.channels.items():
            try:
                channels[name] = CHANNEL_TYPES[ch.type].create(name, ch.settings)
            except ConfigError as exc:
                raise ConfigError(exc.detail, file=str(config.path), where=f"channels.{name}", key=exc.key) from exc
    except BaseException:
        close_channels(channels)
        raise
    return channels


def close_channels(channels: Mapping[str, Channel]) -> None:
    """Close every channel; a failing close is logged and never stops a shutdown."""
    for name, channel in channels.items():
        try:
            channel.close()
        except Exception:
            log.exception("closing channel failed channel=%s", name)


@dataclass(frozen=True, slots=True)
class Wiring:
    """A runtime with the live objects built from it; swapped as one on reload."""

    runtime: Runtime
    channels: Mapping[str, Channel]
    clients: Mapping[str, DgcClient]  # source name -> its client, in config order
    rates: Mapping[str, float] = field(default_factory=dict)  # source -> its share of its user's budget (req/s)

    @classmethod
    def build(cls, runtime: Runtime, *, clock: Clock = utcnow) -> Wiring:
        """Create channels and clients (reading their secrets); on failure nothing stays open."""
        channels = create_channels(runtime.config)
        try:
            clients = build_clients(runtime.config, clock=clock)
        except BaseException:
            close_channels(channels)
            raise
        return cls(runtime=runtime, channels=channels, clients=clients, rates=shared_rates(runtime.config, clients))

    @property
    def config(self) -> Config:
        return self.runtime.config

    @property
    def client(self) -> DgcClient:
        """The first source's client (single-source code paths and tests)."""
        return next(iter(self.clients.values()))

    def rate(self, source: str) -> float:
        """Requests per second ``source`` may plan for."""
        return self.rates.get(source) or self.config.sources[source].max_requests_per_second

    async def aclose(self) -> None:
        """Close the clients and the channels."""
        try:
            for client in self.clients.values():
                await client.aclose()
        finally:
            close_channels(self.channels)


def build_clients(config: Config, *, clock: Clock = utcnow, **options: Any) -> dict[str, DgcClient]:
    """One client per source; sources of one user (same AK, token or IAM user) share one rate limiter.

    The API's 30 requests/s are per user, whatever project or region is asked: a user's
    limiter runs at the smallest ``max_requests_per_second`` its sources give (a warning
    says so when they differ). A missing secret is a ConfigError naming the source's table.
    """
    limiters: dict[str, RateLimiter] = {}
    clients: dict[str, DgcClient] = {}
    for name, source in config.sources.items():
        try:
            # a client that fails reads its secrets before it opens anything, and the ones
            # built before it have sent nothing: there is no connection to close
            clients[name] = DgcClient(source, clock=clock, limiters=limiters, **options)
        except ConfigError as exc:  # a missing AK/SK/token: name the config file and the table
            raise ConfigError(exc.detail, file=exc.file or str(config.path), where=source.table, key=exc.key) from None
    for problem in budget_conflicts(config, clients):
        log.warning("%s", problem)
    for users in _by_user(clients).values():
        rate = min(config.sources[name].max_requests_per_second for name in users)
        limiter = clients[users[0]].limiter
        limiter.rate = limiter.current = rate
    return clients


def _by_user(clients: Mapping[str, DgcClient]) -> dict[str, list[str]]:
    users: dict[str, list[str]] = {}
    for name, client in clients.items():
        users.setdefault(client.user, []).append(name)
    return users


def budget_conflicts(config: Config, clients: Mapping[str, DgcClient]) -> list[str]:
    """Sources of one user that give different ``max_requests_per_second``: the smallest is used."""
    out = []
    for users in _by_user(clients).values():
        rates = {name: config.sources[name].max_requests_per_second for name in users}
        if len(set(rates.values())) > 1:
            smallest = min(rates.values())
            given = ", ".join(f"{config.sources[n].table} {r:g}" for n, r in rates.items())
            out.append(f"{config.path}: {', '.join(config.sources[n].table for n in users)}: "
                       f"max_requests_per_second: these sources use the same credentials, so they share one "
                       f"user's budget; they give {given}: using {smallest:g} requests/s for all of them")
    return out


def shared_rates(config: Config, clients: Mapping[str, DgcClient]) -> dict[str, float]:
    """Each source's share of its user's budget: the user's rate split evenly among its sources."""
    out: dict[str, float] = {}
    for users in _by_user(clients).values():
        rate = min(config.sources[name].max_requests_per_second for name in users)
        out.update((name, rate / len(users)) for name in users)
    return out

