"""Where profiles live: the built-in folder, the user's folder, and reading their files.

The parsing and checking is `profiles.parse` and `profiles.loader` (pure: text in, `Profile`
out); this adapter finds the files, reads them, and hands the loader the user's environment for
`${VAR}` references.

- built-in: `aitherctl/builtin_profiles` when installed, `profiles/` in a source checkout.
- user: `--profile-dir` / `AITHER_PROFILE_DIR`, else the platform's user config folder
  (`~/.config/aitherctl/profiles` on Linux). A user profile of the same name wins over the
  built-in one, and may `extends:` it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aitherctl.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from aitherctl.profiles.memo import ProfileMemo
    from aitherctl.profiles.profile import Profile
    from aitherctl.profiles.schema import RawProfile

PROFILE_SUFFIXES = (".yaml", ".yml")


def builtin_profile_dir() -> Path:
    """Built-in profiles: inside the installed package, or `profiles/` in a source checkout."""
    package = Path(__file__).resolve().parent.parent
    installed = package / "builtin_profiles"
    if installed.is_dir():
        return installed
    return package.parent / "profiles"


def user_profile_dir(environ: Mapping[str, str] | None = None) -> Path:
    """`--profile-dir` / `AITHER_PROFILE_DIR`, else the user's config folder (platformdirs)."""
    override = (os.environ if environ is None else environ).get("AITHER_PROFILE_DIR")
    if override:
        return Path(override).expanduser()
    from aitherctl.paths import user_dir_text

    return Path(user_dir_text("config")) / "profiles"


def read_profile_text(path: Path) -> str:
    """A profile file's text; a missing or unreadable file is one line naming it."""
    source = str(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFoundError(f"{source}: no such profile file") from None
    except IsADirectoryError:
        raise ConfigError("is a folder, not a profile file", source=source) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=source) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", source=source) from None


@dataclass(frozen=True, slots=True)
class ProfileEntry:
    """A profile file found in the built-in or the user's folder; a user profile may override the
    built-in one of the same name."""

    name: str
    path: Path
    builtin: bool
    overrides_builtin: bool = False


class ProfileCatalog:
    """Profiles by name across the built-in folder and the user's folder (the user's wins).

    `environ` (default: the process environment, read when a profile is loaded) expands
    `${VAR}` in `env:` values and `~`/`$VAR` in volume folders.
    """

    def __init__(
        self,
        builtin_dir: Path | None = None,
        user_dir: Path | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        memo: ProfileMemo | None = None,
    ) -> None:
        self.builtin_dir = builtin_dir if builtin_dir is not None else builtin_profile_dir()
        self.user_dir = user_dir if user_dir is not None else user_profile_dir(environ)
        self._environ = environ
        self.memo = memo  # profiles loaded before (profiles/memo.py), or None to always parse

    @property
    def environ(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    def _layers(self) -> list[tuple[Path, bool]]:
        return [(self.builtin_dir, True), (self.user_dir, False)]

    def _files(self, folder: Path) -> dict[str, Path]:
        if not folder.is_dir():
            return {}
        found: dict[str, Path] = {}
        for path in sorted(folder.iterdir()):
            if path.suffix in PROFILE_SUFFIXES and path.is_file():
                found.setdefault(path.stem, path)
        return found

    def entries(self) -> list[ProfileEntry]:
        builtin = self._files(self.builtin_dir)
        user = self._files(self.user_dir)
        result = [ProfileEntry(n, p, True) for n, p in builtin.items() if n not in user]
        result += [ProfileEntry(n, p, False, n in builtin) for n, p in user.items()]
        return sorted(result, key=lambda entry: entry.name)

    def names(self) -> list[str]:
        return [entry.name for entry in self.entries()]

    def find(self, name: str, *, below: Path | None = None) -> Path:
        """The file for `name`; with `below`, the one in a lower layer than that file."""
        candidates: list[Path] = []
        for folder, _ in self._layers():
            path = self._files(folder).get(name)
            if path is not None:
                candidates.append(path)
        if below is not None:
            resolved = below.resolve()
            index = next(
                (i for i, p in enumerate(candidates) if p.resolve() == resolved), len(candidates)
            )
            candidates = [p for p in candidates[:index] if p.resolve() != resolved]
        if not candidates:
            from aitherctl.profiles.problems import did_you_mean

            names = self.names()
            known = ", ".join(names) or "none"
            raise NotFoundError(
                f"no profile named {name!r}{did_you_mean(name, names)} (known: {known})"
            )
        return candidates[-1]

    def read(self, path: Path) -> RawProfile:
        """One file, parsed and checked field by field (before `extends`)."""
        return self._read(path, self.environ, [])

    def _read(self, path: Path, env: Mapping[str, str], files: list[str]) -> RawProfile:
        from aitherctl.profiles.parse import parse_profile

        files.append(os.fspath(path))
        return parse_profile(
            read_profile_text(path), str(path), base_dir=str(path.resolve().parent), env=env
        )

    def load(self, name_or_path: str, *, expand: bool = True) -> Profile:
        """Load a profile by name, or from a file when given a path ending in .yaml/.yml.

        `expand=False` keeps `${VAR}` references in `env:` as written (what `profile show`
        prints); otherwise they are expanded from `environ`, and a missing one is an error.
        With a memo, a profile loaded before is taken from it while none of its files, folders
        and environment variables changed.
        """
        is_path = name_or_path.endswith(PROFILE_SUFFIXES) or os.sep in name_or_path
        if self.memo is None:
            return self._load(name_or_path, is_path, expand, self.environ, [])
        from aitherctl.profiles.memo import RecordingEnv, folders_of

        folders = folders_of(self.builtin_dir, self.user_dir)
        key = (os.path.abspath(name_or_path) if is_path else name_or_path, expand, *folders)
        found = self.memo.get(key, folders, self.environ)
        if found is not None:
            return found
        env = RecordingEnv(self.environ)
        files: list[str] = []
        profile = self._load(name_or_path, is_path, expand, env, files)
        self.memo.put(key, folders, files, env, profile)
        return profile

    def load_file(self, path: Path, *, expand: bool = True) -> Profile:
        return self._load(os.fspath(path), True, expand, self.environ, [])

    def _load(
        self,
        name_or_path: str,
        is_path: bool,
        expand: bool,
        env: Mapping[str, str],
        files: list[str],
    ) -> Profile:
        from aitherctl.profiles.loader import resolve_profile

        path = Path(name_or_path) if is_path else self.find(name_or_path)

        def lookup(name: str, below: str | None) -> RawProfile:
            return self._read(self.find(name, below=Path(below) if below else None), env, files)

        return resolve_profile(self._read(path, env, files), lookup, env=env if expand else None)
