"""The fetch planner (``core.fetchplan``): pure cases, and a seeded run of many cycles over the core alone.

The long run is the guarantee the issue asks a test to keep: within the budget every
cycle, troubled jobs every cycle, a change the list shows fetched in that cycle, and no
job left unfetched for longer than two sweeps, whatever the changes do.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone

import pytest

from notifier.core.diff import diff_job
from notifier.core.fetchplan import (
    BUDGET_SHARE,
    OVERDUE_SWEEPS,
    Budget,
    Listed,
    achievable_sweep,
    list_requests,
    plan_fetch,
)
from notifier.core.models import AlertState, EntitiesByJob, EntityState, JobSnapshot, NodeStatus, Rule
from notifier.core.rules import stall_deadline

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
BUDGET = Budget(rate=20, interval=60)  # 1140 requests a cycle


def job_entities(job: str, status: str = "NORMAL", nodes: tuple[str, ...] = ("NORMAL",)) -> dict:
    out = {(job, ""): EntityState(job=job, node="", status=status, since=NOW)}
    for n, node_status in enumerate(nodes):
        out[(job, f"n{n}")] = EntityState(job=job, node=f"n{n}", status=node_status, since=NOW)
    return out


def view(*groups: dict) -> EntitiesByJob:
    return EntitiesByJob({next(iter(g))[0]: g for g in groups})


def listed(*items: tuple[str, str]) -> dict[str, Listed]:
    return {name: Listed(name, status) for name, status in items}


def plan(watched, lst, budget=BUDGET, **kw):
    defaults = {"entities": EntitiesByJob(), "alerts": {}, "last_fetched": {}, "seen": {}}
    return plan_fetch(watched, lst, budget, NOW, **{**defaults, **kw})


def test_budget_numbers() -> None:
    """1,000 jobs a list request; the sweep is whole cycles of what the budget leaves after the list."""
    assert BUDGET.per_cycle == math.floor(20 * 60 * BUDGET_SHARE) == 1140
    assert [list_requests(n) for n in (0, 1, 1000, 1001, 10_000)] == [1, 1, 1, 2, 10]
    assert achievable_sweep(10_000, BUDGET) == 60 * math.ceil(10_000 / 1130) == 540.0  # under 1.1 x 10,000/20 s
    assert achievable_sweep(1_000, BUDGET) == 60.0  # every job every cycle
    assert achievable_sweep(10_000, BUDGET, listing=False) == 60 * math.ceil(10_000 / 1140)
    assert achievable_sweep(5, Budget(rate=0.1, interval=10)) == math.inf  # the list alone takes the budget


def test_quiet_jobs_known_and_listed_unchanged_go_to_the_sweep_stalest_first() -> None:
    entities = view(job_entities("a"), job_entities("b"), job_entities("c"))
    last = {"a": NOW - timedelta(seconds=10), "b": NOW - timedelta(seconds=30), "c": NOW - timedelta(seconds=20)}
    p = plan(["a", "b", "c"], listed(("a", "NORMAL"), ("b", "NORMAL"), ("c", "NORMAL")), entities=entities,
             last_fetched=last, seen=listed(("a", "NORMAL"), ("b", "NORMAL"), ("c", "NORMAL")))
    assert p.urgent == () and p.sweep == ("b", "c", "a") and p.reasons == {"sweep": 3}


def test_a_job_fetched_two_sweeps_ago_is_overdue_whatever_else_is_urgent() -> None:
    """With a 1-minute sweep, a job a minute old would be two sweeps old by the next cycle: it goes first."""
    entities = view(job_entities("a"), job_entities("b", nodes=("EXCEPTION",)))
    last = {"a": NOW - timedelta(seconds=60), "b": NOW - timedelta(seconds=1)}
    p = plan(["b", "a"], None, Budget(rate=1, interval=60), entities=entities, last_fetched=last)
    assert p.urgent == ("a", "b") and p.reasons == {"overdue": 1, "troubled": 1}


def test_overdue_jobs_in_bulk_never_crowd_out_a_change_the_list_shows() -> None:
    """A budget cut short (throttling) leaves many jobs two sweeps old at once: the news still goes first."""
    names = [f"j{i}" for i in range(50)]
    entities = view(*(job_entities(n) for n in names))
    stale = NOW - timedelta(hours=1)
    lst = {n: Listed(n, "NORMAL", stale) for n in names}
    lst["j49"] = Listed("j49", "EXCEPTION", NOW)
    p = plan(names, lst, Budget(rate=0.2, interval=60), entities=entities, last_fetched=dict.fromkeys(names, stale),
             seen={n: Listed(n, "NORMAL", stale) for n in names})
    assert p.urgent[0] == "j49" and p.reasons["changed"] == 1 and p.deferred == 50 - len(p.urgent)


def test_in_the_first_sweep_after_a_fresh_start_news_and_trouble_go_before_the_jobs_never_fetched() -> None:
    """10,000 new jobs outnumber a cycle's budget for nine cycles: a job seen in cycle 1 that changes or is bad is not
    left waiting behind them (an operator's walkthrough found a recovery alerted only when the first sweep ended)."""
    names = [f"j{i:02d}" for i in range(40)]
    stale = NOW - timedelta(seconds=60)
    entities = view(job_entities("j00"), job_entities("j01", nodes=("EXCEPTION",)))  # fetched in cycle 1
    lst = {n: Listed(n, "NORMAL", stale) for n in names}
    lst["j00"] = Listed("j00", "EXCEPTION", NOW)  # changed since its fetch
    lst["j39"] = Listed("j39", "EXCEPTION", stale)  # never fetched, but the list already says it is bad
    p = plan(names, lst, Budget(rate=0.1, interval=60), entities=entities,
             last_fetched={"j00": stale, "j01": stale}, seen={"j00": Listed("j00", "NORMAL", stale)})
    assert p.urgent[0] == "j00" and set(p.urgent[1:3]) == {"j01", "j39"}
    assert p.reasons["changed"] == 1 and p.reasons["troubled"] == 2


def test_urgent_reasons_and_their_order() -> None:
    """News from the list, overdue, trouble, alerts, never fetched, unlisted names, stall deadlines; the sweep last."""
    at = NOW - timedelta(seconds=30)
    entities = view(job_entities("changed"), job_entities("moved"), job_entities("sick", nodes=("EXCEPTION",)),
                    job_entities("alerting"), job_entities("unlisted"), job_entities("due"), job_entities("quiet"),
                    job_entities("old"), job_entities("listed-bad"))
    names = ["quiet", "due", "unlisted", "alerting", "sick", "moved", "changed", "new", "old", "listed-bad"]
    lst = {n: Listed(n, "NORMAL", at) for n in names if n != "unlisted"}
    lst["changed"] = Listed("changed", "EXCEPTION", at)
    lst["moved"] = Listed("moved", "NORMAL", NOW)  # restarted between polls: lastUpdateTime moved, status the same
    lst["listed-bad"] = Listed("listed-bad", "STOPPING", at)
    seen = {n: Listed(n, "NORMAL", at) for n in names}
    last = {n: at for n in names if n != "new"}
    last["old"] = NOW - timedelta(hours=1)  # longer than two 1-minute sweeps
    alerts = {"fp": AlertState(fingerprint="fp", rule="r", job="alerting", node="n0", phase="pending",
                               active_since=at)}
    p = plan(names, lst, entities=entities, alerts=alerts, last_fetched=last, seen=seen,
             due={"due": NOW - timedelta(seconds=1)})
    # a listed status other than the remembered one is a change (listed-bad: NORMAL -> STOPPING)
    assert p.urgent == ("changed", "listed-bad", "moved", "old", "sick", "alerting", "new", "unlisted", "due")
    assert p.sweep == ("quiet",)
    assert p.reasons == {"overdue": 1, "new": 1, "changed": 3, "troubled": 1, "alerting": 1, "unlisted": 1, "due": 1,
                         "sweep": 1}


def test_a_stall_deadline_already_looked_at_is_not_due_again() -> None:
    entities = view(job_entities("a"))
    lst = listed(("a", "NORMAL"))
    deadline = NOW - timedelta(seconds=20)
    assert plan(["a"], lst, entities=entities, last_fetched={"a": NOW - timedelta(seconds=10)}, seen=lst,
                due={"a": deadline}).urgent == ()
    assert plan(["a"], lst, entities=entities, last_fetched={"a": NOW - timedelta(seconds=30)}, seen=lst,
                due={"a": deadline}).urgent == ("a",)


def test_over_budget_the_urgent_jobs_are_capped_and_the_rest_deferred() -> None:
    small = Budget(rate=1, interval=10)  # 9 requests a cycle
    names = [f"j{i}" for i in range(20)]
    p = plan(names, {n: Listed(n, "EXCEPTION") for n in names}, small, spent=1)
    assert len(p.urgent) == 8 and p.sweep == () and p.deferred == 12


def test_without_a_list_jobs_are_judged_from_memory() -> None:
    """No list this cycle (refused, failed, or one named job): trouble and alerts still go first."""
    entities = view(job_entities("sick", nodes=("EXCEPTION",)), job_entities("quiet"))
    p = plan(["quiet", "sick"], None, entities=entities, last_fetched={"quiet": NOW, "sick": NOW})
    assert p.urgent == ("sick",) and p.sweep == ("quiet",)


def test_a_configured_full_sweep_takes_just_its_share() -> None:
    """10 jobs, sweep 5 cycles: two a cycle, plus any that would fall behind it."""
    budget = Budget(rate=100, interval=60, full_sweep=300)
    names = [f"j{i}" for i in range(10)]
    entities = view(*(job_entities(n) for n in names))
    fresh = {n: NOW - timedelta(seconds=10) for n in names}
    p = plan(names, None, budget, entities=entities, last_fetched=fresh)
    assert len(p.sweep) == 2 and p.sweep_target == 300
    behind = {**fresh, "j7": NOW - timedelta(seconds=250), "j8": NOW - timedelta(seconds=240),
              "j9": NOW - timedelta(seconds=245)}
    assert plan(names, None, budget, entities=entities, last_fetched=behind).sweep == ("j7", "j9", "j8")


def test_a_full_sweep_shorter_than_the_budget_allows_is_lengthened() -> None:
    p = plan([f"j{i}" for i in range(10_000)], None, Budget(rate=20, interval=60, full_sweep=60))
    assert p.sweep_target == p.achievable == 540.0


def test_stall_deadline() -> None:
    """A counter that moved at t stalls for `for = D` at t + D; other statuses, types and rules do not count."""
    rule = Rule(name="stall", scope="node", channels=("c",), status=("NORMAL",), stalled="totalPutRecords",
                for_=600, node_types=("ExecuteDISStream",))
    moved = NOW - timedelta(minutes=3)
    node = EntityState(job="a", node="n", status="NORMAL", since=NOW, node_type="ExecuteDISStream",
                       counters={"totalPutRecords": 5}, counters_since={"totalPutRecords": moved})
    other = EntityState(job="a", node="m", status="NORMAL", since=NOW, node_type="DLI SQL",
                        counters={"totalPutRecords": 5}, counters_since={"totalPutRecords": NOW - timedelta(hours=1)})
    assert stall_deadline((rule,), [node, other]) == moved + timedelta(minutes=10)
    assert stall_deadline((rule,), [other]) is None
    assert stall_deadline((), [node]) is None


# --- many cycles over the core alone ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_many_cycles_keep_every_promise(seed: int) -> None:
    """600 jobs x 3 nodes, 40 requests a cycle: news fetched at once, trouble every cycle, no job behind 2 sweeps."""
    rng = random.Random(seed)
    budget = Budget(rate=1, interval=42)  # floor(42 x 0.95) = 39 requests a cycle: 1 list + 38 status
    names = [f"job_{i:03d}" for i in range(600)]
    truth = {n: ["NORMAL", "NORMAL", "NORMAL", "NORMAL"] for n in names}  # job, then three nodes
    updated = {n: NOW for n in names}
    entities: dict[str, dict] = {}
    last: dict[str, datetime] = {}
    seen: dict[str, Listed] = {}
    now = NOW
    target = achievable_sweep(len(names), budget)
    assert target == 42 * math.ceil(600 / 38)
    for _ in range(200):
        now += timedelta(seconds=budget.interval)
        for _change in range(rng.randint(0, 2)):  # changes come and go, at job and at node level
            job = rng.choice(names)
            part = rng.randrange(4)
            truth[job][part] = "EXCEPTION" if truth[job][part] == "NORMAL" else "NORMAL"
            if part == 0:
                updated[job] = now
        lst = {n: Listed(n, truth[n][0], updated[n]) for n in names}
        p = plan_fetch(names, lst, budget, now, entities=EntitiesByJob(entities), alerts={}, last_fetched=last,
                       seen=seen, spent=list_requests(len(names)))
        assert len(p.jobs) + list_requests(len(names)) <= budget.per_cycle
        for job in names:  # a job-level change the list shows is asked for in the same cycle (budget allowing)
            remembered = entities.get(job, {}).get((job, ""))
            if remembered is not None and (remembered.status != truth[job][0] or seen[job].updated_at != updated[job]):
                assert job in p.urgent or p.deferred
            if remembered is not None and any(e.status != "NORMAL" for e in entities[job].values()):
                assert job in p.urgent or p.deferred
        for job in p.jobs:
            snapshot = JobSnapshot(name=job, status=truth[job][0], last_update_time=updated[job],
                                   nodes=tuple(NodeStatus(name=f"n{k}", status=s, type="DLI SQL")
                                               for k, s in enumerate(truth[job][1:])))
            entities[job] = dict(diff_job(entities.get(job, {}), snapshot, now).entities)
            last[job] = now
            seen[job] = lst[job]
        if len(last) == len(names):  # once the first sweep is through: nobody behind two sweeps
            assert max((now - t).total_seconds() for t in last.values()) <= OVERDUE_SWEEPS * target
    assert len(last) == len(names)


def test_the_readme_sizing_table_is_what_the_planner_computes() -> None:
    """Documentation is code: each row of README's sizing table is achievable_sweep at 20 and 30 req/s."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme.split("Sizing (95 % of the budget", 1)[1].split("\n\n", 2)[1]
    rows = [line.split("|")[1:4] for line in table.splitlines()[2:]]
    assert len(rows) >= 5
    for jobs, at20, at30 in rows:
        n = int(jobs.strip().replace(",", ""))
        for cell, rate in ((at20, 20), (at30, 30)):
            minutes = int(cell.strip().split("m")[0])
            assert achievable_sweep(n, Budget(rate=rate, interval=60)) == minutes * 60, (n, rate)


def test_a_sweep_round_is_trimmed_to_end_before_the_cycle_deadline() -> None:
    from notifier.fetching import SWEEP_DEADLINE, round_fits

    assert round_fits(100, 20.0, 0.0, 60.0) == 100  # a cycle's start: the whole round fits
    assert round_fits(100, 20.0, 60.0 * SWEEP_DEADLINE - 4.0, 60.0) == 80  # 4 s before the deadline at 20 req/s
    assert round_fits(100, 20.0, 60.0 * SWEEP_DEADLINE, 60.0) == 0  # at the deadline: the sweep stops
    assert round_fits(100, 20.0, 75.0, 60.0) == 0  # past it (a slow round): never negative
