"""Which container a host process belongs to, and the host's CPU and memory.

NVML reports the host PIDs of the processes holding GPU memory (`nvidia-smi
--query-compute-apps=pid,used_memory`). A container's GPU process is often not its first process:
vLLM's engine core is a child of the API server. Two ways to find the container, both reading
`/proc` (the root is injectable for tests):

1. `/proc/<pid>/cgroup` names the container's cgroup, which holds the 64-hex container id
   (`0::/system.slice/docker-<id>.scope` with systemd, `0::/docker/<id>` with cgroupfs). Children
   inherit their parent's cgroup, so this finds them too.
2. Failing that, the parent chain (`/proc/<pid>/stat`, field 4) is walked up to a container's
   init PID (`docker inspect -f {{.State.Pid}}`).

Host figures come from psutil, as `top` shows them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from aitherctl.monitor.model import HostView

_CONTAINER_ID = re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")
_MAX_ANCESTORS = 64


class ProcessTable:
    """Reads `/proc/<pid>/{cgroup,stat,comm}` under `proc_root`. Missing processes read as None."""

    def __init__(self, proc_root: Path | str = "/proc") -> None:
        self._root = Path(proc_root)

    def _read(self, pid: int, name: str) -> str | None:
        try:
            return (self._root / str(pid) / name).read_text(errors="replace")
        except OSError:  # gone, or not ours to read
            return None

    def cgroup_container_id(self, pid: int) -> str | None:
        """The 64-hex container id in the process's cgroup path, if it runs in a container."""
        text = self._read(pid, "cgroup")
        if not text:
            return None
        match = _CONTAINER_ID.search(text)
        return match.group(0) if match else None

    def parent_of(self, pid: int) -> int | None:
        text = self._read(pid, "stat")
        if not text:
            return None
        # The name (field 2) is in parentheses and may hold spaces or parentheses itself.
        fields = text[text.rfind(")") + 2 :].split()
        try:
            return int(fields[1])
        except (IndexError, ValueError):
            return None

    def name_of(self, pid: int) -> str | None:
        text = self._read(pid, "comm")
        return text.strip() if text else None

    def containers_of(
        self, pids: Iterable[int], init_pids: Mapping[str, int | None]
    ) -> dict[int, str]:
        """Host PID → full container id, for each PID that runs in a container.

        `init_pids` maps the known (managed) container ids, full or abbreviated, to their init
        PIDs; a PID in a container not listed there maps to the id found in its cgroup.
        """
        known = {cid: pid for cid, pid in init_pids.items() if cid}
        by_init = {pid: cid for cid, pid in known.items() if pid}
        result: dict[int, str] = {}
        for pid in pids:
            found = self.cgroup_container_id(pid)
            if found is not None:
                result[pid] = next((cid for cid in known if found.startswith(cid)), found)
                continue
            current: int | None = pid
            for _ in range(_MAX_ANCESTORS):
                if current is None or current <= 1:
                    break
                if current in by_init:
                    result[pid] = by_init[current]
                    break
                current = self.parent_of(current)
        return result


class HostReader:
    """Host CPU, RAM and swap through psutil (`cpu_percent` since the previous call)."""

    _MIN_SPAN_S = 0.1

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        psutil.cpu_percent(interval=None)  # the first call only starts the measurement
        self._last = time.monotonic()

    def read(self) -> HostView:
        psutil = self._psutil
        try:
            memory = psutil.virtual_memory()
            swap = psutil.swap_memory()
            # Over a span shorter than this the percentage is noise (a one-shot `status`).
            short = time.monotonic() - self._last < self._MIN_SPAN_S
            cpu = psutil.cpu_percent(interval=self._MIN_SPAN_S if short else None)
            self._last = time.monotonic()
            load = psutil.getloadavg()[0]
        except (OSError, RuntimeError):
            return HostView(None, None, None, None, None, None)
        return HostView(
            cpu_pct=cpu,
            cpu_count=psutil.cpu_count(),
            ram_used_bytes=memory.total - memory.available,
            ram_total_bytes=memory.total,
            swap_used_bytes=swap.used,
            swap_total_bytes=swap.total,
            load_1m=load,
        )
