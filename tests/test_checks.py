"""`notifier check` beyond loading: default statuses, missing templates, unmatched job globs,
inhibition cycles, and `--online` against the bundled simulator's list API."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from notifier.checks import EXIT_CONFIG, EXIT_OK, EXIT_SOURCE, check, run
from notifier.core.cycle import plan_cycle
from notifier.core.models import FetchResult, JobSnapshot, NodeStatus, Rule
from notifier.errors import ConfigError
from notifier.rulefile import check_rules, load_rules
from notifier.simulator import Simulator, load_scenario
from tests.pipeline_support import NODE_EXCEPTION, source_toml
from tests.support.smtp_server import free_port

ROOT = Path(__file__).resolve().parent.parent
CONSOLE = '[channels.stdout]\ntype = "console"\n'
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def notifier(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "notifier", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env=dict(os.environ))


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(load_scenario("seed")) as s:
        yield s


def config_at(write_config, url: str, *, rules: str = NODE_EXCEPTION,  # type: ignore[no-untyped-def]
              jobs: str = 'names = ["job_sms"]') -> Path:
    return write_config(source=source_toml(url), rules=rules, channels=CONSOLE, jobs=jobs)


def list_requests(sim: Simulator) -> int:
    return sum(1 for r in sim.requests if r.path.endswith("/jobs"))


def test_templates_beside_the_config_are_found_without_paths_templates(write_config, sim: Simulator) -> None:  # type: ignore[no-untyped-def]
    """`notifier init` makes templates/ beside the config: a template put there is used, like rules/ is."""
    config = config_at(write_config, sim.url, rules=NODE_EXCEPTION + 'template = "fancy"\n')
    assert "templates" not in config.read_text()
    assert check(config).problems  # no templates/ yet: 'fancy' is missing
    (config.parent / "templates").mkdir()
    (config.parent / "templates" / "fancy.console.j2").write_text("{% for a in alerts %}{{ a.key }}{% endfor %}\n")
    report = check(config)
    assert report.problems == () and report.summary.startswith(f"ok: {config}")


# --- rules/default.toml: the statuses the SDK documents beyond the seed ------------------

def default_rules() -> dict[str, Rule]:
    return {r.name: r for r in load_rules(ROOT / "rules", ("console",))}


def test_default_rules_cover_the_sdk_statuses() -> None:
    """ABNORMAL joins the EXCEPTION rules, OVERLOAD warns after 10m, PAUSE is an info event, DISABLE/INIT: nothing."""
    rules = default_rules()
    for name in ("node-exception", "job-exception"):
        assert rules[name].status == ("EXCEPTION", "ABNORMAL") and rules[name].severity == "critical"
    for name, scope in (("job-overloaded", "job"), ("node-overloaded", "node")):
        assert (rules[name].scope, rules[name].status, rules[name].for_, rules[name].severity) == (
            scope, ("OVERLOAD",), 600.0, "warning")
    assert rules["job-overloaded"].inhibits == ("node-overloaded",)
    paused = rules["job-paused"]
    assert paused.is_event and paused.transition is not None and paused.transition.to_status == ("PAUSE",)
    assert paused.severity == "info"
    for status in ("DISABLE", "INIT"):
        assert not any(status in r.status or (r.transition and status in r.transition.to_status)
                       for r in rules.values())


def test_default_rules_alert_on_abnormal_overload_and_pause_as_documented() -> None:
    """Through a real cycle: ABNORMAL fires at once, OVERLOAD only after 10 minutes, PAUSE sends one info event."""
    rules = tuple(default_rules().values())

    def snap(job: str, node: str) -> FetchResult:
        return FetchResult(snapshots=(JobSnapshot(name="j", status=job, nodes=(NodeStatus(name="N", status=node),)),))

    first = plan_cycle(rules, {}, {}, snap("NORMAL", "ABNORMAL"), None, T0)
    assert [(a.rule, a.severity, a.node) for a in first.notify] == [("node-exception", "critical", "N")]

    over = plan_cycle(rules, first.entities, first.alerts, snap("NORMAL", "OVERLOAD"), None, T0 + timedelta(minutes=1))
    assert [(a.rule, a.status) for a in over.notify] == [("node-exception", "resolved")]
    later = plan_cycle(rules, over.entities, over.alerts, snap("NORMAL", "OVERLOAD"), None, T0 + timedelta(minutes=12))
    assert [(a.rule, a.severity) for a in later.notify] == [("node-overloaded", "warning")]

    paused = plan_cycle(rules, later.entities, later.alerts, snap("PAUSE", "NORMAL"), None, T0 + timedelta(minutes=13))
    assert sorted((a.rule, a.status, a.severity) for a in paused.notify) == [
        ("job-paused", "firing", "info"), ("node-overloaded", "resolved", "warning")]
    still = plan_cycle(rules, paused.entities, paused.alerts, snap("PAUSE", "NORMAL"), None, T0 + timedelta(hours=5))
    assert still.notify == ()


# --- templates ---------------------------------------------------------------------------

def test_check_rejects_a_template_that_no_channel_type_has(write_config, sim) -> None:
    """`template = "nosuch"` with no nosuch.<type>.j2 anywhere exits 2 naming the rule file, the rule and the key."""
    rules = NODE_EXCEPTION + 'template = "nosuch"\n'
    config = config_at(write_config, sim.url, rules=rules)
    result = notifier("check", "-c", str(config))
    assert result.returncode == 2, result.stderr
    rule_file = config.parent / "rules" / "rules.toml"
    assert f"error: {rule_file}: rule 'node-exception': template: no template 'nosuch'" in result.stderr
    assert "nosuch.console.j2" in result.stderr and "nosuch.slack.j2" in result.stderr
    assert "nosuch.alertmanager.j2" not in result.stderr  # Alertmanager channels send labels, no template text


def test_a_template_for_another_channel_type_is_enough(write_config, sim, tmp_path: Path) -> None:
    """A template that exists for one channel type passes; other types fall back to the default by design."""
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "custom.slack.j2").write_text('{"text": "x"}\n')
    config = config_at(write_config, sim.url, rules=NODE_EXCEPTION + 'template = "custom"\n')
    config.write_text(config.read_text().replace('rules = "rules"', 'rules = "rules"\ntemplates = "templates"'))
    report = check(config)
    assert report.problems == () and report.exit_code == EXIT_OK


# --- jobs globs against [jobs] names ---------------------------------------------------------

def test_check_warns_about_a_jobs_glob_matching_no_configured_name(write_config, sim) -> None:
    """A rule glob matching no [jobs] name is a warning naming file, rule, key and glob; the check still passes."""
    rules = NODE_EXCEPTION + 'jobs = ["job_sms", "job_smz*"]\n'
    config = config_at(write_config, sim.url, rules=rules, jobs='names = ["job_sms"]\ndiscover = true')
    result = notifier("check", "-c", str(config))
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    rule_file = config.parent / "rules" / "rules.toml"
    assert (f"warning: {rule_file}: rule 'node-exception': jobs: 'job_smz*' matches none of the configured "
            "[jobs] names (job_sms); discovery may still match it") in output
    assert "'job_sms' matches" not in output
    assert "ok:" in result.stdout


def test_jobs_globs_are_not_checked_without_configured_names(write_config, sim) -> None:
    """With discovery only (no [jobs] names) a glob cannot be judged offline: no warning."""
    config = config_at(write_config, sim.url, rules=NODE_EXCEPTION + 'jobs = ["job_smz*"]\n',
                       jobs="discover = true")
    assert check(config).warnings == ()


def test_a_dead_glob_says_discovery_is_off(write_config, sim) -> None:
    """Without discovery the warning says nothing else can match the glob."""
    config = config_at(write_config, sim.url, rules=NODE_EXCEPTION + 'jobs = ["other_*"]\n')
    (warning,) = check(config).warnings
    assert "'other_*' matches none" in warning and "discover is off" in warning


# --- inhibition cycles -------------------------------------------------------------------

def job_rule(name: str, *inhibits: str, file: str = "r.toml") -> Rule:
    return Rule(name=name, scope="job", channels=("c",), status=("EXCEPTION",), inhibits=inhibits, file=file)


def test_an_inhibition_cycle_of_any_length_is_an_error_naming_it() -> None:
    """a -> b -> c -> a (job rules may inhibit job rules) is refused at load, naming the cycle, file, rule and key."""
    rules = (job_rule("a", "b", file="10.toml"), job_rule("b", "c", file="20.toml"), job_rule("c", "a"),
             Rule(name="n", scope="node", channels=("c",), status=("EXCEPTION",)))
    with pytest.raises(ConfigError) as err:
        check_rules(rules)
    assert str(err.value).startswith("10.toml: rule 'a': inhibits: inhibition cycle a -> b -> c -> a:")
    with pytest.raises(ConfigError, match=r"inhibition cycle b -> a -> b"):
        check_rules((job_rule("x", "b"), job_rule("b", "a"), job_rule("a", "b")))


def test_inhibition_chains_and_diamonds_are_not_cycles() -> None:
    """Shared targets and long chains without a way back load fine."""
    rules = (job_rule("a", "b", "c"), job_rule("b", "c", "n"), job_rule("c", "n"),
             Rule(name="n", scope="node", channels=("c",), status=("EXCEPTION",)))
    assert check_rules(rules) == rules


def test_check_reports_an_inhibition_cycle(write_config, sim) -> None:
    """`notifier check` on mutually inhibiting job rules exits 2 and shows the cycle."""
    rules = """
