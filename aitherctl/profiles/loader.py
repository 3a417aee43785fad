"""Profiles from text: resolve `extends`, merge the layers, build each service and check the whole.

One concern per module around this one: `schema` (the keys), `parse` (one file, field by field),
`expand` (`${VAR}`), `checks` (across services), `problems` (several mistakes at once).

Pure: the text, the name of its source and the environment come in as arguments; finding and
reading files is `aitherctl.profiles.catalog`'s job. Every mistake becomes a `ConfigError`
line naming the file and line: an unknown key, a wrong type, a budget over 100% of a GPU, two
services on one port, an unknown or circular `extends`, a `${VAR}` that is not set. A file with
several mistakes raises `ConfigProblems`, which lists each of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import replace
from typing import Any

from aitherctl.engines.registry import driver_for
from aitherctl.errors import ConfigError, NotFoundError
from aitherctl.profiles.checks import check_ports, check_shares, place_on_hosts
from aitherctl.profiles.expand import expand_references
from aitherctl.profiles.parse import parse_profile
from aitherctl.profiles.problems import NotBuilt, Problems
from aitherctl.profiles.profile import LOCAL_HOST, Engine, Health, Node, Profile, Service
from aitherctl.profiles.ram_budget import ram_problems
from aitherctl.profiles.schema import (
    DEFAULT_RESERVE,
    OLLAMA_ONLY,
    SERVICE_KEYS,
    EnvItem,
    RawField,
    RawProfile,
    RawService,
)
from aitherctl.routing.table import check_routing_sections
from aitherctl.units import MemoryAmount

# Finds the profile named `name` for an `extends:`; with `below` (the source of a profile that
# extends its own name), the one in a lower layer than that file. Raises NotFoundError.
Lookup = Callable[[str, str | None], RawProfile]
MAX_EXTENDS_DEPTH = 16


def resolve_profile(
    raw: RawProfile, lookup: Lookup, *, env: Mapping[str, str] | None = None
) -> Profile:
    """Follow `raw`'s `extends` chain through `lookup`, then build and check the profile.

    With `env`, `${VAR}` references in `env:` values are expanded from it (a missing variable
    is an error at its file:line); with `env=None` they stay as written (for `profile show`).
    """
    parents: list[RawProfile] = []
    seen = [raw.name]
    current = raw
    while current.extends is not None:
        parent_name, line = current.extends
        below = current.source if parent_name == current.name else None
        if parent_name in seen and below is None:
            cycle = " -> ".join([*seen, parent_name])
            raise ConfigError(f"`extends` makes a cycle: {cycle}", source=current.source, line=line)
        try:
            parent = lookup(parent_name, below)
        except NotFoundError as exc:
            raise ConfigError(f"extends: {exc.message}", source=current.source, line=line) from None
        parents.insert(0, parent)
        seen.append(parent_name)
        current = parent
        if len(parents) > MAX_EXTENDS_DEPTH:
            raise ConfigError(
                f"`extends` chain is deeper than {MAX_EXTENDS_DEPTH}", source=raw.source
            )
    return build_profile(raw, parents, env=env)


def load_profile_text(text: str, source: str, *, env: Mapping[str, str] | None = None) -> Profile:
    """A profile from one file's text, without `extends` (tests, or a profile piped in)."""

    def no_parents(name: str, below: str | None) -> RawProfile:
        del below
        raise NotFoundError(f"no profile named {name!r} ({source} is read on its own)")

    return resolve_profile(parse_profile(text, source, env=env or {}), no_parents, env=env)


