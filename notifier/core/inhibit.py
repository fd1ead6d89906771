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


def inhibitions(rules: Sequence[Rule], states: Iterable[AlertState]) -> dict[tuple[str, str], str]:
    """(job, muted rule) -> the firing rule that mutes it, from the alert states of this moment.

    The notify filter uses the keys; ``notifier alerts`` names the muting rule.
    """
    inhibits = {rule.name: rule.inhibits for rule in rules if rule.inhibits}
    if not inhibits:
        return {}
    return {(state.job, muted): state.rule for state in states
            if state.phase == "firing" and state.rule in inhibits for muted in inhibits[state.rule]}


def inhibition_filter(rules: Sequence[Rule]) -> NotifyFilter:
    """A lifecycle notify filter that drops candidates muted by a firing inhibiting alert."""

    def keep(alerts: tuple[Alert, ...], states: Mapping[str, AlertState], now: datetime) -> tuple[Alert, ...]:
        muted = inhibitions(rules, states.values())
        return tuple(a for a in alerts if (a.key, a.rule) not in muted) if muted else alerts

    return keep
