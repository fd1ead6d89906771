"""Label names an alert carries to Alertmanager-shaped payloads, and what a static label may be.

Pure: shared by the rule files (a rule's ``labels``), the webhook channel's
``format = "alertmanager"`` and the Alertmanager channel (their ``labels`` tables), so
all three refuse the same names for the same reasons.
"""

from __future__ import annotations

import re

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
"""Alertmanager's (Prometheus') label name syntax."""

BUILTIN = ("alertname", "job", "node", "node_type", "severity", "source", "project_id", "workspace")
"""Labels notifier sets itself from the alert and its source; a static label may not replace one,
or a typo in a config could move an alert to another team's route."""


def label_problem(name: str, value: object) -> str | None:
    """Why ``name = value`` cannot be a static label, or None; never echoes the value's text."""
    if not LABEL_NAME.fullmatch(name):
        return "not a valid label name: letters, digits and '_', not starting with a digit"
    if name.startswith("__"):
        return "label names starting with '__' are reserved for Alertmanager's internal use"
    if name in BUILTIN:
        return f"{name!r} is set by notifier itself (built-in labels: {', '.join(BUILTIN)})"
    if not isinstance(value, str):
        return f"expected a string, got {type(value).__name__}"
    if not value:
        return "must not be empty (an empty label is the same as no label)"
    return None
