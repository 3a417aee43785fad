"""The switch as a transaction, under faults, on the real Docker engine.

Every test starts from profile `alpha` running for real (tiny HTTP servers in the locally built
base image) and checks what a user would: after the fault, alpha's very containers (same ids,
same names) run again and answer, nothing of the failed target is left, and no set-aside
container or switch record remains. Docker API errors are injected by `FaultyEngine`, a proxy in
front of the real engine that makes one named call fail the way the engine does (a DockerError);
every other call, and the whole rollback, goes to the real engine. One fault is entirely real: a
GPU service on an engine without the NVIDIA runtime fails at `start`.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, run_cli, sdk_of, web_service

pytestmark = pytest.mark.docker


class FaultyEngine:
    """The real DockerEngine, except that the `fail_on`-th call of `method` raises DockerError."""

    def __init__(self, real: Any, method: str, fail_on: int = 1) -> None:
        self._real = real
        self._method = method
        self._fail_on = fail_on
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._real, name)
        if name != self._method:
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            from aitherctl.errors import DockerError

            self.calls += 1
            if self.calls == self._fail_on:
                raise DockerError(f"{name}: injected engine error (500 Internal Server Error)")
            return attribute(*args, **kwargs)

        return call


class Recorder:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def note(self, message: str) -> None:
        self.lines.append(message)

    def service(self, service: str, status: str, detail: str = "") -> None:
        self.lines.append(f"{service} {status} {detail}".strip())


def no_gpu() -> Any:
    from aitherctl.gpu.model import GpuInventory

    return GpuInventory(error="no NVIDIA driver (test machine)")


def state(engine: Any) -> dict[str, tuple[str, str, str]]:
    """service → (id, name, state) of every container in the namespace."""
    return {item.service: (item.id, item.name, item.state) for item in engine.list_managed()}


def switch_records(engine: Any) -> dict[str, dict[str, str]]:
    """The records of unfinished switches (the active-profile record is not one)."""
    from aitherctl.switching.records import is_switch_record

    return {name: labels for name, labels in engine.records().items() if is_switch_record(labels)}


def answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def alpha(clean_namespace: Any, write_profile: Any, base_image: str) -> dict[str, Any]:
    """alpha = {shared, old, changed} running; beta keeps shared, stops old, recreates changed,
    starts new (which never answers unless the test says so)."""
    ports = {name: free_port() for name in ("shared", "old", "changed", "new")}
    write_profile(
        "alpha",
        services={
            "shared": web_service(ports["shared"]),
            "old": web_service(ports["old"]),
            "changed": web_service(ports["changed"], text="one"),
        },
    )
    write_profile(
        "beta",
        services={
            "shared": web_service(ports["shared"]),
            "changed": web_service(ports["changed"], text="two"),
            "new": web_service(ports["new"], health="/never", timeout=600),
        },
    )
    write_profile(
        "beta-ok",
        services={
            "shared": web_service(ports["shared"]),
            "changed": web_service(ports["changed"], text="two"),
            "new": web_service(ports["new"]),
        },
    )
    result = run_cli("profile", "switch", "alpha", "--yes")
    assert result.returncode == 0, result.stderr
    before = state(clean_namespace)
    assert sorted(before) == ["changed", "old", "shared"]
    return {"engine": clean_namespace, "ports": ports, "before": before}


def assert_alpha_restored(alpha: dict[str, Any]) -> None:
    engine, ports, before = alpha["engine"], alpha["ports"], alpha["before"]
    after = state(engine)
    assert after == before  # the very same containers, under their own names, running
    assert switch_records(engine) == {}
    for name in ("shared", "old", "changed"):
        deadline = time.monotonic() + 30
        while not answers(ports[name]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert answers(ports[name]), f"{name} does not answer after the rollback"


def switch_in_process(engine: Any, profile: str) -> Any:
    from aitherctl.profiles.catalog import ProfileCatalog
    from aitherctl.switching.switch import switch

    return switch(engine, ProfileCatalog(), profile, no_gpu, Recorder())


@pytest.mark.parametrize(
    ("method", "fail_on"),
    [("rename", 2), ("stop", 1), ("create", 2), ("start", 1), ("get", 1)],
)
def test_a_docker_error_at_any_step_restores_the_previous_set(
    alpha: dict[str, Any], method: str, fail_on: int
) -> None:
    from aitherctl.errors import SwitchFailedError

    faulty = FaultyEngine(alpha["engine"], method, fail_on)
    with pytest.raises(SwitchFailedError) as caught:
        switch_in_process(faulty, "beta-ok")
    assert "injected engine error" in caught.value.message
    assert "rolled back (restored: " in caught.value.message
    assert faulty.calls >= fail_on
    assert_alpha_restored(alpha)


def test_one_restore_that_fails_does_not_leave_the_others_stopped(
    alpha: dict[str, Any], write_profile: Any
) -> None:
    """`new` never answers, so the switch rolls back; restoring one set-aside container fails:
    the other is still restored, and the error names the one that could not be."""
    from aitherctl.errors import SwitchFailedError

    ports = alpha["ports"]
    write_profile(
        "beta-fast",
        services={
            "shared": web_service(ports["shared"]),
            "changed": web_service(ports["changed"], text="two"),
            "new": web_service(ports["new"], health="/never", timeout=3),
        },
    )
    # Starts: changed (new container), new, then the rollback's: old, changed (set aside).
    faulty = FaultyEngine(alpha["engine"], "start", fail_on=3)
    with pytest.raises(SwitchFailedError) as caught:
        switch_in_process(faulty, "beta-fast")
    message = caught.value.message
    assert "did not become ready" in message
    assert "could not restore: " in message
    after = state(alpha["engine"])
    restored = [name for name in ("old", "changed") if after[name][2] == "running"]
    not_restored = [name for name in ("old", "changed") if after[name][2] != "running"]
    assert len(restored) == 1
    assert len(not_restored) == 1
    assert f"could not restore: {not_restored[0]} (" in message
    assert after[restored[0]][1] == alpha["before"][restored[0]][1]  # its own name again
    assert answers(ports[restored[0]])
    assert "new" not in after


def test_a_real_engine_error_gpu_runtime_missing_restores_the_previous_set(
    alpha: dict[str, Any], write_profile: Any, llama_image: str
) -> None:
    """A GPU service on an engine without the NVIDIA runtime: Docker refuses at `start` (no
    injection). The planner passes (NVML contract double with one 24 GiB GPU)."""
    from aitherctl.errors import SwitchFailedError
    from aitherctl.gpu.nvml import NvmlReader
    from aitherctl.profiles.catalog import ProfileCatalog
    from aitherctl.switching.switch import switch
    from tests.conftest import llama_service
    from tests.doubles.nvml_double import FakeGpu, NvmlDouble

    ports = alpha["ports"]
    write_profile(
        "gpu",
        services={
            "shared": web_service(ports["shared"]),
            "llm": {**llama_service(ports["new"]), "gpu": 0, "vram": "4GiB"},
        },
    )
    reader = NvmlReader(NvmlDouble([FakeGpu()]))
    with pytest.raises(SwitchFailedError) as caught:
        switch(alpha["engine"], ProfileCatalog(), "gpu", reader.read, Recorder())
    assert "llm" in caught.value.message
    assert_alpha_restored(alpha)


def _start_switch(profile: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "aitherctl", "profile", "switch", profile, "--yes"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )


def _wait_for(process: subprocess.Popen[str], marker: str, timeout_s: float = 60) -> str:
    """Read the switch's progress (stderr) until a line contains `marker`; the text read so far
    is kept on the process, so a later call finds a marker that came in the same read. (Reads
    the raw pipe: a buffered `readline` after `select` can leave a line in Python's buffer that
    `select` never reports, which made this flaky.)"""
    assert process.stderr is not None
    fd = process.stderr.fileno()
    log: str = getattr(process, "aither_log", "")
    start: int = getattr(process, "aither_pos", 0)
    deadline = time.monotonic() + timeout_s
    while True:
        found = log.find(marker, start)
        if found >= 0:
            end = log.find("\n", found)
            end = len(log) if end < 0 else end + 1
            process.aither_log, process.aither_pos = log, end  # type: ignore[attr-defined]
            return log[start:end]
        if time.monotonic() >= deadline:
            break
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            data = os.read(fd, 65536)
            if not data:
                break  # the process closed its stderr (it ended)
            log += data.decode("utf-8", "replace")
    raise AssertionError(f"never saw {marker!r}; progress so far:\n{log}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_mid_switch_cancels_the_readiness_wait_and_restores(
    alpha: dict[str, Any], sig: signal.Signals
) -> None:
    """`new` would be waited for up to 600 s. The signal ends the wait at once: the process
    rolls back and exits 128+N (SIGINT 130, SIGTERM 143, SIGHUP 129), long before the timeout."""
    process = _start_switch("beta")
    _wait_for(process, "new")
    _wait_for(process, "waiting")
    sent = time.monotonic()
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    took = time.monotonic() - sent
    assert process.returncode == 128 + int(sig), err
    assert "rolled back (restored: " in err
    assert took < 60, f"the switch took {took:.1f}s to stop after {sig.name}"
    assert_alpha_restored(alpha)


@pytest.mark.parametrize("next_command", ["recover", "switch", "up"])
def test_kill_9_mid_switch_then_the_next_command_restores_from_the_record(
    alpha: dict[str, Any], next_command: str
) -> None:
    engine = alpha["engine"]
    process = _start_switch("beta")
    _wait_for(process, "waiting")
    process.kill()  # SIGKILL: no handler runs, nothing is rolled back
    process.wait(timeout=30)
    left = {item.name: item for item in engine.list_managed()}
    aside = [name for name in left if "-aside-" in name]
    assert sorted(n.split("-aside-")[0] for n in aside) == sorted(
        [alpha["before"]["old"][1], alpha["before"]["changed"][1]]
    )
    assert switch_records(engine), "the switch recorded its intent before setting containers aside"
    # A plan never deletes a set-aside container as a "duplicate".
    plan = run_cli("profile", "plan", "alpha", "--json")
    assert "-aside-" not in plan.stdout
    assert {item.name for item in engine.list_managed()} >= set(aside)

    if next_command == "recover":
        result = run_cli("recover")
        assert result.returncode == 0, result.stderr
        assert "rolled back the interrupted switch to beta" in result.stderr
    elif next_command == "switch":
        result = run_cli("profile", "switch", "alpha", "--yes")
        assert result.returncode == 0, result.stderr
        assert "rolled back a switch to beta" in result.stderr
    else:
        result = run_cli("up", "--profile", "alpha", "--yes")
        assert result.returncode == 0, result.stderr
    assert_alpha_restored(alpha)


def test_recover_finishes_a_switch_killed_after_its_commit(alpha: dict[str, Any]) -> None:
    """The state a kill -9 between the commit record and the clean-up leaves: the new set
    runs, the replaced container is still set aside. Recovery finishes: it removes it."""
    from aitherctl.engines import container as c
    from aitherctl.switching.records import LABEL_INTENT, LABEL_KIND, record_name
    from aitherctl.switching.transaction import AsideEntry, Intent

    engine = alpha["engine"]
    old_id, old_name, _ = alpha["before"]["old"]
    txn = "deadbeef00"
    intent = Intent(txn, "beta", (AsideEntry(old_id, "old", old_name, True),), (), ())
    engine.write_record(
        record_name(engine.namespace, txn, "txn"),
        {LABEL_KIND: "txn", c.LABEL_TXN: txn, LABEL_INTENT: intent.to_json()},
    )
    engine.rename(old_id, f"{old_name}-aside-{txn}")
    engine.stop(old_id)
    engine.write_record(
        record_name(engine.namespace, txn, "commit"), {LABEL_KIND: "commit", c.LABEL_TXN: txn}
    )
    result = run_cli("recover", "--json")
    assert result.returncode == 0, result.stderr
    assert '"action": "finished"' in result.stdout
    after = state(engine)
    assert "old" not in after
    assert after["shared"] == alpha["before"]["shared"]
    assert switch_records(engine) == {}


def test_prompt_does_not_hold_the_lock(alpha: dict[str, Any]) -> None:
    from aitherctl.profiles.catalog import ProfileCatalog
    from aitherctl.switching.switch import Declined, switch

    asked: list[bool] = []
    engine = alpha["engine"]
    before = state(engine)

    def confirm(prepared: Any, changed: bool) -> bool:
        asked.append(changed)
        if not changed:
            # Someone else stops `old` while this user reads the plan for beta-ok.
            # (a held lock would make this wait; the timeout turns that into a failure)
            other = run_cli("down", "old", "--yes", timeout=60)
            assert other.returncode == 0, other.stderr
            return True
        return False

    with pytest.raises(Declined):
        switch(engine, ProfileCatalog(), "beta-ok", no_gpu, Recorder(), confirm=confirm)
    assert asked == [False, True]
    after = state(engine)
    assert "old" not in after  # the other user's change happened
    assert after["shared"] == before["shared"]
    assert after["changed"] == before["changed"]
    assert "new" not in after  # and nothing of the declined plan


def test_with_nobody_to_ask_the_plan_is_made_once_under_the_lock(alpha: dict[str, Any]) -> None:
    """`switch --yes`: no user reads the plan, so it is made under the lock, once (GPU
    readings, the container list, the model checks), shown there, and applied as it is."""
    from aitherctl.errors import BusyError
    from aitherctl.profiles.catalog import ProfileCatalog
    from aitherctl.switching.lock import engine_lock
    from aitherctl.switching.switch import switch

    engine = alpha["engine"]
    readings: list[str] = []
    shown: list[tuple[bool, bool]] = []

    def reading() -> Any:
        readings.append("read")
        return no_gpu()

    def confirm(prepared: Any, changed: bool) -> bool:
        # The lock is held while the plan is shown: another caller could not take it now.
        with pytest.raises(BusyError), engine_lock(engine, timeout_s=0):
            pass
        shown.append((changed, bool(prepared.plan.steps)))
        return True

    result = switch(
        engine, ProfileCatalog(), "beta-ok", reading, Recorder(), confirm=confirm, asks=False
    )
    assert readings == ["read"]
    assert shown == [(False, True)]
    assert all(outcome.ready for outcome in result.outcomes)
    assert "new" in state(engine)


def test_the_lock_is_per_engine_however_its_address_is_spelled(alpha: dict[str, Any]) -> None:
    from aitherctl.switching.lock import switch_lock

    engine = alpha["engine"]
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    assert host.startswith("unix://")
    path = host.removeprefix("unix://")
    folder, name = os.path.split(path)
    respelled = f"unix://{folder}/../{os.path.basename(folder)}/{name}"
    with switch_lock(engine.engine_id, engine.namespace, timeout_s=5):
        result = run_cli(
            "profile",
            "switch",
            "beta-ok",
            "--yes",
            "--lock-timeout",
            "1",
            env={"DOCKER_HOST": respelled},
        )
    assert result.returncode == 8, result.stderr  # busy: the same engine, the same lock
    assert "another switch is still running" in result.stderr
    assert state(engine) == alpha["before"]


def test_up_restore_brings_back_the_profile_after_everything_stopped(
    alpha: dict[str, Any],
) -> None:
    """As after a reboot: every container stopped (GPU services do not restart by themselves).
    `up --restore` starts the very same containers again and they answer."""
    engine = alpha["engine"]
    for service_id, _, _ in alpha["before"].values():
        engine.stop(service_id)
    assert all(s == "exited" for _, _, s in state(engine).values())
    result = run_cli("up", "--restore", "--json")
    assert result.returncode == 0, result.stderr
    assert '"profile": "alpha"' in result.stdout
    assert_alpha_restored(alpha)


def test_gpu_services_never_restart_by_themselves_cpu_services_do(
    alpha: dict[str, Any], write_profile: Any
) -> None:
    """After a commit every running GPU service has Docker's restart policy `no` (a kept one
    that an older aitherctl left at `unless-stopped` included) and CPU services `unless-stopped`.
    The GPU service is a real container labelled as a switch labels one (no GPU runs here); the
    planner sees one 24 GiB GPU through the NVML contract double."""
    from aitherctl.gpu.nvml import NvmlReader
    from aitherctl.profiles.catalog import ProfileCatalog
    from aitherctl.switching.specs import build_specs
    from aitherctl.switching.switch import switch
    from tests.conftest import BASE_IMAGE
    from tests.doubles.nvml_double import GIB, FakeGpu, NvmlDouble

    engine, ports = alpha["engine"], alpha["ports"]
    gpu_port = free_port()
    write_profile(
        "with-gpu",
        services={
            "shared": web_service(ports["shared"]),
            "old": web_service(ports["old"]),
            "changed": web_service(ports["changed"], text="one"),
            "llm": {
                "engine": "llamacpp",
                "model": "/models/m.gguf",
                "port": gpu_port,
                "gpu": 0,
                "vram": "2GiB",
            },
            "extra": web_service(ports["new"]),
        },
    )
    spec = build_specs(ProfileCatalog().load("with-gpu"), {0: 24 * GIB}).resident["llm"]
    client = sdk_of(engine).api
    old_style = client.create_container(
        image=BASE_IMAGE,
        command=["python3", "-m", "http.server", "8080"],
        name=f"aither-{engine.namespace}-llm",
        labels=spec.labels(engine.namespace, "with-gpu"),
        ports=[8080],
        host_config=client.create_host_config(
            port_bindings={8080: ("127.0.0.1", gpu_port)},
            restart_policy={"Name": "unless-stopped"},
        ),
    )["Id"]
    client.start(old_style)
    reader = NvmlReader(NvmlDouble([FakeGpu(total_bytes=24 * GIB)]))
    result = switch(engine, ProfileCatalog(), "with-gpu", reader.read, Recorder())
    assert [o.service for o in result.outcomes] == ["extra"]  # llm and alpha's three kept

    def policy(container_id: str) -> str:
        return str(client.inspect_container(container_id)["HostConfig"]["RestartPolicy"]["Name"])

    running = {item.service: item.id for item in engine.list_managed() if item.running}
    assert running["llm"] == old_style
    assert policy(old_style) == "no"
    for name in ("shared", "old", "changed", "extra"):
        assert policy(running[name]) == "unless-stopped", name


class LostEngine:
    """The real DockerEngine until the `fail_on`-th call of `method`; from then on every call
    fails as DockerEngine reports a vanished engine (DockerUnavailableError)."""

    def __init__(self, real: Any, method: str, fail_on: int = 1) -> None:
        self._real = real
        self._method = method
        self._fail_on = fail_on
        self.calls = 0
        self.lost = False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._real, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            from aitherctl.errors import DockerUnavailableError

            if name == self._method:
                self.calls += 1
                self.lost = self.lost or self.calls >= self._fail_on
            if self.lost:
                raise DockerUnavailableError(
                    f"{name}: lost the Docker engine at {self._real.endpoint}: connection refused"
                )
            return attribute(*args, **kwargs)

        return call


def test_an_engine_lost_mid_switch_keeps_the_record_and_recover_finishes_the_rollback(
    alpha: dict[str, Any],
) -> None:
    """The engine goes away while the new containers start: the rollback cannot reach it, says
    what it could not restore, and keeps the record; once the engine answers again, `aitherctl
    recover` restores the previous set from that record."""
    from aitherctl.errors import SwitchFailedError

    engine = alpha["engine"]
    lost = LostEngine(engine, "start")
    with pytest.raises(SwitchFailedError) as caught:
        switch_in_process(lost, "beta-ok")
    assert "could not restore: " in caught.value.message
    assert "lost the Docker engine" in caught.value.message
    assert switch_records(engine), "the record must survive for the next command"
    assert any("-aside-" in item.name for item in engine.list_managed())
    result = run_cli("recover")
    assert result.returncode == 0, result.stderr
    assert "rolled back the interrupted switch to beta-ok" in result.stderr
    assert_alpha_restored(alpha)


def test_down_goes_through_the_transaction_and_leaves_no_record(alpha: dict[str, Any]) -> None:
    result = run_cli("down", "old", "--yes")
    assert result.returncode == 0, result.stderr
    after = state(alpha["engine"])
    assert "old" not in after
    assert after["shared"] == alpha["before"]["shared"]
    assert switch_records(alpha["engine"]) == {}


def test_switch_and_up_print_where_each_service_answers(
    clean_namespace: Any, write_profile: Any, base_image: str, llama_image: str
) -> None:
    from tests.conftest import llama_service

    web, llm = free_port(), free_port()
    write_profile("urls", services={"web": web_service(web), "llm": llama_service(llm)})
    result = run_cli("profile", "switch", "urls", "--yes")
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert ["llm", f"http://127.0.0.1:{llm}/v1"] in lines  # llama.cpp: the OpenAI base URL
    assert ["web", f"http://127.0.0.1:{web}"] in lines
    again = run_cli("up", "--json", "--yes")
    assert again.returncode == 0, again.stderr
    assert f'"llm": "http://127.0.0.1:{llm}/v1"' in again.stdout
    chat = httpx.post(
        f"http://127.0.0.1:{llm}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 5},
        timeout=60,
    )
    assert chat.status_code == 200


def test_the_active_profile_is_recorded_and_trusted_only_while_its_set_runs(
    alpha: dict[str, Any],
) -> None:
    """After a switch, `ps` names the profile from the switch's record; once what runs differs
    (a container stopped by hand), the record no longer matches and the labels decide."""
    import json

    from aitherctl.switching.records import active_from_records

    engine = alpha["engine"]
    assert active_from_records(engine.records(), engine.list_managed()) == "alpha"
    assert json.loads(run_cli("ps", "--json").stdout)["active_profile"] == "alpha"
    engine.stop(alpha["before"]["old"][0])
    assert active_from_records(engine.records(), engine.list_managed()) is None
    assert json.loads(run_cli("ps", "--json").stdout)["active_profile"] == "alpha"
    down = run_cli("down", "--all", "--yes")
    assert down.returncode == 0, down.stderr
    # No switch record is left; the active record stays, with nothing running under it, so
    # that `up` brings alpha back after `down --all` (issue 20).
    (left,) = engine.records().values()
    assert left["ai.aitherctl.record-kind"] == "active"
    assert (left["ai.aitherctl.active-profile"], left["ai.aitherctl.active-hashes"]) == (
        "alpha",
        "{}",
    )
    assert json.loads(run_cli("ps", "--json").stdout)["active_profile"] is None


def test_restart_goes_through_the_transaction_and_waits_until_it_answers(
    alpha: dict[str, Any],
) -> None:
    """The monitor's `r`: the same container is stopped and started again, and the call returns
    only once it answers; nothing else is touched."""
    from aitherctl.switching.switch import restart

    engine = alpha["engine"]
    before = {item.service: item for item in engine.list_managed()}
    started_before = engine.inspect(before["old"].id)["State"]["StartedAt"]
    result = restart(engine, "old", Recorder())
    assert [o.service for o in result.outcomes if o.ready] == ["old"]
    assert answers(alpha["ports"]["old"])
    assert state(engine) == alpha["before"]  # same ids, names, all running
    assert engine.inspect(before["old"].id)["State"]["StartedAt"] != started_before
    assert switch_records(engine) == {}