[[rule]]
name = "job-exception"
scope = "job"
status = ["EXCEPTION"]
inhibits = ["job-overloaded"]

[[rule]]
name = "job-overloaded"
scope = "job"
status = ["OVERLOAD", "EXCEPTION"]
inhibits = ["job-exception"]
"""
    result = notifier("check", "-c", str(config_at(write_config, sim.url, rules=rules)))
    assert result.returncode == 2
    assert "inhibition cycle job-exception -> job-overloaded -> job-exception" in result.stderr


# --- --online ------------------------------------------------------------------------------

def test_online_reports_a_configured_job_that_does_not_exist(write_config, sim) -> None:
    """`check --online` asks the list API once and names each unknown job with a "did you mean"; exit 2."""
    config = config_at(write_config, sim.url, jobs='names = ["job_sms", "job_smss", "zzz"]')
    result = notifier("check", "-c", str(config), "--online")
    assert result.returncode == 2
    assert (f"error: {config}: jobs: names: job 'job_smss' does not exist: the list API has no REAL_TIME job of "
            "that name in project b384b9e9ab9b4ee8994c8633aabc9505 (did you mean 'job_sms'?)") in result.stderr
    assert "job 'zzz' does not exist" in result.stderr and "'job_sms' does not exist" not in result.stderr
    assert list_requests(sim) == 1


def test_online_passes_when_every_job_exists(write_config, sim, capsys: pytest.CaptureFixture[str]) -> None:
    """Every configured job listed: exit 0 and the summary says what was listed."""
    assert run(config_at(write_config, sim.url), online=True) == EXIT_OK
    assert "online: 1 REAL_TIME job listed, 1 would be watched" in capsys.readouterr().out
    assert list_requests(sim) == 1


def test_offline_check_never_asks_the_api(write_config, sim) -> None:
    """Without --online the list API is not asked, even for a job that does not exist."""
    report = check(config_at(write_config, sim.url, jobs='names = ["nope"]'))
    assert report.exit_code == EXIT_OK and len(sim.requests) == 0


def test_online_with_the_api_unreachable_is_a_source_failure(write_config, capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing listening at the endpoint: exit 1 (the source failed), and the error says the API could not be asked."""
    config = config_at(write_config, f"http://127.0.0.1:{free_port()}")
    assert run(config, online=True) == EXIT_SOURCE
    err = capsys.readouterr().err
    assert f"error: {config}: source: --online: could not ask the list API at http://127.0.0.1:" in err
    assert "cannot reach the API" in err


