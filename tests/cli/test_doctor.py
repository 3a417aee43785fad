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


RUNTIME_DETAIL = (
    "no nvidia runtime (runtimes: io.containerd.runc.v2, runc); install the NVIDIA Container "
    "Toolkit and run `nvidia-ctk runtime configure`"
)


@pytest.mark.parametrize("columns", [80, 200])
def test_doctor_wraps_a_long_reading_under_its_own_column(monkeypatch, columns: int) -> None:
    """Before, a long detail was one line that an 80-column terminal cut mid-word."""
    from aitherctl.monitor import doctor as doctor_checks

    report = doctor_checks.DoctorReport(
        (
            doctor_checks.Check("docker", "ok", "engine 28.2.2 at unix:///var/run/docker.sock"),
            doctor_checks.Check("nvidia runtime", "warn", RUNTIME_DETAIL),
            doctor_checks.Check(
                "profiles", "fail", "1 invalid", ("mine.yaml:3: service 'a': no port",)
            ),
        )
    )
    monkeypatch.setattr(runtime, "nvml_module", NvmlDouble(driver_loaded=False))
    monkeypatch.setattr(doctor_checks, "run_doctor", lambda *_args: report)
    result = CliRunner().invoke(app, ["doctor"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 1
    if columns == 200:
        assert result.stdout.splitlines() == [
            "ok   docker          engine 28.2.2 at unix:///var/run/docker.sock",
            f"warn nvidia runtime  {RUNTIME_DETAIL}",
            "FAIL profiles        1 invalid",
            "     mine.yaml:3: service 'a': no port",
        ]
    else:
        assert result.stdout.splitlines() == [
            "ok   docker          engine 28.2.2 at unix:///var/run/docker.sock",
            "warn nvidia runtime  no nvidia runtime (runtimes: io.containerd.runc.v2, runc);",
            "                     install the NVIDIA Container Toolkit and run `nvidia-ctk",
            "                     runtime configure`",
            "FAIL profiles        1 invalid",
            "     mine.yaml:3: service 'a': no port",
        ]
