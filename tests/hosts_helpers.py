"""Two "remote" Docker hosts for the multi-host tests: node-a and node-b.

They are private Docker engines on this machine, each on its own bridge, reached over SSH exactly
as a remote host is: sshd on 127.0.0.1:2222 forces each node's key to run
`docker system dial-stdio` against that node's socket (Docker's SSH transport). They are set up by
`scripts/test-hosts.sh` (see ../shared/ENVIRONMENT.md), which prints the environment:

    AITHER_TEST_HOST_A=ssh://root@node-a:2222       what aitherctl is given (the SSH endpoint)
    AITHER_TEST_HOST_B=ssh://root@node-b:2222
    AITHER_TEST_NODE_A_SOCK=unix:///tmp/aither-node-a/docker.sock   direct control, no SSH
    AITHER_TEST_NODE_B_SOCK=unix:///tmp/aither-node-b/docker.sock

Use from a test module:

    pytest_plugins = ["tests.hosts_helpers"]   # the fixtures below

    def test_something(two_hosts: TwoHosts) -> None:
        client = two_hosts.a.ssh_client()                   # the Docker SDK over SSH
        with engine_down(two_hosts.b):                      # node-b's dockerd killed, then back
            ...

Without the variables the fixtures skip; with AITHER_REQUIRE_INTEGRATION=1 (CI) they fail.
(PYTEST_DONT_REWRITE: a test module imports this before `pytest_plugins` registers it, too late
for pytest's assert rewriting, which warns; this module has no `assert` to rewrite.)

Facts measured here that tests can rely on: the SDK over SSH connects and lists in about 1-2 s;
a killed engine answers the SDK with `requests.exceptions.ConnectionError` (an existing client)
or `docker.errors.DockerException` (a new client with the API version left to negotiate) within
half a second; a restart takes about 1 s with no containers. With SIGKILL the node's containers
keep running (their shims outlive dockerd) and stay reachable on the node's bridge address, but
their ports published on 127.0.0.1 stop answering (docker-proxy dies with dockerd); when the
engine starts again it kills them (no live-restore), which takes the container's stop timeout.
Both engines report the same engine ID (`docker info` → ID, from /etc/docker/key.json): an ID
does not tell them apart.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "test-hosts.sh"
LLAMA_IMAGE = "aither-test/llamacpp:latest"
BASE_IMAGE = "aither-test/base:bookworm"
LABEL_MANAGED = "ai.aitherctl.managed"  # aitherctl.engines.container.LABEL_MANAGED
LABEL_NAMESPACE = "ai.aitherctl.namespace"  # aitherctl.engines.container.LABEL_NAMESPACE
SCRIPT_TIMEOUT_S = 180.0  # a TERM stop waits for the engine's containers (15 s shutdown timeout)
CLIENT_TIMEOUT_S = 30


@dataclass(frozen=True, slots=True)
class Node:
    """One test host. `name` is the ~/.ssh/config alias (`node-a`), `letter` what
    scripts/test-hosts.sh takes (`a`), `url` the SSH endpoint aitherctl is given
    (`ssh://root@node-a:2222`; the port must be in it, see `ssh_client`), `sock` the engine's own
    socket on this machine (`unix:///tmp/aither-node-a/docker.sock`), for control and cleanup."""

    name: str
    letter: str
    url: str
    sock: str

    def ssh_client(self, timeout: int = CLIENT_TIMEOUT_S, **kwargs: Any) -> Any:
        """The Docker SDK over SSH through the `ssh` binary, as a remote host is reached.
        `paramiko` must be importable even so (docker/transport/sshconn.py imports it), and the
        URL must carry the port: without it the SDK passes `-p 22` over the config's port."""
        import docker

        return docker.DockerClient(
            base_url=self.url, use_ssh_client=True, timeout=timeout, **kwargs
        )

    def local_client(self, timeout: int = CLIENT_TIMEOUT_S) -> Any:
        """The Docker SDK on the engine's own socket: for setting up and checking, not SSH."""
        import docker

        return docker.DockerClient(base_url=self.sock, timeout=timeout)

    def answers(self) -> bool:
        """Whether the engine answers on its own socket (`GET /_ping`)."""
        try:
            client = self.local_client(timeout=5)
        except Exception:
            return False
        try:
            return bool(client.ping())
        except Exception:
            return False
        finally:
            client.close()


