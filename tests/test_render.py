"""Rendering: filters, strictness, the sandbox, template lookup and the plain fallback."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from notifier.channels import console, webhook
from notifier.errors import TemplateError
from notifier.render import (
    Renderer,
    ago,
    duration,
    isoformat,
    message_context,
    plain_text,
    sample_groups,
    silence_command,
    timestamp,
)

T0 = datetime(2019, 3, 1, 3, 4, 25, tzinfo=timezone.utc)
SHIPPED_KINDS = ("console", "webhook")  # the default templates this change ships


def ctx(now: datetime = T0 + timedelta(minutes=4)) -> dict[str, object]:
    return message_context(sample_groups()[0], now)


def user_dir(tmp_path: Path, **files: str) -> Path:
    for name, text in files.items():
        (tmp_path / name.replace("__", ".")).write_text(text)
    return tmp_path


# --- filters --------------------------------------------------------------------------

@pytest.mark.parametrize(("seconds", "expected"), [
    (0, "just now"), (4, "just now"), (30, "30 s ago"), (240, "4 min ago"), (3599, "59 min ago"),
    (7200, "2 h ago"), (7500, "2 h 5 min ago"), (3 * 86400 + 5, "3 d ago"), (-60, "just now"),
], ids=["zero", "under-5s", "seconds", "minutes", "just-under-an-hour", "hours", "hours-minutes", "days",
        "future-clock-skew"])
def test_ago_words(seconds: int, expected: str) -> None:
    """ago() says how long ago in the coarsest unit an on-call reader needs."""
    assert ago(T0, T0 + timedelta(seconds=seconds)) == expected


def test_ago_unknown_when_missing() -> None:
    """ago() of a missing time says "unknown" instead of failing the message."""
    assert ago(None, T0) == "unknown"


@pytest.mark.parametrize(("when", "fmt", "expected"), [
    (T0, None, "2019-03-01 03:04 UTC"),
    (T0, "%H:%M UTC", "03:04 UTC"),
    (datetime(2019, 3, 1, 11, 4, 25, tzinfo=timezone(timedelta(hours=8))), None, "2019-03-01 03:04 UTC"),
    (None, None, "unknown"),
], ids=["default-format", "custom-format", "converted-to-utc", "missing"])
def test_timestamp(when: datetime | None, fmt: str | None, expected: str) -> None:
    """timestamp() writes UTC whatever the datetime's zone, in the default or a given format."""
    assert (timestamp(when) if fmt is None else timestamp(when, fmt)) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (timedelta(minutes=14), "14m"), (timedelta(hours=1, minutes=5), "1h 5m"), (42, "42s"), (0.0, "0s"),
], ids=["timedelta", "hours-minutes", "int-seconds", "zero"])
def test_duration(value: timedelta | float, expected: str) -> None:
    """duration() accepts a timedelta or seconds and writes it compactly."""
    assert duration(value) == expected


def test_isoformat_is_the_webhook_time_format() -> None:
    """isoformat() writes RFC 3339 UTC with a Z, and None stays None (JSON null)."""
    assert isoformat(datetime(2019, 3, 1, 11, 4, 25, tzinfo=timezone(timedelta(hours=8)))) == "2019-03-01T03:04:25Z"
    assert isoformat(None) is None


def test_filters_are_available_in_templates(tmp_path: Path) -> None:
    """A user template can use ago, timestamp, duration, isoformat, emoji and color."""
    text = ("{{ alerts[0].since | ago(now) }}|{{ alerts[0].since | timestamp('%H:%M') }}|{{ 840 | duration }}"
            "|{{ alerts[0].since | isoformat }}|{{ severity | emoji }}|{{ severity | color }}")
    renderer = Renderer(user_dir(tmp_path, f__console__j2=text), strict=True)
    assert renderer.render("f", "console", ctx()) == "4 min ago|03:04|14m|2019-03-01T03:04:25Z|:red_circle:|#d32f2f"


# --- strictness and the sandbox -------------------------------------------------------

def test_undefined_variable_names_template(tmp_path: Path) -> None:
    """An undefined variable in a user template is a TemplateError naming the file and the variable."""
    renderer = Renderer(user_dir(tmp_path, broken__console__j2="{{ job }}\n{{ no_such_thing }}\n"))
    with pytest.raises(TemplateError, match=r"broken\.console\.j2:\d+: .*no_such_thing"):
        renderer.render("broken", "console", ctx())


