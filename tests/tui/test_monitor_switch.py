"""The monitor's `p` on the real engine: it executes the plan it showed (and refuses when the
machine changed since), and a SIGHUP while it switches rolls back as the CLI does."""

from __future__ import annotations

import os
import signal
import threading
from types import SimpleNamespace

import pytest

from aitherctl.errors import RefusedError, SwitchFailedError
from aitherctl.monitor.actions import StackActions
from aitherctl.switching.transaction import SignalCancel
from tests.conftest import BASE_IMAGE, free_port, run_cli, web_service

pytestmark = pytest.mark.docker


def running(engine: object) -> dict[str, str]:
    return {i.service: i.id for i in engine.list_managed() if i.running}  # type: ignore[attr-defined]


def slow(port: int) -> dict[str, object]:
    """A real HTTP server that answers only after 60 s."""
    return {
        "engine": "generic",
        "image": BASE_IMAGE,
        "port": port,
        "gpu": "none",
        "args": ["sh", "-c", f"sleep 60; exec python3 -m http.server {port}"],
        "health": {"path": "/", "timeout": 120},
    }


@pytest.fixture
def actions(clean_namespace, write_profile, base_image):  # type: ignore[no-untyped-def]
    ports = [free_port() for _ in range(3)]
    write_profile("first", services={"web": web_service(ports[0])})
    write_profile(
        "second", services={"web": web_service(ports[0], text="two"), "slow": slow(ports[1])}
    )
    write_profile("third", services={"other": web_service(ports[2])})
    assert run_cli("profile", "switch", "first", "--yes").returncode == 0
    return StackActions(SimpleNamespace(engine=clean_namespace))


def test_the_switch_executes_the_plan_shown_and_refuses_a_changed_one(
    actions,
    clean_namespace,  # type: ignore[no-untyped-def]
) -> None:
    engine = clean_namespace
    shown = actions.plan("third")
    assert shown.splitlines()[:3] == [
        "Plan for third:",
        "  stop      web: not in profile third",
        "  start     other: new",
    ]
    assert run_cli("profile", "switch", "second", "--yes").returncode == 0  # meanwhile
    before = running(engine)
    with pytest.raises(RefusedError, match="the plan changed since it was shown"):
        actions.switch("third", lambda _line: None)
    assert running(engine) == before  # nothing was changed
    with pytest.raises(RefusedError, match="no plan for third was shown"):
        actions.switch("third", lambda _line: None)
    actions.plan("third")
    assert actions.switch("third", lambda _line: None).startswith("switched to third in ")
    assert set(running(engine)) == {"other"}


def test_a_sighup_during_the_monitors_switch_rolls_back(
    actions,
    clean_namespace,  # type: ignore[no-untyped-def]
) -> None:
    engine = clean_namespace
    before = running(engine)
    actions.plan("second")
    lines: list[str] = []
    waiting = threading.Event()

    def note(line: str) -> None:
        lines.append(line)
        if line.startswith("slow: waiting"):
            waiting.set()

    cancel = SignalCancel()
    cancel.install()  # what the monitor does on the main thread (this test's)
    outcome: list[BaseException | str] = []

    def worker() -> None:  # the monitor's worker thread
        try:
            outcome.append(actions.switch("second", note, cancel))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=worker)
    try:
        thread.start()
        assert waiting.wait(60), lines
        os.kill(os.getpid(), signal.SIGHUP)
        thread.join(120)
    finally:
        cancel.restore()
    assert not thread.is_alive()
    [error] = outcome
    assert isinstance(error, SwitchFailedError), error
    assert error.message.startswith("SIGHUP during the switch: rolled back (restored: web)")
    assert cancel.signum == signal.SIGHUP
    assert running(engine) == before  # the very same container runs again
    assert [i.service for i in engine.list_managed()] == ["web"]


def test_the_monitors_switch_downloads_a_missing_model_first(
    clean_namespace, write_profile, llama_image, tmp_path, monkeypatch
) -> None:
    """The same operation as `profile switch`: the GGUF file is fetched (from the Hub's contract
    double) before anything starts, its lines in the monitor's notes, and the service answers."""
    from tests.conftest import MODEL_FILE, llama_service
    from tests.doubles.hf_hub import serve_hub
    from tests.models.hub_helpers import GGUF_REPO, hub_state

    del llama_image
    models = tmp_path / "models"
    service = llama_service(free_port(), source=f"{GGUF_REPO}:{MODEL_FILE}")
    service["volumes"] = {str(models): "/models:ro"}
    write_profile("fetched", services={"assistant": service})
    actions = StackActions(SimpleNamespace(engine=clean_namespace))
    notes: list[str] = []
    try:
        with serve_hub(hub_state()) as endpoint:
            monkeypatch.setenv("HF_ENDPOINT", endpoint)
            actions.plan("fetched")
            done = actions.switch("fetched", notes.append)
        assert done.startswith("switched to fetched in "), notes
        assert f"downloading {GGUF_REPO} (assistant)" in notes
        assert f"assistant  {MODEL_FILE}  94 MiB" in notes
        assert (models / MODEL_FILE).is_file()
        assert set(running(clean_namespace)) == {"assistant"}
    finally:
        run_cli("down", "--all", "--yes")
