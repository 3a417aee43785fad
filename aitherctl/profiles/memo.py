"""Profiles loaded before, kept between commands in `<state dir>/cache/profiles.pickle`.

Loading a profile parses its YAML, follows its `extends` chain and checks every field. Most of
that cost is importing the YAML parser, the schema and the checks (30-45 ms of every `run`,
`status` or `switch` on this kind of machine); the profile itself builds in a few milliseconds.
The memo keeps each loaded profile with what it was built from, and a later load takes it only
while none of that changed:

- every profile file read for it (its `extends` chain included): size, modification and change
  times, inode, as `make` and Python's own bytecode cache decide;
- both profile folders' own times (a new `cpu.yaml` in the user's folder takes over the built-in
  one, and adding or removing a file changes the folder);
- each environment variable it looked up (`${VAR}` in `env:`, `~` and `$VAR` in volumes) and its
  value, or that it was unset;
- the code that builds profiles (aitherctl's version and its profile and engine modules' times)
  and the Python version.

A file changed less than `SETTLE_S` before it would be memoised is not memoised: file times come
from a coarse clock, so two writes of the same size in one tick look alike (git calls this "racily
clean"). Only a load that succeeded is kept, so a broken profile's error is always worked out
again. A memo that cannot be read, written or unpickled is a miss, never an error.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from aitherctl.profiles.profile import Profile

FORMAT = 1
SETTLE_S = 2.0
MAX_ENTRIES = 32  # a user's profiles and the paths given to --profile, several times over
Stamp = tuple[int, int, int, int] | None


def stamp(path: str) -> Stamp:
    """(size, mtime, ctime, inode) of `path`, or None when it is not there."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def code_stamps() -> tuple[Any, ...]:
    """What says the code that builds a profile is the same: the version, Python's, and the
    stamps of the modules of `aitherctl.profiles` and `aitherctl.engines` (an edited checkout
    changes them; an installed package changes its version)."""
    from aitherctl import __version__

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    stamps: list[Any] = [__version__, sys.version_info[:2], FORMAT]
    for folder in ("profiles", "engines"):
        directory = os.path.join(package, folder)
        with contextlib.suppress(OSError):
            for name in sorted(os.listdir(directory)):
                if name.endswith(".py"):
                    stamps.append((folder, name, stamp(os.path.join(directory, name))))
    for name in ("units.py", "yamlsrc.py", "errors.py"):
        stamps.append(("", name, stamp(os.path.join(package, name))))
    return tuple(stamps)


class RecordingEnv(Mapping[str, str]):
    """The environment as the loader sees it, noting each variable looked up. Walking all of
    it (which the loader does not do today) makes the whole environment part of the memo."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.read: dict[str, str | None] = {}
        self.walked = False

    def __getitem__(self, name: str) -> str:
        value = self._environ.get(name)
        self.read[name] = value
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        value = self._environ.get(name)
        self.read[name] = value
        return value is not None

    def __iter__(self) -> Iterator[str]:
        self.walked = True
        return iter(self._environ)

    def __len__(self) -> int:
        return len(self._environ)

    def reads(self) -> tuple[tuple[str, str | None], ...]:
        """What the load depended on: the variables read, or every one when it walked them."""
        if self.walked:
            return tuple(sorted(dict(self._environ).items()))
        return tuple(sorted(self.read.items()))


class ProfileMemo:
    """The memo file: `key` -> (what the profile depends on, the profile)."""

    def __init__(self, path: str, *, clock: Any = time.time) -> None:
        self.path = path
        self.clock = clock

    def _entries(self) -> dict[Any, Any]:
        import pickle

        try:
            with open(self.path, "rb") as handle:
                if not _private(os.fstat(handle.fileno())):
                    return {}
                entries = pickle.load(handle)
        except Exception:  # a cache: missing, truncated, from other code: a miss
            return {}
        return entries if isinstance(entries, dict) else {}

    def get(
        self, key: tuple[Any, ...], folders: tuple[str, ...], environ: Mapping[str, str]
    ) -> Profile | None:
        """The profile memoised under `key`, if nothing it depends on changed."""
        entry = self._entries().get(key)
        if not isinstance(entry, tuple) or len(entry) != 5:
            return None
        files, folder_stamps, env, code, profile = entry
        if folder_stamps != tuple(stamp(f) for f in folders):
            return None
        if any(stamp(path) != recorded for path, recorded in files):
            return None
        if not isinstance(env, tuple) or any(environ.get(n) != v for n, v in env):
            return None
        if code != code_stamps():
            return None
        return profile  # type: ignore[no-any-return]

    def put(
        self,
        key: tuple[Any, ...],
        folders: tuple[str, ...],
        files: list[str],
        env: RecordingEnv | None,
        profile: Profile,
    ) -> None:
        """Keep `profile` under `key`, unless one of its sources is too fresh to tell apart
        from a later write (`SETTLE_S`)."""
        import pickle

        settled_ns = int((self.clock() - SETTLE_S) * 1e9)
        file_stamps = tuple((path, stamp(path)) for path in dict.fromkeys(files))
        folder_stamps = tuple(stamp(f) for f in folders)
        for recorded in (*(s for _, s in file_stamps), *folder_stamps):
            if recorded is not None and max(recorded[1], recorded[2]) > settled_ns:
                return
        if any(recorded is None for _, recorded in file_stamps):
            return
        reads = env.reads() if env is not None else ()
        if env is not None and env.walked:
            return  # the whole environment: not worth keeping
        entries = self._entries()
        entries.pop(key, None)
        entries[key] = (file_stamps, folder_stamps, reads, code_stamps(), profile)
        while len(entries) > MAX_ENTRIES:
            entries.pop(next(iter(entries)))
        temporary = f"{self.path}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                pickle.dump(entries, handle, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(temporary, self.path)
        except (OSError, pickle.PicklingError, TypeError, AttributeError):
            with contextlib.suppress(OSError):
                os.unlink(temporary)


def _private(st: os.stat_result) -> bool:
    """Whether only this user could have written the memo: a pickle runs code as it loads, so
    one another user could write (a shared AITHER_STATE_DIR) is ignored, as ssh ignores a
    config file others may write."""
    getuid = getattr(os, "getuid", None)
    return (getuid is None or st.st_uid == getuid()) and not st.st_mode & 0o022


def default_memo() -> ProfileMemo:
    from aitherctl.paths import state_dir_text

    return ProfileMemo(os.path.join(state_dir_text(), "cache", "profiles.pickle"))


def folders_of(builtin_dir: Path, user_dir: Path) -> tuple[str, ...]:
    return (os.fspath(builtin_dir), os.fspath(user_dir))
