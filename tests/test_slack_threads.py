"""One Slack thread per incident, end to end: simulator -> service -> state file -> real slack_sdk -> local Slack."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta

import pytest

from notifier.channels import slack
from notifier.core.incidents import Incident, plan_incidents
from notifier.core.models import AlertState, EntitiesByJob, EntityState, MessageGroup, Rule, ThreadRef
from notifier.errors import ConfigError
from notifier.render import SEVERITY_COLOR
from notifier.simulator import ManualClock, Simulator, load_scenario
from tests.conftest import WriteConfig
from tests.pipeline_support import NODE_EXCEPTION, LinkedClock, Pipeline, source_toml
from tests.support import fakes
from tests.support.fakes import START, FakeClock
from tests.support.slack_server import CHANNEL_ID, SlackServer

MakePipeline = Callable[..., Pipeline]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(load_scenario("seed"), clock=ManualClock()) as s:
        yield s


@pytest.fixture
def clock(sim: Simulator) -> LinkedClock:
    return LinkedClock(sim)


@pytest.fixture(autouse=True)
def paced(slack_paced: FakeClock) -> FakeClock:
    return slack_paced


@pytest.fixture
def make_pipeline(write_config: WriteConfig, sim: Simulator, clock: LinkedClock,
                  slack_server: SlackServer) -> Iterator[MakePipeline]:
    made: list[Pipeline] = []

    def make(rules: str = NODE_EXCEPTION, extra: str = "", jobs: str = 'names = ["job_sms"]') -> Pipeline:
        channels = (f'[channels.team]\ntype = "slack"\nchannel = "#data-alerts"\n'
                    f'base_url = "{slack_server.base_url}"\n{extra}')
        made.append(Pipeline(write_config(source=source_toml(sim.url), rules=rules, channels=channels, jobs=jobs),
                             clock))
        return made[-1]

    yield make
    for p in made:
        p.close()


def header(message: dict) -> str:
    return next(b["text"]["text"] for b in message["blocks"] if b["type"] == "header")


def step(p: Pipeline, clock: FakeClock) -> None:
    clock.advance(60)
    p.cycle()


def test_an_incident_is_one_thread_whose_parent_follows_it_across_a_restart(
        make_pipeline, sim, clock, slack_server) -> None:
    """First message posted; a second node and the recovery reply in its thread; the parent edited each time."""
    p = make_pipeline()
    p.cycle()
    (parent,) = slack_server.posts
    assert "thread_ts" not in parent.body and "DLI_SMS_GES" in parent.body["text"]

    sim.set_node_status("job_sms", "DIS_INPUT", "EXCEPTION")
    step(p, clock)
    reply = slack_server.posts[1]
    assert reply.body["thread_ts"] == parent.ts and "DIS_INPUT" in reply.body["text"]
    (edit,) = slack_server.updates
    assert edit.ts == parent.ts and "2 of 7 nodes in EXCEPTION" in header(edit.body)

    p.restart()  # the thread is in the state file, not in memory
    sim.set_node_status("job_sms", "DIS_INPUT", "NORMAL")
    sim.set_node_status("job_sms", "DLI_SMS_GES", "NORMAL")
    step(p, clock)
    step(p, clock)
    assert len(slack_server.posts) == 3 and slack_server.posts[2].body["thread_ts"] == parent.ts
    assert "reply_broadcast" not in slack_server.posts[2].body  # broadcast_resolved defaults to off
    assert len(slack_server.updates) == 2
    final = slack_server.message(parent.ts)
    assert final is not None and header(final).startswith(":white_check_mark: RESOLVED  job_sms: resolved after")
    assert final["attachments"][0]["color"] == SEVERITY_COLOR["resolved"]

    sim.set_node_status("job_sms", "DIS_INPUT", "EXCEPTION")  # a new incident: a new parent, not a reply
    step(p, clock)
    assert "thread_ts" not in slack_server.posts[3].body


def test_a_deleted_parent_makes_the_next_message_a_new_thread_that_says_so(
        make_pipeline, sim, clock, slack_server) -> None:
    p = make_pipeline()
    p.cycle()
    first = slack_server.posts[0]
    slack_server.delete_message(first.ts)
    sim.set_node_status("job_sms", "DIS_INPUT", "EXCEPTION")
    step(p, clock)
    fallback = slack_server.posts[1]
    assert "thread_ts" not in fallback.body and "The first message of this incident is gone" in fallback.body["text"]
    assert p.store.outbox.rows(("pending", "failed")) == ()  # degraded to a new post, not retried forever

    sim.set_node_status("job_sms", "DIS_INPUT", "NORMAL")
    step(p, clock)
    assert slack_server.posts[2].body["thread_ts"] == fallback.ts  # the new post is the thread now


def test_an_edit_slack_refuses_degrades_to_a_new_post(make_pipeline, sim, clock, slack_server) -> None:
    p = make_pipeline()
    p.cycle()
    slack_server.fail_next("cant_update_message", method="chat.update")
    sim.set_node_status("job_sms", "DIS_INPUT", "EXCEPTION")
    step(p, clock)
    assert len(slack_server.posts) == 2 and "thread_ts" not in slack_server.posts[1].body
    assert p.store.outbox.rows(("pending", "failed")) == ()


def test_mentions_go_in_the_first_message_only_and_resolve_can_be_broadcast(
        make_pipeline, sim, clock, slack_server) -> None:
    p = make_pipeline(extra='mention = { critical = ["<!subteam^S0123ABC>"] }\nbroadcast_resolved = true\n')
    p.cycle()
    assert "<!subteam^S0123ABC>" in slack_server.posts[0].body["text"]
    sim.set_node_status("job_sms", "DIS_INPUT", "EXCEPTION")
    step(p, clock)
    sim.set_node_status("job_sms", "DIS_INPUT", "NORMAL")
    sim.set_node_status("job_sms", "DLI_SMS_GES", "NORMAL")
    step(p, clock)
    replies = slack_server.posts[1:]
    assert replies and all("S0123ABC" not in str(r.body) for r in replies)
    assert all("S0123ABC" not in str(u.body) for u in slack_server.updates)
    assert replies[-1].body.get("reply_broadcast") is True
    assert all(not r.body.get("reply_broadcast") for r in replies[:-1])


def test_a_rule_can_post_to_another_slack_channel_through_the_same_entry(make_pipeline, slack_server) -> None:
    p = make_pipeline(NODE_EXCEPTION + 'slack_channel = "#payments"\n')
    p.cycle()
    assert [post.channel for post in slack_server.posts] == ["#payments"]


def test_thread_off_keeps_top_level_posts(make_pipeline, sim, clock, slack_server) -> None:
    p = make_pipeline(extra="thread = false\n")
    p.cycle()
    sim.set_node_status("job_sms", "DIS_INPUT", "EXCEPTION")
    step(p, clock)
    assert len(slack_server.posts) == 2 and not any("thread_ts" in post.body for post in slack_server.posts)
    assert slack_server.updates == []


@pytest.mark.parametrize("key", ["thread = true", "broadcast_resolved = true", 'app_token_env = "SLACK_APP_TOKEN"'])
def test_an_incoming_webhook_cannot_thread_and_says_why(key: str) -> None:
    import tomllib

    from notifier.strict_toml import TableReader

    table = tomllib.loads(f'type = "slack"\nwebhook_url_env = "SLACK_WEBHOOK_URL"\n{key}\n')
    with pytest.raises(ConfigError, match="incoming webhook cannot thread"):
        slack.TYPE.parse(TableReader(table, file="notifier.toml", where="channels.team"))


def test_two_entries_posting_to_one_slack_channel_are_paced_together(slack_server: SlackServer) -> None:
    pace = FakeClock()
    pacer = slack.Pacer(pace.sleep, pace.monotonic)
    settings = slack.SlackSettings(mode="token", channel="#ops", token_env="T", base_url=slack_server.base_url)
    a, b = (slack.create(name, settings, environ={"T": "xoxb-test"}, sleep=pace.sleep, monotonic=pace.monotonic)
            for name in ("a", "b"))
    for channel in (a, b):
        channel._pacer = pacer  # one process-wide pacer, as SHARED_PACER is in production
    a.send(fakes.notification({"text": "x"}, id=1, channel="a"))
    b.send(fakes.notification({"text": "y"}, id=2, channel="b"))
    a.send(fakes.notification({"text": "z", "channel": "#other"}, id=3, channel="a"))
    assert pace.sleeps == [1.0]  # b waited for a; the other Slack channel did not wait


# --- the pure core --------------------------------------------------------------------

RULE = Rule(name="node-exception", scope="node", channels=("team",), status=("EXCEPTION",), severity="critical")


def _firing(node: str, notified: int = 1) -> AlertState:
    return AlertState(fingerprint=f"fp-{node}", rule=RULE.name, job="job_sms", node=node, phase="firing",
                      active_since=START, fired_at=START, last_notified_at=START, state="EXCEPTION", notified=notified)


def _entities(*nodes: str) -> EntitiesByJob:
    nodes_ = (EntityState("job_sms", n, "EXCEPTION", START) for n in nodes)
    rows = [EntityState("job_sms", "", "NORMAL", START), *nodes_]
    return EntitiesByJob.group({e.key: e for e in rows})


def test_plan_opens_continues_and_closes() -> None:
    from tests.test_channel_slack import NODE
    group = MessageGroup("team", "job_sms", (NODE,))
    ids = iter(["i1", "i2"])
    states = {"fp-A": _firing("A")}
    first = plan_incidents((group,), {"team"}, {}, states, (RULE,), _entities("A"), START, lambda: next(ids))
    (conversation,) = first.conversations
    assert conversation is not None and conversation.opens and not conversation.closes
    assert [i.id for i in first.opened] == ["i1"] and first.closed == ()

    open_ = {i.key: i for i in first.opened}
    later = START + timedelta(minutes=5)
    second = plan_incidents((group,), {"team"}, open_, states, (RULE,), _entities("A"), later, lambda: next(ids))
    (conversation,) = second.conversations
    assert conversation is not None and not conversation.opens and conversation.incident.id == "i1"
    assert [a.node for a in conversation.current] == ["A"] and conversation.nodes == 1

    done = plan_incidents((group,), {"team"}, open_, {}, (RULE,), _entities(), later, lambda: next(ids))
    assert done.conversations[0] is not None and done.conversations[0].closes
    assert [i.id for i in done.closed] == ["i1"] and done.opened == ()


def test_plan_leaves_unthreaded_channels_and_unannounced_alerts_alone() -> None:
    from tests.test_channel_slack import NODE
    group = MessageGroup("team", "job_sms", (NODE,))
    plan = plan_incidents((group,), set(), {}, {"fp-A": _firing("A")}, (RULE,), _entities("A"), START, lambda: "x")
    assert plan.conversations == (None,) and plan.opened == ()
    # a silenced alert was never announced: a message about it opens nothing lasting
    quiet = plan_incidents((group,), {"team"}, {}, {"fp-A": _firing("A", notified=0)}, (RULE,), _entities("A"),
                           START, lambda: "x")
    assert quiet.opened == () and quiet.conversations[0] is not None and quiet.conversations[0].closes
    stale = Incident("old", "team", "", "job_sms", START)
    closed = plan_incidents((), {"team"}, {stale.key: stale}, {}, (RULE,), _entities(), START, lambda: "x")
    assert closed.closed == (stale,)


def test_an_incident_that_ends_silenced_still_shows_resolved_on_its_parent(
        make_pipeline, sim, clock, slack_server) -> None:
    """Silenced, the resolve is not posted; the parent is still edited, so the channel shows no stale CRITICAL."""
    from notifier.core.mutes import Matchers, Silence

    p = make_pipeline()
    p.cycle()
    parent = slack_server.posts[0]
    now = clock()
    p.store.silences.add(Silence(id="s1", matchers=Matchers(job="job_sms"), starts_at=now,
                                 ends_at=now + timedelta(hours=4), created_at=now, comment="test"))
    sim.set_node_status("job_sms", "DLI_SMS_GES", "NORMAL")
    step(p, clock)
    assert len(slack_server.posts) == 1
    (edit,) = slack_server.updates
    assert edit.ts == parent.ts and "RESOLVED" in header(edit.body)
    assert not any(b["type"] == "actions" for b in edit.body["blocks"])


def test_the_jobs_owner_and_the_rules_mentions_are_pinged_in_the_first_message(
        make_pipeline, sim, clock, slack_server) -> None:
    """The list API's owner is mapped through [slack.owners]; a rule's own mention joins the channel's."""
    p = make_pipeline(NODE_EXCEPTION + 'mention = ["<@U0RULE>"]\n', jobs="discover = true\ninclude = [\"job_sms\"]",
                      extra='[slack.owners]\nsimulator = "U0OWNER"\n')
    p.cycle()
    first = slack_server.posts[0].body
    assert "<@U0OWNER>" in first["text"] and "<@U0RULE>" in first["text"]
    sim.set_node_status("job_sms", "DIS_INPUT", "EXCEPTION")
    step(p, clock)
    assert "U0OWNER" not in str(slack_server.posts[1].body) and "U0RULE" not in str(slack_server.posts[1].body)


