"""The routing table: effort ranges to tiers, tiers to ordered candidates, and why one is skipped.

Read from a profile's `routing:` and `endpoints:` sections (kept raw by the loader, `extends`
already merged):

    routing:
      classifier: heuristic        # or `model`: the smallest local model grades the effort
      health_memory_s: 30          # how long a failed probe makes later runs skip a backend
      max_tokens: 1024             # sent when the command gives none (bounds the budget check)
      tiers:
        reflex:       {effort: 1-3, candidates: [reflex, orchestrator]}
        orchestrator: {effort: 4-6, candidates: [orchestrator], max_queue: 4}
        frontier:     {effort: 9-10, candidates: [{endpoint: deepseek}, {endpoint: openai}]}
    endpoints:
      deepseek: {base_url: "https://api.deepseek.com/v1", model: deepseek-chat,
                 api_key_env: DEEPSEEK_API_KEY, price: {input: 0.27, output: 1.10}}

A bare candidate name means the profile's service of that name, else the endpoint. Everything
here is pure: what is running, healthy, queued or affordable comes in as plain values.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aitherctl.engines.facts import health_paths, queue_metrics
from aitherctl.errors import ConfigError, NotFoundError
from aitherctl.profiles.problems import ConfigProblems
from aitherctl.profiles.profile import Engine, Node, NodeMode, Profile, Service
from aitherctl.profiles.profile import is_loopback as is_loopback_host
from aitherctl.routing.cost import Price, parse_budget, parse_price

if TYPE_CHECKING:
    from aitherctl.yamlsrc import Located

YPath = tuple[str | int, ...]
# Where a path of the profile's YAML was written: (file, line or None).
Locate = Callable[[YPath], tuple[str, int | None]]

# The articles' table: the built-in profiles' tiers and a profile without `routing:` use it.
DEFAULT_TIER_EFFORTS: tuple[tuple[str, tuple[int, int]], ...] = (
    ("reflex", (1, 3)),
    ("orchestrator", (4, 6)),
    ("reasoning", (7, 8)),
    ("frontier", (9, 10)),
)
DEFAULT_HEALTH_MEMORY_S = 30.0
DEFAULT_MAX_TOKENS = 1024
DEFAULT_FIRST_TOKEN_TIMEOUT_S = 60.0
DEFAULT_CONNECT_TIMEOUT_S = 2.0
CHAT_ENGINES = (Engine.VLLM, Engine.LLAMACPP, Engine.OLLAMA, Engine.GENERIC)
ENDPOINT_ENGINES = ("openai", "ollama", "llamacpp", "vllm")
ROUTING_KEYS = {"classifier", "health_memory_s", "max_tokens", "tiers"}
TIER_KEYS = {"effort", "candidates", "max_queue", "timeout_s"}
ENDPOINT_KEYS = {
    "base_url",
    "model",
    "api_key_env",
    "price",
    "engine",
    "local",
    "health",
    "timeout_s",
    "max_tokens_field",
    "temperature",
}
MAX_TOKENS_FIELDS = ("max_tokens", "max_completion_tokens")
# OpenAI's reasoning families (gpt-5*, o1/o3/o4*) answer 400 to `max_tokens` ("Unsupported
# parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens'
# instead.") and to any temperature but 1 ("Unsupported value: 'temperature' does not support
# 0.7 with this model. Only the default (1) value is supported."): OpenAI API reference, Create
# chat completion (`max_tokens` deprecated, "not compatible with o-series models"), and the
# error bodies quoted in e.g. teilomillet/gollm#33, griptape-ai/ComfyUI-Griptape#312,
# tmc/langchaingo#1355. Such a model gets `max_completion_tokens` and no temperature unless the
# endpoint says otherwise.
_REASONING_MODEL = re.compile(r"^(gpt-5|o[134])([.\-].*)?$")
# Per engine, the Prometheus gauge of requests waiting for a slot and the GET that says a server
# can take requests: aitherctl.engines.facts, which each engine's driver reads too.
QUEUE_METRICS: dict[str, str] = queue_metrics()
_HEALTH_PATHS: dict[str, str] = health_paths()
# Stands in for a broken endpoint while the tiers that name it are checked.
_STAND_IN = {"base_url": "https://stand-in.invalid/v1", "model": "stand-in"}
_EFFORT_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+))?\s*$")


def tier_for_effort_default(effort: int) -> str:
    """The articles' table: 1-3 reflex, 4-6 orchestrator, 7-8 reasoning, 9-10 frontier."""
    for name, (low, high) in DEFAULT_TIER_EFFORTS:
        if low <= effort <= high:
            return name
    return DEFAULT_TIER_EFFORTS[-1][0] if effort > 10 else DEFAULT_TIER_EFFORTS[0][0]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One backend a tier may send to: a service of the profile or a declared endpoint."""

    name: str
    origin: str  # "service", "endpoint" or "node" (a rented GPU of `nodes:`)
    engine: str  # vllm, llamacpp, ollama, generic, openai
    base_url: str  # the OpenAI-compatible root, ending in /v1
    model: str  # the name sent as `model`
    local: bool  # True when the request never leaves the machine (loopback only)
    price: Price | None = None
    api_key_env: str | None = None  # the variable's name; its value is read only when sending
    on_demand: bool = False
    health_url: str | None = None
    metrics_url: str | None = None
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    max_tokens_field: str = "max_tokens"  # or max_completion_tokens (OpenAI reasoning models)
    # "pass": send the run's temperature when it has one; "omit": never send one; a number:
    # always send that value.
    temperature: str | float = "pass"
    # A service on one of the profile's own hosts: its key may go over plain http on the
    # network the user put it on (engines serve no TLS; README "Several hosts" says the cost).
    key_over_http: bool = False
    # The key itself, for a backend whose key aitherctl made (a rented node's, from its record
    # on this machine): never shown, never compared.
    api_key: str | None = field(default=None, repr=False, compare=False)

    @property
    def queue_metric(self) -> str | None:
        return QUEUE_METRICS.get(self.engine) if self.metrics_url else None


@dataclass(frozen=True, slots=True)
class Tier:
    """A routing tier: the efforts it takes (`effort_min` to `effort_max`), its candidates in the
    order tried, the queue above which a candidate is skipped, and the read timeout."""

    name: str
    effort_min: int
    effort_max: int
    candidates: tuple[Candidate, ...]
    max_queue: float | None = None  # skip a candidate whose waiting queue is above this
    timeout_s: float = DEFAULT_FIRST_TOKEN_TIMEOUT_S  # per read, so also to the first token


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """A profile's routing: its tiers, every backend by name (its services and endpoints), how
    effort is scored, how long a failure is remembered, and the default output limit."""

    profile: str
    tiers: tuple[Tier, ...]
    backends: Mapping[str, Candidate]
    classifier: str = "heuristic"
    health_memory_s: float = DEFAULT_HEALTH_MEMORY_S
    default_max_tokens: int = DEFAULT_MAX_TOKENS

    def tier_for(self, effort: int) -> Tier:
        for tier in self.tiers:
            if tier.effort_min <= effort <= tier.effort_max:
                return tier
        raise NotFoundError(f"profile {self.profile!r}: no tier covers effort {effort}")

    def tier(self, name: str) -> Tier:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        known = ", ".join(t.name for t in self.tiers)
        raise NotFoundError(f"profile {self.profile!r} has no tier {name!r} (it has: {known})")

    def backend(self, name: str) -> Candidate:
        try:
            return self.backends[name]
        except KeyError:
            known = ", ".join(sorted(self.backends)) or "none"
            raise NotFoundError(
                f"profile {self.profile!r} has no backend {name!r} (services and endpoints: "
                f"{known})"
            ) from None


# ---------------------------------------------------------------------------------------------
# Where this machine ends


def _client_host(bind: str) -> str:
    return "127.0.0.1" if bind in ("", "0.0.0.0", "::", "[::]") else bind


def loopback_key(host: str, port: int) -> str:
    """`host:port` with every spelling of this machine (and a wildcard bind) made one."""
    name = host.strip().strip("[]").lower()
    if name in ("", "0.0.0.0", "::") or is_loopback_host(name):
        name = "loopback"
    return f"{name}:{port}"


def model_defaults(model: str) -> tuple[str, str | float]:
    """(max_tokens field, temperature rule) an OpenAI-style endpoint needs for `model`."""
    if _REASONING_MODEL.match(model.rsplit("/", 1)[-1].lower()):
        return "max_completion_tokens", "omit"
    return "max_tokens", "pass"


# ---------------------------------------------------------------------------------------------
# Building the table


def _unlocated(source: str) -> Locate:
    return lambda _path: (source, None)


def located_in(layers: Sequence[Located], fallback: str) -> Locate:
    """Find a routing/endpoints/budget path in the file that supplied it.

    `layers` is the `extends` chain, root first. `routing` and `budget` come whole from the
    nearest file that has them; `endpoints` merge by name, so each endpoint is found in the
    nearest file that declares it.
    """

    def locate(path: YPath) -> tuple[str, int | None]:
        section = path[0] if path else None
        for layer in reversed(layers):
            data = layer.data
            if not isinstance(data, dict) or data.get(section) is None:
                continue
            if section == "endpoints" and len(path) > 1:
                block = data[section]
                if not isinstance(block, dict) or path[1] not in block:
                    continue
            return layer.source, layer.line(path)
        return fallback, None

    return locate


class _Failer:
    """Builds ConfigErrors that name the file and line of a YAML path."""

    def __init__(self, locate: Locate) -> None:
        self.locate = locate

    def __call__(self, message: str, path: YPath) -> ConfigError:
        source, line = self.locate(path)
        return ConfigError(message, source=source, line=line)


def service_candidate(service: Service) -> Candidate:
    """`http://BIND:PORT/v1` (loopback for a wildcard bind), health and metrics per engine."""
    root = f"http://{service.reach or _client_host(service.bind)}:{service.port}"
    engine = str(service.engine)
    health = service.health.path or _HEALTH_PATHS.get(engine, "/v1/models")
    metrics = root + "/metrics" if engine in QUEUE_METRICS else None
    return Candidate(
        name=service.name,
        origin="service",
        engine=engine,
        base_url=root + "/v1",
        model=service.model_name,
        # A service of the profile, on this machine or another host of it: ours, not a cloud.
        local=True,
        api_key_env=service.api_key_env,
        key_over_http=service.reach is not None,
        on_demand=service.on_demand,
        health_url=root + health,
        metrics_url=metrics,
    )


def node_candidate(node: Node) -> Candidate:
    """A rented node: its address is known only once an instance of it runs, so until then it
    is a candidate with no URL, which the router skips ("no running instance")."""
    return Candidate(
        name=node.name,
        origin="node",
        engine=str(node.engine),
        base_url="",
        model=node.model_name,
        local=False,  # the request leaves the machine for the marketplace's host
        on_demand=node.mode is NodeMode.ON_DEMAND,
    )


def node_at(candidate: Candidate, url: str | None, key: str | None) -> Candidate:
    """A node's candidate sent to its instance's engine at `url` (its root) with the key it
    requires; `url` None: no instance runs, the candidate has no address (skipped)."""
    if url is None:
        return replace(candidate, base_url="", health_url=None, api_key=None)
    root = url.rstrip("/")
    return replace(
        candidate,
        base_url=root + "/v1",
        health_url=root + _HEALTH_PATHS.get(candidate.engine, "/v1/models"),
        api_key=key,
        key_over_http=True,
    )


def with_node_addresses(
    table: RoutingTable, addresses: Mapping[str, tuple[str, str | None]]
) -> RoutingTable:
    """`table` with each rented node that runs (`addresses`: node -> (its engine's root URL,
    the key it requires)) as a candidate with that address, in every tier that names it. Its
    key goes over plain http, as the README says of nodes (engines serve no TLS)."""
    changed: dict[str, Candidate] = {}
    for name, (url, key) in addresses.items():
        candidate = table.backends.get(name)
        if candidate is None or candidate.origin != "node":
            continue
        changed[name] = node_at(candidate, url, key)
    if not changed:
        return table
    tiers = tuple(
        replace(tier, candidates=tuple(changed.get(c.name, c) for c in tier.candidates))
        for tier in table.tiers
    )
    return replace(table, tiers=tiers, backends={**table.backends, **changed})


def _check_url(value: Any) -> str | None:
    """Why `value` is not a usable http(s) URL, or None."""
    if not isinstance(value, str) or not value.strip():
        return "base_url must be an http:// or https:// URL"
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https"):
        return f"base_url {value!r} must start with http:// or https://"
    if not parts.hostname:
        return f"base_url {value!r} has no host"
    try:
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        return f"base_url {value!r} has an invalid port"
    if parts.query or parts.fragment:
        return f"base_url {value!r} must not carry a query or fragment"
    return None


def endpoint_candidate(
    name: str, spec: Any, source: str, locate: Locate | None = None
) -> Candidate:
    failer = _Failer(locate or _unlocated(source))
    where: YPath = ("endpoints", name)

    def fail(message: str, key: str | None = None) -> ConfigError:
        return failer(f"endpoints.{name}: {message}", (*where, key) if key else where)

    if not isinstance(spec, dict):
        raise fail("must be a mapping with base_url and model")
    unknown = sorted(set(spec) - ENDPOINT_KEYS)
    if unknown:
        known = ", ".join(sorted(ENDPOINT_KEYS))
        raise fail(f"unknown keys {unknown} (known: {known})", unknown[0])
    problem = _check_url(spec.get("base_url"))
    if problem:
        raise fail(problem, "base_url")
    base_url = str(spec["base_url"]).strip()
    model = spec.get("model")
    if not isinstance(model, str) or not model:
        raise fail("model must be the model name the server expects", "model")
    engine = spec.get("engine", "openai")
    if engine not in ENDPOINT_ENGINES:
        raise fail(f"engine must be one of {', '.join(ENDPOINT_ENGINES)}", "engine")
    base_url = base_url.rstrip("/")
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    root = f"{parts.scheme}://{parts.netloc}"
    if engine == "ollama" and not base_url.endswith("/v1"):
        base_url += "/v1"  # Ollama's OpenAI-compatible API lives under /v1
    key_env = spec.get("api_key_env")
    if key_env is not None and (not isinstance(key_env, str) or not re.match(r"^\w+$", key_env)):
        raise fail(
            "api_key_env must be the NAME of an environment variable (not the key)", "api_key_env"
        )
    loopback = is_loopback_host(host)
    if key_env and parts.scheme == "http" and not loopback:
        raise fail(
            f"an API key would travel unencrypted to {host} over plain http://; use https:// "
            "(or a loopback address for a local server)",
            "base_url",
        )
    price = None
    if "price" in spec:
        try:
            price = parse_price(spec["price"])
        except ValueError as exc:
            raise fail(str(exc), "price") from None
    local = spec.get("local", loopback)
    if not isinstance(local, bool):
        raise fail("local must be true or false", "local")
    if local and not loopback:
        raise fail(
            f"local: true, but {host} is not this machine (only localhost, 127.0.0.0/8 and ::1 "
            "are local; --local-only never sends a prompt elsewhere)",
            "local",
        )
    health = spec.get("health")
    if health is not None and (not isinstance(health, str) or not health.startswith("/")):
        raise fail("health must be a path on the server, like /health", "health")
    timeout = spec.get("timeout_s", DEFAULT_CONNECT_TIMEOUT_S if local else 5.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise fail("timeout_s must be a number of seconds > 0", "timeout_s")
    field_default, temperature_default = (
        model_defaults(model) if engine == "openai" else ("max_tokens", "pass")
    )
    max_tokens_field = spec.get("max_tokens_field", field_default)
    if max_tokens_field not in MAX_TOKENS_FIELDS:
        raise fail(
            f"max_tokens_field must be one of {', '.join(MAX_TOKENS_FIELDS)}", "max_tokens_field"
        )
    temperature: Any = spec.get("temperature", temperature_default)
    if isinstance(temperature, bool) or not (
        temperature in ("pass", "omit")
        or (isinstance(temperature, int | float) and 0 <= temperature <= 2)
    ):
        raise fail("temperature must be pass, omit or a number from 0 to 2", "temperature")
    return Candidate(
        name=name,
        origin="endpoint",
        engine=engine,
        base_url=base_url,
        model=model,
        local=local,
        price=price,
        api_key_env=key_env,
        health_url=root + health if health else None,
        metrics_url=root + "/metrics" if engine in QUEUE_METRICS and local else None,
        connect_timeout_s=float(timeout),
        max_tokens_field=max_tokens_field,
        temperature=temperature if isinstance(temperature, str) else float(temperature),
    )


def _parse_effort(value: Any, where: str, path: YPath, fail: _Failer) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        low = high = value
    elif isinstance(value, str) and (match := _EFFORT_RANGE.match(value)):
        low = int(match.group(1))
        high = int(match.group(2) or low)
    elif (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        low, high = value
    else:
        raise fail(f"{where}.effort must be a range like 4-6 (or [4, 6])", path)
    if not 1 <= low <= high <= 10:
        raise fail(f"{where}.effort {low}-{high} must lie within 1-10, low to high", path)
    return low, high


def _default_tiers(profile: Profile, backends: Mapping[str, Candidate]) -> list[Tier]:
    """No `routing:` section: the articles' tiers, each trying the service whose `role` (or name)
    is the tier's name first, then every other chat service in declaration order."""
    chat = [name for name, svc in profile.services.items() if svc.engine in CHAT_ENGINES]
    tiers = []
    for tier_name, (low, high) in DEFAULT_TIER_EFFORTS:
        first = [n for n in chat if profile.services[n].role == tier_name or n == tier_name]
        ordered = first + [n for n in chat if n not in first]
        tiers.append(Tier(tier_name, low, high, tuple(backends[n] for n in ordered)))
    return tiers


