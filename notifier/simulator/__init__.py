"""A DataArts Studio (DGC) job-status service on loopback, scripted by scenario files.

Used by tests (real sockets, a ``ManualClock`` for scenario time), by ``notifier simulate``
and ``notifier demo``, and by the benchmarks (``Scenario.synthetic``)::

    with Simulator(load_scenario("demo"), clock=ManualClock()) as sim:
        httpx.get(f"{sim.url}/v1/{sim.project_id}/jobs/job_sms/status")

A scenario with ``auth = "aksk"`` (or ``"token"``) refuses requests without the scenario's
credentials exactly as the API gateway does (``notifier.simulator.auth``). The status and
list APIs are rate-limited per user (``[limits]``, default 30 requests/s, 429 APIG.0308
beyond) and may be slowed (``latency``). ``Scenario.scale`` (``notifier.simulator.scale``)
serves thousands of jobs of which a share changes state every period, with the ground truth
(``Simulator.changes``) a benchmark measures against.

Several projects on one port, each with its own workspace, credentials and jobs, come from
``[[project]]`` tables or ``Scenario.of_projects``::

    sales = Project(id="p-sales", workspace="ws-sales", jobs=..., auth=AuthSettings(mode="aksk", ak=..., sk=...))
    with Simulator(Scenario.of_projects(sales, load_scenario("seed").as_project("p-ops")), clock=ManualClock()) as sim:
        sim.requests_for("p-sales")   # what reached that project; sim.served_by_user(): each user's budget
"""

from __future__ import annotations

from notifier.simulator.scale import Change, ScaleModel
from notifier.simulator.scenario import (
    BUNDLED_SCENARIOS,
    DEFAULT_AUTH,
    DEFAULT_IAM,
    DEFAULT_LIMITS,
    DEFAULT_PROJECT_ID,
    UNLIMITED,
    AuthSettings,
    Fault,
    IamSettings,
    Instant,
    JobScript,
    Limits,
    NodeScript,
    Project,
    Rate,
    Scenario,
    Step,
    load_scenario,
    parse_scenario,
)
from notifier.simulator.server import (
    FOREIGN_PROJECT,
    FROM_SCENARIO,
    WORKSPACE_NOT_FOUND,
    ManualClock,
    RecordedRequest,
    RequestLog,
    Simulator,
    UserRateLimit,
    new_request_id,
    serve,
    user_of,
)

__all__ = [
    "BUNDLED_SCENARIOS",
    "DEFAULT_AUTH",
    "DEFAULT_IAM",
    "DEFAULT_LIMITS",
    "DEFAULT_PROJECT_ID",
    "FOREIGN_PROJECT",
    "FROM_SCENARIO",
    "UNLIMITED",
    "WORKSPACE_NOT_FOUND",
    "AuthSettings",
    "Change",
    "Fault",
    "IamSettings",
    "Instant",
    "JobScript",
    "Limits",
    "ManualClock",
    "NodeScript",
    "Project",
    "Rate",
    "RecordedRequest",
    "RequestLog",
    "ScaleModel",
    "Scenario",
    "Simulator",
    "Step",
    "UserRateLimit",
    "load_scenario",
    "new_request_id",
    "parse_scenario",
    "serve",
    "user_of",
]
