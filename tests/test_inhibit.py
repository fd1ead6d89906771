"""Inhibition through the pure cycle plan: one message about the job instead of one per node."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from notifier.core.cycle import plan_cycle
from notifier.core.models import FetchResult, JobSnapshot, NodeStatus, Rule

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
RULES = (
    Rule(name="job-exception", scope="job", channels=("c",), status=("EXCEPTION",), inhibits=("node-exception",)),
    Rule(name="node-exception", scope="node", channels=("c",), status=("EXCEPTION",)),
)


def snapshot(job_status: str, node_status: str) -> FetchResult:
    nodes = (NodeStatus(name="A", status=node_status), NodeStatus(name="B", status=node_status))
    return FetchResult(snapshots=(JobSnapshot(name="job_sms", status=job_status, nodes=nodes),))


def test_firing_job_alert_mutes_node_alerts_of_the_same_job() -> None:
    """While job-exception fires, node-exception alerts of that job are not sent; they go out when it clears."""
    first = plan_cycle(RULES, {}, {}, snapshot("EXCEPTION", "EXCEPTION"), None, T0)
    assert [(a.rule, a.node) for a in first.notify] == [("job-exception", None)]
    assert {s.rule for s in first.alerts.values()} == {"job-exception", "node-exception"}

    second = plan_cycle(RULES, first.entities, first.alerts, snapshot("NORMAL", "EXCEPTION"), None,
                        T0 + timedelta(minutes=1))
    assert sorted((a.rule, a.status, a.node or "") for a in second.notify) == [
        ("job-exception", "resolved", ""), ("node-exception", "firing", "A"), ("node-exception", "firing", "B")]


def test_inhibition_is_per_job() -> None:
    """A firing job alert of one job does not mute node alerts of another job."""
    other = JobSnapshot(name="job_other", status="NORMAL", nodes=(NodeStatus(name="X", status="EXCEPTION"),))
    result = FetchResult(snapshots=(*snapshot("EXCEPTION", "NORMAL").snapshots, other))
    plan = plan_cycle(RULES, {}, {}, result, None, T0)
    assert sorted((a.job, a.rule) for a in plan.notify) == [
        ("job_other", "node-exception"), ("job_sms", "job-exception")]
