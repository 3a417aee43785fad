"""The command line as a user and a script see it: exact lines, exit codes, JSON shapes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from aitherctl.cli import runtime
from aitherctl.cli.app import app
from aitherctl.units import GIB
from tests.doubles.nvml_double import FakeGpu, NvmlDouble

runner = CliRunner()


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args))


def test_version_and_help_do_not_import_heavy_modules() -> None:
    code = (
        "import sys\n"
        "sys.argv = ['aitherctl', '{arg}']\n"
        "from aitherctl.cli.app import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('docker', 'httpx', 'textual', 'pynvml') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    for arg in ("--version", "--help"):
        result = subprocess.run(
            [sys.executable, "-c", code.replace("{arg}", arg)],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "HEAVY []" in result.stdout, result.stdout


def test_profile_list_json_shape() -> None:
    result = invoke("profile", "list", "--json")
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.stdout)["profiles"]}
    assert {"dev", "production", "creative", "cpu"} <= set(rows)
    assert rows["dev"]["on_demand"] == ["reasoning"]
    assert rows["cpu"]["source"] == "built-in"
    assert set(rows["dev"]) == {
        "name",
        "path",
        "source",
        "description",
        "services",
        "on_demand",
        "error",
        "active",
    }


def test_profile_show_json() -> None:
    result = invoke("profile", "show", "creative", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    services = {svc["name"]: svc for svc in data["services"]}
    assert services["comfyui"]["vram"] == "60%"
    assert services["orchestrator"]["pinned"] is True


def test_unknown_profile_exit_4_one_line() -> None:
    result = invoke("profile", "show", "nope")
    assert result.exit_code == 4
    assert result.stderr.strip().startswith("error: no profile named 'nope'")
    assert len(result.stderr.strip().splitlines()) == 1


def test_validate_reports_each_bad_file_and_exits_3(write_profile) -> None:
    good = write_profile("fine", "services: {a: {engine: ollama, port: 11434}}\n")
    bad = write_profile("bad", "services:\n  a: {engine: olama, port: 1}\n")
    result = invoke("profile", "validate", str(good), str(bad))
    assert result.exit_code == 3
    assert f"ok      fine  ({good})" in result.stdout
    assert result.stderr.strip() == (
        f"{bad}:2: engine: 'olama' is not an engine "
        "(use one of: vllm, ollama, comfyui, llamacpp, generic)"
    )


def test_validate_lists_every_problem_of_every_profile(write_profile) -> None:
    one = write_profile(
        "one",
        """
        services:
          a: {engine: vllm, model: m, port: 8001, gpu: 0}
          b: {engine: ollama, port: 8001}
          c: {engine: ollama, port: 8002, env: {TOKEN: "${NOT_SET_ANYWHERE}"}}
        """,
    )
    two = write_profile("two", "services:\n  x: {engine: ollama, port: 1\n")
    result = invoke("profile", "validate")
    assert result.exit_code == 3
    assert result.stderr.splitlines() == [
        f"{one}:2: service 'a': runs on GPU 0 but has no `vram` budget (e.g. 35%)",
        f"{one}:3: services 'a' and 'b' both use port 8001",
        f"{one}:4: env: TOKEN: ${{NOT_SET_ANYWHERE}} is not set "
        "(set it, or give a default: ${NOT_SET_ANYWHERE:-value})",
        f"{two}:2: unclosed '{{' (parsing stopped at line 3: expected ',' or '}}', but got "
        "'<stream end>')",
    ]
    assert "ok      dev  (" in result.stdout
    data = json.loads(invoke("profile", "validate", "--json").stdout)
    by_name = {row["name"]: row for row in data["results"]}
    assert len(by_name["one"]["problems"]) == 3
    assert by_name["dev"]["problems"] == []
    assert data["ok"] is False


def test_switch_without_yes_and_without_terminal_is_refused(write_profile, monkeypatch) -> None:
    pytest.importorskip("docker")
    from tests.conftest import free_port, web_service

    write_profile("x", services={"web": web_service(free_port())})
    try:
        runtime.docker()
    except Exception:
        pytest.skip("no Docker engine")
    result = invoke("profile", "switch", "x")
    assert result.exit_code == 2
    assert "standard input is not a terminal, pass --yes" in result.stderr


@pytest.mark.docker
def test_plan_refuses_over_budget_with_the_arithmetic(
    write_profile, monkeypatch, docker_engine, base_image
) -> None:
    """The NVML contract double stands in for a 24 GiB GPU where another program holds 6 GiB."""
    monkeypatch.setattr(
        runtime,
        "nvml_module",
        NvmlDouble([FakeGpu(total_bytes=24 * GIB, processes=[(4242, 6 * GIB)])]),
    )
    write_profile(
        "tight",
        """
        gpu: {reserve: 2GiB}
        services:
          big: {engine: vllm, model: org/big, port: 18001, gpu: 0, vram: 14GiB, image: {base}}
          small: {engine: llamacpp, model: /s.gguf, port: 18002, gpu: 0, vram: 4GiB, image: {base}}
        """.replace("{base}", base_image),
    )  # images that are here: a missing one is refused too
    result = invoke("profile", "plan", "tight")
    assert result.exit_code == 5
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "error: profile 'tight' does not fit in VRAM on GPU 0 (missing 2.0 GiB)"
    assert lines[1:] == [
        "GPU 0 (NVIDIA RTX 4090, 24.0 GiB):",
        "  big                    14.0 GiB  58.3%",
        "  small                   4.0 GiB  16.7%",
        "  reserve                 2.0 GiB   8.3%",
        "  pid 4242                6.0 GiB  25.0%  (not aitherctl's)",
        "  needed                 26.0 GiB  of 24.0 GiB: missing 2.0 GiB",
    ]
    # The same profile fits once the other program is gone, and the plan says what would start.
    monkeypatch.setattr(runtime, "nvml_module", NvmlDouble([FakeGpu(total_bytes=24 * GIB)]))
    fits = invoke("profile", "plan", "tight", "--json")
    assert fits.exit_code == 0, fits.stderr
    data = json.loads(fits.stdout)
    assert [(s["action"], s["service"]) for s in data["steps"]] == [
        ("start", "big"),
        ("start", "small"),
    ]
    assert data["vram"]["gpus"][0]["needed_bytes"] == 20 * GIB
    big = next(s for s in data["steps"] if s["service"] == "big")
    assert big["vram_bytes"] == 14 * GIB


@pytest.mark.docker
def test_gpu_profile_without_nvidia_is_refused_cleanly(docker_engine, monkeypatch) -> None:
    monkeypatch.setattr(runtime, "nvml_module", NvmlDouble(driver_loaded=False))
    result = invoke("profile", "switch", "dev", "--yes")
    assert result.exit_code == 5
    assert result.stderr.splitlines()[0] == (
        "error: profile 'dev' needs a GPU for orchestrator, coding, vision, embeddings, "
        "but no NVIDIA driver (Driver Not Loaded)"
    )


def test_gpu_command_with_the_double(monkeypatch) -> None:
    monkeypatch.setattr(
        runtime, "nvml_module", NvmlDouble([FakeGpu(total_bytes=24 * GIB, processes=[(7, GIB)])])
    )
    result = invoke("gpu", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["driver_version"] == "550.54.15"
    assert data["gpus"][0]["memory_total_bytes"] == 24 * GIB
    assert data["gpus"][0]["processes"] == [{"pid": 7, "used_bytes": GIB, "name": None}]
    monkeypatch.setattr(runtime, "nvml_module", NvmlDouble(driver_loaded=False))
    none = invoke("gpu")
    assert none.exit_code == 5
    assert none.stdout.strip() == "no GPU: no NVIDIA driver (Driver Not Loaded)"


def test_show_never_prints_a_secret(write_profile, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_from_the_environment")
    monkeypatch.setenv("MY_ENDPOINT_KEY", "sk-from-the-environment")
    write_profile(
        "keys",
        """
        services:
          chat:
            engine: vllm
            model: org/chat
            port: 8001
            args: [--api-key, sk-literal-arg, "--token=tok-literal"]
            env:
              HF_TOKEN: ${HF_TOKEN}
              OPENAI_API_KEY: sk-literal-in-the-file
              DB_PASSWORD: hunter2
              MODE: fast
        endpoints:
          mine:
            base_url: https://user:pw-in-url@llm.example/v1
            model: m
            api_key_env: MY_ENDPOINT_KEY
            price: {input: 1, output: 2}
        """,
    )
    secrets = (
        "hf_from_the_environment",
        "sk-from-the-environment",
        "sk-literal",
        "tok-literal",
        "hunter2",
        "pw-in-url",
    )
    text = invoke("profile", "show", "keys")
    as_json = invoke("profile", "show", "keys", "--json")
    for result in (text, as_json):
        assert result.exit_code == 0, result.output
        leaked = [secret for secret in secrets if secret in result.output]
        assert leaked == []
    chat = json.loads(as_json.stdout)["services"][0]
    assert chat["env"] == {
        "HF_TOKEN": "${HF_TOKEN}",
        "OPENAI_API_KEY": "******",
        "DB_PASSWORD": "******",
        "MODE": "fast",
    }
    assert chat["args"] == ["--api-key", "******", "--token=******"]
    endpoint = json.loads(as_json.stdout)["endpoints"]["mine"]
    assert endpoint["api_key_env"] == "MY_ENDPOINT_KEY"
    assert endpoint["base_url"] == "https://user:******@llm.example/v1"
    assert "chat: env HF_TOKEN=${HF_TOKEN}" in text.stdout
    assert "key from $MY_ENDPOINT_KEY" in text.stdout


def test_show_works_while_a_referenced_variable_is_unset(write_profile, monkeypatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    write_profile(
        "later",
        """
        services:
          chat: {engine: ollama, port: 11434, env: {HF_TOKEN: "${HF_TOKEN}"}}
        """,
    )
    result = invoke("profile", "show", "later", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["services"][0]["env"] == {"HF_TOKEN": "${HF_TOKEN}"}


def test_doctor_lists_each_profile_problem_with_file_and_line_and_exits_3(
    write_profile, monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    monkeypatch.setattr(runtime, "nvml_module", NvmlDouble(driver_loaded=False))
    bad = write_profile(
        "bad",
        """
        services:
          a: {engine: ollama, port: 8001}
          b: {engine: ollama, port: 8001, bind: 0.0.0.0}
        allow_unauthenticated_network: true
        """,
    )
    result = invoke("doctor")
    assert result.exit_code == 3, result.output
    lines = result.stdout.splitlines()
    profiles = next(line for line in lines if " profiles " in line)
    assert profiles.startswith("FAIL profiles")
    assert "1 of 5 profiles have mistakes" in profiles
    assert f"     {bad}:3: services 'a' and 'b' both use port 8001" in lines
    assert any(line.startswith("FAIL docker") for line in lines)
    data = json.loads(invoke("doctor", "--json").stdout)
    assert data["problems"] == [f"{bad}:3: services 'a' and 'b' both use port 8001"]
    assert {check["name"]: check["status"] for check in data["checks"]}["profiles"] == "fail"


def test_a_local_service_on_the_network_without_a_key_is_refused_and_doctor_lists_open_ones(
    write_profile, monkeypatch, tmp_path
) -> None:
    """Never on a network without a key, on this machine too: `bind: 0.0.0.0` without
    `api_key_env` is refused at load with file:line (validate, plan, switch), unless the profile
    says `allow_unauthenticated_network: true`; doctor then names each such service."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    monkeypatch.setattr(runtime, "nvml_module", NvmlDouble(driver_loaded=False))
    lan = write_profile(
        "lan",
        """
        services:
          chat: {engine: llamacpp, model: /m.gguf, port: 8001, bind: 0.0.0.0}
        """,
    )
    message = (
        f"{lan}:2: service 'chat': it would answer on the network at 0.0.0.0 without "
        "authentication: set `api_key_env` to the variable holding its API key, bind it to "
        "127.0.0.1, or say `allow_unauthenticated_network: true` in the profile"
    )
    validated = invoke("profile", "validate", str(lan))
    assert validated.exit_code == 3
    assert validated.stderr.splitlines() == [message]
    switched = invoke("profile", "switch", "lan", "--yes")
    assert switched.exit_code == 3
    assert switched.stderr.splitlines() == [f"error: {message}"]

    write_profile(
        "lan",
        """
        services:
          chat: {engine: llamacpp, model: /m.gguf, port: 8001, bind: 0.0.0.0}
          near: {engine: llamacpp, model: /m.gguf, port: 8002}
        allow_unauthenticated_network: true
        """,
    )
    data = json.loads(invoke("doctor", "--json").stdout)
    checks = {check["name"]: check for check in data["checks"]}
    assert checks["network"] == {
        "name": "network",
        "status": "warn",
        "detail": "answer on the network without an API key (allow_unauthenticated_network): "
        "lan/chat (0.0.0.0:8001)",
    }
