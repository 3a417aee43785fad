"""Setting up `aitherctl serve`, and finding one that runs (so `aitherctl run` goes through it)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from aitherctl.paths import pid_alive as process_alive
from aitherctl.paths import state_dir, state_dir_text

# Not `typing.TYPE_CHECKING`: importing typing costs `run` through serve a few ms (mypy reads
# any name TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

    from aitherctl.gpu.model import GpuInventory
    from aitherctl.profiles.profile import Profile
    from aitherctl.serve.model import Pool

SERVE_STATE = "serve-{port}.json"


def serve_state_file(port: int) -> Path:
    """Where a running `aitherctl serve` writes its URL and PID (removed when it exits)."""
    return state_dir() / SERVE_STATE.format(port=port)


def find_gateway(
    pid_alive: Callable[[int], bool] | None = None, folder: str | None = None
) -> tuple[str, str] | None:
    """(URL, profile) of a running `aitherctl serve` of this user, or None. Files left by a
    killed one (their PID is gone) are ignored. (Plain `os`: `run` calls this on every start.)"""
    for url, profile, _pid in running_serves(pid_alive, folder):
        return url, profile
    return None


def running_serves(
    pid_alive: Callable[[int], bool] | None = None,
    folder: str | None = None,
    engine: str | None = None,
) -> list[tuple[str, str, int]]:
    """(URL, profile, PID) of each `aitherctl serve` of this user that runs, from the files
    they write in the state folder (`serve_state_file`); with `engine`, only those serving that
    Docker engine ($DOCKER_HOST as they saw it)."""
    alive = pid_alive or process_alive
    where = folder or state_dir_text()
    try:
        names = sorted(
            n for n in os.listdir(where) if n.startswith("serve-") and n.endswith(".json")
        )
    except OSError:
        return []
    found = []
    for name in names:
        try:
            with open(os.path.join(where, name), encoding="utf-8") as handle:
                data = json.load(handle)
            url, pid, profile = str(data["url"]), int(data["pid"]), str(data["profile"])
            other_engine = str(data.get("engine", ""))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if engine is not None and other_engine != engine:
            continue
        if pid != os.getpid() and alive(pid):
            found.append((url, profile, pid))
    return found


def refuse_second_serve(port: int | None, profile: str | None) -> None:
    """Raise BusyError when another `aitherctl serve` of this user runs for the same Docker
    engine ($DOCKER_HOST): two schedulers would fight over one machine's memory (each would
    evict the other's models). Allowed only when told explicitly to serve another profile on
    another port."""
    from aitherctl.errors import BusyError

    for url, other_profile, pid in running_serves(engine=os.environ.get("DOCKER_HOST", "")):
        other_port = url.rsplit(":", 1)[-1]
        if port is not None and str(port) != other_port and profile not in (None, other_profile):
            continue
        raise BusyError(
            f"`aitherctl serve` already runs here (profile {other_profile} on {url}, pid {pid}): "
            "two would fight over this machine's memory; stop it, or pass both --port and "
            "--profile to serve another profile beside it"
        )


def memory_pools(profile: Profile, inventory: GpuInventory, ram_total: int) -> dict[str, Pool]:
    """Each GPU (its total less the profile's `gpu.reserve`) and the host's RAM for CPU services
    (its total less `ram.reserve`, at most `ram.limit`)."""
    from aitherctl.serve.model import Pool

    pools = {}
    for gpu in inventory.gpus:
        total = gpu.memory_total_bytes
        name = f"gpu:{gpu.index}"
        pools[name] = Pool.sized(name, total, reserve=profile.gpu_reserve.resolve(total))
    reserve = profile.ram_reserve.resolve(ram_total) if profile.ram_reserve else 0
    limit = profile.ram_limit.resolve(ram_total) if profile.ram_limit else None
    pools["ram"] = Pool.sized("ram", ram_total, reserve=reserve, limit=limit)
    return pools
