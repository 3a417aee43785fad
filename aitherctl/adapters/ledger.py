"""The usage ledger: one SQLite row per `aitherctl run` request.

Lives in the user's data folder (`~/.local/share/aitherctl/ledger.sqlite3`, or `$AITHER_DATA_DIR`),
the folder 0700 and the file 0600: only its owner can read what was asked. The prompt is stored as
a SHA-256 hash; its text only when the profile says `ledger: {store_prompts: true}`. API keys are
never written. Inspect it with `sqlite3 ~/.local/share/aitherctl/ledger.sqlite3 'select * from
requests'`.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from aitherctl.adapters.paths import data_dir

LEDGER_FILE = "ledger.sqlite3"
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
    prompt TEXT                     -- only with ledger.store_prompts: true
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
"""


def prompt_hash(system: str | None, prompt: str) -> str:
    digest = hashlib.sha256()
    digest.update((system or "").encode("utf-8"))
    digest.update(b"\x00")
    digest.update(prompt.encode("utf-8"))
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class LedgerRow:
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


_COLUMNS = (
    "ts", "profile", "effort", "tier", "backend", "model", "local", "tokens_in", "tokens_out",
    "cost_usd", "ttft_s", "total_s", "outcome", "attempts", "prompt_sha256", "prompt",
)


def start_of_local_day(now: float) -> float:
    """The budget is per calendar day in local time, reset at midnight."""
    moment = datetime.fromtimestamp(now).astimezone()
    return moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


class Ledger:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or data_dir() / LEDGER_FILE

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # umask 077 while SQLite works: the file and its transient journal (which holds page
        # copies, prompts included) are created readable by their owner alone.
        previous = os.umask(0o077)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not self.path.exists():
                fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
                os.close(fd)
            elif self.path.stat().st_mode & 0o077:
                os.chmod(self.path, 0o600)
            connection = sqlite3.connect(self.path, timeout=5.0)
            try:
                connection.executescript(SCHEMA)
                yield connection
                connection.commit()
            finally:
                connection.close()
        finally:
            os.umask(previous)

    def record(self, row: LedgerRow) -> None:
        values = tuple(
            int(v) if isinstance(v, bool) else v for v in (getattr(row, c) for c in _COLUMNS)
        )
        placeholders = ", ".join("?" for _ in _COLUMNS)
        with self._connect() as db:
            db.execute(
                f"INSERT INTO requests ({', '.join(_COLUMNS)}) VALUES ({placeholders})", values
            )

    def spent_since(self, since_ts: float) -> float:
        if not self.path.exists():
            return 0.0
        with self._connect() as db:
            (total,) = db.execute(
                "SELECT COALESCE(SUM(cost_usd), 0) FROM requests WHERE ts >= ?", (since_ts,)
            ).fetchone()
        return float(total)

    def rows_since(self, since_ts: float) -> list[LedgerRow]:
        if not self.path.exists():
            return []
        with self._connect() as db:
            cursor = db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM requests WHERE ts >= ? ORDER BY ts",
                (since_ts,),
            )
            rows = cursor.fetchall()
        result = []
        for values in rows:
            item = dict(zip(_COLUMNS, values, strict=True))
            item["local"] = None if item["local"] is None else bool(item["local"])
            result.append(LedgerRow(**item))
        return result
