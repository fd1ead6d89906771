"""Secrets come from environment variables or files, never from config or rule files.

``Secret`` keeps the value out of ``repr``/``str`` so it cannot end up in a log line
by accident; call ``reveal()`` at the one place that needs the value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from notifier.errors import ConfigError


class Secret:
    """A string that does not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


def read_secret(*, env: str | None, file: str | None = None, what: str,
                environ: Mapping[str, str] | None = None, required: bool = True) -> Secret | None:
    """Read a secret from ``file`` (preferred: systemd credentials) or the variable ``env``.

    A missing required secret is a ConfigError that names the variable or file, never the value.
    """
    environ = os.environ if environ is None else environ
    if file:
        path = Path(os.path.expandvars(file))
        try:
            if path.stat().st_mode & 0o002:
                raise ConfigError(f"secret file {str(path)!r} is writable by every user: anyone could replace the "
                                  f"secret; run: chmod o-w {path}", where=what)
            value = path.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"cannot read secret file {str(path)!r}: {reason}", where=what) from None
        if not value:  # an empty HMAC key or token would "work" and protect nothing
            raise ConfigError(f"secret file {str(path)!r} is empty", where=what)
        return Secret(value)
    if env and environ.get(env):
        return Secret(environ[env])
    if required:
        source = f"environment variable {env}" if env else "a secret file"
        raise ConfigError(f"missing secret: set {source}", where=what)
    return None
