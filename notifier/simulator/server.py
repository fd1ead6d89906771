"""The simulator's HTTP side: a real loopback server that answers like DataArts Factory.

Routes (``workspace`` header selects a workspace; none means the default one):

    GET /v1/{project_id}/jobs/{job_name}/status        the job status API
    GET /v1/{project_id}/jobs?jobType=REAL_TIME&offset=&limit=&jobName=   the list-jobs API
    POST /v3/auth/tokens                               IAM's token API (password method; see IamSettings)

Who is served is the scenario's ``auth`` (``AuthSettings``; a multi-project scenario's: each
project's, picked by the path's project_id), checked as the API gateway does
(``notifier.simulator.auth``): ``"none"`` serves anyone; ``"aksk"`` wants an ``SDK-HMAC-SHA256``
signature with the scenario's AK/SK and an ``X-Sdk-Date`` within 15 minutes of the wall
clock; ``"token"`` (or ``IamSettings.require_token``) wants ``X-Auth-Token``: the scenario's
static token or one this simulator's IAM issued that has not expired or been revoked.
Anything else is 401 ``APIG.0301`` with the gateway's wording.

Limits (``[limits]``, ``Limits``; the constructor's ``rate_limit`` and ``latency`` override them):
the status and list APIs serve at most ``requests_per_second`` requests per user (the AK of an
``SDK-HMAC-SHA256`` Authorization header, else the X-Auth-Token, else "anonymous": without auth
every client shares one budget) in any sliding one-second window of *real* time
(``limit_clock``, default ``time.monotonic``: scenario time is often a frozen ``ManualClock``).
Beyond it they answer as the gateway does, 429 ``APIG.0308`` naming the limit, without
Retry-After. Only served requests use up the window: a refused one (429, or a 401 for bad
credentials, checked first) does not, so a client that keeps knocking is served again as soon
as its older requests leave the window. A 429 is the gateway's answer: no fault applies to
it (a ``count`` is not used up by it). IAM's token API is not limited. ``latency`` is slept
(through ``sleep``, which ``stop()`` interrupts) before every status and list answer, 429s
included, in the request's own thread: requests still overlap.

Every answer carries ``X-Request-Id`` (32 hex digits, recorded with the request); gateway
errors (``APIG.*``) also carry it as ``request_id`` in the body, as APIG does: it is what
Huawei support asks for, so the client quotes it in its errors.

Errors, as the service words them where known:

    unknown job (or job of another workspace)  400 {"error_code": "DLF.0100", "error_msg": "The job does not exists."}
    a project's workspace header missing/wrong 400 {"error_code": "DLF.0810", "error_msg": "Workspace does not ..."}
                                               (DataArts Factory's words; the code is the simulator's choice)
    wrong project_id                           404 {"error_code": "SIM.0404", ...}   (simulator's own code)
    bad list parameters                        400 {"error_code": "SIM.0400", ...}   (simulator's own code)
    any other path                             404 {"error_code": "APIG.0101", ...}  (API Gateway's answer)
    missing or bad credentials (auth = ...)    401 {"error_code": "APIG.0301", "error_msg": "Incorrect IAM ...", ...}
    another project's valid credentials        403 {"error_code": "APIG.0302", "error_msg": "The IAM user is not ..."}
    over the per-user rate limit               429 {"error_code": "APIG.0308", "error_msg": "The throttling ..."}
    wrong IAM user, password or domain         401 {"error_code": "IAM.0004", ...}
    methods other than GET and POST            501 (http.server's default)

The server is stdlib ``ThreadingHTTPServer`` speaking keep-alive HTTP/1.1 (every answer has a
Content-Length and goes out in one write, Nagle off), so an httpx pool reuses connections.
Scenario time comes from an injectable clock; faults may sleep through an injectable
``sleep``, so tests never wait for real time to pass.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import random
import re
import secrets
import shlex
import signal
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, TextIO, cast
from urllib.parse import parse_qsl, unquote, urlsplit

from notifier.core.counters import COUNTER_NAMES
from notifier.simulator.auth import TOKEN_INVALID, TOKEN_NOT_FOUND, ReceivedRequest, token_expired, verify_aksk
from notifier.simulator.scale import EXCEPTION, Change, ScaleModel
from notifier.simulator.scenario import (
    DEFAULT_AUTH,
    DEFAULT_IAM,
    EMPTY,
    SCENARIO_DIR,
    AuthSettings,
    Fault,
    IamSettings,
    JobPlan,
    JobView,
    NodeScript,
    Project,
    Scenario,
    compile_job,
    parse_fault,
)

log = logging.getLogger(__name__)

Clock = Callable[[], float]
"""Returns scenario time: seconds since the scenario started."""

Sleep = Callable[[float], None]

WallClock = Callable[[], float]
"""Returns epoch seconds: the clock an ``X-Sdk-Date`` is checked against (default ``time.time``)."""

LimitClock = Callable[[], float]
"""Returns real seconds from any origin (default ``time.monotonic``): the rate limit's window runs on it."""


class FromScenario(enum.Enum):
    """The default of ``Simulator(rate_limit=, latency=)``: take the scenario's ``[limits]``."""

    VALUE = "the scenario's"


FROM_SCENARIO = FromScenario.VALUE

JSON_TYPE = "application/json;charset=UTF-8"
NOT_FOUND = {"error_code": "DLF.0100", "error_msg": "The job does not exists."}
THROTTLED = ("APIG.0308",
             "The throttling threshold has been reached: policy user over ratelimit,limit:30,time:1 second")
ANONYMOUS = "anonymous"
_ACCESS = re.compile(r"^\s*SDK-HMAC-SHA256\s+Access=([^,\s]+)")


def throttled_message(limit: float) -> str:
    """The gateway's words for a user over its limit (``THROTTLED`` with the real limit)."""
    return f"The throttling threshold has been reached: policy user over ratelimit,limit:{limit:g},time:1 second"
LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX = 10, 1000
IAM_TOKEN_PATH = "/v3/auth/tokens"
BAD_CREDENTIALS = "APIG.0301"
MAX_BODY = 1 << 20  # a GET with a body is odd; more than this is not read (and the connection is closed)
BAD_LOGIN = ("IAM.0004", "The username or password is wrong.")
FOREIGN_PROJECT = ("APIG.0302", "The IAM user is not authorized to access the API")
"""403 for valid credentials of a user the project does not accept (another project's): API Gateway's code for an
IAM user refused an API. Not in the DGC API document; the simulator's choice (with its own precision appended)."""
WORKSPACE_NOT_FOUND = ("DLF.0810", "Workspace does not exists")
"""400 for a project's workspace header missing or wrong. The words are DataArts Factory's (its FAQ "Workspace does
not exists"); the code is the simulator's choice: the DGC API document names none."""


# --- clocks ---------------------------------------------------------------------------

class ManualClock:
    """Scenario time that moves only when a test says so."""

    def __init__(self, start: float = 0.0) -> None:
        self._t = float(start)

    def __call__(self) -> float:
        return self._t

    def advance(self, seconds: float) -> float:
        """Move time forward; returns the new scenario time."""
        if seconds < 0:
            raise ValueError(f"time only moves forward, got advance({seconds})")
        self._t += seconds
        return self._t

    def set(self, seconds: float) -> None:
        self._t = float(seconds)


