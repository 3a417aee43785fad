"""`pull` and the switch's download for services on another Docker host: node-a, a real engine
reached over SSH (scripts/test-hosts.sh), with the Hub contract double on this machine. The files
are downloaded here, then copied into node-a's named volume or folder through a short-lived
container there (aitherctl.docker.model_folders.HostFolders); what is checked is what the host's
containers read, looked at on node-a itself."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MODEL_FILE, MODELS_DIR, free_port, not_the_users, run_cli, web_service
from tests.doubles.hf_hub import HubState, serve_hub
from tests.hosts_helpers import TwoHosts
from tests.models.hub_helpers import GGUF_REPO, assert_llama_answers, hub_state

pytest_plugins = ["tests.hosts_helpers"]
pytestmark = pytest.mark.docker
LLAMA_IMAGE = "aither-test/llamacpp:latest"
BASE_IMAGE = "aither-test/base:bookworm"


@pytest.fixture
def node_volumes(two_hosts: TwoHosts, namespace: str) -> Iterator[Callable[..., str]]:
    """make(suffix, **driver_opts) → a volume name of this test on node-a (created there only
    when driver options are given); all of them removed from node-a afterwards."""
    names: list[str] = []
    client = two_hosts.a.local_client()

    def make(suffix: str, **options: str) -> str:
        name = f"{namespace}-{suffix}"
        names.append(name)
        if options:
            client.volumes.create(name, driver="local", driver_opts=options)
        return name

    yield make
    for name in names:
        with contextlib.suppress(Exception):
            client.volumes.get(name).remove(force=True)
    client.close()


def on_node(two_hosts: TwoHosts, volume: str, script: str) -> str:
    """Run `script` on node-a with `volume` at /v (read-only), through the node's own socket."""
    client = two_hosts.a.local_client()
    try:
        out = client.containers.run(
            BASE_IMAGE, ["sh", "-c", script], network_mode="none", remove=True,
            volumes={volume: {"bind": "/v", "mode": "ro"}},
        )  # fmt: skip
        return str(out.decode())
    finally:
        client.close()


def hosts_decl(two_hosts: TwoHosts) -> dict[str, Any]:
    return {"a": {"docker": two_hosts.a.url, "address": "127.0.0.1"}}


def gguf_on_a(port: int, volume: str, source: str = f"{GGUF_REPO}:{MODEL_FILE}") -> dict[str, Any]:
    return {
        "engine": "llamacpp", "image": LLAMA_IMAGE, "model": f"/models/{MODEL_FILE}",
        "source": source, "served_name": "smollm2", "port": port, "gpu": "none", "host": "a",
        "args": ["--ctx-size", "1024", "--threads", "1"],
        "volumes": {volume: "/models:ro"}, "health": {"timeout": 120},
    }  # fmt: skip


def events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _far_chat(write_profile: Callable[..., Path], two_hosts: TwoHosts, volume: str) -> None:
    """Profile `far`: a vLLM service `chat` (`org/chat`) on host a, its Hub cache in `volume`
    there."""
    write_profile("far", hosts=hosts_decl(two_hosts), services={"chat": {
        "engine": "vllm", "model": "org/chat", "port": free_port(), "gpu": "none", "host": "a",
        "image": BASE_IMAGE, "volumes": {volume: "/root/.cache/huggingface"},
    }})  # fmt: skip


