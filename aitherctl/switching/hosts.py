"""A profile across several Docker hosts: one plan, one lock per engine, one transaction.

A profile's `hosts:` names other Docker engines (`ssh://`, `tcp://` with TLS, `unix://`, a
context) and each service says `host:` (default `local`: DOCKER_HOST or the Docker context). A
switch then works on every engine involved: the profile's hosts, and the hosts the previous
multi-host switch left services on (remembered in the state folder, `hosts.json`), so moving to a
one-machine profile stops what ran on the other box.

- Planning is per host, with that host's own GPU readings (NVML here; `nvidia-smi` in a
  short-lived container on the other engine, `aitherctl.gpu.remote`), so the VRAM
  arithmetic is per host and GPU. Every engine is reached before anything changes; one that cannot
  be is named, and nothing changes anywhere.
- Execution is the one switch sequence (`aitherctl.switching.switch.run_switch`) over every
  engine: every engine's switch lock (in one order, so two switches cannot deadlock), recover an
  interrupted switch on each, re-plan, pull missing images on the host that runs them, and one
  `Transaction`: each host's part sets aside, starts and waits in parallel; only when every
  service on every host answers are the commit records written; otherwise, or on a Docker error
  on any host, or a signal, every host rolls back.
- A host lost in the middle (engine or SSH gone) cannot be rolled back from here: its records stay
  on that engine and the message says so; the next switch, `up`, `down` or `aitherctl recover`
  finishes the rollback there once it is reachable again.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace

from aitherctl.docker.engine import DockerEngine
from aitherctl.docker.stack import ManagedContainer
from aitherctl.errors import AitherError, DockerUnavailableError, RefusedError
from aitherctl.gpu.model import GpuInventory
from aitherctl.profiles.catalog import ProfileCatalog
from aitherctl.profiles.profile import LOCAL_HOST, Host, Profile
from aitherctl.switching.lock import engine_lock
from aitherctl.switching.plan import Action
from aitherctl.switching.remembered_hosts import (
    remember_hosts,
    remembered_hosts,
    remembered_profile,
)
from aitherctl.switching.switch import (
    Change,
    ModelPolicy,
    Prepared,
    SwitchResult,
    prepare,
    run_switch,
)
from aitherctl.switching.transaction import Progress, Recovery, host_progress, recover
from aitherctl.threads import in_threads


def hosts_involved(profile: Profile | None) -> dict[str, Host]:
    """The other hosts a command must look at: the profile's, and those remembered."""
    hosts = dict(remembered_hosts())
    if profile is not None:
        used = {svc.host for svc in profile.services.values()}
        hosts.update({name: host for name, host in profile.hosts.items() if name in used})
    return hosts


def connect_hosts(
    local: Callable[[], DockerEngine], hosts: Mapping[str, Host]
) -> dict[str, DockerEngine]:
    """Every engine, `local` first, reached in parallel. When one cannot be reached, the error
    names each such host and nothing has changed."""
    makers: dict[str, Callable[[], DockerEngine]] = {LOCAL_HOST: local}
    for name, host in hosts.items():

        def make(host: Host = host) -> DockerEngine:
            return DockerEngine.connect_host(host.name, host.docker, host.address)

        makers[name] = make

    def connect(make: Callable[[], DockerEngine]) -> DockerEngine | AitherError:
        try:
            return make()
        except AitherError as exc:
            return exc

    engines: dict[str, DockerEngine] = {}
    problems: list[str] = []
    connected = in_threads(
        [functools.partial(connect, make) for make in makers.values()], workers=len(makers)
    )
    for name, found in zip(makers, connected, strict=True):
        if isinstance(found, AitherError):
            problems.append(found.message)
        else:
            engines[name] = found
    if problems:
        for engine in engines.values():
            engine.close()
        raise DockerUnavailableError("; ".join(problems) + "; nothing was changed")
    return engines


def host_inventory(
    name: str,
    engine: DockerEngine,
    profile: Profile,
    local_reader: Callable[[], GpuInventory],
) -> GpuInventory:
    """GPU readings taken on the host itself: NVML here, `nvidia-smi` in a short-lived
    container there (in the image of one of its GPU services, pulled first if missing)."""
    if name == LOCAL_HOST:
        return local_reader()
    images = sorted({svc.image for svc in profile.services.values() if svc.uses_gpu})
    if not images:
        return GpuInventory(error=f"no GPU reading taken on host {name!r} (no GPU service there)")
    from aitherctl.gpu.remote import read_inventory

    image = images[0]
    if not engine.image_exists(image):
        engine.pull(image)
    inventory = read_inventory(engine.client, image)
    if inventory.error:
        return GpuInventory(error=f"on host {name!r}: {inventory.error}")
    return inventory


