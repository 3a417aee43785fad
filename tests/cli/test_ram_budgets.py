"""A CPU service's `ram:` that can never fit (over the profile's `ram.limit`, or over this
machine's memory) is one clear line from `validate`, a switch and `serve`, before anything runs."""

from __future__ import annotations

import psutil
import pytest
from typer.testing import CliRunner

from aitherctl.cli import runtime
from aitherctl.cli.app import app
from aitherctl.units import format_bytes
from tests.doubles.nvml_double import NvmlDouble

runner = CliRunner()


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args))


@pytest.fixture
def over_limit(write_profile):  # type: ignore[no-untyped-def]
    """The issue's profile: `ram: 64GiB` with a 16 GiB `ram.limit`."""
    return write_profile(
        "big-ram",
        """
        ram: {limit: 16GiB}
        services:
          llm:
            engine: llamacpp
            model: /models/m.gguf
            port: 18090
            ram: 64GiB
        """,
    )


@pytest.fixture
def over_machine(write_profile):  # type: ignore[no-untyped-def]
    machine = psutil.virtual_memory().total
    return (
        write_profile(
            "huge-ram",
            f"""
        services:
          llm:
            engine: llamacpp
            model: /models/m.gguf
            port: 18091
            ram: {machine // 1024**2 + 1024}MiB
        """,
        ),
        format_bytes(machine),
        format_bytes((machine // 1024**2 + 1024) * 1024**2),
    )


def test_validate_refuses_ram_over_the_limit_with_file_and_line(over_limit) -> None:
    result = invoke("profile", "validate", str(over_limit))
    assert result.exit_code == 3
    assert result.stderr.splitlines() == [
        f"{over_limit}:7: service 'llm': `ram: 64.0 GiB` is more than the profile's `ram.limit` "
        "(16.0 GiB): lower it, or raise the limit",
    ]


def test_validate_refuses_ram_over_this_machines_memory(over_machine) -> None:
    path, machine, wanted = over_machine
    result = invoke("profile", "validate", str(path))
    assert result.exit_code == 3
    assert result.stderr.splitlines() == [
        f"{path}:2: service 'llm': `ram: {wanted}` is more than this machine's memory ({machine})",
    ]


def test_switch_refuses_ram_over_this_machines_memory(  # type: ignore[no-untyped-def]
    over_machine, monkeypatch, docker_engine
):
    _path, machine, wanted = over_machine
    monkeypatch.setattr(runtime, "nvml_module", NvmlDouble(driver_loaded=False))
    for command in (["profile", "switch", "huge-ram", "--yes"], ["profile", "plan", "huge-ram"]):
        result = invoke(*command)
        assert result.exit_code == 5, result.output
        assert result.stderr == (
            f"error: service 'llm': `ram: {wanted}` is more than this "
            f"machine's memory ({machine})\n"
        )
    assert docker_engine.list_managed() == []


def test_serve_refuses_ram_over_this_machines_memory(over_machine, monkeypatch) -> None:
    _path, machine, wanted = over_machine
    monkeypatch.setattr(runtime, "nvml_module", NvmlDouble(driver_loaded=False))
    result = invoke("serve", "--profile", "huge-ram", "--port", "18999")
    assert result.exit_code == 5, result.output
    assert result.stderr == (
        f"error: service 'llm': `ram: {wanted}` is more than this machine's memory ({machine})\n"
    )
