"""The outbox deliverer: order per channel, isolation between channels, retries, expiry, crashes."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import notifier
from notifier.config import DeliveryConfig
from notifier.core.models import Notification
from notifier.delivery import Deliverer, DeliveryReport, backoff_delay
from notifier.errors import ChannelError, StateError
from notifier.outbox import NewNotification
from notifier.state import CycleWrite, StateStore
from tests.support.fakes import FakeClock, MaxRng

T0 = datetime(2024, 3, 1, 3, 4, 25, tzinfo=timezone.utc)
POLICY = DeliveryConfig(expire=3600.0, backoff=1.0, backoff_max=300.0)


Outcome = BaseException | Callable[[Notification], None] | None


class FakeChannel:
    """Records every send; ``script`` gives the outcome of each call in turn (then success)."""

    def __init__(self, name: str, script: list[Outcome] | None = None) -> None:
        self.name = name
        self.script = list(script or [])
        self.calls: list[int] = []
        self.sent: list[int] = []

    def send(self, notification: Notification) -> None:
        self.calls.append(notification.id)
        outcome = self.script.pop(0) if self.script else None
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome is not None:
            outcome(notification)
        self.sent.append(notification.id)

    def close(self) -> None:
        pass


def transient(message: str = "503 Service Unavailable", retry_after: float | None = None) -> ChannelError:
    return ChannelError(message, retryable=True, retry_after=retry_after)


@pytest.fixture
def clock() -> FakeClock:
    """The fake clock, started at T0 (``store`` is the shared fixture of tests/support/stores.py)."""
    return FakeClock(T0)


def queue(store: StateStore, *channels: str, at: datetime = T0) -> tuple[int, ...]:
    return store.commit_cycle(CycleWrite(at=at, notifications=tuple(
        NewNotification(channel=c, group="job_sms", payload={"text": f"message {i}"}) for i, c in enumerate(channels))))


def statuses(store: StateStore) -> dict[int, str]:
    return {r.id: r.status for r in store.outbox.rows(("pending", "delivered", "failed", "expired"))}


def deliverer(store: StateStore, clock: FakeClock, *channels: FakeChannel,
              policy: DeliveryConfig = POLICY) -> Deliverer:
    return Deliverer(store.outbox, {c.name: c for c in channels}, policy, clock=clock, rng=MaxRng())


# --- order and isolation -------------------------------------------------------------------

def test_transient_failures_keep_order_and_deliver_each_once(store: StateStore, clock: FakeClock) -> None:
    """A head row failing twice holds back later rows; then all go out in id order, once each."""
    ids = queue(store, "slack", "slack", "slack")
    slack = FakeChannel("slack", [transient(), transient()])
    d = deliverer(store, clock, slack)
    assert d.deliver_due() == DeliveryReport(retried=1)
    assert slack.calls == [ids[0]]
    assert d.next_due() == T0 + timedelta(seconds=1)
    clock.advance(1)
    assert d.deliver_due() == DeliveryReport(retried=1)
    clock.advance(2)
    assert d.deliver_due() == DeliveryReport(delivered=3)
    assert d.deliver_due() == DeliveryReport()
    assert slack.sent == list(ids)
    assert slack.calls == [ids[0], ids[0], *ids]
    assert d.next_due() is None


def test_rows_not_yet_due_hold_back_their_channel(store: StateStore, clock: FakeClock) -> None:
    """Before the retry time nothing of that channel is sent, including rows queued later."""
    first = queue(store, "slack")
    slack = FakeChannel("slack", [transient()])
    d = deliverer(store, clock, slack)
    d.deliver_due()
    later = queue(store, "slack", at=clock.now)
    clock.advance(0.5)
    assert d.deliver_due() == DeliveryReport()
    assert slack.calls == list(first)
    clock.advance(0.5)
    assert d.deliver_due() == DeliveryReport(delivered=2)
    assert slack.sent == [*first, *later]


def test_one_channel_down_does_not_block_another(store: StateStore, clock: FakeClock) -> None:
    """Channels drain concurrently: a hanging, failing channel does not delay a healthy one."""
    healthy_done = threading.Event()
    saw_healthy_finish: list[bool] = []

    def hang_until_healthy_done(_: Notification) -> None:
        saw_healthy_finish.append(healthy_done.wait(timeout=10))
        raise transient("connection timed out")

    def finish(_: Notification) -> None:
        healthy_done.set()

    ids = queue(store, "down", "ok", "down", "ok")
    down = FakeChannel("down", [hang_until_healthy_done])
    ok = FakeChannel("ok", [None, finish])
    report = deliverer(store, clock, down, ok).deliver_due()
    assert saw_healthy_finish == [True]
    assert report == DeliveryReport(delivered=2, retried=1)
    assert ok.sent == [ids[1], ids[3]]
    assert statuses(store) == {ids[0]: "pending", ids[1]: "delivered", ids[2]: "pending", ids[3]: "delivered"}
    assert not [t for t in threading.enumerate() if t.name.startswith("notifier-deliver")]


def test_permanent_failure_marks_failed_and_continues(store: StateStore, clock: FakeClock,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A non-retryable error fails that row (logged with the channel's fix) and the next row is sent."""
    ids = queue(store, "slack", "slack")
    error = ChannelError("invalid_auth: check the bot token in SLACK_BOT_TOKEN", retryable=False)
    slack = FakeChannel("slack", [error])
    with caplog.at_level(logging.INFO, logger="notifier.delivery"):
        report = deliverer(store, clock, slack).deliver_due()
    assert report == DeliveryReport(delivered=1, failed=1)
    assert slack.sent == [ids[1]]
    failed = store.outbox.rows(("failed",))
    assert [(r.id, r.attempts, r.last_error) for r in failed] == [(ids[0], 1, str(error))]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "SLACK_BOT_TOKEN" in errors[0].getMessage()
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == [f"notification delivered channel=slack id={ids[1]} group=job_sms attempts=1"]


