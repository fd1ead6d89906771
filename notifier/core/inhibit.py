"""Inhibition: while a job-scope alert fires, the node alerts it names stay quiet.

A job in EXCEPTION usually has nodes in EXCEPTION too; one message about the job says
it all. ``inhibits = ["node-exception"]`` on the job rule mutes those node alerts of the
same job for as long as the job alert fires. Muted alerts keep their lifecycle state;
the lifecycle offers them again every cycle, so a node still failing after the job
recovers is reported then.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from notifier.core.lifecycle import NotifyFilter
from notifier.core.models import Alert, AlertState, Rule


def inhibited_by(rule: str, job: str, states: Iterable[AlertState], rules: Sequence[Rule]) -> str | None:
    """The name of the firing rule that inhibits ``rule`` on ``job`` now, if any (for ``notifier alerts``)."""
    inhibits = {r.name: r.inhibits for r in rules if r.inhibits}
    for state in states:
        if state.phase == "firing" and state.job == job and rule in inhibits.get(state.rule, ()):
            return state.rule
    return None


def inhibition_filter(rules: Sequence[Rule]) -> NotifyFilter:
    """A lifecycle notify filter that drops candidates muted by a firing inhibiting alert."""
    inhibits = {rule.name: frozenset(rule.inhibits) for rule in rules if rule.inhibits}

    def keep(alerts: tuple[Alert, ...], states: Mapping[str, AlertState], now: datetime) -> tuple[Alert, ...]:
        if not inhibits:
            return alerts
        muted: set[tuple[str, str]] = set()  # (job, muted rule name)
        for state in states.values():
            if state.phase == "firing" and state.rule in inhibits:
                muted.update((state.job, name) for name in inhibits[state.rule])
        return tuple(a for a in alerts if (a.job, a.rule) not in muted) if muted else alerts

    return keep
