"""Loading profiles: find the file, parse it, check every field, resolve `extends`.

Every mistake becomes one `ConfigError` line naming the file and line: an unknown key, a wrong
type, a budget over 100% of a GPU, two services on one port, an unknown or circular `extends`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aitherctl.core.profile import Engine, Health, Profile, Service, Volume
from aitherctl.core.units import MemoryAmount
from aitherctl.core.yamlsrc import Located, parse_yaml
from aitherctl.core.yamlsrc import Path as YPath
from aitherctl.errors import ConfigError, NotFoundError

PROFILE_KEYS = {
    "name",
    "description",
    "extends",
    "gpu",
    "services",
    "routing",
    "endpoints",
    "budget",
    "ledger",
}
GPU_KEYS = {"reserve"}
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
}
HEALTH_KEYS = {"path", "timeout"}
OLLAMA_ONLY = ("keep_alive", "max_loaded_models", "num_parallel")
DEFAULT_RESERVE = "5%"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")

# The images a service gets when its profile names none; each can be overridden per service.
DEFAULT_IMAGES: dict[Engine, str] = {
    Engine.VLLM: "vllm/vllm-openai:latest",
    Engine.OLLAMA: "ollama/ollama:latest",
    Engine.COMFYUI: "yanwk/comfyui-boot:cu128-slim",
    Engine.LLAMACPP: "ghcr.io/ggml-org/llama.cpp:server-cuda",
}
LLAMACPP_CPU_IMAGE = "ghcr.io/ggml-org/llama.cpp:server"


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, sorted(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(slots=True)
class _Field:
    value: Any
    source: str
    line: int | None


@dataclass(slots=True)
class _RawService:
    """A service's fields as written, each with where it was written (after `extends`)."""

    fields: dict[str, _Field]
    source: str
    line: int | None


@dataclass(slots=True)
class _RawProfile:
    name: str
    located: Located
    description: str = ""
    extends: tuple[str, int | None] | None = None
    reserve: _Field | None = None
    services: dict[str, _RawService | None] = field(default_factory=dict)
    sections: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Reading one file


