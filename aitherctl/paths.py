"""Where aitherctl keeps its files: the one place that reads the folder overrides.

- state (`AITHER_STATE_DIR`, else the platform's user state folder, ~/.local/state/aitherctl):
  the switch journal, the backend failure memory. Per user.
- data (`AITHER_DATA_DIR`, else ~/.local/share/aitherctl): the usage ledger. Per user.
- machine (`AITHER_MACHINE_DIR`, else /run/lock/aitherctl, else /tmp/aitherctl-machine where a
  system has no /run/lock): what every user of this machine shares, `sudo` included: the
  per-engine switch lock. /run/lock is the FHS folder for lock files, writable by every user
  (mode 1777), so root and a user pick the same folder whoever comes first (a folder only root
  may create, like /run/aitherctl, would send a user who came first elsewhere). The subfolder
  is made 1777 too.
"""

from __future__ import annotations

import os
import sys

# Not `typing.TYPE_CHECKING`: importing typing costs `run` through serve a few ms (mypy reads
# any name TYPE_CHECKING as true).
TYPE_CHECKING = False

if TYPE_CHECKING:
    from pathlib import Path


# The router's memory of backends that failed (aitherctl/routing/probes.py), in the state folder.
BACKEND_FAILURES_FILE = "backend-failures.json"


def pid_alive(pid: object) -> bool:
    """Whether the process that wrote a state file (its PID in it) still runs on this machine:
    one that runs as another user counts as alive."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def state_dir() -> Path:
    from pathlib import Path

    return Path(state_dir_text())


def state_dir_text() -> str:
    """`state_dir()` as text, for the paths that must not pay for pathlib (`run` via serve)."""
    override = os.environ.get("AITHER_STATE_DIR")
    if override:
        return override
    return user_dir_text("state")


def data_dir() -> Path:
    from pathlib import Path

    override = os.environ.get("AITHER_DATA_DIR")
    if override:
        return Path(override)
    return Path(user_dir_text("data"))


# The XDG base directories platformdirs reads on Linux: (variable, default under $HOME).
_XDG = {
    "state": ("XDG_STATE_HOME", ".local/state"),
    "data": ("XDG_DATA_HOME", ".local/share"),
    "config": ("XDG_CONFIG_HOME", ".config"),
}


def user_dir_text(kind: str) -> str:
    """aitherctl's user folder of `kind` (state, data, config) as platformdirs gives it. On
    Linux that is the XDG base directory (an absolute $XDG_..._HOME, else under an absolute
    $HOME), worked out here: importing platformdirs (tempfile, shutil, random...) was about
    10 ms of `run`'s start-up, through `serve` and direct. Anything else asks platformdirs."""
    variable, default = _XDG[kind]
    if sys.platform.startswith("linux"):
        base = os.environ.get(variable, "")
        if os.path.isabs(base):
            return os.path.join(base, "aitherctl")
        home = os.environ.get("HOME", "")
        if os.path.isabs(home):
            return os.path.join(home, default, "aitherctl")
    import platformdirs

    folder: str = getattr(platformdirs, f"user_{kind}_dir")("aitherctl")
    return folder


MACHINE_DIRS = ("/run/lock/aitherctl", "/tmp/aitherctl-machine")


def machine_dir() -> Path:
    """A folder every user of this machine shares (created on first use, mode 1777)."""
    import contextlib
    from pathlib import Path

    override = os.environ.get("AITHER_MACHINE_DIR")
    candidates = (Path(override),) if override else tuple(Path(d) for d in MACHINE_DIRS)
    last_error: OSError | None = None
    for folder in candidates:
        if not override and not folder.parent.is_dir():
            continue  # no /run/lock on this system
        try:
            if not folder.is_dir():
                folder.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(OSError):
                    folder.chmod(0o1777)
            if os.access(folder, os.W_OK | os.X_OK):
                return folder
        except OSError as exc:
            last_error = exc
    from aitherctl.errors import AitherError

    raise AitherError(
        f"no shared folder for aitherctl's lock ({', '.join(map(str, candidates))}): "
        f"{last_error or 'not writable'}; set AITHER_MACHINE_DIR to a folder every user can write"
    )
