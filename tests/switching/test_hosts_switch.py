"""One profile across two real Docker hosts reached over SSH (node-a, node-b: private engines
behind sshd on loopback, scripts/test-hosts.sh), driven through the real `aitherctl` CLI.

What a user checks: the switch starts one llama.cpp on each host and says where; `ps` lists both
with their host; `run` answers, and falls back to the other host when a container is stopped;
a service that never turns ready on one host rolls both hosts back to their previous
containers; a host whose engine dies mid-switch is named, the other host is rolled back, and
`aitherctl recover` finishes on the dead host once it is back; a host that cannot be reached
changes nothing anywhere; `serve` answers from both hosts and falls back across them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import MODEL_FILE, MODELS_DIR, free_port, run_cli
from tests.hosts_helpers import (
    TwoHosts,
    cleanup_nodes,
    engine_down,
    ensure_up,
    sshd_down,
    stderr_until,
)

pytest_plugins = ["tests.hosts_helpers"]
pytestmark = pytest.mark.docker

LLAMA_IMAGE = "aither-test/llamacpp:latest"
BASE_IMAGE = "aither-test/base:bookworm"


def llama(port: int, host: str, *extra: str) -> dict[str, Any]:
    return {
        "engine": "llamacpp",
        "image": LLAMA_IMAGE,
        "model": f"/models/{MODEL_FILE}",
        "served_name": "smollm2",
        "port": port,
        "gpu": "none",
        "host": host,
        "args": ["--ctx-size", "1024", "--threads", "1", *extra],
        "volumes": {MODELS_DIR: "/models:ro"},
        "health": {"timeout": 120},
    }


def never_ready(port: int, host: str, timeout: int = 8) -> dict[str, Any]:
    """A real HTTP server whose health path answers 404: it never turns ready."""
    return {
        "engine": "generic",
        "image": BASE_IMAGE,
        "port": port,
        "gpu": "none",
        "host": host,
        "args": ["python3", "-m", "http.server", str(port)],
        "health": {"path": "/never-there", "timeout": timeout},
    }


def slow_ready(port: int, host: str) -> dict[str, Any]:
    """A real HTTP server that starts answering only after 60 s."""
    return {
        "engine": "generic",
        "image": BASE_IMAGE,
        "port": port,
        "gpu": "none",
        "host": host,
        "args": ["sh", "-c", f"sleep 60; exec python3 -m http.server {port}"],
        "health": {"path": "/", "timeout": 120},
    }


@pytest.fixture
def hosts(fresh_hosts: TwoHosts) -> Iterator[TwoHosts]:
    yield fresh_hosts
    ensure_up(fresh_hosts)


@pytest.fixture
def profile(write_profile: Callable[..., Path], hosts: TwoHosts) -> Callable[..., Path]:
    def write(name: str, services: dict[str, Any], **top: Any) -> Path:
        declared = {
            "a": {"docker": hosts.a.url, "address": "127.0.0.1"},
            "b": {"docker": hosts.b.url, "address": "127.0.0.1"},
        }
        return write_profile(name, hosts=declared, services=services, **top)

    return write


def cli_ok(*args: str) -> subprocess.CompletedProcess[str]:
    done = run_cli(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def containers(node: Any, namespace: str) -> dict[str, tuple[str, str]]:
    """name → (id, status) of the namespace's containers on the node, read on its own socket."""
    client = node.local_client()
    try:
        found = client.containers.list(
            all=True, filters={"label": f"ai.aitherctl.namespace={namespace}"}
        )
        return {c.name: (c.id, c.status) for c in found}
    finally:
        client.close()


def answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def test_one_profile_on_two_hosts_switches_lists_answers_and_falls_back(
    profile: Callable[..., Path], hosts: TwoHosts, namespace: str
) -> None:
    port_a, port_b = free_port(), free_port()
    routing = {"tiers": {"all": {"effort": "1-10", "candidates": ["one", "two"]}}, "max_tokens": 8}
    profile("duo", {"one": llama(port_a, "a"), "two": llama(port_b, "b")}, routing=routing)

    done = cli_ok("profile", "switch", "duo", "--yes", "--json")
    report = json.loads(done.stdout)
    assert {(s["host"], s["service"], s["action"]) for s in report["steps"]} == {
        ("a", "one", "start"),
        ("b", "two", "start"),
    }
    assert all(s["ready"] for s in report["services"])
    assert report["urls"] == {
        "one@a": f"http://127.0.0.1:{port_a}/v1",
        "two@b": f"http://127.0.0.1:{port_b}/v1",
    }
    # Each container is on its own engine, and nowhere else.
    assert set(containers(hosts.a, namespace)) == {f"aither-{namespace}-one"}
    assert set(containers(hosts.b, namespace)) == {f"aither-{namespace}-two"}
    assert answers(port_a)
    assert answers(port_b)

    listing = json.loads(cli_ok("ps", "--json").stdout)
    assert listing["active_profile"] == "duo"
    assert {(r["host"], r["service"], r["health"]) for r in listing["services"]} == {
        ("a", "one", "healthy"),
        ("b", "two", "healthy"),
    }
    assert listing["hosts"]["a"] == hosts.a.url
    assert listing["unreachable"] == []
    table = cli_ok("ps").stdout
    assert any(line.split()[:2] == ["host", "service"] for line in table.splitlines() if line)

    first = json.loads(cli_ok("run", "--json", "Say hello.").stdout)
    assert first["backend"] == "one"
    assert first["answer"].strip()

    # node-a's container stops: the next run answers from node-b.
    client = hosts.a.local_client()
    try:
        client.containers.get(f"aither-{namespace}-one").stop(timeout=5)
    finally:
        client.close()
    second = json.loads(cli_ok("run", "--json", "Say hello.").stdout)
    assert second["backend"] == "two"
    assert second["answer"].strip()
    assert second["attempts"][0]["backend"] == "one"
    assert second["attempts"][0]["outcome"] != "ok"

    logs = cli_ok("logs", "two", "-n", "5").stdout
    assert logs.strip()

    # A one-machine profile: what ran on both hosts is stopped, and ps forgets them.
    profile("solo", {})
    cli_ok("profile", "switch", "solo", "--yes")
    assert not any(status == "running" for _, status in containers(hosts.a, namespace).values())
    assert not containers(hosts.b, namespace)
    assert json.loads(cli_ok("ps", "--json").stdout)["services"] == []


def test_a_service_that_never_answers_on_one_host_rolls_back_both(
    profile: Callable[..., Path], hosts: TwoHosts, namespace: str
) -> None:
    port_a, port_b = free_port(), free_port()
    profile("before", {"one": llama(port_a, "a"), "two": llama(port_b, "b")})
    cli_ok("profile", "switch", "before", "--yes")
    was_a, was_b = containers(hosts.a, namespace), containers(hosts.b, namespace)

    # node-a's service changes (a new container), node-b's is replaced by one that never answers.
    profile(
        "after", {"one": llama(port_a, "a", "--parallel", "2"), "two": never_ready(port_b, "b")}
    )
    done = run_cli("profile", "switch", "after", "--yes")
    assert done.returncode != 0
    message = done.stderr
    assert "service 'two' on host 'b' did not become ready" in message, message
    assert "host 'a': rolled back (restored: one)" in message, message
    assert "host 'b': rolled back (restored: two)" in message, message
    assert "Traceback" not in message
    # The very same containers run again on both hosts, and answer; nothing of `after` is left.
    assert containers(hosts.a, namespace) == was_a
    assert containers(hosts.b, namespace) == was_b
    assert answers(port_a)
    assert answers(port_b)