def test_pull_copies_a_gguf_into_a_volume_of_another_host_and_models_shows_it_there(
    two_hosts: TwoHosts, write_profile, node_volumes, tmp_path
) -> None:
    volume = node_volumes("models")
    write_profile(
        "far", hosts=hosts_decl(two_hosts), services={"assistant": gguf_on_a(free_port(), volume)}
    )
    with serve_hub(hub_state()) as endpoint:
        pulled = run_cli("pull", "far", "--json", env={"HF_ENDPOINT": endpoint})
        again = run_cli("pull", "far", env={"HF_ENDPOINT": endpoint})
    assert pulled.returncode == 0, pulled.stderr
    steps = events(pulled.stdout)
    phases = [e["event"] for e in steps if e["event"] not in ("progress", "copy")]
    assert phases == ["start", "done", "copied", "result"]
    copies = [e for e in steps if e["event"] == "copy"]
    size = (Path(MODELS_DIR) / MODEL_FILE).stat().st_size
    assert copies[0] == {
        "event": "copy", "host": "a", "service": "assistant", "file": MODEL_FILE,
        "done_bytes": 0, "total_bytes": size, "rate_bytes_per_s": None, "eta_s": None,
        "resumed_from_bytes": 0, "note": None,
    }  # fmt: skip
    assert [e["done_bytes"] for e in steps if e["event"] == "copied"] == [size]
    assert steps[-1]["pulled"] == [{
        "service": "assistant", "repo": GGUF_REPO, "destination": f"{volume}:/{MODEL_FILE}",
        "downloaded_bytes": size, "files": 1, "already_present": False,
    }]  # fmt: skip
    # On node-a, the file the container will read, whole; nothing left beside it, nor here.
    listing = on_node(two_hosts, volume, "cd /v && for f in *; do echo $f; done; sha256sum *")
    assert listing.splitlines() == [
        MODEL_FILE,
        f"{sha256(Path(MODELS_DIR) / MODEL_FILE)}  {MODEL_FILE}",
    ]
    staged = tmp_path / "state" / "pull-staging"
    assert [p for p in staged.rglob("*") if p.is_file()] == []

    assert again.returncode == 0, again.stderr
    assert again.stdout == f"assistant: already there: {volume}:/{MODEL_FILE}\n"

    models = run_cli("models", "--json")
    assert models.returncode == 0, models.stderr
    assert [
        (m["name"], m["host"], m["path"], m["size_bytes"], m["state"], m["used_by"])
        for m in not_the_users(json.loads(models.stdout)["models"])
    ] == [(MODEL_FILE, "a", f"{volume}:/{MODEL_FILE}", size, "complete",
           [{"profile": "far", "service": "assistant", "running": False}])]  # fmt: skip


def chat_repo(tmp_path: Path) -> tuple[HubState, dict[str, Path]]:
    """A Hub repository `org/chat` with what vLLM loads: small git files and one LFS weights
    file (12 MiB: above the Hub's 10 MB LFS threshold, so its ETag is its sha256)."""
    folder = tmp_path / "hub-files"
    folder.mkdir()
    files = {
        "config.json": b'{"model_type": "llama"}',
        "tokenizer.json": b"{}" * 3000,
        "model.safetensors": bytes(range(256)) * (12 * 4096),
        "tokenizer_config.json": b"{}",
    }
    paths = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths[name] = folder / name
    state = HubState()
    state.add_repo("org/chat", paths)
    return state, paths


def test_an_interrupted_copy_to_another_host_continues_where_it_stopped(
    two_hosts: TwoHosts, write_profile, node_volumes, tmp_path
) -> None:
    """Ctrl-C while the weights go to node-a: the next `pull` downloads nothing again, does not
    copy again the files that reached the host whole, and leaves huggingface_hub's cache layout
    there (the snapshot's links resolve to the blobs; `refs/main` names the snapshot)."""
    from aitherctl.docker.engine import DockerEngine
    from aitherctl.docker.model_folders import HostFolders
    from aitherctl.models.hub import HubClient
    from aitherctl.models.pull import pull, pull_targets, settle_remote
    from aitherctl.models.pull_model import PullEvent, PullPhase, PullTarget
    from aitherctl.profiles.catalog import ProfileCatalog

    volume = node_volumes("hf")
    _far_chat(write_profile, two_hosts, volume)
    state, paths = chat_repo(tmp_path)
    profile = ProfileCatalog().load("far")
    engine = DockerEngine.connect_host("a", two_hosts.a.url, "127.0.0.1")
    hosts = {"a": HostFolders(engine.client, BASE_IMAGE, "a")}
    seen: list[PullEvent] = []

    def stop_in_the_weights(event: PullEvent) -> None:
        seen.append(event)
        weights = event.phase is PullPhase.COPY and event.file == "model.safetensors"
        if weights and event.done_bytes >= 4 * 1024 * 1024:
            raise KeyboardInterrupt

    ticks = itertools.count(step=2.0)  # every chunk is a progress event
    with serve_hub(state) as endpoint:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("HF_ENDPOINT", endpoint)
            targets = [t for t in pull_targets(profile, None, str) if isinstance(t, PullTarget)]
            assert [(t.host, t.source, t.relative, t.destination) for t in targets] == [
                ("a", volume, "hub/models--org--chat", f"{volume}:/hub/models--org--chat")
            ]
            hub = HubClient.open()
            try:
                with pytest.raises(KeyboardInterrupt):
                    pull(settle_remote(targets, hosts), hub, stop_in_the_weights,
                         clock=lambda: next(ticks), hosts=hosts)  # fmt: skip
            finally:
                hub.close()
                engine.close()
        order = [e.file for e in seen if e.phase is PullPhase.COPY and not e.done_bytes]
        # The listing's order; each file downloaded whole before any copy began.
        assert order == ["config.json", "tokenizer.json", "model.safetensors"]
        again = run_cli("pull", "far", "--json", env={"HF_ENDPOINT": endpoint})
    assert again.returncode == 0, again.stderr
    steps = events(again.stdout)
    assert [e for e in steps if e["event"] in ("start", "progress", "done")] == []
    assert [(e["file"], e["done_bytes"]) for e in steps if e["event"] == "copied"] == [
        ("model.safetensors", 12 * 1024 * 1024),
        ("tokenizer_config.json", 2),
    ]
    assert steps[-1]["pulled"][0]["downloaded_bytes"] == 0
    commit = state.repos["org/chat"].commit
    seen_there = on_node(two_hosts, volume, (
        "cd /v/hub/models--org--chat && cat refs/main && echo && ls blobs && "
        f"cd snapshots/{commit} && sha256sum *"
    )).splitlines()  # fmt: skip
    assert seen_there[0] == commit
    assert not any(name.endswith(".incomplete") for name in seen_there[1:5])
    assert sorted(seen_there[5:]) == sorted(f"{sha256(p)}  {name}" for name, p in paths.items())

    models = not_the_users(json.loads(run_cli("models", "--json").stdout)["models"])
    assert [(m["name"], m["host"], m["state"]) for m in models] == [("org/chat", "a", "complete")]


