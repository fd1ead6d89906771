"""Strict reading of TOML tables: every value typed, every unknown key an error.

A typo in a config or rule file must never silently disable an alert, so readers
remember which keys they consumed and ``finish()`` rejects the rest, suggesting the
closest known key. Every error names the file, the table and the key.
"""

from __future__ import annotations

import builtins
import difflib
import stat
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from notifier.core.durations import parse_duration
from notifier.errors import ConfigError

T = TypeVar("T")
_REQUIRED: Any = object()


def refuse_world_writable(path: Path) -> None:
    """A file every user may write could redirect alerts or leak secrets: refuse it (the loader is the gate)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # load_toml says what is wrong with it
    if mode & stat.S_IWOTH:
        raise ConfigError(f"is writable by every user (mode {stat.S_IMODE(mode):o}): anyone could change where "
                          f"alerts go; run: chmod o-w {path}", file=str(path))


def load_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file; a syntax error names the file, line and column."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", file=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 (byte {exc.start}): TOML files must be UTF-8; re-save it as UTF-8",
                          file=str(path)) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=str(path)) from exc


class TableReader:
    """Typed access to one TOML table, with the file and table name for errors."""

    def __init__(self, data: Mapping[str, Any], *, file: str, where: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"expected a table, got {type(data).__name__}", file=file, where=where)
        self.data = data
        self.file = file
        self.where = where
        self._used: set[str] = set()

    def error(self, key: str | None, message: str) -> ConfigError:
        return ConfigError(message, file=self.file, where=self.where, key=key)

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = _REQUIRED) -> Any:
        self._used.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                raise self.error(key, "required key is missing")
            return default
        return self.data[key]

    def _typed(self, key: str, types: type | tuple[type, ...], label: str, default: Any) -> Any:
        value = self.raw(key, default)
        if value is default and key not in self.data:
            return value
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            raise self.error(key, f"expected {label}, got a boolean")
        if not isinstance(value, types):
            raise self.error(key, f"expected {label}, got {type(value).__name__} {value!r}")
        return value

    def str(self, key: builtins.str, default: Any = _REQUIRED) -> Any:
        return self._typed(key, str, "a string", default)

    def bool(self, key: builtins.str, default: Any = _REQUIRED) -> Any:
        return self._typed(key, bool, "true or false", default)

    def int(self, key: builtins.str, default: Any = _REQUIRED, *, minimum: builtins.int | None = None) -> Any:
        value = self._typed(key, int, "an integer", default)
        if minimum is not None and isinstance(value, int) and value < minimum:
            raise self.error(key, f"must be at least {minimum}, got {value}")
        return value

    def number(self, key: builtins.str, default: Any = _REQUIRED, *, minimum: float | None = None) -> Any:
        value = self._typed(key, (int, float), "a number", default)
        if minimum is not None and isinstance(value, (int, float)) and value < minimum:
            raise self.error(key, f"must be at least {minimum}, got {value}")
        return float(value) if isinstance(value, (int, float)) else value

    def choice(self, key: builtins.str, choices: Sequence[builtins.str], default: Any = _REQUIRED) -> Any:
        value = self.str(key, default)
        if key in self.data and value not in choices:
            raise self.error(key, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value

    def seconds(self, key: builtins.str, default: Any = _REQUIRED, *, positive: builtins.bool = False) -> Any:
        """A duration string ("90s", "1h30m") as float seconds; ``positive`` rejects "0s"."""
        value = self.raw(key, default)
        if key not in self.data:
            return value
        try:
            seconds = parse_duration(value).total_seconds()
        except ValueError as exc:
            raise self.error(key, str(exc)) from None
        if positive and seconds <= 0:
            raise self.error(key, "must be a positive duration")
        return seconds

    def str_list(self, key: builtins.str, default: Any = _REQUIRED) -> Any:
        """A list of strings, returned as a tuple; a single string is accepted as a one-item list."""
        value = self.raw(key, default)
        if key not in self.data:
            return value
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, f"expected a list of strings, got {value!r}")
        return tuple(value)

    def env_or_file(self, stem: builtins.str, default_env: builtins.str | None = None
                    ) -> tuple[builtins.str | None, builtins.str | None]:
        """Where a secret lives: ``<stem>_env`` names a variable, ``<stem>_file`` a file; not both.

        Both set would make one silently win; the operator must choose.
        """
        env_key, file_key = f"{stem}_env", f"{stem}_file"
        if self.has(env_key) and self.has(file_key):
            raise self.error(file_key, f"set {env_key} or {file_key}, not both")
        file = self.str(file_key, None)
        if file and not file.startswith(("/", "$", "~")):  # like every other path: from the config's directory
            file = str(Path(self.file).resolve().parent / file)
        return self.str(env_key, default_env), file

    def table(self, key: builtins.str, default: Any = _REQUIRED) -> TableReader | Any:
        value = self.raw(key, default)
        if key not in self.data:
            return value
        return TableReader(value, file=self.file, where=f"{self.where}.{key}" if self.where else key)

    def optional_table(self, key: builtins.str) -> TableReader:
        """The sub-table ``key``, or an empty one when absent: every key then takes its default."""
        reader = self.table(key, None)
        return reader if reader is not None else TableReader({}, file=self.file,
                                                             where=f"{self.where}.{key}" if self.where else key)

    def finish(self, known: Iterable[builtins.str] = ()) -> None:
        """Reject every key that was not read; suggest the closest known one."""
        allowed = self._used | set(known)
        for key in self.data:
            if key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(sorted(allowed))})"
                raise self.error(key, f"unknown key{hint}")
