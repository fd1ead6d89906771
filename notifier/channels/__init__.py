"""Channels, one module each; the registry below is the only list of them."""

from __future__ import annotations

from notifier.channels import alertmanager, console, email, slack, webhook
from notifier.channels.base import Channel, ChannelType
from notifier.core.models import MessageGroup

CHANNEL_TYPES: dict[str, ChannelType] = {
    "alertmanager": alertmanager.TYPE,
    "console": console.TYPE,
    "email": email.TYPE,
    "slack": slack.TYPE,
    "webhook": webhook.TYPE,
}

__all__ = ["CHANNEL_TYPES", "Channel", "ChannelType", "MessageGroup"]
