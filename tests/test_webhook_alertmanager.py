"""The webhook channel's ``format = "alertmanager"``: its config keys, its payload, and a real cycle
from the bundled simulator to a real HTTP receiver, read back by a model of Alertmanager's webhook
format that this project did not write (``prometheus-alert-model-leo``)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from notifier.channels import CHANNEL_TYPES
from notifier.channels.am_payload import am_webhook_payload
from notifier.channels.webhook import TYPE, WebhookChannel, WebhookSettings, compose, encode_body, parse
from notifier.checks import check
from notifier.config import load_config
from notifier.errors import ConfigError
from notifier.render import Renderer, sample_groups
from notifier.simulator import ManualClock, Simulator, load_scenario
from notifier.strict_toml import TableReader
from tests.conftest import WriteConfig
from tests.pipeline_support import LinkedClock, Pipeline, source_toml
from tests.support import fakes
from tests.support.webhook_receiver import WebhookReceiver

with warnings.catch_warnings():  # the model still declares a pydantic V1-style validator
    warnings.simplefilter("ignore", DeprecationWarning)
    import prometheus_alert_model as am_model

NOW = sample_groups()[0].alerts[0].since


def reader(**table: Any) -> TableReader:
    return TableReader({"type": "webhook", "url": "http://127.0.0.1:9/hook", **table}, file="notifier.toml",
                       where="channels.hook")


# --- config -----------------------------------------------------------------------------

def test_format_defaults_to_notifier() -> None:
    """Without format, the channel keeps notifier's own payload and no Alertmanager settings."""
    settings = parse(reader())
    assert (settings.format, settings.receiver, settings.labels, settings.external_url, settings.generator_url) == (
        "notifier", None, (), "", "")


def test_alertmanager_format_reads_its_keys() -> None:
    """format = "alertmanager" takes receiver, labels (sorted), external_url and generator_url."""
    settings = parse(reader(format="alertmanager", receiver="team-data", labels={"team": "data", "env": "prod"},
                            external_url="https://notifier.example", generator_url="https://c.example/{job}"))
    assert (settings.format, settings.receiver, settings.labels, settings.external_url, settings.generator_url) == (
        "alertmanager", "team-data", (("env", "prod"), ("team", "data")), "https://notifier.example",
        "https://c.example/{job}")


@pytest.mark.parametrize(("table", "where", "key", "message"), [
    ({"format": "prometheus"}, "channels.hook", "format",
     "must be one of 'notifier', 'alertmanager', got 'prometheus'"),
    ({"format": "alertmanager", "labels": {"team-a": "x"}}, "channels.hook.labels", "team-a",
     "not a valid label name"),
    ({"format": "alertmanager", "labels": {"alertname": "x"}}, "channels.hook.labels", "alertname",
     "set by notifier itself"),
    ({"format": "alertmanager", "labels": {"workspace": "x"}}, "channels.hook.labels", "workspace",
     "set by notifier itself"),
    ({"format": "alertmanager", "labels": {"team": ""}}, "channels.hook.labels", "team", "must not be empty"),
    ({"format": "alertmanager", "labels": {"team": "x", "tema": 1}}, "channels.hook.labels", "tema",
     "expected a string"),
    ({"labels": {"team": "x"}}, "channels.hook", "labels", 'only used with format = "alertmanager"'),
    ({"receiver": "x"}, "channels.hook", "receiver", 'only used with format = "alertmanager"'),
    ({"format": "alertmanager", "receiver": " "}, "channels.hook", "receiver", "must not be empty"),
    ({"format": "alertmanager", "external_url": "notifier.example"}, "channels.hook", "external_url",
     "absolute http"),
    ({"format": "alertmanager", "generator_url": "https://c.example/{jobname}"}, "channels.hook", "generator_url",
     "unknown placeholder {jobname}"),
    ({"format": "alertmanager", "recevier": "x"}, "channels.hook", "recevier", "did you mean 'receiver'?"),
], ids=["unknown-format", "bad-label-name", "label-overrides-builtin", "label-overrides-source-fact",
        "empty-label", "label-not-string", "labels-without-format", "receiver-without-format", "blank-receiver",
        "relative-external-url", "unknown-placeholder", "typo-key"])
