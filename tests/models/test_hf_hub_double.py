"""The Hub double against the official `huggingface_hub` client (the one vLLM and transformers
use, from the vLLM test venv): what the client downloads and how it fails is what our `pull`
must match."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.conftest import MODEL_FILE, MODELS_DIR
from tests.doubles.hf_hub import serve_hub
from tests.models.hub_helpers import (
    GATED_REPO,
    GGUF_REPO,
    TOKEN,
    TOKEN_NOT_GRANTED,
    VLLM_VENV,
    hub_state,
    need,
)


def _official(endpoint: str, cache: Path, code: str, token: str | None = None) -> str:
    python = need(VLLM_VENV / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env |= {"HF_ENDPOINT": endpoint, "HF_HUB_CACHE": str(cache), "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DOWNLOAD_TIMEOUT": "10"}  # fmt: skip
    if token:
        env["HF_TOKEN"] = token
    result = subprocess.run(
        [str(python), "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    return result.stdout.strip() or result.stderr.strip().splitlines()[-1]


DOWNLOAD = f"""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, HfHubHTTPError
    try:
        print(hf_hub_download(REPO, {MODEL_FILE!r}))
    except GatedRepoError as e:
        print("gated", e.response.status_code)
    except RepositoryNotFoundError as e:
        print("not found", e.response.status_code)
    except HfHubHTTPError as e:
        print("http", e.response.status_code, e.response.headers.get("X-Error-Message"))
"""


def test_the_official_client_downloads_into_its_cache_layout(tmp_path: Path) -> None:
    state = hub_state()
    with serve_hub(state) as endpoint:
        path = _official(endpoint, tmp_path, DOWNLOAD.replace("REPO", repr(GGUF_REPO)))
    commit = state.repos[GGUF_REPO].commit
    sha = state.repos[GGUF_REPO].files[MODEL_FILE].etag
    folder = tmp_path / f"models--{GGUF_REPO.replace('/', '--')}"
    assert path == str(folder / "snapshots" / commit / MODEL_FILE)
    assert os.readlink(path) == f"../../blobs/{sha}"
    assert (folder / "refs" / "main").read_text() == commit
    assert Path(path).read_bytes() == (Path(MODELS_DIR) / MODEL_FILE).read_bytes()


@pytest.mark.parametrize(
    ("repo", "token", "expected"),
    [
        (GATED_REPO, None, "gated 401"),
        (GATED_REPO, TOKEN_NOT_GRANTED, "gated 403"),
        (GATED_REPO, TOKEN, "ok"),
        ("nobody/nothing", None, "not found 401"),
        (GGUF_REPO, "hf_wrong", "http 401 Invalid credentials in Authorization header"),
    ],
)
def test_the_official_client_sees_the_hubs_refusals(
    tmp_path: Path, repo: str, token: str | None, expected: str
) -> None:
    with serve_hub(hub_state()) as endpoint:
        said = _official(endpoint, tmp_path, DOWNLOAD.replace("REPO", repr(repo)), token)
    assert ("ok" if said.endswith(MODEL_FILE) else said) == expected


def test_a_dropped_connection_is_a_broken_transfer_the_client_retries(tmp_path: Path) -> None:
    state = hub_state()
    state.drop_after_bytes = 10_000_000
    with serve_hub(state) as endpoint:
        path = _official(endpoint, tmp_path, DOWNLOAD.replace("REPO", repr(GGUF_REPO)))
    assert Path(path).read_bytes() == (Path(MODELS_DIR) / MODEL_FILE).read_bytes()
    assert len(state.ranges()) == 2  # huggingface_hub 2.4 starts its retry over from byte 0


def test_the_storage_answers_a_range_from_where_a_transfer_stopped() -> None:
    import httpx

    whole = (Path(MODELS_DIR) / MODEL_FILE).read_bytes()
    with serve_hub(hub_state()) as endpoint:
        url = f"{endpoint}/{GGUF_REPO}/resolve/main/{MODEL_FILE}"
        head = httpx.head(url)
        answer = httpx.get(head.headers["Location"], headers={"Range": "bytes=98000000-"})
        beyond = httpx.get(head.headers["Location"], headers={"Range": f"bytes={len(whole)}-"})
    assert head.status_code == 302
    assert int(head.headers["X-Linked-Size"]) == len(whole)
    assert answer.status_code == 206
    assert answer.headers["Content-Range"] == f"bytes 98000000-{len(whole) - 1}/{len(whole)}"
    assert answer.content == whole[98_000_000:]
    assert beyond.status_code == 416
