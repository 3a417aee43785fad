"""The usage ledger: one SQLite row per `aitherctl run` request, and the budget's reservations.

Lives in the user's data folder (`~/.local/share/aitherctl/ledger.sqlite3`, or `$AITHER_DATA_DIR`),
the folder 0700 and the file 0600: only its owner can read what was asked. The prompt is stored as
a SHA-256 hash; its text only when the profile says `ledger: {store_prompts: true}`. API keys are
never written. Inspect it with `sqlite3 ~/.local/share/aitherctl/ledger.sqlite3 'select * from
requests'`.

The daily budget holds whatever runs at once: before a priced request is sent, its worst case is
reserved in one `BEGIN IMMEDIATE` transaction (read today's spent and reserved, refuse when the
cap would be passed, insert the reservation), so two runs can never both see the same room. After
the request the reservation is settled with the real cost, and the run's final row replaces its
reservations in one transaction. A reservation still open `expires_ts` after it was taken (its
process was killed) stops counting then; until then it counts in full. A settled one counts until
the day ends even if its run never wrote its row.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeGuard

from aitherctl.errors import AitherError
from aitherctl.paths import data_dir

LEDGER_FILE = "ledger.sqlite3"
# A rented node's cost (aitherctl.nodes.operations.accrue): a `requests` row with this outcome,
# `backend` the node, `total_s` the seconds billed; it counts in the money, not as a request.
NODE_OUTCOME = "node"
SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,               -- unix time the request started
    profile TEXT,
    effort INTEGER,
    tier TEXT,
    backend TEXT,                   -- the backend that answered (or failed last)
    model TEXT,
    local INTEGER,                  -- 1 when that backend is on this machine
    tokens_in INTEGER,
    tokens_out INTEGER,
    cost_usd REAL NOT NULL DEFAULT 0,
    ttft_s REAL,
    total_s REAL,
    outcome TEXT NOT NULL,          -- ok, partial, failed, budget
    attempts INTEGER NOT NULL DEFAULT 1,
    prompt_sha256 TEXT,
    prompt TEXT,                    -- only with ledger.store_prompts: true
    client TEXT,                    -- who asked: `run`, or the gateway's API key name / address
    priority TEXT,                  -- interactive, normal or batch (through the gateway)
    queue_wait_s REAL,              -- time waiting for a place in the backend's queue
    load_wait_s REAL                -- time waiting for the backend to be loaded
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
CREATE TABLE IF NOT EXISTS reservations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,           -- the run that holds it; its final row replaces it
    ts REAL NOT NULL,               -- unix time it was taken
    expires_ts REAL NOT NULL,       -- still open then: its process died, it stops counting
    amount_usd REAL NOT NULL,       -- the worst case while open, the real cost once settled
    settled INTEGER NOT NULL DEFAULT 0,
    backend TEXT,
    pid INTEGER
);
CREATE INDEX IF NOT EXISTS reservations_ts ON reservations (ts);
"""
BUSY_TIMEOUT_S = 30.0


