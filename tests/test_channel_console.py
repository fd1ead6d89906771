"""The console channel: settings, the default template's exact output, printing."""

from __future__ import annotations

import io
import logging
import os
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path

import pytest

from notifier.channels import CHANNEL_TYPES
from notifier.channels.console import (
    TYPE,
    ConsoleChannel,
    ConsoleSettings,
    compose,
    create,
    parse,
)
from notifier.errors import ChannelError, ConfigError
from notifier.render import Renderer, plain_text, sample_groups
from notifier.strict_toml import TableReader
from tests.support import fakes

GOLDEN = Path(__file__).parent / "golden"
T0 = datetime(2019, 3, 1, 3, 4, 25, tzinfo=timezone.utc)
NOW = T0 + timedelta(minutes=4)
SAMPLE_IDS = ("node", "grouped", "resolved", "job-and-event")


def reader(**table: object) -> TableReader:
    return TableReader({"type": "console", **table}, file="notifier.toml", where="channels.stdout")


# the console channel's outbox rows: a str is the payload's text
notification = partial(fakes.notification, id=7, channel="stdout", created_at=NOW)


def check_golden(name: str, actual: str) -> None:
    """Compare with tests/golden/<name>; UPDATE_GOLDEN=1 rewrites the file instead."""
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(actual + "\n")
    assert actual + "\n" == path.read_text()


# --- parse ----------------------------------------------------------------------------

@pytest.mark.parametrize(("table", "expected"), [
    ({}, ConsoleSettings("stdout")),
    ({"stream": "stderr"}, ConsoleSettings("stderr")),
], ids=["default-stdout", "stderr"])
def test_parse(table: dict[str, object], expected: ConsoleSettings) -> None:
    """stream defaults to stdout and may be stderr."""
    assert parse(reader(**table)) == expected


@pytest.mark.parametrize(("table", "key", "message"), [
    ({"stream": "file"}, "stream", "must be one of 'stdout', 'stderr'"),
    ({"strem": "stdout"}, "strem", "did you mean 'stream'"),
], ids=["bad-stream", "typo"])
def test_parse_rejects(table: dict[str, object], key: str, message: str) -> None:
    """A bad value or an unknown key is a ConfigError naming the table and key."""
    with pytest.raises(ConfigError, match=message) as info:
        parse(reader(**table))
    assert (info.value.where, info.value.key) == ("channels.stdout", key)


def test_registered() -> None:
    """`type = "console"` resolves to this module's ChannelType."""
    assert CHANNEL_TYPES["console"] is TYPE and TYPE.name == "console"


# --- compose --------------------------------------------------------------------------

@pytest.mark.parametrize("index", range(len(SAMPLE_IDS)), ids=SAMPLE_IDS)
def test_default_template_golden(index: int) -> None:
    """The default console message for each sample group is exactly the golden file."""
    group = sample_groups("stdout")[index]
    (payload,) = compose(Renderer(None, strict=True), group, NOW)
    check_golden(f"console_{SAMPLE_IDS[index]}.txt", payload["text"])


def test_seed_alert_reads_at_a_glance() -> None:
    """The seed alert's first line says severity, job, node, type, transition, since and rule; then summary and log."""
    (payload,) = compose(Renderer(None, strict=True), sample_groups()[0], NOW)
    first, second, third = payload["text"].splitlines()
    assert first == ("[CRITICAL] job_sms: DLI_SMS_GES (DLI SQL) NORMAL -> EXCEPTION since 03:04 UTC (4 min ago)"
                     "  rule=node-exception")
    assert second == "    DLI_SMS_GES entered EXCEPTION (was NORMAL)"
    assert third == "    log: obs://dlf-log-example/job_sms/DLI_SMS_GES.job"


def test_old_alerts_show_the_date() -> None:
    """An alert older than a day shows the full date, not an ambiguous time of day."""
    (payload,) = compose(Renderer(None), sample_groups()[0], T0 + timedelta(days=2))
    assert "since 2019-03-01 03:04 UTC (2 d ago)" in payload["text"]


def test_user_template_is_used(tmp_path: Path) -> None:
    """A rule's template name picks the user's <name>.console.j2."""
    (tmp_path / "short.console.j2").write_text("{{ status | upper }} {{ job }} ({{ alerts | length }})")
    group = sample_groups()[1]
    group = group.__class__(group.channel, group.group, group.alerts, "short")
    assert compose(Renderer(tmp_path), group, NOW) == ({"text": "FIRING job_sms (2)"},)


def test_broken_template_falls_back_to_plain_text(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A failing user template still yields a message: the built-in plain text, and an error log."""
    (tmp_path / "default.console.j2").write_text("{{ alerts[0].nope }}")
    group = sample_groups()[0]
    with caplog.at_level(logging.ERROR):
        (payload,) = compose(Renderer(tmp_path), group, NOW)
    assert payload == {"text": plain_text(group, NOW)}
    assert any(r.levelno == logging.ERROR and "default.console.j2" in r.getMessage() for r in caplog.records)


# --- send -----------------------------------------------------------------------------

@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_send_prints_to_the_configured_stream(stream: str, capsys: pytest.CaptureFixture[str]) -> None:
    """send() prints the composed text, newline-terminated, to stdout or stderr only."""
    channel = create("stdout", ConsoleSettings(stream))  # type: ignore[arg-type]
    channel.send(notification("[CRITICAL] job_sms: boom"))
    channel.close()
    out, err = capsys.readouterr()
    line = "[CRITICAL] job_sms: boom\n"
    assert (out, err) == ((line, "") if stream == "stdout" else ("", line))


def test_composed_message_round_trips_through_send(capsys: pytest.CaptureFixture[str]) -> None:
    """What compose() stored is exactly what send() prints."""
    (payload,) = compose(Renderer(None), sample_groups()[2], NOW)
    ConsoleChannel("stdout", ConsoleSettings()).send(notification(payload["text"]))
    assert capsys.readouterr().out == "[RESOLVED] job_sms: DLI_SMS_GES back to NORMAL after 14m  rule=node-exception\n"


class FailingStream(io.StringIO):
    def write(self, s: str) -> int:
        raise OSError(28, "No space left on device")


def test_write_error_is_retryable() -> None:
    """A stream that cannot be written (full disk, closed pipe) is a retryable ChannelError."""
    channel = ConsoleChannel("stdout", ConsoleSettings(), stream=FailingStream())
    with pytest.raises(ChannelError, match="cannot write to stdout") as info:
        channel.send(notification("x"))
    assert info.value.retryable is True


def test_closed_stream_is_retryable() -> None:
    """Writing to a closed stream is retryable too (the process may get a new one)."""
    stream = io.StringIO()
    stream.close()
    with pytest.raises(ChannelError) as info:
        ConsoleChannel("stdout", ConsoleSettings(), stream=stream).send(notification("x"))
    assert info.value.retryable is True


def test_payload_without_text_is_permanent() -> None:
    """A payload with no text will never print: a permanent ChannelError, not an endless retry."""
    bad = notification({"blocks": []}, id=1)
    with pytest.raises(ChannelError, match="no text") as info:
        ConsoleChannel("stdout", ConsoleSettings(), stream=io.StringIO()).send(bad)
    assert info.value.retryable is False
