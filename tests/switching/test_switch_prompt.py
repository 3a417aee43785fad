"""`profile switch NAME` at a terminal asks `switch to NAME? [y/N]` and changes nothing unless
the answer is yes: `n`, Ctrl-D (end of input) and Ctrl-C, typed into a real pseudo-terminal on
the real engine. The console script runs a switch without Typer (cli/fast_run.py) and the Typer
command with AITHER_NO_FAST_RUN=1: both must answer alike (before, Ctrl-D was Typer's "Aborted!"
one way and a traceback the other)."""

from __future__ import annotations

import pytest

from tests.conftest import free_port, web_service
from tests.routing.docker.test_chat_terminal import Terminal

pytestmark = pytest.mark.docker


@pytest.mark.parametrize("typer", [False, True], ids=["console script", "typer"])
@pytest.mark.parametrize(
    ("key", "code", "said"),
    [
        ("n\r", 1, "n\r\n"),
        ("\x04", 1, "\r\n"),  # Ctrl-D: no answer is the default, no
        ("\x03", 130, "^Cinterrupted\r\n"),  # Ctrl-C: exit 128 + SIGINT, as a shell reports it
    ],
    ids=["n", "ctrl-d", "ctrl-c"],
)
def test_anything_but_yes_at_the_prompt_changes_nothing(  # noqa: PLR0917 - pytest's fixtures
    clean_namespace,  # type: ignore[no-untyped-def]
    write_profile,  # type: ignore[no-untyped-def]
    base_image: str,
    monkeypatch: pytest.MonkeyPatch,
    key: str,
    code: int,
    said: str,
    typer: bool,
) -> None:
    write_profile("alpha", services={"web": web_service(free_port())})
    if typer:
        monkeypatch.setenv("AITHER_NO_FAST_RUN", "1")
    else:
        monkeypatch.delenv("AITHER_NO_FAST_RUN", raising=False)
    terminal = Terminal(["profile", "switch", "alpha"])
    try:
        shown = terminal.expect("switch to alpha? [y/N] ", timeout_s=60)
        assert "plan → alpha" in shown
        terminal.type(key)
        assert terminal.rest() == said
        assert terminal.wait() == code
    finally:
        terminal.close()
    assert clean_namespace.list_managed() == []