# ---- the plan and the switch --------------------------------------------------------------------


def prepare_hosts(
    engines: Mapping[str, DockerEngine],
    profile: Profile,
    local_reader: Callable[[], GpuInventory],
    catalog: ProfileCatalog | None = None,
) -> Change:
    """Plan and check each host's share of `profile` (a host with none of its services: stop
    what runs there). Raises RefusedError naming the host when one part cannot work."""
    parts: dict[str, Prepared] = {}
    for name, engine in engines.items():
        share = profile.on_host(name)
        try:
            inventory = host_inventory(name, engine, share, local_reader)
            parts[name] = prepare(engine, share, inventory, catalog=catalog)
        except RefusedError as exc:
            if name == LOCAL_HOST:
                raise
            raise RefusedError(
                f"host {name!r}: {exc.message}", detail=exc.detail, host=name, changed=False
            ) from None
    return Change(profile.name, parts)


def switch_hosts(
    local: Callable[[], DockerEngine],
    catalog: ProfileCatalog,
    profile_name: str,
    local_reader: Callable[[], GpuInventory],
    progress: Progress,
    *,
    confirm: Callable[[Change, bool], bool] | None = None,
    lock_timeout_s: float = 900.0,
    attempts: int = 3,
    cancel: threading.Event | None = None,
    engines: Mapping[str, DockerEngine] | None = None,
    models: ModelPolicy | None = None,
    asks: bool = True,
) -> SwitchResult:
    """Move every host to `profile_name` (`run_switch` over their engines); see the module's
    docstring. `models` and `asks`: as `switch`'s (this machine's missing models are downloaded
    first; `asks=False`: the plan is made once, under the locks)."""
    profile = catalog.load(profile_name)
    hosts = hosts_involved(profile)
    owned = engines is None
    engines = dict(engines) if engines is not None else connect_hosts(local, hosts)
    # Every host this switch may touch is remembered before it starts, so that `recover`, `ps`
    # and the next switch find a host left half-switched (a kill, a lost engine).
    remember_hosts(remembered_profile() or "", hosts)
    try:
        result = run_switch(
            engines,
            lambda: prepare_hosts(engines, profile, local_reader, catalog),
            progress,
            confirm=confirm,
            lock_timeout_s=lock_timeout_s,
            attempts=attempts,
            cancel=cancel,
            models=models,
            asks=asks,
        )
        used = {svc.host for svc in profile.services.values()}
        remember_hosts(profile.name, {n: h for n, h in profile.hosts.items() if n in used})
        return result
    finally:
        if owned:
            for engine in engines.values():
                engine.close()


def _remembered_engines(problems: list[str]) -> Iterator[tuple[str, DockerEngine]]:
    """Each remembered host's engine in turn (the caller closes it); one that cannot be reached
    is skipped, its reason added to `problems`."""
    for name, host in sorted(remembered_hosts().items()):
        try:
            yield name, DockerEngine.connect_host(name, host.docker, host.address)
        except AitherError as exc:
            problems.append(exc.message)


def find_on_other_hosts(service: str) -> tuple[DockerEngine, ManagedContainer] | None:
    """The container of `service` on one of the remembered hosts (for `logs`), or None. The
    engine is left open for the caller to read from."""
    from aitherctl.switching.state import observe

    problems: list[str] = []
    for _name, engine in _remembered_engines(problems):
        item = observe(engine).container(service)
        if item is not None:
            return engine, item
        engine.close()
    if problems:
        from aitherctl.errors import NotFoundError

        raise NotFoundError(
            f"no container for service {service!r} on the hosts that answered; "
            + "; ".join(problems)
        )
    return None


def recover_other_hosts(progress: Progress) -> list[Recovery]:
    """`aitherctl recover` on every remembered host, each under its lock; a host that still
    cannot be reached raises, naming it (what was recovered elsewhere is kept)."""
    done: list[Recovery] = []
    problems: list[str] = []
    for name, engine in _remembered_engines(problems):
        try:
            with engine_lock(engine, on_wait=progress.note):
                for item in recover(engine, host_progress(progress, name)):
                    done.append(replace(item, profile=f"{item.profile} (host {name})"))
        finally:
            engine.close()
    if problems:
        raise DockerUnavailableError(
            "; ".join(problems) + " — run `aitherctl recover` again once it answers"
        )
    return done


