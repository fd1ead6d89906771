"""Summary wording: the one line a reader sees first."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from notifier.core import summary
from notifier.core.models import EntityState, Rule

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(("for_", "held", "expected"), [
    (5.0, 5, "job_orders in STARTTING for 5s"),
    (0.0, 5, "job_orders in STARTTING"),
    (0.0, 600, "job_orders in STARTTING for 10m"),
    (600.0, 720, "job_orders in STARTTING for 12m"),
], ids=["short-for-says-duration", "first-sight-fresh", "first-sight-old", "long-for"])
def test_firing_summary_says_how_long_when_it_matters(for_: float, held: int, expected: str) -> None:
    """A rule with `for` always says how long the state held; a fresh first sight does not add noise."""
    rule = Rule(name="job-stuck-starting", scope="job", channels=("c",), status=("STARTTING",), for_=for_)
    entity = EntityState(job="job_orders", node="", status="STARTTING", since=T0)
    text = summary.firing(rule, subject="job_orders", entity=entity, active_since=T0,
                          now=T0 + timedelta(seconds=held), reminder=False)
    assert text == expected