def test_undefined_variable_names_template_and_line(tmp_path: Path) -> None:
    """An undefined variable in a user template is a TemplateError naming the file and the line."""
    renderer = Renderer(user_dir(tmp_path, broken__console__j2="{{ job }}\n{{ no_such_thing }}\n"))
    with pytest.raises(TemplateError, match=r"broken\.console\.j2:2: .*no_such_thing"):
        renderer.render("broken", "console", ctx())


def test_undefined_attribute_is_an_error_not_an_empty_string(tmp_path: Path) -> None:
    """StrictUndefined: a misspelt attribute fails instead of rendering as nothing."""
    renderer = Renderer(user_dir(tmp_path, typo__console__j2="{{ alerts[0].sevrity }}"))
    with pytest.raises(TemplateError, match="sevrity"):
        renderer.render("typo", "console", ctx())


@pytest.mark.parametrize("expr", [
    "''.__class__.__mro__", "alerts[0].__class__.__init__.__globals__", "now.__reduce_ex__(2)",
], ids=["str-mro", "class-globals", "reduce"])
def test_sandbox_blocks_unsafe_attributes(tmp_path: Path, expr: str) -> None:
    """The sandbox refuses dunder access, so a template cannot reach Python internals."""
    renderer = Renderer(user_dir(tmp_path, evil__console__j2="{{ " + expr + " }}"))
    with pytest.raises(TemplateError, match=r"evil\.console\.j2"):
        renderer.render("evil", "console", ctx())


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    """A syntax error is a TemplateError with the file and line, raised at load time."""
    renderer = Renderer(user_dir(tmp_path, bad__console__j2="ok\n{% if %}\n"))
    with pytest.raises(TemplateError, match=r"bad\.console\.j2:2"):
        renderer.template_for("bad", "console")


# --- lookup ---------------------------------------------------------------------------

def test_user_dir_overrides_the_package_default(tmp_path: Path) -> None:
    """A default.console.j2 in the user directory replaces the shipped one."""
    renderer = Renderer(user_dir(tmp_path, default__console__j2="OVERRIDE {{ job }}"), strict=True)
    assert renderer.render("default", "console", ctx()) == "OVERRIDE job_sms"


def test_templates_see_the_alert_source_and_labels(tmp_path: Path) -> None:
    """A template can say which source an alert is from and read its labels."""
    text = "{% for a in alerts %}{{ a.source }}/{{ a.labels.get('team', '-') }} {% endfor %}"
    renderer = Renderer(user_dir(tmp_path, default__console__j2=text), strict=True)
    group = sample_groups()[1]
    group = replace(group, alerts=(replace(group.alerts[0], source="prod", labels={"team": "data"}),
                                   group.alerts[1]))
    assert renderer.render("default", "console", message_context(group, T0)) == "prod/data default/- "


def test_user_named_template_is_used(tmp_path: Path) -> None:
    """A rule's template name picks <name>.<kind>.j2 from the user directory."""
    renderer = Renderer(user_dir(tmp_path, oncall__console__j2="ONCALL {{ status }}"), strict=True)
    assert renderer.render("oncall", "console", ctx()) == "ONCALL firing"


@pytest.mark.parametrize("with_user_dir", [True, False], ids=["empty-user-dir", "no-user-dir"])
def test_missing_named_template_falls_back_to_default(tmp_path: Path, with_user_dir: bool) -> None:
    """A rule naming a template that has no <name>.console.j2 gets default.console.j2."""
    renderer = Renderer(tmp_path if with_user_dir else None, strict=True)
    assert renderer.template_for("no-such", "console").name == "default.console.j2"
    assert renderer.render("no-such", "console", ctx()) == renderer.render("default", "console", ctx())


def test_no_template_at_all_is_an_error() -> None:
    """A channel kind with no template anywhere is a TemplateError listing the names tried."""
    with pytest.raises(TemplateError, match=r"no template x\.nokind\.j2 or default\.nokind\.j2"):
        Renderer(None).template_for("x", "nokind")


def test_missing_block_is_an_error(tmp_path: Path) -> None:
    """Asking for a part the template does not define is a TemplateError naming it."""
    renderer = Renderer(user_dir(tmp_path, parts__console__j2="{% block subject %}S{% endblock %}"))
    assert renderer.render("parts", "console", ctx(), part="subject") == "S"
    with pytest.raises(TemplateError, match="has no block 'html'"):
        renderer.render("parts", "console", ctx(), part="html")


# --- render_or: never drop an alert because of a template -----------------------------

