"""A profile's `nodes:` (GPUs rented from a marketplace) and `cloud:` (the money they may
spend), checked key by key with file:line. Pure.

    nodes:
      reasoning:
        provider: vast                 # the only one so far
        gpu: RTX 3090                  # the GPU model as the marketplace names it
        vram: 24GiB                    # at least this much GPU memory (optional)
        max_price_per_hour: 0.20       # USD, the offer's whole hourly price (GPU and storage)
        engine: vllm                   # image, model, port, args, env: as for a service
        model: casperhansen/deepseek-r1-distill-qwen-14b-awq
        on_demand: true                # or always_on: true
        wake_on: {effort: 7, queue_depth: 3}
        idle_after: 15m                # then it is destroyed
    cloud:
      daily_cap: 5.00                  # USD a day, nodes and API spend together
      warn_at: 80%                     # an event and a log line at this share of the cap
      hard_stop: true                  # at the cap: no node is created, running ones destroyed

The image and the port default to the engine driver's (filled in by the loader, as for services).
"""

from __future__ import annotations

import re
import shlex
from typing import Any, TypeGuard

from aitherctl.errors import ConfigError
from aitherctl.profiles.problems import Problems, did_you_mean
from aitherctl.profiles.profile import CloudBudget, Engine, Node, NodeMode, WakeOn
from aitherctl.profiles.scheduling_terms import parse_duration
from aitherctl.profiles.schema import _NAME
from aitherctl.units import MemoryAmount
from aitherctl.yamlsrc import Located
from aitherctl.yamlsrc import Path as YPath

PROVIDERS = ("vast",)
NODE_KEYS = {
    "provider",
    "gpu",
    "vram",
    "num_gpus",
    "disk",
    "max_price_per_hour",
    "engine",
    "image",
    "model",
    "served_name",
    "port",
    "args",
    "env",
    "always_on",
    "on_demand",
    "wake_on",
    "idle_after",
    "role",
}
WAKE_KEYS = {"effort", "queue_depth"}
CLOUD_KEYS = {"daily_cap", "warn_at", "hard_stop"}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SHARE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def parse_nodes(doc: Located, value: Any, problems: Problems) -> dict[str, Node | None]:
    """Each node of `nodes:` (None for `name: null`, which removes a parent's node); a node
    with a mistake is reported to `problems` and left out."""
    if not isinstance(value, dict):
        raise doc.error("`nodes` must map a node name to its settings", ("nodes",))
    nodes: dict[str, Node | None] = {}
    for name, spec in value.items():
        before = len(problems.items)
        with problems.check():
            node = _parse_node(doc, name, spec, problems)
        if len(problems.items) == before:
            nodes[str(name)] = node
    return nodes


def _parse_node(doc: Located, name: Any, spec: Any, problems: Problems) -> Node | None:
    where: YPath = ("nodes", name)
    if not isinstance(name, str) or not _NAME.match(name):
        raise doc.error(
            f"node name {name!r} must be lower-case letters, digits, '-', '_' or '.'", where
        )
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise doc.error(f"node {name!r} must be a mapping of settings", where)

    def fail(key: str, message: str) -> ConfigError:
        return doc.error(f"node {name!r}: {key}: {message}", (*where, key))

    before = len(problems.items)
    fields: dict[str, Any] = {}
    for key, item in spec.items():
        with problems.check():
            if key not in NODE_KEYS:
                raise doc.error(
                    f"unknown key {key!r} in node {name!r}{did_you_mean(str(key), NODE_KEYS)}",
                    (*where, key),
                )
            fields[key] = _convert(doc, where, key, item, fail)
    for key, what in (
        ("provider", f"the marketplace ({', '.join(PROVIDERS)})"),
        ("gpu", "the GPU model wanted, e.g. RTX 3090"),
        ("max_price_per_hour", "the most it may cost, in USD an hour, e.g. 0.20"),
        ("engine", "one of: " + ", ".join(e.value for e in Engine)),
    ):
        if key not in spec:
            problems.items.append(doc.error(f"node {name!r}: missing `{key}` ({what})", where))
    with problems.check():
        if fields.get("always_on") and fields.get("on_demand"):
            raise doc.error(
                f"node {name!r}: `always_on` and `on_demand` are both true (choose one)", where
            )
    engine = fields.get("engine")
    with problems.check():
        if engine in (Engine.VLLM, Engine.LLAMACPP) and not fields.get("model"):
            raise doc.error(f"node {name!r}: engine {engine.value} needs a `model` to serve", where)
    with problems.check():
        if fields.get("always_on") and "idle_after" in fields:
            raise fail("idle_after", "an always_on node is never idle-destroyed (drop it)")
    if len(problems.items) > before:
        return None
    return Node(
        name=name,
        provider=fields["provider"],
        gpu=fields["gpu"],
        max_price_per_hour_usd=fields["max_price_per_hour"],
        engine=fields["engine"],
        image=fields.get("image", ""),  # "" : the engine driver's default (the loader)
        port=fields.get("port", 0),  # 0: the engine driver's default (the loader)
        vram=fields.get("vram"),
        num_gpus=fields.get("num_gpus", 1),
        disk_gb=fields.get("disk", 16.0),
        model=fields.get("model"),
        served_name=fields.get("served_name"),
        args=fields.get("args", ()),
        env=fields.get("env", ()),
        mode=NodeMode.ALWAYS_ON if fields.get("always_on") else NodeMode.ON_DEMAND,
        wake_on=fields.get("wake_on", WakeOn()),
        idle_after_s=fields.get("idle_after"),
        role=fields.get("role"),
        source=doc.source,
        line=doc.line(where),
    )


