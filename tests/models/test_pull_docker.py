"""`pull` into a real named Docker volume, then the real llama.cpp container serves what was
pulled: the file is where the engine reads it, whole."""

from __future__ import annotations

import contextlib

import pytest

from tests.conftest import MODEL_FILE, free_port, llama_service, run_cli, sdk_of
from tests.doubles.hf_hub import serve_hub
from tests.models.hub_helpers import GGUF_REPO, assert_llama_answers, hub_state

pytestmark = pytest.mark.docker


def test_a_pulled_gguf_in_a_docker_volume_is_served_by_the_real_llamacpp(
    clean_namespace, namespace, write_profile, llama_image
) -> None:
    del llama_image
    volume = f"{namespace}-pulled-models"
    port = free_port()
    service = llama_service(port, source=f"{GGUF_REPO}:{MODEL_FILE}")
    service["volumes"] = {volume: "/models:ro"}
    write_profile("pulled", services={"assistant": service})
    sdk = sdk_of(clean_namespace)
    try:
        with serve_hub(hub_state()) as endpoint:
            pulled = run_cli("pull", "pulled", env={"HF_ENDPOINT": endpoint})
        assert pulled.returncode == 0, pulled.stderr
        mountpoint = sdk.volumes.get(volume).attrs["Mountpoint"]
        assert pulled.stdout == f"assistant: 94 MiB downloaded: {mountpoint}/{MODEL_FILE}\n"
        switched = run_cli("profile", "switch", "pulled", "--yes")
        assert switched.returncode == 0, switched.stderr
        assert assert_llama_answers(port)["usage"]["completion_tokens"] >= 1
    finally:
        run_cli("down", "--all", "--yes")
        with contextlib.suppress(Exception):
            sdk.volumes.get(volume).remove(force=True)