def test_bad_settings_name_table_and_key(table: dict[str, Any], where: str, key: str, message: str) -> None:
    """Every bad Alertmanager-format setting is refused naming the file, the table and the key."""
    with pytest.raises(ConfigError) as info:
        parse(reader(**table))
    err = info.value
    assert (err.file, err.where, err.key) == ("notifier.toml", where, key)
    assert message in str(err)


def test_bad_format_in_a_real_config_file_names_it(write_config: WriteConfig) -> None:
    """Loading notifier.toml with an unknown format fails naming the file, the channel table and the key."""
    path = write_config(source=source_toml("http://127.0.0.1:9"), rules="",
                        channels='[channels.hook]\ntype = "webhook"\nurl = "http://127.0.0.1:9/h"\nformat = "am"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.file, info.value.where, info.value.key) == (str(path), "channels.hook", "format")
    assert "'notifier', 'alertmanager'" in str(info.value)


# --- compose ----------------------------------------------------------------------------

def test_compose_sends_exactly_the_alertmanager_payload() -> None:
    """With format = "alertmanager" the payload is am_webhook_payload, receiver defaulting to the channel name."""
    settings = parse(reader(format="alertmanager", labels={"team": "data"}))
    for group in sample_groups("hook"):
        (payload,) = TYPE.compose_for(Renderer(None, strict=True), settings, group, NOW)
        assert payload == am_webhook_payload(group, receiver="hook", static_labels={"team": "data"}, now=NOW)
        am_model.AlertGroup.model_validate(payload)


def test_receiver_setting_replaces_the_channel_name() -> None:
    """receiver = "..." is the payload's receiver."""
    settings = parse(reader(format="alertmanager", receiver="team-data"))
    (payload,) = TYPE.compose_for(Renderer(None), settings, sample_groups("hook")[0], NOW)
    assert payload["receiver"] == "team-data"


def test_notifier_format_is_unchanged_and_other_types_ignore_settings() -> None:
    """The default format composes exactly as before; a type without settings-aware compose uses compose."""
    group = sample_groups("hook")[0]
    assert TYPE.compose_for(Renderer(None), parse(reader()), group, NOW) == compose(Renderer(None), group, NOW)
    console = CHANNEL_TYPES["console"]
    assert console.compose_with_settings is None
    assert console.compose_for(Renderer(None), object(), group, NOW) == console.compose(Renderer(None), group, NOW)


def test_the_payload_goes_over_the_wire_as_composed(webhook_receiver: WebhookReceiver) -> None:
    """The channel posts the Alertmanager payload's compact JSON bytes as they are."""
    (payload,) = TYPE.compose_for(Renderer(None), parse(reader(format="alertmanager")), sample_groups("hook")[2],
                                  NOW)
    channel = WebhookChannel("hook", WebhookSettings(url=webhook_receiver.url, format="alertmanager"), environ={})
    try:
        channel.send(fakes.notification(payload, id=7, channel="hook", created_at=NOW))
    finally:
        channel.close()
    (request,) = webhook_receiver.wait_for(1)
    assert request.body == encode_body(payload)
    assert request.headers["content-type"] == "application/json"
    assert am_model.AlertGroup.model_validate_json(request.body).status == "resolved"


# --- end to end: simulator -> App -> webhook receiver -------------------------------------

SCENARIO = """
project_id = "b384b9e9ab9b4ee8994c8633aabc9505"
epoch_start = 1551409406000
loop = false

[[job]]
name = "job_sms"
status = "NORMAL"
workspace = "ws-data"

[[job.node]]
name = "DIS_INPUT"
type = "ExecuteDISStream"

[[job.node]]
name = "DLI_SMS_GES"
type = "DLI SQL"
status = "EXCEPTION"
"""

RULES = """
[[rule]]
name = "node-exception"
scope = "node"
status = ["EXCEPTION"]
severity = "critical"
labels = { team = "data", env = "staging" }
"""

CHANNEL = """
[channels.am]
type = "webhook"
url = "{url}"
format = "alertmanager"
receiver = "dataarts"
labels = {{ env = "prod", region = "cn-north-4" }}
external_url = "https://notifier.example"
generator_url = "https://console.example/dlf/{{project_id}}/jobs/{{job}}?node={{node}}"
"""


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Simulator]:
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO)
    with Simulator(load_scenario(scenario), clock=ManualClock()) as s:
        yield s


