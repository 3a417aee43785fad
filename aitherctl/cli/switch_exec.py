"""`aitherctl profile switch`, without Typer: the Typer command and the console script's fast
path (`aitherctl.cli.fast_run`) both run `switch_command`, so a switch from a script does not pay
for building the Typer app, and both ways print the same and exit the same. Also the pieces
`plan`, `up`, `down` and `restart` share with it: the progress lines, the URLs, the JSON of a
VRAM check."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aitherctl.cli import runtime
from aitherctl.cli.output import Output
from aitherctl.errors import ExitCode

if TYPE_CHECKING:
    from aitherctl.gpu.vram import VramCheck
    from aitherctl.profiles.catalog import ProfileCatalog
    from aitherctl.switching.plan import Plan
    from aitherctl.switching.switch import Prepared, SwitchResult


def switch_command(
    name: str,
    *,
    dry_run: bool = False,
    yes: bool = False,
    lock_timeout: float = 900.0,
    no_pull: bool = False,
    json_out: bool = False,
) -> int:
    """Move the machine to profile NAME (or, with `dry_run`, show the plan); the exit code. An
    `AitherError` or a `KeyboardInterrupt` (a switch rolled back on a signal) is the caller's
    to report (`aitherctl.cli.output.report_failure`)."""
    from aitherctl.cli.plan_json import fits_json, plan_json
    from aitherctl.models.check import short_context_warnings
    from aitherctl.switching.switch import Declined, ModelPolicy, prepare, switch

    out = Output(json_mode=json_out)
    catalog = runtime.catalog()
    profile = catalog.load(name)
    from aitherctl.switching.hosts import multi_host

    if multi_host(profile):
        return _switch_hosts(
            out,
            catalog,
            profile.name,
            dry_run=dry_run,
            yes=yes,
            lock_timeout=lock_timeout,
            json_out=json_out,
            no_pull=no_pull,
        )
    engine = runtime.docker()
    progress = CliProgress(out)
    if dry_run:
        prepared = prepare(engine, profile, runtime.gpu_inventory(), catalog=catalog)
        for warning in short_context_warnings(prepared.fits):
            out.warn(warning)
        if json_out:
            out.data(
                {
                    **plan_json(prepared.plan),
                    "dry_run": True,
                    "vram": vram_json(prepared.vram),
                    "models": fits_json(prepared.fits),
                }
            )
        else:
            from aitherctl.cli.render import plan_table

            out.print(plan_table(prepared.plan))
            for line in on_demand_lines(prepared):
                out.print(line, markup=False)
        return 0

    def confirm(prepared: Prepared, changed: bool) -> bool:
        # The lock is not held here: another switch may run while the user reads.
        if changed:
            out.warn("the plan changed while you were deciding; this is the new plan")
        else:
            for warning in short_context_warnings(prepared.fits):
                out.warn(warning)
        if not json_out:
            from aitherctl.cli.render import plan_table

            out.err.print(plan_table(prepared.plan))
            for line in on_demand_lines(prepared):
                out.err.print(line, markup=False, highlight=False)
        return out.confirm(f"switch to {profile.name}?", assume_yes=yes)

    try:
        result = switch(
            engine,
            catalog,
            profile.name,
            runtime.gpu_inventory,
            progress,
            lock_timeout_s=lock_timeout,
            confirm=confirm,
            models=ModelPolicy(pull=not no_pull),
            # With --yes nobody is asked: the plan is made once, under the lock.
            asks=not yes,
        )
    except Declined:
        return int(ExitCode.ERROR)
    urls = service_urls(engine, result.plan)
    return report_switched(out, result, plan_json(result.plan), urls, json_out=json_out)


def _switch_hosts(
    out: Output,
    catalog: ProfileCatalog,
    name: str,
    *,
    dry_run: bool,
    yes: bool,
    lock_timeout: float,
    json_out: bool,
    no_pull: bool = False,
) -> int:
    """`profile switch` for a profile that spans hosts (or leaves one): one plan with a host
    column, one transaction over every engine (aitherctl.switching.hosts)."""
    from aitherctl.cli.plan_json import plan_json
    from aitherctl.cli.render import plan_table
    from aitherctl.switching.hosts import (
        connect_hosts,
        hosts_involved,
        prepare_hosts,
        switch_hosts,
    )
    from aitherctl.switching.switch import Change, Declined, ModelPolicy

    profile = catalog.load(name)
    engines = connect_hosts(runtime.docker, hosts_involved(profile))
    try:
        if dry_run:
            prepared = prepare_hosts(engines, profile, runtime.gpu_inventory, catalog)
            if json_out:
                out.data({**plan_json(prepared.plan, prepared.hosts), "dry_run": True})
            else:
                out.print(plan_table(prepared.plan, prepared.hosts))
            return 0

        def confirm(prepared: Change, changed: bool) -> bool:
            if changed:
                out.warn("the plan changed while you were deciding; this is the new plan")
            if not json_out:
                out.err.print(plan_table(prepared.plan, prepared.hosts))
            return out.confirm(f"switch to {profile.name}?", assume_yes=yes)

        try:
            result = switch_hosts(
                runtime.docker,
                catalog,
                profile.name,
                runtime.gpu_inventory,
                CliProgress(out),
                confirm=confirm,
                lock_timeout_s=lock_timeout,
                engines=engines,
                models=ModelPolicy(pull=not no_pull),
                asks=not yes,
            )
        except Declined:
            return int(ExitCode.ERROR)
        urls: dict[str, str] = {}
        for host, part in result.change.parts.items():
            for service, url in service_urls(engines[host], part.plan).items():
                urls[service if host == "local" else f"{service}@{host}"] = url
        return report_switched(
            out,
            result,
            plan_json(result.plan, result.change.hosts),
            urls,
            json_out=json_out,
            hosts=len(profile.host_names),
        )
    finally:
        for engine in engines.values():
            engine.close()


def report_switched(
    out: Output,
    result: SwitchResult,
    plan_document: dict[str, Any],
    urls: dict[str, str],
    *,
    json_out: bool,
    hosts: int | None = None,
) -> int:
    """What a switch that ran says: the JSON document (each service's outcome, with its host
    when the profile names hosts: `hosts`, their number), or the result line and the URLs. A
    switch it recovered first is named on stderr either way."""
    if result.recovered:
        out.info(f"first {result.recovered} that had been interrupted")
    if json_out:
        out.data(
            {
                **plan_document,
                "switched": True,
                "activated": result.activated,
                "seconds": round(result.seconds, 2),
                "services": [
                    {
                        "service": o.service,
                        **({"host": o.host} if hosts is not None else {}),
                        "ready": o.ready,
                        "seconds": round(o.seconds, 2),
                        "detail": o.detail,
                    }
                    for o in result.outcomes
                ],
                "urls": urls,
            }
        )
        return 0
    name = result.profile
    if result.activated:
        out.info(f"profile {name} is active; its services were already running")
    elif not result.change.changes:
        out.info(f"profile {name} is already running; nothing to do")
    else:
        where = f" on {hosts} hosts" if hosts is not None and hosts > 1 else ""
        out.info(f"switched to {name}{where} in {result.seconds:.1f}s")
    print_urls(out, urls)
    return 0


class CliProgress:
    """Progress of a switch, one line per event on stderr (works in terminals and in logs)."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self.started = time.monotonic()

    def note(self, message: str) -> None:
        self.out.info(f"  {message}")

    def service(self, service: str, status: str, detail: str = "") -> None:
        elapsed = time.monotonic() - self.started
        suffix = f"  {detail}" if detail else ""
        self.out.info(f"  [{elapsed:5.1f}s] {service:<16} {status}{suffix}")


