"""CPU % from two cgroup readings, the first of which may be the previous command's
(monitor/cgroup_stats.py). A cgroup v2 tree written under tmp_path stands in for /sys/fs/cgroup
(the files and their format are the kernel's: `memory.current`, `memory.stat`, `cpu.stat`); the
real cgroups are read by tests/monitor/docker/test_cpu_usage.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from aitherctl.monitor import cgroup_stats
from aitherctl.monitor.cgroup_stats import CgroupReading, CgroupStats, ReadingsFile

CID = "c0ffee"


class Machine:
    """A container's cgroup whose CPU time grows at `busy` cores while the clock moves."""

    def __init__(self, root: Path, busy: float = 0.5) -> None:
        self.folder = root / "system.slice" / f"docker-{CID}.scope"
        self.folder.mkdir(parents=True)
        (self.folder / "memory.current").write_text("104857600\n")
        (self.folder / "memory.stat").write_text("anon 1\ninactive_file 4857600\n")
        self.now = 1000.0
        self.cpu_us = 5_000_000
        self.busy = busy
        self.sleeps: list[float] = []
        self._write()

    def _write(self) -> None:
        (self.folder / "cpu.stat").write_text(f"usage_usec {self.cpu_us}\nuser_usec 1\n")

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.cpu_us += int(seconds * self.busy * 1_000_000)
        self._write()

    def restart(self) -> None:
        self.cpu_us = 1000
        self._write()


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Machine:
    found = Machine(tmp_path / "cgroup")

    def sleep(seconds: float) -> None:
        found.sleeps.append(seconds)
        found.advance(seconds)

    monkeypatch.setattr(cgroup_stats.time, "sleep", sleep)
    return found


def stats(machine: Machine, tmp_path: Path) -> CgroupStats:
    return CgroupStats(tmp_path / "cgroup", clock=lambda: machine.now)


def test_without_an_earlier_reading_it_takes_two_readings_a_window_apart(
    machine: Machine, tmp_path: Path
) -> None:
    reader = stats(machine, tmp_path)
    assert reader.sample([CID]) == {CID: (pytest.approx(50.0), 100_000_000)}
    assert machine.sleeps == [0.2]
    assert reader.latest[CID].at_s == machine.now


def test_the_previous_commands_reading_stands_in_for_the_first(
    machine: Machine, tmp_path: Path
) -> None:
    first = stats(machine, tmp_path)
    first.sample([CID])
    machine.busy = 2.0  # two cores busy since then
    machine.advance(3.0)
    again = stats(machine, tmp_path)
    assert again.sample([CID], earlier=first.latest) == {CID: (pytest.approx(200.0), 100_000_000)}
    assert machine.sleeps == [0.2]  # only the first command waited


@pytest.mark.parametrize(
    ("age_s", "restarted"),
    [(30.0, False), (3.0, True)],
    ids=["too old to say the current use", "container restarted"],
)
def test_an_earlier_reading_that_cannot_stand_in_is_not_used(
    machine: Machine, tmp_path: Path, age_s: float, restarted: bool
) -> None:
    first = stats(machine, tmp_path)
    first.sample([CID])
    machine.advance(age_s)
    if restarted:
        machine.restart()
    machine.sleeps.clear()
    usage = stats(machine, tmp_path).sample([CID], earlier=first.latest)
    assert machine.sleeps == [0.2]
    assert usage == {CID: (pytest.approx(50.0), 100_000_000)}


def test_readings_are_kept_for_one_boot(tmp_path: Path) -> None:
    boot = tmp_path / "boot_id"
    boot.write_text("aaaa\n")
    kept = ReadingsFile(str(tmp_path / "cache" / "readings.json"), boot_id_file=str(boot))
    assert kept.load() == {}
    kept.save({CID: CgroupReading(123, 9_000_000, 42.5)})
    assert kept.load() == {CID: CgroupReading(None, 9_000_000, 42.5)}
    boot.write_text("bbbb\n")  # rebooted: monotonic times and CPU counters started again
    assert kept.load() == {}
    (tmp_path / "cache" / "readings.json").write_text("{not json")
    assert kept.load() == {}


def test_an_earlier_reading_younger_than_the_window_waits_for_the_rest_of_it(
    machine: Machine, tmp_path: Path
) -> None:
    """`ps` twice in quick succession: the second waits only for what is left of the 0.2 s
    window since the first's reading, and measures over the whole of it."""
    first = stats(machine, tmp_path)
    first.sample([CID])
    machine.sleeps.clear()
    machine.busy = 1.0
    machine.advance(0.05)
    usage = stats(machine, tmp_path).sample([CID], earlier=first.latest)
    assert machine.sleeps == [pytest.approx(0.15)]
    # 0.05 s at one core, then 0.15 s at one core: 100% over the 0.2 s since the earlier reading
    assert usage == {CID: (pytest.approx(100.0), 100_000_000)}
