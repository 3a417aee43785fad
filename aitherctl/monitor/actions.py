"""What the monitor's keys do, on the real engine: restart, stop, logs, free VRAM, switch.

Each method blocks (the TUI calls it from a worker after the user confirmed) and returns a line
for the log pane, or raises an `AitherError` whose message the monitor shows. Restart, stop and
switch go through `aitherctl.switching.switch`, the same transaction and lock as the CLI; a switch
executes the very plan the monitor showed (or refuses, saying the plan changed).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aitherctl.errors import DockerUnavailableError, RefusedError
from aitherctl.monitor.model import ServiceView

if TYPE_CHECKING:
    from aitherctl.gpu.vram import VramCheck
    from aitherctl.switching.plan import Plan


def _progress(note: Callable[[str], None]) -> Any:
    """A `Progress` (aitherctl.switching.switch) that feeds the monitor's log pane."""
    from aitherctl.switching.transaction import Progress

    class NoteProgress(Progress):
        def note(self, message: str) -> None:
            note(message)

        def service(self, service: str, status: str, detail: str = "") -> None:
            note(f"{service}: {status}" + (f" ({detail})" if detail else ""))

    return NoteProgress()


def plan_text(profile: str, plan: Plan, vram: VramCheck) -> str:
    """The monitor's plan dialog: one line per step (every `Action`, by its value), then the
    VRAM arithmetic."""
    from aitherctl.gpu.vram import describe_vram

    lines = [f"Plan for {profile}:"]
    for step in plan.steps:
        lines.append(f"  {step.action.value:<9} {step.service}: {step.reason}")
    if not plan.changes:
        lines.append("  (nothing changes)")
    described = describe_vram(vram)
    if described:
        lines += ["", "VRAM:", *(f"  {line}" for line in described)]
    return "\n".join(lines)


class StackActions:
    """`stack` is the monitor's `DockerStackSource`; `gpus` reads the inventory a plan needs."""

    def __init__(self, stack: Any, gpus: Any | None = None, remote: Any | None = None) -> None:
        self._stack = stack
        self._gpus = gpus
        self._remote = remote  # the other hosts (`RemoteHostsSource`): their engines
        self._shown: dict[str, Any] = {}  # profile → the Prepared plan the user was shown

    def _engine(self, service: ServiceView | None = None) -> Any:
        """The engine the service runs on: this machine's, or its host's."""
        if service is not None and service.host != "local":
            engine = self._remote.engine(service.host) if self._remote is not None else None
            if engine is None:
                raise DockerUnavailableError(f"host {service.host!r} is not reachable")
            return engine
        engine = self._stack.engine
        if engine is None:
            raise DockerUnavailableError("the Docker engine is not reachable")
        return engine

    @staticmethod
    def _container(service: ServiceView) -> str:
        if not service.container_id:
            raise RefusedError(f"{service.name} has no container")
        return service.container_id

    def restart(self, service: ServiceView) -> str:
        from aitherctl.switching.switch import restart

        self._container(service)
        result = restart(self._engine(service), service.name, _progress(lambda _line: None))
        return f"restarted {service.name} in {result.seconds:.1f}s"

    def stop(self, service: ServiceView) -> str:
        from aitherctl.switching.switch import down

        self._container(service)
        down(self._engine(service), [service.name], _progress(lambda _line: None))
        return f"stopped {service.name} (`aitherctl up {service.name}` starts it again)"

    def logs(self, service: ServiceView, lines: int) -> str:
        text: str = self._engine(service).logs(self._container(service), tail=lines)
        return text or "(no log lines)"

    def free_vram(self, service: ServiceView) -> str:
        from aitherctl.monitor.collect import scrape_url
        from aitherctl.monitor.unload import free_vram

        if service.port is None:
            raise RefusedError(f"{service.name} publishes no port")
        return free_vram(
            service.engine,
            service.url or scrape_url(service.bind, service.port),
            service.loaded_models,
        )

    def profiles(self) -> list[str]:
        from aitherctl.profiles.catalog import ProfileCatalog

        return sorted(ProfileCatalog().names())

    def _inventory(self) -> Any:
        from aitherctl.gpu.model import GpuInventory

        return self._gpus.read() if self._gpus is not None else GpuInventory(error="off")

    def _engines(self, profile: Any) -> dict[str, Any]:
        """This machine's engine, and, for a profile that spans hosts (or a switch that left
        services on one), every host's (the caller closes those)."""
        from aitherctl.switching.hosts import connect_hosts, hosts_involved, multi_host

        if not multi_host(profile):
            return {"local": self._engine()}
        return connect_hosts(self._engine, hosts_involved(profile))

    def _prepare(self, engines: dict[str, Any], profile: Any, catalog: Any) -> Any:
        from aitherctl.switching.hosts import prepare_hosts

        return prepare_hosts(engines, profile, self._inventory, catalog)

    def _close(self, engines: dict[str, Any]) -> None:
        for name, engine in engines.items():
            if name != "local":
                engine.close()

    def plan(self, profile: str) -> str:
        """The plan the dialog shows; `switch` executes this very plan."""
        from aitherctl.profiles.catalog import ProfileCatalog

        catalog = ProfileCatalog()
        loaded = catalog.load(profile)
        engines = self._engines(loaded)
        try:
            change = self._prepare(engines, loaded, catalog)
        finally:
            self._close(engines)
        self._shown[profile] = change
        vram = [part.vram for part in change.parts.values()]
        return plan_text(profile, change.plan, vram[0] if len(vram) == 1 else _no_vram())

    def switch(
        self, profile: str, note: Callable[[str], None], cancel: threading.Event | None = None
    ) -> str:
        """Execute the plan `plan` showed, under the locks, if it is still the plan (refused
        otherwise, as the CLI does: press `p` again to see the new one). `cancel` (a
        `SignalCancel` the monitor installed) rolls the switch back on a signal."""
        from aitherctl.errors import SwitchFailedError
        from aitherctl.profiles.catalog import ProfileCatalog
        from aitherctl.switching.switch import ModelPolicy, execute
        from aitherctl.switching.transaction import Interrupted

        shown = self._shown.pop(profile, None)
        if shown is None:
            raise RefusedError(f"no plan for {profile} was shown; press p to see it")
        catalog = ProfileCatalog()
        loaded = catalog.load(profile)
        engines = self._engines(loaded)
        several = list(engines) != ["local"]
        if several:
            from aitherctl.switching.hosts import hosts_involved
            from aitherctl.switching.remembered_hosts import remember_hosts, remembered_profile

            # As `profile switch` does: every host it may touch is remembered first.
            remember_hosts(remembered_profile() or "", hosts_involved(loaded))
        try:
            result = execute(
                engines,
                shown,
                lambda: self._prepare(engines, loaded, catalog),
                _progress(note),
                cancel=cancel,
                models=ModelPolicy(),  # missing models downloaded first, as the CLI's switch
            )
        except Interrupted as exc:
            raise SwitchFailedError(f"{exc.name} during the switch: {exc.summary}") from None
        finally:
            self._close(engines)
        if several:
            used = {svc.host for svc in loaded.services.values()}
            remember_hosts(loaded.name, {n: h for n, h in loaded.hosts.items() if n in used})
        if result.activated:
            return f"{profile} is active; its services were already running"
        if not result.change.changes:
            return f"{profile} is already running; nothing to do"
        return f"switched to {profile} in {result.seconds:.1f} s"


def _no_vram() -> Any:
    from aitherctl.gpu.vram import VramCheck

    return VramCheck(())
