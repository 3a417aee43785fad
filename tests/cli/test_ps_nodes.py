"""`ps`'s rented nodes: built from this machine's records (each one's cost since the start of
the day) and a running serve's idle time left, rendered at 80 and 200 columns, every state a
live record can be in."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from aitherctl.cli.service_cmds import nodes_table
from aitherctl.nodes.model import NodeRecord, NodeState, node_rows

DAY = 1_800_000_000.0  # the start of the local day
NOW = DAY + 3600.0


def _record(rid: str, node: str, state: NodeState, **extra: object) -> NodeRecord:
    fields: dict[str, object] = {
        "id": rid,
        "node": node,
        "profile": "dev",
        "machine": "box",
        "provider": "vast",
        "state": state,
        "created_at": DAY - 600,
    }
    fields.update(extra)
    return NodeRecord(**fields)  # type: ignore[arg-type]


RECORDS = [
    # running since before midnight: only today's hour counts
    _record(
        "a1",
        "reasoning",
        NodeState.RUNNING,
        instance_id="7000001",
        price_per_hour_usd=0.15222,
        started_at=DAY - 600,
    ),
    _record(
        "b2",
        "creative",
        NodeState.BOOTING,
        instance_id="7000002",
        price_per_hour_usd=0.30,
        started_at=NOW - 90,
    ),
    _record("c3", "orchestrator", NodeState.CREATING, created_at=NOW - 5),
    _record(
        "d4",
        "spare",
        NodeState.DESTROYING,
        instance_id="7000004",
        price_per_hour_usd=0.2,
        started_at=NOW - 1800,
    ),
    _record(
        "e5",
        "stray",
        NodeState.GONE,
        instance_id="7000005",
        price_per_hour_usd=0.2,
        started_at=DAY,
        ended_at=DAY + 60,
    ),  # destroyed: not listed
]


def test_rows_cost_since_the_start_of_the_day_and_take_idle_time_from_serve() -> None:
    rows = node_rows(
        RECORDS,
        now=NOW,
        day_start=DAY,
        idle_left_s={"reasoning": 754.0, "creative": None},
        serving_profile="dev",
    )
    assert [(r.node, r.state.value, round(r.spent_today_usd, 6), r.idle_left_s) for r in rows] == [
        ("reasoning", "running", 0.15222, 754.0),
        ("creative", "booting", 0.0075, None),
        ("orchestrator", "creating", 0.0, None),
        ("spare", "destroying", 0.1, None),
    ]
    other = node_rows(
        RECORDS, now=NOW, day_start=DAY, idle_left_s={"reasoning": 1.0}, serving_profile="prod"
    )
    assert other[0].idle_left_s is None  # serve serves another profile: not its node


TABLE = """\
node          profile  state       instance  $/h     today    idle left
reasoning     dev      running     7000001   $0.152  $0.1522  12m34s
creative      dev      booting     7000002   $0.300  $0.0075  -
orchestrator  dev      creating    -         -       $0.0000  -
spare         dev      destroying  7000004   $0.200  $0.1000  -"""


@pytest.mark.parametrize("width", [80, 200])
def test_the_nodes_table_fits_80_columns_and_shows_every_state(width: int) -> None:
    rows = node_rows(
        RECORDS, now=NOW, day_start=DAY, idle_left_s={"reasoning": 754.0}, serving_profile="dev"
    )
    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    console.print(nodes_table(rows))
    text = "\n".join(line.rstrip() for line in console.export_text().splitlines())
    assert text == TABLE