def test_unexpected_exception_is_logged_with_traceback_and_retried(
        store: StateStore, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    """A bug in a channel keeps the row queued for retry and logs the traceback."""
    ids = queue(store, "hook", "hook")
    hook = FakeChannel("hook", [KeyError("boom")])
    with caplog.at_level(logging.WARNING, logger="notifier.delivery"):
        assert deliverer(store, clock, hook).deliver_due() == DeliveryReport(retried=1)
    assert hook.calls == [ids[0]]
    (row, _) = store.outbox.rows(("pending",))
    assert (row.attempts, row.last_error) == (1, "KeyError: 'boom'")
    assert any(r.exc_info and r.levelno == logging.ERROR for r in caplog.records)
    assert any(r.levelno == logging.WARNING and "next_attempt_at=" in r.getMessage() for r in caplog.records)


def test_delivered_rows_are_never_sent_again(store: StateStore, clock: FakeClock) -> None:
    """Once marked delivered, a row is not sent by later drains or by a fresh deliverer."""
    queue(store, "slack")
    slack = FakeChannel("slack")
    deliverer(store, clock, slack).deliver_due()
    clock.advance(3600)
    deliverer(store, clock, slack).deliver_due()
    assert len(slack.calls) == 1


def test_swapped_channels_are_used_from_the_next_round(store: StateStore, clock: FakeClock) -> None:
    """After a reload swaps ``channels``, queued rows go to the new channel objects."""
    queue(store, "slack")
    old, new = FakeChannel("slack", [transient()]), FakeChannel("slack")
    d = deliverer(store, clock, old)
    d.deliver_due()
    d.use_channels({"slack": new})
    clock.advance(1)
    assert d.deliver_due() == DeliveryReport(delivered=1)
    assert (old.sent, new.sent, dict(d.channels)) == ([], [1], {"slack": new})


# --- retry policy ----------------------------------------------------------------------

def test_backoff_doubles_and_is_capped(store: StateStore, clock: FakeClock) -> None:
    """Successive retries wait 1, 2, 4 ... seconds, never more than backoff_max."""
    queue(store, "slack")
    slack = FakeChannel("slack", [transient()] * 12)
    d = deliverer(store, clock, slack, policy=DeliveryConfig(expire=86400.0, backoff=1.0, backoff_max=300.0))
    waits = []
    for _ in range(12):
        assert d.deliver_due() == DeliveryReport(retried=1)
        due = d.next_due()
        assert due is not None
        waits.append((due - clock.now).total_seconds())
        clock.now = due
    assert waits == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
    assert store.outbox.rows()[0].attempts == 12


@pytest.mark.parametrize(("attempts", "retry_after", "low", "high"), [
    (1, None, 0.5, 1.0),
    (4, None, 4.0, 8.0),
    (40, None, 150.0, 300.0),
    (10_000, None, 150.0, 300.0),
    (1, 30.0, 30.0, 30.0),
    (10, 1.0, 150.0, 300.0),
], ids=["first", "fourth", "capped", "huge-attempts", "retry-after-wins", "backoff-wins"])
def test_backoff_delay_has_equal_jitter_and_honours_retry_after(
        attempts: int, retry_after: float | None, low: float, high: float) -> None:
    """Half the delay is fixed, half random; a channel's retry_after is a floor."""
    rng = random.Random(7)
    delays = [backoff_delay(attempts, POLICY, rng, retry_after) for _ in range(200)]
    assert all(low <= d <= high for d in delays)
    if low != high:
        assert len(set(delays)) > 1


def test_retry_after_from_the_channel_is_honoured(store: StateStore, clock: FakeClock) -> None:
    """A throttled channel is not tried again before its Retry-After."""
    queue(store, "slack")
    slack = FakeChannel("slack", [transient("ratelimited", retry_after=45.0)])
    d = deliverer(store, clock, slack)
    d.deliver_due()
    assert d.next_due() == T0 + timedelta(seconds=45)
    clock.advance(44)
    assert d.deliver_due() == DeliveryReport()
    clock.advance(1)
    assert d.deliver_due() == DeliveryReport(delivered=1)


def test_rows_older_than_expire_are_expired_not_sent(store: StateStore, clock: FakeClock,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A notification that could not go out within ``expire`` is given up, logged at error."""
    old = queue(store, "slack")
    fresh = queue(store, "slack", at=T0 + timedelta(seconds=3000))
    clock.advance(POLICY.expire + 1)
    slack = FakeChannel("slack")
    with caplog.at_level(logging.ERROR, logger="notifier.delivery"):
        assert deliverer(store, clock, slack).deliver_due() == DeliveryReport(delivered=1, expired=1)
    assert slack.calls == list(fresh)
    assert statuses(store) == {old[0]: "expired", fresh[0]: "delivered"}
    assert any("expired" in r.getMessage() for r in caplog.records)
    assert "expired undelivered after 1h" in (store.outbox.rows(("expired",))[0].last_error or "")


def test_rows_for_a_removed_channel_are_failed(store: StateStore, clock: FakeClock) -> None:
    """Notifications queued for a channel no longer in the config fail with a clear error, due or not."""
    ids = queue(store, "gone", "gone", "slack")
    store.outbox.mark_retry(ids[1], "earlier failure", T0 + timedelta(hours=1))
    slack = FakeChannel("slack")
    assert deliverer(store, clock, slack).deliver_due() == DeliveryReport(delivered=1, failed=2)
    failed = store.outbox.rows(("failed",))
    assert [(r.id, r.last_error) for r in failed] == [(i, "channel gone is no longer configured") for i in ids[:2]]
    assert store.outbox.next_attempt_at() is None


def test_store_errors_surface_after_all_channels_finish(store: StateStore, clock: FakeClock) -> None:
    """A broken state file is raised to the caller, not swallowed per row."""
    queue(store, "a", "b")
    a, b = FakeChannel("a"), FakeChannel("b")
    d = deliverer(store, clock, a, b)
    store_close = store.close

    def close_mid_send(_: Notification) -> None:
        store_close()

    a.script = [close_mid_send]
    with pytest.raises(StateError, match="closed"):
        d.deliver_due()


# --- crashes ---------------------------------------------------------------------------

_PKG_ROOT = str(Path(notifier.__file__).resolve().parent.parent)

_CHILD_COMMIT_THEN_KILL = """
import os, signal, sys
from datetime import datetime, timezone
from pathlib import Path
from notifier.outbox import NewNotification
from notifier.state import CycleWrite, StateStore
store = StateStore.open(Path(sys.argv[1]))
ids = store.commit_cycle(CycleWrite(at=datetime(2024, 3, 1, 3, 4, 25, tzinfo=timezone.utc),
    notifications=(NewNotification("slack", "job_sms", {"text": "job_sms: 1 node in EXCEPTION"}),)))
print(ids[0], flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""

_CHILD_KILLED_MID_TRANSACTION = """
import os, signal, sys
from datetime import datetime, timezone
from pathlib import Path
import notifier.outbox as outbox
from notifier.core.models import EntityState
from notifier.outbox import NewNotification
from notifier.state import CycleWrite, StateStore
t = datetime(2024, 3, 1, 3, 4, 25, tzinfo=timezone.utc)
store = StateStore.open(Path(sys.argv[1]))
store.commit_cycle(CycleWrite(at=t, upsert_entities=(EntityState("job_sms", "", "NORMAL", t),),
    notifications=(NewNotification("slack", "job_sms", {"text": "first"}),)))
real = outbox._payload_json
def die_on_second(payload):
    if payload["text"] == "second-b":
        os.kill(os.getpid(), signal.SIGKILL)
    return real(payload)
outbox._payload_json = die_on_second
store.commit_cycle(CycleWrite(at=t, upsert_entities=(EntityState("job_sms", "", "STOPPED", t),),
    notifications=(NewNotification("slack", "job_sms", {"text": "second-a"}),
                   NewNotification("slack", "job_sms", {"text": "second-b"}))))
"""

_CHILD_KILLED_BETWEEN_SEND_AND_MARK = """
import os, signal, sys
from datetime import datetime, timezone
from pathlib import Path
from notifier.config import DeliveryConfig
from notifier.delivery import Deliverer
from notifier.outbox import NewNotification
from notifier.state import CycleWrite, StateStore
t = datetime(2024, 3, 1, 3, 4, 25, tzinfo=timezone.utc)
store = StateStore.open(Path(sys.argv[1]))
store.commit_cycle(CycleWrite(at=t, notifications=tuple(
    NewNotification("slack", "job_sms", {"text": str(i)}) for i in range(3))))
class Channel:
    name = "slack"
    def send(self, n):
        print(n.id, flush=True)
        if n.payload["text"] == "1":
            os.kill(os.getpid(), signal.SIGKILL)
    def close(self): pass
Deliverer(store.outbox, {"slack": Channel()}, DeliveryConfig(), clock=lambda: t).deliver_due()
"""


def run_child(code: str, path: Path) -> list[int]:
    """Run ``code`` in a fresh interpreter that kills itself with SIGKILL; return the ids it printed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (_PKG_ROOT, os.environ.get("PYTHONPATH"))))}
    proc = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return [int(line) for line in proc.stdout.split()]


@pytest.mark.slow
def test_notification_committed_before_kill_is_delivered_exactly_once(tmp_path: Path, clock: FakeClock) -> None:
    """A notification committed by a process killed with SIGKILL is delivered once after restart."""
    path = tmp_path / "state.db"
    (queued,) = run_child(_CHILD_COMMIT_THEN_KILL, path)
    slack = FakeChannel("slack")
    with StateStore.open(path) as store:
        d = deliverer(store, clock, slack)
        assert d.deliver_due() == DeliveryReport(delivered=1)
        assert d.deliver_due() == DeliveryReport()
    with StateStore.open(path) as store:
        assert deliverer(store, clock, slack).deliver_due() == DeliveryReport()
        assert statuses(store) == {queued: "delivered"}
    assert slack.sent == [queued]


@pytest.mark.slow
def test_kill_mid_transaction_keeps_the_previous_cycle_and_nothing_of_the_torn_one(
        tmp_path: Path, clock: FakeClock) -> None:
    """SIGKILL inside commit_cycle leaves the file sound, with none of the interrupted cycle."""
    path = tmp_path / "state.db"
    run_child(_CHILD_KILLED_MID_TRANSACTION, path)
    slack = FakeChannel("slack")
    with StateStore.open(path) as store:
        assert store.load_entities()[("job_sms", "")].status == "NORMAL"
        assert deliverer(store, clock, slack).deliver_due() == DeliveryReport(delivered=1)
        assert [r.id for r in store.outbox.rows(("pending", "delivered"))] == [1]


@pytest.mark.slow
def test_kill_between_send_and_mark_resends_only_that_row(tmp_path: Path, clock: FakeClock) -> None:
    """Dying after a send but before its mark re-sends that one row; earlier rows are not repeated."""
    path = tmp_path / "state.db"
    sent_by_child = run_child(_CHILD_KILLED_BETWEEN_SEND_AND_MARK, path)
    assert sent_by_child == [1, 2]
    slack = FakeChannel("slack")
    with StateStore.open(path) as store:
        assert deliverer(store, clock, slack).deliver_due() == DeliveryReport(delivered=2)
    assert slack.sent == [2, 3]


def test_rows_for_a_channel_added_by_a_reload_mid_round_are_not_failed(store: StateStore, clock: FakeClock) -> None:
    """A round that started with the old channels leaves a newly added channel's rows for the next round."""
    queue(store, "new")
    d = deliverer(store, clock)  # the round's channels: none named "new"
    d.use_channels({})  # the reload happened before the round looked
    assert d.deliver_due() == DeliveryReport(failed=1)  # really unconfigured: failed, as before
    queue(store, "new")
    new = FakeChannel("new")
    d._channels = {}  # the round below starts with the old set ...

    class Reloading(dict[str, FakeChannel]):
        def __contains__(self, name: object) -> bool:  # ... and a reload lands while it runs
            d.use_channels({"new": new})
            return super().__contains__(name)

    d._channels = Reloading()
    assert d.deliver_due() == DeliveryReport()
    assert d.deliver_due() == DeliveryReport(delivered=1) and new.sent == [2]
