"""`aitherctl doctor` on the real Docker engine: its checks after the move to monitor/doctor.py."""

from __future__ import annotations

import json
import socket

import pytest
from typer.testing import CliRunner

from aitherctl.cli import runtime
from aitherctl.cli.app import app
from tests.conftest import free_port
from tests.doubles.nvml_double import NvmlDouble


@pytest.mark.docker
def test_doctor_on_the_real_engine_flags_a_port_another_program_holds(
    docker_engine, write_profile, monkeypatch
) -> None:
    monkeypatch.setattr(runtime, "nvml_module", NvmlDouble(driver_loaded=False))
    port = free_port()
    write_profile("web", f"services:\n  site: {{engine: ollama, port: {port}}}\n")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output  # warnings do not fail
    data = json.loads(result.stdout)
    checks = {check["name"]: check for check in data["checks"]}
    assert checks["docker"]["status"] == "ok"
    assert checks["docker"]["detail"].startswith("engine ")
    assert checks["gpu"]["status"] == "warn"
    assert checks["profiles"] == {"name": "profiles", "status": "ok", "detail": "5 valid"}
    assert checks["ports"]["status"] == "warn"
    assert f"{port} (web/site)" in checks["ports"]["detail"]
    assert data["problems"] == []
