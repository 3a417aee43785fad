"""`profile switch` downloads a missing model before it touches the running set: `--no-pull`
refuses instead, a failed download leaves the old set running, a good one is served."""

from __future__ import annotations

import pytest

from tests.conftest import MODEL_FILE, free_port, llama_service, run_cli, web_service
from tests.doubles.hf_hub import serve_hub
from tests.models.hub_helpers import GGUF_REPO, assert_llama_answers, hub_state

pytestmark = pytest.mark.docker


def _running(engine: object) -> dict[str, str]:
    return {c.service: c.id for c in engine.list_managed() if c.running}  # type: ignore[attr-defined]


def test_switch_pulls_a_missing_model_first_and_a_failed_pull_changes_nothing(
    clean_namespace, write_profile, base_image, llama_image, tmp_path
) -> None:
    del llama_image
    models = tmp_path / "models"
    web_port, llm_port = free_port(), free_port()
    write_profile("old", services={"site": web_service(web_port)})
    service = llama_service(llm_port, source=f"{GGUF_REPO}:{MODEL_FILE}")
    service["volumes"] = {str(models): "/models:ro"}
    write_profile("new", services={"assistant": service})
    broken = llama_service(llm_port, source=f"nobody/nothing:{MODEL_FILE}")
    broken["volumes"] = {str(models): "/models:ro"}
    write_profile("broken", services={"assistant": broken})
    assert run_cli("profile", "switch", "old", "--yes").returncode == 0
    before = _running(clean_namespace)
    try:
        with serve_hub(hub_state()) as endpoint:
            env = {"HF_ENDPOINT": endpoint}
            refused = run_cli("profile", "switch", "new", "--yes", "--no-pull", env=env)
            assert refused.returncode == 5
            assert refused.stderr.splitlines()[-1] == (
                f"error: the model of service 'assistant' ({GGUF_REPO}) is not downloaded: run "
                "`aitherctl pull new` first, or leave out --no-pull"
            )
            assert _running(clean_namespace) == before

            failed = run_cli("profile", "switch", "broken", "--yes", env=env)
            assert failed.returncode == 5, failed.stderr
            assert failed.stderr.splitlines()[-1] == (
                "error: downloading the model failed: no repository nobody/nothing on the Hub at "
                f"{endpoint} (a private repository needs HF_TOKEN); nothing was changed"
            )
            assert _running(clean_namespace) == before
            assert not models.exists() or list(models.iterdir()) == []

            switched = run_cli("profile", "switch", "new", "--yes", env=env)
        assert switched.returncode == 0, switched.stderr
        assert f"  downloading {GGUF_REPO} (assistant)\n" in switched.stderr
        assert f"  assistant  {MODEL_FILE}  94 MiB\n" in switched.stderr
        assert set(_running(clean_namespace)) == {"assistant"}
        assert_llama_answers(llm_port)
    finally:
        run_cli("down", "--all", "--yes")


def test_offline_the_switch_asks_no_hub_and_leaves_the_model_to_the_engine(
    clean_namespace, write_profile, llama_image, tmp_path
) -> None:
    """HF_HUB_OFFLINE=1 (huggingface_hub's variable): no download and no `--no-pull` refusal;
    the engine meets the missing file itself, and the switch rolls back as before."""
    del llama_image
    service = llama_service(free_port(), source=f"{GGUF_REPO}:{MODEL_FILE}")
    service["volumes"] = {str(tmp_path / "models"): "/models:ro"}
    service["health"] = {"timeout": 60}
    write_profile("offline", services={"assistant": service})
    state = hub_state()
    try:
        with serve_hub(state) as endpoint:
            env = {"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "1"}
            result = run_cli("profile", "switch", "offline", "--yes", "--no-pull", env=env)
        assert result.returncode == 6, result.stderr
        assert state.requests == []
        assert "is not downloaded" not in result.stderr
        assert _running(clean_namespace) == {}
    finally:
        run_cli("down", "--all", "--yes")


def test_up_pulls_a_missing_model_first_as_the_switch_does(
    clean_namespace, write_profile, llama_image, tmp_path
) -> None:
    del llama_image
    models = tmp_path / "models"
    service = llama_service(free_port(), source=f"{GGUF_REPO}:{MODEL_FILE}")
    service["volumes"] = {str(models): "/models:ro"}
    write_profile("new", services={"assistant": service})
    try:
        with serve_hub(hub_state()) as endpoint:
            env = {"HF_ENDPOINT": endpoint}
            refused = run_cli("up", "assistant", "-p", "new", "--yes", "--no-pull", env=env)
            assert refused.returncode == 5, refused.stderr
            assert refused.stderr.splitlines()[-1] == (
                f"error: the model of service 'assistant' ({GGUF_REPO}) is not downloaded: run "
                "`aitherctl pull new` first, or leave out --no-pull"
            )
            assert _running(clean_namespace) == {}
            started = run_cli("up", "assistant", "-p", "new", "--yes", env=env)
        assert started.returncode == 0, started.stderr
        assert f"  downloading {GGUF_REPO} (assistant)\n" in started.stderr
        assert (models / MODEL_FILE).is_file()
        assert set(_running(clean_namespace)) == {"assistant"}
    finally:
        run_cli("down", "--all", "--yes")


def test_a_service_whose_own_env_is_offline_is_left_to_its_engine(
    clean_namespace, write_profile, llama_image, tmp_path
) -> None:
    """HF_HUB_OFFLINE=1 in the service's `env:` (its engine will not download): the switch asks
    the Hub nothing for it and does not refuse under --no-pull, as with the variable set here."""
    del llama_image
    service = llama_service(free_port(), source=f"{GGUF_REPO}:{MODEL_FILE}")
    service["volumes"] = {str(tmp_path / "models"): "/models:ro"}
    service["env"] = {"HF_HUB_OFFLINE": "1"}
    service["health"] = {"timeout": 60}
    write_profile("offline", services={"assistant": service})
    state = hub_state()
    try:
        with serve_hub(state) as endpoint:
            env = {"HF_ENDPOINT": endpoint}
            result = run_cli("profile", "switch", "offline", "--yes", "--no-pull", env=env)
        assert result.returncode == 6, result.stderr
        assert state.requests == []
        assert "is not downloaded" not in result.stderr
        assert _running(clean_namespace) == {}
    finally:
        run_cli("down", "--all", "--yes")
