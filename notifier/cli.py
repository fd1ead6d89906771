"""The ``notifier`` command line (its names and exit codes are a contract: ARCHITECTURE.md, "Contracts").

Exit codes: 0 success; 1 a source failed this cycle or a test-channel send failed;
2 bad config, rules or templates.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import getpass
import logging
import os
import secrets
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from notifier import __version__
from notifier.config import default_config_path
from notifier.errors import ChannelError, ConfigError, NotifierError, StateError
from notifier.logs import setup_logging

log = logging.getLogger("notifier")

EXIT_OK, EXIT_SOURCE, EXIT_CONFIG = 0, 1, 2
TEST_RULE = "notifier-test"  # the rule name of `notifier test-channel` messages
WITHOUT_CONFIG = {  # the commands that take no -c, and what they use instead (-c there would be silently ignored)
    "demo": "it writes its own in a temporary directory",
    "simulate": "--scenario says what it serves",
    "init": "it writes one",
    "test-rules": "each test file names its rule files",
}


def _common(*, defaults: bool) -> argparse.ArgumentParser:
    """Options every subcommand takes, before or after its name.

    Only the top level sets defaults: a subcommand's own default would overwrite a value
    given before the subcommand (`notifier -c F once`).
    """
    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", type=Path, default=default(None),
                        help="config file (default: $NOTIFIER_CONFIG, else /etc/notifier/notifier.toml)")
    common.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default=default("info"))
    common.add_argument("--log-format", choices=("text", "json"), default=default("text"))
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common(defaults=False)
    parser = argparse.ArgumentParser(prog="notifier", parents=[_common(defaults=True)],
                                     description="Alerts for DataArts Studio (DGC) real-time jobs.")
    parser.add_argument("--version", action="version", version=f"notifier {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser(
        "run", parents=[common], help="run the service (scheduler, outbox delivery)",
        description="Poll every [schedule] interval, alert, and deliver the outbox until stopped. Signals: "
                    "SIGTERM/SIGINT finish the running cycle, give the outbox a last round (10 s at most) and "
                    "exit 0; SIGHUP reloads config, rules and templates (a bad new version is logged and the "
                    "running one kept). Under systemd it speaks sd_notify (READY, STATUS, WATCHDOG, RELOADING, "
                    "STOPPING). Exit 0 stopped; 1 the state file is unusable or another notifier holds it; "
                    "2 bad config, rules or templates.")
    sub.add_parser(
        "once", parents=[common], help="run one cycle, deliver the outbox, exit",
        description="Run one poll cycle, then one delivery round, and exit. A channel that is down is not a "
                    "failure (its message stays queued for the next run). Exit 0 the cycle ran; 1 a source "
                    "failed (unreachable, 401/403: stderr names it) or the state file is unusable; 2 bad config.")
    check = sub.add_parser(
        "check", parents=[common], help="validate config, rules and templates; exit 2 on errors",
        description="Load config, rules and templates as the service would, build every channel (secrets "
                    "read, nothing sent) and render every template against sample alerts. Exit 0 ok (warnings "
                    "on stderr); 1 --online could not ask the API; 2 errors, each naming file, table/rule and key.")
    check.add_argument("--online", action="store_true",
                       help="also ask the list API once whether every configured job exists")
    tc = sub.add_parser(
        "test-channel", parents=[common], help="send a test message through one channel",
        description="Send one sample alert through channel NAME now (not through the outbox) and print the "
                    "channel's own answer. Exit 0 delivered; 1 the send failed (the error names the fix); 2 bad "
                    "config or no such channel.")
    tc.add_argument("name", help="a [channels.NAME] of the config")
    sub.add_parser(
        "alerts", parents=[common], help="show firing alerts and undelivered notifications",
        description="What is pending or firing (with fingerprints, and what mutes each: silence, maintenance "
                    "window, inhibiting rule, ack, flapping), undelivered notifications, and whether a source "
                    "is failing (each one's sweep too). Reads the state file; safe while the service runs. "
                    "Exit 0; 1 state file unusable; 2 bad config.")
    sim = sub.add_parser(
        "simulate", parents=[common], help="run the bundled DGC simulator on loopback",
        description="Serve the DGC status and list APIs from a scenario (or --scale N generated jobs) on "
                    "HOST:PORT until Ctrl-C (no cloud account needed), limited as the API gateway limits them: "
                    "30 requests/s per user unless the scenario's [limits] or --rate-limit say otherwise. "
                    "Exit 0 stopped; 2 bad scenario file or options.")
    sim.add_argument("--scenario", default=None,
                     help="bundled scenario name (seed, demo, two_projects, demo_sources) or a TOML file "
                          "(default: demo)")
    sim.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sim.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    sim.add_argument("--scale", type=int, default=None, metavar="N",
                     help="serve N generated jobs (job_0..., NORMAL, moving counters) of which a share changes "
                          "state every period, instead of --scenario")
    sim.add_argument("--nodes", type=int, default=None, metavar="N", help="with --scale: nodes per job (default 10)")
    sim.add_argument("--change-share", type=float, default=None, metavar="SHARE",
                     help="with --scale: share of the jobs that start a change in each period, 0-1 (default 0.01)")
    sim.add_argument("--node-share", type=float, default=None, metavar="SHARE",
                     help="with --scale: share of the changes that are node-level (one node EXCEPTION, job "
                          "NORMAL); the rest are job-level (default 0.5)")
    sim.add_argument("--period", default=None, metavar="DURATION",
                     help="with --scale: length of a period, e.g. 60s, 5m (default 60s)")
    sim.add_argument("--hold", default=None, metavar="DURATION",
                     help="with --scale: how long a change lasts before the job or node is NORMAL again "
                          "(default 5m)")
    sim.add_argument("--seed", type=int, default=None,
                     help="with --scale: seed of the changes; the same seed serves the same changes (default 0)")
    sim.add_argument("--rate-limit", type=float, default=None, metavar="REQ_PER_S",
                     help="requests per second per user (AK, token, or all anonymous clients together) over a "
                          "sliding 1 s window; beyond it 429 APIG.0308; 0 = unlimited (default: the scenario's "
                          "[limits], 30)")
    sim.add_argument("--latency", default=None, metavar="DURATION",
                     help="delay added to every status and list answer, e.g. 50ms (default: the scenario's "
                          "[limits], 0)")
    init = sub.add_parser("init", parents=[common], help="write a starting config, rules and templates directory",
                          description="Write DIR/notifier.toml (absolute paths), DIR/rules/default.toml and an "
                                      "empty DIR/templates/, readable by the service's dynamic user; existing "
                                      "files are kept. Exit 0 written; 2 a file is in the way.")
    init.add_argument("directory", type=Path, metavar="DIR", help="e.g. /etc/notifier")
    init.add_argument("--state", type=Path, default=None, metavar="PATH",
                      help="state file path to write into the config (default /var/lib/notifier/state.db)")
    _silence_parsers(sub, common)
    _state_parsers(sub, common)
    ack = sub.add_parser(
        "ack", parents=[common], help="acknowledge a firing alert: no more repeats, resolve still sent",
        description="Acknowledge firing alerts by fingerprint (see `notifier alerts`) or by matchers. "
                    "An acknowledged alert sends no more repeats; its resolve is still sent, and the ack ends "
                    "with it. Exit 0 done; 2 no such firing alert or bad arguments.")
    ack.add_argument("fingerprint", nargs="?",
                     help="the alert's fingerprint (or a unique prefix), as `notifier alerts` shows it")
    _matcher_options(ack)
    ack.add_argument("--comment", default="", help="why (shown in `notifier alerts`)")
    ack.add_argument("--author", default=_default_author(), help="who (default: $USER)")
    tr = sub.add_parser("test-rules", parents=[common], help="run rule unit-test files (tests/rules/*.toml)",
                        description="Run rule unit tests: timelines of API answers and the notifications they must "
                                    "cause. Exit 0 all passed, 1 an expectation failed, 2 a bad test file.")
    tr.add_argument("files", nargs="+", type=Path, metavar="FILE", help="test files, e.g. tests/rules/*.toml")
    demo = sub.add_parser(
        "demo", parents=[common], help="simulator + service + console: real alerts in seconds",
        description="Start the simulator and the service with a console channel in a temporary directory; "
                    "real alerts print within seconds, then it exits by itself. Exit 0.")
    demo.add_argument("--duration", type=float, default=22.0, help="seconds to run (default 22)")
    return parser


def _default_author() -> str:
    """Who runs the command: the sudo caller first, then the login name (the password database without $USER)."""
    try:
        login = getpass.getuser()
    except (KeyError, OSError):  # a uid without a passwd entry (some containers)
        login = ""
    return os.environ.get("SUDO_USER") or login


def _matcher_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rule", metavar="GLOB", help="rule name glob, e.g. 'node-exception' or '*'")
    parser.add_argument("--source", metavar="GLOB",
                        help="source name glob ([sources.NAME]), e.g. 'prod-*' (default: every source)")
    parser.add_argument("--job", metavar="GLOB", help="job name glob, e.g. 'job_sms' or 'job_*'")
    parser.add_argument("--node", metavar="GLOB", help="node name glob (node alerts only)")


def _silence_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                     common: argparse.ArgumentParser) -> None:
    silence = sub.add_parser("silence", help="mute matching alerts for a while (works while the service runs)",
                             description="Silences mute matching alerts: they are still tracked but not sent. "
                                         "When a silence ends and the alert still fires, it is sent once.")
    ssub = silence.add_subparsers(dest="silence_command", required=True, metavar="ACTION")
    add = ssub.add_parser("add", parents=[common], help="add a silence; prints its ID",
                          description="Add a silence. At least one matcher is required; to silence everything "
                                      "say --rule '*'. Exit 2 on bad arguments.")
    _matcher_options(add)
    when = add.add_mutually_exclusive_group(required=True)
    when.add_argument("--for", dest="duration", metavar="DURATION", help="how long, e.g. 2h, 30m, 1h30m")
    when.add_argument("--until", metavar="TIME", help="until when, e.g. 2026-12-02T06:00Z (ISO 8601)")
    add.add_argument("--comment", required=True, help="why (shown in `silence list` and `alerts`)")
    add.add_argument("--author", default=_default_author(), help="who (default: $USER)")
    ssub.add_parser("list", parents=[common], help="show silences that are active or yet to start",
                    description="Silences that are active or yet to start (ID, matchers, start, end, how many "
                                "tracked alerts each mutes now, author and comment), and the maintenance windows "
                                "active now. Exit 0; 2 bad config.")
    expire = ssub.add_parser("expire", parents=[common], help="end a silence now",
                             description="End a silence now; alerts it muted that still fire are sent at the "
                                         "service's next cycle. Exit 0 expired; 2 no such current silence.")
    expire.add_argument("id", help="the silence's ID (or a unique prefix of it)")


def _state_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                   common: argparse.ArgumentParser) -> None:
    state = sub.add_parser("state", help="inspect or reset the state file (when it is corrupt, too new or lost)",
                           description="The service never resets its state file by itself. These commands say "
                                       "what is wrong with it and start over when you decide to.")
    ssub = state.add_subparsers(dest="state_command", required=True, metavar="ACTION")
    ssub.add_parser("check", parents=[common], help="read the state file without changing it",
                    description="Schema version, PRAGMA integrity_check, what it holds, who holds its lock. "
                                "Safe while the service runs. Exit 0 usable (or absent); 1 not usable; "
                                "2 bad config.")
    reset = ssub.add_parser("reset", parents=[common], help="move the state file aside and start an empty one",
                            description="Refused while a notifier process holds the state file (stop the service "
                                        "first). The old file is renamed <name>.broken-<time>, never deleted. "
                                        "Alerts still firing are announced once more by the next cycle. "
                                        "Exit 0 done; 1 the file is in use or its silences cannot be read; "
                                        "2 bad config.")
    reset.add_argument("--keep-silences", action="store_true",
                       help="copy the silences that have not ended into the new file")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    handler = {
        "run": cmd_run, "once": cmd_once, "check": cmd_check, "test-channel": cmd_test_channel,
        "alerts": cmd_alerts, "simulate": cmd_simulate, "demo": cmd_demo,
        "silence": cmd_silence, "ack": cmd_ack, "test-rules": cmd_test_rules, "init": cmd_init,
        "state": cmd_state,
    }[args.command]
    if args.config is not None and args.command in WITHOUT_CONFIG:
        print(f"error: notifier {args.command} reads no config file ({WITHOUT_CONFIG[args.command]}); "
              f"leave out -c {args.config}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except NotifierError as exc:  # state file unusable or locked, source unusable at start
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_SOURCE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `notifier alerts | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # and the flush at exit must not fail too
        return EXIT_OK


def _config_path(args: argparse.Namespace) -> Path:
    return args.config if args.config is not None else default_config_path()


def _stop_during_startup(signum: int, frame: object) -> None:
    """SIGTERM before the service installs its own handler: nothing was started yet, so exit 0 as promised."""
    raise SystemExit(EXIT_OK)


def cmd_run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _stop_during_startup)  # until Daemon.serve installs the real one
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload during start-up would kill us; we load anyway
    from notifier.app import App
    from notifier.daemon import Daemon
    from notifier.runtime import load_runtime

    path = _config_path(args)
    runtime = load_runtime(path)  # a bad config exits 2 before the state file is touched

    async def go() -> None:
        app = await App.open(path, runtime=runtime)
        try:
            await Daemon(app).serve()
        finally:
            await app.aclose()

    asyncio.run(go())
    return EXIT_OK


def cmd_once(args: argparse.Namespace) -> int:
    from notifier.app import App, CycleReport
    from notifier.runtime import load_runtime

    path = _config_path(args)
    runtime = load_runtime(path)

    async def go() -> CycleReport:
        app = await App.open(path, runtime=runtime)
        try:
            report = await app.cycle()
            delivered = app.deliver()
            log.info("outbox delivered=%d retried=%d failed=%d expired=%d",
                     delivered.delivered, delivered.retried, delivered.failed, delivered.expired)
            return report
        finally:
            await app.aclose()

    try:
        report = asyncio.run(go())
    except StateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_SOURCE
    from notifier.core.models import DEFAULT_SOURCE

    for name, one in (report.sources or {report.source: report}).items():
        label = f" ({name})" if name != DEFAULT_SOURCE else ""
        if one.discovery_error is not None:
            print(f"source error{label}: job discovery failed: {one.discovery_error}", file=sys.stderr)
        for error in one.errors:
            print(f"source error{label}: {error.message}", file=sys.stderr)
    return EXIT_SOURCE if report.source_failed else EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from notifier.checks import run

    return run(_config_path(args), online=args.online)


def cmd_test_channel(args: argparse.Namespace) -> int:
    from notifier.channels import CHANNEL_TYPES
    from notifier.channels.am_payload import source_labels
    from notifier.channels.base import Identifies
    from notifier.clock import utcnow
    from notifier.core.models import Notification, fingerprint, job_key
    from notifier.render import sample_groups
    from notifier.runtime import close_channels, create_channels, load_runtime

    runtime = load_runtime(_config_path(args))
    config = runtime.config
    if args.name not in config.channels:
        raise ConfigError(f"no channel {args.name!r} (channels: {', '.join(sorted(config.channels)) or 'none'})",
                          file=str(config.path), where="channels")
    kind = CHANNEL_TYPES[config.channels[args.name].type]
    channels = create_channels(replace(config, channels={args.name: config.channels[args.name]}))
    now = utcnow()
    group = sample_groups(args.name)[0]
    since = now - timedelta(minutes=4)
    # the look of a real critical alert, but its own rule name and fingerprint: a receiver or Alertmanager must not
    # take it for (or merge it with) a real alert, and can route or silence alertname="notifier-test"
    # about the first source, as its alerts would be: its name, its project_id and workspace labels
    source = config.source.name
    group = replace(group, group=job_key(source, group.job), alerts=tuple(replace(
        a, rule=TEST_RULE, fingerprint=fingerprint(TEST_RULE, job_key(source, a.job), a.node or ""),
        summary=f"TEST from notifier: {a.summary}", since=since, starts_at=since, source=source,
        labels={**source_labels(config.source), **a.labels}) for a in group.alerts))
    test_id = secrets.token_hex(8)  # receivers deduplicate on the notification key: every test is new
    channel = channels[args.name]
    try:
        if isinstance(channel, Identifies):  # say whose token it is first: the likeliest mistake
            print(f"credentials: {channel.check()}")
        payloads = kind.compose_for(runtime.renderer, config.channels[args.name].settings, group, now)
        for i, payload in enumerate(payloads, start=1):
            channel.send(Notification(id=-i, channel=args.name, group=group.group, payload=payload,
                                      created_at=now, key=f"test-{test_id}-{i}"))
    except ChannelError as exc:
        kind_word = "transient" if exc.retryable else "permanent"
        print(f"FAILED: channel {args.name}: {exc} ({kind_word})", file=sys.stderr)
        return EXIT_SOURCE
    finally:
        close_channels(channels)
    print(f"ok: test message delivered through channel {args.name} ({kind.name})")
    return EXIT_OK


def cmd_alerts(args: argparse.Namespace) -> int:
    from notifier.clock import utcnow
    from notifier.config import load_config
    from notifier.core.durations import plural
    from notifier.core.inhibit import inhibitions
    from notifier.core.mutes import muted_by
    from notifier.fetching import describe_sweep
    from notifier.render import ago, timestamp
    from notifier.rulefile import load_rules
    from notifier.state import FETCH_SWEEP_KEY, SOURCE_FAILURES_KEY, StateStore, meta_key

    config = load_config(_config_path(args))
    if not config.state_path.exists():
        print(f"no state file yet at {config.state_path}: nothing has run")
        return EXIT_OK
    try:
        rules = load_rules(config.rules_dir, tuple(config.channels))
    except ConfigError as exc:  # still show what fires; only the inhibition column is lost
        print(f"warning: rules not loaded, inhibition not shown: {exc}", file=sys.stderr)
        rules = ()
    now = utcnow()
    with StateStore.open(config.state_path) as store:
        alerts = sorted(store.load_alerts().values(), key=lambda a: (a.job, a.node, a.rule))
        rows = store.outbox.rows()
        several = len(config.sources) > 1
        failing = {name: int(store.get_meta(meta_key(SOURCE_FAILURES_KEY, name)) or 0) for name in config.sources}
        polling = {name: describe_sweep(store.get_meta(meta_key(FETCH_SWEEP_KEY, name)), failing=bool(failing[name]))
                   for name in config.sources}
        silences = store.silences.current(now)
        mutes = (*silences, *config.maintenance)
        comments = {s.label: f"{s.label} ({s.author or '-'}: {s.comment})" for s in silences}
        acks = store.silences.acks()
        flaps = store.load_flaps()
    for name, source_failures in failing.items():
        if source_failures:
            print(f"SOURCE FAILING{f' ({name})' if several else ''}: the last {plural(source_failures, 'cycle')} "
                  f"could not read the API; {'its ' if several else ''}alerts below are as of the last good poll")
    for name, line in polling.items():
        if line:
            print(line.replace("POLLING:", f"POLLING {name}:", 1) if several else line)
    inhibited = inhibitions(rules, alerts)
    firing = sum(1 for a in alerts if a.phase == "firing")
    print(f"ALERTS ({firing} firing, {len(alerts) - firing} pending)")
    for a in alerts:
        where = f"{a.job}/{a.node}" if a.node else a.job
        inhibitor = inhibited.get((a.job, a.rule))
        mute = muted_by(a.rule, a.job, a.node, mutes, now)
        reasons = [r for r in (comments.get(mute, mute) if mute else None,
                               f"inhibited by {inhibitor}" if inhibitor else None) if r]
        muted = f"  [muted: {'; '.join(reasons)}]" if reasons else ""
        if a.fingerprint in acks:
            ack = acks[a.fingerprint]
            said = f" \"{ack.comment}\"" if ack.comment else ""
            muted += f"  [acknowledged by {ack.author or '-'}{said}: no repeats]"
        flap = flaps.get(a.fingerprint)
        if flap is not None and flap.flapping_since is not None:
            muted += f"  [flapping since {timestamp(flap.flapping_since, '%H:%M UTC')}: quiet until stable]"
        print(f"  {a.phase:<8} {a.rule:<24} {where:<40} {a.state or '':<10} active since "
              f"{timestamp(a.active_since)} ({ago(a.active_since, now)})  {a.fingerprint}{muted}")
    owed = [f for f in flaps.values() if f.flapping_since is not None and f.fingerprint not in {a.fingerprint
                                                                                                for a in alerts}]
    for f in owed:  # flapping and clear right now: a final message is still to come
        print(f"  flapping {f.rule:<24} {f.job + ('/' + f.node if f.node else ''):<40} clear now; a final "
              f"message follows once stable  {f.fingerprint}")
    print(f"UNDELIVERED NOTIFICATIONS ({len(rows)})")
    for r in rows:
        nxt = (f" next try {timestamp(r.next_attempt_at, '%H:%M:%S UTC')}"
               if r.next_attempt_at and r.status == "pending" else "")
        err = f" last error: {r.last_error}" if r.last_error else ""
        print(f"  #{r.id:<6} {r.status:<8} {r.channel:<16} {r.group:<24} attempts={r.attempts} "
              f"created {ago(r.created_at, now)}{nxt}{err}")
    return EXIT_OK


def cmd_silence(args: argparse.Namespace) -> int:
    from notifier import silencecli

    return silencecli.run(args, _config_path(args))


def cmd_state(args: argparse.Namespace) -> int:
    from notifier import statecli

    return statecli.run(args, _config_path(args))


def cmd_ack(args: argparse.Namespace) -> int:
    from notifier import silencecli

    return silencecli.ack(args, _config_path(args))


def cmd_test_rules(args: argparse.Namespace) -> int:
    from notifier.ruletest import run_files

    return run_files(args.files)


def cmd_init(args: argparse.Namespace) -> int:
    from notifier.init import init

    return init(args.directory, state=args.state)


def cmd_simulate(args: argparse.Namespace) -> int:
    from notifier.simulator import serve
    from notifier.simulator.options import SimulateOptions, simulation

    run = simulation(SimulateOptions(
        scenario=args.scenario, scale=args.scale, nodes=args.nodes, change_share=args.change_share,
        node_share=args.node_share, period=args.period, hold=args.hold, seed=args.seed,
        rate_limit=args.rate_limit, latency=args.latency))
    try:
        serve(run.scenario, args.host, args.port, rate_limit=run.rate_limit, latency=run.latency)
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):  # not the bind: a real fault
            raise
        hint = (" (another simulator, or notifier demo, still running? stop it or pick another --port)"
                if exc.errno == errno.EADDRINUSE else "")
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}{hint}", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from notifier.demo import run_demo

    return run_demo(duration=args.duration)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
