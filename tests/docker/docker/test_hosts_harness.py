"""The two SSH test hosts themselves (scripts/test-hosts.sh, tests/hosts_helpers.py):
both answer over SSH with the Docker CLI and SDK, hold the test images, are separate engines on
separate bridges, and can be taken down and brought back (engine and SSH server), which the
multi-host tests rely on. These take node-a's engine and the SSH server down for a moment: do not
run them beside other tests that use the nodes."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from typing import Any

import docker
import docker.errors
import pytest
import requests

from tests.hosts_helpers import (
    BASE_IMAGE,
    LABEL_MANAGED,
    LABEL_NAMESPACE,
    LLAMA_IMAGE,
    TwoHosts,
    cleanup_nodes,
    engine_down,
    sshd_down,
)

pytest_plugins = ["tests.hosts_helpers"]

pytestmark = pytest.mark.docker

PROBE_LABEL = "ai.aitherctl.test"


def _probe(client: docker.DockerClient, labels: dict[str, str] | None = None) -> Any:
    return client.containers.run(
        BASE_IMAGE,
        ["sleep", "300"],
        name=f"aither-hosts-probe-{uuid.uuid4().hex[:8]}",
        labels={PROBE_LABEL: "hosts-harness", **(labels or {})},
        detach=True,
        stop_signal="SIGKILL",  # sleep ignores SIGTERM as PID 1: no 10 s stop timeout
    )


def test_both_nodes_answer_over_ssh_cli_and_sdk(two_hosts: TwoHosts) -> None:
    for node in two_hosts:
        started = time.monotonic()
        client = node.ssh_client()
        try:
            assert client.ping()
            assert isinstance(client.containers.list(), list)
        finally:
            client.close()
        assert time.monotonic() - started < 20, "the SDK over SSH took too long"
        # The Docker CLI reaches it through ~/.ssh/config's `Host node-X` (port, key, known host).
        done = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            env={**os.environ, "DOCKER_HOST": f"ssh://{node.name}"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip()


def test_nodes_hold_the_test_images(two_hosts: TwoHosts) -> None:
    try:
        main = docker.from_env()
        main_ids = {image: main.images.get(image).id for image in (LLAMA_IMAGE, BASE_IMAGE)}
    except docker.errors.DockerException:
        main_ids = {}  # the main engine is not reachable from this process: presence only
    for node in two_hosts:
        client = node.ssh_client()
        try:
            for image in (LLAMA_IMAGE, BASE_IMAGE):
                found = client.images.get(image)
                if image in main_ids:
                    assert found.id == main_ids[image], f"{node.name} has a stale {image}"
        finally:
            client.close()


def test_nodes_are_separate_engines_on_separate_bridges(two_hosts: TwoHosts) -> None:
    a, b = two_hosts.a.ssh_client(), two_hosts.b.ssh_client()
    on_a = _probe(a)
    try:
        on_a.reload()
        address = on_a.attrs["NetworkSettings"]["IPAddress"]
        assert address.startswith("172.41.0."), address  # node-a's bridge, aither-bra
        names_a = {c.name for c in a.containers.list(all=True)}
        names_b = {c.name for c in b.containers.list(all=True)}
        assert on_a.name in names_a
        assert on_a.name not in names_b
        with pytest.raises(docker.errors.NotFound):
            b.containers.get(on_a.name)
        on_b = _probe(b)
        try:
            on_b.reload()
            assert on_b.attrs["NetworkSettings"]["IPAddress"].startswith("172.42.0.")
        finally:
            on_b.remove(force=True)
    finally:
        on_a.remove(force=True)
        a.close()
        b.close()


def test_a_killed_engine_fails_over_ssh_and_works_after_restart(fresh_hosts: TwoHosts) -> None:
    node, other = fresh_hosts.a, fresh_hosts.b
    client = node.ssh_client()
    try:
        assert client.ping()
        with engine_down(node):
            assert not node.answers()
            started = time.monotonic()
            with pytest.raises(requests.exceptions.ConnectionError):
                client.ping()  # an existing client: its connection and a new one fail
            with pytest.raises(docker.errors.DockerException):
                node.ssh_client()  # a new client: the API version negotiation fails
            assert time.monotonic() - started < 20, "a down engine should fail fast"
            # The other node does not care.
            other_client = other.ssh_client()
            try:
                assert other_client.ping()
            finally:
                other_client.close()
        assert node.answers()
        assert client.ping(), "the client that saw the outage works again"
        fresh = node.ssh_client()
        try:
            assert fresh.images.get(LLAMA_IMAGE)
        finally:
            fresh.close()
    finally:
        client.close()


def test_sshd_down_refuses_both_nodes_and_comes_back(fresh_hosts: TwoHosts) -> None:
    with sshd_down():
        for node in fresh_hosts:
            with pytest.raises(docker.errors.DockerException):
                node.ssh_client()
            assert node.answers(), "the engine itself stays up"
    for node in fresh_hosts:
        client = node.ssh_client()
        try:
            assert client.ping()
        finally:
            client.close()


def test_cleanup_removes_only_the_namespace_managed_containers_and_volumes(
    two_hosts: TwoHosts,
) -> None:
    mine, theirs = "th" + uuid.uuid4().hex[:8], "th" + uuid.uuid4().hex[:8]
    try:
        for node in two_hosts:
            client = node.local_client()
            try:
                for namespace in (mine, theirs):
                    labels = {LABEL_MANAGED: "true", LABEL_NAMESPACE: namespace}
                    _probe(client, labels)
                    client.volumes.create(name=f"aither-{namespace}-record", labels=labels)
            finally:
                client.close()
        removed = cleanup_nodes(two_hosts, namespace=mine)
        assert len(removed) == 4, removed  # a container and a volume on each node
        for node in two_hosts:
            client = node.local_client()
            try:
                for namespace, expected in ((mine, 0), (theirs, 1)):
                    flt = {"label": [f"{LABEL_MANAGED}=true", f"{LABEL_NAMESPACE}={namespace}"]}
                    assert len(client.containers.list(all=True, filters=flt)) == expected
                    assert len(client.volumes.list(filters=flt)) == expected
            finally:
                client.close()
    finally:
        cleanup_nodes(two_hosts, namespace=theirs)
