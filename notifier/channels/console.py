"""The console channel: rendered messages on stdout or stderr.

The demo's default and the quickest way to see what a rule would send. The message
is rendered once, at compose time, and stored as ``{"text": ...}``; ``send`` only
prints it, so a retry prints exactly what was composed.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, TextIO

from notifier.channels.base import ChannelType
from notifier.core.models import MessageGroup, Notification, Payload
from notifier.errors import ChannelError
from notifier.render import Renderer, message_context, plain_text
from notifier.strict_toml import TableReader

log = logging.getLogger(__name__)

Stream = Literal["stdout", "stderr"]
STREAMS: tuple[Stream, ...] = ("stdout", "stderr")


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    """``[channels.NAME]`` with ``type = "console"``."""

    stream: Stream = "stdout"


def parse(reader: TableReader) -> ConsoleSettings:
    """Validate the channel table; unknown keys are errors."""
    settings = ConsoleSettings(stream=reader.choice("stream", STREAMS, "stdout"))
    reader.finish(known=("type",))
    return settings


def compose(renderer: Renderer, group: MessageGroup, now: datetime) -> tuple[Payload, ...]:
    """Render ``<template>.console.j2``; a broken template falls back to the plain message."""
    ctx = message_context(group, now)
    text = renderer.render_or(lambda: plain_text(group, now), group.template, "console", ctx)
    return ({"text": text.rstrip()},)


class ConsoleChannel:
    """Prints each notification's text and flushes, so it shows up at once under systemd or a pipe."""

    def __init__(self, name: str, settings: ConsoleSettings, *, stream: TextIO | None = None) -> None:
        self.name = name
        self.settings = settings
        self._stream = stream  # None: look sys.stdout/sys.stderr up at send time (they may be replaced)

    def send(self, notification: Notification) -> None:
        text = notification.payload.get("text")
        if not isinstance(text, str):
            raise ChannelError(f"console channel {self.name}: payload has no text (notification {notification.id})",
                               retryable=False)
        stream = self._stream if self._stream is not None else getattr(sys, self.settings.stream)
        try:
            stream.write(text + "\n")
            stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed
            raise ChannelError(f"console channel {self.name}: cannot write to {self.settings.stream}: {exc}",
                               retryable=True) from exc

    def close(self) -> None:
        """Nothing to release: the process owns stdout and stderr."""


def create(name: str, settings: ConsoleSettings) -> ConsoleChannel:
    return ConsoleChannel(name, settings)


TYPE = ChannelType(name="console", parse=parse, create=create, compose=compose)
