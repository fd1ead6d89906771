"""Fault campaign: the real ``notifier run`` against a misbehaving source and misbehaving webhooks.

Method
------
One ``notifier run -c CONFIG --log-format json`` polls the bundled simulator every
``--interval`` (default 1s; source ``timeout = "1s"``, ``retries = 1``) and delivers to two
webhook receivers: ``hook`` (the one that misbehaves in channel phases) and ``ops`` (also
``[meta] channels``: where notifier-source-down goes). Two nodes are in EXCEPTION from the
start, so job alerts are firing while the faults happen. Then phases, one after another:

* **Source phases** (through the simulator's fault injection: 5xx bursts, 429 ``APIG.0308``
  with and without ``Retry-After``, timeouts, an endpoint that accepts and never answers, dropped
  connections, truncated JSON, an HTML error page, an empty body, and connection refused (the
  simulator stopped and started again on its port)). Each fault holds until 5 cycles in a row
  failed, then clears. Targets per phase: the process stays up; every cycle finishes within its
  bound (``timeout * (retries + 1)`` plus the longest retry wait plus 1.5 s); no job alert is
  resolved (the state file's firing set is unchanged) or re-sent (no job notification at
  either receiver); notifier-source-down fires exactly once and resolves exactly once.
* **Channel phases** (the ``hook`` receiver answers 500, 429 with ``Retry-After``, hangs past the
  webhook timeout, or drops the connection): three status changes are driven during the fault.
  Targets: every notification queued for ``hook`` is delivered once the fault ends (lost = 0),
  first deliveries in outbox-id order, ``ops`` unaffected (each of its notifications delivered
  within 2 s of being queued), no notifier-source-down, notifier-channel-failing balanced (as
  often resolved as fired), nothing failed or expired in the outbox.

At the end the process gets SIGTERM and must exit 0, and the state file must pass
``PRAGMA integrity_check``. Not covered (the simulator cannot do it): a body that arrives
slowly byte by byte; disk full or a read-only state directory (the campaign runs as root
here, for whom ``chmod`` changes nothing, and mounting a small file system needs privileges).
Figures are printed as JSON lines (one per phase, then totals); exit 0 only when every target holds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from notifier.simulator import JobScript, NodeScript, Scenario, Simulator
from reliability.common import Figure, free_port, integrity, outbox_ids, query
from reliability.receiver import ChannelFault, Received, Receiver

PROJECT_ID = "b384b9e9ab9b4ee8994c8633aabc9505"
JOBS = ("fault_job_a", "fault_job_b", "fault_job_c")
NODES = (("INGEST", "ExecuteDISStream"), ("TRANSFORM", "DLI SQL"), ("PUBLISH", "ExecuteCloudStream"))
RULE = "node-exception"
SOURCE_DOWN, CHANNEL_FAILING = "notifier-source-down", "notifier-channel-failing"
FIRING_FROM_THE_START = ((JOBS[0], "INGEST"), (JOBS[1], "PUBLISH"))
FAILED_CYCLES = 5  # a source fault holds for this many failed cycles in a row
TIMEOUT, RETRIES, SOURCE_BACKOFF_MAX = 1.0, 1, 1.0
OPS_LATENCY = 2.0  # seconds within which ops delivers while hook misbehaves

RULES = f"""
[[rule]]
name = "{RULE}"
scope = "node"
status = ["EXCEPTION"]
severity = "critical"
"""


@dataclass(frozen=True, slots=True)
class SourceFault:
    name: str
    fault: dict[str, Any] | None  # simulator fault keywords; None: connection refused (simulator stopped)
    retry_wait: float  # the longest wait between attempts this fault causes

    @property
    def bound(self) -> float:
        """Seconds a cycle may take under this fault."""
        return TIMEOUT * (RETRIES + 1) + self.retry_wait * RETRIES + 1.5


SOURCE_FAULTS = (
    SourceFault("5xx burst (503)", {"kind": "http_error", "status": 503}, SOURCE_BACKOFF_MAX),
    SourceFault("429 APIG.0308 with Retry-After", {"kind": "throttle", "retry_after": 1}, 1.0),
    SourceFault("429 APIG.0308 without Retry-After", {"kind": "throttle", "retry_after": 0}, 5.0),  # 2-5 s
    SourceFault("timeouts (answers after 2.5 s)", {"kind": "latency", "delay": 2.5}, SOURCE_BACKOFF_MAX),
    SourceFault("accepts and never answers", {"kind": "latency", "delay": 3600}, SOURCE_BACKOFF_MAX),
    SourceFault("connection dropped", {"kind": "disconnect"}, SOURCE_BACKOFF_MAX),
    SourceFault("truncated JSON", {"kind": "truncated_json"}, SOURCE_BACKOFF_MAX),
    SourceFault("HTML error page (502)", {"kind": "html", "status": 502}, SOURCE_BACKOFF_MAX),
    SourceFault("empty body", {"kind": "empty_body"}, SOURCE_BACKOFF_MAX),
    SourceFault("connection refused", None, SOURCE_BACKOFF_MAX),
)

CHANNEL_FAULTS: tuple[tuple[str, Callable[[], ChannelFault], float], ...] = (
    # (name, the fault, seconds to hold it before clearing; 0: it clears itself after `times`)
    ("webhook 500", lambda: ChannelFault(status=500, times=4), 0.0),
    ("webhook 429 with Retry-After", lambda: ChannelFault(status=429, retry_after=1, times=2), 0.0),
    ("webhook hanging past its timeout", lambda: ChannelFault(hang=1.5), 5.0),
    ("webhook drops the connection", lambda: ChannelFault(times=3), 0.0),
)


@dataclass(frozen=True, slots=True)
class Settings:
    seed: int | None = None
    interval: float = 1.0
    workdir: Path | None = None
    keep: bool = False
    out: TextIO = sys.stdout
    only: tuple[str, ...] = ()  # phase names to run (substring match); empty: all


@dataclass(slots=True)
class PhaseResult:
    name: str
    kind: str
    checks: dict[str, tuple[Any, bool]] = field(default_factory=dict)  # what -> (value, ok)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(ok for _, ok in self.checks.values())

    def check(self, what: str, value: Any, ok: bool) -> None:
        self.checks[what] = (value, ok)

    def line(self) -> dict[str, Any]:
        return {"phase": self.name, "kind": self.kind, "ok": self.ok, "seconds": round(self.seconds, 1),
                "checks": {k: v for k, (v, _) in self.checks.items()},
                "failed": [k for k, (_, ok) in self.checks.items() if not ok]}


@dataclass(slots=True)
class Result:
    seed: int
    phases: list[PhaseResult] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.phases) and all(f.ok for f in self.figures)

    def value(self, name: str) -> Any:
        return next(f.value for f in self.figures if f.name == name)


class LogTail:
    """The JSON log of the running process, read as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.events: list[dict[str, Any]] = []
        self._offset = 0
        self._partial = b""

    def poll(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return self.events
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            try:
                doc = json.loads(line)
            except ValueError:
                doc = {"event": "not_json", "msg": line.decode(errors="replace")}
            self.events.append(doc if isinstance(doc, dict) else {"event": "not_json", "msg": str(doc)})
        return self.events

    def cycles(self, since: int = 0) -> list[dict[str, Any]]:
        return [e for e in self.poll()[since:] if e.get("event") == "cycle_done"]


def alerts_of(requests: Sequence[Received], rule: str | None = None, *, job_rules: bool = False
              ) -> list[tuple[str, dict[str, Any]]]:
    """(key, alert) of every alert in delivered requests, first delivery per key only."""
    seen: set[str] = set()
    out = []
    for r in requests:
        if not r.delivered or r.key in seen or not isinstance(r.doc, dict):
            continue
        seen.add(r.key)
        for alert in r.doc.get("alerts", []):
            name = str(alert.get("rule"))
            if (rule is not None and name == rule) or (job_rules and not name.startswith("notifier-")):
                out.append((r.key, alert))
    return out


class Campaign:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.seed = settings.seed if settings.seed is not None else random.SystemRandom().randrange(1, 2**31)
        self.rng = random.Random(self.seed)
        self.workdir = settings.workdir or Path(tempfile.mkdtemp(prefix="notifier-faults-"))
        self.db = self.workdir / "state.db"
        self.config = self.workdir / "notifier.toml"
        self.log = LogTail(self.workdir / "notifier.log")
        self.time: dict[str, float] = {}
        self._proc: subprocess.Popen[bytes] | None = None

    def emit(self, doc: dict[str, Any]) -> None:
        print(json.dumps(doc), file=self.s.out, flush=True)

    # --- set-up ---------------------------------------------------------------------------

    def _scenario(self) -> Scenario:
        nodes = tuple(NodeScript(name=name, type=kind) for name, kind in NODES)
        epoch = int(datetime.now(timezone.utc).timestamp() * 1000)  # fixed: a restarted simulator keeps it
        return Scenario(project_id=PROJECT_ID, jobs=tuple(JobScript(name=job, nodes=nodes) for job in JOBS),
                        epoch_start_ms=epoch, name="fault-campaign")

    def _write_config(self, sim: Simulator, hook: Receiver, ops: Receiver) -> None:
        (self.workdir / "rules").mkdir(parents=True, exist_ok=True)
        (self.workdir / "rules" / "faults.toml").write_text(RULES)
        names = ", ".join(f'"{job}"' for job in JOBS)
        self.config.write_text(
            f'[source]\nendpoint = "{sim.url}"\nproject_id = "{PROJECT_ID}"\nauth = "none"\n'
            f'timeout = "{TIMEOUT:g}s"\nretries = {RETRIES}\nbackoff = "0.2s"\n'
            f'backoff_max = "{SOURCE_BACKOFF_MAX:g}s"\n\n'
            f'[schedule]\ninterval = "{self.s.interval:g}s"\n\n[jobs]\nnames = [{names}]\n\n'
            f'[state]\npath = "state.db"\n\n[paths]\nrules = "rules"\nwatch = false\n\n'
            f'[noise]\nflap_threshold = 0\n\n[delivery]\nbackoff = "0.2s"\nbackoff_max = "1s"\n\n'
            f'[meta]\nchannels = ["ops"]\nsource_failures = 3\nchannel_stuck = "3s"\n\n'
            f'[channels.hook]\ntype = "webhook"\nurl = "{hook.url}"\ntimeout = "1s"\n\n'
            f'[channels.ops]\ntype = "webhook"\nurl = "{ops.url}"\ntimeout = "1s"\n')

    # --- helpers ----------------------------------------------------------------------------

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Poll an effect of the process until it shows (True), the deadline passes or the process dies (False)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline or not self._alive():
                return False
            time.sleep(0.02)
        return True

    def _firing(self) -> set[str]:
        rows = query(self.db, f"SELECT fingerprint FROM alert WHERE phase = 'firing' AND rule = '{RULE}'")
        return {str(r[0]) for r in rows or ()}

    def _committed(self, job: str, node: str, status: str) -> bool:
        rows = query(self.db, f"SELECT status FROM entity WHERE job = '{job}' AND node = '{node}'")
        return rows is not None and bool(rows) and rows[0][0] == status

    def _is_committed(self, job: str, node: str, status: str) -> Callable[[], bool]:
        return lambda: self._committed(job, node, status)

    def _outbox(self, channel: str, after: int) -> list[tuple[int, str, int]]:
        """(id, status, created_at ms) of the channel's rows with an id above ``after``."""
        rows = query(self.db, f"SELECT id, status, created_at FROM outbox WHERE channel = '{channel}' AND id > {after} "
                              "ORDER BY id")
        return [(int(i), str(s), int(c)) for i, s, c in rows or ()]

    def _max_id(self) -> int:
        rows = query(self.db, "SELECT COALESCE(MAX(id), 0) FROM outbox")
        return int(rows[0][0]) if rows else 0

    # --- the run --------------------------------------------------------------------------

    def run(self) -> Result:
        result = Result(seed=self.seed)
        self.emit({"campaign": "faults", "seed": self.seed, "interval": self.s.interval, "workdir": str(self.workdir),
                   "replay": f"python reliability/fault_campaign.py --seed {self.seed} --interval {self.s.interval:g}"})
        started = time.monotonic()
        port = free_port()
        sim = Simulator(self._scenario(), port=port, record_requests=100_000).start()
        hook, ops = Receiver().start(), Receiver().start()
        try:
            for job, node in FIRING_FROM_THE_START:
                sim.set_node_status(job, node, "EXCEPTION")
            self._write_config(sim, hook, ops)
            with open(self.log.path, "wb") as log:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "notifier", "run", "-c", str(self.config), "--log-format", "json"],
                    stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
            first = len(FIRING_FROM_THE_START)
            ready = self._wait(lambda: len(alerts_of(hook.requests, RULE)) >= first
                               and len(alerts_of(ops.requests, RULE)) >= first, 30)
            result.figures.append(Figure("start: job alerts firing and delivered", ready, "true", ready))
            self.time["start-up"] = time.monotonic() - started
            phases = [*((f.name, "source") for f in SOURCE_FAULTS), *((n, "channel") for n, _, _ in CHANNEL_FAULTS)]
            for name, kind in phases:
                if self.s.only and not any(word in name for word in self.s.only):
                    continue
                if not self._alive():
                    result.phases.append(PhaseResult(name, kind, {"process running": (False, False)}))
                    continue
                phase_started = time.monotonic()
                if kind == "source":
                    fault = next(f for f in SOURCE_FAULTS if f.name == name)
                    phase = self._source_phase(fault, sim, hook, ops)
                else:
                    make, hold = next((m, h) for n, m, h in CHANNEL_FAULTS if n == name)
                    phase = self._channel_phase(name, make(), hold, sim, hook, ops)
                phase.seconds = time.monotonic() - phase_started
                self.time[f"{kind}: {name}"] = phase.seconds
                result.phases.append(phase)
                self.emit(phase.line())
            stopping = time.monotonic()
            code = self._stop()
            self.time["SIGTERM to exit"] = time.monotonic() - stopping
            check = integrity(self.db)[0]
            result.figures += [
                Figure("final_exit_code", code, "0", code == 0),
                Figure("integrity", check, "ok", check == "ok"),
                Figure("outbox_failed_or_expired", len(outbox_ids(self.db, "failed") | outbox_ids(self.db, "expired")),
                       "0", not (outbox_ids(self.db, "failed") | outbox_ids(self.db, "expired"))),
            ]
        finally:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait(timeout=10)
            hook.stop()
            ops.stop()
            sim.stop()
        return result

    def _stop(self) -> int | None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGTERM)
        try:
            return self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            return None

    # --- a source phase ---------------------------------------------------------------------

    def _source_phase(self, fault: SourceFault, sim: Simulator, hook: Receiver, ops: Receiver) -> PhaseResult:
        phase = PhaseResult(fault.name, "source")
        firing = self._firing()
        events_before = len(self.log.poll())
        hook_before, ops_before = len(hook.requests), len(ops.requests)
        if fault.fault is None:
            sim.stop()
        else:
            sim.set_fault(**fault.fault)

        def failed_in_a_row() -> int:
            cycles = self.log.cycles(events_before)
            return int(cycles[-1].get("source_failing_cycles") or 0) if cycles else 0
        held = self._wait(lambda: failed_in_a_row() >= FAILED_CYCLES, FAILED_CYCLES * (fault.bound + 2) + 10)
        if fault.fault is None:
            sim.start()
        else:
            sim.clear_faults()
        cleared = len(self.log.poll())

        def recovered() -> bool:
            cycles = self.log.cycles(cleared)
            ok_cycles = [c for c in cycles if not c.get("source_failing_cycles")]
            resolved = [a for _, a in alerts_of(ops.requests[ops_before:], SOURCE_DOWN) if a["status"] == "resolved"]
            return len(ok_cycles) >= 2 and bool(resolved)
        back = self._wait(recovered, 30)
        cycles = self.log.cycles(events_before)
        slowest = max((int(c.get("duration_ms") or 0) for c in cycles), default=0) / 1000
        down = alerts_of(ops.requests[ops_before:], SOURCE_DOWN)
        fired = sum(1 for _, a in down if a["status"] == "firing")
        resolved = sum(1 for _, a in down if a["status"] == "resolved")
        job_news = alerts_of(hook.requests[hook_before:], job_rules=True) + alerts_of(
            ops.requests[ops_before:], job_rules=True)
        failed_events = [e for e in self.log.poll()[events_before:] if e.get("event") == "cycle_failed"]
        phase.check("process running", self._alive(), self._alive())
        phase.check(f"held for {FAILED_CYCLES} failed cycles", held, held)
        phase.check("recovered (2 good cycles, source-down resolved)", back, back)
        phase.check("cycles", len(cycles), len(cycles) >= FAILED_CYCLES)
        phase.check(f"slowest cycle s (bound {fault.bound:g})", slowest, slowest <= fault.bound)
        phase.check("cycles failed with an error", len(failed_events), not failed_events)
        phase.check("source-down fired", fired, fired == 1)
        phase.check("source-down resolved", resolved, resolved == 1)
        phase.check("job alerts resolved", len(firing - self._firing()), firing <= self._firing())
        phase.check("job notifications sent", len(job_news), not job_news)
        return phase

    # --- a channel phase --------------------------------------------------------------------

    def _channel_phase(self, name: str, fault: ChannelFault, hold: float, sim: Simulator, hook: Receiver,
                       ops: Receiver) -> PhaseResult:
        phase = PhaseResult(name, "channel")
        after = self._max_id()
        hook_before, ops_before = len(hook.requests), len(ops.requests)
        faulted_at = time.monotonic()
        hook.set_fault(fault)
        flips = 0
        for job, node in self.rng.sample([(j, n) for j in JOBS for n, _ in NODES], 3):
            rows = query(self.db, f"SELECT status FROM entity WHERE job = '{job}' AND node = '{node}'")
            status = "NORMAL" if rows and rows[0][0] == "EXCEPTION" else "EXCEPTION"
            sim.set_node_status(job, node, status)
            flips += self._wait(self._is_committed(job, node, status), 15)
        if hold:
            self._wait(lambda: time.monotonic() - faulted_at >= hold, hold + 1)
            hook.clear_fault()

        def drained() -> bool:
            rows = self._outbox("hook", after) + self._outbox("ops", after)
            return bool(rows) and all(status != "pending" for _, status, _ in rows)
        done = self._wait(drained, 60)
        hook.clear_fault()

        def balanced() -> bool:  # a channel-failing that fired resolves on a cycle after the drain
            said = [a["status"] for _, a in alerts_of(ops.requests[ops_before:], CHANNEL_FAILING)]
            return said.count("firing") == said.count("resolved")
        self._wait(balanced, 5 * self.s.interval + 5)
        hook_rows, ops_rows = self._outbox("hook", after), self._outbox("ops", after)
        hook_got = self._first_deliveries(hook.requests[hook_before:])
        ops_got = self._first_deliveries(ops.requests[ops_before:])
        lost = [i for i, _, _ in hook_rows if i not in hook_got] + [i for i, _, _ in ops_rows if i not in ops_got]
        order = list(hook_got)
        out_of_order = sum(1 for a, b in itertools.pairwise(order) if b <= a)
        ops_late = [i for i, _, created in ops_rows
                    if i in ops_got and ops_got[i].wall - created / 1000 > OPS_LATENCY]
        failing = alerts_of(ops.requests[ops_before:], CHANNEL_FAILING)
        down = alerts_of(ops.requests[ops_before:], SOURCE_DOWN)
        refused = sum(1 for r in hook.requests[hook_before:] if not r.delivered)
        phase.check("process running", self._alive(), self._alive())
        phase.check("status changes committed during the fault", flips, flips == 3)
        phase.check("hook answers refused (the fault happened)", refused, refused >= 1)
        phase.check("outbox drained", done, done)
        phase.check("notifications queued", len(hook_rows) + len(ops_rows), len(hook_rows) >= 1 and len(ops_rows) >= 1)
        phase.check("lost", len(lost), not lost)
        phase.check("hook first deliveries out of id order", out_of_order, out_of_order == 0)
        phase.check(f"ops delivered later than {OPS_LATENCY:g}s", len(ops_late), not ops_late)
        fired = sum(1 for _, a in failing if a["status"] == "firing")
        resolved = sum(1 for _, a in failing if a["status"] == "resolved")
        phase.check("channel-failing fired/resolved", f"{fired}/{resolved}", fired == resolved and fired <= 1)
        phase.check("source-down notifications", len(down), not down)
        return phase

    @staticmethod
    def _first_deliveries(requests: Sequence[Received]) -> dict[int, Received]:
        """Outbox id -> the first 2xx-answered request with its key, in delivery order."""
        out: dict[int, Received] = {}
        for r in requests:
            _, _, tail = r.key.rpartition("-")
            if r.delivered and tail.isdigit() and int(tail) not in out:
                out[int(tail)] = r
        return out


