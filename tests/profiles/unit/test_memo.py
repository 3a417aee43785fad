"""The profile memo (profiles/memo.py): a profile loaded before is reused only while nothing it
was built from changed, and a changed file, folder or variable is always read again.

File times here are set with os.utime to minutes ago, as they are for a profile the user edited
earlier; the memo's clock is the real one. Parsing is counted through the parser the catalog
calls, so "reused" means "not parsed again", not merely "equal".
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from aitherctl.errors import ConfigError
from aitherctl.profiles import parse
from aitherctl.profiles.catalog import ProfileCatalog
from aitherctl.profiles.memo import ProfileMemo

PROFILE = """\
name: mine
extends: cpu
services:
  assistant:
    port: {port}
    env:
      TOKEN: ${{MEMO_TEST_TOKEN}}
"""


def settle(*paths: Path, minutes: int = 5) -> None:
    """Give `paths` a modification time minutes ago (the change time stays now, as after an
    edit; the memo's settling rule reads both)."""
    past = time.time() - 60 * minutes
    for path in paths:
        os.utime(path, (past, past))


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The sources the catalog parses, in order."""
    seen: list[str] = []
    real = parse.parse_profile

    def counting(text: str, source: str, **kwargs: object) -> object:
        seen.append(Path(source).name)
        return real(text, source, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(parse, "parse_profile", counting)
    return seen


def later(seconds: float = 10.0) -> object:
    return lambda: time.time() + seconds


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "mine.yaml").write_text(PROFILE.format(port=8001), encoding="utf-8")
    settle(folder / "mine.yaml", folder)
    monkeypatch.setenv("MEMO_TEST_TOKEN", "first")
    return folder, tmp_path / "state" / "profiles.pickle"


def catalog(folder: Path, memo_file: Path, clock: object = None) -> ProfileCatalog:
    memo = ProfileMemo(str(memo_file), clock=clock or later())
    return ProfileCatalog(user_dir=folder, memo=memo)


def test_a_profile_loaded_before_is_not_parsed_again(
    setup: tuple[Path, Path], parses: list[str]
) -> None:
    folder, memo_file = setup
    first = catalog(folder, memo_file).load("mine")
    assert parses == ["mine.yaml", "cpu.yaml"]  # the file and what it extends
    assert memo_file.stat().st_mode & 0o777 == 0o600
    again = catalog(folder, memo_file).load("mine")  # a new command: a new catalog
    assert parses == ["mine.yaml", "cpu.yaml"]
    assert again == first
    assert again.services["assistant"].port == 8001
    assert dict(again.services["assistant"].env)["TOKEN"] == "first"


def test_an_edit_of_the_same_size_is_read_again(
    setup: tuple[Path, Path], parses: list[str]
) -> None:
    folder, memo_file = setup
    catalog(folder, memo_file).load("mine")
    (folder / "mine.yaml").write_text(PROFILE.format(port=8002), encoding="utf-8")
    settle(folder / "mine.yaml", minutes=4)
    assert catalog(folder, memo_file).load("mine").services["assistant"].port == 8002
    assert parses.count("mine.yaml") == 2


def test_a_changed_variable_is_expanded_again(
    setup: tuple[Path, Path], parses: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, memo_file = setup
    catalog(folder, memo_file).load("mine")
    monkeypatch.setenv("MEMO_TEST_TOKEN", "second")
    profile = catalog(folder, memo_file).load("mine")
    assert dict(profile.services["assistant"].env)["TOKEN"] == "second"
    monkeypatch.delenv("MEMO_TEST_TOKEN")
    with pytest.raises(ConfigError, match="MEMO_TEST_TOKEN"):
        catalog(folder, memo_file).load("mine")
    assert parses.count("mine.yaml") == 3


def test_a_new_file_in_a_profile_folder_is_seen(
    setup: tuple[Path, Path], parses: list[str]
) -> None:
    """A user's `cpu.yaml` takes over the built-in one that `mine` extends."""
    folder, memo_file = setup
    assert catalog(folder, memo_file).load("mine").services["assistant"].port == 8001
    (folder / "cpu.yaml").write_text(
        "name: cpu\nservices:\n  assistant:\n    engine: generic\n    image: busybox\n"
        "    port: 9000\n    gpu: none\n    health: {path: /}\n",
        encoding="utf-8",
    )
    settle(folder / "cpu.yaml", folder, minutes=4)
    profile = catalog(folder, memo_file).load("mine")
    assert set(profile.services) == {"assistant"}
    assert parses == ["mine.yaml", "cpu.yaml", "mine.yaml", "cpu.yaml"]


def test_a_file_changed_just_now_is_not_memoised(
    setup: tuple[Path, Path], parses: list[str]
) -> None:
    """Two writes of the same size within one tick of the file clock look alike: a file younger
    than the settling time is parsed on every load until it is older."""
    folder, memo_file = setup
    (folder / "mine.yaml").write_text(PROFILE.format(port=8003), encoding="utf-8")
    for _ in range(2):
        catalog(folder, memo_file, clock=time.time).load("mine")
    assert parses.count("mine.yaml") == 2
    assert not memo_file.exists()


def test_a_broken_profile_is_never_memoised(setup: tuple[Path, Path], parses: list[str]) -> None:
    folder, memo_file = setup
    (folder / "mine.yaml").write_text("name: mine\nservices: [\n", encoding="utf-8")
    settle(folder / "mine.yaml")
    for _ in range(2):
        with pytest.raises(ConfigError):
            catalog(folder, memo_file).load("mine")
    assert parses.count("mine.yaml") == 2


def test_an_unreadable_memo_is_a_miss(setup: tuple[Path, Path], parses: list[str]) -> None:
    folder, memo_file = setup
    memo_file.parent.mkdir(parents=True)
    memo_file.write_bytes(b"\x80\x05not a pickle")
    assert catalog(folder, memo_file).load("mine").services["assistant"].port == 8001
    assert catalog(folder, memo_file).load("mine").services["assistant"].port == 8001
    assert parses.count("mine.yaml") == 1  # the memo was rewritten by the first load


def test_a_profile_given_by_path_is_memoised_by_its_absolute_path(
    setup: tuple[Path, Path], parses: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, memo_file = setup
    monkeypatch.chdir(folder)
    assert catalog(folder, memo_file).load("./mine.yaml").name == "mine"
    assert catalog(folder, memo_file).load(str(folder / "mine.yaml")).name == "mine"
    assert parses.count("mine.yaml") == 1


def test_a_memo_others_could_write_is_ignored(setup: tuple[Path, Path], parses: list[str]) -> None:
    """Unpickling runs code: a memo file that is group- or world-writable is not read."""
    folder, memo_file = setup
    catalog(folder, memo_file).load("mine")
    memo_file.chmod(0o666)
    catalog(folder, memo_file).load("mine")
    assert parses.count("mine.yaml") == 2
