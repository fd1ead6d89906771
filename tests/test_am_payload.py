"""Alertmanager's shapes (notifier/channels/am_payload.py), checked against a model of Alertmanager's
webhook format that this project did not write (the ``prometheus-alert-model-leo`` package) and
against the field names of Alertmanager's own Go source."""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from notifier.channels.am_payload import (
    ZERO_TIME,
    am_alert,
    am_annotations,
    am_labels,
    am_webhook_payload,
    generator_link,
    generator_url_problem,
    go_quote,
    label_set_string,
    quote_meta,
    rfc3339,
)
from notifier.core.labels import BUILTIN
from notifier.core.models import MessageGroup
from notifier.render import sample_groups

with warnings.catch_warnings():  # the model still declares a pydantic V1-style validator
    warnings.simplefilter("ignore", DeprecationWarning)
    import prometheus_alert_model as am_model

T0 = datetime(2019, 3, 1, 3, 4, 25, tzinfo=timezone.utc)
NOW = T0 + timedelta(minutes=20)

# Alertmanager's notify/webhook.Message: template.Data's fields, then version, groupKey, truncatedAlerts
WEBHOOK_KEYS = ["receiver", "status", "alerts", "groupLabels", "commonLabels", "commonAnnotations", "externalURL",
                "version", "groupKey", "truncatedAlerts"]
# template.Alert
ALERT_KEYS = ["status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"]
# api/v2 postableAlert (models.PostableAlert + models.Alert)
POSTABLE_KEYS = {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}

NODE, GROUPED, RESOLVED, JOB_AND_EVENT = sample_groups("am-hook")
NODE_ALERT = replace(NODE.alerts[0], labels={"project_id": "b384b9e9ab9b4ee8994c8633aabc9505", "team": "data"})
JOB_ALERT = JOB_AND_EVENT.alerts[0]


def payload(group: MessageGroup, **kw: object) -> dict:
    args: dict = {"receiver": "am-hook", "now": NOW, **kw}
    return am_webhook_payload(group, **args)


def parsed(body: dict) -> am_model.AlertGroup:
    """The payload as bytes on the wire, read back by the Alertmanager model."""
    return am_model.AlertGroup.model_validate_json(json.dumps(body))


# --- the webhook payload against the model ----------------------------------------------

MIXED = MessageGroup("am-hook", "job_sms", (RESOLVED.alerts[0], replace(NODE.alerts[0], node="DIS_INPUT",
                                                                         fingerprint="1111111111111111")))


@pytest.mark.parametrize("group", [NODE, GROUPED, RESOLVED, JOB_AND_EVENT, MIXED],
                         ids=["node-firing", "grouped", "resolved", "job-and-event", "mixed"])
def test_payload_parses_as_alertmanager_webhook(group: MessageGroup) -> None:
    """Firing, resolved, mixed, job- and node-level groups parse as Alertmanager's webhook payload, in Go's order."""
    body = payload(group)
    model = parsed(body)
    assert list(body) == WEBHOOK_KEYS
    assert all(list(a) == ALERT_KEYS for a in body["alerts"])
    assert (model.version, model.truncated_alerts, model.receiver) == ("4", 0, "am-hook")
    assert model.status == ("firing" if any(a.status == "firing" for a in group.alerts) else "resolved")
    assert [a.fingerprint for a in model.alerts] == [a.fingerprint for a in group.alerts]
    assert [a.status for a in model.alerts] == [a.status for a in group.alerts]


def test_firing_alert_has_go_zero_end_and_resolved_its_end() -> None:
    """A firing alert's endsAt is Go's zero time, as Alertmanager sends it; a resolved one's is when it resolved."""
    model = parsed(payload(MIXED))
    resolved, firing = model.alerts
    assert payload(MIXED)["alerts"][1]["endsAt"] == ZERO_TIME == "0001-01-01T00:00:00Z"
    assert firing.ends_at == datetime(1, 1, 1, tzinfo=timezone.utc)
    assert resolved.ends_at == RESOLVED.alerts[0].ends_at
    assert firing.starts_at == T0