def down_across(
    local: Callable[[], DockerEngine],
    services: Sequence[str] | None,
    progress: Progress,
    *,
    confirm: Callable[[Prepared, bool], bool] | None = None,
) -> list[str]:
    """`down` on this machine and every remembered host: the named services wherever they
    run (every aitherctl container with None). An unknown name is an error only when no host
    has it."""
    from aitherctl.switching.state import observe
    from aitherctl.switching.switch import prepare_down, run_change

    engines = connect_hosts(local, remembered_hosts())
    try:
        found: dict[str, list[str] | None] = {}
        for name, engine in engines.items():
            present = {i.service for i in observe(engine).containers if not i.aside}
            if services is None:
                if present:
                    found[name] = None
            elif wanted := [s for s in services if s in present]:
                found[name] = wanted
        missing = [s for s in services or [] if not any(s in (v or []) for v in found.values())]
        if missing:
            from aitherctl.errors import NotFoundError

            raise NotFoundError(
                f"no container for service {', '.join(map(repr, missing))} on any host "
                "(see `aitherctl ps`)"
            )
        stopped: list[str] = []
        for name, chosen in found.items():
            engine = engines[name]
            result = run_change(
                engine, functools.partial(prepare_down, engine, chosen), progress, confirm=confirm
            )
            suffix = "" if name == LOCAL_HOST else f"@{name}"
            stopped += [step.service + suffix for step in result.plan.of(Action.STOP)]
        if services is None:
            remember_hosts("", {})
        return sorted(stopped)
    finally:
        for engine in engines.values():
            engine.close()


def up_across(  # noqa: PLR0917
    local: Callable[[], DockerEngine],
    catalog: ProfileCatalog,
    profile: Profile,
    local_reader: Callable[[], GpuInventory],
    progress: Progress,
    services: Sequence[str] | None,
    *,
    confirm: Callable[[Change, bool], bool] | None = None,
    lock_timeout_s: float = 900.0,
    models: ModelPolicy | None = None,
) -> tuple[list[str], dict[str, str], float]:
    """`up` for a profile on several hosts: each host's named (default: resident) services,
    with that host's readings; nothing is stopped. One plan over every host, confirmed as a
    whole (`confirm(change, changed)`, as `switch_hosts`), then one transaction. Returns
    started, URLs and seconds."""
    from aitherctl.switching.endpoints import base_url
    from aitherctl.switching.readiness import probe_host

    chosen = list(services) if services else sorted(profile.resident)
    for name in chosen:
        profile.service(name)
    by_host: dict[str, list[str]] = {}
    for name in chosen:
        by_host.setdefault(profile.services[name].host, []).append(name)
    hosts = {n: h for n, h in profile.hosts.items() if n in by_host}
    engines = connect_hosts(local, hosts)
    used = {name: engines[name] for name in engines if name in by_host}

    def prepare_up() -> Change:
        parts: dict[str, Prepared] = {}
        for host, names in by_host.items():
            share = profile.on_host(host)
            try:
                inventory = host_inventory(host, used[host], share, local_reader)
                parts[host] = prepare(used[host], share, inventory, catalog=catalog, only=names)
            except RefusedError as exc:
                if host == LOCAL_HOST:
                    raise
                raise RefusedError(
                    f"host {host!r}: {exc.message}", detail=exc.detail, host=host, changed=False
                ) from None
        return Change(profile.name, parts)

    started_at = time.monotonic()
    try:
        result = run_switch(
            used,
            prepare_up,
            progress,
            confirm=confirm,
            lock_timeout_s=lock_timeout_s,
            models=models,
        )
        started = [o.service for o in result.outcomes if o.ready]
        urls: dict[str, str] = {}
        for host, names in by_host.items():
            for name in names:
                svc = profile.services[name]
                where = probe_host(svc.bind, used[host].endpoint, used[host].address)
                urls[name] = base_url(svc.engine.value, where, svc.port)
        remember_hosts(profile.name, {**remembered_hosts(), **hosts})
        return started, urls, time.monotonic() - started_at
    finally:
        for engine in engines.values():
            engine.close()


def multi_host(profile: Profile) -> bool:
    """Whether a switch to `profile` must go through here: it uses another host, or the last
    switch left services on one."""
    return any(svc.host != LOCAL_HOST for svc in profile.services.values()) or bool(
        remembered_hosts()
    )


__all__ = [
    "connect_hosts",
    "hosts_involved",
    "multi_host",
    "prepare_hosts",
    "remember_hosts",
    "remembered_hosts",
    "switch_hosts",
]