def test_routes_send_each_job_to_its_teams_slack_channel(make_pipeline, slack_server) -> None:
    p = make_pipeline(extra='routes = { "job_orders*" = "#orders", "job_s*" = "#sms-team" }\n')
    p.cycle()
    assert [post.channel for post in slack_server.posts] == ["#sms-team"]


@pytest.mark.parametrize(("extra", "where", "message"), [
    ('mention = { critical = ["@oncall"] }', "channels.team.mention", "Slack mention syntax"),
    ('mention = { urgent = ["<!here>"] }', "channels.team.mention", "unknown key"),
    ('allow = ["alice"]', "channels.team", "user ids"),
    ('routes = { "job_*" = "payments" }', "channels.team.routes", "Slack channel"),
    ('[slack.owners]\nalice = "alice@example.com"', "slack.owners", "Slack user id"),
    ('[slack]\napp_token_env = "A"\napp_token_file = "/run/x"', "slack", "not both"),
])
def test_bad_slack_settings_name_the_table_and_key(write_config, sim, extra, where, message) -> None:
    from notifier.config import load_config

    channels = f'[channels.team]\ntype = "slack"\nchannel = "#data-alerts"\n{extra}\n'
    path = write_config(source=source_toml(sim.url), rules=NODE_EXCEPTION, channels=channels)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert where in str(info.value) and message in str(info.value) and str(path) in str(info.value)


