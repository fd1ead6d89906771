"""Scenario files for the DGC simulator: jobs, nodes and faults scripted over time.

A scenario file is parsed once, strictly, into frozen data (``Scenario``). Each job is
then compiled into a ``JobPlan`` whose ``at(t)`` answers "what does this job look like
``t`` seconds into the scenario" with one bisect and a few multiplications: the server
asks it on every request, so nothing is parsed or searched per request.

File format (every key is checked; unknown keys are errors naming file, table and key)::

    project_id = "b384b9e9ab9b4ee8994c8633aabc9505"
    loop = false                 # after the last step: hold it (false) or start over (true)
    epoch_start = 1551409406000  # optional: epoch ms (or a TOML datetime) of t=0; default: start()
    list_offset = "records"      # list API `offset`: a record offset ("records") or a page ("pages")
    response_style = "document"  # status answers as the API page shows them ("document": startTime, node `type`,
                                 # numbers) or as huaweicloudsdkdgc models them ("sdk": starttime, nodeType,
                                 # times and counters as strings, lastInstanceStatus, extendCounter, STARTING)
    auth = "none"                # who is served: "none" anyone; "aksk" only requests signed SDK-HMAC-SHA256 with
                                 # [credentials] ak/sk; "token" only X-Auth-Token = [credentials] token (or an
                                 # unexpired token the simulated IAM issued); others get 401 APIG.0301

    [[job]]
    name = "job_sms"
    workspace = ""               # optional; served only with header `workspace: <id>`
    status = "NORMAL"            # status before the first step changes it
    start_time = 1551409465000   # epoch ms, TOML datetime, or "59s" after epoch_start (default: t=0)
    extra = { foo = 1 }          # unknown fields added to the status response (tolerance tests)

    [[job.node]]
    name = "DIS_INPUT"
    type = "ExecuteDISStream"
    status = "NORMAL"            # before the first step changes it
    log_path = "obs://..."       # optional
    running_data = { streamName = "dis-input" }   # a table (served JSON-encoded) or a string
    counters = { totalGetRecords = 70341, totalPutRecords = 70341 }   # initial values, default 0
    bytes_per_record = 100       # bytes counters grow by this much per record

    [[job.step]]
    duration = "4s"              # optional on the last step when not looping (it holds)
    status = "NORMAL"            # job status; omitted: unchanged
    nodes = { DLI_SMS_GES = "EXCEPTION" }    # node statuses; nodes not named keep theirs
    rates = { DIS_INPUT = 120, CS = { get = 10, put = 8 } }   # records/s; 0 = stalled; carried over

    [[fault]]                    # or [[job.fault]] for one job
    kind = "http_error"          # latency | http_error | throttle | html | truncated_json
                                 # | missing_status | empty_body | disconnect
    status = 503
    after = "2s"                 # optional window in scenario time [after, until)
    until = "5s"
    count = 2                    # optional: only the first N matching requests
    probability = 0.5            # optional: seeded random (seed = 0), deterministic per request order

    [iam]                        # optional: the IAM token API (POST /v3/auth/tokens); these are the defaults
    user = "notifier"            # the credentials it accepts (test values, not secrets)
    password = "simulator-password"
    domain = "simulator"
    project = "cn-north-4"       # the project name a token may be scoped to (or by project_id)
    token_lifetime = "24h"       # expires_at = issue time + this, in scenario time
    require_token = false        # true: the status/list APIs answer 401 APIG.0301 without a valid X-Auth-Token

    [credentials]                # optional: what auth = "aksk" / "token" accept; these are the defaults
    ak = "SIMULATORAK0000000000" # (test values, not secrets: the simulator serves made-up jobs)
    sk = "simulator-secret-key"
    token = "simulator-token"
    max_clock_skew = "15m"       # an X-Sdk-Date further than this from the simulator's wall clock is refused

    [limits]                     # optional: the API gateway's limits on the DGC APIs; these are the defaults
    requests_per_second = 30     # per user (AK, else token, else everyone together), sliding 1 s window of
                                 # real time; beyond it 429 APIG.0308; 0 = unlimited
    latency = "0s"               # added to every status and list answer (e.g. "50ms"); requests still overlap

    [scale]                      # optional, instead of [[job]]: Scenario.scale's generated jobs (scale.py)
    jobs = 10000                 # job_0000 ... job_9999, each NORMAL with moving counters
    nodes = 10
    change_share = 0.01          # share of the jobs that start a change in each period
    node_share = 0.5             # share of the changes that are node-level (else job-level)
    hold = "5m"                  # how long a change lasts
    period = "1m"
    seed = 0

Several projects on one port: ``[[project]]`` tables instead of ``project_id`` and ``[[job]]``
(and ``[scale]``). The top level keeps what they share (``loop``, ``epoch_start``,
``list_offset``, ``response_style``, ``[iam]``, ``[limits]``, ``[[fault]]`` with an optional
``project = "<id or name>"``); its ``auth`` and ``[credentials]`` are every project's defaults::

    [[project]]
    id = "0a1b2c3d4e5f40718293a4b5c6d7e8f9"   # the project_id of the URL path
    name = "sales"               # optional label (banner, suggested env vars); default: the id
    workspace = "ws-sales"       # optional: requests must send `workspace: ws-sales` (else 400 DLF.0810);
                                 # unset: as one project, the header selects among the jobs' workspaces
    auth = "aksk"                # optional: default the top-level auth

    [project.credentials]        # optional: ak, sk, token, max_clock_skew; default the top-level [credentials]
    ak = "SIMAK-SALES-0000000001"
    sk = "simulator-sales-secret-key"

    [[project.job]]              # the [[job]] keys, with .node, .step and .fault under it
    name = "job_sms"

    [[project.fault]]            # a fault on this project's requests only

Another project's valid credentials get 403 APIG.0302; projects with the same credentials are
one user (one rate budget). An AK has one SK across projects.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from notifier.core.counters import COUNTER_NAMES
from notifier.errors import ConfigError
from notifier.simulator.scale import ScaleModel, check_scale
from notifier.strict_toml import TableReader, load_toml

DEFAULT_PROJECT_ID = "b384b9e9ab9b4ee8994c8633aabc9505"
"""The project ID of the API document's example; the bundled scenarios use it."""

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"

