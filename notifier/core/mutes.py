"""Mutes: silences and maintenance windows, as notify filters.

A mute never changes an alert's lifecycle: a muted alert is still pending, firing and
resolved as usual, it is only not *sent*. Because the lifecycle records
``last_notified_at`` only for alerts a filter let through, an alert still firing when
its mute ends goes out once then; one that resolved while muted sends nothing (it was
never announced, or its resolve fell in the mute: Alertmanager's behaviour).

Matchers are globs on rule, source, job and node (``fnmatch`` semantics, case-sensitive); a
job-scope alert has node "", which only ``"*"`` (the default) matches. The job glob matches
the bare DataArts job name, the source glob the ``[sources.NAME]`` name.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from notifier.core.lifecycle import NotifyFilter
from notifier.core.models import Alert, AlertState, split_job_key


@dataclass(frozen=True, slots=True)
class Matchers:
    """Which alerts a mute covers: globs on the rule name, the source, the (bare) job name and the node."""

    rule: str = "*"
    job: str = "*"
    node: str = "*"
    source: str = "*"

    def match(self, rule: str, job: str, node: str | None) -> bool:
        """``job`` is a job key (``models.job_key``): ``source`` matches its source, ``job`` its bare name."""
        source, bare = split_job_key(job)
        return (fnmatch.fnmatchcase(rule, self.rule) and fnmatch.fnmatchcase(bare, self.job)
                and fnmatch.fnmatchcase(node or "", self.node) and fnmatch.fnmatchcase(source, self.source))

    def describe(self) -> str:
        """``rule=node-exception job=job_sms``: the matchers that are not "*"."""
        parts = [f"{k}={v}" for k, v in (("rule", self.rule), ("source", self.source), ("job", self.job),
                                         ("node", self.node)) if v != "*"]
        return " ".join(parts) or "rule=*"

    @property
    def stored_job(self) -> str:
        """The state file's ``job`` column: ``SOURCE_GLOB/JOB_GLOB``, or the job glob alone for every source.

        A job name cannot hold ``/``, so the column needs no new schema; rows written before
        sources existed read as every source.
        """
        return self.job if self.source == "*" else f"{self.source}/{self.job}"

    @classmethod
    def stored(cls, rule: str, job: str, node: str) -> Matchers:
        """The inverse of ``stored_job``."""
        source, sep, bare = job.partition("/")
        return cls(rule, bare, node, source) if sep else cls(rule, job, node)


@dataclass(frozen=True, slots=True)
class Silence:
    """A mute an operator added (``notifier silence add``), active from ``starts_at`` until ``ends_at``."""

    id: str
    matchers: Matchers
    starts_at: datetime
    ends_at: datetime
    created_at: datetime
    comment: str
    author: str = ""

    @property
    def label(self) -> str:
        return f"silence {self.id}"

    def active(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at


class Mute(Protocol):
    """Anything that mutes matching alerts while active: a Silence, a maintenance window."""

    @property
    def matchers(self) -> Matchers: ...

    @property
    def label(self) -> str: ...

    def active(self, now: datetime) -> bool: ...


def muted_by(rule: str, job: str, node: str | None, mutes: Iterable[Mute], now: datetime) -> str | None:
    """The label of the first active mute covering this alert ("silence 3f9a...", "maintenance nightly").

    ``job`` is a job key (``models.job_key``).
    """
    for mute in mutes:
        if mute.active(now) and mute.matchers.match(rule, job, node):
            return mute.label
    return None


def mute_filter(mutes: Sequence[Mute]) -> NotifyFilter:
    """A notify filter that drops every candidate an active mute covers."""

    def keep(alerts: tuple[Alert, ...], states: Mapping[str, AlertState], now: datetime) -> tuple[Alert, ...]:
        active = [m for m in mutes if m.active(now)]
        if not active:
            return alerts
        return tuple(a for a in alerts if muted_by(a.rule, a.key, a.node, active, now) is None)

    return keep


def chain(*filters: NotifyFilter) -> NotifyFilter:
    """Apply notify filters one after the other (each gets what the previous kept)."""

    def keep(alerts: tuple[Alert, ...], states: Mapping[str, AlertState], now: datetime) -> tuple[Alert, ...]:
        for f in filters:
            alerts = f(alerts, states, now)
        return alerts

    return keep
