"""Host PID → container mapping through a /proc tree laid out as Linux lays it out."""

from __future__ import annotations

from pathlib import Path

from aitherctl.monitor.procs import HostReader, ProcessTable

CID_A = "a" * 12 + "0123456789abcdef" * 3 + "0123"
CID_B = "b" * 64


def make_proc(
    root: Path, pid: int, *, ppid: int, comm: str, cgroup: str = "0::/user.slice\n"
) -> None:
    folder = root / str(pid)
    folder.mkdir(parents=True)
    (folder / "comm").write_text(comm + "\n")
    # Field 2 may hold spaces and parentheses; the parser must not be fooled by them.
    (folder / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 0 0\n")
    (folder / "cgroup").write_text(cgroup)


def test_systemd_and_cgroupfs_layouts(tmp_path: Path) -> None:
    make_proc(tmp_path, 100, ppid=1, comm="vllm", cgroup=f"0::/system.slice/docker-{CID_A}.scope\n")
    make_proc(tmp_path, 200, ppid=1, comm="python3", cgroup=f"0::/docker/{CID_B}\n")
    table = ProcessTable(tmp_path)
    assert table.containers_of([100, 200], {CID_A: 100}) == {100: CID_A, 200: CID_B}


def test_cgroup_v1_lines(tmp_path: Path) -> None:
    v1 = f"12:memory:/docker/{CID_A}\n11:cpu,cpuacct:/docker/{CID_A}\n0::/\n"
    make_proc(tmp_path, 300, ppid=1, comm="llama-server", cgroup=v1)
    assert ProcessTable(tmp_path).containers_of([300], {}) == {300: CID_A}


def test_child_found_through_its_parents_when_cgroup_says_nothing(tmp_path: Path) -> None:
    # vLLM: the API server is the container's init; the engine core (the GPU process) is its
    # grandchild. Here the cgroup names no container, as with some rootless setups.
    make_proc(tmp_path, 500, ppid=1, comm="python3")
    make_proc(tmp_path, 501, ppid=500, comm="python3")
    make_proc(tmp_path, 502, ppid=501, comm="VLLM::EngineCor")
    table = ProcessTable(tmp_path)
    assert table.containers_of([502], {CID_A: 500}) == {502: CID_A}


def test_abbreviated_known_id_maps_to_that_id(tmp_path: Path) -> None:
    make_proc(tmp_path, 600, ppid=1, comm="x", cgroup=f"0::/docker/{CID_A}\n")
    assert ProcessTable(tmp_path).containers_of([600], {CID_A[:12]: None}) == {600: CID_A[:12]}


def test_host_process_and_vanished_process(tmp_path: Path) -> None:
    make_proc(tmp_path, 700, ppid=1, comm="Xorg")
    table = ProcessTable(tmp_path)
    assert table.containers_of([700, 99999], {CID_A: 500}) == {}
    assert table.name_of(700) == "Xorg"
    assert table.name_of(99999) is None
    assert table.parent_of(99999) is None


def test_name_with_parenthesis(tmp_path: Path) -> None:
    make_proc(tmp_path, 800, ppid=42, comm="odd) name (x")
    assert ProcessTable(tmp_path).parent_of(800) == 42


def test_real_proc_of_this_process() -> None:
    import os

    table = ProcessTable()
    assert table.parent_of(os.getpid()) == os.getppid()
    assert table.name_of(os.getpid())


def test_host_reader_reads_this_machine() -> None:
    host = HostReader().read()
    assert host.ram_total_bytes
    assert host.ram_total_bytes > 0
    assert host.ram_used_bytes is not None
    assert 0 < host.ram_used_bytes <= host.ram_total_bytes
    assert host.cpu_pct is not None
    assert 0 <= host.cpu_pct <= 100
    assert host.swap_total_bytes is not None