def build_profile(
    raw: RawProfile,
    parents: Sequence[RawProfile] = (),
    *,
    env: Mapping[str, str] | None = None,
) -> Profile:
    """Merge `raw` over its parents and validate the result.

    `parents` lists the chain from the root ancestor down to the direct parent. `env`: see
    `resolve_profile`.
    """
    chain = [*parents, raw]
    services: dict[str, RawService] = {}
    # Where each service's field was last written: (layer, line), so a clash blames the later one.
    written: dict[tuple[str, str], tuple[int, int]] = {}
    reserve: RawField | None = None
    sections: dict[str, Any] = {}
    for layer_index, layer in enumerate(chain):
        for name, svc in layer.services.items():
            if svc is None:
                services.pop(name, None)
                continue
            if name in services:
                base = services[name]
                services[name] = RawService(
                    {**base.fields, **svc.fields},
                    svc.source,
                    svc.line,
                    (base.bad - set(svc.fields)) | svc.bad,
                )
            else:
                services[name] = svc
            for key, item in svc.fields.items():
                written[(name, key)] = (layer_index, item.line or 0)
        if layer.reserve is not None:
            reserve = layer.reserve
        for section, value in layer.sections.items():
            if section in ("endpoints", "hosts", "nodes") and isinstance(
                sections.get(section), dict
            ):
                sections[section] = {**sections[section], **value}
            else:
                sections[section] = value

    problems = Problems()
    for layer in chain:
        problems.items.extend(layer.problems)
    built: dict[str, Service] = {}
    for name, svc in services.items():
        with problems.check(), suppress(NotBuilt):
            built[name] = _build_service(name, svc, env)
    reserve_amount = MemoryAmount.parse(reserve.value if reserve else DEFAULT_RESERVE)
    profile = Profile(
        name=raw.name,
        description=raw.description
        or next((layer.description for layer in reversed(parents) if layer.description), ""),
        services=built,
        gpu_reserve=reserve_amount,
        source=raw.located.source,
        extends=raw.extends[0] if raw.extends else None,
        routing=sections.get("routing", {}),
        endpoints=sections.get("endpoints", {}),
        budget=sections.get("budget", {}),
        ledger=sections.get("ledger", {}),
        ram_reserve=sections.get("ram", {}).get("reserve"),
        ram_limit=sections.get("ram", {}).get("limit"),
        hosts=sections.get("hosts", {}),
        allow_unauthenticated_network=bool(sections.get("allow_unauthenticated_network", False)),
        nodes=_build_nodes(sections.get("nodes", {}), raw.source, env, problems),
        cloud=sections.get("cloud"),
    )
    profile = place_on_hosts(profile, services, problems)
    check_ports(profile, services, written, problems)
    check_shares(profile, services, problems)
    for ram in ram_problems(profile):  # against `ram.limit`; the machine's memory is not read here
        where = services[ram.service].fields.get("ram")
        problems.items.append(
            ConfigError(
                ram.message,
                source=where.source if where else services[ram.service].source,
                line=where.line if where else ram.line,
            )
        )
    if set(built) == set(services):  # routing names services: check it once they all built
        with problems.check():
            check_routing_sections(profile, [layer.located for layer in chain])
    problems.raise_any()
    return profile


def _build_nodes(
    nodes: dict[str, Node | None],
    source: str,
    env: Mapping[str, str] | None,
    problems: Problems,
) -> dict[str, Node]:
    """The merged `nodes:` with each engine's default image and port, and `${VAR}`s expanded."""
    built: dict[str, Node] = {}
    for name, node in nodes.items():
        if node is None:  # `name: null` removed a parent's node
            continue
        driver = driver_for(node.engine)
        image = node.image or driver.default_image(uses_gpu=True) or ""
        port = node.port or driver.default_port or 0
        with problems.check():
            if not image:
                raise ConfigError(
                    f"node {name!r}: engine {node.engine.value} needs an `image`",
                    source=node.source or source,
                    line=node.line,
                )
            if not port:
                raise ConfigError(
                    f"node {name!r}: engine {node.engine.value} needs a `port` (the one its "
                    "server listens on in the container)",
                    source=node.source or source,
                    line=node.line,
                )
            node_env = []
            for key, value in node.env:
                try:
                    node_env.append((key, expand_references(value, env)))
                except ValueError as exc:
                    raise ConfigError(
                        f"node {name!r}: env: {key}: {exc}",
                        source=node.source or source,
                        line=node.line,
                    ) from None
            built[name] = replace(node, image=image, port=port, env=tuple(node_env))
    return built


