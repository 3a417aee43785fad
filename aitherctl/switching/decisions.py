"""The commit decision of a switch across several hosts, kept on this machine.

A switch that spans hosts commits by writing a commit record on each host's engine, one after
the other. A crash (power, SIGKILL) between two of those writes would leave one host finishing
and another rolling back on `aitherctl recover`: two halves of different profiles. So the
switch first writes its decision here, the classic coordinator's log of a two-phase commit:
the transaction IDs of every host's part, written atomically (temporary file, fsync, rename)
before the first commit record. `recover` on any of those hosts then finishes a part that has
no commit record of its own when this machine decided to commit it. The file goes once every
host's part has finished, or at once when the commit is abandoned before it was decided.

It lives in this machine's state folder: recovering from another machine falls back to each
engine's own records (a part without a commit record is rolled back there).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

FOLDER = "decisions"


def _folder() -> Path:
    from aitherctl.paths import state_dir

    return state_dir() / FOLDER


def decide_commit(txns: Iterable[str]) -> Path:
    """Record that the parts `txns` are committed; returns the file to `forget` later."""
    ids = sorted(txns)
    folder = _folder()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ids[0]}.json"
    temporary = path.with_suffix(".tmp")
    with temporary.open("w") as handle:
        json.dump({"commit": ids}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
    with contextlib.suppress(OSError):  # the rename itself, durable where the folder can sync
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    return path


def forget(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def committed(txn: str) -> bool:
    """Whether this machine decided to commit the part `txn` (unreadable files count as no)."""
    try:
        files = list(_folder().glob("*.json"))
    except OSError:
        return False
    for file in files:
        try:
            if txn in json.loads(file.read_text()).get("commit", ()):
                return True
        except (OSError, ValueError, AttributeError):
            continue
    return False


def forget_finished(txn: str) -> None:
    """Mark the part `txn` finished; its decision goes once every part it names is."""
    folder = _folder()
    try:
        files = list(folder.glob("*.json"))
    except OSError:
        return
    for file in files:
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError):
            continue
        ids = data.get("commit", [])
        if txn not in ids:
            continue
        done = sorted({*data.get("finished", []), txn})
        if set(done) >= set(ids):
            forget(file)
        else:
            temporary = file.with_suffix(".tmp")
            temporary.write_text(json.dumps({"commit": ids, "finished": done}))
            temporary.replace(file)
