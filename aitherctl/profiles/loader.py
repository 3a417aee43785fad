"""Profiles from text: parse one file, check every field, resolve `extends`, expand `${VAR}`.

Pure: the text, the name of its source and the environment come in as arguments; finding and
reading files is `aitherctl.profiles.catalog`'s job. Every mistake becomes a `ConfigError`
line naming the file and line: an unknown key, a wrong type, a budget over 100% of a GPU, two
services on one port, an unknown or circular `extends`, a `${VAR}` that is not set. A file with
several mistakes raises `ConfigProblems`, which lists each of them.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from aitherctl.engines import driver_for
from aitherctl.errors import ConfigError, NotFoundError
from aitherctl.profiles.profile import (
    LOCAL_HOST,
    Engine,
    Health,
    Host,
    Profile,
    Service,
    Volume,
    is_loopback,
)
from aitherctl.profiles.ram_budget import ram_problems
from aitherctl.routing.table import check_routing_sections
from aitherctl.units import MemoryAmount
from aitherctl.yamlsrc import Located, parse_yaml
from aitherctl.yamlsrc import Path as YPath

PROFILE_KEYS = {
    "name",
    "description",
    "extends",
    "gpu",
    "ram",
    "services",
    "routing",
    "endpoints",
    "budget",
    "ledger",
    "hosts",
    "allow_unauthenticated_network",
}
GPU_KEYS = {"reserve"}
RAM_KEYS = {"reserve", "limit"}
SERVICE_KEYS = {
    "engine",
    "image",
    "model",
    "port",
    "bind",
    "container_port",
    "gpu",
    "vram",
    "pinned",
    "on_demand",
    "role",
    "served_name",
    "args",
    "env",
    "volumes",
    "health",
    "keep_alive",
    "max_loaded_models",
    "num_parallel",
    "ram",
    "idle_after",
    "max_concurrency",
    "max_queue",
    "priority",
    "host",
    "api_key_env",
}
HOST_KEYS = {"docker", "address"}
HEALTH_KEYS = {"path", "timeout"}
OLLAMA_ONLY = ("keep_alive", "max_loaded_models", "num_parallel")
DEFAULT_RESERVE = "5%"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")

# A service without `image` gets its engine driver's pinned default (aitherctl.engines).

EXTENSION_PREFIX = "x-"  # top-level keys for the user's own use, e.g. anchors: `x-vllm: &vllm`


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, sorted(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


_did_you_mean = did_you_mean


class ConfigProblems(ConfigError):
    """Several mistakes in one profile. The message is the first; `problems` holds each one
    (`file:line: message`), and `detail` the others, so a plain error print shows them all."""

    def __init__(self, problems: Sequence[ConfigError]) -> None:
        first = problems[0]
        super().__init__(first.reason, source=first.source, line=first.line)
        self.problems = tuple(problems)
        self.detail = "\n".join(problem.message for problem in problems[1:])


def problems_of(error: ConfigError) -> tuple[ConfigError, ...]:
    """Each mistake a `ConfigError` stands for (one, or all of a `ConfigProblems`)."""
    return error.problems if isinstance(error, ConfigProblems) else (error,)


class _NotBuilt(Exception):
    """A service with a mistake already reported (a bad field): not built."""


class _Problems:
    """Collects mistakes so one run reports each of them, not only the first."""

    def __init__(self) -> None:
        self.items: list[ConfigError] = []

    @contextmanager
    def check(self) -> Iterator[None]:
        try:
            yield
        except ConfigError as exc:
            self.items.extend(problems_of(exc))

    def raise_any(self) -> None:
        if not self.items:
            return
        items = sorted(self.items, key=lambda item: (item.source or "", item.line or 0))
        if len(items) == 1:
            raise items[0]
        raise ConfigProblems(items)


# ---------------------------------------------------------------------------------------------
# `${VAR}` references

_REFERENCE = re.compile(r"\$(?:(\$)|\{([^}]*)\}|(\{))")
_REFERENCE_BODY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)(.*))?$", re.DOTALL)


def expand_references(text: str, env: Mapping[str, str] | None) -> str:
    """`${VAR}`, `${VAR:-default}` (unset or empty: default), `${VAR-default}` (unset: default)
    and `$$` (a literal `$`), as Docker Compose writes them. With `env=None` only the syntax is
    checked and `text` comes back as written. Raises ValueError naming what to fix."""

    def replace(match: re.Match[str]) -> str:
        dollar, body, unclosed = match.groups()
        if dollar:
            return "$"
        if unclosed:
            raise ValueError("`${` without its closing `}`")
        parsed = _REFERENCE_BODY.match(body)
        if parsed is None:
            raise ValueError(f"`${{{body}}}` is not a variable reference (write ${{NAME}})")
        name, operator, default = parsed.groups()
        if env is None:
            return match.group(0)
        value = env.get(name)
        if operator == ":-" and not value:
            return str(default)
        if operator == "-" and value is None:
            return str(default)
        if value is None:
            raise ValueError(
                f"${{{name}}} is not set (set it, or give a default: ${{{name}:-value}})"
            )
        return value

    expanded = _REFERENCE.sub(replace, text)
    return text if env is None else expanded


def _expand_path(host: str, env: Mapping[str, str]) -> str:
    """`~` and `$VAR`/`${VAR}` in a volume's host folder; an unknown variable stays as written."""
    if host == "~" or host.startswith("~/"):
        home = env.get("HOME")
        if home:
            host = home + host[1:]

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return env.get(name, match.group(0))

    return re.sub(r"\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\})", replace, host)