@pytest.fixture
def pipeline(write_config: WriteConfig, sim: Simulator, webhook_receiver: WebhookReceiver) -> Iterator[Pipeline]:
    source = source_toml(sim.url) + 'workspace = "ws-data"\n'
    path = write_config(source=source, rules=RULES, channels=CHANNEL.format(url=webhook_receiver.url))
    p = Pipeline(path, LinkedClock(sim))
    yield p
    p.close()


def test_a_real_cycle_posts_alertmanager_payloads(pipeline: Pipeline, sim: Simulator,
                                                  webhook_receiver: WebhookReceiver) -> None:
    """A node entering EXCEPTION, then recovering, reaches a real receiver as Alertmanager's two payloads."""
    pipeline.cycle()
    (fired,) = webhook_receiver.wait_for(1)
    assert fired.headers["content-type"] == "application/json"
    body = json.loads(fired.body)
    model = am_model.AlertGroup.model_validate_json(fired.body)
    assert fired.body == encode_body(body)  # compact JSON, exactly as composed and stored
    assert (model.version, model.status, model.receiver, model.group_key, model.truncated_alerts) == (
        "4", "firing", "dataarts", '{}:{job="job_sms", source="default"}', 0)
    assert model.external_url == "https://notifier.example"
    assert model.group_labels == {"job": "job_sms", "source": "default"}
    (alert,) = model.alerts
    assert alert.labels == {
        "alertname": "node-exception", "env": "staging", "job": "job_sms", "node": "DLI_SMS_GES",
        "node_type": "DLI SQL", "project_id": "b384b9e9ab9b4ee8994c8633aabc9505", "region": "cn-north-4",
        "severity": "critical", "source": "default", "team": "data", "workspace": "ws-data",
    }
    assert (alert.annotations["state"], alert.annotations["summary"]) == (
        "EXCEPTION", "DLI_SMS_GES in EXCEPTION")
    assert alert.annotations["notifier_ack"] == f"notifier ack {alert.fingerprint}"
    assert alert.generator_url == (
        "https://console.example/dlf/b384b9e9ab9b4ee8994c8633aabc9505/jobs/job_sms?node=DLI_SMS_GES")
    assert body["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"

    sim.set_node_status("job_sms", "DLI_SMS_GES", "NORMAL")
    pipeline.clock.advance(60)
    pipeline.cycle()
    _, resolved = webhook_receiver.wait_for(2)
    model = am_model.AlertGroup.model_validate_json(resolved.body)
    assert model.status == "resolved"
    (gone,) = model.alerts
    assert (gone.status, gone.fingerprint, gone.labels) == ("resolved", alert.fingerprint, alert.labels)
    assert gone.ends_at == pipeline.clock() and gone.starts_at == alert.starts_at


def test_notifier_check_renders_the_alertmanager_format(pipeline: Pipeline) -> None:
    """`notifier check` composes its samples through the channel's settings and finds nothing wrong."""
    report = check(pipeline.config_path)
    assert report.problems == ()


def test_config_example_in_readme_loads(tmp_path: Path) -> None:
    """README's format = "alertmanager" example (channel and rule) is valid as written."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    channel = _block_after(readme, "<!-- example: webhook-alertmanager -->")
    rule = _block_after(readme, "<!-- example: rule-labels -->")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "team.toml").write_text(rule)
    (tmp_path / "notifier.toml").write_text(
        source_toml("http://127.0.0.1:9") + '[jobs]\nnames = ["job_sms"]\n[state]\npath = "state.db"\n'
        '[paths]\nrules = "rules"\n' + channel)
    runtime_check = check(tmp_path / "notifier.toml")
    assert runtime_check.problems == ()


def _block_after(text: str, marker: str) -> str:
    """The ```toml block that follows ``marker``."""
    rest = text[text.index(marker):]
    start = rest.index("```toml\n") + len("```toml\n")
    return textwrap.dedent(rest[start:rest.index("```", start)])


def test_test_channel_sends_the_alertmanager_payload(pipeline: Pipeline, webhook_receiver: WebhookReceiver) -> None:
    """`notifier test-channel` composes through the channel's settings: the receiver gets Alertmanager's payload."""
    result = subprocess.run([sys.executable, "-m", "notifier", "test-channel", "am", "-c", str(pipeline.config_path)],
                            capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    (request,) = webhook_receiver.wait_for(1)
    model = am_model.AlertGroup.model_validate_json(request.body)
    assert (model.version, model.receiver) == ("4", "dataarts")
    assert model.alerts[0].annotations["summary"].startswith("TEST from notifier")
