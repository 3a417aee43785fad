"""A plan as `profile plan --json` and `profile switch --json` write it. Apart from the table
renderers (cli/render.py) so that a `--json` switch does not import Rich."""

from __future__ import annotations

from collections.abc import Sequence

from aitherctl.switching.plan import Plan


def plan_json(plan: Plan, hosts: Sequence[str] | None = None) -> dict[str, object]:
    return {
        "profile": plan.profile,
        "changes": plan.changes,
        "steps": [
            {
                **({"host": hosts[index]} if hosts else {}),
                "action": step.action.value,
                "service": step.service,
                "reason": step.reason,
                "container_id": step.current.id if step.current else None,
                "image": step.target.image if step.target else None,
                "port": step.target.host_port if step.target else None,
                "gpus": list(step.target.gpus) if step.target else None,
                "vram_bytes": step.target.vram_bytes if step.target else None,
                "spec_hash": step.target.spec_hash() if step.target else None,
            }
            for index, step in enumerate(plan.steps)
        ],
    }
