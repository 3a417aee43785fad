"""Ollama's load and unload requests and its embeddings (`/api/embed`, `/api/embeddings`) on
`aitherctl serve`, spoken to with the official `ollama` Python client in front of a real
llama.cpp server (SmolLM2 on the CPU, started with `--embeddings --pooling mean`) that `serve`
starts on demand."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, llama_service
from tests.serve.docker.serve_helpers import ledger_rows, serving

ollama = pytest.importorskip("ollama")

pytestmark = pytest.mark.docker


def _state(url: str, backend: str) -> str:
    status: dict[str, Any] = httpx.get(url + "/status", trust_env=False, timeout=10).json()
    return str(next(b["state"] for b in status["backends"] if b["backend"] == backend))


def test_an_ollama_load_starts_the_service_and_embeddings_come_back_as_ollama_answers(
    clean_namespace: object, llama_image: str, write_profile: Callable[..., Path], tmp_path: Path
) -> None:
    del llama_image
    service = llama_service(free_port(), on_demand=True)
    service["args"] = [*service["args"], "--embeddings", "--pooling", "mean"]  # type: ignore[misc]
    write_profile("vecs", services={"vec": service}, routing={"max_tokens": 8})
    with serving("vecs") as served:
        client = ollama.Client(host=served.url)
        assert _state(served.url, "vec") == "stopped"

        # "Load a model" (Ollama's docs/api.md): no prompt. It was a 400 before.
        loaded = client.generate(model="vec")
        assert loaded.done
        assert loaded.done_reason == "load"
        assert loaded.response == ""
        assert _state(served.url, "vec") == "ready"  # started on demand, through the scheduler
        chat_load = client.chat(model="vec:latest", messages=[])
        assert (chat_load.done, chat_load.done_reason) == (True, "load")
        assert chat_load.message.content == ""

        embedded = client.embed(model="vec", input=["a cat sat on the mat", "stock prices fell"])
        assert len(embedded.embeddings) == 2
        assert len(embedded.embeddings[0]) == len(embedded.embeddings[1]) > 0
        assert embedded.embeddings[0] != embedded.embeddings[1]
        assert embedded.prompt_eval_count > 0
        legacy = client.embeddings(model="vec", prompt="a cat sat on the mat")
        assert legacy.embedding == pytest.approx(embedded.embeddings[0], abs=1e-4)

        with pytest.raises(ollama.ResponseError) as refused:
            client.embed(model="vec", input="x", options={"num_ctx": 64})
        assert refused.value.status_code == 400
        assert "`options.num_ctx` cannot be translated" in refused.value.error

        # "Unload a model": answered as Ollama does; serve's scheduler keeps deciding.
        unloaded = client.generate(model="vec", keep_alive=0)
        assert (unloaded.done, unloaded.done_reason) == (True, "unload")
        chat_unload = client.chat(model="vec", messages=[], keep_alive="0s")
        assert (chat_unload.done, chat_unload.done_reason) == (True, "unload")
        assert _state(served.url, "vec") == "ready"
    rows = ledger_rows(tmp_path / "data")
    # Two loads, two embeddings, the refused one (nothing sent), two unloads.
    assert [(r["backend"], r["outcome"]) for r in rows] == [("vec", "ok")] * 4 + [
        ("vec", "failed")
    ] + [("vec", "ok")] * 2
    assert rows[2]["tokens_in"] == embedded.prompt_eval_count
    assert rows[0]["load_wait_s"] > 0  # the load waited for the start
