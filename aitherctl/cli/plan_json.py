"""A plan as `profile plan --json` and `profile switch --json` write it. Apart from the table
renderers (cli/render.py) so that a `--json` switch does not import Rich."""

from __future__ import annotations

from collections.abc import Sequence

from aitherctl.models.fit import ServiceFit
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


def fits_json(fits: Sequence[ServiceFit]) -> list[dict[str, object]]:
    """Each service's model estimate (aitherctl.models.fit): bytes, per GPU where split."""
    rows: list[dict[str, object]] = []
    for fit in fits:
        estimate = fit.estimate
        rows.append(
            {
                "service": fit.service,
                "verdict": fit.verdict.value,
                "needed_bytes": estimate.needed_per_gpu_bytes if estimate else None,
                "budget_bytes": fit.budget_bytes,
                "weights_bytes": estimate.weights_bytes if estimate else None,
                "weights_method": estimate.weights_method if estimate else None,
                "kv_cache_bytes": estimate.kv_bytes if estimate else None,
                "kv_cache_tokens": estimate.kv_tokens if estimate else None,
                "kv_cache_sequences": estimate.kv_sequences if estimate else None,
                "kv_cache_dtype": estimate.kv_dtype if estimate else None,
                "overhead_bytes": estimate.overhead_bytes if estimate else None,
                "gpus": estimate.gpus if estimate else None,
                "fitting_tokens": fit.fitting_tokens,
                "source": fit.source,
                "summary": fit.summary(),
                "method": estimate.describe() if estimate else None,
            }
        )
    return rows
