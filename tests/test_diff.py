"""diff_job: entity clocks, transitions and removed nodes from one job's snapshot."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from notifier.core.diff import diff_job
from notifier.core.models import EntityState, JobSnapshot, NodeStatus, Transition

T0 = datetime(2019, 3, 1, 3, 0, tzinfo=timezone.utc)
MIN = timedelta(minutes=1)

COUNTERS = {"totalGetBytes": 0, "totalGetRecords": 10, "totalPutBytes": 0, "totalPutRecords": 10}


def node(name: str = "DLI_SMS_GES", status: str = "NORMAL", type: str = "DLI SQL", **counters: int) -> NodeStatus:
    return NodeStatus(name=name, status=status, type=type, log_path=f"obs://logs/{name}.job",
                      counters={**COUNTERS, **counters})


def snap(status: str = "NORMAL", *nodes: NodeStatus, last_update: datetime | None = None) -> JobSnapshot:
    return JobSnapshot(name="job_sms", status=status, start_time=T0 - 10 * MIN, last_update_time=last_update,
                       nodes=nodes)


def test_first_sight_sets_clocks_without_transitions() -> None:
    """On first sight the job is in its status since lastUpdateTime, nodes since now, and nothing transitions."""
    now = T0 + 5 * MIN
    d = diff_job({}, snap("NORMAL", node("A"), node("B", "EXCEPTION"), last_update=T0), now)
    job, a, b = d.entities[("job_sms", "")], d.entities[("job_sms", "A")], d.entities[("job_sms", "B")]
    assert (job.status, job.since, job.previous_status, job.started_at) == ("NORMAL", T0, None, T0 - 10 * MIN)
    assert (a.since, b.since, b.status, b.previous_status) == (now, now, "EXCEPTION", None)
    assert (b.node_type, b.log_path, dict(b.counters)) == ("DLI SQL", "obs://logs/B.job", COUNTERS)
    assert set(b.counters_since.values()) == {now}
    assert d.transitions == () and d.removed == ()


@pytest.mark.parametrize(
    ("last_update", "expected_since"),
    [(None, T0), (T0 - 3 * MIN, T0 - 3 * MIN), (T0 + 2 * MIN, T0)],
    ids=["absent-uses-now", "past-is-trusted", "future-clamped-to-now"],
)
def test_first_sight_job_since(last_update: datetime | None, expected_since: datetime) -> None:
    """The job's first-sight clock is lastUpdateTime when present and not in the future, else now."""
    d = diff_job({}, snap("STARTTING", last_update=last_update), T0)
    assert d.entities[("job_sms", "")].since == expected_since


@pytest.mark.parametrize(
    ("last_update", "expected_since"),
    [(T0 + 3 * MIN, T0 + 3 * MIN), (None, T0 + 5 * MIN), (T0 - 30 * MIN, T0), (T0 + 9 * MIN, T0 + 5 * MIN)],
    ids=["last-update-after-old-since", "absent-uses-now", "not-before-previous-since", "future-clamped"],
)
def test_job_status_change(last_update: datetime | None, expected_since: datetime) -> None:
    """A job status change restarts its clock (bounded by the old since and now) and yields one transition."""
    now = T0 + 5 * MIN
    old = EntityState(job="job_sms", node="", status="NORMAL", since=T0, previous_status="STARTTING")
    d = diff_job({old.key: old}, snap("EXCEPTION", last_update=last_update), now)
    job = d.entities[("job_sms", "")]
    assert (job.status, job.since, job.previous_status) == ("EXCEPTION", expected_since, "NORMAL")
    assert d.transitions == (Transition("job_sms", "", "NORMAL", "EXCEPTION", now, ""),)


def test_node_status_change() -> None:
    """A node status change restarts its clock at now, remembers the old status and yields a transition."""
    first = diff_job({}, snap("NORMAL", node("DLI_SMS_GES", "NORMAL")), T0)
    now = T0 + MIN
    d = diff_job(first.entities, snap("NORMAL", node("DLI_SMS_GES", "EXCEPTION")), now)
    n = d.entities[("job_sms", "DLI_SMS_GES")]
    assert (n.status, n.since, n.previous_status) == ("EXCEPTION", now, "NORMAL")
    assert d.transitions == (Transition("job_sms", "DLI_SMS_GES", "NORMAL", "EXCEPTION", now, "DLI SQL"),)


def test_unchanged_entities_are_returned_equal() -> None:
    """Entities that did not change come back equal to the remembered ones, so the store writes nothing."""
    s = snap("NORMAL", node("A"), node("B", "EXCEPTION"), last_update=T0)
    first = diff_job({}, s, T0)
    again = diff_job(first.entities, s, T0 + 7 * MIN)
    assert again.entities == first.entities
    assert all(again.entities[k] is first.entities[k] for k in first.entities)
    assert again.transitions == () and again.removed == ()


def test_previous_status_kept_while_status_unchanged() -> None:
    """previous_status keeps naming the status before the last change until the next change."""
    first = diff_job({}, snap("NORMAL", node("A", "NORMAL")), T0)
    changed = diff_job(first.entities, snap("NORMAL", node("A", "EXCEPTION")), T0 + MIN)
    later = diff_job(changed.entities, snap("NORMAL", node("A", "EXCEPTION")), T0 + 2 * MIN)
    a = later.entities[("job_sms", "A")]
    assert (a.previous_status, a.since) == ("NORMAL", T0 + MIN)