def build_routing(profile: Profile, locate: Locate | None = None) -> RoutingTable:
    """The profile's routing table; a mistake raises ConfigError naming the file (and, given
    `locate`, the line)."""
    fail = _Failer(locate or _unlocated(profile.source))

    backends: dict[str, Candidate] = {}
    for name, svc in profile.services.items():
        if svc.engine in CHAT_ENGINES:
            backends[name] = service_candidate(svc)
    endpoints = profile.endpoints or {}
    if not isinstance(endpoints, dict):
        raise fail("`endpoints` must be a mapping from name to settings", ("endpoints",))
    for name, spec in endpoints.items():
        if name in backends:
            raise fail(
                f"endpoints.{name}: a service has the same name; rename one of them",
                ("endpoints", name),
            )
        backends[name] = endpoint_candidate(str(name), spec, profile.source, fail.locate)
    for name, node in profile.nodes.items():
        if node.engine not in CHAT_ENGINES:
            continue
        if name in backends:
            raise fail(
                f"nodes.{name}: a service or endpoint has the same name; rename one of them",
                ("nodes", name),
            )
        backends[name] = node_candidate(node)

    section = profile.routing or {}
    if not isinstance(section, dict):
        raise fail("`routing` must be a mapping (routing: {tiers: ...})", ("routing",))
    unknown = sorted(set(section) - ROUTING_KEYS)
    if unknown:
        known = ", ".join(sorted(ROUTING_KEYS))
        raise fail(f"routing: unknown keys {unknown} (known: {known})", ("routing", unknown[0]))
    classifier = section.get("classifier", "heuristic")
    if classifier not in ("heuristic", "model"):
        raise fail("routing.classifier must be `heuristic` or `model`", ("routing", "classifier"))
    memory = section.get("health_memory_s", DEFAULT_HEALTH_MEMORY_S)
    if isinstance(memory, bool) or not isinstance(memory, int | float) or memory < 0:
        raise fail(
            "routing.health_memory_s must be a number of seconds >= 0",
            ("routing", "health_memory_s"),
        )
    max_tokens = section.get("max_tokens", DEFAULT_MAX_TOKENS)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise fail("routing.max_tokens must be a whole number >= 1", ("routing", "max_tokens"))

    raw_tiers = section.get("tiers")
    if raw_tiers is None:
        tiers = _default_tiers(profile, backends)
    else:
        tiers = _parse_tiers(raw_tiers, profile, backends, fail)
    return RoutingTable(
        profile=profile.name,
        tiers=tuple(tiers),
        backends=backends,
        classifier=classifier,
        health_memory_s=float(memory),
        default_max_tokens=max_tokens,
    )