# ---------------------------------------------------------------------------------------------
# Parsed, not yet merged


@dataclass(slots=True)
class _Field:
    value: Any
    source: str
    line: int | None


@dataclass(frozen=True, slots=True)
class _EnvItem:
    name: str
    value: str  # as written: `${VAR}` references are expanded when the profile is built
    line: int | None


@dataclass(slots=True)
class _RawService:
    """A service's fields as written, each with where it was written (after `extends`)."""

    fields: dict[str, _Field]
    source: str
    line: int | None
    # Keys written with a mistake (already reported): the service is not built, but its other
    # fields are still checked, so one pass reports every mistake.
    bad: frozenset[str] = frozenset()


@dataclass(slots=True)
class RawProfile:
    """One file's profile, checked field by field, before `extends` and cross-field rules."""

    name: str
    located: Located
    description: str = ""
    extends: tuple[str, int | None] | None = None
    reserve: _Field | None = None
    services: dict[str, _RawService | None] = field(default_factory=dict)
    sections: dict[str, Any] = field(default_factory=dict)
    # Mistakes found in this file; `build_profile` reports them with its own, all at once.
    problems: list[ConfigError] = field(default_factory=list)

    @property
    def source(self) -> str:
        return self.located.source


_RawProfile = RawProfile


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
    problems = _Problems()
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


def _parse_gpu(doc: Located, gpu: Any) -> _Field | None:
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
    return _Field(value, doc.source, doc.line(("gpu", "reserve")))


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
    found: _Problems,
) -> _RawService | None:
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
            fields[key] = _Field(
                _convert_field(doc, where, key, value, folder, env),
                doc.source,
                doc.line((*where, key)),
            )
        if len(found.items) > before:
            bad.add(key)
    return _RawService(fields, doc.source, doc.line(where), frozenset(bad))


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
) -> tuple[_EnvItem, ...]:
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
        env.append(_EnvItem(name, text, doc.line(where)))
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
        host_path = _expand_path(host, env)
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


# ---------------------------------------------------------------------------------------------
# Building the final profile

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
    services: dict[str, _RawService] = {}
    # Where each service's field was last written: (layer, line), so a clash blames the later one.
    written: dict[tuple[str, str], tuple[int, int]] = {}
    reserve: _Field | None = None
    sections: dict[str, Any] = {}
    for layer_index, layer in enumerate(chain):
        for name, svc in layer.services.items():
            if svc is None:
                services.pop(name, None)
                continue
            if name in services:
                base = services[name]
                services[name] = _RawService(
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
            if section in ("endpoints", "hosts") and isinstance(sections.get(section), dict):
                sections[section] = {**sections[section], **value}
            else:
                sections[section] = value

    problems = _Problems()
    for layer in chain:
        problems.items.extend(layer.problems)
    built: dict[str, Service] = {}
    for name, svc in services.items():
        with problems.check(), suppress(_NotBuilt):
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
    )
    profile = _place_on_hosts(profile, services, problems)
    _check_ports(profile, services, written, problems)
    _check_shares(profile, services, problems)
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


def _build_service(name: str, raw: _RawService, env: Mapping[str, str] | None) -> Service:
    fields = {key: item.value for key, item in raw.fields.items()}

    def fail(message: str, key: str | None = None) -> ConfigError:
        where = raw.fields.get(key) if key else None
        source = where.source if where else raw.source
        line = where.line if where else raw.line
        return ConfigError(f"service {name!r}: {message}", source=source, line=line)

    # Every mistake of the service in one pass, its `${VAR}`s included. A key written with a
    # mistake (or misspelt: `prot`, reported with "did you mean 'port'?") is not also "missing".
    problems = _Problems()
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
    image = fields.get("image")
    if image is None and engine is not None:
        image = driver_for(engine).default_image(uses_gpu=bool(gpus))
    env_items: tuple[_EnvItem, ...] = fields.get("env", ())
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
        raise _NotBuilt
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
        line=raw.line,
    )


# Engines whose server checks an API key of its own (the driver passes it in the environment).
KEYED_ENGINES = (Engine.VLLM, Engine.LLAMACPP, Engine.GENERIC)


def _place_on_hosts(
    profile: Profile, raw_services: dict[str, _RawService], problems: _Problems
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

        def fail(message: str, key: str, raw: _RawService = raw, name: str = name) -> ConfigError:
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


def _check_ports(
    profile: Profile,
    raw_services: dict[str, _RawService],
    written: dict[tuple[str, str], tuple[int, int]],
    problems: _Problems,
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
    host: str
    bind: str
    port: int


def _place_of(profile: Profile, raw_services: dict[str, _RawService], name: str) -> _Place | None:
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


def _check_shares(
    profile: Profile, raw_services: dict[str, _RawService], problems: _Problems
) -> None:
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