@dataclass(frozen=True, slots=True)
class TwoHosts:
    a: Node
    b: Node

    def __iter__(self) -> Iterator[Node]:
        return iter((self.a, self.b))


def hosts_from_env() -> TwoHosts | None:
    """The two nodes the environment names, or None when any variable is missing."""
    nodes = []
    for letter in ("a", "b"):
        url = os.environ.get(f"AITHER_TEST_HOST_{letter.upper()}")
        sock = os.environ.get(f"AITHER_TEST_NODE_{letter.upper()}_SOCK")
        if not url or not sock:
            return None
        nodes.append(Node(name=f"node-{letter}", letter=letter, url=url, sock=sock))
    return TwoHosts(a=nodes[0], b=nodes[1])


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("AITHER_REQUIRE_INTEGRATION") == "1":
        pytest.fail(f"integration prerequisite missing: {reason}")
    pytest.skip(reason)


# ---- taking a host down and back up (through scripts/test-hosts.sh) -----------------------------


def run_script(*args: str, timeout: float = SCRIPT_TIMEOUT_S) -> str:
    """Run `bash scripts/test-hosts.sh ARGS...`; its stdout, or an AssertionError with its log."""
    done = subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"scripts/test-hosts.sh {' '.join(args)} exited {done.returncode}:\n"
            f"{done.stderr[-3000:]}"
        )
    return done.stdout


def _letter(node: Node | str) -> str:
    letter = node.letter if isinstance(node, Node) else node.removeprefix("node-")
    if letter not in ("a", "b"):
        raise ValueError(f"no test host {node!r}: node-a or node-b")
    return letter


def kill_engine(node: Node | str, sig: str = "KILL") -> None:
    """Stop the node's dockerd with SIGKILL (a crash: its containers keep running until the
    engine starts again) or SIGTERM (a clean stop: it stops its containers first), and return
    once it no longer answers. `node` is a Node, `"a"` or `"node-a"`."""
    run_script("stop-node", _letter(node), sig)


def start_engine(node: Node | str) -> None:
    """Start the node's dockerd again (a no-op when it answers); returns once it answers."""
    run_script("start-node", _letter(node))


def kill_sshd() -> None:
    """Stop the SSH server: new connections to either node are refused (connections already open
    stay open, as with a real sshd)."""
    run_script("stop-sshd")


def start_sshd() -> None:
    """Start the SSH server again (a no-op when it runs); returns once it listens."""
    run_script("start-sshd")


@contextlib.contextmanager
def engine_down(node: Node | str, sig: str = "KILL") -> Iterator[None]:
    """The node's engine is down inside the block, and up again after it, even on failure."""
    kill_engine(node, sig)
    try:
        yield
    finally:
        start_engine(node)


@contextlib.contextmanager
def sshd_down() -> Iterator[None]:
    """The SSH server is down inside the block, and up again after it, even on failure."""
    kill_sshd()
    try:
        yield
    finally:
        start_sshd()


def ensure_up(hosts: Iterable[Node]) -> None:
    """Both engines answer and sshd listens (after a test that took one down and failed)."""
    for node in hosts:
        if not node.answers():
            start_engine(node)
    start_sshd()


# ---- cleanup ----------------------------------------------------------------------------------