def test_online_with_a_401_says_the_credentials_were_refused(write_config, sim,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A 401 from the list API is exit 1 with the API's error and a hint to check [source] auth."""
    sim.set_fault(kind="http_error", status=401, endpoint="list", error_code="APIG.1002",
                  error_msg="Incorrect token or token resolution failed")
    assert run(config_at(write_config, sim.url), online=True) == EXIT_SOURCE
    err = capsys.readouterr().err
    assert "APIG.1002" in err and "HTTP 401" in err and "the API refused the credentials" in err


def test_bad_config_outranks_a_source_failure(write_config) -> None:
    """A missing template and an unreachable API together exit 2: fix the config first."""
    config = config_at(write_config, f"http://127.0.0.1:{free_port()}", rules=NODE_EXCEPTION + 'template = "x"\n')
    report = check(config, online=True)
    assert report.source_errors and report.problems and report.exit_code == EXIT_CONFIG


def test_a_typo_in_source_is_named_before_the_key_it_hides(tmp_path: Path) -> None:
    """`projct_id` is reported as an unknown key with a suggestion, not as "project_id is missing"."""
    config = tmp_path / "notifier.toml"
    config.write_text('[source]\nendpoint = "http://127.0.0.1:1"\nprojct_id = "x"\nauth = "none"\n'
                      '[jobs]\nnames = ["a"]\n[channels.stdout]\ntype = "console"\n')
    result = notifier("check", "-c", str(config))
    assert result.returncode == 2
    assert "source: projct_id: unknown key (did you mean 'project_id'?)" in result.stderr


def test_a_rule_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    """A rule file saved in Latin-1 is exit 2 naming the file, not a UnicodeDecodeError traceback."""
    config = tmp_path / "notifier.toml"
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.toml").write_bytes('# caf\xe9\n[[rule]]\nname = "x"\n'.encode("latin-1"))
    config.write_text('[source]\nendpoint = "http://127.0.0.1:1"\nproject_id = "x"\nauth = "none"\n'
                      '[jobs]\nnames = ["a"]\n[paths]\nrules = "rules"\n[channels.stdout]\ntype = "console"\n')
    result = notifier("check", "-c", str(config))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "r.toml: not UTF-8" in result.stderr


def test_check_warns_about_slack_keys_that_would_do_nothing(write_config, sim, monkeypatch) -> None:
    """A rule's slack_channel on a non-Slack channel, and owners without discovery, are said, not ignored."""
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    channels = ('[channels.hook]\ntype = "console"\n[channels.team]\ntype = "slack"\nchannel = "#ops"\n'
                '[slack.owners]\nalice = "U0ALICE"\n')
    rules = NODE_EXCEPTION + 'channels = ["hook"]\nslack_channel = "#payments"\n'
    report = check(write_config(source=source_toml(sim.url), rules=rules, channels=channels))
    assert report.exit_code == EXIT_OK, report.problems
    assert any("slack_channel: none of its channels is a Slack channel" in w for w in report.warnings)
    assert any("slack.owners" in w and "discover = true" in w for w in report.warnings)


def test_check_warns_about_thread_keys_on_an_entry_with_thread_false(write_config, sim, monkeypatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    channels = ('[channels.team]\ntype = "slack"\nchannel = "#ops"\nthread = false\nbroadcast_resolved = true\n'
                'mention = ["<!here>"]\n')
    report = check(write_config(source=source_toml(sim.url), rules=NODE_EXCEPTION, channels=channels))
    said = [w for w in report.warnings if "needs thread = true" in w]
    assert [w.split(": ")[2] for w in said] == ["mention", "broadcast_resolved"]


def test_check_warns_about_a_rule_template_on_channels_that_send_alertmanager_payloads(write_config, sim) -> None:
    """Alertmanager's payload is labels and annotations: a rule's own template changes nothing on those channels."""
    channels = ('[channels.am]\ntype = "alertmanager"\nurl = "http://127.0.0.1:9"\n'
                '[channels.amhook]\ntype = "webhook"\nurl = "http://127.0.0.1:9/h"\nformat = "alertmanager"\n'
                '[channels.hook]\ntype = "webhook"\nurl = "http://127.0.0.1:9/h"\n')
    config = write_config(source=source_toml(sim.url), channels=channels,
                          rules=NODE_EXCEPTION + 'template = "brief"\n'
                                + NODE_EXCEPTION.replace('"node-exception"', '"plain"'))
    config.write_text(config.read_text().replace('rules = "rules"', 'rules = "rules"\ntemplates = "templates"'))
    (config.parent / "templates").mkdir()
    (config.parent / "templates" / "brief.webhook.j2").write_text('{"text": "{{ group }}"}\n')
    report = check(config)
    assert report.exit_code == EXIT_OK, report.problems
    assert [w.split(": ", 1)[1] for w in report.warnings if "template" in w] == [
        "rule 'node-exception': template: am, amhook send Alertmanager's payload (labels and annotations), "
        "which 'brief' does not change"]


def test_found_by_a_new_operator_each_names_the_file_and_key(write_config, sim, tmp_path: Path) -> None:
    """World-writable config and rule files, a missing rules directory, an empty secret file, the AK stutter."""
    hook = '[channels.hook]\ntype = "webhook"\nurl = "http://127.0.0.1:9/h"\n'
    config = write_config(source=source_toml(sim.url), rules=NODE_EXCEPTION, channels=hook)

    config.chmod(0o666)
    report = check(config)
    assert report.exit_code == EXIT_CONFIG and "is writable by every user" in report.problems[0]
    config.chmod(0o644)
    rule_file = config.parent / "rules" / "rules.toml"
    rule_file.chmod(0o646)
    assert f"{rule_file}: is writable by every user" in check(config).problems[0]
    rule_file.chmod(0o644)

    config.write_text(config.read_text().replace('rules = "rules"', 'rules = "missing"'))
    (problem,) = check(config).problems
    assert problem.startswith(f"{config}: paths: rules: the rules directory ") and "does not exist" in problem
    config.write_text(config.read_text().replace('rules = "missing"', 'rules = "rules"'))

    empty = tmp_path / "hmac-key"
    empty.write_text("\n")
    config.write_text(config.read_text() + f'secret_file = "{empty}"\n')
    (problem,) = check(config).problems
    assert "channels.hook" in problem and "is empty" in problem

    config.write_text(config.read_text().replace(f'secret_file = "{empty}"\n', "")
                      .replace('auth = "none"', 'auth = "aksk"'))
    (problem,) = check(config).problems
    assert problem == f"{config}: source: missing secret: set environment variable HUAWEICLOUD_SDK_AK"
