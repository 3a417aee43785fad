"""Docker over SSH (aitherctl/docker/ssh_transport.py) against the real test hosts: node-a and
node-b, private engines behind a real sshd on loopback (scripts/test-hosts.sh), reached through
the real `ssh` client and ~/.ssh/config.

What a user checks: a switch on a remote host starts one ssh, not one per request; the next
command within a minute reuses that SSH connection (no new login); a master that is killed is
replaced without a word; an unreachable host still gives one error line, quickly; an engine that
dies mid-switch is named in one line and nothing from ssh reaches the terminal; threads share a
client's connections; following logs works over SSH.

Counting: a wrapper named `ssh` first on PATH appends its arguments to a file and runs the real
ssh, so the count is of ssh processes started (each one either a new SSH login or a session over
the master). The master is identified by `ssh -O check` on its control socket.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, run_cli
from tests.hosts_helpers import (
    BASE_IMAGE,
    LABEL_MANAGED,
    LABEL_NAMESPACE,
    TwoHosts,
    engine_down,
    ensure_up,
    sshd_down,
    stderr_until,
)

pytest_plugins = ["tests.hosts_helpers"]
pytestmark = pytest.mark.docker

# What ssh or the far side's `docker system dial-stdio` write when a connection fails; none of it
# may reach the user's terminal raw.
SSH_NOISE = re.compile(
    r"failed to open the raw stream|level=error|mux_client|Control socket|"
    r"^ssh: connect to host|Connection closed by|kex_exchange_identification|Broken pipe",
    re.MULTILINE,
)


@pytest.fixture
def hosts(fresh_hosts: TwoHosts) -> Iterator[TwoHosts]:
    yield fresh_hosts
    ensure_up(fresh_hosts)


@pytest.fixture
def ssh_spawns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[str]]:
    """Put a counting `ssh` first on PATH (for the CLI run from this test and for this process);
    returns a function that reads the command lines started so far and forgets them."""
    real = shutil.which("ssh")
    assert real, "no ssh client"
    folder = tmp_path / "bin"
    folder.mkdir()
    log = tmp_path / "ssh-spawns.log"
    wrapper = folder / "ssh"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")

    def read() -> list[str]:
        if not log.exists():
            return []
        lines = log.read_text().splitlines()
        log.write_text("")
        # `ssh -O check` from master_pid() is not a connection to the engine
        return [line for line in lines if "dial-stdio" in line]

    return read


def web(port: int, host: str, command: str | None = None) -> dict[str, Any]:
    """A real HTTP server (python3 -m http.server), ready in well under a second."""
    args = ["python3", "-m", "http.server", str(port)]
    if command is not None:
        args = ["sh", "-c", command]
    return {
        "engine": "generic",
        "image": BASE_IMAGE,
        "port": port,
        "gpu": "none",
        "host": host,
        "args": args,
        "health": {"path": "/", "timeout": 120},
    }


@pytest.fixture
def profile(write_profile: Callable[..., Path], hosts: TwoHosts) -> Callable[..., Path]:
    def write(name: str, services: dict[str, Any]) -> Path:
        declared = {
            "a": {"docker": hosts.a.url, "address": "127.0.0.1"},
            "b": {"docker": hosts.b.url, "address": "127.0.0.1"},
        }
        return write_profile(name, hosts=declared, services=services)

    return write


def master_pid(endpoint: str) -> int | None:
    """The PID of the master connection aitherctl keeps for `endpoint` (`ssh -O check`)."""
    from aitherctl.docker.ssh_transport import SshTarget, control_path

    path = control_path(endpoint)
    assert path is not None
    target = SshTarget.parse(endpoint)
    done = subprocess.run(
        ["ssh", "-o", f"ControlPath={path}", "-O", "check", target.host],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    found = re.search(r"Master running \(pid=(\d+)\)", done.stderr)
    return int(found.group(1)) if found else None


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    done = run_cli(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not SSH_NOISE.search(done.stderr), done.stderr
    return done


def test_a_switch_starts_one_ssh_and_the_next_commands_reuse_its_connection(
    profile: Callable[..., Path], hosts: TwoHosts, ssh_spawns: Callable[[], list[str]]
) -> None:
    profile("web", {"web": web(free_port(), "a")})
    profile("idle", {})

    cli("profile", "switch", "web", "--yes")
    started = ssh_spawns()
    # One ssh for the whole switch (the SDK's own transport started 24 here), two at most when
    # two threads ask at once.
    assert 1 <= len(started) <= 2, started
    assert all("ControlMaster=auto" in line and "node-a" in line for line in started), started
    first = master_pid(hosts.a.url)
    assert first is not None, "no master connection is kept"

    listing = cli("ps", "--json").stdout
    assert '"web"' in listing
    cli("profile", "switch", "idle", "--yes")
    assert 1 <= len(ssh_spawns()) <= 4
    # The later commands went through the same SSH connection: no new login.
    assert master_pid(hosts.a.url) == first


def test_a_killed_master_is_replaced_without_a_word(
    profile: Callable[..., Path], hosts: TwoHosts
) -> None:
    profile("web", {"web": web(free_port(), "a")})
    profile("idle", {})
    cli("profile", "switch", "web", "--yes")
    first = master_pid(hosts.a.url)
    assert first is not None
    os.kill(first, signal.SIGKILL)  # its control socket stays behind, stale

    done = cli("profile", "switch", "idle", "--yes")
    assert "error" not in done.stderr.lower()
    second = master_pid(hosts.a.url)
    assert second is not None
    assert second != first


def test_an_unreachable_host_says_so_in_one_line_quickly(
    profile: Callable[..., Path], hosts: TwoHosts, namespace: str
) -> None:
    profile("web", {"web": web(free_port(), "a")})
    with sshd_down():
        started = time.monotonic()
        done = run_cli("profile", "switch", "web", "--yes")
        elapsed = time.monotonic() - started
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "host 'a'" in lines[0]
    assert "connection refused" in lines[0]
    assert not SSH_NOISE.search(done.stderr), done.stderr
    assert elapsed < 10, f"{elapsed:.1f} s to say the host cannot be reached"
    client = hosts.a.local_client()
    try:
        found = client.containers.list(
            all=True, filters={"label": f"{LABEL_NAMESPACE}={namespace}"}
        )
    finally:
        client.close()
    assert not found


def test_an_engine_that_dies_mid_switch_is_one_line_and_no_ssh_noise(
    profile: Callable[..., Path], hosts: TwoHosts
) -> None:
    port = free_port()
    profile("slow", {"slow": web(port, "a", f"sleep 60; exec python3 -m http.server {port}")})
    process = subprocess.Popen(
        [sys.executable, "-m", "aitherctl", "profile", "switch", "slow", "--yes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ),
    )
    seen = stderr_until(process, lambda seen: b"waiting" in seen, 60)
    with engine_down(hosts.a):
        _out, rest = process.communicate(timeout=120)
    message = seen.decode() + rest.decode()
    assert process.returncode != 0
    assert not SSH_NOISE.search(message), message
    assert "Traceback" not in message
    errors = [line for line in message.splitlines() if line.startswith("error")]
    assert len(errors) == 1, message
    assert "host 'a'" in errors[0]
    # (What the error says about the engine depends on when the switch noticed: the next test
    # checks the words; another session's tests may start a node they find down.)
    # The engine is back: recover finishes the interrupted switch over the same transport.
    cli("recover")


def test_a_dead_engine_behind_ssh_is_named_as_such(hosts: TwoHosts) -> None:
    import requests

    from aitherctl.docker.engine import DockerEngine, client_for
    from aitherctl.errors import DockerUnavailableError

    client = client_for(hosts.b.url)
    engine = DockerEngine(client, host="b", endpoint=hosts.b.url)
    try:
        assert client.ping()
        with engine_down(hosts.b):
            with pytest.raises(requests.exceptions.ConnectionError) as raw:
                client.ping()
            with pytest.raises(DockerUnavailableError) as caught:
                engine.info()
        assert "the Docker engine behind ssh does not answer" in str(raw.value)
        message = caught.value.message
        assert message.startswith("host 'b': docker info: lost the Docker engine at ssh://")
        assert "the Docker engine behind ssh does not answer (dial unix " in message
        assert "\n" not in message
        assert client.ping()  # back up: the same client reconnects
    finally:
        engine.close()


def test_threads_share_a_clients_connections_and_logs_follow(
    hosts: TwoHosts, namespace: str, ssh_spawns: Callable[[], list[str]]
) -> None:
    from aitherctl.docker.engine import client_for
    from aitherctl.docker.ssh_transport import POOL_SIZE

    client = client_for(hosts.b.url)
    try:
        with ThreadPoolExecutor(max_workers=POOL_SIZE) as pool:
            answers = list(pool.map(lambda _: client.ping(), range(POOL_SIZE * 5)))
        assert all(answers)
        assert len(ssh_spawns()) <= POOL_SIZE + 1

        container = client.containers.run(
            BASE_IMAGE,
            ["sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.2; done"],
            detach=True,
            labels={LABEL_MANAGED: "true", LABEL_NAMESPACE: namespace},
        )
        followed = b"".join(client.api.logs(str(container.id), stream=True, follow=True))
        assert followed.split() == [b"line1", b"line2", b"line3"]
        container.remove(force=True)
    finally:
        client.close()
