"""`aitherctl status` and `aitherctl monitor` through the CLI (CliRunner)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from aitherctl.cli.app import app


@pytest.fixture
def no_docker(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    monkeypatch.setenv("AITHER_NAMESPACE", "status-cli-test")


def test_status_json_without_docker_still_shows_the_host(no_docker: None) -> None:
    result = CliRunner().invoke(app, ["status", "--json", "--no-gpu"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["schema"] == 1
    assert data["docker_error"].startswith("cannot reach the Docker engine at unix://")
    assert data["gpu_error"] == "GPU readings are off"
    assert data["services"] == []
    assert data["host"]["ram_total_bytes"] > 0


def test_status_rich_summary_without_docker(no_docker: None) -> None:
    result = CliRunner().invoke(app, ["status", "--no-gpu"])
    assert result.exit_code == 0, result.output
    assert "Docker unavailable" in result.stdout
    assert "Docker: cannot reach the Docker engine" in result.stdout
    assert "RAM" in result.stdout


def test_status_watch_prints_plain_lines(no_docker: None) -> None:
    result = CliRunner().invoke(
        app, ["status", "--watch", "--count", "2", "--interval", "0.2", "--no-gpu"]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert sum(" profile=none cpu=" in line for line in lines) == 2
    assert "\x1b[" not in result.stdout


def test_monitor_refuses_without_a_terminal(no_docker: None) -> None:
    result = CliRunner().invoke(app, ["monitor"])
    assert result.exit_code == 2
    assert "status --watch" in result.stderr
