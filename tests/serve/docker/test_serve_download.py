"""An on-demand start in `serve` that must download its model first says so: in the keep-alive
comments its streaming client gets while it waits, and as `downloading` events (bytes / total) in
`/events` and `/status`. The Ollama contract double's image pulls through its own `/api/pull`,
held at a quarter until the test has seen the comment (no timing)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.doubles.images import ollama_double_image, ollama_service
from tests.serve.docker.serve_helpers import serving

pytestmark = pytest.mark.docker
__all__ = ["ollama_double_image"]  # fixture
SIZE = 1_321_098_329  # llama3.2:1b as Ollama's library lists it (1.3 GB)


def test_an_on_demand_start_that_downloads_says_so(
    ollama_double_image: str,
    clean_namespace: Any,
    write_profile: Callable[..., Any],
    tmp_path: Path,
) -> None:
    del ollama_double_image, clean_namespace
    port = free_port()
    chat = ollama_service(
        port,
        models="",
        on_demand=True,
        env={"OLLAMA_DOUBLE_REGISTRY": f"llama3.2:1b={SIZE}", "OLLAMA_DOUBLE_PULL_HOLD": "1"},
    )
    chat["model"] = "llama3.2:1b"
    chat["volumes"] = {str(tmp_path / "ollama"): "/root/.ollama"}
    write_profile("lazy", services={"chat": chat})
    body = {"model": "llama3.2:1b", "stream": True,
            "messages": [{"role": "user", "content": "hello there"}]}  # fmt: skip
    with serving("lazy") as served:
        comments: list[str] = []
        with httpx.stream(
            "POST", served.v1 + "/chat/completions", json=body, timeout=120, trust_env=False
        ) as response:
            lines = response.iter_lines()
            for line in lines:
                if line.startswith(":"):
                    comments.append(line)
                    if line.startswith(": downloading"):
                        break
            released = httpx.post(f"http://127.0.0.1:{port}/_double/release-pull", trust_env=False)
            assert released.status_code == 200
            rest = [line for line in lines if line]
        events = served.events()
    assert comments[-1] == ": downloading chat llama3.2:1b bbbbbbbbbbbb  0 B / 1.2 GiB (0%)"
    assert set(comments[:-1]) <= {": waiting for a backend"}
    assert rest[-1] == "data: [DONE]"
    downloads = [(e["done_bytes"], e["total_bytes"]) for e in events if e["event"] == "downloading"]
    assert downloads[0] == (0, SIZE)
    assert downloads[-1] == (SIZE, SIZE)
    assert [done for done, _ in downloads] == sorted(done for done, _ in downloads)
    (last,) = [e for e in events if e["event"] == "downloading" and e["done_bytes"] == SIZE]
    assert last["backend"] == "chat"
    assert last["detail"] == "llama3.2:1b bbbbbbbbbbbb  1.2 GiB / 1.2 GiB (100%)"
