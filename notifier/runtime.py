"""What a process runs with: config, rules, templates, and the live channels and client.

``Runtime`` is the validated configuration (loaded and checked together, so a reload
takes all of it or none). ``Wiring`` adds what the runtime builds: the channel
objects (secrets read) and the DGC client. A reload builds a new ``Wiring`` beside the
running one and swaps it in one assignment; nothing reaches into the running objects.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from notifier.channels import CHANNEL_TYPES, Channel
from notifier.clock import utcnow
from notifier.config import Config, load_config
from notifier.core.meta import meta_rules
from notifier.core.models import Clock, Rule
from notifier.errors import ConfigError
from notifier.render import Renderer
from notifier.rulefile import load_rules
from notifier.source.client import DgcClient
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
    client: DgcClient

    @classmethod
    def build(cls, runtime: Runtime, *, clock: Clock = utcnow) -> Wiring:
        """Create channels and client (reading their secrets); on failure nothing stays open."""
        channels = create_channels(runtime.config)
        try:
            client = DgcClient(runtime.config.source, clock=clock)
        except ConfigError as exc:  # a missing AK/SK/token: name the config file
            close_channels(channels)
            raise exc.located(str(runtime.config.path), "source") from None
        except BaseException:
            close_channels(channels)
            raise
        return cls(runtime=runtime, channels=channels, client=client)

    @property
    def config(self) -> Config:
        return self.runtime.config

    async def aclose(self) -> None:
        """Close the client and the channels."""
        await self.client.aclose()
        close_channels(self.channels)
