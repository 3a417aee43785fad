"""`models` and `models rm` across the Docker hosts the profiles name: node-a, a real remote
engine reached over SSH (scripts/test-hosts.sh), read and changed through a short-lived container
there (aitherctl.docker.model_folders), never through this machine's file system."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from aitherctl.cli.app import app
from tests.conftest import free_port, not_the_users
from tests.hosts_helpers import TwoHosts
from tests.models.test_models_cmd import _fake_cache

pytest_plugins = ["tests.hosts_helpers"]
pytestmark = pytest.mark.docker
runner = CliRunner()
LLAMA_IMAGE = "aither-test/llamacpp:latest"


@pytest.fixture
def on_node_a(two_hosts: TwoHosts, tmp_path, write_profile, monkeypatch):  # type: ignore[no-untyped-def]
    """A profile whose llama.cpp and vLLM services run on node-a, their folders there: a GGUF
    file, a partial download beside it, a Hugging Face cache with one repository."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    models, hf = tmp_path / "node-a-models", tmp_path / "node-a-hf"
    models.mkdir()
    (models / "tiny.gguf").write_bytes(b"G" * 3000)
    (models / "half.gguf.incomplete").write_bytes(b"H" * 1000)
    files = {"config.json": b"{}" * 50, "model.safetensors": b"W" * 5000}
    _fake_cache(hf / "hub", "org/chat", files)
    write_profile(
        "spread",
        hosts={"a": {"docker": two_hosts.a.url, "address": "127.0.0.1"}},
        services={
            "small": {"engine": "llamacpp", "image": LLAMA_IMAGE, "model": "/models/tiny.gguf",
                      "port": free_port(), "gpu": "none", "host": "a",
                      "volumes": {str(models): "/models:ro"}},
            "chat": {"engine": "vllm", "model": "org/chat", "port": free_port(), "gpu": "none",
                     "host": "a", "volumes": {str(hf): "/root/.cache/huggingface"}},
        },
    )  # fmt: skip
    return models, hf


def test_models_lists_and_removes_the_models_on_another_host(on_node_a) -> None:
    models, hf = on_node_a
    listed = runner.invoke(app, ["models"])
    assert listed.exit_code == 0, listed.output
    assert [line.rstrip() for line in listed.stdout.splitlines()] == [
        "model      host  engine    size    state     used by       last used",
        "org/chat   a     vllm      5140 B  complete  spread/chat   -",
        "half.gguf  a     llamacpp  1000 B  partial   -             -",
        "tiny.gguf  a     llamacpp  3000 B  complete  spread/small  -",
    ]
    data = json.loads(runner.invoke(app, ["models", "--json"]).stdout)
    assert data["models"][0] == {
        "name": "org/chat", "host": "a", "engine": "vllm", "kind": "hf-cache",
        "path": str(hf / "hub" / "models--org--chat"), "size_bytes": 5140, "state": "complete",
        "used_by": [{"profile": "spread", "service": "chat", "running": False}],
        "last_used_ts": None,
    }  # fmt: skip
    assert data["notes"] == []

    removed = runner.invoke(app, ["models", "rm", "half.gguf", "--host", "a", "--yes"])
    assert removed.exit_code == 0, removed.output
    assert removed.stdout == "removed half.gguf: 1000 B freed\n"
    cache = runner.invoke(app, ["models", "rm", "org/chat", "--yes"])
    assert cache.exit_code == 0, cache.output
    assert sorted(p.name for p in models.iterdir()) == ["tiny.gguf"]
    assert sorted(p.name for p in (hf / "hub").iterdir()) == []
    wrong_host = runner.invoke(app, ["models", "rm", "tiny.gguf", "--host", "local", "--yes"])
    assert wrong_host.exit_code == 4
    assert wrong_host.stderr == (
        "error: no model 'tiny.gguf' on this machine (there are: tiny.gguf)\n"
    )


def test_a_host_that_cannot_be_reached_is_one_note(two_hosts: TwoHosts, write_profile) -> None:
    del two_hosts
    write_profile(
        "gone",
        hosts={"z": {"docker": "ssh://root@127.0.0.1:1", "address": "127.0.0.1"}},
        services={"small": {"engine": "llamacpp", "image": LLAMA_IMAGE, "port": free_port(),
                            "model": "/models/tiny.gguf", "gpu": "none", "host": "z",
                            "volumes": {"/srv/models": "/models:ro"}}},
    )  # fmt: skip
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["notes"] == [
        "host 'z': cannot use ssh://root@127.0.0.1:1: connection refused: its models are not listed"
    ]


def test_the_ollama_servers_of_another_host_are_listed_and_removed_through(
    two_hosts: TwoHosts, write_profile
) -> None:
    """An Ollama service on node-a is reached where the host's `address` says (here the Ollama
    contract double, on loopback): its models are listed with their host, and removed through
    `DELETE /api/delete`."""
    from tests.doubles.ollama_server import ollama_double

    port = free_port()
    write_profile(
        "far",
        hosts={"a": {"docker": two_hosts.a.url, "address": "127.0.0.1"}},
        services={"chat": {"engine": "ollama", "model": "llama3.2:1b", "port": port,
                           "gpu": "none", "host": "a", "image": LLAMA_IMAGE}},
    )  # fmt: skip
    on_disk = {"llama3.2:1b": 1_321_098_329, "qwen3:8b": 5_225_387_520}
    with ollama_double({}, on_disk=on_disk, port=port) as (url, state):
        listed = runner.invoke(app, ["models", "--json"])
        removed = runner.invoke(app, ["models", "rm", "qwen3:8b", "--host", "a", "--yes"])
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.stdout)
    assert [
        (m["name"], m["host"], m["path"], m["used_by"]) for m in not_the_users(data["models"])
    ] == [
        ("llama3.2:1b", "a", url, [{"profile": "far", "service": "chat", "running": False}]),
        ("qwen3:8b", "a", url, []),
    ]
    assert removed.exit_code == 0, removed.output
    assert removed.stdout == "removed qwen3:8b: 4.9 GiB freed\n"
    assert state.on_disk == {"llama3.2:1b": 1_321_098_329}