def test_a_bad_rule_slack_channel_or_mention_is_a_rule_file_error(write_config, sim) -> None:
    from notifier.runtime import load_runtime

    for bad, message in (('slack_channel = "payments"', "Slack channel"), ('mention = ["bob"]', "mention")):
        path = write_config(source=source_toml(sim.url), rules=NODE_EXCEPTION + bad + "\n",
                            channels='[channels.team]\ntype = "console"\n')
        with pytest.raises(ConfigError, match=message) as info:
            load_runtime(path)
        assert "rules.toml" in str(info.value)


def test_a_channel_named_by_name_and_by_id_is_paced_as_one(slack_server: SlackServer) -> None:
    """Top-level posts go to "#ops", replies to Slack's id for it: one pace, once Slack said they are the same."""
    pace = FakeClock()
    settings = slack.SlackSettings(mode="token", channel="#ops", token_env="T", base_url=slack_server.base_url)
    channel = slack.create("a", settings, environ={"T": "xoxb-test"}, sleep=pace.sleep, monotonic=pace.monotonic)
    channel.send(fakes.notification({"text": "x", "thread": {"id": "i", "opens": True}}, channel="a"))
    parent = ThreadRef(CHANNEL_ID, slack_server.posts[0].ts)  # where Slack said the parent went
    channel.send(replace(fakes.notification({"text": "y", "thread": {"id": "i"}}, id=2, channel="a"), parent=parent))
    assert pace.sleeps == [1.0] and slack_server.posts[1].body["thread_ts"] == parent.ts


