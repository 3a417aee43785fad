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


def test_status_watch_json_prints_one_object_per_line_as_it_goes(tmp_path: object) -> None:
    """A real `aitherctl status --watch --json` process, read line by line while it runs: each
    reading is one JSON object on one line, flushed at once (no --count: it watches until
    stopped)."""
    import os
    import subprocess
    import sys
    import time

    env = {
        **os.environ,
        "DOCKER_HOST": f"unix://{tmp_path}/no-such.sock",
        "AITHER_NAMESPACE": "status-ndjson-test",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aitherctl",
            "status",
            "--watch",
            "--json",
            "--no-gpu",
            "--interval",
            "0.3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        started = time.monotonic()
        lines = [proc.stdout.readline() for _ in range(2)]  # type: ignore[union-attr]
        assert proc.poll() is None, "status --watch stopped on its own"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert time.monotonic() - started < 30
    readings = [json.loads(line) for line in lines]
    assert all(line.endswith("\n") and line.count("\n") == 1 for line in lines)
    assert [reading["schema"] for reading in readings] == [1, 1]
    assert all(reading["services"] == [] for reading in readings)
    assert readings[0]["taken_at"] != readings[1]["taken_at"]


def test_status_watch_json_stops_quietly_when_the_reader_goes_away(tmp_path: object) -> None:
    """`aitherctl status --watch --json | head -n 1`: exit 0, nothing on stderr."""
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "DOCKER_HOST": f"unix://{tmp_path}/no-such.sock",
        "AITHER_NAMESPACE": "status-ndjson-test",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aitherctl",
            "status",
            "--watch",
            "--json",
            "--no-gpu",
            "--interval",
            "0.2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    json.loads(proc.stdout.readline())
    proc.stdout.close()
    try:
        returncode = proc.wait(timeout=30)
    finally:
        proc.kill()
    assert (returncode, proc.stderr.read()) == (0, b"")