def test_node_alert_labels_and_annotations() -> None:
    """A node alert carries every built-in label, its static ones, and the annotations a person reads."""
    body = payload(MessageGroup("am-hook", "job_sms", (NODE_ALERT,)), static_labels={"team": "ops", "env": "prod"})
    (alert,) = body["alerts"]
    assert alert["labels"] == {
        "alertname": "node-exception", "env": "prod", "job": "job_sms", "node": "DLI_SMS_GES",
        "node_type": "DLI SQL", "project_id": "b384b9e9ab9b4ee8994c8633aabc9505", "severity": "critical",
        "source": "default", "team": "data",
    }
    assert alert["annotations"] == {
        "log_path": "obs://dlf-log-example/job_sms/DLI_SMS_GES.job",
        "notifier_ack": "notifier ack 0123456789abcdef",
        "notifier_fingerprint": "0123456789abcdef",
        "notifier_silence": 'notifier silence add --rule node-exception --job job_sms --node DLI_SMS_GES --for 2h '
                            '--comment "..."',
        "previous_state": "NORMAL",
        "since": "2019-03-01T03:04:25Z",
        "state": "EXCEPTION",
        "summary": "DLI_SMS_GES entered EXCEPTION (was NORMAL)",
    }
    assert list(alert["labels"]) == sorted(alert["labels"]) and list(alert["annotations"]) == sorted(
        alert["annotations"])


def test_job_alert_leaves_out_node_labels_and_empty_annotations() -> None:
    """A job-level alert has no node or node_type label, and no empty previous_state or log_path annotation."""
    labels, annotations = am_labels(JOB_ALERT), am_annotations(JOB_ALERT)
    assert labels == {"alertname": "job-stuck-starting", "job": "job_orders", "severity": "warning",
                      "source": "default"}
    assert not {"previous_state", "log_path"} & set(annotations)
    assert "--node" not in annotations["notifier_silence"]


def test_rule_labels_win_over_channel_labels_and_built_ins_over_both() -> None:
    """Channel labels < the alert's (rule) labels < the built-in ones, whatever a caller passes."""
    alert = replace(NODE_ALERT, labels={"team": "data", "job": "sneaky"}, source="prod")
    labels = am_labels(alert, {"team": "ops", "alertname": "other", "tier": "1"})
    assert (labels["team"], labels["tier"], labels["alertname"], labels["job"], labels["source"]) == (
        "data", "1", "node-exception", "job_sms", "prod")


def test_group_labels_common_labels_and_group_key() -> None:
    """groupLabels are job and source; common* hold what every alert shares; groupKey is Alertmanager's form."""
    body = payload(MIXED)
    assert body["groupLabels"] == {"job": "job_sms", "source": "default"}
    assert body["commonLabels"] == {"alertname": "node-exception", "job": "job_sms", "node_type": "DLI SQL",
                                    "severity": "critical", "source": "default"}
    assert "summary" not in body["commonAnnotations"]  # the two alerts say different things
    assert body["groupKey"] == '{}:{job="job_sms", source="default"}'
    one = payload(NODE)
    assert one["commonLabels"] == one["alerts"][0]["labels"]
    assert one["commonAnnotations"] == one["alerts"][0]["annotations"]


def test_fingerprint_is_notifiers_own_and_survives_a_label_edit() -> None:
    """The payload's fingerprint is the one `notifier ack` takes, unchanged by a static label edit."""
    before = payload(NODE)["alerts"][0]["fingerprint"]
    after = payload(NODE, static_labels={"team": "new"})["alerts"][0]["fingerprint"]
    assert before == after == NODE.alerts[0].fingerprint


def test_receiver_external_url_and_generator_url() -> None:
    """receiver is regex-quoted as Alertmanager's template.Data does; externalURL and generatorURL as configured."""
    body = payload(NODE, receiver="team.hook", external_url="https://notifier.example",
                   generator_url="https://console.example/dlf/{project_id}/jobs/{job}?node={node}")
    model = parsed(body)
    assert model.receiver == r"team\.hook"
    assert model.external_url == "https://notifier.example"
    assert model.alerts[0].generator_url == "https://console.example/dlf//jobs/job_sms?node=DLI_SMS_GES"
    assert payload(NODE)["alerts"][0]["generatorURL"] == ""