def test_a_silence_or_ack_from_the_cli_is_drawn_on_the_parent_by_the_next_cycle(
        make_pipeline, sim, clock, slack_server) -> None:
    """The parent is a picture of the state file: `notifier ack` (or a click an older edit overwrote) shows up."""
    from notifier.silences import Ack

    p = make_pipeline()
    p.cycle()
    parent = slack_server.posts[0]
    (alert,) = p.store.load_alerts().values()
    p.store.silences.ack([Ack(alert.fingerprint, clock(), "carol", "looking")])
    step(p, clock)
    (edit,) = slack_server.updates
    assert edit.ts == parent.ts and "Acknowledged by carol" in str(edit.body)
    step(p, clock)
    assert len(slack_server.updates) == 1 and len(slack_server.posts) == 1  # drawn once, not every cycle


def test_a_rules_slack_channel_does_not_split_other_channels_messages() -> None:
    from notifier.core.cycle import group_alerts
    from tests.test_channel_slack import NODE

    plain = replace(NODE, channels=("team", "hook"))
    routed = replace(plain, route="#payments", fingerprint="f2", node="DIS_INPUT")
    grouping = group_alerts((plain, routed), ("team", "hook"), routed={"team"})
    by_channel = {(g.channel, g.route): len(g.alerts) for g in grouping.groups}
    assert by_channel == {("team", None): 1, ("team", "#payments"): 1, ("hook", None): 2}


def test_a_typo_of_mention_gets_a_did_you_mean(write_config, sim) -> None:
    from notifier.config import load_config

    channels = '[channels.team]\ntype = "slack"\nchannel = "#data-alerts"\nmentions = ["<!here>"]\n'
    with pytest.raises(ConfigError, match="did you mean 'mention'"):
        load_config(write_config(source=source_toml(sim.url), rules=NODE_EXCEPTION, channels=channels))
