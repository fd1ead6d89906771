"""Shared fixtures: the fake clock, a state store, and a writer for config + rule files in tmp_path."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.fakes import FakeClock

# real loopback servers used as fixtures across test files, and the state store
pytest_plugins = ("tests.support.webhook_receiver", "tests.support.slack_server", "tests.support.smtp_server",
                  "tests.support.stores", "tests.support.socket_mode_server", "tests.support.alertmanager")


@pytest.fixture
def clock() -> FakeClock:
    """The fake clock at its default start; a test file needing another start overrides this fixture."""
    return FakeClock()


WriteConfig = Callable[..., Path]


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """Write notifier.toml and rules/*.toml into tmp_path; returns the config path."""

    def write(*, source: str, rules: str, channels: str, jobs: str = 'names = ["job_sms"]',
              extra: str = "", rule_file: str = "rules.toml") -> Path:
        rules_dir = tmp_path / "rules"
        rules_dir.mkdir(exist_ok=True)
        (rules_dir / rule_file).write_text(textwrap.dedent(rules))
        config = tmp_path / "notifier.toml"
        config.write_text(
            textwrap.dedent(source)
            + f"\n[jobs]\n{jobs}\n\n[state]\npath = \"state.db\"\n\n[paths]\nrules = \"rules\"\n\n"
            + textwrap.dedent(channels) + "\n" + textwrap.dedent(extra)
        )
        return config

    return write
