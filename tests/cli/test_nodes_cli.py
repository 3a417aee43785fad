"""`aitherctl nodes`: exact output at 80 and 200 columns against the Vast.ai contract double,
and the first promise with a real process: `kill -9` right after a create, then `aitherctl
nodes` finds the instance and `nodes destroy` / `nodes recover` end it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aitherctl.cli.app import app
from aitherctl.nodes.records import NodeRecords, machine_name
from tests.doubles.vast_api import VastState
from tests.nodes.conftest import NODE_PROFILE

runner = CliRunner()

PROFILE = NODE_PROFILE + "cloud: {daily_cap: 5}\n"


def invoke(*args: str, columns: int = 200):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), env={"COLUMNS": str(columns)})


@pytest.fixture
def dev(write_profile) -> Path:  # type: ignore[no-untyped-def]
    return write_profile("dev", PROFILE)


def test_no_nodes_and_no_key_asks_nobody(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAST_API_KEY", raising=False)
    monkeypatch.setenv("VAST_URL", "http://127.0.0.1:9")  # would fail if it were asked
    result = invoke("nodes")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "no nodes\n", "")


@pytest.mark.parametrize("columns", [80, 200])
def test_nodes_lists_state_price_age_and_cost(
    vast_url: str, vast_state: VastState, dev: Path, columns: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = invoke("nodes", "create", "reasoning", "--profile", "dev", "--yes", columns=columns)
    assert created.exit_code == 0, created.output
    [record] = NodeRecords().all()
    assert created.stdout.splitlines() == [
        f"created reasoning: instance {record.instance_id} at $0.152/h (booting)",
        "`aitherctl nodes` shows it, `aitherctl nodes destroy reasoning` ends it",
    ]
    # The clock fixed 125.4 s after the intent and 125.2 s after the provider had it.
    from aitherctl.cli import nodes_cmd

    monkeypatch.setattr(nodes_cmd, "now", lambda: record.created_at + 125.4)
    record = NodeRecords().update(record, started_at=record.created_at + 0.2)
    listed = invoke("nodes", columns=columns)
    assert listed.exit_code == 0, listed.output
    assert [line.rstrip() for line in listed.stdout.splitlines()] == [
        "node       state    instance     $/h  age        cost  profile",
        f"reasoning  booting  {record.instance_id}   $0.152  2m 05s  $0.0053  dev",
    ]
    as_json = json.loads(invoke("nodes", "--json").stdout)
    [row] = as_json["nodes"]
    assert (row["node"], row["state"], row["instance_id"], row["profile"]) == (
        "reasoning",
        "booting",
        record.instance_id,
        "dev",
    )
    assert row["cost_usd"] == round((0.15 + 0.10 * 16 / 720) * 125.2 / 3600, 6)
    assert row["age_s"] == 125.4
    assert as_json["unknown"] == 0
    gone = invoke("nodes", "destroy", "reasoning", "--yes")
    assert gone.exit_code == 0, gone.output
    assert gone.stdout.startswith(f"destroyed reasoning ({record.instance_id}): $0.00")
    assert vast_state.instances == {}
    assert invoke("nodes").stdout == "no nodes\n"


def test_destroy_needs_a_name_or_all_and_yes_without_a_terminal(vast_url: str, dev: Path) -> None:
    assert invoke("nodes", "create", "reasoning", "--profile", "dev", "--yes").exit_code == 0
    neither = invoke("nodes", "destroy")
    assert (neither.exit_code, neither.stderr) == (
        2,
        "error: name a node (or an instance id), or pass --all\n",
    )
    unknown = invoke("nodes", "destroy", "nope", "--yes")
    assert (unknown.exit_code, unknown.stderr) == (
        4,
        "error: no node 'nope' (see `aitherctl nodes`)\n",
    )
    asked = invoke("nodes", "destroy", "--all")
    assert asked.exit_code == 2
    assert "standard input is not a terminal, pass --yes" in asked.stderr
    assert len(NodeRecords().all()) == 1
    missing = invoke("nodes", "create", "nope", "--profile", "dev", "--yes")
    assert (missing.exit_code, missing.stderr) == (
        4,
        "error: profile 'dev' has no node 'nope' (it has: reasoning)\n",
    )


def test_the_provider_down_is_said_and_the_records_still_listed(
    vast_url: str, vast_state: VastState, dev: Path
) -> None:
    assert invoke("nodes", "create", "reasoning", "--profile", "dev", "--yes").exit_code == 0
    vast_state.down = True
    listed = invoke("nodes")
    assert listed.exit_code == 0
    assert listed.stdout.splitlines()[1].startswith("reasoning  booting")
    assert listed.stderr == (
        "warning: could not ask the provider (vast GET /api/v1/instances/: HTTP 503 "
        "(unavailable: maintenance)): showing the records only\n"
    )
    refused = invoke("nodes", "destroy", "--all", "--yes")
    assert (refused.exit_code, refused.stderr) == (
        1,
        "error: cannot destroy: vast GET /api/v1/instances/: HTTP 503 (unavailable: maintenance)\n",
    )
    assert [r.state.value for r in NodeRecords().all()] == ["booting"]  # nothing half-changed


def _create_in_a_process_and_kill_it(vast_state: VastState, tmp_path: Path) -> None:
    """`aitherctl nodes create` in its own process, killed with SIGKILL once the provider has
    created the instance and before the answer reaches it: its record holds the intent only."""
    vast_state.hold_create = threading.Event()
    process = subprocess.Popen(
        [sys.executable, "-m", "aitherctl", "nodes", "create", "reasoning", "-p", "dev", "--yes"],
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert vast_state.created.wait(timeout=120), process.communicate(timeout=5)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        vast_state.hold_create.set()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    [record] = NodeRecords().all()
    assert (record.state.value, record.instance_id) == ("creating", None)
    assert len(vast_state.instances) == 1  # paid for, and its creator is dead


def test_kill_9_right_after_a_create_then_nodes_finds_it_and_destroys_it(
    vast_url: str, vast_state: VastState, dev: Path, tmp_path: Path
) -> None:
    _create_in_a_process_and_kill_it(vast_state, tmp_path)
    [instance_id] = [str(i) for i in vast_state.instances]
    listed = json.loads(invoke("nodes", "--json").stdout)
    assert [(n["node"], n["state"], n["instance_id"]) for n in listed["nodes"]] == [
        ("reasoning", "booting", instance_id)
    ]
    gone = invoke("nodes", "destroy", "--all", "--yes")
    assert gone.exit_code == 0, gone.output
    assert vast_state.instances == {}
    assert [r.state.value for r in NodeRecords().all()] == ["gone"]


def test_kill_9_and_a_lost_record_then_recover_destroys_or_adopts(
    vast_url: str, vast_state: VastState, dev: Path, tmp_path: Path
) -> None:
    _create_in_a_process_and_kill_it(vast_state, tmp_path)
    for record in NodeRecords().all():  # the state folder lost too (a new disk, a reboot)
        NodeRecords().forget(record)
    [instance_id] = [str(i) for i in vast_state.instances]
    listed = invoke("nodes")
    assert listed.stdout.splitlines()[1].startswith(f"reasoning  unknown  {instance_id}")
    assert listed.stderr == (
        "warning: 1 instance with this machine's label but no record here (a crash?): still "
        "paying; `aitherctl nodes recover` destroys or adopts it\n"
    )
    refused = invoke("nodes", "recover")
    assert refused.exit_code == 2
    assert refused.stderr == (
        "error: standard input is not a terminal: pass --destroy or --adopt (and --yes)\n"
    )
    adopted = invoke("nodes", "recover", "--adopt", "--yes")
    assert adopted.stdout == f"adopted reasoning (instance {instance_id}, $0.152/h)\n"
    assert invoke("nodes").stderr == ""
    assert NodeRecords().all()[0].adopted
    assert machine_name() in NodeRecords().all()[0].label.text()
    # And an unknown one destroyed: forget the adopted record again.
    NodeRecords().forget(NodeRecords().all()[0])
    destroyed = invoke("nodes", "recover", "--destroy", "--yes")
    assert destroyed.stdout == f"destroyed reasoning (instance {instance_id}, $0.152/h)\n"
    assert vast_state.instances == {}
    assert invoke("nodes", "recover").stdout == (
        "nothing to recover: every instance of this machine has its record\n"
    )


def test_create_is_refused_at_the_daily_cap_and_nothing_is_rented(
    vast_url: str, vast_state: VastState, write_profile, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    import time as clock

    from aitherctl.cli import nodes_cmd
    from aitherctl.routing.ledger import Ledger, LedgerRow

    moment = clock.time()
    monkeypatch.setattr(nodes_cmd, "now", lambda: moment)  # a node's cost is exactly 0 here

    write_profile("dev", PROFILE.replace("daily_cap: 5", "daily_cap: 0.01"))
    Ledger().record(
        LedgerRow(
            ts=moment,
            profile="dev",
            effort=9,
            tier="frontier",
            backend="deepseek",
            model="m",
            local=False,
            tokens_in=10,
            tokens_out=10,
            cost_usd=0.02,
            ttft_s=None,
            total_s=None,
            outcome="ok",
            attempts=1,
            prompt_sha256=None,
        )
    )
    write_profile("warned", PROFILE.replace("daily_cap: 5", "daily_cap: 0.024"))
    warned = invoke("nodes", "create", "reasoning", "--profile", "warned", "--yes")
    assert warned.exit_code == 0, warned.output
    assert warned.stderr == ("warning: today's spend $0.0200 is past 80% of the cloud cap $0.02\n")
    assert invoke("nodes", "destroy", "--all", "--yes").exit_code == 0
    [closed] = NodeRecords().all()
    NodeRecords().forget(closed)
    vast_state.destroyed.clear()
    refused = invoke("nodes", "create", "reasoning", "--profile", "dev", "--yes")
    assert (refused.exit_code, refused.stderr) == (
        10,
        "error: node 'reasoning': today's spend $0.0200 has reached the cloud cap $0.01: no node "
        "is created until tomorrow\n",
    )
    assert vast_state.instances == {}
    assert NodeRecords().all() == []


@pytest.mark.parametrize("columns", [80, 200])
def test_every_node_state_renders(columns: int, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from aitherctl.cli.nodes_cmd import _print_views
    from aitherctl.cli.output import Output
    from aitherctl.nodes.model import NodeRecord, NodeState
    from aitherctl.nodes.operations import NodeView, Survey
    from aitherctl.nodes.provider import Instance, InstanceStatus

    now = 1_000_000.0

    def record(state: NodeState, index: int) -> NodeRecord:
        return NodeRecord(
            id=f"r{index}",
            node=f"n-{state.value}",
            profile="dev",
            machine="box",
            provider="vast",
            state=state,
            created_at=now - 3725,
            instance_id=f"70{index}",
            price_per_hour_usd=0.2,
            started_at=now - 3600,
            ended_at=now - 1800 if state is NodeState.GONE else None,
        )

    views = [
        NodeView(record(state, i), None, now)
        for i, state in enumerate(NodeState)
        if state is not NodeState.UNKNOWN
    ]
    stranger = Instance("799", "aitherctl/box/dev/lost/r9", InstanceStatus.RUNNING, 0.3, now - 60)
    views.append(NodeView(None, stranger, now))
    monkeypatch.setenv("COLUMNS", str(columns))
    _print_views(Output(), Survey(tuple(views), provider_error="vast GET /x: HTTP 503 (down)"))
    captured = capsys.readouterr()
    assert [line.rstrip() for line in captured.out.splitlines()] == [
        "node          state       instance     $/h  age        cost  profile",
        "n-creating    creating    700       $0.200  1h 02m  $0.2000  dev",
        "n-booting     booting     701       $0.200  1h 02m  $0.2000  dev",
        "n-running     running     702       $0.200  1h 02m  $0.2000  dev",
        "n-destroying  destroying  703       $0.200  1h 02m  $0.2000  dev",
        "n-gone        gone        704       $0.200  1h 02m  $0.1000  dev",
        "lost          unknown     799       $0.300  1m 00s  $0.0050  -",
    ]
    err = " ".join(captured.err.split())
    assert err == (
        "warning: could not ask the provider (vast GET /x: HTTP 503 (down)): showing the records "
        "only warning: 1 instance with this machine's label but no record here (a crash?): still "
        "paying; `aitherctl nodes recover` destroys or adopts it"
    )


def test_recover_names_an_unknown_instance_even_without_docker(
    vast_url: str, vast_state: VastState, dev: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert invoke("nodes", "create", "reasoning", "--profile", "dev", "--yes").exit_code == 0
    NodeRecords().forget(NodeRecords().all()[0])
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    result = invoke("recover")
    assert result.exit_code == 7  # no Docker engine: switches cannot be recovered
    assert result.stderr.splitlines()[0] == (
        "warning: 1 rented instance with this machine's label but no record here: still paying; "
        "`aitherctl nodes recover` destroys or adopts it"
    )
