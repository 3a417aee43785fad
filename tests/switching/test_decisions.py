"""The coordinator's commit decision of a switch across hosts (aitherctl.switching.decisions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aitherctl.switching import decisions


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AITHER_STATE_DIR", str(tmp_path))
    return tmp_path


def test_a_decided_part_is_committed_until_every_part_finished(state: Path) -> None:
    path = decisions.decide_commit(["bbb", "aaa"])
    assert path.exists()
    assert decisions.committed("aaa")
    assert decisions.committed("bbb")
    assert not decisions.committed("ccc")
    decisions.forget_finished("aaa")
    assert path.exists()  # bbb still has to finish
    assert decisions.committed("bbb")
    decisions.forget_finished("bbb")
    assert not path.exists()
    assert not list((state / "decisions").iterdir())


def test_an_abandoned_commit_is_no_decision() -> None:
    path = decisions.decide_commit(["x1", "x2"])
    decisions.forget(path)
    assert not decisions.committed("x1")


def test_an_unreadable_decision_is_read_as_none(state: Path) -> None:
    folder = state / "decisions"
    folder.mkdir()
    (folder / "broken.json").write_text("{not json")
    assert not decisions.committed("anything")
    decisions.forget_finished("anything")  # no error
    assert decisions.committed("y") is False
