"""Silences, maintenance-style mutes and acknowledgements through the pure cycle plan (injected time)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from notifier.core.cycle import CyclePlan, plan_cycle
from notifier.core.models import FetchResult, JobSnapshot, NodeStatus, Rule, fingerprint
from notifier.core.mutes import Matchers, Silence, muted_by

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
MIN = timedelta(minutes=1)
RULES = (Rule(name="node-exception", scope="node", channels=("c",), status=("EXCEPTION",), repeat=3600.0),)
FP = fingerprint("node-exception", "job_sms", "A")


def poll(status: str) -> FetchResult:
    return FetchResult(snapshots=(JobSnapshot(name="job_sms", status="NORMAL", nodes=(NodeStatus("A", status),)),))


def silence(start: datetime, end: datetime, **matchers: str) -> Silence:
    return Silence(id="s1", matchers=Matchers(**matchers), starts_at=start, ends_at=end, created_at=start,
                   comment="deploy")


class Timeline:
    """Plans cycles one minute apart, carrying the state like the service does."""

    def __init__(self) -> None:
        self.plan: CyclePlan | None = None
        self.now = T0

    def cycle(self, status: str, **kwargs: object) -> list[tuple[str, str]]:
        entities = self.plan.entities if self.plan else {}
        alerts = self.plan.alerts if self.plan else {}
        self.plan = plan_cycle(RULES, entities, alerts, poll(status), None, self.now, **kwargs)  # type: ignore[arg-type]
        self.now += MIN
        return [(a.status, a.rule) for a in self.plan.notify]


def test_a_silenced_alert_is_tracked_and_sent_once_when_the_silence_ends() -> None:
    """Muted while the silence lasts (but firing in the state), then sent exactly once, then quiet."""
    t = Timeline()
    mutes = (silence(T0, T0 + 3 * MIN, rule="node-exception"),)
    assert t.cycle("EXCEPTION", mutes=mutes) == []
    assert t.plan is not None and t.plan.alerts[FP].phase == "firing" and t.plan.alerts[FP].last_notified_at is None
    assert t.cycle("EXCEPTION", mutes=mutes) == []
    assert t.cycle("EXCEPTION", mutes=mutes) == []
    assert t.cycle("EXCEPTION", mutes=mutes) == [("firing", "node-exception")]  # T0 + 3 min: the silence ended
    assert t.cycle("EXCEPTION", mutes=mutes) == []


def test_an_alert_that_resolves_while_silenced_sends_nothing() -> None:
    """Fired and resolved inside the silence: no firing and no resolved message, ever."""
    t = Timeline()
    mutes = (silence(T0, T0 + 10 * MIN, job="job_sms"),)
    assert t.cycle("EXCEPTION", mutes=mutes) == []
    assert t.cycle("NORMAL", mutes=mutes) == []
    assert t.plan is not None and FP not in t.plan.alerts
    for _ in range(12):
        assert t.cycle("NORMAL", mutes=mutes) == []


def test_a_resolve_that_falls_in_a_silence_is_not_sent() -> None:
    """Announced before the silence, resolved during it: the resolve is muted (Alertmanager's behaviour)."""
    t = Timeline()
    assert t.cycle("EXCEPTION") == [("firing", "node-exception")]
    mutes = (silence(t.now, t.now + 10 * MIN, node="A"),)
    assert t.cycle("NORMAL", mutes=mutes) == []
    assert t.cycle("NORMAL", mutes=mutes) == []


def test_a_repeat_due_during_a_silence_goes_out_once_after_it() -> None:
    """The hourly repeat falls in the silence: one reminder when the silence ends, not one per cycle."""
    t = Timeline()
    assert t.cycle("EXCEPTION") == [("firing", "node-exception")]
    mutes = (silence(T0 + 50 * MIN, T0 + 70 * MIN, rule="node-*"),)
    sent = [(i, out) for i in range(1, 80) if (out := t.cycle("EXCEPTION", mutes=mutes))]
    assert sent == [(70, [("firing", "node-exception")])]
    assert t.plan is not None and t.plan.alerts[FP].notified == 2


@pytest.mark.parametrize(("matchers", "muted"), [
    ({"rule": "node-exception"}, True),
    ({"rule": "node-*", "job": "job_sms"}, True),
    ({"job": "job_sms", "node": "B"}, False),
    ({"rule": "*"}, True),
    ({"job": "other"}, False),
], ids=["rule", "rule-glob-and-job", "other-node", "everything", "other-job"])
def test_matchers_are_globs_on_rule_job_and_node(matchers: dict[str, str], muted: bool) -> None:
    """A silence covers an alert when every matcher it gives matches (unset ones are '*')."""
    s = silence(T0, T0 + MIN, **matchers)
    assert (muted_by("node-exception", "job_sms", "A", (s,), T0) == "silence s1") is muted


def test_a_job_alert_has_no_node_for_a_node_matcher() -> None:
    """--node X never covers a job-scope alert (its node is empty)."""
    s = silence(T0, T0 + MIN, node="A")
    assert muted_by("job-stuck", "job_sms", None, (s,), T0) is None


def test_a_silence_applies_only_between_its_start_and_end() -> None:
    """Not yet started and already ended silences mute nothing."""
    s = silence(T0 + MIN, T0 + 2 * MIN, rule="*")
    assert [muted_by("r", "j", None, (s,), T0 + k * MIN) is not None for k in range(4)] == [False, True, False, False]


def test_an_acknowledged_alert_sends_no_repeats_but_its_resolve() -> None:
    """Acked after the first message: hourly repeats stop; the recovery is still announced."""
    t = Timeline()
    assert t.cycle("EXCEPTION") == [("firing", "node-exception")]
    assert all(t.cycle("EXCEPTION", acked={FP}) == [] for _ in range(150))  # 2.5 h, repeat = 1 h
    assert t.cycle("NORMAL", acked={FP}) == [("resolved", "node-exception")]


def test_repeats_count_what_was_sent() -> None:
    """Each repeat carries how many firing messages went before it."""
    t = Timeline()
    t.cycle("EXCEPTION")
    sent_before = []
    for _ in range(125):
        t.cycle("EXCEPTION")
        assert t.plan is not None
        sent_before += [a.sent_before for a in t.plan.notify]
    assert sent_before == [1, 2]
