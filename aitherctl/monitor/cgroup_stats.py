"""A container's CPU and memory use, read from its cgroup as `docker stats` reads it.

Memory: the cgroup's usage less its inactive page cache (v1 `memory.usage_in_bytes` less
`total_inactive_file` in `memory.stat`; v2 `memory.current` less `inactive_file`), which is
`docker stats`' MEM USAGE. CPU: the cgroup's cumulative CPU time (v1 `cpuacct.usage` in ns, v2
`cpu.stat` `usage_usec`); a percentage needs two readings, as `docker stats` takes two: 100%
is one core busy. Reading files takes microseconds where the Docker stats API answers after a
second; only a local engine's containers are there to read (None otherwise).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class CgroupReading:
    memory_bytes: int | None  # usage less inactive file cache, as `docker stats`
    cpu_ns: int | None  # CPU time used since the container started
    at_s: float  # monotonic clock


def _places(container_id: str) -> tuple[str, ...]:
    # cgroupfs driver, then systemd driver (Docker's two ways to name a container's cgroup).
    return (f"docker/{container_id}", f"system.slice/docker-{container_id}.scope")


class CgroupStats:
    """Reads containers' cgroups under `root` (v1 controllers or the v2 unified tree)."""

    def __init__(
        self, root: Path | str = "/sys/fs/cgroup", clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._root = Path(root)
        self._clock = clock

    def _text(self, path: Path) -> str | None:
        try:
            return path.read_text()
        except OSError:
            return None

    @staticmethod
    def _stat(text: str | None, key: str) -> int | None:
        for line in (text or "").splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
        return None

    def read(self, container_id: str) -> CgroupReading | None:
        at = self._clock()
        for place in _places(container_id):
            v2 = self._root / place
            current = self._text(v2 / "memory.current")
            if current is not None and current.strip().isdigit():
                stat = self._text(v2 / "memory.stat")
                usage = int(current) - (self._stat(stat, "inactive_file") or 0)
                usec = self._stat(self._text(v2 / "cpu.stat"), "usage_usec")
                return CgroupReading(max(usage, 0), None if usec is None else usec * 1000, at)
            memory = self._root / "memory" / place
            used = self._text(memory / "memory.usage_in_bytes")
            if used is not None and used.strip().isdigit():
                stat = self._text(memory / "memory.stat")
                usage = int(used) - (self._stat(stat, "total_inactive_file") or 0)
                cpu = None
                for controller in ("cpuacct", "cpu,cpuacct"):
                    text = self._text(self._root / controller / place / "cpuacct.usage")
                    if text is not None and text.strip().isdigit():
                        cpu = int(text)
                        break
                return CgroupReading(max(usage, 0), cpu, at)
        return None

    def sample(
        self, container_ids: Sequence[str], window_s: float = 0.2
    ) -> dict[str, tuple[float | None, int | None]]:
        """Each container's CPU % over `window_s` and its memory, from two readings."""
        first = {cid: self.read(cid) for cid in container_ids}
        if not any(first.values()):
            return {}
        time.sleep(window_s)
        found: dict[str, tuple[float | None, int | None]] = {}
        for cid, before in first.items():
            after = self.read(cid)
            if before is None or after is None:
                continue
            found[cid] = (cpu_pct(before, after), after.memory_bytes)
        return found


def cpu_pct(before: CgroupReading, after: CgroupReading) -> float | None:
    """CPU between two readings, in % of one core (as `docker stats` CPU %)."""
    if before.cpu_ns is None or after.cpu_ns is None or after.at_s <= before.at_s:
        return None
    return max(0.0, (after.cpu_ns - before.cpu_ns) / ((after.at_s - before.at_s) * 1e9) * 100)


__all__ = ["CgroupReading", "CgroupStats", "cpu_pct"]
