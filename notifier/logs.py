"""Logging to stderr (journald picks it up), as text or one JSON object per line."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone

_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: easy for journald/Loki/jq, never multi-line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                entry[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


_JSON_NAMES = {"id": "notification_id", "group": "job"}
"""Text keys kept short for people, JSON keys named for queries."""


def event(logger: logging.Logger, level: int, what: str, /, *, exc_info: bool = False, **fields: object) -> None:
    """Log one event: ``what k=v ...`` as text, and with ``--log-format json`` the same fields as keys.

    The JSON ``event`` is ``what`` up to its first comma or colon, in snake case
    ("notification not delivered, will retry" -> "notification_not_delivered"); fields that
    are None are left out of both.
    """
    present = {k: v for k, v in fields.items() if v is not None}
    text = " ".join([what, *(f"{k}={v}" for k, v in present.items())])
    name = re.split(r"[,:]", what, maxsplit=1)[0].strip().replace(" ", "_").lower()
    extra = {"event": name, **{_JSON_NAMES.get(k, k): v for k, v in present.items()}}
    logger.log(level, "%s", text, extra=extra, exc_info=exc_info)


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # third-party chatter stays at warning unless debugging
    for noisy in ("httpx", "httpcore", "apscheduler", "slack_sdk", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
