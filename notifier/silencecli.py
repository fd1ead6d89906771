"""``notifier silence add|list|expire`` and ``notifier ack``: operator commands on a running service.

They open the state file without the process lock (the service holds it) and write
through SQLite's busy timeout; the service picks the change up at its next cycle.
Exit codes: 0 done; 2 bad arguments or config (nothing written).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

from notifier.clock import utcnow
from notifier.config import load_config
from notifier.core.durations import format_duration, parse_duration
from notifier.core.models import AlertState
from notifier.core.mutes import Matchers, Mute, Silence, muted_by
from notifier.render import timestamp
from notifier.silences import Ack, new_silence_id
from notifier.state import StateStore

EXIT_OK, EXIT_USAGE = 0, 2
MAX_SILENCE = timedelta(days=365)


def run(args: argparse.Namespace, config_path: Path) -> int:
    """Dispatch ``silence add|list|expire``."""
    action = {"add": _add, "list": _list, "expire": _expire}[args.silence_command]
    config = load_config(config_path)
    with StateStore.open(config.state_path) as store:
        return action(args, store, config.maintenance, utcnow())


def matchers_from(args: argparse.Namespace) -> Matchers | None:
    """The --rule/--source/--job/--node globs given, or None when none was (a mute of everything must be said).

    An empty glob is refused: ``--job "$JOB"`` with JOB unset must not silence every job.
    ``--job`` matches the bare job name; ``--source`` (default: every source) the source.
    """
    source = getattr(args, "source", None)
    given = {"rule": args.rule, "source": source, "job": args.job, "node": args.node}
    for name, value in given.items():
        if value is not None and not value.strip():
            raise ValueError(f"--{name} is empty: an empty glob would match nothing (or, left out, everything); "
                             "give a name or a glob such as 'job_*'")
    for name in ("source", "job"):
        value = given[name]
        if value is not None and "/" in value:
            hint = (f"say --source {value.partition('/')[0]!r} --job {value.partition('/')[2]!r}" if name == "job"
                    else "a source name is letters, digits, '_' and '-'")
            raise ValueError(f"--{name} {value!r}: no {name} name has a '/'; {hint}")
    if all(value is None for value in given.values()):
        return None
    return Matchers(rule=args.rule or "*", job=args.job or "*", node=args.node or "*", source=source or "*")


def parse_until(text: str, now: datetime) -> datetime:
    """ISO 8601 (``2026-12-02T06:00Z``, ``2026-12-02 14:00+08:00``); without a zone it is UTC."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--until {text!r}: expected an ISO 8601 time like 2026-12-02T06:00Z") from None
    when = when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)
    if when <= now:
        raise ValueError(f"--until {text!r} is in the past (now is {timestamp(now)})")
    return when.astimezone(timezone.utc)


def _add(args: argparse.Namespace, store: StateStore, _windows: Sequence[Mute], now: datetime) -> int:
    try:
        matchers = matchers_from(args)
    except ValueError as exc:
        return _usage(str(exc))
    if matchers is None:
        return _usage("give at least one of --rule, --source, --job, --node (to silence everything, say --rule '*')")
    if not args.comment.strip():
        return _usage("--comment must say why (it is shown to whoever wonders why alerts are quiet)")
    try:
        ends = now + parse_duration(args.duration) if args.duration else parse_until(args.until, now)
    except ValueError as exc:
        return _usage(f"--for {args.duration!r}: {exc}" if args.duration else str(exc))
    if ends <= now:
        return _usage("--for must be a positive duration, e.g. 2h")
    if ends - now > MAX_SILENCE:
        return _usage(f"a silence longer than {MAX_SILENCE.days} days is a rule change: edit the rules instead")
    silence = Silence(id=new_silence_id(), matchers=matchers, starts_at=now, ends_at=ends, created_at=now,
                      comment=args.comment.strip(), author=args.author or "")
    store.silences.add(silence)
    print(silence.id)
    print(f"silenced {matchers.describe()} until {timestamp(ends)} ({format_duration(ends - now)}); "
          "the service applies it at its next cycle", file=sys.stderr)
    return EXIT_OK


