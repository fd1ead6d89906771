"""Reliability campaigns, short: a few seeded SIGKILLs, a few faults, and the tools the campaigns judge with.

The full campaigns run behind ``make reliability`` (``reliability/``). Here the crash campaign
runs 8 kills (one per kill strategy) of the real ``notifier run`` against the simulator and a
real webhook receiver on 127.0.0.1, and must meet the same targets: nothing lost, nothing
spurious, duplicates only from kills and all removable by ``Idempotency-Key``, and an intact
state file after every kill. The fault campaign runs one source fault and one channel fault.
"""

from __future__ import annotations

import io
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from reliability import fault_campaign
from reliability.crash_campaign import (
    JOB_RULE,
    NODE_RULE,
    STRATEGIES,
    Result,
    Settings,
    expected_notifications,
    run_campaign,
    wal_torn,
)
from reliability.receiver import ChannelFault, Receiver

SEED = 20_240_610


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, str]:
    out = io.StringIO()
    result = run_campaign(Settings(kills=8, seed=SEED, interval=0.5, out=out, quiet=False,
                                   workdir=tmp_path_factory.mktemp("crash-campaign")))
    return result, out.getvalue()


@pytest.mark.slow
def test_crash_campaign_meets_every_target(campaign: tuple[Result, str]) -> None:
    """8 SIGKILLs at aimed moments, restarts, a settled last run: every target of the full campaign holds."""
    result, output = campaign
    assert result.ok, f"failed {[f.line() for f in result.failures()]}; replay with --seed {result.seed}\n{output}"
    assert result.value("kills") == 8
    assert result.value("lost") == 0 and result.value("spurious") == 0
    assert result.value("duplicates_after_dedup") == 0
    assert result.value("duplicates") <= result.value("kills")
    assert result.value("max_duplicates_per_kill") <= 1
    assert result.value("integrity_failures") == 0
    assert result.value("final_exit_code") == 0
    assert result.value("episodes") > 0 and result.value("notifications_after_dedup") > 0


@pytest.mark.slow
def test_crash_campaign_uses_every_strategy_and_prints_a_replayable_record(campaign: tuple[Result, str]) -> None:
    """The first kill hits the first start; then each strategy once; the seed and every kill time are printed."""
    result, output = campaign
    assert result.kills[0].strategy == "first-start"
    assert sorted(k.strategy for k in result.kills[1:]) == sorted(STRATEGIES)
    assert f"--seed {SEED}" in output
    assert all(f'"kill": {k.n}, "t": {round(k.t, 3)}' in output for k in result.kills)
    sent_unmarked = [k for k in result.kills if k.strategy == "in-flight"]
    assert sent_unmarked and all(k.sent_unmarked == 1 for k in sent_unmarked), "in-flight kills land after the send"


@pytest.mark.slow
def test_fault_campaign_survives_a_5xx_burst_and_a_failing_webhook(tmp_path: Path) -> None:
    """A 503 burst from the source: one source-down fired and resolved, job alerts untouched, cycles bounded;
    a webhook answering 500: queued, then delivered in order, the other channel unaffected."""
    out = io.StringIO()
    result = fault_campaign.run_campaign(fault_campaign.Settings(
        seed=SEED, interval=0.5, workdir=tmp_path / "faults", out=out, only=("5xx burst", "webhook 500")))
    assert [p.name for p in result.phases] == ["5xx burst (503)", "webhook 500"]
    assert result.ok, out.getvalue()
    source, channel = result.phases
    assert source.checks["source-down fired"] == (1, True) and source.checks["source-down resolved"] == (1, True)
    assert source.checks["job notifications sent"] == (0, True)
    assert channel.checks["lost"] == (0, True) and channel.checks["hook answers refused (the fault happened)"][1]
    assert result.value("final_exit_code") == 0


def test_receiver_answers_as_the_channel_fault_says() -> None:
    """Scripted answers: 500 twice (with Retry-After), then 200 again; only 2xx answers count as delivered."""
    with Receiver() as receiver:
        receiver.set_fault(ChannelFault(status=500, retry_after=3, times=2))
        answers = [httpx.post(receiver.url, json={"n": n}, headers={"Idempotency-Key": f"k-{n}"}) for n in range(3)]
    assert [a.status_code for a in answers] == [500, 500, 200]
    assert answers[0].headers["retry-after"] == "3"
    assert [r.delivered for r in receiver.requests] == [False, False, True]


def test_expected_notifications_follow_exception_episodes_only() -> None:
    """Entering EXCEPTION is one firing, leaving it one resolved; NORMAL <-> STOPPED implies nothing."""
    sequences = {("job", "N"): ["NORMAL", "STOPPED", "EXCEPTION", "STOPPED", "NORMAL", "EXCEPTION"],
                 ("job", ""): ["NORMAL", "EXCEPTION", "NORMAL"]}
    assert expected_notifications(sequences) == {(NODE_RULE, "job", "N"): ["firing", "resolved", "firing"],
                                                 (JOB_RULE, "job", ""): ["firing", "resolved"]}


def test_receiver_does_not_count_a_request_cut_short() -> None:
    """A sender killed between headers and body delivered nothing: the receiver records no request."""
    with Receiver() as receiver:
        host, port = receiver.url.split("//")[1].split("/")[0].split(":")
        with socket.create_connection((host, int(port))) as conn:
            conn.sendall(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nIdempotency-Key: k-1\r\n\r\n{\"a\"")
        assert _poll(lambda: receiver.incomplete == 1), "the receiver never saw the short request end"
        assert receiver.requests == []


def test_wal_torn_sees_a_transaction_without_its_commit_frame(tmp_path: Path) -> None:
    """The WAL check the campaign reports: a committed WAL is whole; clearing the commit mark makes it torn."""
    db = tmp_path / "x.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.execute("INSERT INTO t VALUES ('x')")
    wal = Path(f"{db}-wal")
    assert not wal_torn(wal)
    data = bytearray(wal.read_bytes())
    page_size = int.from_bytes(data[8:12], "big")
    last = 32 + ((len(data) - 32) // (24 + page_size) - 1) * (24 + page_size)
    data[last + 4:last + 8] = b"\0\0\0\0"  # the last frame no longer closes its transaction
    torn = tmp_path / "torn-wal"
    torn.write_bytes(bytes(data))
    conn.close()
    assert wal_torn(torn)


def _poll(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll an effect of another thread until it shows (True) or the deadline passes (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
