"""Rule files (``rules/*.toml``) -> validated ``Rule`` objects.

Loading is strict because a typo must never silently disable an alert: unknown keys are
errors with a close-match suggestion, a status that looks like a misspelt known status
is an error, and every error names the file, the rule and the key.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from notifier.core import summary
from notifier.core.counters import COUNTER_NAMES
from notifier.core.labels import label_problem
from notifier.core.meta import META_RULES
from notifier.core.models import KNOWN_STATUSES, SEVERITIES, Rule, TransitionMatch, normalize_status
from notifier.errors import ConfigError
from notifier.strict_toml import TableReader, load_toml, refuse_world_writable

RESERVED_PREFIX = "notifier-"
"""Rule names of this form belong to the built-in meta-alerts (``core.meta``)."""

RULE_KEYS = (
    "name", "scope", "status", "transition", "for", "sources", "jobs", "nodes", "node_types", "severity",
    "channels", "template", "repeat", "resolved", "stalled", "inhibits", "summary", "slack_channel", "mention",
    "labels",
)
"""Every key a ``[[rule]]`` table may hold."""

_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9_-]+")
SLACK_CHANNEL = re.compile(r"#[a-z0-9_\-\u0080-\uffff]{1,80}|[CGD][A-Z0-9]{6,}")
"""A Slack channel as ``chat.postMessage`` takes it: "#name" or an ID."""
SLACK_MENTION = re.compile(r"<(?:@[UW][A-Z0-9]+|!subteam\^S[A-Z0-9]+)(?:\|[^<>]*)?>|<!(?:here|channel|everyone)>")
"""Slack's mention syntax: a user, a user group, or @here (docs.slack.dev/messaging/formatting-message-text)."""
MENTION_HINT = 'Slack mention syntax like "<@U0123ABCD>", "<!subteam^S0123ABCD>" or "<!here>"'


def check_mentions(r: TableReader, key: str, values: tuple[str, ...]) -> tuple[str, ...]:
    """``values`` if each is a Slack mention, else ConfigError naming ``key``."""
    for who in values:
        if not SLACK_MENTION.fullmatch(who):
            raise r.error(key, f"expected {MENTION_HINT}, got {who!r}")
    return values


def check_labels(table: TableReader | None) -> tuple[tuple[str, str], ...]:
    """A ``labels = { team = "data" }`` table as sorted pairs, else ConfigError naming the label.

    Shared by rules and the Alertmanager-shaped channels: the same names are refused everywhere
    (``core.labels.label_problem``).
    """
    if table is None:
        return ()
    out: dict[str, str] = {}
    for name in list(table.data):
        problem = label_problem(name, table.raw(name))
        if problem:
            raise table.error(name, problem)
        out[name] = table.data[name]
    table.finish()
    return tuple(sorted(out.items()))


_SPELLCHECK_STATUSES = (*KNOWN_STATUSES, "PAUSE", "ABNORMAL", "DISABLE", "OVERLOAD", "INIT")
"""Statuses the API or SDK are known to send; a near miss of one of these is taken for a typo."""


def load_rules(rules_dir: Path, channels: Collection[str]) -> tuple[Rule, ...]:
    """Load every ``*.toml`` of ``rules_dir`` (sorted; hidden and ``#`` editor files skipped) and cross-check them.

    ``channels`` are the channel names the config defines. A missing directory is an
    error; an empty one yields no rules.
    """
    rules_dir = Path(rules_dir)
    if not rules_dir.is_dir():
        reason = "not a directory" if rules_dir.exists() else "rules directory not found"
        raise ConfigError(reason, file=str(rules_dir))
    rules: list[Rule] = []
    for path in sorted(p for p in rules_dir.glob("*.toml") if p.is_file() and not is_editor_file(p.name)):
        refuse_world_writable(path)  # rules route alerts as much as the config does
        rules.extend(parse_rules(load_toml(path), file=str(path), channels=channels))
    return check_rules(rules)


def is_editor_file(name: str) -> bool:
    """Hidden files and editor lock files (``.x.toml``, ``#x.toml#``): never rules, never watched."""
    return name.startswith((".", "#"))


def parse_rules(data: Mapping[str, Any], *, file: str, channels: Collection[str]) -> tuple[Rule, ...]:
    """Validate one parsed rule file: ``[[rule]]`` tables and nothing else.

    Names must be unique within the file; cross-file checks (names, ``inhibits``) are
    ``check_rules``'s job, since a rule may inhibit one defined in another file.
    """
    top = TableReader(data, file=file, where="")
    items = top.raw("rule", [])
    top.finish()
    if not isinstance(items, list):
        raise top.error("rule", "expected [[rule]] tables (an array of tables), got a single [rule] table"
                        if isinstance(items, Mapping) else f"expected [[rule]] tables, got {items!r}")
    rules = tuple(_parse_rule(item, index, file, channels) for index, item in enumerate(items))
    _check_unique(rules)
    return rules


