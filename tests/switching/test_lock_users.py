"""The switch lock is one per engine for every user of the machine, `sudo` included: root and an
ordinary user (`nobody`) choose the same folder and exclude each other. Needs root (to run a
process as `nobody`) and setpriv; skipped otherwise. Uses the machine's real lock folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or not Path("/usr/bin/python3").exists(),
    reason="needs root, setpriv and /usr/bin/python3 to act as a second user",
)


def as_nobody(code: str) -> subprocess.CompletedProcess[str]:
    """`code` in a process of user nobody (the system Python: the project's virtualenv may live
    in root's home); aitherctl's lock needs only the standard library."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": "/nonexistent"}
    return subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            code,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )


def test_root_and_another_user_choose_the_same_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    from aitherctl.paths import machine_dir

    monkeypatch.delenv("AITHER_MACHINE_DIR", raising=False)
    mine = machine_dir()
    theirs = as_nobody("from aitherctl.paths import machine_dir; print(machine_dir())")
    assert theirs.returncode == 0, theirs.stderr
    assert theirs.stdout.strip() == str(mine)


def test_a_lock_held_by_root_keeps_another_user_out(monkeypatch: pytest.MonkeyPatch) -> None:
    from aitherctl.switching.lock import switch_lock

    monkeypatch.delenv("AITHER_MACHINE_DIR", raising=False)
    engine_id = f"test-{uuid.uuid4().hex}"
    code = (
        "from aitherctl.errors import BusyError\n"
        "from aitherctl.switching.lock import switch_lock\n"
        "try:\n"
        f"    with switch_lock({engine_id!r}, 'default', timeout_s=0.5):\n"
        "        print('got it')\n"
        "except BusyError as exc:\n"
        "    print('busy:', exc.message)\n"
    )
    with switch_lock(engine_id, "default", timeout_s=5):
        blocked = as_nobody(code)
    assert blocked.returncode == 0, blocked.stderr
    assert blocked.stdout.startswith("busy: another switch is still running")
    free = as_nobody(code)
    assert free.stdout.strip() == "got it", free.stderr
    # and root takes it again after the other user created nothing it cannot open
    with switch_lock(engine_id, "default", timeout_s=5):
        pass
