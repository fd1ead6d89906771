"""The channel contract: how a notification leaves the building.

A channel type is three small callables registered in ``notifier.channels.CHANNEL_TYPES``:

- ``parse(reader)`` validates the channel's ``[channels.NAME]`` table into a frozen
  settings object (unknown keys are errors; secrets are *names* of env vars/files);
- ``create(name, settings)`` builds the live ``Channel`` (reads secrets, opens clients);
- ``compose(renderer, group, now)`` renders a group of alerts into one or more
  JSON-serialisable payloads (several when a platform limit forces a split). Payloads
  are stored in the outbox as they are, so a retry sends exactly the same message.
  A type whose payload depends on the channel's settings (the webhook's ``format``)
  also sets ``compose_with_settings(renderer, settings, group, now)``; callers go through
  ``ChannelType.compose_for``, which picks the right one.

``Channel.send`` raises ``ChannelError(retryable=...)``: the channel, which knows its
protocol, decides whether a failure is worth retrying; the outbox only obeys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from notifier.core.models import MessageGroup, Notification, Payload, ThreadRef

if TYPE_CHECKING:
    from notifier.core.incidents import Conversation
    from notifier.render import Renderer
    from notifier.strict_toml import TableReader


class Channel(Protocol):
    """A live, configured destination."""

    name: str

    def send(self, notification: Notification) -> ThreadRef | None:
        """Deliver one notification or raise ChannelError(retryable=...).

        Returns where the message went when it became the first of its thread (Slack's
        channel id and ``ts``), so later messages of the thread can reply to it; else None.
        """

    def close(self) -> None:
        """Release clients and sockets."""


@runtime_checkable
class Identifies(Protocol):
    """A channel that can say, without sending anything, whose credentials it uses (Slack's ``auth.test``)."""

    def check(self) -> str:
        """Describe the identity the credentials belong to, or raise ChannelError(retryable=...)."""


@dataclass(frozen=True, slots=True)
class ChannelType:
    """A registry entry: how to validate, build and render for one ``type = "..."``."""

    name: str
    parse: Callable[[TableReader], Any]
    create: Callable[[str, Any], Channel]
    compose: Callable[[Renderer, MessageGroup, datetime], tuple[Payload, ...]]
    threaded: Callable[[Any], bool] = lambda settings: False
    """Whether a channel with these settings keeps one conversation per incident."""
    compose_incident: Callable[[Renderer, Any, MessageGroup, Conversation, datetime, str | None],
                               tuple[Payload, ...]] | None = None
    """``compose`` for a threaded channel: (renderer, settings, group, conversation, now, job owner)."""
    compose_with_settings: Callable[[Renderer, Any, MessageGroup, datetime], tuple[Payload, ...]] | None = None
    """``compose`` for a type whose payload depends on the channel's settings: (renderer, settings, group, now)."""

    def compose_for(self, renderer: Renderer, settings: Any, group: MessageGroup, now: datetime
                    ) -> tuple[Payload, ...]:
        """Compose ``group`` for one channel of this type: with its settings when the type needs them."""
        if self.compose_with_settings is not None:
            return self.compose_with_settings(renderer, settings, group, now)
        return self.compose(renderer, group, now)