def check_routing_sections(profile: Profile, layers: Sequence[Located]) -> None:
    """Load-time check of `routing:`, `endpoints:` and `budget:` with file:line, so `profile
    validate` and `doctor` find what `run` would trip over. `layers`: the `extends` chain's
    parsed files, root first. Every endpoint and the budget are checked on their own; the tiers
    once the endpoints they name are sound. Several mistakes raise ConfigProblems."""
    locate = located_in(layers, profile.source)
    problems: list[ConfigError] = []
    endpoints = profile.endpoints or {}
    sound = profile
    if isinstance(endpoints, dict):
        stand_ins = {}
        for name, spec in endpoints.items():
            try:
                endpoint_candidate(str(name), spec, profile.source, locate)
            except ConfigError as exc:
                problems.append(exc)
                stand_ins[name] = _STAND_IN  # so the tiers naming it are still checked
        if stand_ins:
            sound = dataclasses.replace(profile, endpoints={**endpoints, **stand_ins})
    try:
        build_routing(sound, locate)
    except ConfigError as exc:
        problems.append(exc)
    budget_problem = _budget_problem(profile.budget, locate)
    if budget_problem is not None:
        problems.append(budget_problem)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise ConfigProblems(problems)


def _budget_problem(budget: Any, locate: Locate) -> ConfigError | None:
    budget = budget or {}
    if not isinstance(budget, dict):
        source, line = locate(("budget",))
        return ConfigError(
            "`budget` must be a mapping (budget: {daily_usd: 5})", source=source, line=line
        )
    try:
        parse_budget(budget)
    except ValueError as exc:
        unknown = sorted(set(budget) - {"daily_usd", "warn_at"})
        if unknown:
            key = unknown[0]
        else:
            key = "warn_at" if str(exc).startswith("budget.warn_at") else "daily_usd"
        path: YPath = ("budget", key) if key in budget else ("budget",)
        source, line = locate(path)
        return ConfigError(str(exc), source=source, line=line)
    return None