def read_profile_file(path: Path) -> _RawProfile:
    """Parse one profile file and check its keys and types (not yet its cross-field rules)."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFoundError(f"{source}: no such profile file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=source) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", source=source) from None
    doc = parse_yaml(text, source)
    data = doc.data
    if data is None:
        raise ConfigError("the file is empty (a profile needs at least `services:`)", source=source)
    if not isinstance(data, dict):
        raise doc.error("a profile must be a mapping of keys (name, services, ...)", ())
    _check_keys(doc, data, (), PROFILE_KEYS, "profile")

    stem = path.stem
    name = data.get("name", stem)
    if not isinstance(name, str) or not _NAME.match(name):
        raise doc.error("`name` must be lower-case letters, digits, '-', '_' or '.'", ("name",))
    if name != stem:
        raise doc.error(
            f"`name: {name}` does not match the file name {path.name!r} (rename one of them)",
            ("name",),
        )
    raw = _RawProfile(name=name, located=doc)
    description = data.get("description", "")
    if not isinstance(description, str):
        raise doc.error("`description` must be text", ("description",))
    raw.description = description.strip()
    if "extends" in data:
        parent = data["extends"]
        if not isinstance(parent, str) or not parent:
            raise doc.error("`extends` must be the name of another profile", ("extends",))
        raw.extends = (parent, doc.line(("extends",)))

    gpu = data.get("gpu")
    if gpu is not None:
        if not isinstance(gpu, dict):
            raise doc.error("`gpu` must be a mapping (gpu: {reserve: 10%})", ("gpu",))
        _check_keys(doc, gpu, ("gpu",), GPU_KEYS, "gpu")
        if "reserve" in gpu:
            value = gpu["reserve"]
            try:
                MemoryAmount.parse(value)
            except ValueError as exc:
                raise doc.error(f"gpu.reserve: {exc}", ("gpu", "reserve")) from None
            raw.reserve = _Field(value, source, doc.line(("gpu", "reserve")))

    services = data.get("services", {})
    if services is None:
        services = {}
    if not isinstance(services, dict):
        raise doc.error("`services` must be a mapping from service name to settings", ("services",))
    for svc_name, svc in services.items():
        where = ("services", svc_name)
        if not _NAME.match(svc_name):
            raise doc.error(
                f"service name {svc_name!r} must be lower-case letters, digits, '-', '_' or '.'",
                where,
            )
        if svc is None:  # `name: null` in a child removes the parent's service
            raw.services[svc_name] = None
            continue
        if not isinstance(svc, dict):
            raise doc.error(f"service {svc_name!r} must be a mapping of settings", where)
        _check_keys(doc, svc, where, SERVICE_KEYS, f"service {svc_name!r}")
        fields = {}
        for key, value in svc.items():
            fields[key] = _Field(
                _convert_field(doc, where, key, value), source, doc.line((*where, key))
            )
        raw.services[svc_name] = _RawService(fields, source, doc.line(where))

    for section in ("routing", "endpoints", "budget", "ledger"):
        if section in data and data[section] is not None:
            if not isinstance(data[section], dict):
                raise doc.error(f"`{section}` must be a mapping", (section,))
            raw.sections[section] = data[section]
    return raw


def _check_keys(
    doc: Located, data: dict[str, Any], where: YPath, known: set[str], what: str
) -> None:
    for key in data:
        if key not in known:
            raise doc.error(
                f"unknown key {key!r} in {what}{_did_you_mean(key, known)}", (*where, key)
            )


def _convert_field(doc: Located, where: YPath, key: str, value: Any) -> Any:
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
    if key in ("image", "model", "role", "served_name", "keep_alive", "bind"):
        if not isinstance(value, str) or not value.strip():
            raise fail(f"must be text, not {value!r}")
        return value.strip()
    if key in ("port", "container_port"):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise fail(f"must be a port number from 1 to 65535, not {value!r}")
        return value
    if key in ("max_loaded_models", "num_parallel"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise fail(f"must be a whole number of at least 1, not {value!r}")
        return value
    if key in ("pinned", "on_demand"):
        if not isinstance(value, bool):
            raise fail(f"must be true or false, not {value!r}")
        return value
    if key == "gpu":
        return _convert_gpu(value, fail)
    if key == "vram":
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
        if not isinstance(value, dict):
            raise fail("must be a mapping of variable names to values")
        env = []
        for name, item in value.items():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                raise doc.error(f"env: {name!r} is not a variable name", (*path, name))
            if isinstance(item, (dict, list)) or item is None:
                raise doc.error(f"env: {name} must be text or a number", (*path, name))
            text = ("true" if item else "false") if isinstance(item, bool) else str(item)
            env.append((name, text))
        return tuple(env)
    if key == "volumes":
        return _convert_volumes(doc, path, value)
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


def _convert_gpu(value: Any, fail: Any) -> tuple[int, ...]:
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


def _convert_volumes(doc: Located, path: YPath, value: Any) -> tuple[Volume, ...]:
    base = Path(doc.source).resolve().parent

    def volume(host: Any, target: Any, where: YPath) -> Volume:
        if not isinstance(host, str) or not isinstance(target, str):
            raise doc.error("volumes: each entry maps a host folder to a container path", where)
        read_only = False
        if target.endswith((":ro", ":rw")):
            read_only = target.endswith(":ro")
            target = target[:-3]
        if not target.startswith("/"):
            raise doc.error(f"volumes: container path {target!r} must be absolute", where)
        host_path = os.path.expandvars(os.path.expanduser(host))
        if not host_path.startswith("/"):
            # A named Docker volume (no slash) stays a name; a relative path is relative to the file.
            if "/" in host_path or host_path.startswith("."):
                host_path = str((base / host_path).resolve())
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


def build_profile(raw: _RawProfile, parents: Sequence[_RawProfile] = ()) -> Profile:
    """Merge `raw` over its parents (nearest last in `parents`... first) and validate the result.

    `parents` lists the chain from the root ancestor down to the direct parent.
    """
    chain = [*parents, raw]
    services: dict[str, _RawService] = {}
    reserve: _Field | None = None
    sections: dict[str, Any] = {}
    for layer in chain:
        for name, svc in layer.services.items():
            if svc is None:
                services.pop(name, None)
            elif name in services:
                base = services[name]
                services[name] = _RawService({**base.fields, **svc.fields}, svc.source, svc.line)
            else:
                services[name] = svc
        if layer.reserve is not None:
            reserve = layer.reserve
        for section, value in layer.sections.items():
            if section == "endpoints" and isinstance(sections.get("endpoints"), dict):
                sections["endpoints"] = {**sections["endpoints"], **value}
            else:
                sections[section] = value

    built = {name: _build_service(name, svc) for name, svc in services.items()}
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
    )
    _check_profile(profile, services, reserve)
    return profile


def _build_service(name: str, raw: _RawService) -> Service:
    fields = {key: item.value for key, item in raw.fields.items()}

    def fail(message: str, key: str | None = None) -> ConfigError:
        where = raw.fields.get(key) if key else None
        source = where.source if where else raw.source
        line = where.line if where else raw.line
        return ConfigError(f"service {name!r}: {message}", source=source, line=line)

    if "engine" not in fields:
        raise fail("missing `engine` (one of: " + ", ".join(e.value for e in Engine) + ")")
    engine: Engine = fields["engine"]
    if "port" not in fields:
        raise fail("missing `port` (the host port it answers on)")
    gpus: tuple[int, ...] = fields.get("gpu", ())
    vram: MemoryAmount | None = fields.get("vram")
    if gpus and vram is None:
        raise fail(f"runs on GPU {','.join(map(str, gpus))} but has no `vram` budget (e.g. 35%)")
    if vram is not None and not gpus:
        raise fail(
            "has a `vram` budget but no `gpu` (add gpu: 0, or drop vram for a CPU service)", "vram"
        )
    if engine in (Engine.VLLM, Engine.LLAMACPP) and not fields.get("model"):
        raise fail(f"engine {engine.value} needs a `model` to serve")
    if engine is Engine.GENERIC and "image" not in fields:
        raise fail("engine generic needs an `image`")
    if engine is Engine.GENERIC and not fields.get("health", Health()).path:
        raise fail("engine generic needs `health: {path: ...}` to know when it is ready")
    for key in OLLAMA_ONLY:
        if key in fields and engine is not Engine.OLLAMA:
            raise fail(
                f"`{key}` is an Ollama setting; this service's engine is {engine.value}", key
            )
    image = fields.get("image")
    if image is None:
        image = (
            LLAMACPP_CPU_IMAGE if engine is Engine.LLAMACPP and not gpus else DEFAULT_IMAGES[engine]
        )
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
        env=fields.get("env", ()),
        volumes=fields.get("volumes", ()),
        health=fields.get("health", Health()),
        keep_alive=fields.get("keep_alive"),
        max_loaded_models=fields.get("max_loaded_models"),
        num_parallel=fields.get("num_parallel"),
        line=raw.line,
    )


def _check_profile(
    profile: Profile, raw_services: dict[str, _RawService], reserve: _Field | None
) -> None:
    def where(name: str, key: str) -> tuple[str, int | None]:
        item = raw_services[name].fields.get(key)
        if item is None:
            return raw_services[name].source, raw_services[name].line
        return item.source, item.line

    seen_ports: dict[tuple[str, int], str] = {}
    for name, svc in profile.services.items():
        for bind in {svc.bind, "0.0.0.0"} if svc.bind != "0.0.0.0" else {"0.0.0.0"}:
            other = seen_ports.get((bind, svc.port))
            if other is not None:
                source, line = where(name, "port")
                raise ConfigError(
                    f"services {other!r} and {name!r} both use port {svc.port}",
                    source=source,
                    line=line,
                )
        seen_ports[(svc.bind, svc.port)] = name

    # Shares are checkable without the GPU; absolute budgets are checked by the planner.
    shares: dict[int, list[tuple[str, float]]] = {}
    for name, svc in profile.services.items():
        if svc.vram is not None and svc.vram.fraction is not None:
            for gpu in svc.gpus:
                shares.setdefault(gpu, []).append((name, svc.vram.fraction))
    # On-demand services are counted only when running: the planner checks them at `up` time.
    reserve_share = profile.gpu_reserve.fraction or 0.0
    for gpu, items in sorted(shares.items()):
        resident = [(n, f) for n, f in items if not profile.services[n].on_demand]
        total = sum(f for _, f in resident)
        if resident and total + reserve_share > 1.0 + 1e-9:
            last = resident[-1][0]
            source, line = where(last, "vram")
            listing = " + ".join(f"{n} {f * 100:g}%" for n, f in resident)
            extra = f" plus the {reserve_share * 100:g}% reserve" if reserve_share else ""
            raise ConfigError(
                f"GPU {gpu} budgets add up to {total * 100:g}% ({listing}){extra}, over 100%",
                source=source,
                line=line,
            )
    del reserve  # absolute reserves are checked by the planner, which knows the GPU


# ---------------------------------------------------------------------------------------------
# Finding profiles


def builtin_profile_dir() -> Path:
    """Built-in profiles: inside the installed package, or `profiles/` in a source checkout."""
    package = Path(__file__).resolve().parent.parent
    installed = package / "builtin_profiles"
    if installed.is_dir():
        return installed
    return package.parent / "profiles"


def user_profile_dir() -> Path:
    """`--profile-dir` / `AITHER_PROFILE_DIR`, else the user's config folder (platformdirs)."""
    override = os.environ.get("AITHER_PROFILE_DIR")
    if override:
        return Path(override).expanduser()
    from platformdirs import user_config_path

    return user_config_path("aitherctl") / "profiles"