def test_a_host_folder_too_small_is_refused_before_a_byte_is_downloaded(
    two_hosts: TwoHosts, write_profile, node_volumes, tmp_path
) -> None:
    volume = node_volumes("tiny", type="tmpfs", device="tmpfs", o="size=8m")
    write_profile(
        "far", hosts=hosts_decl(two_hosts), services={"assistant": gguf_on_a(free_port(), volume)}
    )
    state = hub_state()
    with serve_hub(state) as endpoint:
        refused = run_cli("pull", "far", env={"HF_ENDPOINT": endpoint})
    assert refused.returncode == 5, refused.stderr
    assert refused.stderr.splitlines()[-1] == (
        f"error: not enough disk space on host 'a' in {volume} for 'assistant': the copy needs "
        "94 MiB, 8 MiB is free; nothing was downloaded"
    )
    assert state.ranges() == []  # the file itself was never asked for
    assert not (tmp_path / "state" / "pull-staging").exists() or not any(
        p.is_file() for p in (tmp_path / "state" / "pull-staging").rglob("*")
    )


def test_a_switch_pulls_to_another_host_first_and_a_failed_pull_changes_nothing_there(
    two_hosts: TwoHosts, write_profile, node_volumes, namespace
) -> None:
    """On node-a: the old set keeps running when the download fails; then the switch downloads
    the GGUF, copies it into node-a's volume, and the real llama.cpp there serves it."""
    from tests.switching.test_hosts_switch import containers

    volume = node_volumes("models")
    web, llm = free_port(), free_port()
    site = {**web_service(web), "host": "a"}
    write_profile("old", hosts=hosts_decl(two_hosts), services={"site": site})
    write_profile("new", hosts=hosts_decl(two_hosts),
                  services={"assistant": gguf_on_a(llm, volume)})  # fmt: skip
    write_profile("broken", hosts=hosts_decl(two_hosts), services={
        "assistant": gguf_on_a(llm, volume, source=f"nobody/nothing:{MODEL_FILE}")
    })  # fmt: skip
    try:
        assert run_cli("profile", "switch", "old", "--yes").returncode == 0
        before = containers(two_hosts.a, namespace)
        with serve_hub(hub_state()) as endpoint:
            env = {"HF_ENDPOINT": endpoint}
            failed = run_cli("profile", "switch", "broken", "--yes", env=env)
            assert failed.returncode == 5, failed.stderr
            assert failed.stderr.splitlines()[-1] == (
                "error: host 'a': downloading the model failed: no repository nobody/nothing on "
                f"the Hub at {endpoint} (a private repository needs HF_TOKEN); nothing was changed"
            )
            assert containers(two_hosts.a, namespace) == before
            switched = run_cli("profile", "switch", "new", "--yes", env=env)
        assert switched.returncode == 0, switched.stderr
        assert f"downloading {GGUF_REPO} (assistant)" in switched.stderr
        assert f"assistant  {MODEL_FILE}  94 MiB copied to host 'a'" in switched.stderr
        assert_llama_answers(llm)
    finally:
        run_cli("down", "--all", "--yes")


