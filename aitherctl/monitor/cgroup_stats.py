"""A container's CPU and memory use, read from its cgroup as `docker stats` reads it.

Memory: the cgroup's usage less its inactive page cache (v1 `memory.usage_in_bytes` less
`total_inactive_file` in `memory.stat`; v2 `memory.current` less `inactive_file`), which is
`docker stats`' MEM USAGE. CPU: the cgroup's cumulative CPU time (v1 `cpuacct.usage` in ns, v2
`cpu.stat` `usage_usec`); a percentage needs two readings, as `docker stats` takes two: 100%
is one core busy. Reading files takes microseconds where the Docker stats API answers after a
second; only a local engine's containers are there to read (None otherwise).

The first of the two readings may be the previous command's (`ReadingsFile`): a `ps` run a few
seconds after another, as `watch` or a script's loop runs it, reports the CPU use since that one
waiting only for what is left of the 0.2 s window since then (as `top` reports the use since
its last refresh).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class CgroupReading:
    """One reading of a container's cgroup: its memory as `docker stats` counts it, its CPU time
    so far, and when it was read."""

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
        self.latest: dict[str, CgroupReading] = {}  # the last reading of each container sampled

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
        self,
        container_ids: Sequence[str],
        window_s: float = 0.2,
        *,
        earlier: Mapping[str, CgroupReading] | None = None,
        max_age_s: float = 10.0,
    ) -> dict[str, tuple[float | None, int | None]]:
        """Each container's CPU % and its memory, from two readings `window_s` apart; or, when
        `earlier` holds a reading of each container taken at most `max_age_s` ago, from that one
        and one taken now, waiting only for what is left of `window_s` since it. `latest` keeps
        the last reading of each container (what the next command may start from)."""
        first = {cid: self.read(cid) for cid in container_ids}
        self.latest = {cid: reading for cid, reading in first.items() if reading is not None}
        if not self.latest:
            return {}
        earlier = earlier or {}
        prior = {
            cid: _stands_in(earlier.get(cid), now, max_age_s) for cid, now in self.latest.items()
        }
        if all(before is not None for before in prior.values()):
            youngest = min(
                self.latest[cid].at_s - before.at_s for cid, before in prior.items() if before
            )
            if youngest < window_s:  # a window of at least `window_s`, as without one
                time.sleep(window_s - youngest)
                for cid in list(self.latest):
                    self.latest[cid] = self.read(cid) or self.latest[cid]
            return {
                cid: (cpu_pct(before, self.latest[cid]), self.latest[cid].memory_bytes)
                for cid, before in prior.items()
                if before is not None
            }
        time.sleep(window_s)
        found: dict[str, tuple[float | None, int | None]] = {}
        for cid, before in first.items():
            after = self.read(cid)
            if before is None or after is None:
                continue
            self.latest[cid] = after
            found[cid] = (cpu_pct(before, after), after.memory_bytes)
        return found


def _stands_in(
    before: CgroupReading | None, now: CgroupReading, max_age_s: float
) -> CgroupReading | None:
    """`before` if it can be the first of two readings with `now`: recent enough to say the
    current use, and of the same cgroup (CPU time never goes back but starts again from zero
    when a container restarts)."""
    if before is None or before.cpu_ns is None or now.cpu_ns is None:
        return None
    if not 0 < now.at_s - before.at_s <= max_age_s or now.cpu_ns < before.cpu_ns:
        return None
    return before


class ReadingsFile:
    """The last readings, kept for the next command (`<state>/cache/cgroup-readings.json`):
    monotonic-clock times, valid within one boot of this machine (its boot id is kept)."""

    def __init__(self, path: str, boot_id_file: str = "/proc/sys/kernel/random/boot_id") -> None:
        self.path = path
        self._boot_id_file = boot_id_file

    def _boot(self) -> str:
        try:
            with open(self._boot_id_file, encoding="ascii") as handle:
                return handle.read().strip()
        except OSError:
            return ""

    def load(self) -> dict[str, CgroupReading]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                document = json.load(handle)
            if document.get("boot") != self._boot() or not document["boot"]:
                return {}
            return {
                str(cid): CgroupReading(None, int(cpu_ns), float(at_s))
                for cid, (cpu_ns, at_s) in document["readings"].items()
            }
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return {}

    def save(self, readings: Mapping[str, CgroupReading]) -> None:
        document = {
            "boot": self._boot(),
            "readings": {
                cid: [r.cpu_ns, r.at_s] for cid, r in readings.items() if r.cpu_ns is not None
            },
        }
        temporary = f"{self.path}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump(document, handle)
            os.replace(temporary, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temporary)


def cpu_pct(before: CgroupReading, after: CgroupReading) -> float | None:
    """CPU between two readings, in % of one core (as `docker stats` CPU %)."""
    if before.cpu_ns is None or after.cpu_ns is None or after.at_s <= before.at_s:
        return None
    return max(0.0, (after.cpu_ns - before.cpu_ns) / ((after.at_s - before.at_s) * 1e9) * 100)


__all__ = ["CgroupReading", "CgroupStats", "ReadingsFile", "cpu_pct"]
