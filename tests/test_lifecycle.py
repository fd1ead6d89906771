"""The alert lifecycle, driven through the production cycle (``plan_cycle``) with an injected clock."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from notifier.core.cycle import CyclePlan, plan_cycle
from notifier.core.diff import diff_job
from notifier.core.lifecycle import advance
from notifier.core.models import (
    Alert,
    AlertState,
    EntityKey,
    EntityState,
    FetchError,
    FetchResult,
    JobSnapshot,
    NodeStatus,
    Rule,
    TransitionMatch,
    fingerprint,
)
from notifier.core.rules import evaluate
from notifier.rulefile import load_rules

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RULES = load_rules(REPO / "rules", ("console",))
T0 = datetime(2019, 3, 1, 3, 5, tzinfo=timezone.utc)
MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)


class World:
    """The service's remembered entities and alert states, advanced one poll at a time by ``plan_cycle``.

    ``plan_cycle`` is the cycle ``notifier run`` makes (diff, evaluate, inhibition, advance),
    minus the I/O: World stands in for the state store, keeping what the plan says to keep.
    """

    def __init__(self, rules: Sequence[Rule], entities: Mapping[EntityKey, EntityState] | None = None,
                 alerts: Mapping[str, AlertState] | None = None) -> None:
        self.rules = tuple(rules)
        self.entities: dict[EntityKey, EntityState] = dict(entities or {})
        self.alerts: dict[str, AlertState] = dict(alerts or {})
        self.last: CyclePlan | None = None

    def cycle(self, now: datetime, *snapshots: JobSnapshot, failed: Iterable[str] = ()) -> tuple[Alert, ...]:
        """One cycle in which the source answered ``snapshots``, except for the ``failed`` jobs' fetches."""
        plan = self.last = plan_cycle(self.rules, self.entities, self.alerts, fetched(snapshots, failed), None, now)
        # keep what the store would: the old rows with the plan's deletes and upserts applied
        gone, dropped = set(plan.deletes), set(plan.alert_deletes)
        self.entities = {k: e for k, e in self.entities.items() if k not in gone} | {e.key: e for e in plan.upserts}
        self.alerts = {fp: a for fp, a in self.alerts.items() if fp not in dropped} | {
            a.fingerprint: a for a in plan.alert_upserts}
        assert self.entities == dict(plan.entities) and self.alerts == dict(plan.alerts), "writes disagree with plan"
        return plan.notify

    def restarted(self, *, keep_alerts: bool = True) -> World:
        """A new process reading the persisted state back (deep copies: no shared objects survive)."""
        return World(self.rules, copy.deepcopy(self.entities), copy.deepcopy(self.alerts) if keep_alerts else {})


def fetched(snapshots: Iterable[JobSnapshot], failed: Iterable[str] = ()) -> FetchResult:
    """What the source returns: a snapshot per job that answered, a server error for each ``failed`` one."""
    down = set(failed)
    return FetchResult(
        snapshots=tuple(s for s in snapshots if s.name not in down),
        errors=tuple(FetchError(job=job, kind="server", message=f"{job}: 503 Service Unavailable", status_code=503)
                     for job in sorted(down)),
    )


def sms(step: int = 0, ges: str = "EXCEPTION", status: str = "NORMAL", streams_move: bool = True,
        drop: Iterable[str] = ()) -> JobSnapshot:
    """The API document's job_sms example; streaming counters grow by ``step`` when ``streams_move``."""
    grow = step if streams_move else 0

    def n(name: str, st: str, type: str, records: int = 0, log: bool = False) -> NodeStatus:
        counters = {"totalGetBytes": 0, "totalGetRecords": records, "totalPutBytes": 0, "totalPutRecords": records}
        return NodeStatus(name=name, status=st, type=type, counters=counters,
                          log_path=f"obs://dlf-log-b384/job_sms/{name}.job" if log else None)

    nodes = (
        n("CREATE_GES_DIR", "NORMAL", "Create OBS"),
        n("CS_SMS_PROCESS", "NORMAL", "ExecuteCloudStream", 165 + grow, log=True),
        n("DELETE_GES_DIR", "STOPPED", "Delete OBS"),
        n("DIS_EVENT", "NORMAL", "ExecuteDISStream", 8596 + grow, log=True),
        n("DIS_INPUT", "NORMAL", "ExecuteDISStream", 70341 + grow, log=True),
        n("DLI_SMS_GES", ges, "DLI SQL"),
        n("DLI_SMS_PROCESS", "NORMAL", "DLI SQL", 208),
    )
    return JobSnapshot(name="job_sms", status=status, start_time=T0 - 2 * MIN, last_update_time=T0 - 3 * MIN,
                       nodes=tuple(x for x in nodes if x.name not in set(drop)))