def _parse_tiers(
    raw: Any, profile: Profile, backends: Mapping[str, Candidate], fail: _Failer
) -> list[Tier]:
    if not isinstance(raw, dict) or not raw:
        raise fail(
            "routing.tiers must map tier names to {effort, candidates}", ("routing", "tiers")
        )
    tiers: list[Tier] = []
    covered: dict[int, str] = {}
    for name, spec in raw.items():
        where = f"routing.tiers.{name}"
        path: YPath = ("routing", "tiers", name)
        if not isinstance(spec, dict):
            raise fail(f"{where} must be a mapping with effort and candidates", path)
        unknown = sorted(set(spec) - TIER_KEYS)
        if unknown:
            known = ", ".join(sorted(TIER_KEYS))
            raise fail(f"{where}: unknown keys {unknown} (known: {known})", (*path, unknown[0]))
        low, high = _parse_effort(spec.get("effort"), where, (*path, "effort"), fail)
        for effort in range(low, high + 1):
            if effort in covered:
                raise fail(
                    f"{where}: effort {effort} is already in tier {covered[effort]!r}",
                    (*path, "effort"),
                )
            covered[effort] = str(name)
        raw_candidates = spec.get("candidates")
        if not isinstance(raw_candidates, list) or not raw_candidates:
            raise fail(f"{where}.candidates must be a non-empty list", (*path, "candidates"))
        candidates = tuple(
            _resolve_candidate(
                item,
                f"{where}.candidates",
                (*path, "candidates", index),
                profile,
                backends,
                fail,
            )
            for index, item in enumerate(raw_candidates)
        )
        max_queue = spec.get("max_queue")
        if max_queue is not None and (
            isinstance(max_queue, bool) or not isinstance(max_queue, int | float) or max_queue < 0
        ):
            raise fail(
                f"{where}.max_queue must be a number of waiting requests >= 0", (*path, "max_queue")
            )
        timeout = spec.get("timeout_s", DEFAULT_FIRST_TOKEN_TIMEOUT_S)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise fail(f"{where}.timeout_s must be a number of seconds > 0", (*path, "timeout_s"))
        tiers.append(
            Tier(
                name=str(name),
                effort_min=low,
                effort_max=high,
                candidates=candidates,
                max_queue=None if max_queue is None else float(max_queue),
                timeout_s=float(timeout),
            )
        )
    missing = [e for e in range(1, 11) if e not in covered]
    if missing:
        raise fail(
            f"routing.tiers: no tier covers effort {_ranges(missing)} (tiers must cover 1-10)",
            ("routing", "tiers"),
        )
    return sorted(tiers, key=lambda t: t.effort_min)


