"""Checks across services, once the profile is built: each service's host and who can reach it
(no network address without a key), two services on one port, GPU shares over 100%."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aitherctl.errors import ConfigError
from aitherctl.profiles.problems import Problems
from aitherctl.profiles.profile import LOCAL_HOST, Engine, Profile, is_loopback
from aitherctl.units import MemoryAmount

if TYPE_CHECKING:
    from aitherctl.profiles.schema import RawService

# Engines whose server checks an API key of its own (the driver passes it in the environment).
KEYED_ENGINES = (Engine.VLLM, Engine.LLAMACPP, Engine.GENERIC)


def place_on_hosts(
    profile: Profile, raw_services: dict[str, RawService], problems: Problems
) -> Profile:
    """Check every `host:` names a declared host, and work out where this machine reaches each
    service on another host: its `bind` when that is a specific address, else the host's
    `address`. A service is never open to a network without a key, here or on another host:
    one bound or reached beyond loopback must name `api_key_env` (only engines that check a
    key can), unless the profile says `allow_unauthenticated_network: true`."""
    from dataclasses import replace

    placed = dict(profile.services)
    for name, svc in profile.services.items():
        raw = raw_services[name]

        def fail(message: str, key: str, raw: RawService = raw, name: str = name) -> ConfigError:
            item = raw.fields.get(key)
            return ConfigError(
                f"service {name!r}: {message}",
                source=item.source if item else raw.source,
                line=item.line if item else raw.line,
            )

        with problems.check():
            if svc.host == LOCAL_HOST:
                if svc.api_key_env and svc.engine not in KEYED_ENGINES:
                    raise fail(
                        f"engine {svc.engine.value} checks no API key; drop `api_key_env`",
                        "api_key_env",
                    )
                if (
                    not is_loopback(svc.bind)
                    and not svc.api_key_env
                    and not profile.allow_unauthenticated_network
                ):
                    raise fail(
                        f"it would answer on the network at {svc.bind or '0.0.0.0'} without "
                        "authentication: set `api_key_env` to the variable holding its API key, "
                        "bind it to 127.0.0.1, or say `allow_unauthenticated_network: true` in "
                        "the profile",
                        "bind",
                    )
                continue
            host = profile.hosts.get(svc.host)
            if host is None:
                known = ", ".join(["local", *sorted(profile.hosts)])
                raise fail(
                    f"host {svc.host!r} is not declared under `hosts:` (known: {known})", "host"
                )
            wildcard = svc.bind in WILDCARD_BINDS
            if not wildcard and not is_loopback(svc.bind):
                reach = svc.bind
            elif is_loopback(svc.bind) and not is_loopback(host.address):
                raise fail(
                    f"it listens on {svc.bind} on host {host.name!r}, which this machine cannot "
                    f"reach at {host.address}: set `bind: 0.0.0.0` (or that host's address) and "
                    "`api_key_env` so it answers on the network with a key",
                    "bind",
                )
            else:
                reach = host.address
            if (
                not is_loopback(reach)
                and not svc.api_key_env
                and not profile.allow_unauthenticated_network
            ):
                raise fail(
                    f"it would answer on the network at {reach} without authentication: set "
                    "`api_key_env` to the variable holding its API key",
                    "bind",
                )
            if svc.api_key_env and svc.engine not in KEYED_ENGINES:
                raise fail(
                    f"engine {svc.engine.value} checks no API key, so it cannot answer on a "
                    "network address safely: keep it on a loopback address",
                    "api_key_env",
                )
            placed[name] = replace(svc, reach=reach)
    return replace(profile, services=placed)


WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})


def binds_overlap(first: str, second: str) -> bool:
    """Whether two host addresses can clash on one port: the same address, or either one is
    every address (`0.0.0.0`, `::`), which also takes the port on each specific address."""
    return first == second or first in WILDCARD_BINDS or second in WILDCARD_BINDS


def check_ports(
    profile: Profile,
    raw_services: dict[str, RawService],
    written: dict[tuple[str, str], tuple[int, int]],
    problems: Problems,
) -> None:
    """Every pair of services, so the answer cannot depend on the order they are written in."""

    def written_at(name: str) -> tuple[int, int]:
        return written.get((name, "port"), (-1, raw_services[name].line or 0))

    # A service that did not build (another mistake) still has its port checked, as written.
    places = {name: _place_of(profile, raw_services, name) for name in raw_services}
    names = sorted((n for n, place in places.items() if place is not None), key=written_at)
    reported: set[str] = set()
    for index, later in enumerate(names):
        for earlier in names[:index]:
            a, b = places[earlier], places[later]
            assert a is not None
            assert b is not None
            if a.host != b.host:
                continue  # two machines: one port number each
            if a.port != b.port or not binds_overlap(a.bind, b.bind) or later in reported:
                continue
            item = raw_services[later].fields.get("port")
            source = item.source if item else raw_services[later].source
            line = item.line if item else raw_services[later].line
            problems.items.append(
                ConfigError(
                    f"services {earlier!r} and {later!r} both use port {b.port}",
                    source=source,
                    line=line,
                )
            )
            reported.add(later)


@dataclass(frozen=True, slots=True)
class _Place:
    """Where a service listens: its Docker host, bind address and port."""

    host: str
    bind: str
    port: int


def _place_of(profile: Profile, raw_services: dict[str, RawService], name: str) -> _Place | None:
    """Where a service listens: as built, or as written when it did not build (None when its
    `port` is missing)."""
    svc = profile.services.get(name)
    if svc is not None:
        return _Place(svc.host, svc.bind, svc.port)
    fields = raw_services[name].fields
    port = fields.get("port")
    if port is None or not isinstance(port.value, int):
        return None
    bind = fields.get("bind")
    host = fields.get("host")
    return _Place(
        host.value if host else LOCAL_HOST, bind.value if bind else "127.0.0.1", port.value
    )


def check_shares(profile: Profile, raw_services: dict[str, RawService], problems: Problems) -> None:
    def where(name: str, key: str) -> tuple[str, int | None]:
        item = raw_services[name].fields.get(key)
        if item is None:
            return raw_services[name].source, raw_services[name].line
        return item.source, item.line

    # Shares are checkable without the GPU; absolute budgets are checked by the planner.
    # As built, or as written for a service that did not build (another mistake).
    shares: dict[tuple[str, int], list[tuple[str, float]]] = {}
    on_demand: set[str] = set()
    for name, raw in raw_services.items():
        svc = profile.services.get(name)
        if svc is not None:
            host, gpus, vram, demand = svc.host, svc.gpus, svc.vram, svc.on_demand
        else:
            values = {key: item.value for key, item in raw.fields.items()}
            host, gpus = values.get("host", LOCAL_HOST), values.get("gpu", ())
            vram, demand = values.get("vram"), values.get("on_demand", False)
        if demand:
            on_demand.add(name)
        if isinstance(vram, MemoryAmount) and vram.fraction is not None:
            for gpu in gpus:
                shares.setdefault((host, gpu), []).append((name, vram.fraction))
    # On-demand services are counted only when running: the planner checks them at `up` time.
    reserve_share = profile.gpu_reserve.fraction or 0.0
    for (host, gpu), items in sorted(shares.items()):
        resident = [(n, f) for n, f in items if n not in on_demand]
        total = sum(f for _, f in resident)
        if resident and total + reserve_share > 1.0 + 1e-9:
            last = resident[-1][0]
            source, line = where(last, "vram")
            listing = " + ".join(f"{n} {f * 100:g}%" for n, f in resident)
            extra = f" plus the {reserve_share * 100:g}% reserve" if reserve_share else ""
            problems.items.append(
                ConfigError(
                    f"GPU {gpu}{'' if host == LOCAL_HOST else ' on host ' + host} budgets add "
                    f"up to {total * 100:g}% ({listing}){extra}, over 100%",
                    source=source,
                    line=line,
                )
            )