def orders(status: str, last_update: datetime | None = None) -> JobSnapshot:
    return JobSnapshot(name="job_orders", status=status, last_update_time=last_update)


def rule(name: str, scope: str = "node", **kw: object) -> Rule:
    return Rule(name=name, scope=scope, channels=("console",), **kw)  # type: ignore[arg-type]


def brief(alerts: Iterable[Alert]) -> list[tuple[str, str, str, str | None, str]]:
    return [(a.status, a.rule, a.job, a.node, a.summary) for a in alerts]


# --- the seed example ----------------------------------------------------------------

def test_seed_example_fires_once_then_resolves_once() -> None:
    """job_sms with DLI_SMS_GES in EXCEPTION: one firing alert on the first cycle, silence, one resolved on recovery."""
    world = World(DEFAULT_RULES)
    (alert,) = world.cycle(T0, sms(0))
    assert brief([alert]) == [("firing", "node-exception", "job_sms", "DLI_SMS_GES", "DLI_SMS_GES in EXCEPTION")]
    assert (alert.severity, alert.node_type, alert.state, alert.job_status, alert.starts_at, alert.since) == (
        "critical", "DLI SQL", "EXCEPTION", "NORMAL", T0, T0)
    assert alert.fingerprint == fingerprint("node-exception", "job_sms", "DLI_SMS_GES")
    assert alert.channels == ("console",) and alert.counters["totalPutRecords"] == 0 and not alert.event

    for step in range(1, 31):
        assert world.cycle(T0 + step * MIN, sms(step)) == (), f"unexpected message at step {step}"

    (resolved,) = world.cycle(T0 + 31 * MIN, sms(31, ges="NORMAL"))
    assert brief([resolved]) == [("resolved", "node-exception", "job_sms", "DLI_SMS_GES",
                                  "DLI_SMS_GES back to NORMAL after 31m")]
    assert (resolved.ends_at, resolved.starts_at, resolved.state, resolved.previous_state) == (
        T0 + 31 * MIN, T0, "NORMAL", "EXCEPTION")
    assert world.alerts == {}
    assert world.cycle(T0 + 32 * MIN, sms(32, ges="NORMAL")) == ()


def test_seed_example_with_frozen_streams_fires_stalled_after_15m() -> None:
    """Streaming nodes whose totalPutRecords stops moving fire stream-stalled after exactly 15m.

    They resolve when it moves again.
    """
    world = World(DEFAULT_RULES)
    world.cycle(T0, sms(0, streams_move=False))
    for step in range(1, 15):
        assert world.cycle(T0 + step * MIN, sms(step, streams_move=False)) == ()
    fired = world.cycle(T0 + 15 * MIN, sms(15, streams_move=False))
    assert brief(fired) == [
        ("firing", "stream-stalled", "job_sms", node, f"{node}: totalPutRecords has not moved for 15m")
        for node in ("CS_SMS_PROCESS", "DIS_EVENT", "DIS_INPUT")
    ]
    resolved = world.cycle(T0 + 20 * MIN, sms(20, streams_move=True))
    assert [(a.status, a.node, a.summary) for a in resolved] == [
        ("resolved", node, f"{node}: totalPutRecords moving again after 20m")
        for node in ("CS_SMS_PROCESS", "DIS_EVENT", "DIS_INPUT")
    ]


def test_seed_example_node_change_says_entered() -> None:
    """A node seen going NORMAL -> EXCEPTION is summarised with both statuses."""
    world = World(DEFAULT_RULES)
    assert world.cycle(T0, sms(0, ges="NORMAL")) == ()
    (alert,) = world.cycle(T0 + MIN, sms(1))
    assert (alert.summary, alert.previous_state, alert.since) == (
        "DLI_SMS_GES entered EXCEPTION (was NORMAL)", "NORMAL", T0 + MIN)


# --- pending, for, restarts ----------------------------------------------------------

STUCK = rule("job-stuck-starting", "job", status=("STARTTING",), for_=600.0)