def test_an_engine_killed_mid_switch_is_named_and_recover_finishes_there(
    profile: Callable[..., Path], hosts: TwoHosts, namespace: str
) -> None:
    port_a, port_b = free_port(), free_port()
    profile("before", {"one": llama(port_a, "a")})
    cli_ok("profile", "switch", "before", "--yes")
    was_a = containers(hosts.a, namespace)
    profile("after", {"one": llama(port_a, "a", "--parallel", "2"), "two": slow_ready(port_b, "b")})

    process = subprocess.Popen(
        [sys.executable, "-m", "aitherctl", "profile", "switch", "after", "--yes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ),
    )
    seen = stderr_until(
        process, lambda seen: b"two@b" in seen and b"waiting" in seen.split(b"two@b")[-1], 120
    )
    with engine_down(hosts.b):
        _out, err = process.communicate(timeout=180)
        message = seen.decode() + err.decode()
        assert process.returncode != 0
        assert "host 'b'" in message, message
        assert "lost the Docker engine" in message, message
        assert "host 'a': rolled back (restored: one)" in message, message
        assert "aitherctl recover" in message
        assert "Traceback" not in message
        # node-a is back to its previous container, answering, while node-b is still down.
        assert containers(hosts.a, namespace) == was_a
        assert answers(port_a)
    # node-b is back: recover finishes the rollback there (its new container is removed).
    done = cli_ok("recover", "--json")
    assert any(item["action"] == "rolled back" for item in json.loads(done.stdout)["recovered"])
    assert not containers(hosts.b, namespace)


def test_a_host_that_cannot_be_reached_changes_nothing_anywhere(
    profile: Callable[..., Path], hosts: TwoHosts, namespace: str
) -> None:
    port_a, port_b = free_port(), free_port()
    profile("duo", {"one": llama(port_a, "a"), "two": llama(port_b, "b")})
    with sshd_down():
        done = run_cli("profile", "switch", "duo", "--yes")
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert len(lines) == 1, done.stderr
    assert "host 'a'" in lines[0]
    assert "host 'b'" in lines[0]
    assert "nothing was changed" in lines[0]
    assert not containers(hosts.a, namespace)
    assert not containers(hosts.b, namespace)


def test_serve_answers_from_both_hosts_and_falls_back_across_them(
    profile: Callable[..., Path], hosts: TwoHosts, namespace: str
) -> None:
    from tests.serve.docker.serve_helpers import serving

    port_a, port_b = free_port(), free_port()
    routing = {"tiers": {"all": {"effort": "1-10", "candidates": ["one", "two"]}}}
    profile("duo", {"one": llama(port_a, "a"), "two": llama(port_b, "b")}, routing=routing)
    cli_ok("profile", "switch", "duo", "--yes")
    with serving("duo") as served:
        body = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}
        for model in ("one", "two"):
            answer = httpx.post(
                f"{served.url}/v1/chat/completions", json={**body, "model": model}, timeout=120
            )
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-aither-backend"] == model
        client = hosts.a.local_client()
        try:
            client.containers.get(f"aither-{namespace}-one").stop(timeout=5)
        finally:
            client.close()
        answer = httpx.post(
            f"{served.url}/v1/chat/completions", json={**body, "model": "all"}, timeout=120
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-aither-backend"] == "two"
    cleanup_nodes(hosts, namespace)


def web(port: int, host: str) -> dict[str, Any]:
    """A real HTTP server that answers at once."""
    return {
        "engine": "generic",
        "image": BASE_IMAGE,
        "port": port,
        "gpu": "none",
        "host": host,
        "args": ["python3", "-m", "http.server", str(port)],
        "health": {"path": "/"},
    }


def test_a_stopped_container_on_a_host_is_planned_as_resume_and_resumed(
    profile: Callable[..., Path], hosts: TwoHosts, namespace: str
) -> None:
    """A node stopped one of the profile's containers (a reboot, an OOM kill): the plan says
    `resume` on that host, table and JSON, and the switch starts that same container again."""
    port_a, port_b = free_port(), free_port()
    profile("pair", {"one": web(port_a, "a"), "two": web(port_b, "b")})
    cli_ok("profile", "switch", "pair", "--yes")
    was_b = containers(hosts.b, namespace)

    def kill_two() -> None:
        client = hosts.b.local_client()
        try:
            client.containers.get(f"aither-{namespace}-two").kill()
        finally:
            client.close()

    kill_two()
    table = cli_ok("profile", "switch", "pair", "--dry-run").stdout
    rows = [line.split()[:3] for line in table.splitlines()[2:]]
    assert rows == [["a", "keep", "one"], ["b", "resume", "two"]], table
    planned = json.loads(cli_ok("profile", "switch", "pair", "--dry-run", "--json").stdout)
    assert [(s["host"], s["service"], s["action"]) for s in planned["steps"]] == [
        ("a", "one", "keep"),
        ("b", "two", "resume"),
    ]

    switched = cli_ok("profile", "switch", "pair", "--yes")
    assert "resume" in switched.stderr
    assert containers(hosts.b, namespace) == was_b
    kill_two()
    report = json.loads(cli_ok("profile", "switch", "pair", "--yes", "--json").stdout)
    assert [(s["host"], s["service"], s["action"]) for s in report["steps"]] == [
        ("a", "one", "keep"),
        ("b", "two", "resume"),
    ]
    assert [(s["host"], s["service"], s["ready"]) for s in report["services"]] == [
        ("b", "two", True)
    ]
    assert containers(hosts.b, namespace) == was_b
    assert httpx.get(f"http://127.0.0.1:{port_b}/", timeout=5).status_code == 200


def test_down_on_a_host_waits_for_the_switch_running_there_and_never_rolls_it_back(
    profile: Callable[..., Path], hosts: TwoHosts, namespace: str
) -> None:
    """One lock per engine (issue 19): `down` of a service on node-b, while a switch waits there
    for a slow service, waits for that switch instead of "recovering" (rolling back) it."""
    ids = {node.local_client().info()["ID"] for node in hosts}
    assert len(ids) == 2, "the test hosts must have engine IDs of their own (test-hosts.sh)"
    port_a, port_b = free_port(), free_port()
    profile("first", {"quick": web(port_a, "b")})
    cli_ok("profile", "switch", "first", "--yes")
    profile("second", {"quick": web(port_a, "b"), "slow": slow_ready(port_b, "b")})
    switching = subprocess.Popen(
        [sys.executable, "-m", "aitherctl", "profile", "switch", "second", "--yes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ),
    )
    seen = stderr_until(
        switching, lambda seen: b"slow@b" in seen and b"waiting" in seen.split(b"slow@b")[-1], 120
    )
    down = subprocess.Popen(
        [sys.executable, "-m", "aitherctl", "down", "quick", "--yes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ),
    )
    waited = stderr_until(down, lambda text: b"waiting for another switch" in text, 60)
    _out, err = switching.communicate(timeout=180)
    assert switching.returncode == 0, seen.decode() + err.decode()
    _out, down_err = down.communicate(timeout=120)
    said = (waited + down_err).decode()
    assert down.returncode == 0, said
    assert "rolling back" not in said, said
    # The switch's new container survived; only `quick` is gone.
    assert {name: status for name, (_, status) in containers(hosts.b, namespace).items()} == {
        f"aither-{namespace}-slow": "running"
    }


def test_up_across_hosts_shows_the_plan_and_asks_as_single_host_up_does(
    profile: Callable[..., Path], hosts: TwoHosts, namespace: str
) -> None:
    """`up` on a profile that spans hosts used to start everything without a word; now the plan
    with its host column, then `start …?` on a terminal, `--yes`, and the same refusal as
    single-host `up` when standard input is not a terminal. Nothing starts before a yes."""
    from tests.routing.docker.test_chat_terminal import Terminal

    port_a, port_b = free_port(), free_port()
    profile("pair", {"one": web(port_a, "a"), "two": web(port_b, "b")})

    refused = run_cli("up", "--profile", "pair")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    lines = refused.stderr.splitlines()
    assert lines[-1] == "error: start one@a, two@b: standard input is not a terminal, pass --yes"
    assert lines[0] == "plan → pair"
    assert lines[1].split() == ["host", "action", "service", "engine", "port", "gpu", "vram", "why"]
    assert [line.split()[:5] for line in lines[2:4]] == [
        ["a", "start", "one", "generic", str(port_a)],
        ["b", "start", "two", "generic", str(port_b)],
    ]
    assert containers(hosts.a, namespace) == containers(hosts.b, namespace) == {}

    terminal = Terminal(["up", "--profile", "pair"])
    try:
        shown = terminal.expect("start one@a, two@b? [y/N] ", timeout_s=60)
        assert "plan → pair" in shown
        terminal.type("n\n")
        assert terminal.wait() == 1
    finally:
        terminal.close()
    assert containers(hosts.a, namespace) == containers(hosts.b, namespace) == {}

    up = run_cli("up", "--profile", "pair", "--yes")
    assert up.returncode == 0, up.stderr
    assert "plan → pair" in up.stderr
    assert up.stderr.splitlines()[-1].startswith("started one, two in ")
    assert up.stdout.splitlines() == [
        f"  one  http://127.0.0.1:{port_a}",
        f"  two  http://127.0.0.1:{port_b}",
    ]
    assert answers_http(port_a)
    assert answers_http(port_b)


def answers_http(port: int) -> bool:
    return httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
