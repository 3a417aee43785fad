"""Building a real `Scheduler` over the effects fake, with a clock the test moves."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import yaml

from aitherctl.profiles.loader import load_profile_text
from aitherctl.profiles.profile import Profile
from aitherctl.routing.table import build_routing
from aitherctl.serve.model import Pool
from aitherctl.serve.scheduler import Scheduler
from tests.serve.unit.fake_effects import FakeEffects

MIB = 1024**2
GIB = 1024**3
# A clock far from zero, like time.monotonic() on a machine up for three hours.
BOOTED_S = 10_800.0


class Clock:
    def __init__(self, now: float = BOOTED_S) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def llama(port: int, **extra: Any) -> dict[str, Any]:
    """A llama.cpp service (evicted by stopping its container) in the host-RAM pool."""
    return {
        "engine": "llamacpp",
        "image": "llama",
        "model": "/m/x.gguf",
        "port": port,
        "gpu": "none",
        "ram": "400MiB",
        "on_demand": True,
        **extra,
    }


def vllm_sleeping(port: int, **extra: Any) -> dict[str, Any]:
    """A vLLM service started with sleep mode (evicted by `POST /sleep`)."""
    return {
        "engine": "vllm",
        "image": "vllm",
        "model": "m",
        "port": port,
        "gpu": "none",
        "ram": "400MiB",
        "on_demand": True,
        "args": ["--enable-sleep-mode"],
        "env": {"VLLM_SERVER_DEV_MODE": "1"},
        **extra,
    }


def profile(services: dict[str, dict[str, Any]], name: str = "p") -> Profile:
    return load_profile_text(yaml.safe_dump({"name": name, "services": services}), f"{name}.yaml")


def ram_pools(capacity_mib: int = 1000) -> dict[str, Pool]:
    return {"ram": Pool.sized("ram", capacity_mib * MIB)}


def scheduler(
    prof: Profile,
    effects: FakeEffects,
    clock: Clock,
    pools: dict[str, Pool] | None = None,
) -> Scheduler:
    return Scheduler(
        prof,
        build_routing(prof),
        effects,
        pools or ram_pools(),
        clock=clock,
        running=set(effects.running),
    )


def run(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on its own event loop, with a bound so a wedged scheduler fails the
    test instead of hanging it."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), timeout=5))

    return wrapper


async def settle() -> None:
    """Let every ready task run until none is left (no clock involved)."""
    for _ in range(50):
        await asyncio.sleep(0)