BUNDLED_SCENARIOS: Mapping[str, Path] = MappingProxyType({
    "seed": SCENARIO_DIR / "seed.toml",
    "demo": SCENARIO_DIR / "demo.toml",
    "two_projects": SCENARIO_DIR / "two_projects.toml",  # two projects, two credentials: several sources
    "demo_sources": SCENARIO_DIR / "demo_sources.toml",  # what `notifier demo` runs
})
"""Scenarios shipped with the package, by the name ``load_scenario`` accepts."""

EMPTY: Mapping[Any, Any] = MappingProxyType({})


def _empty() -> Any:
    """Default for mapping fields: the shared read-only empty mapping (dataclasses refuse it as a plain default)."""
    return field(default_factory=lambda: EMPTY)


FaultKind = Literal[
    "latency", "http_error", "throttle", "html", "truncated_json", "missing_status", "empty_body", "disconnect",
]
FAULT_KINDS: tuple[str, ...] = (
    "latency", "http_error", "throttle", "html", "truncated_json", "missing_status", "empty_body", "disconnect",
)
Endpoint = Literal["any", "status", "list"]
ListOffset = Literal["records", "pages"]
AuthMode = Literal["none", "aksk", "token"]
AUTH_MODES: tuple[str, ...] = ("none", "aksk", "token")
ResponseStyle = Literal["document", "sdk"]
RESPONSE_STYLES: tuple[str, ...] = ("document", "sdk")

_STATUS_KEYS = frozenset({"name", "status", "startTime", "endTime", "lastUpdateTime", "nodes"})
_NODE_KEYS = frozenset({"name", "status", "type", "logPath", "runningData", *COUNTER_NAMES})
_MIN_EPOCH_MS = 10**11  # 1973-03-03: smaller integers are almost surely seconds, not milliseconds


# --- data -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Instant:
    """A point in epoch time: absolute (``epoch_ms``) or ``offset`` seconds after epoch_start."""

    epoch_ms: int | None = None
    offset: float = 0.0

    def resolve(self, epoch_start_ms: int) -> int:
        return self.epoch_ms if self.epoch_ms is not None else epoch_start_ms + round(self.offset * 1000)


@dataclass(frozen=True, slots=True)
class Rate:
    """Records per second added to a node's get and put counters."""

    get: float = 0.0
    put: float = 0.0


@dataclass(frozen=True, slots=True)
class NodeScript:
    """A node of a job: its fixed description and its values at t=0."""

    name: str
    type: str
    status: str = "NORMAL"
    log_path: str | None = None
    running_data: str | None = None
    counters: tuple[int, int, int, int] = (0, 0, 0, 0)  # in COUNTER_NAMES order
    bytes_per_record: int = 100
    extra: Mapping[str, Any] = _empty()


@dataclass(frozen=True, slots=True)
class Step:
    """One scripted stretch of time; ``None`` fields and unnamed nodes keep the previous values."""

    duration: float | None = None
    status: str | None = None
    nodes: Mapping[str, str] = _empty()
    rates: Mapping[str, Rate] = _empty()


@dataclass(frozen=True, slots=True)
class Fault:
    """A scripted misbehaviour; it applies to a request when every given condition holds."""

    kind: FaultKind
    job: str | None = None  # None: every request (status and list)
    workspace: str | None = None  # with job: only that workspace's job; None: the name in any workspace
    project: str | None = None  # only requests for this project id; None: every project the scenario serves
    endpoint: Endpoint = "any"
    delay: float = 0.0  # latency
    status: int | None = None  # http_error, html
    retry_after: float | None = None  # throttle; 0 sends no Retry-After header
    error_code: str | None = None  # http_error, throttle
    error_msg: str | None = None
    after: float = 0.0  # scenario-time window [after, until)
    until: float | None = None
    count: int | None = None  # only the first N matching requests
    probability: float | None = None  # seeded random: same request order, same answers
    seed: int = 0


@dataclass(frozen=True, slots=True)
class JobScript:
    """A job as a scenario describes it."""

    name: str
    nodes: tuple[NodeScript, ...]
    steps: tuple[Step, ...] = ()
    workspace: str = ""
    status: str = "NORMAL"
    start_time: Instant = Instant()
    create_time: Instant | None = None  # default: start_time
    owner: str = "simulator"
    create_user: str | None = None  # default: owner
    priority: int = 0
    loop: bool | None = None  # default: the scenario's
    extra: Mapping[str, Any] = _empty()
    faults: tuple[Fault, ...] = ()


@dataclass(frozen=True, slots=True)
class IamSettings:
    """What the simulated IAM accepts and issues; ``require_token`` makes the DGC APIs demand a token."""

    user: str = "notifier"
    password: str = "simulator-password"
    domain: str = "simulator"
    project: str = "cn-north-4"
    token_lifetime: float = 24 * 3600.0
    require_token: bool = False


