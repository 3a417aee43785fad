"""`status --watch` says an unchanged error once, not at every reading."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from aitherctl.cli.app import app


def test_watch_says_an_unchanged_error_once(  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    result = CliRunner().invoke(
        app,
        ["status", "--watch", "--count", "3", "--interval", "0.2", "--no-gpu"],
        env={"COLUMNS": "80"},
    )
    assert result.exit_code == 0, result.output
    lines = [re.sub(r"^\d\d:\d\d:\d\d ", "", line) for line in result.stdout.splitlines()]
    kinds = [line.split("=", 1)[0].split(":", 1)[0] for line in lines]
    assert kinds == [
        "profile",
        "gpu",
        "docker",
        "scheduler",  # the first reading: everything
        "profile",
        "scheduler",  # then the errors are not said again
        "profile",
        "scheduler",
    ]
    assert lines[1] == "gpu: GPU readings are off"
    assert lines[2] == (
        f"docker: cannot reach the Docker engine at unix://{tmp_path}/no-such.sock: no such file "
        "or directory (is dockerd running? set DOCKER_HOST or `docker context use`)"
    )


def test_a_changed_or_cleared_error_is_said_again() -> None:
    from aitherctl.monitor.model import HostView, MonitorSnapshot
    from aitherctl.tui.render import plain_lines

    def reading(docker_error: str | None) -> MonitorSnapshot:
        return MonitorSnapshot(
            taken_at=datetime(2026, 1, 1, tzinfo=UTC),
            active_profile=None,
            docker_engine=None,
            docker_error=docker_error,
            driver_version=None,
            gpu_error=None,
            gpus=(),
            services=(),
            unmanaged=(),
            host=HostView(None, None, None, None, None, None),
        )

    said: dict[str, str] = {}
    stamp = datetime(2026, 1, 1, tzinfo=UTC).astimezone().strftime("%H:%M:%S")
    assert plain_lines(reading("down"), said)[1:] == [f"{stamp} docker: down"]
    assert plain_lines(reading("down"), said)[1:] == []
    assert plain_lines(reading("other"), said)[1:] == [f"{stamp} docker: other"]
    assert plain_lines(reading(None), said)[1:] == [f"{stamp} docker: ok again"]
    assert plain_lines(reading(None), said)[1:] == []
