"""The ledger's budget reservations and the failure memory, on real SQLite and real files.

Reservations are what keep the daily budget under concurrency (issue 7 §4): the read of today's
spent + reserved and the insert are one `BEGIN IMMEDIATE` transaction; a run's final row replaces
its reservations in one transaction; an open reservation of a killed run stops counting when it
expires, a settled one does not.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from aitherctl.routing.ledger import Ledger, LedgerRow
from aitherctl.routing.probes import FailureMemory, forget_backend
from aitherctl.routing.table import Candidate

DAY = 1_000_000.0  # "today" starts here in these tests


@pytest.fixture(autouse=True)
def _private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AITHER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("AITHER_STATE_DIR", str(tmp_path / "state"))


def _row(cost: float, ts: float = DAY + 10) -> LedgerRow:
    return LedgerRow(
        ts=ts,
        profile="p",
        effort=5,
        tier="t",
        backend="cloud",
        model="m",
        local=False,
        tokens_in=10,
        tokens_out=5,
        cost_usd=cost,
        ttft_s=0.1,
        total_s=0.2,
        outcome="ok",
        attempts=1,
        prompt_sha256=None,
    )


def test_reserve_refuses_past_the_cap_counting_open_reservations(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    first = ledger.reserve("run-a", 0.4, 1.0, since_ts=DAY, now=DAY + 1, ttl_s=600)
    second = ledger.reserve("run-b", 0.4, 1.0, since_ts=DAY, now=DAY + 2, ttl_s=600)
    third = ledger.reserve("run-c", 0.4, 1.0, since_ts=DAY, now=DAY + 3, ttl_s=600)
    assert first.granted
    assert second.granted
    assert not third.granted
    assert third.committed.reserved_usd == pytest.approx(0.8)
    committed = ledger.committed_since(DAY, DAY + 4)
    assert (committed.spent_usd, committed.reserved_usd) == (0.0, pytest.approx(0.8))


def test_settle_then_record_replaces_the_reservation_with_the_row(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    held = ledger.reserve("run-a", 0.5, 1.0, since_ts=DAY, now=DAY + 1, ttl_s=600)
    assert held.reservation_id is not None
    ledger.settle(held.reservation_id, 0.1)
    # Settled: counts as spent (the real cost), no longer as reserved.
    assert ledger.committed_since(DAY, DAY + 2).spent_usd == pytest.approx(0.1)
    assert ledger.committed_since(DAY, DAY + 2).reserved_usd == 0
    ledger.record(_row(0.1), "run-a")
    committed = ledger.committed_since(DAY, DAY + 2)
    assert committed.spent_usd == pytest.approx(0.1)  # once, not twice
    with sqlite3.connect(tmp_path / "l.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM reservations").fetchone() == (0,)
    # Now there is room for 0.9 more, not for 1.0.
    assert ledger.reserve("run-b", 0.9, 1.0, since_ts=DAY, now=DAY + 3, ttl_s=600).granted
    assert not ledger.reserve("run-c", 0.01, 1.0, since_ts=DAY, now=DAY + 4, ttl_s=600).granted


def test_open_reservation_of_a_killed_run_expires_settled_one_stays(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    ledger.reserve("killed", 0.6, 1.0, since_ts=DAY, now=DAY + 1, ttl_s=600)
    settled = ledger.reserve("killed-later", 0.3, 1.0, since_ts=DAY, now=DAY + 2, ttl_s=600)
    assert settled.reservation_id is not None
    ledger.settle(settled.reservation_id, 0.3)
    # Before the expiry the open reservation still blocks...
    assert not ledger.reserve("next", 0.2, 1.0, since_ts=DAY, now=DAY + 500, ttl_s=600).granted
    # ...after it, it no longer does; the settled (real) cost still counts.
    after = ledger.committed_since(DAY, DAY + 602)
    assert (after.spent_usd, after.reserved_usd) == (pytest.approx(0.3), 0.0)
    assert ledger.reserve("next", 0.7, 1.0, since_ts=DAY, now=DAY + 602, ttl_s=600).granted


def test_yesterday_does_not_count(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    ledger.record(_row(0.9, ts=DAY - 5))
    assert ledger.committed_since(DAY, DAY + 1).total_usd == 0
    assert ledger.reserve("r", 0.9, 1.0, since_ts=DAY, now=DAY + 1, ttl_s=600).granted


def test_reading_creates_nothing(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "data" / "l.sqlite3")
    assert ledger.committed_since(0, 1).total_usd == 0
    assert ledger.rows_since(0) == []
    assert not (tmp_path / "data").exists()


def _candidate(url: str, name: str) -> Candidate:
    return Candidate(
        name=name, origin="endpoint", engine="llamacpp", base_url=url, model="m", local=True
    )


def test_forget_backend_drops_every_loopback_spelling_of_that_port() -> None:
    memory = FailureMemory()
    memory.remember(_candidate("http://127.0.0.1:8090/v1", "a"), "connection refused")
    memory.remember(_candidate("http://localhost:8090/v1", "b"), "timeout")
    memory.remember(_candidate("http://[::1]:8090/v1", "c"), "timeout")
    memory.remember(_candidate("http://127.0.0.1:8091/v1", "d"), "connection refused")
    memory.remember(_candidate("http://192.168.1.5:8090/v1", "e"), "connection refused")
    everything = [
        _candidate(u, n)
        for u, n in (
            ("http://127.0.0.1:8090/v1", "a"),
            ("http://localhost:8090/v1", "b"),
            ("http://[::1]:8090/v1", "c"),
            ("http://127.0.0.1:8091/v1", "d"),
            ("http://192.168.1.5:8090/v1", "e"),
        )
    ]
    assert set(memory.recent(everything, 30)) == {"a", "b", "c", "d", "e"}

    forget_backend("0.0.0.0", 8090)  # a wildcard bind: the service answers on loopback

    assert set(memory.recent(everything, 30)) == {"d", "e"}
    forget_backend("192.168.1.5", 8090)
    assert set(memory.recent(everything, 30)) == {"d"}
    forget_backend("localhost", 9999)  # nothing remembered there: nothing changes
    assert set(memory.recent(everything, 30)) == {"d"}


def test_forget_backend_without_a_memory_file_creates_none(tmp_path: Path) -> None:
    forget_backend("127.0.0.1", 8090)
    assert not (tmp_path / "state").exists()


def test_an_open_reader_never_makes_a_reservation_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process reading the ledger (`usage`, a user's sqlite3 shell in a transaction)
    while `serve` reserves: with the rollback journal the reservation's commit waited for the
    reader and failed with "database is locked"; in WAL mode it goes through at once."""
    import aitherctl.routing.ledger as ledger_module

    monkeypatch.setattr(ledger_module, "BUSY_TIMEOUT_S", 1.0)  # fail fast if it would block
    path = tmp_path / "l.sqlite3"
    ledger = Ledger(path)
    ledger.record(_row(0.1))
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT COUNT(*) FROM requests").fetchone() == (1,)
        granted = ledger.reserve("run-a", 0.2, 1.0, since_ts=DAY, now=DAY + 20, ttl_s=600)
        assert granted.granted
        ledger.record(_row(0.3), "run-a")
        assert reader.execute("SELECT COUNT(*) FROM requests").fetchone() == (1,)  # its snapshot
        reader.execute("COMMIT")
        assert reader.execute("SELECT COUNT(*) FROM requests").fetchone() == (2,)
    finally:
        reader.close()
    assert ledger.committed_since(DAY, DAY + 30).total_usd == pytest.approx(0.4)