@dataclass(frozen=True, slots=True)
class ProfileEntry:
    name: str
    path: Path
    builtin: bool
    overrides_builtin: bool = False


class ProfileCatalog:
    """Profiles by name across the built-in folder and the user's folder (the user's wins)."""

    def __init__(self, builtin_dir: Path | None = None, user_dir: Path | None = None) -> None:
        self.builtin_dir = builtin_dir if builtin_dir is not None else builtin_profile_dir()
        self.user_dir = user_dir if user_dir is not None else user_profile_dir()

    def _layers(self) -> list[tuple[Path, bool]]:
        return [(self.builtin_dir, True), (self.user_dir, False)]

    def _files(self, folder: Path) -> dict[str, Path]:
        if not folder.is_dir():
            return {}
        found: dict[str, Path] = {}
        for path in sorted(folder.iterdir()):
            if path.suffix in (".yaml", ".yml") and path.is_file():
                found.setdefault(path.stem, path)
        return found

    def entries(self) -> list[ProfileEntry]:
        builtin = self._files(self.builtin_dir)
        user = self._files(self.user_dir)
        result = [ProfileEntry(n, p, True) for n, p in builtin.items() if n not in user]
        result += [ProfileEntry(n, p, False, n in builtin) for n, p in user.items()]
        return sorted(result, key=lambda entry: entry.name)

    def names(self) -> list[str]:
        return [entry.name for entry in self.entries()]

    def find(self, name: str, *, below: Path | None = None) -> Path:
        """The file for `name`; with `below`, the one in a lower layer than that file."""
        candidates: list[Path] = []
        for folder, _ in self._layers():
            path = self._files(folder).get(name)
            if path is not None:
                candidates.append(path)
        if below is not None:
            resolved = below.resolve()
            lower = [p for p in candidates if p.resolve() != resolved]
            index = next(
                (i for i, p in enumerate(candidates) if p.resolve() == resolved), len(candidates)
            )
            candidates = [p for p in candidates[:index] if p in lower]
        if not candidates:
            known = ", ".join(self.names()) or "none"
            raise NotFoundError(
                f"no profile named {name!r}{_did_you_mean(name, self.names())} (known: {known})"
            )
        return candidates[-1]

    def load(self, name_or_path: str) -> Profile:
        """Load a profile by name, or from a file when given a path ending in .yaml/.yml."""
        if name_or_path.endswith((".yaml", ".yml")) or os.sep in name_or_path:
            return self.load_file(Path(name_or_path))
        return self.load_file(self.find(name_or_path))

    def load_file(self, path: Path) -> Profile:
        raw = read_profile_file(path)
        parents: list[_RawProfile] = []
        seen = [raw.name]
        current = raw
        current_path = path
        while current.extends is not None:
            parent_name, line = current.extends
            below = current_path if parent_name == current.name else None
            if parent_name in seen and below is None:
                cycle = " -> ".join([*seen, parent_name])
                raise ConfigError(
                    f"`extends` makes a cycle: {cycle}", source=current.located.source, line=line
                )
            try:
                parent_path = self.find(parent_name, below=below)
            except NotFoundError as exc:
                raise ConfigError(
                    f"extends: {exc.message}", source=current.located.source, line=line
                ) from None
            parent = read_profile_file(parent_path)
            parents.insert(0, parent)
            seen.append(parent_name)
            current, current_path = parent, parent_path
            if len(parents) > 16:
                raise ConfigError("`extends` chain is deeper than 16", source=str(path))
        return build_profile(raw, parents)