class MonotonicClock:
    """Real scenario time: seconds of ``time.monotonic()`` since ``restart()`` (called by start())."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def restart(self) -> None:
        self._t0 = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self._t0


# --- request log ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the simulator received it."""

    method: str
    path: str  # without the query string, as sent (not URL-decoded)
    query: Mapping[str, str]  # last value wins
    headers: Mapping[str, str]  # names lower-cased
    client: str  # "host:port" of the connection; the same for requests on a reused keep-alive connection
    t: float  # scenario time
    request_id: str = ""  # the X-Request-Id the answer carried
    project: str = ""  # the project id of a status or list request's path (URL-decoded); "" for any other path
    user: str = ""  # whose rate budget a status or list request is counted in (``Simulator.user_of``); "" otherwise


class RequestLog:
    """Thread-safe record of the most recent requests (oldest first), bounded so benchmarks stay small."""

    def __init__(self, maxlen: int) -> None:
        self._items: deque[RecordedRequest] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def append(self, request: RecordedRequest) -> None:
        with self._lock:
            self._items.append(request)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def snapshot(self) -> tuple[RecordedRequest, ...]:
        with self._lock:
            return tuple(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[RecordedRequest]:
        return iter(self.snapshot())

    def __getitem__(self, index: int) -> RecordedRequest:
        return self.snapshot()[index]


# --- the per-user rate limit -----------------------------------------------------------

def user_of(headers: Mapping[str, str]) -> str:
    """Whose budget a request uses: ``ak:<AK>`` of a signed request, else ``token:<X-Auth-Token>``, else anonymous."""
    authorization = headers.get("authorization")
    if authorization:
        match = _ACCESS.match(authorization)
        if match is not None:
            return f"ak:{match[1]}"
    token = headers.get("x-auth-token")
    if token:
        return f"token:{token}"
    return ANONYMOUS


class UserRateLimit:
    """Sliding one-second windows of served requests, one per user, with counts; thread-safe.

    ``admit(user, limit)`` serves a request when fewer than ``limit`` requests of that user
    were served in the last second of ``clock`` (a request at ``x`` counts in ``(x - 1, x]``),
    so at most ceil(limit) are served in any one-second window. A refusal is not recorded in
    the window: it does not delay the user's next chance. ``limit <= 0`` admits everything
    (still counted).
    """

    def __init__(self, clock: LimitClock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, deque[float]] = {}
        self._served: dict[str, int] = {}
        self._throttled: dict[str, int] = {}
        self.served = 0
        self.throttled = 0

    def admit(self, user: str, limit: float) -> bool:
        with self._lock:  # the clock is read under the lock, so each window stays in time order
            if limit > 0:
                now = self._clock()
                window = self._windows.get(user)
                if window is None:
                    window = self._windows[user] = deque()
                cutoff = now - 1.0
                while window and window[0] <= cutoff:
                    window.popleft()
                if len(window) >= limit:
                    self.throttled += 1
                    self._throttled[user] = self._throttled.get(user, 0) + 1
                    return False
                window.append(now)
            self.served += 1
            self._served[user] = self._served.get(user, 0) + 1
            return True

    def served_by_user(self) -> dict[str, int]:
        with self._lock:
            return dict(self._served)

    def throttled_by_user(self) -> dict[str, int]:
        with self._lock:
            return dict(self._throttled)

    def reset(self) -> None:
        """Forget the windows and the counts."""
        with self._lock:
            self._windows.clear()
            self._served.clear()
            self._throttled.clear()
            self.served = self.throttled = 0


# --- runtime state --------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Entry:
    """A served job: its script compiled once."""

    index: int
    plan: JobPlan
    faults: tuple[Fault, ...]
    project: str = ""  # the id of the project serving it

    @property
    def name(self) -> str:
        return self.plan.job.name

    @property
    def workspace(self) -> str:
        return self.plan.job.workspace


@dataclass(frozen=True, slots=True)
class _Served:
    """A served project with its jobs' entries, indexed the ways requests look them up."""

    project: Project
    entries: tuple[_Entry, ...]
    by_key: Mapping[tuple[str, str], _Entry]  # (workspace, job name)
    by_workspace: Mapping[str, tuple[_Entry, ...]]

    @classmethod
    def of(cls, project: Project, entries: tuple[_Entry, ...]) -> _Served:
        by_workspace: dict[str, list[_Entry]] = {}
        for e in entries:
            by_workspace.setdefault(e.workspace, []).append(e)
        return cls(project, entries, MappingProxyType({(e.workspace, e.name): e for e in entries}),
                   MappingProxyType({k: tuple(v) for k, v in by_workspace.items()}))


@dataclass(frozen=True, slots=True)
class _Issued:
    """A token the simulated IAM issued: when it expires (scenario time), the project it is scoped to, its user."""

    expires: float
    project: str
    user: str


@dataclass(frozen=True, slots=True)
class _Override:
    """Values a test set at runtime; they replace the scripted ones from then on."""

    status: str | None = None
    since: float = 0.0
    nodes: Mapping[int, str] = field(default_factory=lambda: EMPTY)
    counters: Mapping[int, Mapping[int, int]] = field(default_factory=lambda: EMPTY)


@dataclass(slots=True)
class _FaultState:
    """A fault with what it has used up: its remaining count and its random stream."""

    fault: Fault
    remaining: int | None
    rng: random.Random = field(default_factory=random.Random)


@dataclass(frozen=True, slots=True)
class _Answer:
    """What to send: a JSON document (``doc``) or raw ``body`` bytes."""

    status: int
    doc: Any = None
    body: bytes | None = None
    content_type: str = JSON_TYPE
    headers: tuple[tuple[str, str], ...] = ()


def _error(status: int, code: str, message: str) -> _Answer:
    return _Answer(status, {"error_code": code, "error_msg": message})


# --- the simulator --------------------------------------------------------------------

class Simulator:
    """A DGC job-status service on loopback, scripted by a ``Scenario``.

    ``clock`` returns scenario seconds (default: real time since ``start()``); ``sleep`` is
    what latency faults call (default: a sleep that ``stop()`` interrupts). ``iam`` replaces
    the scenario's ``[iam]`` settings (the credentials IAM accepts, token lifetime, whether
    the DGC APIs require a token); ``auth`` replaces its ``auth`` and ``[credentials]``.
    ``wall_clock`` (epoch seconds, default ``time.time``) is what ``X-Sdk-Date`` must be
    within 15 minutes of; a test whose notifier runs on scenario time sets
    ``sim.wall_clock = sim.scenario_epoch``.

    ``rate_limit`` (requests per second per user) and ``latency`` (seconds) replace the
    scenario's ``[limits]``; None or 0 turns either off. They are plain attributes, read on
    every request. ``limit_clock`` (real seconds, default ``time.monotonic``) runs the rate
    limit's window. ``served`` and ``throttled`` count the DGC requests the limit let through
    and refused (``served_by_user()``, ``throttled_by_user()`` per user). A scale scenario
    (``Scenario.scale``) has its changes computed on every answer; ``changes(t0, t1)`` is
    their ground truth.

    A multi-project scenario (``Scenario.of_projects``, ``[[project]]``) is served on the one
    port: each project by its id in the path, with its own workspace, credentials and jobs
    (``projects``; ``project_id`` is the first's). The rate limit stays per user, so projects
    sharing credentials share a budget. Every recorded request names its ``project`` and
    ``user``; ``requests_for(project_id)`` is one project's. ``auth=`` only replaces a
    one-project scenario's credentials (a multi-project one's are its projects').
    """

    def __init__(self, scenario: Scenario, host: str = "127.0.0.1", port: int = 0, clock: Clock | None = None,
                 *, sleep: Sleep | None = None, record_requests: int = 10_000,
                 iam: IamSettings | None = None, auth: AuthSettings | None = None,
                 wall_clock: WallClock | None = None,
                 rate_limit: float | FromScenario | None = FROM_SCENARIO,
                 latency: float | FromScenario | None = FROM_SCENARIO,
                 limit_clock: LimitClock | None = None) -> None:
        self.scenario = scenario
        self.iam = iam if iam is not None else scenario.iam
        projects = scenario.served()
        if auth is not None:
            if scenario.projects:
                raise ValueError("Simulator(auth=) replaces a one-project scenario's credentials; a multi-project "
                                 "scenario's are its projects' (replace the projects)")
            projects = (replace(projects[0], auth=auth),)
        self.projects: tuple[Project, ...] = projects
        self.wall_clock: WallClock = wall_clock if wall_clock is not None else time.time
        self.rate_limit: float = _limit_value(
            "rate_limit", scenario.limits.requests_per_second if isinstance(rate_limit, FromScenario) else rate_limit)
        self.latency: float = _limit_value(
            "latency", scenario.limits.latency if isinstance(latency, FromScenario) else latency)
        self._limiter = UserRateLimit(limit_clock if limit_clock is not None else time.monotonic)
        self._scale: ScaleModel | None = scenario.scale_model
        self._tokens: dict[str, _Issued] = {}
        self._token_lock = threading.Lock()
        self.tokens_issued = 0
        self.host = host
        self.project_id = scenario.project_id
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self.requests = RequestLog(record_requests)
        self._requested_port = port
        self._stopping = threading.Event()
        self._sleep: Sleep = sleep if sleep is not None else self._interruptible_sleep
        timelines: dict[tuple[Any, ...], Any] = {}
        multi = bool(scenario.projects)
        served: list[_Served] = []
        index = 0
        for project in projects:
            scope = project.id if multi else None  # a multi-project scenario's job and project faults: its own
            entries = []
            for job in project.jobs:
                entries.append(_Entry(index, compile_job(job, loop=scenario.loop, cache=timelines),
                                      _scoped(job.faults, scope), project.id))
                index += 1
            served.append(_Served.of(replace(project, faults=_scoped(project.faults, scope)), tuple(entries)))
        self._served = tuple(served)
        self._served_by_id = {s.project.id: s for s in self._served}
        self._entries = tuple(e for s in self._served for e in s.entries)
        by_name: dict[str, list[_Entry]] = {}
        for e in self._entries:
            by_name.setdefault(e.name, []).append(e)
        self._by_name = {k: tuple(v) for k, v in by_name.items()}
        # the gateway's user directory: an AK's credentials, a static token's project
        self._aksk: dict[str, AuthSettings] = {}
        self._static_tokens: dict[str, str] = {}
        for project in projects:
            if project.auth.mode == "aksk":
                self._aksk.setdefault(project.auth.ak, project.auth)
            elif project.auth.mode == "token":
                self._static_tokens.setdefault(project.auth.token, project.id)
        self._epoch_ms = scenario.epoch_start_ms if scenario.epoch_start_ms is not None else int(time.time() * 1000)
        # Copy-on-write: readers take the current reference without a lock; writers swap it under one.
        self._overrides: Mapping[int, _Override] = MappingProxyType({})
        self._override_lock = threading.Lock()
        self._fault_lock = threading.Lock()
        self._runtime_faults: tuple[_FaultState, ...] = ()
        self._scripted_faults = tuple(_new_state(f) for e in self._entries for f in e.faults) + tuple(
            _new_state(f) for s in self._served for f in s.project.faults) + tuple(
            _new_state(f) for f in scenario.faults)
        self._faults = self._scripted_faults
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> Simulator:
        """Bind, serve in a daemon thread, and (default clock) start scenario time at 0."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._stopping.clear()
        self._server = _Server((self.host, self._requested_port), self)
        if self.scenario.epoch_start_ms is None:
            self._epoch_ms = int(time.time() * 1000)
        if isinstance(self.clock, MonotonicClock):
            self.clock.restart()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"dgc-simulator-{self.port}", daemon=True)
        self._thread.start()
        log.info("simulator started url=%s scenario=%s projects=%s", self.url, self.scenario.name,
                 ",".join(f"{served.project.id}:{len(served.entries)}" for served in self._served))
        return self

    def stop(self) -> None:
        """Stop serving, close every open connection and join the threads; safe to call twice."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections(timeout=2.0)
        if thread is not None:
            thread.join(timeout=2.0)
        self._server = self._thread = None
        log.info("simulator stopped")

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("simulator not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def epoch_start_ms(self) -> int:
        """Epoch milliseconds of scenario time 0 (the scenario's ``epoch_start``, else the start time)."""
        return self._epoch_ms

    def now(self) -> float:
        """Current scenario time in seconds (never negative)."""
        return max(0.0, float(self.clock()))

    def scenario_epoch(self) -> float:
        """Current scenario time as epoch seconds (``epoch_start_ms`` + ``now()``): a ``wall_clock`` for tests."""
        return self._epoch_ms / 1000 + self.now()

    # limits and scale mode

    @property
    def served(self) -> int:
        """Status and list requests the rate limit let through (every one when there is no limit)."""
        return self._limiter.served

    @property
    def throttled(self) -> int:
        """Status and list requests refused with 429 APIG.0308 by the rate limit."""
        return self._limiter.throttled

    def served_by_user(self) -> dict[str, int]:
        """``served`` per user (``user_of``): ``ak:<AK>``, ``iam:<user>``, ``token:<token>`` or ``anonymous``."""
        return self._limiter.served_by_user()

    def throttled_by_user(self) -> dict[str, int]:
        """``throttled`` per user."""
        return self._limiter.throttled_by_user()

    def reset_limits(self) -> None:
        """Empty every user's window and zero the counts."""
        self._limiter.reset()

    def user_of(self, headers: Mapping[str, str]) -> str:
        """Whose budget a request (lower-cased header names) uses: as ``user_of``, but a token this IAM issued is
        its user's (``iam:<user>``): the gateway limits users, so a new token is no new budget."""
        user = user_of(headers)
        if user.startswith("token:"):
            with self._token_lock:
                issued = self._tokens.get(user[len("token:"):])
            if issued is not None:
                return issued.user
        return user

    # projects

    @property
    def auth(self) -> AuthSettings:
        """The first project's credentials: a one-project scenario's (its ``auth`` and ``[credentials]``)."""
        return self.projects[0].auth

    def project(self, id_or_name: str) -> Project:
        """A served project by its id or name (ValueError naming the served ones when none is)."""
        for project in self.projects:
            if id_or_name in (project.id, project.name):
                return project
        raise ValueError(f"no project {id_or_name!r} served here (projects: "
                         f"{', '.join(repr(p.label) for p in self.projects)})")

    def requests_for(self, project: str) -> tuple[RecordedRequest, ...]:
        """The recorded status and list requests whose path names ``project`` (an id, or a served project's name)."""
        wanted = next((p.id for p in self.projects if project in (p.id, p.name)), project)
        return tuple(r for r in self.requests if r.project == wanted)

    @property
    def scale_model(self) -> ScaleModel | None:
        return self._scale

    def changes(self, t0: float, t1: float) -> list[Change]:
        """Scale mode's ground truth: the changes starting or ending in ``[t0, t1)`` of scenario time, by time.

        Each is ``Change(t, job, node, status, previous)``, node "" for a job-level change;
        ``epoch_start_ms + round(t * 1000)`` is the lastUpdateTime a job-level one serves.
        Runtime overrides (``set_job_status``...) are not in it.
        """
        if self._scale is None:
            raise ValueError(f"scenario {self.scenario.name!r} is not a scale scenario (Scenario.scale, [scale])")
        return self._scale.changes(t0, t1)

    # runtime control (tests)

    def set_fault(self, job: str | None = None, **fault: Any) -> Fault:
        """Add a fault now; later ones win over earlier ones and over the scenario's.

        Keywords are the scenario file's fault keys; durations may be numbers of seconds.
        ``after``/``until`` are absolute scenario times. In a multi-project scenario ``project``
        (an id or name) limits it to that project's requests; without it, it applies to all.
        """
        if job is not None:
            fault["job"] = job
        parsed = parse_fault(fault, jobs=tuple(e.plan.job for e in self._entries),
                             projects=self.projects if self.scenario.projects else None)
        with self._fault_lock:
            self._runtime_faults = (_new_state(parsed), *self._runtime_faults)
            self._faults = self._runtime_faults + self._scripted_faults
        return parsed

    def clear_faults(self, *, scripted: bool = True) -> None:
        """Remove runtime faults and (``scripted``) the scenario's own: the simulator then answers cleanly."""
        with self._fault_lock:
            self._runtime_faults = ()
            if scripted:
                self._scripted_faults = ()
            self._faults = self._scripted_faults

    def set_job_status(self, job: str, status: str, *, workspace: str | None = None,
                       project: str | None = None) -> None:
        """Serve ``status`` for the job from now on; lastUpdateTime moves only if the status changes.

        ``workspace`` and ``project`` (id or name) say which job when the name is not unique.
        """
        with self._override_lock:
            entry = self._entry(job, workspace, project)
            t = self.now()
            current = self._view(entry, t)
            since = current.since if status == current.status else t
            self._put_override(entry, status=status, since=since)

    def set_node_status(self, job: str, node: str, status: str, *, workspace: str | None = None,
                        project: str | None = None) -> None:
        """Serve ``status`` for the node from now on."""
        with self._override_lock:
            entry = self._entry(job, workspace, project)
            n = self._node_index(entry, node)
            old = self._overrides.get(entry.index, _Override())
            self._put_override(entry, nodes=MappingProxyType({**old.nodes, n: status}))

    def set_counters(self, job: str, node: str, *, workspace: str | None = None, project: str | None = None,
                     **counters: int) -> None:
        """Pin counters (API names, e.g. ``totalPutRecords=5``) at fixed values from now on."""
        values: dict[int, int] = {}
        for name, value in counters.items():
            if name not in COUNTER_NAMES:
                raise ValueError(f"unknown counter {name!r}; counters are {', '.join(COUNTER_NAMES)}")
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"counter {name} must be a non-negative int, got {value!r}")
            values[COUNTER_NAMES.index(name)] = value
        with self._override_lock:
            entry = self._entry(job, workspace, project)
            n = self._node_index(entry, node)
            old = self._overrides.get(entry.index, _Override())
            merged = {**old.counters.get(n, EMPTY), **values}
            self._put_override(entry, counters=MappingProxyType({**old.counters, n: MappingProxyType(merged)}))

    def revoke_tokens(self) -> None:
        """Forget every issued token: the DGC APIs (with ``require_token``) refuse them from now on."""
        with self._token_lock:
            self._tokens.clear()

    def token_valid(self, token: str | None, t: float | None = None) -> bool:
        """Whether ``token`` was issued here and has neither expired (at scenario time ``t``) nor been revoked."""
        t = self.now() if t is None else t
        with self._token_lock:
            issued = self._tokens.get(token or "")
        return issued is not None and t < issued.expires

    def _refusal(self, request: ReceivedRequest, project: Project, t: float) -> _Answer | None:
        """The gateway's answer when ``project`` does not serve this request's credentials; None to serve it.

        401 APIG.0301 for missing, unknown or badly signed credentials (checked as a
        one-project scenario checks them); 403 APIG.0302 for valid credentials of a user the
        project does not accept: another project's AK/SK or static token, or an IAM token
        scoped to another project.
        """
        auth = project.auth
        if auth.mode == "aksk":
            now = datetime.fromtimestamp(self.wall_clock(), tz=timezone.utc)
            match = _ACCESS.match(request.headers.get("authorization", ""))
            owner = self._aksk.get(match[1], auth) if match is not None and match[1] != auth.ak else auth
            problem = verify_aksk(request, owner, now)  # a foreign AK's signature is checked with its own SK
            if problem is None and owner is not auth:
                return self._foreign(project)
        elif auth.mode == "token" or self.iam.require_token:
            problem, scope = self._token_problem(request.headers.get("x-auth-token"), project, t)
            if problem is None and scope != project.id:
                return self._foreign(project)
        else:
            return None
        return None if problem is None else _error(401, BAD_CREDENTIALS, problem)

    def _token_problem(self, token: str | None, project: Project, t: float) -> tuple[str | None, str]:
        """(why ``token`` is refused at scenario time ``t`` in the gateway's words, or None; the project it is for)."""
        if not token:
            return TOKEN_NOT_FOUND, ""
        if project.auth.mode == "token" and secrets.compare_digest(token.encode(), project.auth.token.encode()):
            return None, project.id
        with self._token_lock:
            issued = self._tokens.get(token)
        if issued is None:
            owner = self._static_tokens.get(token)
            return (TOKEN_INVALID, "") if owner is None else (None, owner)
        return (token_expired(self._iso(issued.expires)) if t >= issued.expires else None), issued.project

    def _foreign(self, project: Project) -> _Answer:
        """403: these credentials are valid, but not the ones ``project`` accepts."""
        return _error(403, FOREIGN_PROJECT[0], f"{FOREIGN_PROJECT[1]}: project {project.id} does not accept these "
                                               f"credentials (they are valid, but another project's)")

    def clear_overrides(self) -> None:
        """Forget every runtime status and counter override: the script rules again."""
        with self._override_lock:
            self._overrides = MappingProxyType({})

    def _put_override(self, entry: _Entry, **changes: Any) -> None:
        old = self._overrides.get(entry.index, _Override())
        self._overrides = MappingProxyType({**self._overrides, entry.index: replace(old, **changes)})

    def _entry(self, job: str, workspace: str | None, project: str | None = None) -> _Entry:
        found = self._by_name.get(job, ())
        if project is not None:
            pid = self.project(project).id
            found = tuple(e for e in found if e.project == pid)
        if workspace is not None:
            found = tuple(e for e in found if e.workspace == workspace)
        where = "".join((f" in workspace {workspace!r}" if workspace is not None else "",
                         f" of project {project!r}" if project is not None else ""))
        if not found:
            raise ValueError(f"no job {job!r}{where or ' in the scenario'}")
        if len(found) > 1:
            several = ("projects; pass project=" if len({e.project for e in found}) > 1
                       else "workspaces; pass workspace=")
            raise ValueError(f"job {job!r}{where} exists in several {several}")
        return found[0]

    @staticmethod
    def _node_index(entry: _Entry, node: str) -> int:
        for n, script in enumerate(entry.plan.job.nodes):
            if script.name == node:
                return n
        raise ValueError(f"job {entry.name!r} has no node {node!r}")

    # computing answers

    def _view(self, entry: _Entry, t: float, *, counters: bool = True) -> JobView:
        """The scripted view, with scale mode's changes and then runtime overrides applied (``counters``: or none)."""
        view = entry.plan.at(t, counters=counters)
        if self._scale is not None:
            view = _scaled(view, self._scale, entry.index, t)
        override = self._overrides.get(entry.index)
        if override is None:
            return view
        statuses, values_by_node = view.node_statuses, view.counters
        if override.nodes:
            statuses = tuple(override.nodes.get(n, s) for n, s in enumerate(statuses))
        if override.counters:
            values_by_node = tuple(
                cast("tuple[int, int, int, int]", tuple(override.counters[n].get(c, v) for c, v in enumerate(values)))
                if n in override.counters
                else values
                for n, values in enumerate(values_by_node))
        status, since = view.status, view.since
        if override.status is not None:
            status, since = override.status, override.since
        return JobView(status, since, statuses, values_by_node)

    def _status_doc(self, entry: _Entry, t: float) -> dict[str, Any]:
        if self.scenario.response_style == "sdk":
            return self._sdk_status_doc(entry, t)
        job = entry.plan.job
        view = self._view(entry, t)
        since_ms = self._epoch_ms + round(view.since * 1000)
        nodes = []
        for script, status, c in zip(job.nodes, view.node_statuses, view.counters, strict=True):
            node: dict[str, Any] = {}
            if script.log_path is not None:
                node["logPath"] = script.log_path
            node["name"] = script.name
            if script.running_data is not None:
                node["runningData"] = script.running_data
            node["status"] = status
            node["totalGetBytes"], node["totalGetRecords"], node["totalPutBytes"], node["totalPutRecords"] = c
            node["type"] = script.type
            if script.extra:
                node.update(script.extra)
            nodes.append(node)
        doc: dict[str, Any] = {}
        if view.status == "STOPPED":
            doc["endTime"] = since_ms
        doc["lastUpdateTime"] = since_ms
        doc["name"] = job.name
        doc["nodes"] = nodes
        doc["startTime"] = job.start_time.resolve(self._epoch_ms)
        doc["status"] = view.status
        if job.extra:
            doc.update(job.extra)
        return doc

    def _sdk_status_doc(self, entry: _Entry, t: float) -> dict[str, Any]:
        """The status answer shaped as huaweicloudsdkdgc models it (ShowJobStatusResponse, RealTimeNodeStatus).

        ``starttime`` not ``startTime``, ``nodeType`` not ``type``, times and counters as strings,
        ``STARTING`` spelt as the SDK does, and the fields only the SDK (or the newer API page)
        names. What ``lastInstanceStatus`` and ``extendCounter`` hold is not documented: the
        values here are placeholders of the right type (notifier does not use them).
        """
        job = entry.plan.job
        view = self._view(entry, t)
        since_ms = str(self._epoch_ms + round(view.since * 1000))
        nodes = [self._sdk_node(entry, script, status, counters)
                 for script, status, counters in zip(job.nodes, view.node_statuses, view.counters, strict=True)]
        owner = job.create_user if job.create_user is not None else job.owner
        doc: dict[str, Any] = {"name": job.name, "status": _sdk_status(view.status),
                               "starttime": str(job.start_time.resolve(self._epoch_ms)), "lastUpdateTime": since_ms,
                               "createUser": owner, "lastModifiyUser": owner, "nodes": nodes}
        if view.status == "STOPPED":
            doc["endTime"] = since_ms
        if job.extra:
            doc.update(job.extra)
        return doc

    @staticmethod
    def _sdk_node(entry: _Entry, script: NodeScript, status: str, counters: tuple[int, ...]) -> dict[str, Any]:
        node: dict[str, Any] = {"name": script.name, "status": _sdk_status(status), "nodeType": script.type,
                                "lastInstanceStatus": "fail" if status in ("EXCEPTION", "ABNORMAL") else "success",
                                "extendCounter": json.dumps(dict(zip(COUNTER_NAMES, counters, strict=True)),
                                                            separators=(",", ":")),
                                "bufferRecords": 0, "jobInstanceId": 100_000 + entry.index}
        node.update((name, str(value)) for name, value in zip(COUNTER_NAMES, counters, strict=True))
        if script.log_path is not None:
            node["logPath"] = script.log_path
        if script.running_data is not None:
            node["runningData"] = script.running_data
        if script.extra:
            node.update(script.extra)
        return node

    def _list_item(self, entry: _Entry, t: float) -> dict[str, Any]:
        job = entry.plan.job
        view = self._view(entry, t, counters=False)
        since_ms = self._epoch_ms + round(view.since * 1000)
        start_ms = job.start_time.resolve(self._epoch_ms)
        item = {
            "name": job.name,
            "jobType": "REAL_TIME",
            # The list API spells the starting state STARTING, the status API STARTTING.
            "status": _sdk_status(view.status),
            "lastUpdateTime": since_ms,
            "owner": job.owner,
            "priority": job.priority,
            "createUser": job.create_user if job.create_user is not None else job.owner,
            "createTime": job.create_time.resolve(self._epoch_ms) if job.create_time is not None else start_ms,
            "startTime": start_ms,
        }
        if view.status == "STOPPED":
            item["endTime"] = since_ms
        return item

    def _list(self, query: Mapping[str, str], served: _Served, workspace: str, t: float) -> _Answer:
        job_type = query.get("jobType") or "BATCH"  # the documented default; the simulator has no batch jobs
        if job_type not in ("REAL_TIME", "BATCH"):
            return _error(400, "SIM.0400", f"jobType must be REAL_TIME or BATCH, got {job_type!r}")
        try:
            limit = _int_param(query, "limit", LIST_LIMIT_DEFAULT, 1, LIST_LIMIT_MAX)
            offset = _int_param(query, "offset", 0, 0, None)
        except ValueError as exc:
            return _error(400, "SIM.0400", str(exc))
        entries = served.by_workspace.get(workspace, ()) if job_type == "REAL_TIME" else ()
        name = query.get("jobName", "")
        if name:
            entries = tuple(e for e in entries if name in e.name)
        first = offset if self.scenario.list_offset == "records" else offset * limit
        return _Answer(200, {"total": len(entries),
                             "jobs": [self._list_item(e, t) for e in entries[first:first + limit]]})

    def _target(self, project_id: str) -> _Served | None:
        """Whose credentials a DGC request is judged by: its path's project (one-project scenario: the one, whatever
        the path says, so a wrong id is refused like any request before its 404); None: no such project."""
        if not self.scenario.projects:
            return self._served[0]
        return self._served_by_id.get(project_id)

    def _served_ids(self) -> str:
        return ", ".join(repr(p.id) for p in self.projects)

    def _route(self, path: str, query: Mapping[str, str], workspace: str, served: _Served | None,
               t: float) -> tuple[str | None, _Entry | None, _Answer]:
        """(endpoint, job entry or None, the fault-free answer)."""
        endpoint = _endpoint(path)
        if endpoint is not None:
            parts = path.rstrip("/").split("/")
            project_id = unquote(parts[2])
            if served is None or project_id != served.project.id:
                return endpoint, None, _error(
                    404, "SIM.0404", f"project_id {project_id!r} is not served here (this simulator serves "
                                     f"{self._served_ids()})")
            problem = _workspace_problem(served.project, workspace)
            if problem is not None:
                return endpoint, None, _error(400, WORKSPACE_NOT_FOUND[0], problem)
            if endpoint == "list":
                return endpoint, None, self._list(query, served, workspace, t)
            entry = served.by_key.get((workspace, unquote(parts[4])))
            if entry is None:
                return endpoint, None, _Answer(400, NOT_FOUND)
            return endpoint, entry, _Answer(200, self._status_doc(entry, t))
        return None, None, _error(404, "APIG.0101",
                                  "The API does not exist or has not been published in the environment")

    # faults

    def _pick_faults(self, t: float, endpoint: str | None, entry: _Entry | None,
                     project: str) -> tuple[float, Fault | None]:
        """Total latency and the first answer-changing fault that apply to this request."""
        states = self._faults
        if not states:
            return 0.0, None
        delay, chosen = 0.0, None
        with self._fault_lock:
            for state in states:
                f = state.fault
                if chosen is not None and f.kind != "latency":
                    continue
                if not _fault_matches(f, t, endpoint, entry, project) or state.remaining == 0:
                    continue
                if f.probability is not None and state.rng.random() >= f.probability:
                    continue
                if state.remaining is not None:
                    state.remaining -= 1
                if f.kind == "latency":
                    delay += f.delay
                else:
                    chosen = f
        return delay, chosen

    def _interruptible_sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    # HTTP

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        """Answer one GET request (called by the server's handler threads)."""
        t = self.now()
        request_id = new_request_id()
        split = urlsplit(handler.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        headers = _lower_headers(handler)
        body = _read_body(handler)
        host, port = handler.client_address[:2]
        endpoint = _endpoint(split.path)
        project_id, user, served = "", "", None
        if endpoint is not None:
            project_id, user = unquote(split.path.split("/")[2]), self.user_of(headers)
            served = self._target(project_id)
        self.requests.append(RecordedRequest(handler.command, split.path, MappingProxyType(query),
                                             MappingProxyType(headers), f"{host}:{port}", t, request_id,
                                             project_id, user))
        refusal = None
        if endpoint is not None:
            if served is not None:
                refusal = self._refusal(ReceivedRequest(handler.command, split.path, split.query, headers, body),
                                        served.project, t)
            if refusal is None and not self._limiter.admit(user, self.rate_limit):
                if self.latency > 0:
                    self._sleep(self.latency)
                _send(handler, _error(429, THROTTLED[0], throttled_message(self.rate_limit)), request_id)
                return
        if refusal is not None:
            entry, answer = None, refusal
        else:
            endpoint, entry, answer = self._route(split.path, query, headers.get("workspace", ""), served, t)
        delay, fault = self._pick_faults(t, endpoint, entry, project_id)
        if endpoint is not None:
            delay += self.latency
        if delay:
            self._sleep(delay)
        if fault is not None:
            if fault.kind == "disconnect":
                handler.close_connection = True
                return
            answer = _apply_fault(fault, answer)
        _send(handler, answer, request_id)

    def handle_post(self, handler: BaseHTTPRequestHandler) -> None:
        """Answer one POST: only IAM's token API is served (the body, holding a password, is not recorded)."""
        t = self.now()
        request_id = new_request_id()
        body = _read_body(handler)
        split = urlsplit(handler.path)
        headers = _lower_headers(handler)
        host, port = handler.client_address[:2]
        self.requests.append(RecordedRequest(handler.command, split.path, MappingProxyType({}),
                                             MappingProxyType(headers), f"{host}:{port}", t, request_id))
        if split.path.rstrip("/") != IAM_TOKEN_PATH:
            _send(handler, _error(404, "APIG.0101", "The API does not exist or has not been published in the "
                                                    "environment"), request_id)
            return
        _send(handler, self._issue_token(body, t), request_id)

    def _issue_token(self, body: bytes, t: float) -> _Answer:
        """IAM's password method: check user, password, domain and scope; 201 with X-Subject-Token."""
        try:
            auth = json.loads(body)["auth"]
            user = auth["identity"]["password"]["user"]
            name, password, domain = user["name"], user["password"], user["domain"]["name"]
            methods = auth["identity"]["methods"]
            project = auth.get("scope", {}).get("project", {})
        except (ValueError, TypeError, KeyError, AttributeError):
            return _error(400, "IAM.0011", "Request body is invalid.")
        if methods != ["password"]:
            return _error(400, "IAM.0011", "Request body is invalid: only the password method is simulated.")
        iam = self.iam
        if (name, password, domain) != (iam.user, iam.password, iam.domain):
            return _error(401, *BAD_LOGIN)
        if isinstance(project, dict) and project.get("id") in self._served_by_id:
            scope = str(project["id"])
        elif isinstance(project, dict) and project.get("name") == iam.project:
            scope = self.project_id  # by name: the first project (a one-project scenario's)
        else:
            return _error(400, "IAM.0011", f"Request body is invalid: scope {project!r} is not served here "
                                           f"(project id {self._served_ids()} or name {iam.project!r})")
        token = f"sim-{secrets.token_urlsafe(24)}"
        expires = t + iam.token_lifetime
        with self._token_lock:
            self._tokens[token] = _Issued(expires, scope, f"iam:{iam.user}")
            self.tokens_issued += 1
        doc = {"token": {
            "methods": ["password"],
            "issued_at": self._iso(t), "expires_at": self._iso(expires),
            "project": {"id": scope, "name": iam.project, "domain": {"name": iam.domain}},
            "user": {"name": iam.user, "domain": {"name": iam.domain}},
        }}
        return _Answer(201, doc, headers=(("X-Subject-Token", token),))

    def _iso(self, t: float) -> str:
        """Scenario time as IAM writes timestamps: ``2020-01-04T09:05:22.701000Z``."""
        when = datetime.fromtimestamp((self._epoch_ms + round(t * 1000)) / 1000, tz=timezone.utc)
        return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _limit_value(name: str, value: float | None) -> float:
    """A rate limit or latency: None is off (0); negative, NaN or infinite values are refused."""
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of at least 0 (0 or None: off), got {value!r}")
    return float(value)


def _workspace_problem(project: Project, workspace: str) -> str | None:
    """Why a request's ``workspace`` header is not ``project``'s (DataArts Factory's words, then the simulator's)."""
    if not project.workspace or workspace == project.workspace:
        return None
    sent = f"the request's workspace header is {workspace!r}" if workspace else \
        "the request sent no workspace header (the default workspace, which this project does not have)"
    return f"{WORKSPACE_NOT_FOUND[1]}: {sent}; project {project.id} serves workspace {project.workspace!r}"


def _endpoint(path: str) -> str | None:
    """Which DGC API a path is ("status", "list"), or None for any other path."""
    parts = path.rstrip("/").split("/")
    if (len(parts) in (4, 6) and parts[1] == "v1" and parts[3] == "jobs"
            and (len(parts) == 4 or parts[5] == "status")):
        return "list" if len(parts) == 4 else "status"
    return None


def _scaled(view: JobView, model: ScaleModel, j: int, t: float) -> JobView:
    """A NORMAL job's view with scale mode's change at ``t`` on top."""
    state = model.state(j, t)
    if state.since is None and state.node < 0 and state.status != EXCEPTION:
        return view
    nodes = view.node_statuses
    if state.node >= 0:
        nodes = (*nodes[:state.node], EXCEPTION, *nodes[state.node + 1:])
    return JobView(EXCEPTION if state.status == EXCEPTION else view.status,
                   state.since if state.since is not None else view.since, nodes, view.counters)


def new_request_id() -> str:
    """An ``X-Request-Id``: 32 lower-case hex digits, like the gateway's."""
    return uuid.uuid4().hex


def _sdk_status(status: str) -> str:
    """The SDK's (and the list API's) spelling: STARTING, where the status API page writes STARTTING."""
    return "STARTING" if status == "STARTTING" else status


def _lower_headers(handler: BaseHTTPRequestHandler) -> dict[str, str]:
    """Header names lower-cased; a repeated header keeps its first value (as ``Message.get`` does)."""
    headers: dict[str, str] = {}
    for name, value in handler.headers.items():
        headers.setdefault(name.lower(), value)
    return headers


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The request body (Content-Length bytes); one that is missing, odd or too large reads as empty."""
    try:
        length = int(handler.headers.get("Content-Length") or 0)
    except ValueError:
        length = 0
    if length > MAX_BODY:
        handler.close_connection = True  # the unread rest would be taken for the next request
        return b""
    return handler.rfile.read(length) if length > 0 else b""


def _scoped(faults: tuple[Fault, ...], project_id: str | None) -> tuple[Fault, ...]:
    """``faults``, those naming no project limited to ``project_id``'s requests (None: unchanged)."""
    if project_id is None:
        return faults
    return tuple(f if f.project is not None else replace(f, project=project_id) for f in faults)


def _new_state(fault: Fault) -> _FaultState:
    return _FaultState(fault, fault.count, random.Random(fault.seed))


def _fault_matches(f: Fault, t: float, endpoint: str | None, entry: _Entry | None, project: str) -> bool:
    if t < f.after or (f.until is not None and t >= f.until):
        return False
    if endpoint is None or (f.endpoint != "any" and f.endpoint != endpoint):
        return False
    if f.project is not None and f.project != project:
        return False
    if f.job is None:
        return True
    return entry is not None and entry.name == f.job and (f.workspace is None or f.workspace == entry.workspace)


def _apply_fault(f: Fault, answer: _Answer) -> _Answer:
    """The answer a fault turns a normal answer into."""
    if f.kind == "http_error":
        status = f.status or 500
        return _error(status, f.error_code or f"SIM.{status}", f.error_msg or f"Simulated {status} {_phrase(status)}")
    if f.kind == "throttle":
        headers = (("Retry-After", str(math.ceil(f.retry_after))),) if f.retry_after else ()
        return replace(_error(429, f.error_code or THROTTLED[0], f.error_msg or THROTTLED[1]), headers=headers)
    if f.kind == "html":
        status = f.status or 502
        page = (f"<html><head><title>{status} {_phrase(status)}</title></head><body><center><h1>{status} "
                f"{_phrase(status)}</h1></center><hr><center>nginx</center></body></html>\n")
        return _Answer(status, body=page.encode(), content_type="text/html")
    if f.kind == "empty_body":
        return _Answer(200, body=b"")
    if f.kind == "truncated_json":
        body = _encode(answer.doc) if answer.body is None else answer.body
        return _Answer(200, body=body[: max(1, len(body) // 2)])
    if f.kind == "missing_status" and answer.status == 200 and isinstance(answer.doc, dict):
        doc = dict(answer.doc)
        doc.pop("status", None)
        if isinstance(doc.get("jobs"), list):
            doc["jobs"] = [{k: v for k, v in job.items() if k != "status"} for job in doc["jobs"]]
        return replace(answer, doc=doc)
    return answer


def _int_param(query: Mapping[str, str], key: str, default: int, low: int, high: int | None) -> int:
    raw = query.get(key, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise ValueError(f"{key} must be an integer {bound}, got {raw!r}")
    return value


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _encode(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def _send(handler: BaseHTTPRequestHandler, answer: _Answer, request_id: str) -> None:
    """Write status line, headers and body in one write (no Nagle stall on keep-alive).

    Every answer gets ``X-Request-Id``; a gateway error document (``APIG.*``) also names it
    as ``request_id``, as API Gateway's own error bodies do.
    """
    doc = answer.doc
    if isinstance(doc, dict) and str(doc.get("error_code", "")).startswith("APIG"):
        doc = {**doc, "request_id": request_id}
    body = answer.body if answer.body is not None else _encode(doc)
    head = [
        f"HTTP/1.1 {answer.status} {_phrase(answer.status)}",
        f"Date: {handler.date_time_string()}",
        "Server: dgc-simulator",
        f"Content-Type: {answer.content_type}",
        f"Content-Length: {len(body)}",
        f"X-Request-Id: {request_id}",
        *(f"{k}: {v}" for k, v in answer.headers),
    ]
    if handler.close_connection:
        head.append("Connection: close")
    handler.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "dgc-simulator"
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        try:
            self.server.simulator.handle(self)
        except (ConnectionError, OSError):
            raise
        except Exception:
            log.exception("simulator failed to answer path=%s", self.path)
            _send(self, _error(500, "SIM.0500", "simulator error; see its log"), new_request_id())

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        try:
            self.server.simulator.handle_post(self)
        except (ConnectionError, OSError):
            raise
        except Exception:
            log.exception("simulator failed to answer path=%s", self.path)
            _send(self, _error(500, "SIM.0500", "simulator error; see its log"), new_request_id())

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        log.debug("simulator %s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that remembers its connections, so stop() can close idle keep-alive ones."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        self._lock = threading.Lock()
        self._active: dict[threading.Thread, socket.socket] = {}
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(target=self._serve_connection, args=(request, client_address),
                                  name="dgc-simulator-conn", daemon=True)
        with self._lock:
            self._active[thread] = request
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._active.pop(threading.current_thread(), None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("simulator connection error client=%s", client_address, exc_info=True)

    def close_connections(self, timeout: float) -> None:
        with self._lock:
            active = list(self._active.items())
        for _, sock in active:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread, _ in active:
            thread.join(timeout)


# --- blocking entry point -------------------------------------------------------------

def serve(scenario: Scenario, host: str = "127.0.0.1", port: int = 8080, *, out: TextIO | None = None,
          rate_limit: float | FromScenario | None = FROM_SCENARIO,
          latency: float | FromScenario | None = FROM_SCENARIO) -> None:
    """Serve until Ctrl-C or SIGTERM; print the URL, project ID and limits first (for `notifier simulate`).

    ``rate_limit`` and ``latency`` replace the scenario's ``[limits]`` (None or 0: off). A
    multi-project scenario's banner says, per project, its id, workspace, auth and how a
    notifier source reaches it (``project_lines``).
    """
    out = out if out is not None else sys.stdout
    stop = threading.Event()
    previous: Any = None
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        with Simulator(scenario, host=host, port=port, rate_limit=rate_limit, latency=latency) as sim:
            if scenario.projects:
                print(f"DGC simulator: scenario {scenario.name!r} at {sim.url}  {len(sim.projects)} projects "
                      f"(the path's project_id picks one)", file=out)
                print(f"  {limits_line(sim.rate_limit, sim.latency)}", file=out)
                for served in sim._served:
                    for line in project_lines(sim, served.project):
                        print(f"  {line}", file=out)
                    _print_jobs(sim, served.project.id, served.entries, out, limit=5, indent="    ")
            else:
                print(f"DGC simulator: scenario {scenario.name!r} at {sim.url}  project_id={sim.project_id}",
                      file=out)
                print(f"  {_auth_line(sim.auth, sim.iam)}", file=out)
                print(f"  {limits_line(sim.rate_limit, sim.latency)}", file=out)
                if sim.scale_model is not None:
                    print(f"  {sim.scale_model.describe()}", file=out)
                _print_jobs(sim, sim.project_id, sim._entries, out, limit=20, indent="  ")
            out.flush()
            try:
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def _print_jobs(sim: Simulator, project_id: str, entries: tuple[_Entry, ...], out: TextIO, *, limit: int,
                indent: str) -> None:
    for entry in entries[:limit]:
        where = f" (workspace {entry.workspace!r})" if entry.workspace else ""
        print(f"{indent}{sim.url}/v1/{project_id}/jobs/{entry.name}/status{where}", file=out)
    if len(entries) > limit:
        print(f"{indent}... and {len(entries) - limit} more jobs", file=out)


def project_lines(sim: Simulator, project: Project) -> list[str]:
    """A served project for the banner: id, workspace, auth, a ``[sources.NAME]`` table reaching it and its env vars.

    Credentials are printed only where they are the simulator's own made-up ones (the
    built-in defaults, or a scenario shipped with the package); a scenario file's own are
    named by where they are, never printed.
    """
    name = project.label if re.fullmatch(r"[A-Za-z0-9_-]+", project.label) else json.dumps(project.label)
    env = "SIM_" + re.sub(r"[^A-Za-z0-9]+", "_", project.label).strip("_").upper()
    workspace = (f"workspace {project.workspace!r} (send the header `workspace: {project.workspace}`)"
                 if project.workspace else "no workspace of its own (the header selects among its jobs' workspaces)")
    jobs = f"{len(project.jobs)} job{'' if len(project.jobs) == 1 else 's'}"
    lines = [f"project {project.label!r}: project_id={project.id}, {workspace}, {jobs}"]
    keys = [f'endpoint = "{sim.url}"', f'project_id = "{project.id}"']
    if project.workspace:
        keys.append(f'workspace = "{project.workspace}"')
    auth, shipped = project.auth, _shipped(sim.scenario)
    exports: list[tuple[str, str, bool]] = []  # (variable, value, printable)
    if auth.mode == "aksk":
        keys += ['auth = "aksk"', f'ak_env = "{env}_AK"', f'sk_env = "{env}_SK"']
        exports += [(f"{env}_AK", auth.ak, True), (f"{env}_SK", auth.sk, shipped or auth.sk == DEFAULT_AUTH.sk)]
        what = "auth: aksk (SDK-HMAC-SHA256 with this project's AK/SK; another project's valid ones get 403)"
    elif auth.mode == "token":
        keys += ['auth = "token"', f'token_env = "{env}_TOKEN"']
        exports.append((f"{env}_TOKEN", auth.token, shipped or auth.token == DEFAULT_AUTH.token))
        what = f"auth: token (X-Auth-Token: this project's static token, or an IAM token scoped to it: " \
               f"POST {IAM_TOKEN_PATH})"
    elif sim.iam.require_token:
        iam = sim.iam
        keys += ['auth = "iam"', f'iam_endpoint = "{sim.url}"', f'iam_domain = "{iam.domain}"',
                 f'iam_user_env = "{env}_IAM_USER"', f'iam_password_env = "{env}_IAM_PASSWORD"']
        exports += [(f"{env}_IAM_USER", iam.user, True),
                    (f"{env}_IAM_PASSWORD", iam.password, shipped or iam.password == DEFAULT_IAM.password)]
        what = f"auth: token (X-Auth-Token from POST {IAM_TOKEN_PATH}, scoped to this project's id)"
    else:
        keys.append('auth = "none"')
        what = "auth: none (every request is served)"
    lines += [f"  {what}", f"  as a notifier source: [sources.{name}] {', '.join(keys)}"]
    if exports:
        shown = [f"{var}={shlex.quote(value)}" for var, value, printable in exports if printable]
        hidden = [var for var, _, printable in exports if not printable]
        if shown:
            lines.append(f"  export {' '.join(shown)}")
        if hidden:
            where = sim.scenario.source or "the scenario"
            lines.append(f"  {', '.join(hidden)}: this project's credentials in {where} (not printed)")
    return lines


def _shipped(scenario: Scenario) -> bool:
    """Whether the scenario is a file shipped with the package (its credentials are the simulator's made-up ones)."""
    if not scenario.source:
        return False
    try:
        return Path(scenario.source).resolve().is_relative_to(SCENARIO_DIR)
    except OSError:
        return False


def limits_line(rate_limit: float, latency: float) -> str:
    """The limits, for the banner of ``notifier simulate``."""
    rate = (f"rate limit {rate_limit:g} requests/s per user (AK, token, or all anonymous clients together; "
            f"beyond it 429 APIG.0308)" if rate_limit > 0 else "rate limit: none")
    return f"{rate}; latency {latency * 1000:g} ms per status/list answer" if latency > 0 else f"{rate}; latency: none"


def _auth_line(auth: AuthSettings, iam: IamSettings) -> str:
    """What a client must send, for the banner of ``notifier simulate`` (the values are the scenario's test ones)."""
    if auth.mode == "aksk":
        return f"auth: aksk (sign with AK {auth.ak!r} and the SK of the scenario's [credentials])"
    if auth.mode == "token":
        return f"auth: token (X-Auth-Token: the scenario's [credentials] token, or one from POST {IAM_TOKEN_PATH})"
    if iam.require_token:
        return f"auth: token (X-Auth-Token from POST {IAM_TOKEN_PATH})"
    return "auth: none (every request is served)"