def test_render_or_falls_back_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Outside strict mode a failing template yields the fallback text and an error log naming the template."""
    renderer = Renderer(user_dir(tmp_path, broken__console__j2="{{ nope }}"))
    group, now = sample_groups()[0], T0 + timedelta(minutes=4)
    with caplog.at_level(logging.ERROR, logger="notifier.render"):
        text = renderer.render_or(lambda: plain_text(group, now), "broken", "console", message_context(group, now))
    assert text == plain_text(group, now)
    assert any("broken.console.j2" in r.getMessage() for r in caplog.records)


def test_render_or_raises_in_strict_mode(tmp_path: Path) -> None:
    """In strict mode (notifier check) the error surfaces instead of being papered over."""
    renderer = Renderer(user_dir(tmp_path, broken__console__j2="{{ nope }}"), strict=True)
    with pytest.raises(TemplateError, match="nope"):
        renderer.render_or(lambda: "fallback", "broken", "console", ctx())


def test_plain_text_has_one_complete_line_per_alert() -> None:
    """The fallback names severity, job/node, summary, rule, since and log for every alert."""
    group = sample_groups()[1]
    lines = plain_text(group, T0 + timedelta(minutes=4)).splitlines()
    assert len(lines) == 2
    assert lines[0] == ("[CRITICAL] job_sms/DLI_SMS_GES: DLI_SMS_GES entered EXCEPTION (was NORMAL) "
                        "(rule node-exception, since 2019-03-01 03:04 UTC, 4 min ago) "
                        "log: obs://dlf-log-example/job_sms/DLI_SMS_GES.job")
    assert lines[1].startswith("[CRITICAL] job_sms/DIS_INPUT:")


def test_message_context_status_and_worst_severity() -> None:
    """The group is firing if any alert fires, and its severity is the worst firing one."""
    firing, _, resolved, mixed = sample_groups()
    assert (message_context(firing, T0)["status"], message_context(firing, T0)["severity"]) == ("firing", "critical")
    assert message_context(resolved, T0)["status"] == "resolved"
    assert message_context(mixed, T0)["severity"] == "warning"


# --- every shipped default renders every sample ---------------------------------------

@pytest.mark.parametrize("kind", SHIPPED_KINDS)
@pytest.mark.parametrize("index", range(len(sample_groups())), ids=["node", "grouped", "resolved", "job-and-event"])
def test_every_sample_renders_with_every_shipped_default(kind: str, index: int) -> None:
    """Each default template renders each sample group in strict mode, to non-empty text."""
    group = sample_groups()[index]
    text = Renderer(None, strict=True).render("default", kind, message_context(group, T0 + timedelta(minutes=4)))
    assert text.strip()
    assert group.group in text


@pytest.mark.parametrize("module", [console, webhook], ids=["console", "webhook"])
def test_every_sample_composes_in_strict_mode(module: object) -> None:
    """compose() of each shipped channel succeeds on every sample, as `notifier check` requires."""
    renderer = Renderer(None, strict=True)
    for group in sample_groups():
        payloads = module.TYPE.compose(renderer, group, T0)  # type: ignore[attr-defined]
        assert len(payloads) == 1 and payloads[0]


REPO_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


@pytest.mark.parametrize("index", range(len(sample_groups())), ids=["node", "grouped", "resolved", "job-and-event"])
def test_repo_example_template_renders_every_sample(index: int) -> None:
    """templates/example.console.j2, the documented override, renders every sample in strict mode."""
    group = sample_groups()[index]
    text = Renderer(REPO_TEMPLATES, strict=True).render("example", "console", message_context(group, T0))
    assert text.splitlines()[0].endswith(("firing", "recovered")) and group.group in text


@pytest.mark.parametrize(("alert", "command"), [
    (sample_groups()[0].alerts[0],
     'notifier silence add --rule node-exception --job job_sms --node DLI_SMS_GES --for 2h --comment "..."'),
    (sample_groups()[3].alerts[0], 'notifier silence add --rule job-stuck-starting --job job_orders --for 2h '
                                   '--comment "..."'),
    (replace(sample_groups()[0].alerts[0], job="job sms; rm -rf /", node="it's"),
     "notifier silence add --rule node-exception --job 'job sms; rm -rf /' --node 'it'\"'\"'s' --for 2h "
     '--comment "..."'),
], ids=["node", "job", "shell-quoted"])
def test_silence_command_is_exact_and_safe_to_paste(alert, command: str) -> None:  # type: ignore[no-untyped-def]
    """The hint names rule, job (and node) and quotes anything a shell would misread."""
    assert silence_command(alert) == command