# --- the API v2 postable alert ------------------------------------------------------------

def test_postable_alert_for_api_v2() -> None:
    """am_alert is a postableAlert: labels, annotations, RFC 3339 startsAt/endsAt, generatorURL when set."""
    body = am_alert(NODE_ALERT, static_labels={"env": "prod"}, generator_url="https://c.example/{job}",
                    ends_at=NOW + timedelta(minutes=3))
    assert set(body) == POSTABLE_KEYS
    assert body["labels"] == am_labels(NODE_ALERT, {"env": "prod"})
    assert body["annotations"] == am_annotations(NODE_ALERT)
    assert (body["startsAt"], body["endsAt"], body["generatorURL"]) == (
        "2019-03-01T03:04:25Z", "2019-03-01T03:27:25Z", "https://c.example/job_sms")
    bare = am_alert(JOB_ALERT, ends_at=None)
    assert set(bare) == {"labels", "annotations", "startsAt"}


# --- Go's formats ---------------------------------------------------------------------

@pytest.mark.parametrize(("when", "text"), [
    (T0, "2019-03-01T03:04:25Z"),
    (T0.replace(microsecond=120000), "2019-03-01T03:04:25.12Z"),
    (T0.astimezone(timezone(timedelta(hours=8))), "2019-03-01T03:04:25Z"),
], ids=["whole-seconds", "fraction-trimmed", "other-zone"])
def test_rfc3339_as_go_writes_it(when: datetime, text: str) -> None:
    """Times are UTC with Z, a fraction only when there is one, trailing zeros trimmed."""
    assert rfc3339(when) == text


def test_label_set_string_and_go_quoting() -> None:
    """groupKey's label set is sorted and Go-quoted: quotes, backslashes and control characters escaped."""
    assert label_set_string({"source": "a", "job": 'j"\\\n节\x01'}) == '{job="j\\"\\\\\\n节\\x01", source="a"}'
    assert go_quote("") == '""'
    assert quote_meta("a.b+c-d") == "a\\.b\\+c-d"


# --- generatorURL templates -------------------------------------------------------------

def test_generator_link_quotes_values() -> None:
    """Placeholders take the alert's values URL-quoted; a URL without placeholders is kept as is."""
    alert = replace(NODE.alerts[0], job="job a/b", node=None)
    assert generator_link("https://x.example/{job}/{node}", alert) == "https://x.example/job%20a%2Fb/"
    assert generator_link("https://x.example/static", alert) == "https://x.example/static"


@pytest.mark.parametrize(("template", "problem"), [
    ("https://x.example/{jobs}", "unknown placeholder {jobs}"),
    ("https://x.example/{job", "not a valid template"),
    ("https://x.example/{job!r}", "takes no format"),
    ("https://x.example/{}", "unknown placeholder {}"),
    ("ftp://x.example/{job}", "http:// or https://"),
    ("/relative/{job}", "http:// or https://"),
], ids=["unknown-field", "unclosed", "conversion", "positional", "scheme", "relative"])
def test_generator_url_problems(template: str, problem: str) -> None:
    """A generator_url that cannot work is refused with the reason."""
    assert problem in (generator_url_problem(template) or "")


def test_generator_url_good() -> None:
    """Every documented placeholder is accepted."""
    assert generator_url_problem("https://x.example/{rule}/{job}/{node}/{source}/{fingerprint}/{project_id}/"
                                 "{workspace}") is None


def test_builtin_labels_are_the_documented_ones() -> None:
    """The labels notifier sets itself are the ones README's Labels item names, in its order."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    item = readme[readme.index("- **Labels**:"):]
    item = item[:item.index("then the static ones")]
    assert tuple(re.findall(r"`([a-z_]+)`", item)) == BUILTIN


def test_empty_label_values_are_left_out() -> None:
    """An empty label is no label in Alertmanager: a source fact or node type that is empty is not sent."""
    labels = am_labels(replace(NODE.alerts[0], node_type="", labels={"workspace": ""}))
    assert "node_type" not in labels and "workspace" not in labels
