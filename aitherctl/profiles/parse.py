"""One profile file parsed: every key and value checked and converted, each mistake with its
file:line (`parse_profile`: text in, `RawProfile` out). Pure."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from typing import Any

from aitherctl.errors import ConfigError
from aitherctl.profiles.expand import expand_path, expand_references
from aitherctl.profiles.problems import Problems, did_you_mean
from aitherctl.profiles.profile import LOCAL_HOST, Engine, Health, Host, Volume
from aitherctl.profiles.schema import (
    _NAME,
    EXTENSION_PREFIX,
    GPU_KEYS,
    HEALTH_KEYS,
    HOST_KEYS,
    PROFILE_KEYS,
    RAM_KEYS,
    SERVICE_KEYS,
    EnvItem,
    RawField,
    RawProfile,
    RawService,
)
from aitherctl.units import MemoryAmount
from aitherctl.yamlsrc import Located, parse_yaml
from aitherctl.yamlsrc import Path as YPath

# `source:` names a file in a Hugging Face repository: ORG/NAME:FILE (the Hub's id rules: letters,
# digits, `-_.`; the file may sit in a folder of the repository).
_SOURCE = re.compile(r"[\w.-]+/[\w.-]+:[\w.\-/]+\.gguf")


def parse_profile(
    text: str,
    source: str,
    *,
    base_dir: str | None = None,
    env: Mapping[str, str] | None = None,
) -> RawProfile:
    """Parse one profile file's `text` and check its keys and types.

    `source` names the file in messages; its file name must match `name:`. Relative volume
    folders are relative to `base_dir` (default: the folder of `source`); `env` gives `~` and
    `$VAR` in volume folders. Broken YAML or a document that is not a mapping raises; other
    mistakes are kept in `problems` and raised by `build_profile` with the cross-field ones.
    """
    env = env or {}
    doc = parse_yaml(text, source)
    data = doc.data
    if data is None:
        raise ConfigError("the file is empty (a profile needs at least `services:`)", source=source)
    if not isinstance(data, dict):
        raise doc.error("a profile must be a mapping of keys (name, services, ...)", ())
    problems = Problems()
    for key in data:
        if key not in PROFILE_KEYS and not key.startswith(EXTENSION_PREFIX):
            with problems.check():
                _check_keys(doc, {key: None}, (), PROFILE_KEYS, "profile")

    file_name = PurePosixPath(source.replace("\\", "/")).name
    stem = file_name.rsplit(".", 1)[0] if "." in file_name else file_name
    name = data.get("name", stem)
    with problems.check():
        if not isinstance(name, str) or not _NAME.match(name):
            raise doc.error("`name` must be lower-case letters, digits, '-', '_' or '.'", ("name",))
        if name != stem:
            raise doc.error(
                f"`name: {name}` does not match the file name {file_name!r} (rename one of them)",
                ("name",),
            )
    raw = RawProfile(name=name if isinstance(name, str) else stem, located=doc)
    with problems.check():
        description = data.get("description", "")
        if not isinstance(description, str):
            raise doc.error("`description` must be text", ("description",))
        raw.description = description.strip()
    with problems.check():
        if "extends" in data:
            parent = data["extends"]
            if not isinstance(parent, str) or not parent:
                raise doc.error("`extends` must be the name of another profile", ("extends",))
            raw.extends = (parent, doc.line(("extends",)))
    with problems.check():
        raw.reserve = _parse_gpu(doc, data.get("gpu"))
    with problems.check():
        if data.get("ram") is not None:
            raw.sections["ram"] = _parse_ram(doc, data["ram"])
    with problems.check():
        if data.get("hosts") is not None:
            raw.sections["hosts"] = _parse_hosts(doc, data["hosts"])
    with problems.check():
        if "allow_unauthenticated_network" in data:
            allowed = data["allow_unauthenticated_network"]
            if not isinstance(allowed, bool):
                raise doc.error(
                    "`allow_unauthenticated_network` must be true or false",
                    ("allow_unauthenticated_network",),
                )
            raw.sections["allow_unauthenticated_network"] = allowed

    with problems.check():
        if data.get("nodes") is not None:
            from aitherctl.profiles.nodes_section import parse_nodes

            raw.sections["nodes"] = parse_nodes(doc, data["nodes"], problems)
    with problems.check():
        if data.get("cloud") is not None:
            from aitherctl.profiles.nodes_section import parse_cloud

            raw.sections["cloud"] = parse_cloud(doc, data["cloud"])

    services = data.get("services", {})
    if services is None:
        services = {}
    if not isinstance(services, dict):
        problems.items.append(
            doc.error("`services` must be a mapping from service name to settings", ("services",))
        )
        services = {}
    folder = base_dir if base_dir is not None else posixpath.dirname(source) or "."
    for svc_name, svc in services.items():
        with problems.check():
            raw.services[svc_name] = _parse_service(doc, svc_name, svc, folder, env, problems)

    for section in ("routing", "endpoints", "budget", "ledger"):
        if section in data and data[section] is not None:
            if not isinstance(data[section], dict):
                problems.items.append(doc.error(f"`{section}` must be a mapping", (section,)))
                continue
            raw.sections[section] = data[section]
    raw.problems = problems.items
    return raw


def _parse_gpu(doc: Located, gpu: Any) -> RawField | None:
    if gpu is None:
        return None
    if not isinstance(gpu, dict):
        raise doc.error("`gpu` must be a mapping (gpu: {reserve: 10%})", ("gpu",))
    _check_keys(doc, gpu, ("gpu",), GPU_KEYS, "gpu")
    if "reserve" not in gpu:
        return None
    value = gpu["reserve"]
    try:
        MemoryAmount.parse(value)
    except ValueError as exc:
        raise doc.error(f"gpu.reserve: {exc}", ("gpu", "reserve")) from None
    return RawField(value, doc.source, doc.line(("gpu", "reserve")))


def _parse_ram(doc: Located, ram: Any) -> dict[str, MemoryAmount]:
    """`ram: {reserve: 4GiB, limit: 16GiB}`: the host-RAM pool of CPU services."""
    if not isinstance(ram, dict):
        raise doc.error("`ram` must be a mapping (ram: {reserve: 4GiB, limit: 16GiB})", ("ram",))
    _check_keys(doc, ram, ("ram",), RAM_KEYS, "ram")
    parsed = {}
    for key, value in ram.items():
        try:
            parsed[key] = MemoryAmount.parse(value)
        except ValueError as exc:
            raise doc.error(f"ram.{key}: {exc}", ("ram", key)) from None
    return parsed


_ENDPOINT_SCHEMES = ("ssh://", "tcp://", "unix://", "npipe://")


def _parse_hosts(doc: Located, hosts: Any) -> dict[str, Host]:
    """`hosts: {box2: ssh://me@box2, box3: {docker: tcp://box3:2376, address: 10.0.0.3}}`."""
    from urllib.parse import urlsplit

    if not isinstance(hosts, dict):
        raise doc.error(
            "`hosts` must map a host name to its Docker endpoint (hosts: {box2: ssh://me@box2})",
            ("hosts",),
        )
    parsed: dict[str, Host] = {}
    for name, value in hosts.items():
        where: YPath = ("hosts", name)
        if not isinstance(name, str) or not _NAME.match(name):
            raise doc.error(
                f"host name {name!r} must be lower-case letters, digits, '-', '_' or '.'", where
            )
        if name == LOCAL_HOST:
            raise doc.error(
                "`local` is this machine's own engine (DOCKER_HOST or the Docker context); "
                "give the other host another name",
                where,
            )
        if isinstance(value, str):
            value = {"docker": value}  # noqa: PLW2901 (the short form of the mapping)
        if not isinstance(value, dict):
            raise doc.error(
                f"host {name!r} must be a Docker endpoint (ssh://user@box) or a mapping "
                "{docker: ..., address: ...}",
                where,
            )
        _check_keys(doc, value, where, HOST_KEYS, f"host {name!r}")
        endpoint = value.get("docker")
        if not isinstance(endpoint, str) or not endpoint.strip():
            raise doc.error(
                f"host {name!r} needs `docker`: ssh://user@box[:port], tcp://box:2376 or a "
                "Docker context name",
                (*where, "docker") if isinstance(value.get("docker"), str) else where,
            )
        endpoint = endpoint.strip()
        address = value.get("address")
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise doc.error(f"host {name!r}: `address` must be a host name or IP", where)
        if address is None:
            if endpoint.startswith(("unix://", "npipe://")):
                address = "127.0.0.1"
            elif "://" in endpoint:
                if not endpoint.startswith(_ENDPOINT_SCHEMES):
                    raise doc.error(
                        f"host {name!r}: {endpoint!r} is not a Docker endpoint (use ssh://, "
                        "tcp://, unix:// or a Docker context name)",
                        (*where, "docker") if "docker" in value else where,
                    )
                try:
                    address = urlsplit(endpoint).hostname
                except ValueError:
                    address = None
                if not address:
                    raise doc.error(f"host {name!r}: {endpoint!r} names no host", where)
            else:
                raise doc.error(
                    f"host {name!r} uses the Docker context {endpoint!r}: add `address:` (where "
                    "this machine reaches that host's services)",
                    where,
                )
        parsed[name] = Host(name, endpoint, address.strip(), doc.line(where))
    return parsed


def _parse_service(  # noqa: PLR0917
    doc: Located,
    svc_name: str,
    svc: Any,
    folder: str,
    env: Mapping[str, str],
    found: Problems,
) -> RawService | None:
    """The service's fields as written; a field's mistake goes to `found` and the field to
    `bad`, and the other fields are kept for the checks across services."""
    where = ("services", svc_name)
    if not _NAME.match(svc_name):
        raise doc.error(
            f"service name {svc_name!r} must be lower-case letters, digits, '-', '_' or '.'", where
        )
    if svc is None:  # `name: null` in a child removes the parent's service
        return None
    if not isinstance(svc, dict):
        raise doc.error(f"service {svc_name!r} must be a mapping of settings", where)
    fields = {}
    bad = set()
    for key, value in svc.items():
        before = len(found.items)
        with found.check():
            _check_keys(doc, {key: None}, where, SERVICE_KEYS, f"service {svc_name!r}")
            fields[key] = RawField(
                _convert_field(doc, where, key, value, folder, env),
                doc.source,
                doc.line((*where, key)),
            )
        if len(found.items) > before:
            bad.add(key)
    return RawService(fields, doc.source, doc.line(where), frozenset(bad))


def _check_keys(
    doc: Located, data: dict[str, Any], where: YPath, known: set[str], what: str
) -> None:
    for key in data:
        if key not in known:
            raise doc.error(
                f"unknown key {key!r} in {what}{did_you_mean(key, known)}", (*where, key)
            )


def _convert_field(  # noqa: PLR0917
    doc: Located, where: YPath, key: str, value: Any, folder: str, env: Mapping[str, str]
) -> Any:
    """Type-check one service field and turn it into its normalised form."""
    path = (*where, key)

    def fail(message: str) -> ConfigError:
        return doc.error(f"{key}: {message}", path)

    if key == "engine":
        try:
            return Engine(value)
        except ValueError:
            choices = ", ".join(engine.value for engine in Engine)
            raise fail(f"{value!r} is not an engine (use one of: {choices})") from None
    if key == "host":
        if not isinstance(value, str) or not _NAME.match(value):
            raise fail(f"must be the name of a host under `hosts:` (or local), not {value!r}")
        return value
    if key == "api_key_env":
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise fail("must be the NAME of an environment variable that holds the key")
        return value
    if key == "source":
        if not isinstance(value, str) or not _SOURCE.fullmatch(value.strip()):
            raise fail(
                f"must be ORG/NAME:FILE, the Hugging Face repository and the file in it to "
                f"download (e.g. bartowski/Qwen3-8B-GGUF:Qwen3-8B-Q4_K_M.gguf), not {value!r}"
            )
        return value.strip()
    if key in ("image", "model", "role", "served_name", "keep_alive", "bind"):
        if not isinstance(value, str) or not value.strip():
            raise fail(f"must be text, not {value!r}")
        return value.strip()
    if key in ("port", "container_port"):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise fail(f"must be a port number from 1 to 65535, not {value!r}")
        return value
    if key in ("max_loaded_models", "num_parallel", "max_concurrency", "max_queue"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise fail(f"must be a whole number of at least 1, not {value!r}")
        return value
    if key in ("pinned", "on_demand"):
        if not isinstance(value, bool):
            raise fail(f"must be true or false, not {value!r}")
        return value
    if key == "gpu":
        return _convert_gpu(value, fail)
    if key == "idle_after":
        from aitherctl.profiles.scheduling_terms import parse_duration

        try:
            return parse_duration(value)
        except ValueError as exc:
            raise fail(str(exc)) from None
    if key == "priority":
        from aitherctl.profiles.scheduling_terms import parse_rank

        try:
            return parse_rank(value).name.lower()
        except ValueError as exc:
            raise fail(str(exc)) from None
    if key in ("vram", "ram"):
        try:
            return MemoryAmount.parse(value)
        except ValueError as exc:
            raise fail(str(exc)) from None
    if key == "args":
        if isinstance(value, str):
            import shlex

            return tuple(shlex.split(value))
        if not isinstance(value, list) or not all(
            isinstance(item, (str, int, float)) and not isinstance(item, bool) for item in value
        ):
            raise fail("must be a list of arguments, e.g. [--max-model-len, '8192']")
        return tuple(str(item) for item in value)
    if key == "env":
        return _convert_env(doc, path, value, fail)
    if key == "volumes":
        return _convert_volumes(doc, path, value, folder, env)
    if key == "health":
        if not isinstance(value, dict):
            raise fail("must be a mapping (health: {path: /health, timeout: 300})")
        _check_keys(doc, value, path, HEALTH_KEYS, "health")
        health_path = value.get("path")
        if health_path is not None and (
            not isinstance(health_path, str) or not health_path.startswith("/")
        ):
            raise doc.error("health.path must be an HTTP path starting with '/'", (*path, "path"))
        timeout = value.get("timeout")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
        ):
            raise doc.error(
                "health.timeout must be a number of seconds above zero", (*path, "timeout")
            )
        return Health(path=health_path, timeout_s=float(timeout) if timeout else None)
    raise AssertionError(key)  # _check_keys ran first


def _convert_env(
    doc: Located, path: YPath, value: Any, fail: Callable[[str], ConfigError]
) -> tuple[EnvItem, ...]:
    if not isinstance(value, dict):
        raise fail("must be a mapping of variable names to values")
    env = []
    for name, item in value.items():
        where = (*path, name)
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise doc.error(f"env: {name!r} is not a variable name", where)
        if isinstance(item, (dict, list)) or item is None:
            raise doc.error(f"env: {name} must be text or a number", where)
        text = ("true" if item else "false") if isinstance(item, bool) else str(item)
        try:
            expand_references(text, None)
        except ValueError as exc:
            raise doc.error(f"env: {name}: {exc}", where) from None
        env.append(EnvItem(name, text, doc.line(where)))
    return tuple(env)


def _convert_gpu(value: Any, fail: Callable[[str], ConfigError]) -> tuple[int, ...]:
    if value is None or value == "none" or value is False:
        return ()
    items = value if isinstance(value, list) else [value]
    if not items:
        return ()
    gpus: list[int] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or item < 0:
            raise fail(f"must be a GPU index (0, 1, ...), a list of them, or none; not {value!r}")
        if item in gpus:
            raise fail(f"GPU {item} is listed twice")
        gpus.append(item)
    return tuple(gpus)


def _convert_volumes(
    doc: Located, path: YPath, value: Any, folder: str, env: Mapping[str, str]
) -> tuple[Volume, ...]:
    def volume(host: Any, target: Any, where: YPath) -> Volume:
        if not isinstance(host, str) or not isinstance(target, str):
            raise doc.error("volumes: each entry maps a host folder to a container path", where)
        read_only = False
        if target.endswith((":ro", ":rw")):
            read_only = target.endswith(":ro")
            target = target[:-3]
        if not target.startswith("/"):
            raise doc.error(f"volumes: container path {target!r} must be absolute", where)
        host_path = expand_path(host, env)
        # A named Docker volume (no slash) stays a name; a relative path is relative to the file.
        if not host_path.startswith("/") and ("/" in host_path or host_path.startswith(".")):
            host_path = posixpath.normpath(posixpath.join(folder, host_path))
        return Volume(host_path, target, read_only)

    if isinstance(value, dict):
        return tuple(volume(h, t, (*path, h)) for h, t in value.items())
    if isinstance(value, list):
        result = []
        for index, item in enumerate(value):
            if not isinstance(item, str) or item.count(":") not in (1, 2):
                raise doc.error(
                    "volumes: write each entry as HOST:CONTAINER or HOST:CONTAINER:ro",
                    (*path, index),
                )
            host, _, target = item.partition(":")
            result.append(volume(host, target, (*path, index)))
        return tuple(result)
    raise doc.error("volumes: must map host folders to container paths", path)