def _list(args: argparse.Namespace, store: StateStore, windows: Sequence[Mute], now: datetime) -> int:
    silences = store.silences.current(now)
    alerts = tuple(store.load_alerts().values())
    print(f"SILENCES ({len(silences)})")
    if silences:
        print(f"  {'ID':<16} {'MATCHERS':<40} {'START':<20} {'END':<20} {'MUTES':>5}  AUTHOR: COMMENT")
    for s in silences:
        print(f"  {s.id:<16} {s.matchers.describe():<40} {timestamp(s.starts_at):<20} {timestamp(s.ends_at):<20} "
              f"{_muting(s, alerts, now):>5}  {s.author or '-'}: {s.comment}")
    active = [w for w in windows if w.active(now)]
    print(f"MAINTENANCE WINDOWS ACTIVE NOW ({len(active)} of {len(windows)})")
    for w in active:
        print(f"  {w.label:<40} {w.matchers.describe():<40} mutes {_muting(w, alerts, now)}")
    return EXIT_OK


def _muting(mute: Mute, alerts: Sequence[AlertState], now: datetime) -> int:
    """How many tracked alerts this mute covers right now."""
    if not mute.active(now):
        return 0
    return sum(1 for a in alerts if muted_by(a.rule, a.job, a.node, (mute,), now) is not None)


def _expire(args: argparse.Namespace, store: StateStore, _windows: Sequence[Mute], now: datetime) -> int:
    found = store.silences.find(args.id, now)
    if not found:
        return _usage(f"no current silence with ID {args.id!r} (see `notifier silence list`)")
    if len(found) > 1:
        return _usage(f"ID prefix {args.id!r} matches {len(found)} silences: give more of it")
    (silence,) = found
    store.silences.expire(silence.id, now)
    print(f"expired silence {silence.id} ({silence.matchers.describe()}); alerts it muted that still fire are "
          "sent at the service's next cycle")
    return EXIT_OK


def ack(args: argparse.Namespace, config_path: Path) -> int:
    """``notifier ack FINGERPRINT | --rule/--job/--node``: no more repeats for those firing alerts."""
    try:
        matchers = matchers_from(args)
    except ValueError as exc:
        return _usage(str(exc))
    if (args.fingerprint is None) == (matchers is None):
        return _usage("give either a FINGERPRINT (see `notifier alerts`) or matchers (--rule/--source/--job/--node)")
    config = load_config(config_path)
    if not config.state_path.exists():
        return _usage(f"no state file yet at {config.state_path}: nothing is firing")
    now = utcnow()
    with StateStore.open(config.state_path) as store:
        firing = [a for a in store.load_alerts().values() if a.phase == "firing"]
        chosen = ([a for a in firing if a.fingerprint.startswith(args.fingerprint)] if args.fingerprint is not None
                  else [a for a in firing if matchers is not None and matchers.match(a.rule, a.job, a.node)])
        if args.fingerprint is not None and len(chosen) > 1:
            return _usage(f"fingerprint prefix {args.fingerprint!r} matches {len(chosen)} alerts: give more of it")
        if not chosen:
            what = f"fingerprint {args.fingerprint}" if args.fingerprint else (matchers.describe() if matchers else "")
            return _usage(f"no firing alert matches {what} (see `notifier alerts`)")
        if not store.silences.ack(Ack(a.fingerprint, now, args.author or "", args.comment) for a in chosen):
            return _usage("the alert resolved meanwhile: nothing to acknowledge")
    for a in chosen:
        print(f"acknowledged {a.fingerprint} {a.rule} {a.job}{'/' + a.node if a.node else ''}: "
              "no more repeats; its resolve is still sent")
    return EXIT_OK


def _usage(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE

