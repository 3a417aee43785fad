"""`aitherctl models` and `models rm`: the models in the folders the profiles point at, their
size on disk and users; a model a running service uses is never removed."""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from aitherctl.cli.app import app
from aitherctl.cli.models_cmd import models_table
from aitherctl.models.local_model import (
    LocalModel,
    ModelKind,
    ModelListing,
    ModelState,
    ServiceUse,
)
from tests.conftest import MODEL_FILE, MODELS_DIR, free_port, llama_service, run_cli
from tests.models.hub_helpers import need

runner = CliRunner()
WIDTHS = (80, 200)


NOW = 1_796_000_000.0


def _render(listing: ModelListing, width: int) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, force_terminal=False).print(
        models_table(listing, now=NOW)
    )
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())


EVERY_STATE = ModelListing((
    LocalModel("cyankiwi/Nemotron-Orchestrator-8B-AWQ-4bit", "vllm", ModelKind.HF_CACHE,
               "/c/hub/models--cyankiwi--Nemotron-Orchestrator-8B-AWQ-4bit", 6_100_000_000,
               ModelState.COMPLETE,
               (ServiceUse("dev", "orchestrator", True),
                ServiceUse("creative", "orchestrator", False),
                ServiceUse("production", "orchestrator", False)), NOW - 42),
    LocalModel("Qwen/Qwen2.5-Coder-7B-Instruct-AWQ", "vllm", ModelKind.HF_CACHE,
               "/c/hub/models--Qwen--Qwen2.5-Coder-7B-Instruct-AWQ", 2_000_000_000,
               ModelState.PARTIAL, (ServiceUse("dev", "coding", None),), NOW - 3 * 86400 - 7200),
    LocalModel("SmolLM2-135M-Instruct.Q4_1.gguf", "llamacpp", ModelKind.GGUF,
               "/m/SmolLM2-135M-Instruct.Q4_1.gguf", 98_362_432, ModelState.COMPLETE, ()),
))  # fmt: skip


EXPECTED = {
    80: """\
model                 engine    size     state     used by             last used
cyankiwi/Nemotron-Or  vllm      5.7 GiB  complete  dev/orchestrator    42s ago
chestrator-8B-AWQ-4b                               (running),
it                                                 creative/orchestra
                                                   tor,
                                                   production/orchest
                                                   rator
Qwen/Qwen2.5-Coder-7  vllm      1.9 GiB  partial   dev/coding          3d2h ago
B-Instruct-AWQ
SmolLM2-135M-Instruc  llamacpp  94 MiB   complete  -                   -
t.Q4_1.gguf""",
    200: """\
model                                       engine    size     state     used by          \
                                                           last used
cyankiwi/Nemotron-Orchestrator-8B-AWQ-4bit  vllm      5.7 GiB  complete  dev/orchestrator \
(running), creative/orchestrator, production/orchestrator  42s ago
Qwen/Qwen2.5-Coder-7B-Instruct-AWQ          vllm      1.9 GiB  partial   dev/coding       \
                                                           3d2h ago
SmolLM2-135M-Instruct.Q4_1.gguf             llamacpp  94 MiB   complete  -                \
                                                           -""",
}


@pytest.mark.parametrize("width", WIDTHS)
def test_the_table_renders_every_state(width: int) -> None:
    """Complete, partial; used by a running service, by one not running, by one whose state
    is unknown (no Docker engine), by none; last used seconds ago, days ago, never."""
    assert _render(EVERY_STATE, width) == EXPECTED[width]


def _fake_cache(hub: Path, repo: str, files: dict[str, bytes]) -> Path:
    """A cache folder as huggingface_hub writes one (blobs, snapshot links, refs/main)."""
    folder = hub / ("models--" + repo.replace("/", "--"))
    commit = "c" * 40
    for index, (name, data) in enumerate(files.items()):
        blob = folder / "blobs" / f"{index:040d}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = folder / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f"../../blobs/{index:040d}")
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    return folder


@pytest.fixture
def machine(tmp_path, write_profile, monkeypatch):  # type: ignore[no-untyped-def]
    """A home with one profile's GGUF file and cache folder, another GGUF beside it, a partial
    download, and a cache folder no profile names."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    models, hf = tmp_path / "models", tmp_path / "hf"
    models.mkdir()
    (models / "tiny.gguf").write_bytes(b"G" * 3000)
    (models / "other.gguf").write_bytes(b"O" * 2000)
    (models / "half.gguf.incomplete").write_bytes(b"H" * 1000)
    _fake_cache(
        hf / "hub", "org/chat", {"config.json": b"{}" * 50, "model.safetensors": b"W" * 5000}
    )
    _fake_cache(hf / "hub", "org/unused", {"config.json": b"{}"})
    write_profile(
        "mine",
        "services:\n"
        f"  small: {{engine: llamacpp, model: /models/tiny.gguf, port: {free_port()},"
        f" volumes: {{{models}: /models:ro}}}}\n"
        f"  chat: {{engine: vllm, model: org/chat, port: {free_port()},"
        f" volumes: {{{hf}: /root/.cache/huggingface}}}}\n",
    )
    return models, hf


def _used(profile: str, backend: str, model: str, ago_s: float, outcome: str = "ok") -> None:
    """A row of the usage ledger as `run` and `serve` write one for a request a local service
    answered `ago_s` seconds ago."""
    from aitherctl.routing.ledger import Ledger, LedgerRow

    Ledger().record(LedgerRow(
        ts=time.time() - ago_s, profile=profile, effort=2, tier="local", backend=backend,
        model=model, local=True, tokens_in=5, tokens_out=7, cost_usd=0.0, ttft_s=0.1,
        total_s=0.5, outcome=outcome, attempts=1, prompt_sha256=None,
    ))  # fmt: skip


@pytest.mark.docker
def test_models_lists_what_the_profiles_point_at_and_what_lies_beside(
    clean_namespace, machine
) -> None:
    """`last used` is the newest request a service using the model answered, from the usage
    ledger: not a failed one, not one the service answered while it served another model, not
    another profile's service of the same name."""
    models, hf = machine
    _used("mine", "chat", "org/chat", 3 * 3600 + 30)
    _used("mine", "chat", "org/old-chat", 60)
    _used("mine", "chat", "org/chat", 10, outcome="failed")
    _used("other", "chat", "org/chat", 5)
    _used("mine", "small", "small", 2 * 86400 + 3600 + 30)
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert [line.rstrip() for line in result.stdout.splitlines()] == [
        "model       engine    size    state     used by     last used",
        "org/chat    vllm      5140 B  complete  mine/chat   3h00m ago",
        "org/unused  vllm      42 B    complete  -           -",
        "half.gguf   llamacpp  1000 B  partial   -           -",
        "other.gguf  llamacpp  2000 B  complete  -           -",
        "tiny.gguf   llamacpp  3000 B  complete  mine/small  2d1h ago",
    ]
    data = json.loads(runner.invoke(app, ["models", "--json"]).stdout)
    assert data["models"][0] == {
        "name": "org/chat", "host": "local", "engine": "vllm", "kind": "hf-cache",
        "path": str(hf / "hub" / "models--org--chat"), "size_bytes": 5140, "state": "complete",
        "used_by": [{"profile": "mine", "service": "chat", "running": False}],
        "last_used_ts": pytest.approx(time.time() - 3 * 3600 - 30, abs=60),
    }  # fmt: skip
    assert data["models"][1]["last_used_ts"] is None
    assert data["models"][2]["path"] == str(models / "half.gguf")
    assert data["notes"] == []


@pytest.mark.docker
def test_models_rm_deletes_a_model_no_service_runs(clean_namespace, machine) -> None:
    models, hf = machine
    no_terminal = runner.invoke(app, ["models", "rm", "org/chat"])
    assert no_terminal.exit_code == 2
    assert (hf / "hub" / "models--org--chat").is_dir()
    removed = runner.invoke(app, ["models", "rm", "org/chat", "--yes"])
    assert removed.exit_code == 0, removed.output
    assert removed.stdout == "removed org/chat: 5140 B freed\n"
    assert not (hf / "hub" / "models--org--chat").exists()
    assert (hf / "hub" / "models--org--unused").is_dir()
    half = runner.invoke(app, ["models", "rm", "half.gguf", "--yes"])
    assert half.exit_code == 0
    assert sorted(os.listdir(models)) == ["other.gguf", "tiny.gguf"]
    unknown = runner.invoke(app, ["models", "rm", "nothing"])
    assert unknown.exit_code == 4
    assert unknown.stderr == (
        "error: no model 'nothing' on this machine (there are: org/unused, other.gguf, tiny.gguf)\n"
    )


@pytest.mark.docker
def test_models_rm_refuses_a_model_a_running_service_uses(
    clean_namespace, write_profile, llama_image, tmp_path, monkeypatch
) -> None:
    del llama_image
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(need(Path(MODELS_DIR) / MODEL_FILE), models / MODEL_FILE)
    service = llama_service(free_port())
    service["volumes"] = {str(models): "/models:ro"}
    write_profile("live", services={"assistant": service})
    assert run_cli("profile", "switch", "live", "--yes").returncode == 0
    try:
        listed = runner.invoke(app, ["models"])
        assert MODEL_FILE in listed.stdout
        assert "live/assistant (running)" in listed.stdout
        refused = runner.invoke(app, ["models", "rm", MODEL_FILE, "--yes"])
        assert refused.exit_code == 5
        assert refused.stderr == (
            f"error: model {MODEL_FILE} is used by running service 'assistant' (profile live): "
            "stop it first (`aitherctl down assistant`)\n"
        )
        assert (models / MODEL_FILE).is_file()
    finally:
        run_cli("down", "--all", "--yes")
    assert runner.invoke(app, ["models", "rm", MODEL_FILE, "--yes"]).exit_code == 0
    assert not (models / MODEL_FILE).exists()


ON_TWO_HOSTS = ModelListing((
    LocalModel("SmolLM2-135M-Instruct.Q4_1.gguf", "llamacpp", ModelKind.GGUF,
               "/m/SmolLM2-135M-Instruct.Q4_1.gguf", 98_362_432, ModelState.COMPLETE,
               (ServiceUse("dev", "small", True),), NOW - 600),
    LocalModel("Qwen/Qwen2.5-Coder-7B-Instruct-AWQ", "vllm", ModelKind.HF_CACHE,
               "aither-hf-cache:/hub/models--Qwen--Qwen2.5-Coder-7B-Instruct-AWQ", 5_600_000_000,
               ModelState.COMPLETE, (ServiceUse("dev", "coding", False),), None,
               host="gpu-box",
               remote_place=("aither-hf-cache", "hub/models--Qwen--Qwen2.5-Coder-7B-Instruct-AWQ")),
))  # fmt: skip

EXPECTED_HOSTS = {
    80: """\
model           host     engine    size     state     used by         last used
SmolLM2-135M-I  local    llamacpp  94 MiB   complete  dev/small       10m00s ago
nstruct.Q4_1.g                                        (running)
guf
Qwen/Qwen2.5-C  gpu-box  vllm      5.2 GiB  complete  dev/coding      -
oder-7B-Instru
ct-AWQ""",
    200: """\
model                               host     engine    size     state     used by         \
     last used
SmolLM2-135M-Instruct.Q4_1.gguf     local    llamacpp  94 MiB   complete  dev/small (runni\
ng)  10m00s ago
Qwen/Qwen2.5-Coder-7B-Instruct-AWQ  gpu-box  vllm      5.2 GiB  complete  dev/coding      \
     -""",
}


@pytest.mark.parametrize("width", WIDTHS)
def test_the_table_has_a_host_column_when_a_model_is_on_another_host(width: int) -> None:
    assert _render(ON_TWO_HOSTS, width) == EXPECTED_HOSTS[width]
