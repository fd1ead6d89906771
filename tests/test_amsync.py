"""core.amsync: what an Alertmanager channel is told each round, from the tracked alert state alone."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from notifier.core.amsync import Synced, SyncPlan, identity, plan_sync, ttl
from notifier.core.meta import CHANNEL_FAILING
from notifier.core.models import Alert, AlertState, EntityState, Rule, fingerprint

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
RULE = Rule(name="node-exception", scope="node", channels=("am", "hook"), status=("EXCEPTION",),
            severity="critical")
ELSEWHERE = Rule(name="job-stuck", scope="job", channels=("hook",), status=("STARTTING",))
FAILING = Rule(name=CHANNEL_FAILING, scope="node", channels=("am", "hook"), status=("FAILING",),
               summary="channel {node} is failing: {detail}")
RULES = (RULE, ELSEWHERE, FAILING)


def state(node: str = "DLI_SMS_GES", *, rule: Rule = RULE, phase: str = "firing", job: str = "job_sms",
          notified: int = 0) -> AlertState:
    return AlertState(fingerprint=fingerprint(rule.name, job, node), rule=rule.name, job=job, node=node,
                      phase=phase,  # type: ignore[arg-type]
                      active_since=T0, fired_at=T0 if phase == "firing" else None, state="EXCEPTION",
                      node_type="DLI SQL", notified=notified)


def by_fp(*states: AlertState) -> dict[str, AlertState]:
    return {s.fingerprint: s for s in states}


ENTITIES = {("job_sms", "DLI_SMS_GES"): EntityState(job="job_sms", node="DLI_SMS_GES", status="EXCEPTION", since=T0,
                                                    previous_status="NORMAL", node_type="DLI SQL")}


def sync(previous: dict[str, AlertState], states: dict[str, AlertState], *, last: Synced | None = None,
         now: datetime = T0, rules: tuple[Rule, ...] = RULES, notified: tuple[Alert, ...] = (),
         channel: str = "am") -> SyncPlan:
    return plan_sync(channel, previous, states, rules, ENTITIES, now, last=last, resend=60.0, notified=notified)


def test_a_start_posts_every_firing_alert_routed_here_even_one_never_messaged() -> None:
    """The state is the truth: a firing alert notifier's own mutes kept quiet (never notified) is posted."""
    firing = state()
    plan = sync({}, by_fp(firing, state("OTHER", rule=ELSEWHERE, job="job_b"), state("P", phase="pending")))
    assert plan.due
    (alert,) = plan.firing
    assert (alert.status, alert.rule, alert.node, alert.fingerprint) == ("firing", RULE.name, "DLI_SMS_GES",
                                                                        firing.fingerprint)
    assert plan.resolved == () and plan.synced is not None and set(plan.synced.firing) == {firing.fingerprint}


def test_nothing_firing_and_nothing_told_is_no_post() -> None:
    """An empty channel is not posted an empty list every round."""
    plan = sync({}, by_fp(state(phase="pending")))
    assert not plan.due and plan.synced is None


@pytest.mark.parametrize(("age", "due"), [(0, False), (30, False), (53, False), (54, True), (600, True)],
                         ids=["same-round", "half", "just-short", "within-slack", "long-ago"])
def test_an_unchanged_state_is_re_posted_once_the_resend_interval_passed(age: float, due: bool) -> None:
    """Nothing changed: due only when the last post is resend old (less 10 % slack for a cycle's jitter)."""
    firing = by_fp(state())
    first = sync({}, firing)
    plan = sync(firing, firing, last=first.synced, now=T0 + timedelta(seconds=age))
    assert plan.due is due and len(plan.firing) == 1
    assert plan.synced == (first.synced if not due else Synced(at=T0 + timedelta(seconds=age),
                                                               firing=dict(zip([a.fingerprint for a in plan.firing],
                                                                               plan.firing, strict=True))))