def check_rules(rules: Sequence[Rule]) -> tuple[Rule, ...]:
    """Cross-rule checks over all files: unique names, ``inhibits`` naming existing rules, no inhibition cycle."""
    rules = tuple(rules)
    _check_unique(rules)
    for rule in rules:
        if rule.name.startswith(RESERVED_PREFIX):
            raise ConfigError(f"rule names starting with {RESERVED_PREFIX!r} are notifier's own meta-alerts "
                              f"({', '.join(META_RULES)}); choose another name", file=rule.file,
                              where=_where(rule.name), key="name")
    by_name = {rule.name: rule for rule in rules}
    for rule in rules:
        for target in rule.inhibits:
            if target == rule.name:
                raise ConfigError("a rule cannot inhibit itself", file=rule.file, where=_where(rule.name),
                                  key="inhibits")
            if target not in by_name:
                close = difflib.get_close_matches(target, sorted(by_name), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"unknown rule {target!r}{hint}", file=rule.file, where=_where(rule.name),
                                  key="inhibits")
    cycle = _inhibition_cycle(rules)
    if cycle:
        first = by_name[cycle[0]]
        raise ConfigError(f"inhibition cycle {' -> '.join(cycle)}: while these alerts fire for a job, each mutes "
                          "another and none of them is ever sent", file=first.file, where=_where(first.name),
                          key="inhibits")
    return rules


def _inhibition_cycle(rules: Sequence[Rule]) -> list[str]:
    """The first cycle of ``inhibits`` in load order, as ``["a", "b", "a"]``; empty if there is none.

    Possible because a job rule may inhibit another job rule; only node rules and events
    can never inhibit. Iterative depth-first search: no recursion limit on long chains.
    """
    edges = {rule.name: rule.inhibits for rule in rules}
    done: set[str] = set()
    for start in edges:
        if start in done:
            continue
        path, stack = [start], [iter(edges[start])]
        while stack:
            target = next(stack[-1], None)
            if target is None:
                done.add(path.pop())
                stack.pop()
            elif target in path:
                return [*path[path.index(target):], target]
            elif target not in done:
                path.append(target)
                stack.append(iter(edges.get(target, ())))
    return []


def _check_unique(rules: Sequence[Rule]) -> None:
    first: dict[str, Rule] = {}
    for rule in rules:
        if rule.name in first:
            raise ConfigError(f"duplicate rule name {rule.name!r} (first defined in {first[rule.name].file})",
                              file=rule.file, where=_where(rule.name), key="name")
        first[rule.name] = rule


def _where(name: str) -> str:
    return f"rule {name!r}"


