"""`status` and the monitor across two real Docker hosts reached over SSH (node-a, node-b:
private engines behind sshd on loopback, scripts/test-hosts.sh), after a real switch.

What a user checks: one `status` lists the services of both hosts with their host, each read
at its own host's address (its llama.cpp metrics answer); each host is named with its engine;
when one host's engine dies, `status` still exits 0, names that host as unreachable in one line
and keeps showing the other; the monitor's table shows both services with their host.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, run_cli
from tests.hosts_helpers import TwoHosts, engine_down, ensure_up
from tests.switching.test_hosts_switch import llama

pytest_plugins = ["tests.hosts_helpers"]
pytestmark = pytest.mark.docker


@pytest.fixture
def hosts(fresh_hosts: TwoHosts) -> Iterator[TwoHosts]:
    yield fresh_hosts
    ensure_up(fresh_hosts)


@pytest.fixture
def duo(write_profile: Callable[..., Path], hosts: TwoHosts) -> Iterator[dict[str, int]]:
    ports = {"one": free_port(), "two": free_port()}
    declared = {
        "a": {"docker": hosts.a.url, "address": "127.0.0.1"},
        "b": {"docker": hosts.b.url, "address": "127.0.0.1"},
    }
    write_profile(
        "duo",
        hosts=declared,
        services={"one": llama(ports["one"], "a"), "two": llama(ports["two"], "b")},
    )
    write_profile("solo", services={})
    switched = run_cli("profile", "switch", "duo", "--yes")
    assert switched.returncode == 0, switched.stdout + switched.stderr
    yield ports
    ensure_up(hosts)
    run_cli("profile", "switch", "solo", "--yes")


def status_json(*extra: str) -> dict[str, Any]:
    done = run_cli("status", "--json", "--no-gpu", "--timeout", "5", *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def test_status_shows_both_hosts_services_read_at_their_hosts(
    duo: dict[str, int], hosts: TwoHosts
) -> None:
    document = status_json()
    services = {svc["name"]: svc for svc in document["services"]}
    assert set(services) == {"one", "two"}
    assert (services["one"]["host"], services["two"]["host"]) == ("a", "b")
    for name in ("one", "two"):
        assert services[name]["state"] == "running"
        # llama.cpp's /metrics answered at that host's address
        assert services[name]["scrape"] == "ok", services[name]["scrape_error"]
        assert services[name]["url"] == f"http://127.0.0.1:{duo[name]}"
    reached = {view["name"]: view for view in document["hosts"]}
    assert set(reached) == {"a", "b"}
    assert reached["a"]["endpoint"] == hosts.a.url
    assert all(view["error"] is None for view in reached.values())
    assert all(view["engine"].startswith("Docker ") for view in reached.values())
    assert document["active_profile"] == "duo"

    text = run_cli("status", "--no-gpu").stdout
    assert "one@a" in text
    assert "two@b" in text
    assert f"host b ({hosts.b.url}): Docker" in text


def test_a_dead_host_is_named_and_the_other_still_shows(
    duo: dict[str, int], hosts: TwoHosts
) -> None:
    with engine_down(hosts.b):
        done = run_cli("status", "--json", "--no-gpu", "--timeout", "5")
        assert done.returncode == 0, done.stderr
        document = json.loads(done.stdout)
        watch = run_cli("status", "--watch", "--count", "1", "--no-gpu")
    reached = {view["name"]: view for view in document["hosts"]}
    assert reached["a"]["error"] is None
    assert reached["b"]["error"] is not None
    assert "'b'" in reached["b"]["error"]
    assert [(svc["name"], svc["host"], svc["scrape"]) for svc in document["services"]] == [
        ("one", "a", "ok")
    ]
    assert done.stderr.strip() == ""  # no ssh noise on the terminal
    lines = [line for line in watch.stdout.splitlines() if " host b " in line]
    assert len(lines) == 1
    assert "unreachable" in lines[0]


def test_the_monitor_lists_both_hosts(duo: dict[str, int]) -> None:
    from aitherctl.tui.app import build_monitor_app

    async def rows() -> list[str]:
        app = build_monitor_app(interval_s=1.0, use_gpu=False, scrape_timeout_s=3.0)
        async with app.run_test(size=(180, 50)) as pilot:
            for _ in range(40):
                await pilot.pause(0.5)
                if app.snapshot is not None and len(app.snapshot.services) >= 2:
                    break
            table: Any = app.query_one("#services")
            keys = [str(row.value) for row in table.rows]
            header = str(app.query_one("#header").render())
        assert "a Docker" in header
        return keys

    assert sorted(asyncio.run(rows())) == ["one@a", "two@b"]


def test_ps_and_status_agree_on_where_things_run(duo: dict[str, int]) -> None:
    listing = json.loads(run_cli("ps", "--json").stdout)
    document = status_json()
    assert sorted((r["service"], r["host"]) for r in listing["services"]) == sorted(
        (s["name"], s["host"]) for s in document["services"]
    )
