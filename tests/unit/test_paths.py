"""aitherctl's user folders are where platformdirs puts them, without importing it on the hot
paths (`paths.user_dir_text`)."""

from __future__ import annotations

import subprocess
import sys

import platformdirs
import pytest

from aitherctl.paths import data_dir, state_dir_text, user_dir_text


@pytest.mark.parametrize("kind", ["state", "data", "config"])
@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"XDG_STATE_HOME": "/x/state", "XDG_DATA_HOME": "/x/data", "XDG_CONFIG_HOME": "/x/cfg"},
        # Relative XDG folders are ignored, as the XDG specification says
        {"XDG_STATE_HOME": "rel/state", "XDG_DATA_HOME": "rel", "XDG_CONFIG_HOME": "cfg"},
        {"HOME": "/home/someone"},
        {"HOME": "relative-home"},  # not absolute: platformdirs decides
    ],
)
def test_each_user_folder_is_platformdirs_own(
    monkeypatch: pytest.MonkeyPatch, kind: str, environ: dict[str, str]
) -> None:
    for name in ("XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    expected = getattr(platformdirs, f"user_{kind}_dir")("aitherctl")
    assert user_dir_text(kind) == expected


def test_the_overrides_come_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AITHER_STATE_DIR", "/over/state")
    monkeypatch.setenv("AITHER_DATA_DIR", "/over/data")
    assert state_dir_text() == "/over/state"
    assert str(data_dir()) == "/over/data"


def test_finding_the_folders_imports_no_platformdirs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    code = (
        "import sys; from aitherctl.paths import state_dir_text, data_dir; "
        "state_dir_text(); data_dir(); print('platformdirs' in sys.modules)"
    )
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert done.stdout.strip() == "False", done.stderr
