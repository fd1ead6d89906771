"""The production clock: the one place outside tests that reads the wall time.

Everything that needs ``now`` takes a ``Clock`` (``notifier.core.models.Clock``) so the
functional core never reads time itself and tests inject a manual one.
"""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)