def test_pending_fires_only_after_for() -> None:
    """A condition stays pending (silently) until `for` has elapsed, then fires once."""
    world = World([STUCK])
    fp = fingerprint("job-stuck-starting", "job_orders", "")
    assert world.cycle(T0, orders("STARTTING")) == ()
    assert world.alerts[fp].phase == "pending" and world.alerts[fp].active_since == T0
    assert world.cycle(T0 + 5 * MIN, orders("STARTTING")) == ()
    assert world.cycle(T0 + 10 * MIN - timedelta(seconds=1), orders("STARTTING")) == ()
    (alert,) = world.cycle(T0 + 10 * MIN, orders("STARTTING"))
    assert (alert.summary, alert.node, alert.node_type) == ("job_orders in STARTTING for 10m", None, None)
    state = world.alerts[fp]
    assert (state.phase, state.fired_at, state.last_notified_at) == ("firing", T0 + 10 * MIN, T0 + 10 * MIN)
    assert world.cycle(T0 + 11 * MIN, orders("STARTTING")) == ()


def test_pending_condition_that_clears_is_dropped_silently() -> None:
    """A pending alert whose condition clears before `for` disappears without a message."""
    world = World([STUCK])
    world.cycle(T0, orders("STARTTING"))
    assert world.cycle(T0 + 5 * MIN, orders("NORMAL")) == ()
    assert world.alerts == {}


def test_first_sight_uses_last_update_time() -> None:
    """On first sight a job already STARTTING for 12m by lastUpdateTime fires at once."""
    (alert,) = World([STUCK]).cycle(T0, orders("STARTTING", last_update=T0 - 12 * MIN))
    assert (alert.summary, alert.starts_at) == ("job_orders in STARTTING for 12m", T0 - 12 * MIN)


@pytest.mark.parametrize("keep_alerts", [True, False], ids=["alert-states-persisted", "only-entities-persisted"])
def test_restart_does_not_reset_the_clock(keep_alerts: bool) -> None:
    """A restart at 5m still fires at 10m, because the clocks live in the persisted states."""
    world = World([STUCK])
    world.cycle(T0, orders("STARTTING"))
    world.cycle(T0 + 5 * MIN, orders("STARTTING"))
    world = world.restarted(keep_alerts=keep_alerts)
    assert world.cycle(T0 + 9 * MIN, orders("STARTTING")) == ()
    assert [a.summary for a in world.cycle(T0 + 10 * MIN, orders("STARTTING"))] == ["job_orders in STARTTING for 10m"]


def test_restart_does_not_resend_a_firing_alert() -> None:
    """After a restart the persisted firing alert is not sent again."""
    world = World(DEFAULT_RULES)
    assert len(world.cycle(T0, sms(0))) == 1
    world = world.restarted()
    assert world.cycle(T0 + MIN, sms(1)) == ()


# --- repeat, resolved ----------------------------------------------------------------

@pytest.mark.parametrize(
    ("repeat", "reminders_at"),
    [(4 * 3600.0, [4, 8]), (0.0, []), (3 * 3600.0, [3, 6, 9])],
    ids=["every-4h", "never", "every-3h"],
)
def test_repeat_reminders(repeat: float, reminders_at: list[int]) -> None:
    """A firing alert is re-sent every `repeat` while it holds, never when repeat is 0s."""
    world = World([rule("node-exception", status=("EXCEPTION",), repeat=repeat)])
    assert len(world.cycle(T0, sms(0))) == 1
    sent = []
    for minutes in range(30, 10 * 60 + 1, 30):
        for alert in world.cycle(T0 + minutes * MIN, sms(minutes)):
            sent.append((minutes / 60, alert.summary))
    assert sent == [(h, f"DLI_SMS_GES still in EXCEPTION after {h}h") for h in reminders_at]


def test_resolved_false_sends_nothing_on_recovery() -> None:
    """With resolved = false a recovery drops the alert without a message."""
    world = World([rule("node-exception", status=("EXCEPTION",), resolved=False)])
    assert len(world.cycle(T0, sms(0))) == 1
    assert world.cycle(T0 + MIN, sms(1, ges="NORMAL")) == ()
    assert world.alerts == {}


def test_vanished_node_resolves_with_last_known_facts() -> None:
    """A firing node that is no longer reported resolves, saying it is gone and what it last was."""
    world = World([rule("node-exception", status=("EXCEPTION",))])
    world.cycle(T0, sms(0, ges="NORMAL"))
    world.cycle(T0 + MIN, sms(1, ges="EXCEPTION"))
    (alert,) = world.cycle(T0 + 5 * MIN, sms(5, drop=["DLI_SMS_GES"]))
    assert (alert.status, alert.summary) == ("resolved", "DLI_SMS_GES is gone (was EXCEPTION for 4m)")
    assert (alert.state, alert.node_type, alert.job_status) == ("EXCEPTION", "DLI SQL", "NORMAL")