def test_a_new_firing_alert_is_posted_at_once() -> None:
    """A change of the firing set is due whatever the last post's age."""
    one = by_fp(state())
    first = sync({}, one)
    two = {**one, **by_fp(state("DIS_INPUT"))}
    plan = sync(one, two, last=first.synced, now=T0 + timedelta(seconds=1))
    assert plan.due and {a.node for a in plan.firing} == {"DLI_SMS_GES", "DIS_INPUT"}


def test_a_resolve_is_posted_at_once_ending_now_with_the_labels_it_was_told() -> None:
    """The alert gone from the state is resolved (endsAt now), with the identity its firing post had."""
    firing = by_fp(state())
    first = sync({}, firing)
    later = T0 + timedelta(seconds=5)
    plan = sync(firing, {}, last=first.synced, now=later)
    assert plan.due and plan.firing == ()
    (resolved,) = plan.resolved
    assert (resolved.status, resolved.ends_at) == ("resolved", later)
    assert identity(resolved) == identity(first.firing[0])
    assert plan.synced == Synced(at=later, firing={})


def test_after_a_restart_the_alerts_firing_before_stand_for_what_was_told() -> None:
    """No memory: an alert firing in the previous states and gone now is still resolved."""
    plan = sync(by_fp(state()), {})
    assert plan.due and [a.status for a in plan.resolved] == ["resolved"]


def test_a_channel_is_never_told_that_it_is_failing_itself() -> None:
    """notifier-channel-failing about "am" goes to the other channels, not to "am"."""
    about_am, about_hook = state("am", rule=FAILING, job="notifier"), state("hook", rule=FAILING, job="notifier")
    plan = sync({}, by_fp(about_am, about_hook))
    assert [a.node for a in plan.firing] == ["hook"]


def test_a_meta_alerts_message_is_preferred_and_kept_for_its_re_posts() -> None:
    """The state does not keep a condition's detail: the round's message (and then the memory) does."""
    meta = state("hook", rule=FAILING, job="notifier")
    message = Alert(status="firing", rule=CHANNEL_FAILING, severity="warning", fingerprint=meta.fingerprint,
                    job="notifier", node="hook", node_type="", state="FAILING", previous_state=None, since=T0,
                    starts_at=T0, summary="channel hook is failing: 503 Service Unavailable")
    first = sync({}, by_fp(meta), notified=(message,))
    assert first.firing[0].summary.endswith("503 Service Unavailable")
    later = sync(by_fp(meta), by_fp(meta), last=first.synced, now=T0 + timedelta(minutes=5))
    assert later.due and later.firing[0].summary.endswith("503 Service Unavailable")


def test_an_alert_whose_labels_changed_is_resolved_as_told_and_posted_anew() -> None:
    """A reload changed the rule's severity: Alertmanager's old label set must end, the new one fire."""
    firing = by_fp(state())
    first = sync({}, firing)
    warning = (replace(RULE, severity="warning"), ELSEWHERE, FAILING)
    plan = sync(firing, firing, last=first.synced, now=T0 + timedelta(seconds=1), rules=warning)
    assert plan.due
    assert [a.severity for a in plan.firing] == ["warning"]
    assert [(a.status, a.severity) for a in plan.resolved] == [("resolved", "critical")]


def test_the_alerts_of_a_removed_rule_end_with_a_summary_that_says_so() -> None:
    """A reload removed the rule: what Alertmanager was told fires is resolved, not left to expire."""
    firing = by_fp(state())
    first = sync({}, firing)
    plan = sync(firing, {}, last=first.synced, rules=(ELSEWHERE,), now=T0 + timedelta(seconds=1))
    (resolved,) = plan.resolved
    assert resolved.status == "resolved" and "was removed" in resolved.summary


@pytest.mark.parametrize(("resend", "interval", "expected"), [(60, 60, 240), (60, 300, 1200), (120, 30, 480)],
                         ids=["defaults", "slow-polling", "slow-resend"])
def test_a_firing_alert_outlives_three_lost_posts(resend: float, interval: float, expected: float) -> None:
    """endsAt is 4 re-post (or poll, if longer) intervals ahead, as Prometheus sets it."""
    assert ttl(resend, interval) == expected
