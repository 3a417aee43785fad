"""This machine's records of the instances it rented: one small JSON file per instance under
the state folder (`$AITHER_STATE_DIR/nodes/`, else ~/.local/state/aitherctl/nodes/), each written
atomically (a temporary file, fsync, rename, fsync of the folder), so a crash at any moment
leaves either the old record or the new one, never half of one."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from aitherctl.nodes.model import NodeRecord, NodeState


def nodes_dir() -> Path:
    from aitherctl.paths import state_dir

    return state_dir() / "nodes"


def machine_name() -> str:
    """How this machine signs its instances' labels: its host name, plus the namespace when one
    is set (test sessions), so one session never adopts another's instances."""
    import socket

    name = socket.gethostname().split(".")[0].lower() or "machine"
    name = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name)
    namespace = os.environ.get("AITHER_NAMESPACE") or "default"
    return name if namespace == "default" else f"{name}.{namespace}"


class NodeRecords:
    """The records in one folder (tests give a temporary one)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or nodes_dir()

    def path(self, record_id: str) -> Path:
        return self.folder / f"{record_id}.json"

    def write(self, record: NodeRecord) -> NodeRecord:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = asdict(record)
        data["state"] = record.state.value
        text = json.dumps(data, sort_keys=True, indent=1)
        temporary = self.folder / f".{record.id}.tmp"
        # 0600: a record holds the key the node's engine requires.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path(record.id))
        with contextlib.suppress(OSError):  # the rename itself durable (not on every system)
            fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return record

    def update(self, record: NodeRecord, **changes: Any) -> NodeRecord:
        return self.write(replace(record, **changes))

    def all(self) -> list[NodeRecord]:
        """Every record, oldest first; an unreadable file is skipped (and named by `broken`)."""
        found = []
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else ():
            record = _read(path)
            if record is not None:
                found.append(record)
        return sorted(found, key=lambda record: (record.created_at, record.id))

    def broken(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return [path for path in sorted(self.folder.glob("*.json")) if _read(path) is None]

    def forget(self, record: NodeRecord) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(record.id).unlink()


def _read(path: Path) -> NodeRecord | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["state"] = NodeState(data["state"])
        return NodeRecord(**data)
    except (OSError, ValueError, TypeError, KeyError):
        return None