def cleanup_nodes(hosts: Iterable[Node], namespace: str | None = None) -> list[str]:
    """Remove aitherctl's containers (label `ai.aitherctl.managed=true`) and its labelled volumes
    (switch records) on each node, through the node's own socket. With `namespace`, only those
    labelled `ai.aitherctl.namespace=NAMESPACE` (a test session's own; other sessions may share
    the nodes). A node whose engine is down is skipped. Returns `node:name` of what was removed."""
    import docker.errors

    labels = [f"{LABEL_MANAGED}=true"]
    if namespace is not None:
        labels.append(f"{LABEL_NAMESPACE}={namespace}")
    removed: list[str] = []
    for node in hosts:
        if not node.answers():
            continue
        client = node.local_client()
        try:
            for container in client.containers.list(all=True, filters={"label": labels}):
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True, v=True)
                    removed.append(f"{node.name}:{container.name}")
            for volume in client.volumes.list(filters={"label": labels}):
                with contextlib.suppress(docker.errors.NotFound):
                    volume.remove(force=True)
                    removed.append(f"{node.name}:{volume.name}")
        finally:
            client.close()
    return removed


# ---- fixtures -----------------------------------------------------------------------------------


def _check(hosts: TwoHosts) -> None:
    """Skip or fail unless both nodes answer over SSH with the test images loaded."""
    try:
        import paramiko  # noqa: F401  (the SDK's ssh transport imports it even with use_ssh_client)
    except ImportError:
        _skip_or_fail("paramiko is not installed: the Docker SDK's SSH transport imports it")
    if shutil.which("ssh") is None:
        _skip_or_fail("no `ssh` client: run `bash scripts/test-hosts.sh`")
    for node in hosts:
        if not node.answers():  # a previous run may have left it down
            try:
                start_engine(node)
            except (AssertionError, OSError, subprocess.TimeoutExpired) as exc:
                _skip_or_fail(f"{node.name}'s engine ({node.sock}) does not answer: {exc}")
        try:
            client = node.ssh_client()
        except Exception as exc:
            _skip_or_fail(f"{node.name} does not answer over SSH ({node.url}): {exc}")
            return
        try:
            for image in (LLAMA_IMAGE, BASE_IMAGE):
                try:
                    client.images.get(image)
                except Exception as exc:
                    _skip_or_fail(f"{node.name} lacks {image} ({exc}): run scripts/test-hosts.sh")
        finally:
            client.close()


@pytest.fixture(scope="session")
def two_hosts(namespace: str) -> Iterator[TwoHosts]:
    """node-a and node-b, both answering over SSH with the test images. At the end of the session
    the session namespace's containers and volumes on both are removed."""
    hosts = hosts_from_env()
    if hosts is None:
        _skip_or_fail(
            "AITHER_TEST_HOST_A/B and AITHER_TEST_NODE_A/B_SOCK are not set: "
            'run `eval "$(bash scripts/test-hosts.sh)"`'
        )
        return
    _check(hosts)
    yield hosts
    with contextlib.suppress(Exception):
        ensure_up(hosts)
    cleanup_nodes(hosts, namespace)


@pytest.fixture
def fresh_hosts(two_hosts: TwoHosts, namespace: str) -> Iterator[TwoHosts]:
    """`two_hosts` for one test: both engines and sshd up before it, and the session namespace's
    containers and volumes on both nodes removed after it (and the nodes brought back up if the
    test took one down and failed before restoring it)."""
    ensure_up(two_hosts)
    yield two_hosts
    ensure_up(two_hosts)
    cleanup_nodes(two_hosts, namespace)


def stderr_until(process: Any, done: Callable[[bytes], bool], timeout_s: float) -> bytes:
    """What a running CLI process has written on stderr, read until `done(text so far)` holds
    (fails after `timeout_s` seconds; stops early if the process closes stderr)."""
    import os
    import select
    import time

    assert process.stderr is not None
    seen = b""
    deadline = time.monotonic() + timeout_s
    while not done(seen):
        assert time.monotonic() < deadline, seen.decode()
        ready, _, _ = select.select([process.stderr], [], [], 1.0)
        if ready:
            chunk = os.read(process.stderr.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
    return seen