def _ranges(values: list[int]) -> str:
    """[1, 2, 3, 7] -> "1-3, 7"."""
    spans: list[list[int]] = []
    for value in values:
        if spans and value == spans[-1][1] + 1:
            spans[-1][1] = value
        else:
            spans.append([value, value])
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in spans)


def _resolve_candidate(  # noqa: PLR0917
    item: Any,
    where: str,
    path: YPath,
    profile: Profile,
    backends: Mapping[str, Candidate],
    fail: _Failer,
) -> Candidate:
    if isinstance(item, str):
        name = item
    elif isinstance(item, dict) and len(item) == 1:
        ((kind, name),) = item.items()
        if kind not in ("service", "endpoint", "node") or not isinstance(name, str):
            raise fail(f"{where}: write `service: NAME`, `endpoint: NAME` or `node: NAME`", path)
        if name in backends and backends[name].origin != kind:
            raise fail(f"{where}: {name!r} is not a {kind}", path)
    else:
        raise fail(
            f"{where}: each candidate is a name, `service: NAME`, `endpoint: NAME` or `node: NAME`",
            path,
        )
    if name in profile.services and name not in backends:
        engine = profile.services[name].engine
        raise fail(f"{where}: service {name!r} is a {engine} service, not a chat model", path)
    if name in profile.nodes and name not in backends:
        engine = profile.nodes[name].engine
        raise fail(f"{where}: node {name!r} is a {engine} node, not a chat model", path)
    if name not in backends:
        known = ", ".join(sorted(backends)) or "none"
        raise fail(f"{where}: no service, endpoint or node {name!r} (known: {known})", path)
    return backends[name]