DEFAULT_IAM = IamSettings()


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Who the DGC APIs serve: anyone (``none``), AK/SK-signed requests (``aksk``) or a token (``token``).

    The API gateway in front of DataArts Factory refuses anything else with 401 APIG.0301;
    a simulator that served every request let the client's 401 path go untested.
    """

    mode: AuthMode = "none"
    ak: str = "SIMULATORAK0000000000"
    sk: str = "simulator-secret-key"
    token: str = "simulator-token"
    max_clock_skew: float = 15 * 60.0  # the gateway's documented tolerance for X-Sdk-Date


DEFAULT_AUTH = AuthSettings()


@dataclass(frozen=True, slots=True)
class Limits:
    """The API gateway's per-user rate limit and the service's latency, as ``[limits]`` sets them.

    ``requests_per_second`` is per user (the AK of a signed request, else the X-Auth-Token,
    else one budget shared by every anonymous client) over a sliding one-second window of
    real time; beyond it the status and list APIs answer 429 APIG.0308. 0 is unlimited.
    The default is the documented limit of the job status and list APIs (30/s per user).
    ``latency`` (seconds) is added to every status and list answer.
    """

    requests_per_second: float = 30.0
    latency: float = 0.0


DEFAULT_LIMITS = Limits()
UNLIMITED = Limits(requests_per_second=0.0, latency=0.0)


@dataclass(frozen=True, slots=True)
class Project:
    """One project a multi-project scenario serves: its id (the URL's), its workspace, who may call it, its jobs.

    ``workspace`` set: every request must carry the header ``workspace: <it>`` (else 400
    ``WORKSPACE_NOT_FOUND``) and every job lives there (a job naming another workspace is a
    ValueError; one naming none is moved there). ``workspace = ""``: as a one-project
    scenario, the header selects among the jobs' own workspaces, none meaning the default.
    ``auth`` is who is served: another project's valid credentials get 403 (``server.py``).
    ``faults`` apply to this project's requests only; ``name`` labels it in banners and
    the environment variable names ``notifier simulate`` suggests ("" = the id).
    """

    id: str
    jobs: tuple[JobScript, ...]
    workspace: str = ""
    auth: AuthSettings = DEFAULT_AUTH
    faults: tuple[Fault, ...] = ()
    name: str = ""

    def __post_init__(self) -> None:
        if not self.id or "/" in self.id or self.id != self.id.strip():
            raise ValueError(f"a project id must be a non-empty name without '/' or surrounding spaces, "
                             f"got {self.id!r}")
        if not self.workspace:
            return
        stray = [j.name for j in self.jobs if j.workspace not in ("", self.workspace)]
        if stray:
            raise ValueError(f"project {self.label!r} serves workspace {self.workspace!r} only; job {stray[0]!r} "
                             f"names another")
        if any(j.workspace != self.workspace for j in self.jobs):  # frozen: the one place its jobs are adjusted
            object.__setattr__(self, "jobs", tuple(j if j.workspace else replace(j, workspace=self.workspace)
                                                   for j in self.jobs))

    @property
    def label(self) -> str:
        """How banners and errors name the project: its ``name``, else its id."""
        return self.name or self.id


@dataclass(frozen=True, slots=True)
class Scenario:
    """Everything the simulator serves, parsed and validated.

    A one-project scenario is ``project_id``, ``jobs``, ``auth`` and ``faults``. A
    multi-project one (``Scenario.of_projects``, or ``[[project]]`` tables) holds its
    ``projects``; then ``project_id`` is the first project's id, ``jobs`` every project's jobs
    in order (both read-only conveniences, checked to agree), ``auth`` unused and ``faults``
    the ones that apply to every project. ``served()`` is the projects either way.
    """

    project_id: str
    jobs: tuple[JobScript, ...]
    loop: bool = False
    epoch_start_ms: int | None = None  # None: the wall-clock time of Simulator.start()
    faults: tuple[Fault, ...] = ()
    list_offset: ListOffset = "records"
    iam: IamSettings = DEFAULT_IAM
    auth: AuthSettings = DEFAULT_AUTH
    response_style: ResponseStyle = "document"
    name: str = "scenario"
    description: str = ""
    source: str = ""
    limits: Limits = DEFAULT_LIMITS
    scale_model: ScaleModel | None = None  # scale mode (``Scenario.scale``): changes computed on top of the jobs
    projects: tuple[Project, ...] = ()  # a multi-project scenario's projects; () = one project (project_id, jobs)

    def __post_init__(self) -> None:
        if not self.projects:
            return
        problem = check_projects(self.projects)
        if problem is not None:
            raise ValueError(problem)
        jobs = tuple(job for p in self.projects for job in p.jobs)
        if (self.project_id != self.projects[0].id or len(jobs) != len(self.jobs)
                or any(a is not b for a, b in zip(jobs, self.jobs, strict=True))):
            raise ValueError("a multi-project scenario's project_id and jobs are its projects' (the first id, every "
                             "job): build it with Scenario.of_projects, change it by replacing its projects")
        if self.scale_model is not None:
            raise ValueError("scale mode serves one project: not with projects")

    @classmethod
    def of_projects(cls, *projects: Project, name: str = "projects", **fields: Any) -> Scenario:
        """A scenario serving ``projects`` on one port; ``fields`` are the other ``Scenario`` fields (loop, limits...).

        ``faults`` given here apply to every project; each project's own ``faults`` to it.
        Two projects with the same credentials are the same user (one rate budget).
        """
        if not projects:
            raise ValueError("Scenario.of_projects needs at least one project")
        for key in ("project_id", "jobs", "auth", "projects", "scale_model"):
            if key in fields:
                raise ValueError(f"Scenario.of_projects: {key} comes from the projects")
        return cls(project_id=projects[0].id, jobs=tuple(job for p in projects for job in p.jobs),
                   projects=tuple(projects), name=name, **fields)

    def served(self) -> tuple[Project, ...]:
        """The projects served: ``projects``, or the one project of a one-project scenario (its jobs, auth, faults)."""
        if self.projects:
            return self.projects
        return (Project(id=self.project_id, jobs=self.jobs, auth=self.auth),)  # its faults stay the scenario's

    def as_project(self, id: str | None = None, *, workspace: str = "",  # noqa: A002 (the TOML key's name)
                   auth: AuthSettings | None = None, name: str = "") -> Project:
        """This one-project scenario's jobs and faults as a ``Project`` (default: its id and auth) to combine."""
        if self.projects:
            raise ValueError("as_project: this scenario already serves several projects")
        if self.scale_model is not None:
            raise ValueError("as_project: a scale scenario's changes need the whole scenario")
        return Project(id=id if id is not None else self.project_id, jobs=self.jobs, workspace=workspace,
                       auth=auth if auth is not None else self.auth, faults=self.faults, name=name)

    @classmethod
    def synthetic(cls, jobs: int = 1000, nodes: int = 10, project_id: str = DEFAULT_PROJECT_ID,
                  *, workspace: str = "") -> Scenario:
        """An all-NORMAL scenario with moving counters, for benchmarks and load tests.

        It has no rate limit and no latency (``UNLIMITED``), as before ``[limits]`` existed: the
        benchmarks measure the notifier, not the gateway. ``Scenario.scale`` is the realistic one.
        """
        if jobs < 1 or nodes < 1:
            raise ValueError(f"synthetic scenario needs jobs >= 1 and nodes >= 1, got jobs={jobs} nodes={nodes}")
        types = ("ExecuteDISStream", "DLI SQL", "ExecuteCloudStream", "Create OBS")
        node_names = tuple(f"node_{n:02d}" for n in range(nodes))
        # Shared node and step objects keep 10,000 jobs small and let them share one compiled timeline each.
        shared_nodes = tuple(NodeScript(name=name, type=types[n % len(types)]) for n, name in enumerate(node_names))
        steps_by_phase = [
            (Step(rates=MappingProxyType({
                name: Rate(get=float(1 + (p * 7 + n) % 50), put=float(1 + (p * 7 + n) % 50))
                for n, name in enumerate(node_names)})),)
            for p in range(min(jobs, 50))]
        width = len(str(jobs - 1))
        scripts = [JobScript(name=f"job_{j:0{width}d}", nodes=shared_nodes, steps=steps_by_phase[j % 50],
                             workspace=workspace) for j in range(jobs)]
        return cls(project_id=project_id, jobs=tuple(scripts), name=f"synthetic-{jobs}x{nodes}",
                   description=f"{jobs} NORMAL jobs with {nodes} nodes each and moving counters", limits=UNLIMITED)

    @classmethod
    def scale(cls, jobs: int, nodes: int = 10, *, change_share: float = 0.01, node_share: float = 0.5,
              hold: float = 300.0, period: float = 60.0, seed: int = 0,
              project_id: str = DEFAULT_PROJECT_ID) -> Scenario:
        """``synthetic`` jobs where ``change_share`` of the jobs change state per ``period`` (see ``scale.py``).

        Each change lasts ``hold`` seconds; ``node_share`` of them are node-level (one node
        EXCEPTION, the job NORMAL, lastUpdateTime unmoved), the rest job-level (the job
        EXCEPTION, lastUpdateTime moved). Deterministic for a ``seed``; the ground truth is
        ``scenario.scale_model.changes(t0, t1)`` (or ``Simulator.changes``). Limits are the
        defaults (30 requests/s per user, no latency).
        """
        model = ScaleModel(jobs=jobs, nodes=nodes, change_share=change_share, node_share=node_share, hold=hold,
                           period=period, seed=seed)
        base = cls.synthetic(jobs=jobs, nodes=nodes, project_id=project_id)
        return replace(base, name=f"scale-{jobs}x{nodes}", limits=DEFAULT_LIMITS, scale_model=model,
                       description=f"{jobs} jobs with {nodes} nodes each; {change_share:.2%} of the jobs change "
                                   f"per {period:g}s, each change held {hold:g}s (seed {seed})")


def check_projects(projects: tuple[Project, ...]) -> str | None:
    """Why these projects cannot be served together (a duplicate id or name, one AK with two SKs), or None."""
    ids: set[str] = set()
    labels: set[str] = set()
    sks: dict[str, str] = {}
    for p in projects:
        if p.id in ids:
            return f"project id {p.id!r} is served twice"
        if p.label in labels:
            return f"project name {p.label!r} is used twice"
        ids.add(p.id)
        labels.add(p.label)
        if p.auth.mode == "aksk" and sks.setdefault(p.auth.ak, p.auth.sk) != p.auth.sk:
            return f"project {p.label!r}: its AK is another project's with another SK (an AK has one SK)"
    return None


# --- compiled plans -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class JobView:
    """A job at one moment of scenario time."""

    status: str
    since: float  # scenario seconds when the job entered ``status``
    node_statuses: tuple[str, ...]
    counters: tuple[tuple[int, int, int, int], ...]  # per node, in COUNTER_NAMES order


@dataclass(frozen=True, slots=True)
class Timeline:
    """Steps resolved into per-step arrays, so ``at(t)`` is a bisect and arithmetic.

    It holds no job name, so jobs scripted alike (``Scenario.synthetic``) share one.
    """

    nodes: tuple[NodeScript, ...]
    starts: tuple[float, ...]  # step start offsets within one cycle
    cycle: float | None  # cycle length when looping; None: the last step holds for ever
    statuses: tuple[str, ...]  # job status per step
    run_starts: tuple[float, ...]  # per step: start of the run of equal job status it belongs to
    wrap_since: float | None  # looping: cycle offset of the last run when it continues into step 0
    first_run_len: int  # number of steps in the first run of equal job status
    single_status: bool  # the job status never changes
    node_statuses: tuple[tuple[str, ...], ...]
    rates: tuple[tuple[Rate, ...], ...]
    base: tuple[tuple[Rate, ...], ...]  # records added before each step within a cycle
    per_cycle: tuple[Rate, ...]  # records added by one whole cycle

    def at(self, t: float, *, counters: bool = True) -> JobView:
        """The job ``t`` scenario seconds after the start (t < 0 counts as 0); ``counters=False``: none (the list)."""
        t = max(t, 0.0)
        if self.cycle is None:
            k, offset = 0, t
        else:
            k_float, offset = divmod(t, self.cycle)
            k = int(k_float)
        i = bisect.bisect_right(self.starts, offset) - 1
        elapsed = offset - self.starts[i]
        if self.single_status:
            since = 0.0
        elif self.cycle is not None and k > 0 and self.wrap_since is not None and i < self.first_run_len:
            since = (k - 1) * self.cycle + self.wrap_since
        else:
            since = (k * self.cycle if self.cycle is not None else 0.0) + self.run_starts[i]
        if not counters:
            return JobView(self.statuses[i], since, self.node_statuses[i], ())
        values = []
        for node, rate, base, per_cycle in zip(self.nodes, self.rates[i], self.base[i], self.per_cycle, strict=True):
            got = math.floor(k * per_cycle.get + base.get + rate.get * elapsed)
            put = math.floor(k * per_cycle.put + base.put + rate.put * elapsed)
            c = node.counters
            values.append((c[0] + got * node.bytes_per_record, c[1] + got,
                           c[2] + put * node.bytes_per_record, c[3] + put))
        return JobView(self.statuses[i], since, self.node_statuses[i], tuple(values))


@dataclass(frozen=True, slots=True)
class JobPlan:
    """A job and its compiled timeline."""

    job: JobScript
    timeline: Timeline

    def at(self, t: float, *, counters: bool = True) -> JobView:
        return self.timeline.at(t, counters=counters)


_ZERO = Rate()


def compile_job(job: JobScript, *, loop: bool, cache: dict[tuple[Any, ...], Timeline] | None = None) -> JobPlan:
    """Resolve carried-over values and cumulative counters once, for every step.

    ``cache`` shares timelines between jobs with the very same nodes and steps objects.
    """
    loop = job.loop if job.loop is not None else loop
    key = (job.status, id(job.nodes), id(job.steps), loop)
    timeline = cache.get(key) if cache is not None else None
    if timeline is None:
        timeline = _timeline(job.status, job.nodes, job.steps or (Step(),), loop)
        if cache is not None:
            cache[key] = timeline
    return JobPlan(job, timeline)


def _timeline(status: str, nodes: tuple[NodeScript, ...], steps: tuple[Step, ...], loop: bool) -> Timeline:
    node_index = {node.name: n for n, node in enumerate(nodes)}
    node_status = [node.status for node in nodes]
    rate = [_ZERO] * len(nodes)
    added = [_ZERO] * len(nodes)
    starts: list[float] = []
    statuses: list[str] = []
    node_statuses: list[tuple[str, ...]] = []
    rates: list[tuple[Rate, ...]] = []
    base: list[tuple[Rate, ...]] = []
    t = 0.0
    for step in steps:
        status = step.status if step.status is not None else status
        for name, value in step.nodes.items():
            node_status[node_index[name]] = value
        for name, node_rate in step.rates.items():
            rate[node_index[name]] = node_rate
        starts.append(t)
        statuses.append(status)
        node_statuses.append(tuple(node_status))
        rates.append(tuple(rate))
        base.append(tuple(added))
        if step.duration is not None:
            d = step.duration
            added = [a if r is _ZERO else Rate(a.get + r.get * d, a.put + r.put * d)
                     for a, r in zip(added, rate, strict=True)]
            t += d
    run_starts: list[float] = []
    for i, s in enumerate(statuses):
        run_starts.append(run_starts[-1] if i and statuses[i - 1] == s else starts[i])
    first_run_len = next((i for i, s in enumerate(statuses) if s != statuses[0]), len(statuses))
    single = first_run_len == len(statuses)
    return Timeline(
        nodes=nodes, starts=tuple(starts), cycle=t if loop else None, statuses=tuple(statuses),
        run_starts=tuple(run_starts), wrap_since=run_starts[-1] if loop and not single and statuses[-1] == statuses[0]
        else None, first_run_len=first_run_len, single_status=single, node_statuses=tuple(node_statuses),
        rates=tuple(rates), base=tuple(base), per_cycle=tuple(added))


# --- loading --------------------------------------------------------------------------

def load_scenario(path_or_name: str | Path) -> Scenario:
    """Load a scenario file, or a bundled scenario by name (``BUNDLED_SCENARIOS``: "seed", "demo", ...)."""
    if isinstance(path_or_name, str) and path_or_name in BUNDLED_SCENARIOS:
        path = BUNDLED_SCENARIOS[path_or_name]
    else:
        path = Path(path_or_name)
        if not path.exists() and isinstance(path_or_name, str) and path.suffix == "" and "/" not in path_or_name:
            raise ConfigError(f"no such file, and not a bundled scenario ({', '.join(BUNDLED_SCENARIOS)})",
                              file=str(path_or_name))
    return parse_scenario(load_toml(path), file=str(path), name=path.stem)


def parse_scenario(data: Mapping[str, Any], *, file: str = "<scenario>", name: str = "scenario") -> Scenario:
    """Validate a scenario document (as read from TOML) into a ``Scenario`` (``[[project]]``: several projects)."""
    top = TableReader(data, file=file, where="")
    if top.has("project"):
        return _multi_project(top, name=name)
    project_id = _name(top, "project_id")
    loop = top.bool("loop", False)
    epoch = _instant(top, "epoch_start", None, relative=False)
    list_offset = top.choice("list_offset", ("records", "pages"), "records")
    response_style = top.choice("response_style", RESPONSE_STYLES, "document")
    auth_mode = top.choice("auth", AUTH_MODES, "none")
    description = top.str("description", "")
    scale_table = top.table("scale", None)
    model: ScaleModel | None = None
    if scale_table is not None:
        if top.has("job"):
            raise top.error("job", "[scale] generates the jobs: use either [scale] or [[job]] tables, not both")
        if loop:
            raise top.error("loop", "not meaningful with [scale] (its jobs have no steps to repeat)")
        generated = _scale(scale_table, project_id)
        jobs, model = generated.jobs, generated.scale_model
        description = description or generated.description
    else:
        jobs = tuple(_job(r, loop) for r in _tables(top, "job", required=True))
    _check_unique(top, "job", [(j.workspace, j.name) for j in jobs], lambda k: f"job {k[1]!r} in workspace {k[0]!r}")
    faults = tuple(_fault(r, jobs=jobs) for r in _tables(top, "fault"))
    iam = _iam(top.table("iam", None))
    auth = _auth(auth_mode, top.table("credentials", None))
    limits = _limits(top.table("limits", None))
    top.finish()
    return Scenario(project_id=project_id, jobs=jobs, loop=loop,
                    epoch_start_ms=epoch.epoch_ms if epoch is not None else None, faults=faults,
                    list_offset=list_offset, iam=iam, auth=auth, response_style=response_style, name=name,
                    description=description, source=file, limits=limits, scale_model=model)


_NOT_WITH_PROJECTS = {
    "project_id": "each [[project]] table names its own `id`: remove the top-level project_id",
    "job": "with [[project]] tables every job belongs to a project: write [[project.job]] under its [[project]]",
    "scale": "[scale] generates one project's jobs: not with [[project]] tables",
}


def _multi_project(top: TableReader, *, name: str) -> Scenario:
    """``[[project]]`` tables: the top level keeps what every project shares (time, style, IAM, limits, faults)."""
    for key, why in _NOT_WITH_PROJECTS.items():
        if top.has(key):
            raise top.error(key, why)
    loop = top.bool("loop", False)
    epoch = _instant(top, "epoch_start", None, relative=False)
    list_offset = top.choice("list_offset", ("records", "pages"), "records")
    response_style = top.choice("response_style", RESPONSE_STYLES, "document")
    description = top.str("description", "")
    # the top-level auth and [credentials] are every project's defaults
    defaults = _auth(top.choice("auth", AUTH_MODES, "none"), top.table("credentials", None))
    projects: list[Project] = []
    sks: dict[str, str] = {}
    for r in _tables(top, "project", required=True):
        project = _project(r, loop, defaults)
        if any(p.id == project.id for p in projects):
            raise r.error("id", f"project id {project.id!r} is defined twice")
        if any(p.label == project.label for p in projects):
            raise r.error("name", f"project name {project.label!r} is used twice")
        if project.auth.mode == "aksk" and sks.setdefault(project.auth.ak, project.auth.sk) != project.auth.sk:
            raise ConfigError("this AK is another project's, with another SK: an AK has one SK (give this project "
                              "its own AK, or the same SK)", file=top.file, where=f"{r.where}.credentials", key="sk")
        projects.append(project)
    jobs = tuple(job for p in projects for job in p.jobs)
    faults = tuple(_fault(r, jobs=jobs, projects=tuple(projects)) for r in _tables(top, "fault"))
    iam = _iam(top.table("iam", None))
    limits = _limits(top.table("limits", None))
    top.finish()
    return Scenario.of_projects(*projects, name=name, loop=loop,
                                epoch_start_ms=epoch.epoch_ms if epoch is not None else None, faults=faults,
                                list_offset=list_offset, iam=iam, response_style=response_style,
                                description=description, source=top.file, limits=limits)


def _project(r: TableReader, loop: bool, defaults: AuthSettings) -> Project:
    project_id = _name(r, "id")
    label = _name(r, "name") if r.has("name") else ""
    r.where = f"project[{label or project_id}]"
    workspace = r.str("workspace", "")
    if workspace != workspace.strip():
        raise r.error("workspace", f"must not have surrounding spaces, got {workspace!r}")
    auth = _auth(r.choice("auth", AUTH_MODES, defaults.mode), r.table("credentials", None), defaults)
    jobs = tuple(_job(j, loop, workspace=workspace, project=project_id) for j in _tables(r, "job", required=True))
    _check_unique(r, "job", [(j.workspace, j.name) for j in jobs], lambda k: f"job {k[1]!r} in workspace {k[0]!r}")
    faults = tuple(_fault(f, jobs=jobs, project=project_id) for f in _tables(r, "fault"))
    r.finish()
    return Project(id=project_id, jobs=jobs, workspace=workspace, auth=auth, faults=faults, name=label)


def _limits(r: TableReader | None) -> Limits:
    if r is None:
        return DEFAULT_LIMITS
    d = DEFAULT_LIMITS
    rate = r.raw("requests_per_second", d.requests_per_second)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise r.error("requests_per_second", f"expected a number of requests per second (0 = unlimited), "
                                             f"got {rate!r}")
    if not math.isfinite(rate) or rate < 0:
        raise r.error("requests_per_second", f"must be a finite number of at least 0 (0 = unlimited), got {rate!r}")
    latency = _seconds(r, "latency", d.latency)
    if not math.isfinite(latency):
        raise r.error("latency", f"must be finite, got {latency!r}")
    r.finish()
    return Limits(requests_per_second=float(rate), latency=float(latency))


def _scale(r: TableReader, project_id: str) -> Scenario:
    fields: dict[str, Any] = {
        "jobs": r.raw("jobs"), "nodes": r.raw("nodes", 10),
        "change_share": r.raw("change_share", 0.01), "node_share": r.raw("node_share", 0.5),
        "hold": _seconds(r, "hold", 300.0, positive=True), "period": _seconds(r, "period", 60.0, positive=True),
        "seed": r.raw("seed", 0),
    }
    problems = check_scale(**fields)
    if problems:
        key, why = problems[0]
        raise r.error(key, why)
    r.finish()
    return Scenario.scale(project_id=project_id, **fields)


def _iam(r: TableReader | None) -> IamSettings:
    if r is None:
        return DEFAULT_IAM
    d = DEFAULT_IAM
    iam = IamSettings(user=r.str("user", d.user), password=r.str("password", d.password),
                      domain=r.str("domain", d.domain), project=r.str("project", d.project),
                      token_lifetime=_seconds(r, "token_lifetime", d.token_lifetime, positive=True),
                      require_token=r.bool("require_token", d.require_token))
    r.finish()
    return iam


def _auth(mode: AuthMode, r: TableReader | None, d: AuthSettings = DEFAULT_AUTH) -> AuthSettings:
    """``[credentials]`` (or ``[project.credentials]``); keys not given are ``d``'s."""
    if r is None:
        return replace(d, mode=mode)
    auth = AuthSettings(mode=mode, ak=_credential(r, "ak", d.ak), sk=_credential(r, "sk", d.sk),
                        token=_credential(r, "token", d.token),
                        max_clock_skew=_seconds(r, "max_clock_skew", d.max_clock_skew, positive=True))
    r.finish()
    return auth


def _credential(r: TableReader, key: str, default: str) -> str:
    value: str = r.str(key, default)
    if not value or value != value.strip():
        raise r.error(key, f"must be a non-empty string without surrounding spaces, got {value!r}")
    return value


def parse_fault(fields: Mapping[str, Any], *, jobs: tuple[JobScript, ...] = (), where: str = "fault",
                projects: tuple[Project, ...] | None = None) -> Fault:
    """Validate one fault given as keyword arguments (``Simulator.set_fault``); numbers are seconds.

    ``projects`` (a multi-project scenario's) allows the ``project`` key: a project's id or name.
    """
    return _fault(TableReader(dict(fields), file="<set_fault>", where=where), jobs=jobs, projects=projects)


def _tables(reader: TableReader, key: str, *, required: bool = False) -> list[TableReader]:
    value = reader.raw(key, None)
    if value is None:
        if required:
            raise reader.error(key, f"at least one [[{key}]] table is required")
        return []
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise reader.error(key, f"expected an array of tables ([[{key}]]), got {type(value).__name__}")
    prefix = f"{reader.where}." if reader.where else ""
    return [TableReader(v, file=reader.file, where=f"{prefix}{key}[{i}]") for i, v in enumerate(value)]


def _check_unique(reader: TableReader, key: str, items: list[Any], describe: Callable[[Any], str]) -> None:
    seen = set()
    for item in items:
        if item in seen:
            raise reader.error(key, f"{describe(item)} is defined twice")
        seen.add(item)


def _name(reader: TableReader, key: str) -> str:
    value = reader.str(key)
    if not value.strip() or "/" in value or value != value.strip():
        raise reader.error(key, f"must be a non-empty name without '/' or surrounding spaces, got {value!r}")
    return value


def _status(reader: TableReader, key: str, default: Any) -> Any:
    value = reader.str(key, default)
    if isinstance(value, str) and not value.strip():
        raise reader.error(key, "status must not be empty (any other string is served as-is)")
    return value


def _seconds(reader: TableReader, key: str, default: Any, *, positive: bool = False) -> Any:
    """A duration string, or a number of seconds."""
    if not reader.has(key):
        return reader.raw(key, default)
    value = reader.raw(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
        if seconds < 0:
            raise reader.error(key, f"must not be negative, got {value!r}")
    else:
        seconds = reader.seconds(key)
    if positive and seconds <= 0:
        raise reader.error(key, f"must be longer than zero, got {value!r}")
    return seconds


def _instant(reader: TableReader, key: str, default: Any, *, relative: bool = True) -> Any:
    """Epoch milliseconds (int), a TOML datetime, or (``relative``) a duration after epoch_start."""
    if not reader.has(key):
        return reader.raw(key, default)
    value = reader.raw(key)
    if isinstance(value, int) and not isinstance(value, bool):
        if value < _MIN_EPOCH_MS:
            raise reader.error(key, f"expected epoch milliseconds, got {value} (seconds? multiply by 1000)")
        return Instant(epoch_ms=value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise reader.error(key, "a datetime needs a UTC offset, e.g. 2019-03-01T03:04:25Z")
        return Instant(epoch_ms=round(value.astimezone(timezone.utc).timestamp() * 1000))
    if relative and isinstance(value, str):
        return Instant(offset=_seconds(reader, key, None))
    what = "epoch milliseconds, a datetime with offset, or a duration after epoch_start" if relative \
        else "epoch milliseconds or a datetime with offset"
    raise reader.error(key, f"expected {what}, got {value!r}")


def _extra(reader: TableReader, key: str, reserved: frozenset[str]) -> Mapping[str, Any]:
    table = reader.table(key, None)
    if table is None:
        return EMPTY
    for name, value in table.data.items():
        if name in reserved:
            raise table.error(name, "extra fields must not replace a field the API defines")
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise table.error(name, f"not representable in JSON: {value!r}") from None
    table.finish(table.data.keys())
    return MappingProxyType(dict(table.data))


def _job(r: TableReader, loop: bool, *, workspace: str = "", project: str | None = None) -> JobScript:
    """A ``[[job]]`` (or ``[[project.job]]``: ``workspace`` its project's, "" none, ``project`` its id)."""
    name = _name(r, "name")
    r.where = f"{r.where.rpartition('job[')[0]}job[{name}]"  # keeps a "project[...]." prefix
    if workspace and r.str("workspace", workspace) != workspace:
        raise r.error("workspace", f"this project serves workspace {workspace!r} only (its `workspace`): leave "
                                   f"the job's out")
    workspace = r.str("workspace", workspace)
    status = _status(r, "status", "NORMAL")
    nodes = tuple(_node(n) for n in _tables(r, "node"))
    _check_unique(r, "node", [n.name for n in nodes], lambda k: f"node {k!r}")
    node_names = {n.name for n in nodes}
    steps = tuple(_step(s, node_names) for s in _tables(r, "step"))
    job_loop = r.bool("loop", None)
    effective_loop = job_loop if job_loop is not None else loop
    for i, step in enumerate(steps):
        if step.duration is None and (effective_loop or i < len(steps) - 1):
            why = "the scenario loops" if effective_loop else "only the last step may omit it (it then holds)"
            raise TableReader({}, file=r.file, where=f"{r.where}.step[{i}]").error("duration", f"required: {why}")
    job = JobScript(
        name=name, nodes=nodes, steps=steps, workspace=workspace, status=status,
        start_time=_instant(r, "start_time", Instant()), create_time=_instant(r, "create_time", None),
        owner=r.str("owner", "simulator"), create_user=r.str("create_user", None),
        priority=r.int("priority", 0), loop=job_loop, extra=_extra(r, "extra", _STATUS_KEYS),
    )
    faults = tuple(_fault(f, jobs=(job,), implied=job, project=project) for f in _tables(r, "fault"))
    r.finish()
    return replace(job, faults=faults)


def _node(r: TableReader) -> NodeScript:
    name = _name(r, "name")
    r.where = f"{r.where.rsplit('[', 1)[0]}[{name}]"
    running = r.raw("running_data", None)
    if isinstance(running, Mapping):
        running = json.dumps(running, separators=(",", ":"), ensure_ascii=False)
    elif running is not None and not isinstance(running, str):
        raise r.error("running_data", f"expected a table or a string, got {type(running).__name__}")
    counters_table = r.table("counters", None)
    counters = [0, 0, 0, 0]
    if counters_table is not None:
        for i, counter in enumerate(COUNTER_NAMES):
            counters[i] = counters_table.int(counter, 0, minimum=0)
        counters_table.finish()
    node = NodeScript(
        name=name, type=r.str("type"), status=_status(r, "status", "NORMAL"), log_path=r.str("log_path", None),
        running_data=running, counters=(counters[0], counters[1], counters[2], counters[3]),
        bytes_per_record=r.int("bytes_per_record", 100, minimum=0), extra=_extra(r, "extra", _NODE_KEYS),
    )
    r.finish()
    return node


def _step(r: TableReader, node_names: set[str]) -> Step:
    duration = _seconds(r, "duration", None, positive=True)
    status = _status(r, "status", None)
    nodes: dict[str, str] = {}
    table = r.table("nodes", None)
    if table is not None:
        for node in table.data:
            _known_node(table, node, node_names)
            nodes[node] = _status(table, node, None)
        table.finish()
    rates: dict[str, Rate] = {}
    table = r.table("rates", None)
    if table is not None:
        for node in table.data:
            _known_node(table, node, node_names)
            value = table.raw(node)
            if isinstance(value, Mapping):
                pair = table.table(node)
                rates[node] = Rate(get=pair.number("get", 0.0, minimum=0), put=pair.number("put", 0.0, minimum=0))
                pair.finish()
            else:
                both = table.number(node, minimum=0)
                rates[node] = Rate(get=both, put=both)
        table.finish()
    r.finish()
    return Step(duration=duration, status=status, nodes=MappingProxyType(nodes), rates=MappingProxyType(rates))


def _known_node(table: TableReader, node: str, node_names: set[str]) -> None:
    if node not in node_names:
        known = ", ".join(sorted(node_names)) or "none"
        raise table.error(node, f"no node of that name in this job (nodes: {known})")


def _fault(r: TableReader, *, jobs: tuple[JobScript, ...], implied: JobScript | None = None,
           project: str | None = None, projects: tuple[Project, ...] | None = None) -> Fault:
    """A fault table: a job's (``implied``), a project's (``project``: its id), or the scenario's.

    A multi-project scenario's own faults (``projects`` given) may name a ``project`` (id or name).
    """
    kind = r.choice("kind", FAULT_KINDS)
    if implied is not None:
        job, workspace = implied.name, implied.workspace
        endpoint = r.choice("endpoint", ("status",), "status")
    else:
        if projects is not None and project is None and r.has("project"):
            wanted = r.str("project")
            match = next((p for p in projects if wanted in (p.id, p.name)), None)
            if match is None:
                known = ", ".join(repr(p.label) for p in projects)
                raise r.error("project", f"no project with that id or name in this scenario (projects: {known})")
            project, jobs = match.id, match.jobs
        job = r.str("job", None)
        workspace = r.str("workspace", None)
        if job is not None and jobs and not any(j.name == job for j in jobs):
            where = "this project" if project is not None else "this scenario"
            raise r.error("job", f"no job named {job!r} in {where}")
        if workspace is not None and job is None:
            raise r.error("workspace", "only meaningful together with `job`")
        endpoint = r.choice("endpoint", ("status",) if job else ("any", "status", "list"), "status" if job else "any")
    after = _seconds(r, "after", 0.0)
    until = _seconds(r, "until", None)
    if until is not None and until <= after:
        raise r.error("until", f"must be later than `after` ({after:g}s), got {until:g}s")
    probability = r.number("probability", None, minimum=0)
    if probability is not None and not 0 < probability <= 1:
        raise r.error("probability", f"must be in (0, 1], got {probability:g}")
    fields: dict[str, Any] = dict(
        kind=kind, job=job, workspace=workspace, project=project, endpoint=endpoint, after=after, until=until,
        count=r.int("count", None, minimum=1), probability=probability, seed=r.int("seed", 0),
    )
    if kind == "latency":
        fields["delay"] = _seconds(r, "delay", None, positive=True)
        if fields["delay"] is None:
            raise r.error("delay", "required for kind = \"latency\" (e.g. \"2s\")")
    elif kind == "http_error":
        fields["status"] = r.int("status", 500)
        if not 400 <= fields["status"] <= 599:
            raise r.error("status", f"must be an HTTP error status 400-599, got {fields['status']}")
        fields["error_code"] = r.str("error_code", None)
        fields["error_msg"] = r.str("error_msg", None)
    elif kind == "throttle":
        fields["retry_after"] = _seconds(r, "retry_after", 1.0)
        fields["error_code"] = r.str("error_code", None)
        fields["error_msg"] = r.str("error_msg", None)
    elif kind == "html":
        fields["status"] = r.int("status", 502)
        if not 200 <= fields["status"] <= 599:
            raise r.error("status", f"must be an HTTP status 200-599, got {fields['status']}")
    r.finish()
    return Fault(**fields)
