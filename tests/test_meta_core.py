"""Meta-alerts in the pure core: what holds, when it starts, what never claims a recovery it did not see."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from notifier import statefile
from notifier.core.cycle import group_alerts, plan_cycle
from notifier.core.durations import parse_duration
from notifier.core.meta import AUTH_FAILED, CHANNEL_FAILING, DEFAULT_META, SOURCE_DOWN, Health, Streak, meta_rules
from notifier.core.models import FetchError, FetchResult, Rule
from notifier.errors import ConfigError
from notifier.rulefile import check_rules
from notifier.state import CycleWrite, StateStore

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
MIN = timedelta(minutes=1)
RULES = meta_rules(DEFAULT_META, ("c",))
TIMEOUT = FetchResult(snapshots=(), errors=(FetchError("j", "timeout", "j: timed out"),))


def run(healths: list[Health]) -> list[list[tuple[str, str]]]:
    """Plan one cycle per Health (the source failing all along); what each cycle sends."""
    alerts: dict = {}
    out, now = [], T0
    for health in healths:
        plan = plan_cycle(RULES, {}, alerts, TIMEOUT, None, now, health=health, flaps={})
        alerts = dict(plan.alerts)
        out.append([(a.status, a.rule) for a in plan.notify])
        now += MIN
    return out


def down(cycles: int) -> Health:
    return Health(source_failures=Streak(cycles, T0), source_error="j: timed out")


def refused(cycles: int) -> Health:
    return Health(source_failures=Streak(cycles, T0), source_error="401", auth_error="401 APIG.0301; auth = aksk")


def test_source_down_is_dated_from_the_first_failed_cycle() -> None:
    """Fires at the third failed cycle, saying how long the source has been failing since the first."""
    plan = None
    alerts: dict = {}
    for i in range(3):
        plan = plan_cycle(RULES, {}, alerts, TIMEOUT, None, T0 + i * MIN, health=down(i + 1), flaps={})
        alerts = dict(plan.alerts)
    assert plan is not None
    (alert,) = plan.notify
    assert alert.rule == SOURCE_DOWN and alert.starts_at == T0 and "failing for 2m" in alert.summary
    assert alert.since == T0  # the message's "DOWN since" is the first failure too, not the cycle it fired in


def test_a_401_during_an_outage_does_not_say_the_source_is_back() -> None:
    """Timeouts (source-down fires), then 401s: auth-failed fires and source-down keeps holding."""
    sent = run([down(1), down(2), down(3), refused(4), refused(5)])
    assert sent[2] == [("firing", SOURCE_DOWN)]
    assert sent[3] == [("firing", AUTH_FAILED)]
    assert sent[4] == []


def test_timeouts_after_a_401_do_not_say_auth_works_again() -> None:
    """Auth-failed keeps holding while the source cannot be asked at all; source-down joins after 3 cycles."""
    sent = run([refused(1), down(2), down(3), down(4)])
    assert sent[0] == [("firing", AUTH_FAILED)]
    assert all(status == "firing" for cycle in sent[1:] for status, _ in cycle)
    assert sent[2] == [("firing", SOURCE_DOWN)]


def test_a_401_from_the_start_is_auth_failed_alone() -> None:
    """A refusal is one alert, not two: source-down does not start while auth-failed says it."""
    sent = run([refused(1), refused(2), refused(3), refused(4)])
    assert sent == [[("firing", AUTH_FAILED)], [], [], []]


@pytest.mark.parametrize(("meta_channels", "configured", "targets"), [
    (("a", "b"), ("a", "b"), ["a"]),
    (("b",), ("a", "b"), ["a"]),
    (("b",), ("b",), []),
], ids=["others-in-meta", "only-itself-in-meta-falls-back", "nothing-else"])
def test_a_failing_channel_hears_about_itself_from_any_other(meta_channels: tuple[str, ...],
                                                            configured: tuple[str, ...], targets: list[str]) -> None:
    """notifier-channel-failing goes to the other [meta] channels, else every other channel, else is unrouted."""
    rules = meta_rules(DEFAULT_META.__class__(channels=meta_channels), configured)
    plan = plan_cycle(rules, {}, {}, FetchResult(snapshots=()), None, T0,
                      health=Health(failing_channels={"b": ("down", T0)}))
    (alert,) = [a for a in plan.notify if a.rule == CHANNEL_FAILING]
    grouping = group_alerts((alert,), configured)
    assert sorted(g.channel for g in grouping.groups) == targets
    assert bool(grouping.unrouted) is (not targets)


def test_user_rules_may_not_take_a_meta_alert_name() -> None:
    """`notifier-*` names are reserved: a user rule called notifier-job-missing is a ConfigError naming it."""
    rule = Rule(name="notifier-job-missing", scope="job", channels=("c",), status=("EXCEPTION",), file="r.toml")
    with pytest.raises(ConfigError, match=r"r.toml: rule 'notifier-job-missing': name: .*reserved|own meta-alerts"):
        check_rules([rule])


def test_a_duration_too_long_for_a_timedelta_is_a_clear_error() -> None:
    """`--for 99999999999d` is a ValueError with a message, not an OverflowError traceback."""
    with pytest.raises(ValueError, match="too long"):
        parse_duration("99999999999d")


def test_alerts_announced_before_the_upgrade_count_as_sent_once(tmp_path: Path) -> None:
    """The v1 -> v2 migration keeps the data and marks already-announced alerts as sent once."""
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    for statement in statefile._V1:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO alert (fingerprint, rule, job, node, phase, active_since, fired_at, last_notified_at) "
                 "VALUES ('fp1', 'r', 'j', 'n', 'firing', 1, 2, 3), ('fp2', 'r', 'j', 'm', 'pending', 1, NULL, NULL)")
    conn.commit()
    conn.close()
    path.chmod(0o600)
    with StateStore.open(path) as store:
        alerts = store.load_alerts()
        assert (alerts["fp1"].notified, alerts["fp2"].notified) == (1, 0)
        assert store.load_flaps() == {} and store.silences.acks() == {}


def test_an_ack_is_only_written_for_an_alert_firing_at_that_moment(tmp_path: Path) -> None:
    """Acknowledging a fingerprint that resolved meanwhile writes nothing (no ack for the next incident)."""
    from notifier.core.models import AlertState
    from notifier.silences import Ack

    with StateStore.open(tmp_path / "state.db") as store:
        store.commit_cycle(CycleWrite(at=T0, upsert_alerts=(
            AlertState(fingerprint="fp", rule="r", job="j", node="", phase="firing", active_since=T0),)))
        assert store.silences.ack([Ack("fp", T0), Ack("gone", T0)]) == 1
        assert set(store.silences.acks()) == {"fp"}
        store.commit_cycle(CycleWrite(at=T0, delete_alerts=("fp",)))
        assert store.silences.acks() == {}  # resolving deletes the ack in the same transaction


def test_a_channel_whose_rows_expired_is_still_failing(tmp_path: Path) -> None:
    """A channel down longer than [delivery] expire does not 'deliver again' because its rows expired."""
    from notifier.outbox import NewNotification

    with StateStore.open(tmp_path / "state.db") as store:
        store.commit_cycle(CycleWrite(at=T0, notifications=(NewNotification("hook", "job", {"text": "x"}),)))
        (row,) = store.outbox.pending_all("hook")
        store.outbox.mark_failed(row.id, "expired undelivered after 1d", T0 + timedelta(days=1), "expired")
        failing = store.outbox.failing_channels(T0 + timedelta(days=1, minutes=1), 900)
        assert failing["hook"][0].startswith("the last notification expired")
