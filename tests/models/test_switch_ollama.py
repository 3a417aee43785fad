"""A switch reports an Ollama service ready only once its model is on Ollama's disk: a missing one
is pulled through the server's own `POST /api/pull` (the Ollama contract double's image, its
registry set by OLLAMA_DOUBLE_REGISTRY), or, under `--no-pull`, the switch fails and the old set
runs again."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import free_port, run_cli, web_service
from tests.doubles.images import double_state, ollama_double_image, ollama_service

pytestmark = pytest.mark.docker
__all__ = ["ollama_double_image"]  # fixture

SIZE = 1_321_098_329  # llama3.2:1b as Ollama's library lists it (1.3 GB)


def _running(engine: object) -> dict[str, str]:
    return {c.service: c.id for c in engine.list_managed() if c.running}  # type: ignore[attr-defined]


def _chat(port: int, model: str) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        trust_env=False,
        timeout=30,
    )


def test_an_ollama_service_is_ready_only_with_its_model(
    clean_namespace, write_profile, base_image, ollama_double_image, tmp_path
) -> None:
    del base_image, ollama_double_image
    web_port, port = free_port(), free_port()
    write_profile("old", services={"site": web_service(web_port)})
    chat = ollama_service(
        port, models="", env={"OLLAMA_DOUBLE_REGISTRY": f"llama3.2:1b={SIZE},nope:1b="}
    )
    chat["model"] = "llama3.2:1b"
    chat["volumes"] = {str(tmp_path / "ollama"): "/root/.ollama"}  # its own models volume
    write_profile("new", services={"chat": chat})
    missing = dict(chat, model="absent:7b")
    write_profile("missing", services={"chat": missing})
    assert run_cli("profile", "switch", "old", "--yes").returncode == 0
    before = _running(clean_namespace)
    try:
        refused = run_cli("profile", "switch", "new", "--yes", "--no-pull")
        assert refused.returncode == 6, refused.stderr
        assert refused.stderr.splitlines()[-1] == (
            "error: service 'chat' did not become ready: Ollama has no model llama3.2:1b on its "
            "disk: leave out --no-pull to pull it through Ollama; rolled back (restored: site)"
        )
        assert _running(clean_namespace) == before

        absent = run_cli("profile", "switch", "missing", "--yes")
        assert absent.returncode == 6, absent.stderr
        assert absent.stderr.splitlines()[-1] == (
            "error: service 'chat' did not become ready: Ollama's registry has no model "
            "absent:7b (pull model manifest: file does not exist); rolled back (restored: site)"
        )
        assert _running(clean_namespace) == before

        switched = run_cli("profile", "switch", "new", "--yes")
        assert switched.returncode == 0, switched.stderr
        progress = [line.split("] ", 1)[1] for line in switched.stderr.splitlines() if "] " in line]
        layer = "llama3.2:1b bbbbbbbbbbbb"
        assert [line for line in progress if line.startswith("chat")][-3:] == [
            f"chat             downloading  {layer}  0 B / 1.2 GiB (0%)",
            f"chat             downloading  {layer}  1.2 GiB / 1.2 GiB (100%)",
            progress[-1],
        ]
        assert progress[-1].startswith("chat             ready  ")
        assert set(_running(clean_namespace)) == {"chat"}
        assert double_state(port)["counts"]["pulls"] == 1
        answer = _chat(port, "llama3.2:1b")
        assert answer.status_code == 200, answer.text

        # The model is in the volume now: a new container asks `/api/tags` and pulls nothing.
        assert run_cli("down", "chat", "--yes").returncode == 0
        again = run_cli("up", "chat", "--yes")
        assert again.returncode == 0, again.stderr
        assert "downloading" not in again.stderr
        assert double_state(port)["counts"]["pulls"] == 0
        assert _chat(port, "llama3.2:1b").status_code == 200
    finally:
        run_cli("down", "--all", "--yes")
