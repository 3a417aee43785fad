"""The switch journal: one JSON line per switch, rollback, `up` and `down`, in the state folder.

Read by the monitor's log pane. It is a history, never a source of truth: what runs is always read
back from the containers' labels.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aitherctl.paths import state_dir

KEEP_LINES = 500


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One line of the switch journal: when, what ran (switch, rollback, up or down), for which
    profile, and what it did."""

    ts: float
    kind: str  # switch, rollback, up, down
    profile: str | None
    message: str


def journal_path() -> Path:
    return state_dir() / "journal.jsonl"


def record(kind: str, profile: str | None, message: str) -> None:
    """Append one entry; a journal that cannot be written never fails the operation."""
    path = journal_path()
    line = json.dumps({"ts": time.time(), "kind": kind, "profile": profile, "message": message})
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        if path.stat().st_size > KEEP_LINES * 400:
            lines = path.read_text(encoding="utf-8").splitlines()[-KEEP_LINES:]
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def recent(limit: int = 50) -> Sequence[JournalEntry]:
    try:
        lines = journal_path().read_text(encoding="utf-8").splitlines()[-limit:]
    except OSError:
        return []
    entries = []
    for line in lines:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            item = json.loads(line)
            entries.append(
                JournalEntry(
                    float(item["ts"]), str(item["kind"]), item.get("profile"), str(item["message"])
                )
            )
    return entries