def _number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _convert(doc: Located, where: YPath, key: str, value: Any, fail: Any) -> Any:
    if key == "provider":
        if value not in PROVIDERS:
            raise fail(key, f"{value!r} is not a provider (use one of: {', '.join(PROVIDERS)})")
        return value
    if key == "engine":
        try:
            return Engine(value)
        except ValueError:
            choices = ", ".join(engine.value for engine in Engine)
            raise fail(key, f"{value!r} is not an engine (use one of: {choices})") from None
    if key in ("gpu", "image", "model", "served_name", "role"):
        if not isinstance(value, str) or not value.strip():
            raise fail(key, f"must be text, not {value!r}")
        return value.strip()
    if key == "vram":
        try:
            amount = MemoryAmount.parse(value)
        except ValueError as exc:
            raise fail(key, str(exc)) from None
        if amount.is_share:
            raise fail(key, "must be an amount (e.g. 24GiB): a share means nothing on a rented GPU")
        return amount
    if key == "max_price_per_hour":
        if not _number(value) or value <= 0:
            raise fail(key, f"must be a price in USD an hour above zero, e.g. 0.20, not {value!r}")
        return float(value)
    if key == "disk":
        if not _number(value) or value <= 0:
            raise fail(key, f"must be the disk to rent in GB above zero, e.g. 32, not {value!r}")
        return float(value)
    if key in ("num_gpus",):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise fail(key, f"must be a whole number of at least 1, not {value!r}")
        return value
    if key == "port":
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise fail(key, f"must be a port number from 1 to 65535, not {value!r}")
        return value
    if key in ("always_on", "on_demand"):
        if not isinstance(value, bool):
            raise fail(key, f"must be true or false, not {value!r}")
        return value
    if key == "idle_after":
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise fail(key, str(exc)) from None
    if key == "args":
        if isinstance(value, str):
            return tuple(shlex.split(value))
        if not isinstance(value, list) or not all(
            isinstance(item, (str, int, float)) and not isinstance(item, bool) for item in value
        ):
            raise fail(key, "must be a list of arguments, e.g. [--max-model-len, '8192']")
        return tuple(str(item) for item in value)
    if key == "env":
        if not isinstance(value, dict):
            raise fail(key, "must be a mapping of variable names to values")
        items = []
        for env_name, item in value.items():
            if not isinstance(env_name, str) or not _ENV_NAME.match(env_name):
                raise doc.error(
                    f"env: {env_name!r} is not a variable name", (*where, key, env_name)
                )
            if isinstance(item, (dict, list)) or item is None:
                raise doc.error(
                    f"env: {env_name} must be text or a number", (*where, key, env_name)
                )
            text = ("true" if item else "false") if isinstance(item, bool) else str(item)
            items.append((env_name, text))
        return tuple(items)
    if key == "wake_on":
        return _wake_on(doc, (*where, key), value)
    raise AssertionError(key)  # every key of NODE_KEYS is converted above


def _wake_on(doc: Located, where: YPath, value: Any) -> WakeOn:
    if not isinstance(value, dict):
        raise doc.error("wake_on must be a mapping (wake_on: {effort: 7, queue_depth: 3})", where)
    for key in value:
        if key not in WAKE_KEYS:
            raise doc.error(
                f"unknown key {key!r} in wake_on{did_you_mean(str(key), WAKE_KEYS)}",
                (*where, key),
            )
    effort = value.get("effort")
    if effort is not None and (
        isinstance(effort, bool) or not isinstance(effort, int) or not 1 <= effort <= 10
    ):
        raise doc.error(f"wake_on.effort must be an effort from 1 to 10, not {effort!r}", where)
    depth = value.get("queue_depth")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise doc.error(
            f"wake_on.queue_depth must be a number of waiting requests >= 1, not {depth!r}", where
        )
    return WakeOn(effort=effort, queue_depth=depth)


def parse_cloud(doc: Located, value: Any) -> CloudBudget:
    """`cloud: {daily_cap: 5.00, warn_at: 80%, hard_stop: true}`."""
    where: YPath = ("cloud",)
    if not isinstance(value, dict):
        raise doc.error("`cloud` must be a mapping (cloud: {daily_cap: 5.00})", where)
    for key in value:
        if key not in CLOUD_KEYS:
            raise doc.error(
                f"unknown key {key!r} in cloud{did_you_mean(str(key), CLOUD_KEYS)}", (*where, key)
            )
    cap = value.get("daily_cap")
    if not _number(cap) or cap <= 0:
        raise doc.error(
            f"cloud.daily_cap must be USD a day above zero, e.g. 5.00, not {cap!r}",
            (*where, "daily_cap") if "daily_cap" in value else where,
        )
    share = _share(value.get("warn_at", 0.8))
    if share is None:
        raise doc.error(
            f"cloud.warn_at must be a share of the cap, e.g. 80% or 0.8, not {value['warn_at']!r}",
            (*where, "warn_at"),
        )
    hard_stop = value.get("hard_stop", True)
    if not isinstance(hard_stop, bool):
        raise doc.error("cloud.hard_stop must be true or false", (*where, "hard_stop"))
    return CloudBudget(float(cap), share, hard_stop, doc.line(where))


def _share(value: Any) -> float | None:
    """`80%` or `0.8` → 0.8 (above 0, at most 1)."""
    share: float | None = None
    if _number(value):
        share = float(value)
    elif isinstance(value, str) and (match := _SHARE.match(value)):
        share = float(match.group(1)) / 100
    return share if share is not None and 0 < share <= 1 else None