def service_urls(engine: object, plan: Plan) -> dict[str, str]:
    """Where each service that runs after `plan` answers, as its clients want the base URL."""
    from aitherctl.engines.container import ContainerSpec
    from aitherctl.switching.endpoints import base_url
    from aitherctl.switching.readiness import probe_host

    endpoint = getattr(engine, "endpoint", None)
    address = getattr(engine, "address", None)
    urls = {}
    for item in plan.after:
        port: int | None
        if isinstance(item, ContainerSpec):
            engine_name, bind, port = item.engine.value, item.bind, item.host_port
        else:
            engine_name, bind, port = item.engine, item.bind, item.port
        if port:
            urls[item.service] = base_url(engine_name, probe_host(bind, endpoint, address), port)
    return dict(sorted(urls.items()))


def print_urls(out: Output, urls: dict[str, str]) -> None:
    width = max((len(name) for name in urls), default=0)
    for service, url in urls.items():
        out.print(f"  {service:<{width}}  {url}", markup=False)


def vram_json(check: VramCheck) -> dict[str, object]:
    return {
        "fits": check.fits,
        "problems": list(check.problems),
        "gpus": [
            {
                "index": gpu.index,
                "name": gpu.name,
                "total_bytes": gpu.total_bytes,
                "reserve_bytes": gpu.reserve_bytes,
                "services": [
                    {"service": line.service, "bytes": line.bytes, "note": line.note or None}
                    for line in gpu.services
                ],
                "other_processes": [
                    {"pid": proc.pid, "name": proc.name, "bytes": proc.used_bytes}
                    for proc in gpu.others
                ],
                "needed_bytes": gpu.needed_bytes,
                "missing_bytes": gpu.missing_bytes,
                "fits": gpu.fits,
            }
            for gpu in check.gpus
        ],
    }


def on_demand_lines(prepared: Prepared) -> list[str]:
    """The profile's on-demand services that the plan leaves alone (a switch never starts them),
    so the plan says where they went: `profile plan dev` listed four of dev's five services."""
    from aitherctl.units import format_bytes

    if prepared.specs is None:
        return []
    planned = {step.service for step in prepared.plan.steps}
    waiting = [
        (service, spec)
        for service, spec in sorted(prepared.specs.on_demand.items())
        if service not in planned
    ]
    if not waiting:
        return []
    listed = ", ".join(
        f"{service} ({spec.engine.value}"
        + (f", {format_bytes(spec.vram_bytes)})" if spec.vram_bytes else ")")
        for service, spec in waiting
    )
    return [
        f"on demand, not started by a switch: {listed}",
        f"  `aitherctl up {waiting[0][0]}` or a request through `serve` starts it",
    ]