# ---------------------------------------------------------------------------------------------
# Deciding which candidates to try


@dataclass(frozen=True, slots=True)
class RouteContext:
    """What the router knows before probing: plain values gathered by the caller.

    `running` is None when the container state is unknown (no Docker engine): services are then
    judged by their health probe alone.
    """

    running: frozenset[str] | None
    env_keys: frozenset[str]  # names of the environment variables that are set (never values)
    local_only: bool = False
    remembered_failures: Mapping[str, str] = field(default_factory=dict)  # backend -> why


def static_skip_reason(candidate: Candidate, ctx: RouteContext) -> str | None:
    """Why a candidate is skipped before any request is made, or None to go on to probing.

    The budget is checked separately (it needs the request's worst case and today's spend).
    """
    if (
        candidate.origin == "service"
        and ctx.running is not None
        and candidate.name not in ctx.running
    ):
        if candidate.on_demand:
            return (
                "on-demand service not running (run does not start it; start it first, "
                f"e.g. `aitherctl up {candidate.name}`)"
            )
        return "service not running in the active profile"
    if candidate.origin == "node" and not candidate.base_url:
        return "cloud node has no running instance"
    if ctx.local_only and not candidate.local:
        return "--local-only: endpoint leaves the machine"
    if candidate.api_key_env and candidate.api_key_env not in ctx.env_keys:
        return f"${candidate.api_key_env} is not set"
    remembered = ctx.remembered_failures.get(candidate.name)
    if remembered:
        return f"failed recently: {remembered}"
    return None


def queue_skip_reason(candidate: Candidate, waiting: float | None, tier: Tier) -> str | None:
    """Skip when the engine's waiting queue is above the tier's `max_queue` (load overflows)."""
    if tier.max_queue is None or waiting is None:
        return None
    if waiting > tier.max_queue:
        metric = candidate.queue_metric
        return f"queue {waiting:g} waiting > max_queue {tier.max_queue:g} ({metric})"
    return None
