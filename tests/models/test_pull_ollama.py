"""`pull` for an Ollama service goes through the Ollama server's own `/api/pull` (its contract
double, checked against the official `ollama` client first)."""

from __future__ import annotations

import json
import re

import ollama
import pytest
from typer.testing import CliRunner

from aitherctl.cli.app import app
from tests.conftest import free_port
from tests.doubles.ollama_server import ollama_double

runner = CliRunner()
SIZE = 1_321_098_329  # llama3.2:1b as Ollama's library lists it (1.3 GB)


def test_the_double_pulls_and_lists_as_the_official_client_expects() -> None:
    with ollama_double({}, registry={"llama3.2:1b": SIZE}, on_disk={"qwen3:8b": 5}) as (url, _):
        client = ollama.Client(host=url)
        assert [m.model for m in client.list().models] == ["qwen3:8b"]
        steps = list(client.pull("llama3.2:1b", stream=True))
        assert steps[0].status == "pulling manifest"
        assert steps[-1].status == "success"
        assert [s.completed for s in steps if s.total] == [0, SIZE // 4, SIZE // 2, SIZE]
        assert [m.model for m in client.list().models] == ["qwen3:8b", "llama3.2:1b"]
        with pytest.raises(ollama.ResponseError, match="file does not exist"):
            list(client.pull("nope", stream=True))


def _profile(write_profile, port: int, model: str) -> None:  # type: ignore[no-untyped-def]
    write_profile(
        "local", f"services:\n  chat: {{engine: ollama, model: '{model}', port: {port}}}\n"
    )


def test_pull_asks_the_ollama_server_and_shows_each_layer(write_profile) -> None:
    port = free_port()
    _profile(write_profile, port, "llama3.2:1b")
    with ollama_double({}, registry={"llama3.2:1b": SIZE}, port=port) as (url, state):
        first = runner.invoke(app, ["pull", "local"])
        again = runner.invoke(app, ["pull", "local"])
    assert first.exit_code == 0, first.output
    assert [(m, p, b) for m, p, b in state.requests if m == "POST"] == [
        ("POST", "/api/pull", {"model": "llama3.2:1b", "stream": True})
    ]
    layer = "llama3.2:1b aaaaaaaaaaaa"
    lines = [line for line in first.stderr.splitlines() if " ETA " not in line]
    assert [re.sub(r"\S+ (MiB|GiB|B)/s$", "RATE/s", line) for line in lines] == [
        f"chat  {layer}  1.2 GiB",
        f"chat  {layer}  1.2 GiB done  RATE/s",
    ]
    assert first.stdout == f"chat: 1.2 GiB downloaded: {url}\n"
    assert again.exit_code == 0
    assert again.stdout == f"chat: already there: {url}\n"


def test_a_model_ollamas_registry_lacks_is_one_line(write_profile) -> None:
    port = free_port()
    _profile(write_profile, port, "nope:7b")
    with ollama_double({}, port=port):
        result = runner.invoke(app, ["pull", "local"])
    assert result.exit_code == 4
    assert result.stderr == (
        "error: service 'chat': Ollama's registry has no model nope:7b (pull model manifest: "
        "file does not exist)\n"
    )


def test_an_ollama_server_that_does_not_run_is_one_line(write_profile) -> None:
    port = free_port()
    _profile(write_profile, port, "llama3.2:1b")
    result = runner.invoke(app, ["pull", "local"])
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: service 'chat': Ollama does not answer at http://127.0.0.1:{port} "
        "(ConnectError): start it (`aitherctl up chat`); Ollama downloads through its own server\n"
    )


def test_models_lists_an_ollama_servers_models_and_rm_deletes_through_it(
    write_profile, monkeypatch, tmp_path
) -> None:
    """The server answers on the service's port (no container of it runs: `used by` says so)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    port = free_port()
    _profile(write_profile, port, "llama3.2:1b")
    on_disk = {"llama3.2:1b": SIZE, "qwen3:8b": 5_225_387_520}
    with ollama_double({}, on_disk=on_disk, port=port) as (url, state):
        listed = runner.invoke(app, ["models", "--json"])
        removed = runner.invoke(app, ["models", "rm", "qwen3:8b", "--yes"])
        missing = runner.invoke(app, ["models", "rm", "qwen3:8b", "--yes"])
    assert listed.exit_code == 0, listed.output
    models = json.loads(listed.stdout)["models"]
    running = models[0]["used_by"][0]["running"]  # False with a Docker engine, None without
    assert models == [
        {"name": "llama3.2:1b", "host": "local", "engine": "ollama", "kind": "ollama", "path": url,
         "size_bytes": SIZE, "state": "complete", "last_used_ts": None,
         "used_by": [{"profile": "local", "service": "chat", "running": running}]},
        {"name": "qwen3:8b", "host": "local", "engine": "ollama", "kind": "ollama", "path": url,
         "size_bytes": 5_225_387_520, "state": "complete", "last_used_ts": None, "used_by": []},
    ]  # fmt: skip
    assert removed.exit_code == 0, removed.output
    assert removed.stdout == "removed qwen3:8b: 4.9 GiB freed\n"
    assert ("DELETE", "/api/delete", {"model": "qwen3:8b"}) in state.requests
    assert state.on_disk == {"llama3.2:1b": SIZE}
    assert missing.exit_code == 4
    assert missing.stderr == (
        "error: no model 'qwen3:8b' on this machine (there are: llama3.2:1b)\n"
    )
