"""The first hour with a running profile: `profile list` marks it, `down --all` then `up` brings
it back, and `up` asks (or takes --yes) as `down` and `switch` do. Real engine, real containers."""

from __future__ import annotations

import json

import pytest

from tests.conftest import free_port, run_cli, web_service

pytestmark = pytest.mark.docker


def running_services(engine) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(item.service for item in engine.list_managed() if item.running)


@pytest.fixture
def mine(clean_namespace, write_profile, base_image):  # type: ignore[no-untyped-def]
    write_profile(
        "mine",
        description="My own web pair. Second sentence is left out.",
        services={"web": web_service(free_port()), "api": web_service(free_port())},
    )
    return clean_namespace


def list_lines(columns: int) -> list[str]:
    result = run_cli("profile", "list", env={"COLUMNS": str(columns)})
    assert result.returncode == 0, result.stderr
    return [line.rstrip() for line in result.stdout.splitlines()]


def test_profile_list_marks_the_active_profile(mine) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("profile", "switch", "mine", "--yes").returncode == 0
    assert list_lines(80) == [
        "   profile     source    services                 description",
        "   cpu         built-in  assistant                No GPU needed: one llama.cpp …",
        "   creative    built-in  comfyui, orchestrator    Image and video work: the orc…",
        "   dev         built-in  coding, embeddings,      Day-to-day development on one…",
        "                         orchestrator, vision (+",
        "                         on demand: reasoning)",
        "*  mine        user      api, web                 My own web pair",
        "   production  built-in  orchestrator             Serving many users: the orche…",
        "* active on this Docker engine: mine",
    ]
    wide = list_lines(200)
    assert wide[0].split() == ["profile", "source", "services", "description"]
    assert wide[3].startswith(
        "   dev         built-in  coding, embeddings, orchestrator, vision (+ on demand: reasoning)"
        "  Day-to-day development on one GPU: orchestrator, coding, vision and embeddings "
    )
    assert wide[4] == "*  mine        user      api, web" + " " * 59 + "My own web pair"
    assert max(len(line) for line in wide) <= 200
    rows = {
        row["name"]: row
        for row in json.loads(run_cli("profile", "list", "--json").stdout)["profiles"]
    }
    assert [name for name, row in rows.items() if row["active"]] == ["mine"]


def test_down_all_then_up_brings_the_last_profile_back(mine) -> None:  # type: ignore[no-untyped-def]
    engine = mine
    assert run_cli("profile", "switch", "mine", "--yes").returncode == 0
    down = run_cli("down", "--all", "--yes")
    assert down.returncode == 0, down.stderr
    assert running_services(engine) == []
    # Without a terminal `up` asks for --yes, as `down` and `switch` do; nothing starts.
    refused = run_cli("up")
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1] == (
        "error: start api, web: standard input is not a terminal, pass --yes"
    )
    assert running_services(engine) == []
    up = run_cli("up", "--yes")
    assert up.returncode == 0, up.stderr
    assert running_services(engine) == ["api", "web"]
    assert json.loads(run_cli("ps", "--json").stdout)["active_profile"] == "mine"
