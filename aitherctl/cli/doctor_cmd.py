"""`aitherctl doctor`: is this machine ready to run profiles?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer

from aitherctl.cli import runtime
from aitherctl.cli.output import Output
from aitherctl.errors import AitherError, ExitCode


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str  # ok, warn, fail
    detail: str


def doctor(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Check Docker, the NVIDIA container runtime, GPUs, profiles and their ports.
    Exit 1 when a check fails (warnings do not fail)."""
    from aitherctl.adapters.ports import port_is_free

    out = Output(json_mode=json_out)
    checks: list[Check] = []
    engine = None
    try:
        engine = runtime.docker()
        version = engine.version()
        checks.append(
            Check("docker", "ok", f"engine {version.get('Version')} at {engine.endpoint}")
        )
    except AitherError as exc:
        checks.append(Check("docker", "fail", exc.message))

    inventory = runtime.gpu_inventory()
    if inventory.available:
        names = ", ".join(f"{gpu.index}: {gpu.name}" for gpu in inventory.gpus)
        checks.append(Check("gpu", "ok", f"driver {inventory.driver_version}; {names}"))
    else:
        checks.append(Check("gpu", "warn", f"{inventory.error}; only CPU services can run"))

    if engine is not None:
        try:
            info = engine.info()
            runtimes = sorted((info.get("Runtimes") or {}).keys())
            cdi = info.get("CDISpecDirs")
            if "nvidia" in runtimes:
                checks.append(Check("nvidia runtime", "ok", "nvidia runtime registered"))
            else:
                status = "fail" if inventory.available else "warn"
                checks.append(
                    Check(
                        "nvidia runtime",
                        status,
                        f"no nvidia runtime (runtimes: {', '.join(runtimes)}); install the NVIDIA "
                        "Container Toolkit and run `nvidia-ctk runtime configure`"
                        + (f" (CDI dirs: {cdi})" if cdi else ""),
                    )
                )
        except AitherError as exc:
            checks.append(Check("nvidia runtime", "fail", exc.message))

    catalog = runtime.catalog()
    bad = []
    profiles = []
    for entry in catalog.entries():
        try:
            profiles.append(catalog.load_file(entry.path))
        except AitherError as exc:
            bad.append(exc.message)
    if bad:
        checks.append(Check("profiles", "fail", "; ".join(bad)))
    else:
        checks.append(Check("profiles", "ok", f"{len(profiles)} valid"))

    ours: set[int] = set()
    if engine is not None:
        try:
            ours = {item.port for item in engine.list_managed() if item.port and item.running}
        except AitherError:
            pass
    taken = []
    for profile in profiles:
        for svc in profile.services.values():
            if svc.port not in ours and not port_is_free(svc.bind, svc.port):
                taken.append(f"{svc.port} ({profile.name}/{svc.name})")
    if taken:
        checks.append(
            Check("ports", "warn", "in use by other programs: " + ", ".join(sorted(set(taken))))
        )
    else:
        checks.append(Check("ports", "ok", "every profile's ports are free or aitherctl's"))

    failed = any(check.status == "fail" for check in checks)
    if json_out:
        out.data({"ok": not failed, "checks": checks})
    else:
        marks = {"ok": "[green]ok  [/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}
        for check in checks:
            out.print(f"{marks[check.status]} {check.name:<15} ", end="")
            out.print(check.detail, markup=False)
    if failed:
        raise typer.Exit(int(ExitCode.ERROR))


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