def _parse_rule(data: Any, index: int, file: str, channels: Collection[str]) -> Rule:
    name_hint = data.get("name") if isinstance(data, Mapping) else None
    where = _where(name_hint) if isinstance(name_hint, str) and name_hint.strip() else f"rule[{index}]"
    r = TableReader(data, file=file, where=where)
    r.finish(RULE_KEYS)  # unknown keys first: a typo explains most other errors

    name = r.str("name")
    if not name.strip() or name != name.strip():
        raise r.error("name", f"must be a non-empty name without surrounding spaces, got {name!r}")
    scope = r.choice("scope", ("job", "node"))

    status = _statuses(r, "status") if r.has("status") else ()
    transition = _transition(r) if r.has("transition") else None
    if status and transition is not None:
        raise r.error("transition", "give either status (a condition) or transition (an event), not both")
    if not status and transition is None:
        raise r.error("status", "required: give status = [...] (a condition) or transition = { from, to } (an event)")
    is_event = transition is not None

    if is_event:
        for key, why in (("for", "an event fires once per transition, it has no pending time"),
                         ("repeat", "an event is sent once, never repeated"),
                         ("resolved", "an event is never resolved"),
                         ("stalled", "stalled needs a status list, not a transition"),
                         ("inhibits", "only status rules hold a firing alert that can inhibit others")):
            if r.has(key):
                raise r.error(key, f"not allowed with transition: {why}")

    if scope == "job":
        for key in ("nodes", "node_types", "stalled"):
            if r.has(key):
                raise r.error(key, 'only allowed with scope = "node"')
    elif r.has("inhibits"):
        raise r.error("inhibits", 'only scope = "job" rules can inhibit (a job alert mutes alerts of its job)')

    stalled = r.choice("stalled", COUNTER_NAMES, None)
    template = r.str("template", "default")
    if not _TEMPLATE_NAME.fullmatch(template):
        raise r.error("template", f"must be letters, digits, '_' or '-', got {template!r}")
    text = r.str("summary", None)
    if text is not None:
        problem = "must not be empty" if not text.strip() else summary.check_format(text)
        if problem:
            raise r.error("summary", problem)

    slack_channel = r.str("slack_channel", None)
    if slack_channel is not None and not SLACK_CHANNEL.fullmatch(slack_channel):
        raise r.error("slack_channel", 'expected a Slack channel name like "#payments" or an ID like "C0123456789", '
                                       f"got {slack_channel!r}")
    mention = check_mentions(r, "mention", r.str_list("mention", ()))
    labels = check_labels(r.table("labels", None))

    return Rule(
        name=name,
        scope=scope,
        channels=_channels(r, channels),
        status=status,
        transition=transition,
        for_=r.seconds("for", 0.0),
        sources=_globs(r, "sources", ("*",)),
        jobs=_job_globs(r),
        nodes=_globs(r, "nodes", ("*",)),
        node_types=r.str_list("node_types", ()),
        severity=r.choice("severity", SEVERITIES, "warning"),
        template=template,
        repeat=0.0 if is_event else r.seconds("repeat", 4 * 3600.0),  # events: said truthfully, never repeated
        resolved=not is_event and r.bool("resolved", True),
        stalled=stalled,
        inhibits=_dedupe(r.str_list("inhibits", ())),
        summary=text,
        slack_channel=slack_channel,
        mention=mention,
        labels=labels,
        file=file,
    )


def _statuses(r: TableReader, key: str) -> tuple[str, ...]:
    values = _dedupe(normalize_status(v) for v in r.str_list(key))
    if not values or not all(values):
        raise r.error(key, "list at least one status, e.g. [\"EXCEPTION\"]")
    for value in values:
        if value not in _SPELLCHECK_STATUSES:
            close = difflib.get_close_matches(value, _SPELLCHECK_STATUSES, n=1, cutoff=0.85)
            if close:
                raise r.error(key, f"unknown status {value!r} (did you mean {close[0]!r}?)")
    return values


def _transition(r: TableReader) -> TransitionMatch:
    t = r.table("transition")
    match = TransitionMatch(
        from_status=_statuses(t, "from") if t.has("from") else (),
        to_status=_statuses(t, "to") if t.has("to") else (),
    )
    t.finish(("from", "to"))
    if not match.from_status and not match.to_status:
        raise r.error("transition", "give from = [...], to = [...] or both")
    return match


def _globs(r: TableReader, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = r.str_list(key, default)
    if not value:
        raise r.error(key, f"an empty list matches nothing; omit {key} to match all")
    for glob in value:
        if problem := glob_problem(glob):
            raise r.error(key, f"{glob!r}: {problem}")
    return value


def _job_globs(r: TableReader) -> tuple[str, ...]:
    """``jobs`` globs match the bare job name; a ``/`` (no job name has one) means a source was meant."""
    globs = _globs(r, "jobs", ("*",))
    for glob in globs:
        if "/" in glob:
            source, _, job = glob.partition("/")
            raise r.error("jobs", f"{glob!r}: a job name has no '/'; to select a source say "
                                  f"sources = [{source!r}] and jobs = [{job!r}]")
    return globs


def glob_problem(glob: str) -> str | None:
    """Why a name glob cannot be what was meant: empty, or a ``[`` that never closes (fnmatch takes it literally)."""
    if not glob.strip():
        return "an empty glob matches no job or node; omit the key to match all"
    i = 0
    while i < len(glob):
        if glob[i] == "[":
            close = glob.find("]", i + 2 if glob[i + 1:i + 2] in ("!", "]") else i + 1)
            if close == -1:
                return "'[' starts a character class that never closes; to match a literal '[' write '[[]'"
            i = close
        i += 1
    return None


def _channels(r: TableReader, known: Collection[str]) -> tuple[str, ...]:
    if not r.has("channels"):
        return tuple(sorted(known))
    names = _dedupe(r.str_list("channels"))
    if not names:
        raise r.error("channels", "an empty list sends nowhere; omit channels to use all of them")
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"channels: {', '.join(sorted(known)) or 'none defined'}"
            raise r.error("channels", f"unknown channel {name!r} ({hint})")
    return names


def _dedupe(values: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))
