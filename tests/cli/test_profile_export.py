"""`aitherctl profile export NAME --format compose|k8s`: what a user and a script see (data on
stdout or in --output, warnings on stderr, exit codes), and the exported healthcheck run for real.

The documents themselves are checked in tests/switching/test_export.py (Kubernetes schemas offline
with kubernetes-validate, the Compose spec's JSON schema from check-jsonschema: this machine's
Docker has no compose plugin for `docker compose config`). No Kubernetes API server can run here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from aitherctl.cli.app import app
from aitherctl.engines.registry import build_container
from aitherctl.units import GIB
from tests.conftest import sdk_of

runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), env=env)


def test_k8s_to_stdout_with_warnings_on_stderr() -> None:
    result = invoke("profile", "export", "dev", "--format", "k8s")
    assert result.exit_code == 0, result.output
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    kinds = [doc["kind"] for doc in docs]
    assert kinds == ["PersistentVolumeClaim"] + ["Deployment", "Service"] * 5
    lines = result.stderr.splitlines()
    assert [line.split(" ", 3)[:3] for line in lines] == [
        ["warning:", "profile", "dev"],
        ["warning:", "1", "PersistentVolumeClaim"],
    ]
    assert "Kubernetes allocates whole GPUs" in lines[0]
    assert "time-slicing" in lines[0]
    assert "MIG" in lines[0]


def test_compose_to_a_file(tmp_path: Path) -> None:
    target = tmp_path / "compose.yaml"
    result = invoke("profile", "export", "production", "-f", "compose", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr == f"wrote {target} (compose, 1 service)\n"
    document = yaml.safe_load(target.read_text())
    assert list(document["services"]) == ["orchestrator"]
    assert document["services"]["orchestrator"]["ipc"] == "host"


def test_a_container_that_needs_the_gpu_total_is_refused_then_built_with_it() -> None:
    result = invoke("profile", "export", "creative", "--format", "k8s")
    assert result.exit_code == 5
    assert result.stdout == ""
    assert result.stderr.startswith(
        "error: profile 'creative': the container of comfyui depends on the GPU's memory"
    )
    assert len(result.stderr.strip().splitlines()) == 1
    result = invoke("profile", "export", "creative", "-f", "compose", "--gpu-memory", "24GiB")
    assert result.exit_code == 0, result.output
    exported = yaml.safe_load(result.stdout)["services"]["comfyui"]["environment"]["CLI_ARGS"]
    from aitherctl.profiles.catalog import ProfileCatalog

    creative = ProfileCatalog().load("creative", expand=False)
    spec = build_container(
        creative.services["comfyui"], {0: 24 * GIB}, [creative.services["orchestrator"]]
    )
    assert exported == dict(spec.env)["CLI_ARGS"]


def test_bad_format_and_bad_gpu_memory_are_usage_errors() -> None:
    assert invoke("profile", "export", "cpu", "--format", "helm").exit_code == 2
    result = invoke("profile", "export", "creative", "-f", "k8s", "--gpu-memory", "big")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --gpu-memory 'big': ")


def test_env_references_are_exported_as_references_not_values(write_profile: Any) -> None:
    write_profile(
        "tokens",
        services={
            "lm": {
                "engine": "llamacpp",
                "model": "/models/m.gguf",
                "port": 8410,
                "gpu": "none",
                "env": {"HF_TOKEN": "${HF_TOKEN}", "API_KEY": "sk-plain"},
            }
        },
    )
    env = {"HF_TOKEN": "hf-should-not-leak"}
    compose = invoke("profile", "export", "tokens", "-f", "compose", env=env)
    k8s = invoke("profile", "export", "tokens", "-f", "k8s", env=env)
    for result in (compose, k8s):
        assert result.exit_code == 0, result.output
        assert "hf-should-not-leak" not in result.stdout
        assert (
            "warning: service lm: env API_KEY looks secret and is written as given; write "
            "${API_KEY} in the profile to keep its value out of the export"
        ) in result.stderr
    assert yaml.safe_load(compose.stdout)["services"]["lm"]["environment"]["HF_TOKEN"] == (
        "${HF_TOKEN}"
    )
    assert "warning: create Secret aither-tokens-env with HF_TOKEN before applying" in k8s.stderr


def test_export_help_imports_only_its_own_command(tmp_path: Path) -> None:
    from tests.cli.test_startup_imports import NOT_FOR_HELP, command_modules, imported

    modules, code, out = imported(tmp_path, "profile", "export", "--help")
    assert code == 0
    assert out.startswith("Usage: aitherctl profile export")
    assert command_modules(modules) == {"aitherctl.cli.profile_cmd"}
    assert modules & NOT_FOR_HELP == set()
    assert "aitherctl.switching.export" not in modules


@pytest.mark.docker
def test_exported_compose_service_runs_and_its_healthcheck_turns_healthy(
    docker_engine: Any, llama_image: str, write_profile: Any, namespace: str
) -> None:
    """The Compose entry of a real llama.cpp service, started with the Docker API as Compose
    would start it (no compose plugin here): same image, command, mount, port binding and
    healthcheck command. The healthcheck (bash, /dev/tcp, no curl) turns `healthy` once the
    model is loaded; the same script on a path the server does not serve fails."""
    from tests.conftest import free_port, llama_service

    port = free_port()
    write_profile("exported", services={"lm": llama_service(port)})
    result = invoke("profile", "export", "exported", "-f", "compose")
    assert result.exit_code == 0, result.output
    entry = yaml.safe_load(result.stdout)["services"]["lm"]

    def plain(value: str) -> str:
        return value.replace("$$", "$")

    (published,) = entry["ports"]
    (mount,) = entry["volumes"]
    check = entry["healthcheck"]
    second = 1_000_000_000
    client = sdk_of(docker_engine)
    container = client.containers.run(
        entry["image"],
        command=[plain(arg) for arg in entry["command"]],
        name=f"aither-export-test-{namespace}",
        ports={f"{published['target']}/tcp": (published["host_ip"], int(published["published"]))},
        volumes={mount["source"]: {"bind": mount["target"], "mode": "ro"}},
        init=entry["init"],
        shm_size=entry["shm_size"],
        labels=entry["labels"],
        # The test polls every second rather than the exported 10 s; the command is the export's.
        healthcheck={
            "test": [plain(part) for part in check["test"]],
            "interval": second,
            "timeout": 5 * second,
            "retries": check["retries"],
            "start_period": int(check["start_period"].rstrip("s")) * second,
        },
        detach=True,
    )
    try:
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline:
            container.reload()
            status = container.attrs["State"].get("Health", {}).get("Status")
            if status == "healthy" or container.status == "exited":
                break
            time.sleep(0.5)
        assert status == "healthy", container.logs(tail=20).decode(errors="replace")
        script = plain(check["test"][3])
        assert container.exec_run(["bash", "-c", script]).exit_code == 0
        wrong = script.replace("GET /health ", "GET /no-such-page ")
        assert container.exec_run(["bash", "-c", wrong]).exit_code != 0
    finally:
        container.remove(force=True)


def test_compose_is_the_default_format(tmp_path: Path) -> None:
    """Before, `profile export NAME` stopped with "Missing option '--format'"."""
    target = tmp_path / "compose.yaml"
    result = invoke("profile", "export", "production", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert result.stderr == f"wrote {target} (compose, 1 service)\n"
    assert list(yaml.safe_load(target.read_text())["services"]) == ["orchestrator"]
