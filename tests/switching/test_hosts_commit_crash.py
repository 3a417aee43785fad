"""A switch across two real hosts (node-a, node-b over SSH) whose process dies between writing
the commit record on one host and on the other: `aitherctl recover` must finish the switch on
both hosts, never finish it on one and roll it back on the other.

The death is real: the switch runs in its own process, in which `DockerEngine.write_record` is
wrapped so that the process calls `os._exit(137)` (what SIGKILL leaves: no handler, no cleanup)
just before the second commit record is written. Nothing in aitherctl is told about it.
A Docker error at the same point instead must roll both hosts back, with no decision left that
a later `recover` could finish.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, run_cli
from tests.hosts_helpers import TwoHosts, ensure_up
from tests.switching.test_hosts_switch import containers, llama

pytest_plugins = ["tests.hosts_helpers"]
pytestmark = pytest.mark.docker

FAULT_AT_SECOND_COMMIT = """
import os, sys
from aitherctl.docker.engine import DockerEngine
from aitherctl.switching.records import LABEL_KIND

real = DockerEngine.write_record
commits = []

def write_record(self, name, labels):
    if labels.get(LABEL_KIND) == "commit":
        commits.append(self.host)
        if len(commits) == 2:
            {fault}
    return real(self, name, labels)

DockerEngine.write_record = write_record
sys.argv = ["aitherctl", "profile", "switch", "after", "--yes"]
from aitherctl.cli.fast_run import main
main()
"""
DIE = 'print(f"dying before the commit record on {self.host}", flush=True); os._exit(137)'
REFUSE = (
    "from aitherctl.errors import DockerError; "
    'raise DockerError("creating the switch record: volume plugin refused")'
)


@pytest.fixture
def hosts(fresh_hosts: TwoHosts) -> Iterator[TwoHosts]:
    yield fresh_hosts
    ensure_up(fresh_hosts)


def running_ids(node: Any, namespace: str) -> dict[str, str]:
    return {
        name: cid
        for name, (cid, status) in containers(node, namespace).items()
        if status == "running"
    }


@pytest.fixture
def before_after(
    write_profile: Callable[..., Path], hosts: TwoHosts, namespace: str
) -> Iterator[dict[str, str]]:
    """`before` running (one llama.cpp per host) and `after` (both replaced) written; yields
    the running containers' ids by name."""
    port_a, port_b = free_port(), free_port()
    declared = {
        "a": {"docker": hosts.a.url, "address": "127.0.0.1"},
        "b": {"docker": hosts.b.url, "address": "127.0.0.1"},
    }
    write_profile(
        "before", hosts=declared, services={"one": llama(port_a, "a"), "two": llama(port_b, "b")}
    )
    # The same services with another argument: both containers are replaced.
    write_profile(
        "after",
        hosts=declared,
        services={
            "one": llama(port_a, "a", "--batch-size", "64"),
            "two": llama(port_b, "b", "--batch-size", "64"),
        },
    )
    first = run_cli("profile", "switch", "before", "--yes")
    assert first.returncode == 0, first.stdout + first.stderr
    yield {**running_ids(hosts.a, namespace), **running_ids(hosts.b, namespace)}
    run_cli("down", "--all", "--yes")


def switch_with_fault(fault: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", FAULT_AT_SECOND_COMMIT.replace("{fault}", fault)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def decisions_left() -> list[Path]:
    return list((Path(os.environ["AITHER_STATE_DIR"]) / "decisions").glob("*.json"))


def test_a_crash_between_two_hosts_commit_records_finishes_on_both(
    before_after: dict[str, str], hosts: TwoHosts, namespace: str
) -> None:
    died = switch_with_fault(DIE)
    assert died.returncode == 137, died.stdout + died.stderr
    assert "dying before the commit record" in died.stdout

    recovered = run_cli("recover")
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    after = {**running_ids(hosts.a, namespace), **running_ids(hosts.b, namespace)}
    # Both hosts run the new containers, none of the old ones, and nothing is left aside.
    assert set(after) == {f"aither-{namespace}-one", f"aither-{namespace}-two"}
    assert not set(after.values()) & set(before_after.values())
    every = {**containers(hosts.a, namespace), **containers(hosts.b, namespace)}
    assert set(every) == set(after), f"left behind: {sorted(set(every) - set(after))}"

    listing = json.loads(run_cli("ps", "--json").stdout)
    assert {(row["service"], row["host"], row["profile"]) for row in listing["services"]} == {
        ("one", "a", "after"),
        ("two", "b", "after"),
    }
    assert not decisions_left(), "the decision outlived the switch"


def test_a_docker_error_on_the_second_commit_record_rolls_back_both(
    before_after: dict[str, str], hosts: TwoHosts, namespace: str
) -> None:
    failed = switch_with_fault(REFUSE)
    assert failed.returncode != 0
    assert "volume plugin refused" in failed.stderr
    assert "Traceback" not in failed.stderr
    # Both hosts are back on the very containers they ran, with no decision left to finish them.
    after = {**running_ids(hosts.a, namespace), **running_ids(hosts.b, namespace)}
    assert after == before_after
    assert not decisions_left()
    recovered = run_cli("recover")
    assert recovered.returncode == 0, recovered.stderr
    assert {**running_ids(hosts.a, namespace), **running_ids(hosts.b, namespace)} == before_after
