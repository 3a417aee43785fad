"""Rented nodes for `ps`: this machine's records (no call to the provider, so `ps` stays
quick; `aitherctl nodes` asks the provider), and from a running `serve` each node's idle time
left (its `GET /status`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aitherctl.monitor.model import SchedulerView
    from aitherctl.nodes.model import NodeRow


def current_node_rows(scheduler: SchedulerView | None = None) -> tuple[NodeRow, ...]:
    """Every live instance this machine recorded; `scheduler`: the serving gateway's view
    (None: read it now when one is serving)."""
    import os

    from aitherctl.paths import state_dir_text

    try:  # no record at all (most machines): nothing to import or read
        if not any(name.endswith(".json") for name in os.listdir(state_dir_text() + "/nodes")):
            return ()
    except OSError:
        return ()
    from aitherctl.nodes.model import node_rows
    from aitherctl.nodes.records import NodeRecords
    from aitherctl.routing.ledger import start_of_local_day

    records = NodeRecords().all()
    if not any(record.live for record in records):
        return ()
    if scheduler is None:
        from aitherctl.monitor.serve_status import SchedulerStatusReader
        from aitherctl.serve.discovery import find_gateway

        reader = SchedulerStatusReader(find_gateway, api_key=os.environ.get("AITHER_API_KEY"))
        scheduler = reader.read()
    idle = None
    if scheduler.serving and scheduler.error is None:
        idle = {b.name: b.idle_left_s for b in scheduler.backends if b.kind == "node"}
    now = time.time()
    return node_rows(
        records,
        now=now,
        day_start=start_of_local_day(now),
        idle_left_s=idle,
        serving_profile=scheduler.profile,
    )
