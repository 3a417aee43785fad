"""The real effects' own plumbing that needs no engine: loads run in their own threads, and a
load starts the profile `serve` holds."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aitherctl.errors import DockerUnavailableError
from aitherctl.serve.control import ServiceControl, _PinnedCatalog
from tests.serve.unit.scenario import llama, profile, run


def _no_engine() -> Any:
    raise DockerUnavailableError("no engine in this test")


class BlockedStarts(ServiceControl):
    """Every start waits (as one waiting for the engine lock would) until `go` is set."""

    def __init__(self) -> None:
        super().__init__(_no_engine, lambda: None, "p", None)  # type: ignore[arg-type]
        self.go = threading.Event()
        self.entered = threading.Semaphore(0)

    def start_blocking(self, service: str, cancel: threading.Event, report: Any = None) -> None:
        del service, cancel, report
        self.entered.release()
        self.go.wait()


@run
async def test_quick_work_never_queues_behind_loads() -> None:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(4))  # the ledger's and quick reads' pool
    control = BlockedStarts()
    service = profile({"chat": llama(1)}).services["chat"]
    loads = [asyncio.create_task(control.start(service, threading.Event())) for _ in range(8)]
    try:
        for _ in range(4):
            await asyncio.to_thread(control.entered.acquire)
        # Eight loads are waiting; a ledger write still runs at once.
        assert await asyncio.to_thread(lambda: "written") == "written"
    finally:
        control.go.set()  # never leave a thread blocked (the test would hang, not fail)
    await asyncio.gather(*loads)
    await control.close()


def test_a_load_starts_the_profile_served_not_the_file_as_edited_since() -> None:
    served = profile({"chat": llama(1)})
    edited = profile({"chat": llama(1, args=["--ctx-size", "4096"])})
    other = profile({"x": llama(2)}, "other")

    class Disk:
        def load(self, name: str) -> Any:
            return {"p": edited, "other": other}[name]

        def names(self) -> list[str]:
            return ["other", "p"]

    catalog = _PinnedCatalog(Disk(), served)
    assert catalog.load("p") is served
    assert catalog.load("other") is other
    assert catalog.names() == ["other", "p"]