# --- failed fetches, reloads ---------------------------------------------------------

def test_failed_job_keeps_its_alerts() -> None:
    """A job whose fetch failed keeps firing and pending alerts untouched and sends nothing."""
    world = World([rule("node-exception", status=("EXCEPTION",)), STUCK])
    world.cycle(T0, sms(0), orders("STARTTING"))
    before = dict(world.alerts)
    assert {s.phase for s in before.values()} == {"firing", "pending"}
    assert world.cycle(T0 + 20 * MIN, sms(20), orders("STARTTING"), failed=["job_sms", "job_orders"]) == ()
    assert world.alerts == before
    assert all(world.alerts[fp] is before[fp] for fp in before)


def test_unevaluated_job_without_conditions_is_not_resolved() -> None:
    """advance leaves the alerts of a job outside evaluated_jobs alone even when no condition holds."""
    fp = fingerprint("node-exception", "job_sms", "DLI_SMS_GES")
    firing = AlertState(fingerprint=fp, rule="node-exception", job="job_sms", node="DLI_SMS_GES", phase="firing",
                        active_since=T0, fired_at=T0, last_notified_at=T0, state="EXCEPTION")
    result = advance(DEFAULT_RULES, (), (), {fp: firing}, {}, {"job_orders"}, T0 + HOUR)
    assert result.states == {fp: firing} and result.notify == ()
    result = advance(DEFAULT_RULES, (), (), {fp: firing}, {}, {"job_sms"}, T0 + HOUR)
    assert result.states == {} and [a.status for a in result.notify] == ["resolved"]


def test_removed_rule_drops_its_alert_silently() -> None:
    """After a reload without the rule, its alert state disappears and nothing is sent."""
    world = World(DEFAULT_RULES)
    world.cycle(T0, sms(0))
    assert len(world.alerts) == 1
    world.rules = tuple(r for r in DEFAULT_RULES if r.name != "node-exception")
    assert world.cycle(T0 + MIN, sms(1)) == ()
    assert world.alerts == {}


def test_unchanged_states_are_returned_equal() -> None:
    """A quiet cycle returns alert states equal to the previous ones, so the store writes nothing."""
    world = World(DEFAULT_RULES)
    world.cycle(T0, sms(0), orders("STARTTING"))
    before = copy.deepcopy(world.alerts)
    world.cycle(T0 + MIN, sms(1), orders("STARTTING"))
    assert world.alerts == before
    assert world.last is not None and (world.last.alert_upserts, world.last.alert_deletes) == ((), ())


# --- inhibition ----------------------------------------------------------------------

def test_job_exception_mutes_its_node_alerts() -> None:
    """With the shipped rules a job in EXCEPTION sends one job message, not one per failing node.

    The muted node alert keeps firing silently and goes out once the job alert resolves.
    """
    world = World(DEFAULT_RULES)
    assert [(a.rule, a.node) for a in world.cycle(T0, sms(0, status="EXCEPTION"))] == [("job-exception", None)]
    assert world.alerts[fingerprint("node-exception", "job_sms", "DLI_SMS_GES")].phase == "firing"
    assert world.cycle(T0 + MIN, sms(1, status="EXCEPTION")) == ()
    assert [(a.status, a.rule, a.node) for a in world.cycle(T0 + 2 * MIN, sms(2))] == [
        ("resolved", "job-exception", None), ("firing", "node-exception", "DLI_SMS_GES")]
    assert world.cycle(T0 + 3 * MIN, sms(3)) == ()


# --- events --------------------------------------------------------------------------

def test_transition_rule_fires_once_per_transition() -> None:
    """job-stopped sends one event per NORMAL -> STOPPED transition, keeps no state and never resolves."""
    world = World(DEFAULT_RULES)
    world.cycle(T0, sms(0, ges="NORMAL"))
    (event,) = world.cycle(T0 + MIN, sms(1, ges="NORMAL", status="STOPPED"))
    assert brief([event]) == [("firing", "job-stopped", "job_sms", None, "job_sms: STOPPED (was NORMAL)")]
    assert (event.event, event.starts_at, event.state, event.previous_state, event.job_status) == (
        True, T0 + MIN, "STOPPED", "NORMAL", "STOPPED")
    assert world.alerts == {}
    assert world.cycle(T0 + 2 * MIN, sms(2, ges="NORMAL", status="STOPPED")) == ()
    assert world.cycle(T0 + 3 * MIN, sms(3, ges="NORMAL", status="NORMAL")) == ()
    assert [a.rule for a in world.cycle(T0 + 4 * MIN, sms(4, ges="NORMAL", status="STOPPED"))] == ["job-stopped"]


