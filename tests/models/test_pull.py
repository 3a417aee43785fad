"""`aitherctl pull` through the Hub contract double into real folders: the cache layout vLLM
reads (as the official client writes it), a llama.cpp `source:` file, a dropped connection,
Ctrl-C then resume, a disk too small, a gated repository and a wrong token."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aitherctl.cli.app import app
from tests.conftest import MODEL_FILE, MODELS_DIR
from tests.doubles.hf_hub import HubState, serve_hub
from tests.models.hub_helpers import (
    GATED_REPO,
    GGUF_REPO,
    HF_REPO,
    TOKEN,
    TOKEN_NOT_GRANTED,
    VLLM_MODEL,
    hub_state,
    need,
)

runner = CliRunner()
GGUF = Path(MODELS_DIR) / MODEL_FILE


def _gguf_profile(write_profile, models: Path, repo: str = GGUF_REPO) -> None:  # type: ignore[no-untyped-def]
    write_profile(
        "tiny",
        "services:\n"
        "  assistant:\n"
        "    engine: llamacpp\n"
        f"    model: /models/{MODEL_FILE}\n"
        f"    source: {repo}:{MODEL_FILE}\n"
        "    port: 18090\n"
        f"    volumes: {{{models}: /models:ro}}\n",
    )


def _pull(endpoint: str, *args: str, token: str | None = None, monkeypatch) -> object:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    if token is None:
        monkeypatch.delenv("HF_TOKEN", raising=False)
    else:
        monkeypatch.setenv("HF_TOKEN", token)
    return runner.invoke(app, ["pull", *args])


def _plain(text: str) -> str:
    """The output with the measured rate replaced (it depends on the machine)."""
    return re.sub(r"\d+(\.\d)? (MiB|GiB|B)/s", "RATE/s", text)


def test_pull_writes_a_llamacpp_source_file_where_its_model_path_is_mounted(
    tmp_path, write_profile, monkeypatch
) -> None:
    need(GGUF)
    models = tmp_path / "models"
    _gguf_profile(write_profile, models)
    with serve_hub(hub_state()) as endpoint:
        result = _pull(endpoint, "tiny", monkeypatch=monkeypatch)
        again = _pull(endpoint, "tiny", monkeypatch=monkeypatch)
    assert result.exit_code == 0, result.output
    assert (models / MODEL_FILE).read_bytes() == GGUF.read_bytes()
    assert not list(models.glob("*.incomplete"))
    # Without a terminal: a line as each file starts and as it ends (and, on a transfer of
    # more than 10 s, a progress line every 10 s, left out here).
    lines = [line for line in result.stderr.splitlines(keepends=True) if " ETA " not in line]
    assert _plain("".join(lines)) == (
        f"assistant  {MODEL_FILE}  94 MiB\nassistant  {MODEL_FILE}  94 MiB done  RATE/s\n"
    )
    assert result.stdout == f"assistant: 94 MiB downloaded: {models / MODEL_FILE}\n"
    assert again.exit_code == 0
    assert again.stdout == f"assistant: already there: {models / MODEL_FILE}\n"


def test_pull_fills_the_hugging_face_cache_as_the_official_client_does(
    tmp_path, write_profile, monkeypatch
) -> None:
    need(VLLM_MODEL)
    cache = tmp_path / "hf"
    write_profile(
        "big",
        "services:\n"
        f"  chat: {{engine: vllm, model: {HF_REPO}, port: 18091,"
        f" volumes: {{{cache}: /root/.cache/huggingface}}}}\n",
    )
    state = hub_state()
    with serve_hub(state) as endpoint:
        result = _pull(endpoint, "big", "--json", monkeypatch=monkeypatch)
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    repo = state.repos[HF_REPO]
    folder = cache / "hub" / f"models--{HF_REPO.replace('/', '--')}"
    assert (folder / "refs" / "main").read_text() == repo.commit
    snapshot = folder / "snapshots" / repo.commit
    assert sorted(p.name for p in snapshot.iterdir()) == sorted(repo.files)
    for name, hub_file in repo.files.items():
        assert os.readlink(snapshot / name) == f"../../blobs/{hub_file.etag}"
        assert (snapshot / name).read_bytes() == hub_file.path.read_bytes()
    assert {e["file"] for e in events if e["event"] == "done"} == set(repo.files)
    assert events[-1]["pulled"] == [
        {"service": "chat", "repo": HF_REPO, "destination": str(folder),
         "downloaded_bytes": sum(f.size for f in repo.files.values()),
         "files": len(repo.files), "already_present": False},
    ]  # fmt: skip


def test_a_dropped_connection_continues_from_where_it_broke(
    tmp_path, write_profile, monkeypatch
) -> None:
    need(GGUF)
    models = tmp_path / "models"
    _gguf_profile(write_profile, models)
    state = hub_state()
    state.drop_after_bytes = 30_000_000
    with serve_hub(state) as endpoint:
        result = _pull(endpoint, "tiny", "--json", monkeypatch=monkeypatch)
    assert result.exit_code == 0, result.output
    assert (models / MODEL_FILE).read_bytes() == GGUF.read_bytes()
    assert state.ranges() == [None, "bytes=30000000-"]
    retry = [json.loads(x) for x in result.stdout.splitlines() if '"retry"' in x]
    assert [(e["done_bytes"], e["note"]) for e in retry] == [
        (30_000_000, f"{GGUF_REPO}/{MODEL_FILE}: the transfer broke after 30,000,000 bytes "
                     "(RemoteProtocolError)"),
    ]  # fmt: skip


def test_ctrl_c_mid_pull_then_pull_again_resumes_the_incomplete_file(
    tmp_path, write_profile
) -> None:
    need(GGUF)
    models = tmp_path / "models"
    _gguf_profile(write_profile, models)
    state = hub_state()
    state.hold_after_bytes = 40_000_000
    partial = models / f"{MODEL_FILE}.incomplete"
    with serve_hub(state) as endpoint:
        env = {**os.environ, "HF_ENDPOINT": endpoint}
        command = [sys.executable, "-m", "aitherctl", "pull", "tiny"]
        process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
        assert state.held.wait(60)
        # The double has sent 40 MB and waits: wait until the client has written them all.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if partial.is_file() and partial.stat().st_size == 40_000_000:
                break
            time.sleep(0.02)  # polling a condition, with a deadline
        assert process.poll() is None, "the pull ended while the double held its answer"
        assert partial.stat().st_size == 40_000_000
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        state.release.set()
        assert process.returncode == 130, stderr
        assert stderr.endswith("interrupted: the download stopped; `aitherctl pull` continues it\n")
        assert partial.stat().st_size == 40_000_000
        resumed = subprocess.run(
            command, check=False, env=env, capture_output=True, text=True, timeout=120
        )
    assert resumed.returncode == 0, resumed.stderr
    assert "continuing from 38 MiB" in resumed.stderr
    assert state.ranges()[-1] == "bytes=40000000-"
    assert (models / MODEL_FILE).read_bytes() == GGUF.read_bytes()


def test_a_disk_too_small_is_refused_before_a_byte_is_downloaded(
    tmp_path, write_profile, monkeypatch
) -> None:
    need(GGUF)
    models = tmp_path / "tmpfs"
    models.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=50m", "tmpfs", str(models)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        _gguf_profile(write_profile, models)
        state = hub_state()
        with serve_hub(state) as endpoint:
            result = _pull(endpoint, "tiny", monkeypatch=monkeypatch)
        assert result.exit_code == 5
        assert result.stderr == (
            f"error: not enough disk space in {models} for 'assistant': the download needs "
            "94 MiB, 50 MiB is free; nothing was downloaded\n"
        )
        assert state.body_bytes_sent == 0
        assert list(models.iterdir()) == []
    finally:
        subprocess.run(["umount", str(models)], check=True)


@pytest.mark.parametrize(
    ("repo", "token", "expected"),
    [
        (GATED_REPO, None,
         f"error: {GATED_REPO} is a gated repository: accept its terms on the Hub, then set "
         "HF_TOKEN to a token of that account\n"),
        (GATED_REPO, TOKEN_NOT_GRANTED,
         f"error: {GATED_REPO} is a gated repository and the account of HF_TOKEN has no access "
         "yet: ask for it on the repository's page\n"),
        (GGUF_REPO, "hf_wrong_token",
         "error: the Hub at ENDPOINT does not accept the token in HF_TOKEN: set a valid one "
         "(huggingface.co/settings/tokens) or unset it\n"),
        ("nobody/nothing", None,
         "error: no repository nobody/nothing on the Hub at ENDPOINT (a private repository "
         "needs HF_TOKEN)\n"),
    ],
)  # fmt: skip
def test_a_refusal_from_the_hub_is_one_line_and_the_token_is_never_printed(  # noqa: PLR0917
    tmp_path, write_profile, monkeypatch, repo: str, token: str | None, expected: str
) -> None:
    need(GGUF)
    models = tmp_path / "models"
    _gguf_profile(write_profile, models, repo)
    with serve_hub(hub_state()) as endpoint:
        result = _pull(endpoint, "tiny", token=token, monkeypatch=monkeypatch)
    assert result.exit_code == (4 if repo == "nobody/nothing" else 5)
    assert result.stderr == expected.replace("ENDPOINT", endpoint)
    assert not models.exists() or list(models.iterdir()) == []
    if token:
        assert token not in result.output


def test_a_gated_repository_downloads_with_a_granted_token(
    tmp_path, write_profile, monkeypatch
) -> None:
    need(GGUF)
    models = tmp_path / "models"
    _gguf_profile(write_profile, models, GATED_REPO)
    state = hub_state()
    with serve_hub(state) as endpoint:
        result = _pull(endpoint, "tiny", token=TOKEN, monkeypatch=monkeypatch)
    assert result.exit_code == 0, result.output
    assert (models / MODEL_FILE).stat().st_size == GGUF.stat().st_size
    assert TOKEN not in result.output
    # The token goes to the Hub, never to the storage host it redirects to.
    assert {auth for _, path, _, auth in state.requests if path.startswith("/lfs-cdn/")} == {None}


def test_a_service_pull_cannot_serve_says_why_and_fails(
    tmp_path, write_profile, monkeypatch
) -> None:
    write_profile(
        "mixed",
        "services:\n"
        f"  local: {{engine: llamacpp, model: /models/x.gguf, port: 18092,"
        f" volumes: {{{tmp_path}/m: /models}}}}\n"
        "  images: {engine: comfyui, port: 18093}\n",
    )
    with serve_hub(HubState()) as endpoint:
        result = _pull(endpoint, "mixed", monkeypatch=monkeypatch)
    assert result.exit_code == 5
    assert result.stderr == (
        "warning: service 'local': not pulled: its model /models/x.gguf is a path and no "
        "`source: ORG/NAME:FILE` says where to download it from: add one, or put the file there\n"
        "warning: service 'images': not pulled: comfyui: its models are not pulled by "
        "aitherctl yet\n"
        "error: no model could be pulled for 'local' (see above)\n"
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{engine: llamacpp, model: /m/x.gguf, source: just-a-name, port: 18094}",
         "source: must be ORG/NAME:FILE, the Hugging Face repository and the file in it to "
         "download (e.g. bartowski/Qwen3-8B-GGUF:Qwen3-8B-Q4_K_M.gguf), not 'just-a-name'"),
        ("{engine: vllm, model: org/name, source: 'org/name:x.gguf', port: 18094}",
         "service 'one': `source` names the GGUF file a llama.cpp service downloads; this "
         "service's engine is "
         "vllm (its `model`, the Hub id, is what `pull` downloads)"),
    ],
)  # fmt: skip
def test_a_wrong_source_is_one_line_with_its_place(write_profile, line: str, expected: str) -> None:
    path = write_profile("bad", f"services:\n  one: {line}\n")
    result = runner.invoke(app, ["profile", "validate", str(path)])
    assert result.exit_code == 3
    assert result.stderr.splitlines() == [f"{path}:2: {expected}"]


def test_a_slow_link_shows_progress_with_its_rate_and_eta(
    tmp_path, write_profile, monkeypatch
) -> None:
    need(GGUF)
    models = tmp_path / "models"
    _gguf_profile(write_profile, models)
    state = hub_state()
    state.rate_bytes_per_s = 24 * 1024 * 1024  # about 4 s for the 94 MiB file
    with serve_hub(state) as endpoint:
        result = _pull(endpoint, "tiny", "--json", monkeypatch=monkeypatch)
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    progress = [e for e in events if e["event"] == "progress"]
    assert progress, "a transfer of several seconds reports its progress"
    size = GGUF.stat().st_size
    done = [e["done_bytes"] for e in progress]
    assert done == sorted(done)
    assert all(0 < d < size for d in done)
    for event in progress:
        assert event["total_bytes"] == size
        # The link's pace bounds the measured rate (one 256 KiB chunk of slack).
        assert 0 < event["rate_bytes_per_s"] <= state.rate_bytes_per_s * 1.1
        assert event["eta_s"] == pytest.approx(
            (size - event["done_bytes"]) / event["rate_bytes_per_s"]
        )
    assert [e["event"] for e in events if e["event"] != "progress"] == ["start", "done", "result"]


def test_a_service_on_another_host_is_pulled_into_what_it_mounts_there(write_profile) -> None:
    """Where a pull for another host's service lands (read from the profile alone: nothing is
    asked of that host yet): vLLM's cache volume there when the service mounts none, its own
    bind path of that host, a llama.cpp file's volume."""
    from aitherctl.models.pull import pull_targets
    from aitherctl.models.pull_model import PullKind, PullTarget
    from aitherctl.profiles.catalog import ProfileCatalog

    write_profile(
        "far",
        hosts={"gpu": {"docker": "ssh://root@gpu-box", "address": "127.0.0.1"}},
        services={
            "chat": {"engine": "vllm", "model": "org/chat", "port": 8000, "host": "gpu"},
            "code": {"engine": "vllm", "model": "org/code", "port": 8001, "host": "gpu",
                     "volumes": {"/srv/hf": "/root/.cache/huggingface"}},
            "small": {"engine": "llamacpp", "model": "/models/sub/m.gguf", "port": 8002,
                      "host": "gpu", "source": "org/small-GGUF:m.gguf",
                      "volumes": {"gguf-models": "/models:ro"}},
        },
    )  # fmt: skip

    def no_local_volume(name: str) -> str:
        raise AssertionError(f"asked this machine's engine for volume {name}")

    targets = pull_targets(ProfileCatalog().load("far"), None, no_local_volume)
    assert all(isinstance(t, PullTarget) for t in targets)
    assert [
        (t.service, t.kind, t.repo, t.filename, t.host, t.source, t.relative, t.destination)
        for t in targets
        if isinstance(t, PullTarget)
    ] == [
        ("chat", PullKind.HF_CACHE, "org/chat", None, "gpu", "aither-hf-cache",
         "hub/models--org--chat", "aither-hf-cache:/hub/models--org--chat"),
        ("code", PullKind.HF_CACHE, "org/code", None, "gpu", "/srv/hf",
         "hub/models--org--code", "/srv/hf/hub/models--org--code"),
        ("small", PullKind.FILE, "org/small-GGUF", "m.gguf", "gpu", "gguf-models", "sub/m.gguf",
         "gguf-models:/sub/m.gguf"),
    ]  # fmt: skip
