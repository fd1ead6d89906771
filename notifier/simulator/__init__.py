"""A DataArts Studio (DGC) job-status service on loopback, scripted by scenario files.

Used by tests (real sockets, a ``ManualClock`` for scenario time), by ``notifier simulate``
and ``notifier demo``, and by the benchmarks (``Scenario.synthetic``)::

    with Simulator(load_scenario("demo"), clock=ManualClock()) as sim:
        httpx.get(f"{sim.url}/v1/{sim.project_id}/jobs/job_sms/status")

A scenario with ``auth = "aksk"`` (or ``"token"``) refuses requests without the scenario's
credentials exactly as the API gateway does (``notifier.simulator.auth``).
"""

from __future__ import annotations

from notifier.simulator.scenario import (
    BUNDLED_SCENARIOS,
    DEFAULT_AUTH,
    DEFAULT_IAM,
    DEFAULT_PROJECT_ID,
    AuthSettings,
    Fault,
    IamSettings,
    Instant,
    JobScript,
    NodeScript,
    Rate,
    Scenario,
    Step,
    load_scenario,
    parse_scenario,
)
from notifier.simulator.server import (
    ManualClock,
    RecordedRequest,
    RequestLog,
    Simulator,
    new_request_id,
    serve,
)

__all__ = [
    "BUNDLED_SCENARIOS",
    "DEFAULT_AUTH",
    "DEFAULT_IAM",
    "DEFAULT_PROJECT_ID",
    "AuthSettings",
    "Fault",
    "IamSettings",
    "Instant",
    "JobScript",
    "ManualClock",
    "NodeScript",
    "Rate",
    "RecordedRequest",
    "RequestLog",
    "Scenario",
    "Simulator",
    "Step",
    "load_scenario",
    "new_request_id",
    "parse_scenario",
    "serve",
]