def prompt_hash(system: str | None, prompt: str) -> str:
    import hashlib  # written after the answer: not worth OpenSSL's start-up on every `run`

    digest = hashlib.sha256()
    digest.update((system or "").encode("utf-8"))
    digest.update(b"\x00")
    digest.update(prompt.encode("utf-8"))
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One request in the usage ledger: when, and for which profile; its effort, tier, backend
    and model; its tokens, cost, timings and outcome; its prompt's hash (its text only if
    stored)."""

    ts: float
    profile: str | None
    effort: int | None
    tier: str | None
    backend: str | None
    model: str | None
    local: bool | None
    tokens_in: int | None
    tokens_out: int | None
    cost_usd: float
    ttft_s: float | None
    total_s: float | None
    outcome: str
    attempts: int
    prompt_sha256: str | None
    prompt: str | None = None
    client: str | None = None
    priority: str | None = None
    queue_wait_s: float | None = None
    load_wait_s: float | None = None


_COLUMNS = (
    "ts",
    "profile",
    "effort",
    "tier",
    "backend",
    "model",
    "local",
    "tokens_in",
    "tokens_out",
    "cost_usd",
    "ttft_s",
    "total_s",
    "outcome",
    "attempts",
    "prompt_sha256",
    "prompt",
    "client",
    "priority",
    "queue_wait_s",
    "load_wait_s",
)
# Added after the first release: a ledger written by an older version gets them on first write.
_LATER_COLUMNS = {
    "client": "TEXT",
    "priority": "TEXT",
    "queue_wait_s": "REAL",
    "load_wait_s": "REAL",
}


@dataclass(frozen=True, slots=True)
class Committed:
    """Today's money as the ledger holds it: spent (finished requests and settled attempts) and
    reserved (worst cases of requests in flight)."""

    spent_usd: float
    reserved_usd: float

    @property
    def total_usd(self) -> float:
        return self.spent_usd + self.reserved_usd


@dataclass(frozen=True, slots=True)
class Reservation:
    """The answer to a reservation: granted (with its row id) or refused."""

    granted: bool
    reservation_id: int | None
    committed: Committed  # before this reservation


def start_of_local_day(now: float) -> float:
    """The budget is per calendar day in local time, reset at midnight."""
    moment = datetime.fromtimestamp(now).astimezone()
    return moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def _has_requests(db: sqlite3.Connection | None) -> TypeGuard[sqlite3.Connection]:
    """Whether the ledger file exists and has its table (reading never creates either)."""
    return db is not None and bool(
        db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'requests'"
        ).fetchone()
    )


def _committed(db: sqlite3.Connection, since_ts: float, now: float) -> Committed:
    (spent,) = db.execute(
        "SELECT COALESCE(SUM(cost_usd), 0) FROM requests WHERE ts >= ?", (since_ts,)
    ).fetchone()
    has_reservations = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'reservations'"
    ).fetchone()
    if not has_reservations:
        return Committed(float(spent), 0.0)
    settled, reserved = db.execute(
        "SELECT COALESCE(SUM(CASE WHEN settled THEN amount_usd END), 0), "
        "COALESCE(SUM(CASE WHEN NOT settled AND expires_ts > ? THEN amount_usd END), 0) "
        "FROM reservations WHERE ts >= ?",
        (now, since_ts),
    ).fetchone()
    return Committed(float(spent) + float(settled), float(reserved))


def _add_later_columns(db: sqlite3.Connection) -> None:
    present = {row[1] for row in db.execute("PRAGMA table_info(requests)")}
    for column, kind in _LATER_COLUMNS.items():
        if column not in present:
            db.execute(f"ALTER TABLE requests ADD COLUMN {column} {kind}")


class Ledger:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or data_dir() / LEDGER_FILE
        self._ready = False  # the schema and WAL mode are set (once per Ledger, not per batch)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in autocommit mode: writers open their own `BEGIN IMMEDIATE`."""
        # umask 077 while SQLite works: the file and its transient journal (which holds page
        # copies, prompts included) are created readable by their owner alone.
        previous = os.umask(0o077)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fresh = not self.path.exists()
            if fresh:
                fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
                os.close(fd)
            elif self.path.stat().st_mode & 0o077:
                os.chmod(self.path, 0o600)
            connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            try:
                if fresh or not self._ready:
                    # WAL: a reader (`usage`, the monitor, a user's sqlite3 shell) never blocks
                    # a reservation's commit, as it did with the rollback journal ("database is
                    # locked" after the busy timeout). Kept in the file; a no-op once set.
                    with suppress(sqlite3.OperationalError):  # busy now: switched next time
                        connection.execute("PRAGMA journal_mode=WAL")
                    connection.executescript(SCHEMA)
                    _add_later_columns(connection)
                    self._ready = True
                yield connection
            except sqlite3.Error as exc:
                raise AitherError(f"usage ledger {self.path}: {exc}") from None
            finally:
                connection.close()
        finally:
            os.umask(previous)

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection | None]:
        """A read-only connection that creates and changes nothing (None when there is no
        ledger yet): what `run --explain` and `usage` use."""
        if not self.path.exists():
            yield None
            return
        # A reader of a WAL database may create its `-wal` and `-shm` files: owner-only too.
        previous = os.umask(0o077)
        try:
            connection = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S
            )
        except sqlite3.Error as exc:
            os.umask(previous)
            raise AitherError(f"usage ledger {self.path}: {exc}") from None
        try:
            yield connection
        except sqlite3.Error as exc:
            raise AitherError(f"usage ledger {self.path}: {exc}") from None
        finally:
            connection.close()
            os.umask(previous)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def reserve(  # noqa: PLR0917 - one call site, names at it
        self,
        run_id: str,
        amount_usd: float,
        cap_usd: float,
        since_ts: float,
        now: float,
        ttl_s: float,
        backend: str | None = None,
    ) -> Reservation:
        """Reserve `amount_usd` if today's spent + reserved + it stays within `cap_usd`; the read
        and the insert are one transaction, so concurrent runs are serialised here."""
        with self._transaction() as db:
            committed = _committed(db, since_ts, now)
            if committed.total_usd + amount_usd > cap_usd:
                return Reservation(False, None, committed)
            cursor = db.execute(
                "INSERT INTO reservations (run_id, ts, expires_ts, amount_usd, settled, backend, "
                "pid) VALUES (?, ?, ?, ?, 0, ?, ?)",
                (run_id, now, now + ttl_s, amount_usd, backend, os.getpid()),
            )
            return Reservation(True, cursor.lastrowid, committed)

    def settle(self, reservation_id: int, cost_usd: float) -> None:
        """The attempt is over: its reservation now holds what it really cost."""
        with self._transaction() as db:
            db.execute(
                "UPDATE reservations SET amount_usd = ?, settled = 1 WHERE id = ?",
                (cost_usd, reservation_id),
            )

    def committed_since(self, since_ts: float, now: float) -> Committed:
        """Spent and reserved since `since_ts`, read without writing anything."""
        with self._read() as db:
            if not _has_requests(db):
                return Committed(0.0, 0.0)
            return _committed(db, since_ts, now)

    def record(self, row: LedgerRow, run_id: str | None = None) -> None:
        """Write the run's row; its reservations (settled into the row's cost) go in the same
        transaction, so its money is never counted twice nor dropped for a moment."""
        values = tuple(
            int(v) if isinstance(v, bool) else v for v in (getattr(row, c) for c in _COLUMNS)
        )
        placeholders = ", ".join("?" for _ in _COLUMNS)
        with self._transaction() as db:
            db.execute(
                f"INSERT INTO requests ({', '.join(_COLUMNS)}) VALUES ({placeholders})", values
            )
            if run_id is not None:
                db.execute("DELETE FROM reservations WHERE run_id = ?", (run_id,))

    def record_many(self, rows: Sequence[tuple[LedgerRow, str | None]]) -> None:
        """Several finished requests' rows, each with the run id its reservations were taken
        under, in one transaction (the gateway batches them): as `record`, each row replaces
        its reservations."""
        placeholders = ", ".join("?" for _ in _COLUMNS)
        with self._transaction() as db:
            db.executemany(
                f"INSERT INTO requests ({', '.join(_COLUMNS)}) VALUES ({placeholders})",
                [
                    tuple(
                        int(v) if isinstance(v, bool) else v
                        for v in (getattr(row, c) for c in _COLUMNS)
                    )
                    for row, _run_id in rows
                ],
            )
            db.executemany(
                "DELETE FROM reservations WHERE run_id = ?",
                [(run_id,) for _row, run_id in rows if run_id is not None],
            )

    def spent_since(self, since_ts: float, now: float | None = None) -> float:
        """Money spent since `since_ts` (finished requests and settled attempts)."""
        return self.committed_since(since_ts, time.time() if now is None else now).spent_usd

    def last_local_use(self) -> dict[tuple[str, str, str], float]:
        """When each service of this machine last answered a request (`ok` or `partial`, from
        `run` or `serve`): (profile, backend, served model) → the newest row's `ts`."""
        with self._read() as db:
            if not _has_requests(db):
                return {}
            cursor = db.execute(
                "SELECT profile, backend, model, MAX(ts) FROM requests WHERE local = 1 AND "
                "outcome IN ('ok', 'partial') AND profile IS NOT NULL AND backend IS NOT NULL "
                "GROUP BY profile, backend, model"
            )
            return {
                (str(profile), str(backend), str(model or "")): float(ts)
                for profile, backend, model, ts in cursor.fetchall()
            }

    def rows_since(self, since_ts: float) -> list[LedgerRow]:
        with self._read() as db:
            if not _has_requests(db):
                return []
            present = {row[1] for row in db.execute("PRAGMA table_info(requests)")}
            columns = [c for c in _COLUMNS if c in present]  # an older ledger lacks some
            cursor = db.execute(
                f"SELECT {', '.join(columns)} FROM requests WHERE ts >= ? ORDER BY ts",
                (since_ts,),
            )
            rows = cursor.fetchall()
        result = []
        for values in rows:
            item = dict(zip(columns, values, strict=True))
            item["local"] = None if item["local"] is None else bool(item["local"])
            result.append(LedgerRow(**item))
        return result