def _build_service(name: str, raw: RawService, env: Mapping[str, str] | None) -> Service:
    fields = {key: item.value for key, item in raw.fields.items()}

    def fail(message: str, key: str | None = None) -> ConfigError:
        where = raw.fields.get(key) if key else None
        source = where.source if where else raw.source
        line = where.line if where else raw.line
        return ConfigError(f"service {name!r}: {message}", source=source, line=line)

    # Every mistake of the service in one pass, its `${VAR}`s included. A key written with a
    # mistake (or misspelt: `prot`, reported with "did you mean 'port'?") is not also "missing".
    problems = Problems()
    import difflib

    covered = set(raw.bad) | {
        match for key in raw.bad for match in difflib.get_close_matches(key, SERVICE_KEYS, n=1)
    }
    engine: Engine | None = fields.get("engine")
    if engine is None and "engine" not in covered:
        problems.items.append(
            fail("missing `engine` (one of: " + ", ".join(e.value for e in Engine) + ")")
        )
    if "port" not in fields and "port" not in covered:
        problems.items.append(fail("missing `port` (the host port it answers on)"))
    gpus: tuple[int, ...] = fields.get("gpu", ())
    vram: MemoryAmount | None = fields.get("vram")
    if gpus and vram is None and "vram" not in covered:
        problems.items.append(
            fail(f"runs on GPU {','.join(map(str, gpus))} but has no `vram` budget (e.g. 35%)")
        )
    if vram is not None and not gpus and "gpu" not in covered:
        problems.items.append(
            fail(
                "has a `vram` budget but no `gpu` (add gpu: 0, or drop vram for a CPU service)",
                "vram",
            )
        )
    if (
        engine in (Engine.VLLM, Engine.LLAMACPP)
        and not fields.get("model")
        and ("model" not in covered)
    ):
        problems.items.append(fail(f"engine {engine.value} needs a `model` to serve"))
    if engine is Engine.GENERIC and "image" not in fields and "image" not in covered:
        problems.items.append(fail("engine generic needs an `image`"))
    if (
        engine is Engine.GENERIC
        and not fields.get("health", Health()).path
        and ("health" not in covered)
    ):
        problems.items.append(
            fail("engine generic needs `health: {path: ...}` to know when it is ready")
        )
    for key in OLLAMA_ONLY:
        if key in fields and engine is not None and engine is not Engine.OLLAMA:
            problems.items.append(
                fail(f"`{key}` is an Ollama setting; this service's engine is {engine.value}", key)
            )
    if "source" in fields and engine is not None and engine is not Engine.LLAMACPP:
        problems.items.append(
            fail(
                "`source` names the GGUF file a llama.cpp service downloads; "
                f"this service's engine is {engine.value}"
                + (
                    " (its `model`, the Hub id, is what `pull` downloads)"
                    if engine is Engine.VLLM
                    else ""
                ),
                "source",
            )
        )
    if (
        "source" in fields
        and engine is Engine.LLAMACPP
        and not str(fields.get("model") or "").startswith("/")
    ):
        problems.items.append(
            fail("`source` needs `model`: the path inside the container the file goes to", "source")
        )
    image = fields.get("image")
    if image is None and engine is not None:
        image = driver_for(engine).default_image(uses_gpu=bool(gpus))
    env_items: tuple[EnvItem, ...] = fields.get("env", ())
    env_source = raw.fields["env"].source if "env" in raw.fields else raw.source
    service_env = []
    for item in env_items:
        with problems.check():
            try:
                service_env.append((item.name, expand_references(item.value, env)))
            except ValueError as exc:
                raise ConfigError(
                    f"env: {item.name}: {exc}", source=env_source, line=item.line
                ) from None
    problems.raise_any()
    if raw.bad:
        raise NotBuilt
    assert engine is not None  # else a problem was raised above
    assert image is not None
    return Service(
        name=name,
        engine=engine,
        image=image,
        port=fields["port"],
        model=fields.get("model"),
        bind=fields.get("bind", "127.0.0.1"),
        container_port=fields.get("container_port"),
        gpus=gpus,
        vram=vram,
        pinned=fields.get("pinned", False),
        on_demand=fields.get("on_demand", False),
        role=fields.get("role"),
        served_name=fields.get("served_name"),
        args=fields.get("args", ()),
        env=tuple(service_env),
        volumes=fields.get("volumes", ()),
        health=fields.get("health", Health()),
        keep_alive=fields.get("keep_alive"),
        max_loaded_models=fields.get("max_loaded_models"),
        num_parallel=fields.get("num_parallel"),
        ram=fields.get("ram"),
        idle_after_s=fields.get("idle_after"),
        max_concurrency=fields.get("max_concurrency"),
        max_queue=fields.get("max_queue"),
        priority=fields.get("priority", "normal"),
        host=fields.get("host", LOCAL_HOST),
        api_key_env=fields.get("api_key_env"),
        source=fields.get("source"),
        line=raw.line,
    )
