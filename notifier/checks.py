"""``notifier check``: load everything the service would, and render every template.

An undefined variable or a syntax error in a template is caught here, before
production, by rendering each channel's templates against sample alerts in strict mode.
Rules that name a template no file provides, and ``jobs`` globs that match none of the
configured job names, are caught here too. With ``--online`` the list API is asked once
whether every configured job exists.

Exit codes follow the CLI's contract (ARCHITECTURE.md, "Contracts"): 2 for bad config,
rules or templates (a configured job that does not exist is bad config); 1 when the API
could not be asked; warnings alone never fail the check.
"""

from __future__ import annotations

import asyncio
import difflib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

import jinja2

from notifier import statefile
from notifier.channels import CHANNEL_TYPES
from notifier.clock import utcnow
from notifier.config import Config, SourceConfig
from notifier.core.durations import plural
from notifier.core.models import Rule
from notifier.errors import ConfigError, NotifierError, SourceError, StateError, TemplateError
from notifier.fetching import budget_of, budget_warning, lists, sweep_sentence
from notifier.httputil import redact_url
from notifier.lock import creation_problem
from notifier.render import Renderer, sample_groups
from notifier.runtime import (
    budget_conflicts,
    build_clients,
    close_channels,
    create_channels,
    load_runtime,
    shared_rates,
)
from notifier.source.client import DgcClient, select_jobs

EXIT_OK, EXIT_SOURCE, EXIT_CONFIG = 0, 1, 2  # the CLI's exit code contract (ARCHITECTURE.md, "Contracts")

