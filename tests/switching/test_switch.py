"""`aitherctl profile switch` against a real Docker engine and real servers.

Services are tiny real HTTP servers (python3 -m http.server in the locally built base image) and
a real llama.cpp server with SmolLM2; every switch goes through the real CLI process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, llama_service, run_cli, sdk_of, web_service

pytestmark = pytest.mark.docker


def running(engine: object) -> dict[str, str]:
    """service → container id of every running container in the namespace."""
    return {item.service: item.id for item in engine.list_managed() if item.running}  # type: ignore[attr-defined]


def everything(engine: object) -> list[object]:
    return list(engine.list_managed())  # type: ignore[attr-defined]


@pytest.fixture
def two_profiles(write_profile, base_image, llama_image):  # type: ignore[no-untyped-def]
    ports = {name: free_port() for name in ("shared", "only_a", "changed", "llm")}
    write_profile(
        "alpha",
        services={
            "shared": web_service(ports["shared"], pinned=True),
            "only-a": web_service(ports["only_a"]),
            "changed": web_service(ports["changed"], text="one"),
        },
    )
    write_profile(
        "beta",
        services={
            "shared": web_service(ports["shared"], pinned=True),
            "changed": web_service(ports["changed"], text="two"),
            "llm": llama_service(ports["llm"]),
        },
    )
    return ports


def test_switch_keeps_pinned_recreates_changed_and_removes_the_rest(
    clean_namespace, two_profiles
) -> None:
    engine = clean_namespace
    first = run_cli("profile", "switch", "alpha", "--yes")
    assert first.returncode == 0, first.stderr
    before = running(engine)
    assert set(before) == {"shared", "only-a", "changed"}

    second = run_cli("profile", "switch", "beta", "--yes", "--json")
    assert second.returncode == 0, second.stderr
    after = running(engine)
    assert set(after) == {"shared", "changed", "llm"}
    assert after["shared"] == before["shared"], "pinned, unchanged service must keep its container"
    assert after["changed"] != before["changed"], "a changed spec must get a new container"
    assert "only-a" not in {item.service for item in everything(engine)}
    actions = {step["service"]: step["action"] for step in json.loads(second.stdout)["steps"]}
    assert actions == {"only-a": "stop", "changed": "recreate", "llm": "start", "shared": "keep"}

    # The llama.cpp server really answers, and `ps` names the active profile from the labels.
    answer = httpx.get(f"http://127.0.0.1:{two_profiles['llm']}/v1/models", timeout=5).json()
    assert [item["id"] for item in answer["data"]] == ["smollm2"]
    ps = json.loads(run_cli("ps", "--json").stdout)
    assert ps["active_profile"] == "beta"
    assert {row["service"]: row["health"] for row in ps["services"]} == {
        "shared": "healthy",
        "changed": "healthy",
        "llm": "healthy",
    }


def test_switch_is_idempotent_and_dry_run_changes_nothing(clean_namespace, two_profiles) -> None:
    engine = clean_namespace
    assert run_cli("profile", "switch", "alpha", "--yes").returncode == 0
    before = running(engine)
    dry = run_cli("profile", "switch", "beta", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["changes"] is True
    assert running(engine) == before
    again = run_cli("profile", "switch", "alpha", "--yes")
    assert again.returncode == 0
    assert "already running" in again.stderr
    assert running(engine) == before


def test_service_that_never_turns_ready_restores_the_previous_set(
    clean_namespace, write_profile, base_image
) -> None:
    engine = clean_namespace
    ports = [free_port() for _ in range(3)]
    write_profile(
        "good",
        services={
            "keepme": web_service(ports[0]),
            "replaced": web_service(ports[1], text="old"),
        },
    )
    write_profile(
        "bad",
        services={
            "keepme": web_service(ports[0]),
            "replaced": web_service(ports[1], text="new"),
            "broken": web_service(ports[2], health="/never-200", timeout=4),
        },
    )
    assert run_cli("profile", "switch", "good", "--yes").returncode == 0
    before = running(engine)

    result = run_cli("profile", "switch", "bad", "--yes")
    assert result.returncode == 6
    assert "service 'broken' did not become ready" in result.stderr
    assert "404" in result.stderr  # the last probe's answer
    assert "Traceback" not in result.stderr
    # The very same containers run again; nothing of the failed profile is left.
    assert running(engine) == before
    assert sorted(item.service for item in everything(engine)) == ["keepme", "replaced"]
    assert httpx.get(f"http://127.0.0.1:{ports[1]}/", timeout=5).status_code == 200


def test_crashing_service_reports_its_log(clean_namespace, write_profile, base_image) -> None:
    engine = clean_namespace
    port = free_port()
    dies = web_service(port)
    dies["args"] = ["sh", "-c", "echo model file not found >&2; exit 3"]
    write_profile("crash", services={"dies": dies})
    result = run_cli("profile", "switch", "crash", "--yes")
    assert result.returncode == 6
    assert "container exited with code 3" in result.stderr
    assert "model file not found" in result.stderr  # the last lines of its log
    assert everything(engine) == []


def test_taken_host_port_is_refused_before_anything_changes(
    clean_namespace, write_profile, base_image
) -> None:
    engine = clean_namespace
    ports = [free_port() for _ in range(2)]
    write_profile("one", services={"web": web_service(ports[0])})
    write_profile("two", services={"other": web_service(ports[1])})
    assert run_cli("profile", "switch", "one", "--yes").returncode == 0
    before = running(engine)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", ports[1]))
        holder.listen()
        result = run_cli("profile", "switch", "two", "--yes")
    assert result.returncode == 5
    assert f"port {ports[1]} for service 'other' is already in use" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert running(engine) == before


def test_concurrent_switches_end_in_one_consistent_state(clean_namespace, two_profiles) -> None:
    engine = clean_namespace
    command = [sys.executable, "-m", "aitherctl", "profile", "switch"]
    procs = [
        subprocess.Popen(
            [*command, name, "--yes"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=dict(os.environ),
        )
        for name in ("alpha", "beta")
    ]
    codes = [proc.wait(timeout=600) for proc in procs]
    assert codes == [0, 0], [proc.stderr.read() for proc in procs if proc.stderr]
    services = sorted(item.service for item in everything(engine))
    assert services in (["changed", "only-a", "shared"], ["changed", "llm", "shared"])
    assert all(item.running for item in everything(engine))
    assert not any("-replaced-" in item.name for item in everything(engine))
    active = json.loads(run_cli("ps", "--json").stdout)["active_profile"]
    assert active == ("alpha" if "only-a" in services else "beta")


def test_up_and_down_touch_only_the_named_services(clean_namespace, two_profiles) -> None:
    engine = clean_namespace
    assert run_cli("profile", "switch", "alpha", "--yes").returncode == 0
    before = running(engine)
    down = run_cli("down", "only-a", "--yes")
    assert down.returncode == 0, down.stderr
    assert set(running(engine)) == {"shared", "changed"}
    up = run_cli("up", "only-a", "--yes")
    assert up.returncode == 0, up.stderr
    after = running(engine)
    assert after["shared"] == before["shared"]
    assert after["changed"] == before["changed"]
    assert "only-a" in after
    refused = run_cli("down")
    assert refused.returncode == 2
    assert "--all" in refused.stderr
    assert run_cli("down", "--all", "--yes").returncode == 0
    assert everything(engine) == []


def test_docker_unreachable_is_one_clear_line(tmp_path: Path) -> None:
    result = run_cli("ps", env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    assert result.returncode == 7
    assert result.stderr.startswith("error: cannot reach the Docker engine at unix://")
    assert len(result.stderr.strip().splitlines()) == 1


def test_switches_and_rollbacks_are_journaled_for_the_monitor(
    clean_namespace, write_profile, base_image
) -> None:
    from aitherctl.monitor.collect import SwitchJournalLog

    ports = [free_port() for _ in range(2)]
    write_profile("ok", services={"web": web_service(ports[0])})
    write_profile(
        "nok",
        services={
            "web": web_service(ports[0]),
            "bad": web_service(ports[1], health="/missing", timeout=3),
        },
    )
    assert run_cli("profile", "switch", "ok", "--yes").returncode == 0
    assert run_cli("profile", "switch", "nok", "--yes").returncode == 6
    messages = [entry.message for entry in SwitchJournalLog().recent(10)]
    assert messages[0].startswith("ok: 1 started, 0 recreated, 0 stopped, 0 kept in ")
    assert messages[1].startswith("switch to nok failed (bad: not ready after 3s")
    assert messages[1].endswith("rolled back")


def test_a_killed_container_is_planned_as_resume_and_the_switch_resumes_it(
    clean_namespace, write_profile, base_image
) -> None:
    """After a reboot or an OOM kill the profile's container exists, stopped: `profile plan`
    shows `resume` (table and JSON) and `profile switch` starts that very container again."""
    engine = clean_namespace
    ports = [free_port() for _ in range(2)]
    write_profile("pair", services={"one": web_service(ports[0]), "two": web_service(ports[1])})
    assert run_cli("profile", "switch", "pair", "--yes").returncode == 0
    before = running(engine)

    def kill_two() -> None:
        sdk_of(engine).containers.get(running(engine)["two"]).kill()  # type: ignore[attr-defined]
        assert set(running(engine)) == {"one"}

    kill_two()
    table = run_cli("profile", "plan", "pair")
    assert table.returncode == 0, table.stderr
    assert "Traceback" not in table.stderr
    rows = [line.split()[:2] for line in table.stdout.splitlines()[2:]]
    assert rows == [["resume", "two"], ["keep", "one"]]
    planned = json.loads(run_cli("profile", "plan", "pair", "--json").stdout)
    assert [(s["service"], s["action"]) for s in planned["steps"]] == [
        ("two", "resume"),
        ("one", "keep"),
    ]

    switched = run_cli("profile", "switch", "pair", "--yes")
    assert switched.returncode == 0, switched.stderr
    assert "resume" in switched.stderr  # the plan table, on stderr before the switch
    assert running(engine) == before  # the very same container runs again
    assert httpx.get(f"http://127.0.0.1:{ports[1]}/", timeout=5).status_code == 200

    kill_two()
    as_json = run_cli("profile", "switch", "pair", "--yes", "--json")
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert [(s["service"], s["action"]) for s in document["steps"]] == [
        ("two", "resume"),
        ("one", "keep"),
    ]
    assert [(s["service"], s["ready"]) for s in document["services"]] == [("two", True)]
    assert running(engine) == before


def test_a_profile_whose_services_already_run_becomes_the_active_one(
    clean_namespace, write_profile, base_image
) -> None:
    """Two profiles with the same services: switching to the second restarts nothing and makes
    it the active profile (`ps`, the monitor and `run` read it)."""
    engine = clean_namespace
    port = free_port()
    write_profile("day", services={"web": web_service(port)})
    write_profile("night", services={"web": web_service(port)})
    assert run_cli("profile", "switch", "day", "--yes").returncode == 0
    before = running(engine)
    assert json.loads(run_cli("ps", "--json").stdout)["active_profile"] == "day"

    switched = run_cli("profile", "switch", "night", "--yes")
    assert switched.returncode == 0, switched.stderr
    assert switched.stderr.splitlines()[-1] == (
        "profile night is active; its services were already running"
    )
    assert running(engine) == before  # nothing restarted
    assert json.loads(run_cli("ps", "--json").stdout)["active_profile"] == "night"
    again = run_cli("profile", "switch", "night", "--yes", "--json")
    assert json.loads(again.stdout)["activated"] is False
    assert run_cli("profile", "switch", "night", "--yes").stderr.splitlines()[-1] == (
        "profile night is already running; nothing to do"
    )
