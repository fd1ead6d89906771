"""Every error notifier raises on purpose.

    NotifierError
    ├── ConfigError      bad notifier.toml, rule file or template (exit code 2)
    ├── SourceError      the DGC API could not be asked or answered badly
    ├── StateError       the SQLite state file is unusable
    ├── ChannelError     a channel could not deliver (``retryable`` says whether to try again)
    └── TemplateError    a template failed to render (the caller falls back to plain text)

Third-party errors are wrapped at the boundary with ``raise ... from exc`` so that
callers handle one tree and the original cause stays in the traceback.
"""

from __future__ import annotations


class NotifierError(Exception):
    """Base of every error notifier raises on purpose."""


class ConfigError(NotifierError):
    """Raised when configuration, rules or templates are invalid; names file, table and key."""

    def __init__(self, message: str, *, file: str | None = None, where: str | None = None,
                 key: str | None = None) -> None:
        self.file = file
        self.where = where
        self.key = key
        self.detail = message
        parts = [p for p in (file, where, key) if p]
        super().__init__(f"{': '.join(parts)}: {message}" if parts else message)

    def located(self, file: str, where: str | None = None) -> ConfigError:
        """The same error, naming ``file`` (and ``where`` when it had none): for errors raised below the loader."""
        return ConfigError(self.detail, file=self.file or file, where=self.where or where, key=self.key)


class SourceError(NotifierError):
    """Raised when a job's status could not be fetched or parsed."""

    def __init__(self, message: str, *, kind: str = "error", status_code: int | None = None,
                 error_code: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status_code = status_code
        self.error_code = error_code
        self.retry_after = retry_after


class StateError(NotifierError):
    """Raised when the state file cannot be opened, migrated or written."""


class ChannelError(NotifierError):
    """Raised by a channel that failed to deliver; ``retryable`` tells the outbox whether to retry."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class TemplateError(NotifierError):
    """Raised when a template cannot be loaded or rendered."""