# --- ordering, summaries, the filter seam ---------------------------------------------

def test_notify_order_is_job_then_node_then_rule() -> None:
    """Alerts of one cycle come out sorted by job, node, then rule."""
    rules = [rule("z-any", status=("EXCEPTION", "STOPPED")), rule("a-exc", status=("EXCEPTION",)),
             rule("job-any", "job", status=("NORMAL", "STARTTING"))]
    sent = World(rules).cycle(T0, sms(0), orders("STARTTING"))
    assert [(a.job, a.node, a.rule) for a in sent] == [
        ("job_orders", None, "job-any"),
        ("job_sms", None, "job-any"),
        ("job_sms", "DELETE_GES_DIR", "z-any"),
        ("job_sms", "DLI_SMS_GES", "a-exc"),
        ("job_sms", "DLI_SMS_GES", "z-any"),
    ]


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("{job}/{node} is {state} ({rule}, {severity})", "job_sms/DLI_SMS_GES is EXCEPTION (r, warning)"),
     ("{node:>12}|{previous_state}|{duration}", " DLI_SMS_GES|NORMAL|2m")],
    ids=["fields", "format-spec"],
)
def test_custom_summary(fmt: str, expected: str) -> None:
    """A rule's own summary format is filled with the alert's fields."""
    world = World([rule("r", status=("EXCEPTION",), summary=fmt, for_=120.0)])
    world.cycle(T0, sms(0, ges="NORMAL"))
    world.cycle(T0 + MIN, sms(1))
    (alert,) = world.cycle(T0 + 3 * MIN, sms(3))
    assert alert.summary == expected


def test_muted_alert_is_sent_when_the_filter_lets_it_through() -> None:
    """An alert held back by the notify filter is not marked notified, so it goes out once the mute ends."""
    rules = [rule("node-exception", status=("EXCEPTION",))]
    fp = fingerprint("node-exception", "job_sms", "DLI_SMS_GES")
    entities = diff_job({}, sms(0), T0).entities
    conditions, _ = evaluate(rules, entities, (), T0)

    def mute(alerts: tuple[Alert, ...], states: Mapping[str, AlertState], now: datetime) -> tuple[Alert, ...]:
        return ()

    muted = advance(rules, conditions, (), {}, entities, {"job_sms"}, T0, notify_filter=mute)
    assert muted.notify == () and muted.states[fp].phase == "firing" and muted.states[fp].last_notified_at is None
    later = advance(rules, conditions, (), muted.states, entities, {"job_sms"}, T0 + MIN)
    assert [a.status for a in later.notify] == ["firing"] and later.states[fp].last_notified_at == T0 + MIN
    never_sent = advance(rules, (), (), muted.states, entities, {"job_sms"}, T0 + MIN)
    assert never_sent.notify == () and never_sent.states == {}


def test_condition_for_unknown_rule_is_ignored() -> None:
    """Conditions and events naming a rule that is not loaded produce neither state nor message."""
    entities = diff_job({}, sms(0), T0).entities
    conditions, _ = evaluate([rule("gone", status=("EXCEPTION",))], entities, (), T0)
    result = advance([replace(STUCK, name="other")], conditions, (), {}, entities, {"job_sms"}, T0)
    assert result.states == {} and result.notify == ()


def test_rule_labels_travel_with_every_alert_it_sends() -> None:
    """A rule's labels are on its firing, resolved and event alerts (for Alertmanager-shaped payloads)."""
    team = (("team", "data"),)
    world = World([rule("node-exception", status=("EXCEPTION",), labels=team),
                   rule("job-stopped", scope="job", transition=TransitionMatch(("NORMAL",), ("STOPPED",)),
                        labels=team)])
    (fired,) = world.cycle(T0, sms(0))
    event, resolved = sorted(world.cycle(T0 + MIN, sms(1, ges="NORMAL", status="STOPPED")), key=lambda a: a.rule)
    assert [(a.rule, a.status, a.event, dict(a.labels)) for a in (fired, resolved, event)] == [
        ("node-exception", "firing", False, {"team": "data"}),
        ("node-exception", "resolved", False, {"team": "data"}),
        ("job-stopped", "firing", True, {"team": "data"}),
    ]
    assert {a.source for a in (fired, resolved, event)} == {"default"}