def test_what_cannot_be_pulled_to_another_host_says_why(two_hosts: TwoHosts, write_profile) -> None:
    """A host that cannot be reached, an Ollama server elsewhere (it pulls its own model when
    the switch starts it), a model path with no `source:`: one line each, and the exit code
    says a model is missing only for the first."""
    write_profile(
        "spread",
        hosts={**hosts_decl(two_hosts),
               "z": {"docker": "ssh://root@127.0.0.1:1", "address": "127.0.0.1"}},
        services={
            "gone": gguf_on_a(free_port(), "models") | {"host": "z"},
            "chat": {"engine": "ollama", "model": "llama3.2:1b", "port": free_port(),
                     "gpu": "none", "host": "a", "image": LLAMA_IMAGE},
            "placed": {k: v for k, v in gguf_on_a(free_port(), "models").items()
                       if k != "source"},
        },
    )  # fmt: skip
    result = run_cli("pull", "spread")
    assert result.returncode == 5
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "warning: service 'gone': not pulled: host 'z': cannot use ssh://root@127.0.0.1:1: "
        "connection refused",
        "warning: service 'chat': not pulled: on host 'a': its Ollama server pulls it when the "
        "switch starts it",
        f"warning: service 'placed': not pulled: on host 'a': its model /models/{MODEL_FILE} is "
        "a path and no `source: ORG/NAME:FILE` says where to download it from",
        "error: no model could be pulled for 'gone' (see above)",
    ]


def test_a_copy_that_arrived_damaged_is_removed_and_the_next_pull_sends_it_again(
    two_hosts: TwoHosts, write_profile, node_volumes, tmp_path
) -> None:
    """A whole-sized `.incomplete` blob on node-a whose bytes are not the Hub's (a disk fault, a
    copy from something else): its sha256, checked there before the rename, refuses it."""
    volume = node_volumes("hf")
    _far_chat(write_profile, two_hosts, volume)
    state, paths = chat_repo(tmp_path)
    blob = sha256(paths["model.safetensors"])
    size = paths["model.safetensors"].stat().st_size
    client = two_hosts.a.local_client()
    try:
        client.containers.run(
            BASE_IMAGE, ["sh", "-c", f"mkdir -p {(where := '/v/hub/models--org--chat/blobs')} "
                         f"&& head -c {size} /dev/zero > {where}/{blob}.incomplete"],
            network_mode="none", remove=True, volumes={volume: {"bind": "/v", "mode": "rw"}},
        )  # fmt: skip
    finally:
        client.close()
    with serve_hub(state) as endpoint:
        damaged = run_cli("pull", "far", env={"HF_ENDPOINT": endpoint})
        again = run_cli("pull", "far", "--json", env={"HF_ENDPOINT": endpoint})
    assert damaged.returncode == 1, damaged.stderr
    assert damaged.stderr.splitlines()[-1] == (
        f"error: putting the model in place failed: hub/models--org--chat/blobs/{blob} arrived "
        "damaged (its sha256 is not the Hub's) and was removed: `aitherctl pull` copies it again"
    )
    assert again.returncode == 0, again.stderr
    steps = events(again.stdout)
    assert [e["file"] for e in steps if e["event"] == "copied"] == ["model.safetensors"]
    # The first pull took the damaged file for a copy only its rename was left of: the weights
    # are downloaded now, and only they are.
    assert [e["file"] for e in steps if e["event"] == "start"] == ["model.safetensors"]
    commit = state.repos["org/chat"].commit
    there = on_node(two_hosts, volume, f"sha256sum /v/hub/models--org--chat/snapshots/{commit}/*")
    assert sorted(line.split()[0] for line in there.splitlines()) == sorted(
        sha256(p) for p in paths.values()
    )