_NAMES_SHOWN = 5  # configured job names quoted in a warning before "... (N in all)"


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What ``notifier check`` found; every problem and warning names the file, table/rule and key."""

    problems: tuple[str, ...] = ()  # bad config, rules or templates: exit 2
    source_errors: tuple[str, ...] = ()  # --online: the list API could not be asked: exit 1
    warnings: tuple[str, ...] = ()  # worth a look, never a failure
    summary: str = ""

    @property
    def exit_code(self) -> int:
        if self.problems:
            return EXIT_CONFIG
        return EXIT_SOURCE if self.source_errors else EXIT_OK


def run(config_path: Path, *, online: bool = False) -> int:
    """``notifier check`` as the command line runs it: print the report, return the exit code.

    Warnings and errors go to stderr (``warning: ...``, ``error: ...``); the ``ok:``
    summary goes to stdout, only when nothing is wrong.
    """
    report = check(config_path, online=online)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for error in (*report.problems, *report.source_errors):
        print(f"error: {error}", file=sys.stderr)
    if report.exit_code == EXIT_OK:
        print(report.summary)
    return report.exit_code


def check(config_path: Path, *, online: bool = False) -> CheckReport:
    """Load and validate everything; with ``online``, also ask the list API which configured jobs exist."""
    try:
        runtime = load_runtime(config_path, strict_templates=True)
    except ConfigError as exc:
        return CheckReport(problems=(str(exc),))
    config = runtime.config
    problems: list[str] = []
    source_errors: list[str] = []
    if not config.channels:
        problems.append(f"{config.path}: no [channels.NAME] tables: alerts would go nowhere")
    if not runtime.rules:
        problems.append(f"{config.rules_dir}: no rules (*.toml files with [[rule]] tables): nothing would ever alert")

    try:
        close_channels(create_channels(config))
    except NotifierError as exc:
        problems.append(str(exc))
    problems.extend(state_problems(config))

    asked: _Asked = _Asked()
    try:
        asked = asyncio.run(_ask_sources(config, online=online))
    except ConfigError as exc:
        problems.append(str(exc.located(str(config.path), "source")))
    except NotifierError as exc:
        problems.append(f"{config.path}: source: {exc}")
    for name, refused in asked.errors.items():
        table = config.sources[name].table
        hint = (f" (the API refused the credentials: check [{table}] auth and its secrets)"
                if refused.kind == "auth" else "")
        source_errors.append(_at(str(config.path), table, None, f"--online: could not ask the list API at "
                                 f"{redact_url(config.sources[name].endpoint)}: {refused}{hint}"))

    if runtime.renderer.user_dir is not None:
        for path in sorted(runtime.renderer.user_dir.glob("*.j2")):
            if not path.is_file():
                problems.append(f"{path}: is not a file (a directory?): the built-in template would be used instead")
                continue
            try:
                runtime.renderer.env.get_template(path.name)
            except jinja2.TemplateSyntaxError as exc:
                problems.append(f"{path}:{exc.lineno}: template syntax error: {exc.message}")
            except UnicodeDecodeError as exc:
                problems.append(f"{path}: not UTF-8 text (byte {exc.start}): re-save it as UTF-8")
    problems.extend(_missing_templates(runtime.rules, runtime.renderer))

    rendered = 0
    now = utcnow()
    for name, channel in sorted(config.channels.items()):
        templates = {"default"} | {r.template for r in runtime.rules if name in r.channels}
        for template in sorted(templates):
            for group in sample_groups(name):
                group = group.__class__(group.channel, group.group, group.alerts, template)
                try:
                    CHANNEL_TYPES[channel.type].compose_for(runtime.renderer, channel.settings, group, now)
                    rendered += 1
                except TemplateError as exc:
                    problems.append(f"template {template!r} for channel {name!r} ({channel.type}): {exc}")
                    break

    warnings = [*_unmatched_job_globs(runtime.rules, config), *_unmatched_source_globs(runtime.rules, config),
                *_slack_warnings(runtime.rules, config), *_unused_templates(runtime.rules, config), *asked.warnings]
    summary = (f"ok: {config.path}: {plural(len(runtime.rules), 'rule')}, {plural(len(config.channels), 'channel')}, "
               f"{plural(rendered, 'sample message')} rendered")
    several = len(config.sources) > 1
    for name, source in config.sources.items():
        jobs, listed = source.jobs, asked.listed.get(name)
        of = f" ({name})" if several else ""
        watched: Sequence[str] | None = None if jobs.discover else jobs.names
        if listed is not None:
            problems.extend(_unknown_jobs(config, source, listed))
            watched = select_jobs(jobs.names, listed, jobs.include, jobs.exclude) if jobs.discover else jobs.names
            summary += f"; online{of}: {plural(len(listed), 'REAL_TIME job')} listed, {len(watched)} would be watched"
        if watched is not None:
            listing = lists(len(watched), discover=jobs.discover,
                            list_total=len(listed) if listed is not None else None)
            budget = budget_of(config, asked.rates.get(name, source.max_requests_per_second))
            warning = budget_warning(len(watched), budget, listing=listing)
            if warning is not None:
                warnings.append(f"{config.path}: schedule: full_sweep{of}: {warning}")
            summary += f"; polling{of}: {sweep_sentence(len(watched), budget, listing=listing)}"
        elif listed is None and name not in asked.errors:
            summary += f"; polling{of}: the jobs discovered at start (--online counts them and the sweep time)"
    return CheckReport(problems=tuple(problems), source_errors=tuple(source_errors), warnings=tuple(warnings),
                       summary=summary)


def state_problems(config: Config) -> list[str]:
    """Whether the state file could be used, without creating or changing anything.

    ``check`` is the unit's ExecStartPre: a state path the service cannot use must fail here,
    not later with the service half started.
    """
    path = config.state_path
    where = f"{config.path}: state: path: {path}"
    if path.exists():
        if path.is_dir():
            return [f"{where}: is a directory"]
        try:
            report = statefile.inspect(path)
        except StateError as exc:
            return [f"{where}: {exc}"]
        return [f"{where}: {report.problem}"] if report.problem else []
    problem = creation_problem(path)
    return [f"{where}: {problem}"] if problem else []


def _slack_warnings(rules: Sequence[Rule], config: Config) -> list[str]:
    """Slack keys that would silently do nothing."""
    bot = {name for name, ch in config.channels.items() if ch.type == "slack" and ch.settings.mode == "token"}
    out = []
    threaded = {name for name in bot if config.channels[name].settings.thread}
    for rule in rules:
        for key, value in (("slack_channel", rule.slack_channel), ("mention", rule.mention)):
            if value and not bot & set(rule.channels):
                out.append(f"{rule.file}: rule {rule.name!r}: {key}: none of its channels is a Slack channel with a "
                           "bot token, so it has no effect")
        if rule.mention and bot & set(rule.channels) and not threaded & set(rule.channels):
            out.append(f"{rule.file}: rule {rule.name!r}: mention: mentions go in an incident's first message, "
                       "which needs thread = true on its Slack channel")
    for name, ch in sorted(config.channels.items()):
        if ch.type != "slack" or ch.settings.mode != "token":
            continue
        unthreaded = (("mention", ch.settings.mention), ("broadcast_resolved", ch.settings.broadcast_resolved),
                      ("app_token_env", ch.settings.buttons))
        for key in (k for k, value in unthreaded if value and not ch.settings.thread):
            out.append(f"{config.path}: channels.{name}: {key}: it works on an incident's thread, "
                       "which needs thread = true: with thread = false it has no effect")
        if ch.settings.allow and not ch.settings.buttons:
            out.append(f"{config.path}: channels.{name}: allow: there are no buttons without an app token "
                       "(app_token_env here or in [slack])")
    owners = any(ch.type == "slack" and ch.settings.owners for ch in config.channels.values())
    if owners and not any(s.jobs.discover for s in config.sources.values()):
        out.append(f"{config.path}: slack.owners: job owners come from the list API, which notifier only asks with "
                   "[jobs] discover = true: nobody will be pinged as an owner")
    return out


def _unused_templates(rules: Sequence[Rule], config: Config) -> list[str]:
    """A rule's template on channels that send Alertmanager's own payload, which no template changes."""
    fixed = {name for name, ch in config.channels.items()
             if ch.type == "alertmanager" or (ch.type == "webhook" and ch.settings.format == "alertmanager")}
    out = []
    for rule in rules:
        ignoring = sorted(fixed & set(rule.channels))
        if rule.template != "default" and ignoring:
            out.append(f"{rule.file}: rule {rule.name!r}: template: {', '.join(ignoring)} send Alertmanager's payload "
                       f"(labels and annotations), which {rule.template!r} does not change")
    return out


@dataclass(frozen=True, slots=True)
class _Asked:
    """What building the clients (and, ``--online``, asking each list API) told."""

    listed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # source -> its REAL_TIME jobs
    errors: Mapping[str, SourceError] = field(default_factory=dict)  # source -> why its list API failed
    rates: Mapping[str, float] = field(default_factory=dict)  # source -> its share of its user's budget
    warnings: tuple[str, ...] = ()  # sources of one user with different budgets


async def _ask_sources(config: Config, *, online: bool) -> _Asked:
    """Build the clients (reads every source's secrets); with ``online``, list each source's jobs (every page)."""
    clients = build_clients(config)

    async def ask(client: DgcClient) -> tuple[str, ...] | SourceError:
        try:
            return await client.list_jobs()
        except SourceError as exc:
            return exc

    try:  # side by side: a source that does not answer delays only its own line
        answers = dict(zip(clients, await asyncio.gather(*map(ask, clients.values())), strict=True)) if online else {}
    finally:
        for client in clients.values():
            await client.aclose()
    return _Asked(listed={n: a for n, a in answers.items() if not isinstance(a, SourceError)},
                  errors={n: a for n, a in answers.items() if isinstance(a, SourceError)},
                  rates=shared_rates(config, clients),
                  warnings=tuple(budget_conflicts(config, clients)))


def _missing_templates(rules: Sequence[Rule], renderer: Renderer) -> list[str]:
    """Rules whose ``template`` no file provides for any channel type: they would silently get the default."""
    loader = renderer.env.loader
    assert loader is not None  # Renderer always installs one
    places = f"{renderer.user_dir} or the package's templates" if renderer.user_dir else "the package's templates"
    problems: list[str] = []
    for rule in rules:
        if rule.template == "default":
            continue
        files = [f"{rule.template}.{kind}.j2" for kind in sorted(CHANNEL_TYPES) if kind != "alertmanager"]  # no text
        if not any(_template_exists(renderer.env, loader, name) for name in files):
            problems.append(_at(rule.file, f"rule {rule.name!r}", "template",
                                f"no template {rule.template!r}: none of {', '.join(files)} in {places}"))
    return problems


def _template_exists(env: jinja2.Environment, loader: jinja2.BaseLoader, name: str) -> bool:
    try:
        loader.get_source(env, name)  # finds the file without compiling it (syntax is checked above)
    except jinja2.TemplateNotFound:
        return False
    return True


def _unmatched_job_globs(rules: Sequence[Rule], config: Config) -> list[str]:
    """``jobs`` globs matching none of ``[jobs] names`` of the rule's sources (only when names are configured)."""
    out: list[str] = []
    for rule in rules:
        sources = [s for name, s in config.sources.items() if any(fnmatchcase(name, g) for g in rule.sources)]
        names = tuple(dict.fromkeys(n for s in sources for n in s.jobs.names))
        if not names:
            continue
        shown = ", ".join(names[:_NAMES_SHOWN]) + (f", ... ({len(names)} in all)" if len(names) > _NAMES_SHOWN
                                                    else "")
        why = ("discovery may still match it" if any(s.jobs.discover for s in sources)
               else "and [jobs] discover is off, so nothing else can match it")
        out.extend(_at(rule.file, f"rule {rule.name!r}", "jobs",
                       f"{glob!r} matches none of the configured [jobs] names ({shown}); {why}")
                   for glob in rule.jobs if not any(fnmatchcase(name, glob) for name in names))
    return out


def _unmatched_source_globs(rules: Sequence[Rule], config: Config) -> list[str]:
    """``sources`` globs matching no configured source: the rule can never fire (a typo, or a source removed)."""
    names = tuple(config.sources)
    return [_at(rule.file, f"rule {rule.name!r}", "sources",
                f"{glob!r} matches none of the configured sources ({', '.join(names)})")
            for rule in rules for glob in rule.sources
            if not any(fnmatchcase(name, glob) for name in names)]


def _unknown_jobs(config: Config, source: SourceConfig, listed: Sequence[str]) -> list[str]:
    """Configured job names the list API does not know, each with the closest listed name."""
    known = set(listed)
    scope = f"project {source.project_id}" + (f", workspace {source.workspace}" if source.workspace else "")
    problems: list[str] = []
    for name in source.jobs.names:
        if name in known:
            continue
        close = difflib.get_close_matches(name, listed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problems.append(_at(str(config.path), source.jobs_table, "names",
                            f"job {name!r} does not exist: the list API has no REAL_TIME job of that name "
                            f"in {scope}{hint}"))
    return problems


def _at(file: str | None, where: str | None, key: str | None, message: str) -> str:
    """"file: where: key: message": a ConfigError's words, for a report that collects many."""
    return str(ConfigError(message, file=file, where=where, key=key))
