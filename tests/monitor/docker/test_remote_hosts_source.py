"""`RemoteHostsSource` (what status and the monitor read of other hosts) against a real Docker
engine standing in for another host (the test engine, reached by its own endpoint), with a
managed container that claims a GPU, and the nvidia-smi contract double read in a real
container there (no NVIDIA GPU can run here).

What a user relies on: the monitor's refresh never waits for a GPU reading (it shows the last
one, taken in the background at most every `gpu_every_s`); one-shot `status` waits for it; a
reading that blows up becomes that host's one-line GPU error; a host with no GPU service
running is not probed at all.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aitherctl.engines import container as c
from aitherctl.gpu.model import GpuInventory
from aitherctl.gpu.remote import read_inventory
from aitherctl.monitor.other_hosts import RemoteHostsSource
from aitherctl.profiles.profile import Host
from tests.conftest import sdk_of
from tests.doubles.images import BASE_IMAGE
from tests.doubles.nvidia_smi_image import nvidia_smi_image

pytestmark = pytest.mark.docker
__all__ = ["nvidia_smi_image"]  # fixture


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def gpu_container(docker_engine: Any, namespace: str) -> Iterator[str]:
    """A running managed container of this namespace that says it holds GPU 0."""
    labels = {
        c.LABEL_MANAGED: "true",
        c.LABEL_NAMESPACE: namespace,
        c.LABEL_SERVICE: "chat",
        c.LABEL_PROFILE: "two-boxes",
        c.LABEL_ENGINE: "vllm",
        c.LABEL_GPUS: "0",
        c.LABEL_PORT: "18000",
    }
    made = sdk_of(docker_engine).containers.run(
        BASE_IMAGE,
        ["sleep", "600"],
        labels=labels,
        detach=True,
        name=f"aither-{namespace}-chat-gpu",
    )
    yield made.id
    made.remove(force=True)


def source(
    reader: Callable[[Any, str], GpuInventory], clock: Clock, **kw: Any
) -> RemoteHostsSource:
    host = Host("box2", os.environ["DOCKER_HOST"], "127.0.0.1")
    return RemoteHostsSource(lambda: {"box2": host}, gpu_reader=reader, monotonic=clock, **kw)


def double_reader(image: str, calls: list[str]) -> Callable[[Any, str], GpuInventory]:
    def read(engine: Any, wanted_image: str) -> GpuInventory:
        calls.append(wanted_image)
        return read_inventory(engine.client, image, request_gpus=False)

    return read


def test_the_monitor_never_waits_and_reads_again_only_when_stale(
    gpu_container: str, nvidia_smi_image: str
) -> None:
    calls: list[str] = []
    clock = Clock()
    remote = source(double_reader(nvidia_smi_image, calls), clock, gpu_every_s=10.0)
    try:
        first = remote.read()[0]
        assert first.stack.error is None
        assert [item.service for item in first.stack.containers] == ["chat"]
        assert first.gpus is None  # started in the background, not waited for
        deadline = time.monotonic() + 60
        reading = first
        while reading.gpus is None:
            assert time.monotonic() < deadline, "the background GPU reading never arrived"
            time.sleep(0.2)
            reading = remote.read()[0]
        assert reading.gpus.error is None
        assert next(gpu.name for gpu in reading.gpus.gpus) == "NVIDIA H100 80GB HBM3"
        assert gpu_container in reading.pids  # docker top of the GPU container
        assert calls == [BASE_IMAGE]  # the GPU service's own image: nothing pulled

        clock.now += 5
        remote.read()
        assert len(calls) == 1  # still fresh
        clock.now += 6
        remote.read()
        deadline = time.monotonic() + 60
        while len(calls) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        remote.close()


def test_status_waits_for_the_reading_and_a_failing_reader_is_one_line(
    gpu_container: str, nvidia_smi_image: str
) -> None:
    del gpu_container
    calls: list[str] = []
    waited = source(double_reader(nvidia_smi_image, calls), Clock(), wait_for_gpus=True)
    try:
        reading = waited.read()[0]
        assert reading.gpus is not None
        assert reading.gpus.error is None
    finally:
        waited.close()

    def broken(engine: Any, image: str) -> GpuInventory:
        raise RuntimeError("probe exploded")

    failing = source(broken, Clock(), wait_for_gpus=True)
    try:
        reading = failing.read()[0]
        assert reading.gpus is not None
        assert reading.gpus.error == "GPU reading failed: probe exploded"
        assert reading.stack.error is None  # the containers still show
    finally:
        failing.close()


def test_no_gpu_service_there_means_no_probe(docker_engine: Any) -> None:
    del docker_engine
    calls: list[str] = []
    remote = source(double_reader("unused", calls), Clock(), wait_for_gpus=True)
    try:
        reading = remote.read()[0]
        assert reading.stack.error is None
        assert reading.gpus is None
        assert calls == []
    finally:
        remote.close()


def test_an_unreachable_host_is_its_reading_error() -> None:
    host = Host("gone", "unix:///nonexistent/docker.sock", "127.0.0.1")
    remote = RemoteHostsSource(lambda: {"gone": host}, wait_for_gpus=True)
    try:
        reading = remote.read()[0]
        assert reading.stack.error is not None
        assert reading.stack.error.startswith("host 'gone':")
        assert reading.gpus is None
    finally:
        remote.close()