@pytest.mark.parametrize(
    ("new_counters", "expected"),
    [
        ({}, {"totalGetRecords": T0, "totalPutRecords": T0}),
        ({"totalPutRecords": 11}, {"totalGetRecords": T0, "totalPutRecords": T0 + MIN}),
        ({"totalPutRecords": 0}, {"totalGetRecords": T0, "totalPutRecords": T0 + MIN}),
        ({"totalGetRecords": 99, "totalPutRecords": 99}, {"totalGetRecords": T0 + MIN, "totalPutRecords": T0 + MIN}),
    ],
    ids=["unchanged-kept", "changed-now", "reset-to-zero-now", "both-changed"],
)
def test_counters_since(new_counters: dict[str, int], expected: dict[str, datetime]) -> None:
    """counters_since moves to now exactly when a counter's value changes (a reset to 0 included)."""
    first = diff_job({}, snap("NORMAL", node("DIS_INPUT")), T0)
    d = diff_job(first.entities, snap("NORMAL", node("DIS_INPUT", **new_counters)), T0 + MIN)
    since = d.entities[("job_sms", "DIS_INPUT")].counters_since
    assert {k: since[k] for k in expected} == expected
    assert d.transitions == ()


def test_new_and_vanished_counters() -> None:
    """A counter seen for the first time starts its clock at now; one no longer reported is forgotten."""
    old = EntityState(job="job_sms", node="N", status="NORMAL", since=T0, counters={"legacy": 1, "totalPutRecords": 5},
                      counters_since={"legacy": T0, "totalPutRecords": T0})
    s = snap("NORMAL", NodeStatus(name="N", status="NORMAL", counters={"totalPutRecords": 5, "totalGetRecords": 1}))
    n = diff_job({old.key: old}, s, T0 + MIN).entities[("job_sms", "N")]
    assert dict(n.counters_since) == {"totalPutRecords": T0, "totalGetRecords": T0 + MIN}


def test_removed_node_is_listed_without_transition() -> None:
    """A remembered node missing from the snapshot goes to removed, not to transitions or entities."""
    first = diff_job({}, snap("NORMAL", node("A"), node("GONE", "EXCEPTION")), T0)
    d = diff_job(first.entities, snap("NORMAL", node("A")), T0 + MIN)
    assert d.removed == (("job_sms", "GONE"),)
    assert ("job_sms", "GONE") not in d.entities and d.transitions == ()


def test_other_jobs_in_previous_are_ignored() -> None:
    """Entities of another job are neither diffed nor reported as removed."""
    other = EntityState(job="job_orders", node="X", status="NORMAL", since=T0)
    d = diff_job({other.key: other}, snap("NORMAL", node("A")), T0)
    assert d.removed == () and set(d.entities) == {("job_sms", ""), ("job_sms", "A")}


@pytest.mark.parametrize(
    ("raw", "stored"),
    [("ABNORMAL", "ABNORMAL"), ("paused_by_ops", "PAUSED_BY_OPS"), ("STARTING", "STARTTING"),
     ("STARTTING", "STARTTING")],
    ids=["sdk-status", "unknown-upper-cased", "list-jobs-spelling", "api-spelling"],
)
def test_status_values_are_normalized_and_unknown_kept(raw: str, stored: str) -> None:
    """Unknown statuses are kept (upper-cased) and can transition; STARTING is stored as STARTTING."""
    first = diff_job({}, snap("NORMAL", node("A", "NORMAL")), T0)
    d = diff_job(first.entities, snap(raw, node("A", raw)), T0 + MIN)
    assert d.entities[("job_sms", "")].status == stored == d.entities[("job_sms", "A")].status
    assert [(t.node, t.to_status) for t in d.transitions] == [("", stored), ("A", stored)]


def test_duplicate_node_names_keep_the_first() -> None:
    """Two nodes with one name make one entity (the first), so a poll cannot flip between them."""
    d = diff_job({}, snap("NORMAL", node("A", "EXCEPTION"), node("A", "NORMAL")), T0)
    assert d.entities[("job_sms", "A")].status == "EXCEPTION" and len(d.entities) == 2


def test_moved_counters_share_one_since_and_keys_are_reused() -> None:
    """Nodes whose four counters all moved share one counters_since object, and remembered key tuples are reused."""
    first = diff_job({}, snap("NORMAL", node("A"), node("B")), T0)
    later = diff_job(first.entities, snap("NORMAL", *(node(n, totalGetBytes=1, totalGetRecords=11, totalPutBytes=1,
                                                           totalPutRecords=11) for n in "AB")), T0 + MIN)
    a, b = later.entities[("job_sms", "A")], later.entities[("job_sms", "B")]
    assert a.counters_since is b.counters_since and dict(a.counters_since) == dict.fromkeys(COUNTERS, T0 + MIN)
    old_keys = {k: k for k in first.entities}
    assert all(k is old_keys[k] for k in later.entities)


def test_plan_keeps_the_group_of_an_unchanged_job() -> None:
    """A cycle in which a job did not change reuses that job's remembered group instead of a copy."""
    from notifier.core.cycle import plan_cycle
    from notifier.core.models import FetchResult

    s = snap("NORMAL", node("A"), last_update=T0)
    first = plan_cycle((), {}, {}, FetchResult((s,)), None, T0)
    again = plan_cycle((), first.entities, {}, FetchResult((s,)), None, T0 + MIN)
    assert again.entities.job("job_sms") is first.entities.job("job_sms") and again.upserts == ()