def run_campaign(settings: Settings) -> Result:
    campaign = Campaign(settings)
    started = time.monotonic()
    result = campaign.run()
    wall = time.monotonic() - started
    passed = sum(p.ok for p in result.phases)
    result.figures += [
        Figure("faults_tried", len(result.phases)),
        Figure("faults_survived", passed, f"= {len(result.phases)}", passed == len(result.phases)),
        Figure("source_faults_survived", sum(p.ok for p in result.phases if p.kind == "source")),
        Figure("channel_faults_survived", sum(p.ok for p in result.phases if p.kind == "channel")),
        Figure("wall_time_s", round(wall, 1)),
    ]
    for figure in result.figures:
        campaign.emit(figure.line())
    campaign.emit({"time_s": {k: round(v, 1) for k, v in sorted(campaign.time.items(), key=lambda kv: -kv[1])}})
    campaign.emit({"result": "ok" if result.ok else "FAILED", "seed": result.seed,
                   "failed": [p.name for p in result.phases if not p.ok] + [f.name for f in result.figures if not f.ok],
                   "workdir": str(campaign.workdir) if not result.ok or settings.keep else None})
    if result.ok and not settings.keep and settings.workdir is None:
        shutil.rmtree(campaign.workdir, ignore_errors=True)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=None, help="replay a campaign (default: random, printed)")
    parser.add_argument("--interval", type=float, default=1.0, help="notifier's poll interval in seconds (default 1)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep config, state file and log here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory even when all targets hold")
    parser.add_argument("--only", action="append", default=[], help="run only phases whose name contains this")
    args = parser.parse_args(argv)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    result = run_campaign(Settings(seed=args.seed, interval=args.interval, workdir=args.workdir, keep=args.keep,
                                   only=tuple(args.only)))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
