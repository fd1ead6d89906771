"""Shared fixtures: a manual clock and a writer for config + rule files in tmp_path."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

# real loopback servers used as fixtures across test files
pytest_plugins = ("tests.support.webhook_receiver", "tests.support.slack_server", "tests.support.smtp_server")


class Clock:
    """An injectable clock that only moves when a test says so."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 25, 12, 0, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


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
