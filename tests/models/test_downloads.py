"""The downloads in progress as every front-end sees them (the monitor's services panel): what
the downloading process reports is read back, a finished one is gone, and one whose process died
or that stopped reporting is not shown."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from aitherctl.models.downloads import downloads_in_progress, end_download, report_download
from aitherctl.models.pull_model import DownloadState, PullEvent, PullPhase

SIZE = 1_321_098_329


def _event(done: int) -> PullEvent:
    return PullEvent(PullPhase.PROGRESS, "chat", "llama3.2:1b dde5aa3fc5ff", done, SIZE)


def test_a_reported_download_is_read_back_until_it_ends(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AITHER_STATE_DIR", str(tmp_path))
    report_download("node-a", _event(SIZE // 4))
    report_download("node-a", _event(SIZE // 2))
    (state,) = downloads_in_progress().values()
    assert state == DownloadState(
        "chat", "node-a", "llama3.2:1b dde5aa3fc5ff", SIZE // 2, SIZE, state.updated_ts
    )
    assert state.percent == 49  # whole percent, rounded down: never more than is there
    assert list(downloads_in_progress()) == [("node-a", "chat")]
    end_download("node-a", "chat")
    assert downloads_in_progress() == {}


def test_a_download_whose_process_died_or_went_quiet_is_not_shown(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AITHER_STATE_DIR", str(tmp_path))
    report_download("local", _event(SIZE // 4))
    path = tmp_path / "downloads" / "local--chat.json"
    assert downloads_in_progress(now=time.time() + 60)  # still fresh
    assert downloads_in_progress(now=time.time() + 600) == {}  # no report for 10 minutes
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    body = json.loads(path.read_text())
    path.write_text(json.dumps({**body, "pid": int(gone.stdout)}))
    assert downloads_in_progress() == {}
