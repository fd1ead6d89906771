"""Flap damping: an alert that keeps coming and going says so once, then waits until it is stable.

A *change* is an alert going from not firing to firing or back. When a fingerprint
changes ``threshold`` times within ``window``, it is *flapping*: the message of the
change that tipped it says so ("flapping: 3 changes in 30m"), then nothing more is
sent for it until it has not changed for ``quiet``; then one message gives the state it
settled in (firing or resolved). The lifecycle keeps tracking the alert all along.

Why the default threshold is 3 and not 4: with 3, a node flipping every poll sends
firing, resolved, then the flapping notice (3 messages) and then nothing until it has
been stable for ``quiet``; with 4 it would send four before damping starts.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from notifier.core.durations import format_duration
from notifier.core.models import Alert, AlertState


@dataclass(frozen=True, slots=True)
class FlapPolicy:
    """``[noise]``: when an alert counts as flapping and how long it must be stable to stop."""

    threshold: int = 3  # changes within the window that make it flapping; 0 turns damping off
    window: float = 1800.0
    quiet: float = 900.0


DEFAULT_FLAP = FlapPolicy()


@dataclass(frozen=True, slots=True)
class FlapState:
    """One fingerprint's recent changes; persisted so a restart does not forget it is flapping."""

    fingerprint: str
    rule: str
    job: str
    node: str
    changes: tuple[datetime, ...] = ()
    flapping_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class Damped:
    """What to send after damping, and the flap states to keep (the complete new set)."""

    notify: tuple[Alert, ...]
    flaps: Mapping[str, FlapState]


Settle = Callable[[FlapState, AlertState | None], Alert | None]
"""Builds the "stable again" message for a fingerprint: firing from its state, else resolved."""

Judged = Callable[[str, str], bool]
"""Whether (rule, job) was judged this cycle: alerts of a job that could not be fetched cannot change."""


def damp(notify: tuple[Alert, ...], previous: Mapping[str, AlertState], states: Mapping[str, AlertState],
         flaps: Mapping[str, FlapState], judged: Judged, policy: FlapPolicy, now: datetime,
         settle: Settle) -> Damped:
    """Record this cycle's changes, and hold back messages of flapping alerts.

    ``previous``/``states`` are the alert states before and after the cycle. Only a
    fingerprint that changed gets a flap state; one with no recent change and no
    flapping is forgotten. The caller must treat a firing alert left out of ``notify``
    as not sent (so it is offered again, and goes out when it settles).
    """
    if policy.threshold <= 0:
        return Damped(notify, {})
    window = timedelta(seconds=policy.window)
    out: dict[str, FlapState] = {}
    for fp in previous.keys() | states.keys() | flaps.keys():
        old, new, flap = previous.get(fp), states.get(fp), flaps.get(fp)
        ref = new or old or flap
        assert ref is not None
        changed = judged(ref.rule, ref.job) and _firing(old) != _firing(new)
        if flap is None and not changed:
            continue
        flap = flap or FlapState(fp, ref.rule, ref.job, ref.node)
        changes = tuple(c for c in (*flap.changes, *((now,) if changed else ())) if now - c < window)
        if changes or flap.flapping_since is not None:
            out[fp] = replace(flap, changes=changes)

    sent: list[Alert] = []
    settled: set[str] = set()
    settling: dict[str, FlapState] = {}
    for fp, flap in out.items():
        last_change = max(flap.changes, default=flap.flapping_since)
        if (flap.flapping_since is not None and last_change is not None and judged(flap.rule, flap.job)
                and (now - last_change).total_seconds() >= policy.quiet):
            settling[fp] = flap
    for alert in notify:
        current = out.get(alert.fingerprint)
        if current is None or alert.event:
            sent.append(alert)
        elif alert.fingerprint in settling:
            flap = settling.pop(alert.fingerprint)  # the firing message it held back: now it settles
            sent.append(_settled(alert, now - max(flap.changes, default=now)))
            settled.add(alert.fingerprint)
        elif current.flapping_since is not None:
            continue  # flapping: quiet
        elif len(current.changes) >= policy.threshold:
            out[alert.fingerprint] = replace(current, flapping_since=now)
            sent.append(_flapping_notice(alert, len(current.changes), policy))
        else:
            sent.append(alert)
    for fp, flap in settling.items():
        final = settle(flap, states.get(fp))
        if final is not None:
            sent.append(_settled(final, now - max(flap.changes, default=now)))
        settled.add(fp)
    for fp in settled:
        out[fp] = replace(out[fp], flapping_since=None)
        if not out[fp].changes and fp not in states:
            del out[fp]
    return Damped(tuple(sent), out)


def _firing(state: AlertState | None) -> bool:
    return state is not None and state.phase == "firing"


def _flapping_notice(alert: Alert, changes: int, policy: FlapPolicy) -> Alert:
    """The message that tipped it, saying it is flapping (its own words first: they say what is wrong)."""
    who = alert.node or alert.key
    window = format_duration(policy.window)
    return replace(alert, summary=(f"{alert.summary}; {who} is flapping: {changes} changes in {window}, "
                                   f"quiet until it is stable for {format_duration(policy.quiet)}"))


def _settled(alert: Alert, stable_for: timedelta) -> Alert:
    who = alert.node or alert.key
    what = f"still {alert.state}" if alert.status == "firing" else f"{alert.state or 'clear'}"
    return replace(alert, summary=f"{who} stopped flapping, stable for {format_duration(stable_for)}: {what}")



def flapping(flaps: Collection[FlapState]) -> tuple[FlapState, ...]:
    """The flapping ones, for ``notifier alerts``."""
    return tuple(f for f in flaps if f.flapping_since is not None)
