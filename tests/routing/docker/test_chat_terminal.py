"""`aitherctl run` with no prompt on a terminal, and `aitherctl chat [MODEL]`: an interactive chat
as `ollama run` opens one, driven through a real pseudo-terminal (as a user types) against a real
llama.cpp server (SmolLM2 on the CPU), straight and through `aitherctl serve`.

Every wait is for output the program writes (the `>>> ` prompt, the answer's text), never a
sleep. History: the ledger's `tokens_in` (the server's own `usage.prompt_tokens`) of the second
message counts the first exchange. Ctrl-C is the terminal's own interrupt character, so the
kernel sends SIGINT as it does for a user.
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, llama_service, run_cli
from tests.serve.docker.serve_helpers import serving

pytestmark = pytest.mark.docker

TIMEOUT_S = 120.0


class Terminal:
    """`python -m aitherctl ARGS` on the slave side of a new pseudo-terminal."""

    def __init__(self, args: list[str], *, sigint: Any = signal.SIG_DFL) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: the pty is its controlling terminal and standard streams
            # A user's shell starts it with Ctrl-C's default action (pytest may have been started
            # in the background by a script, where SIGINT is ignored and exec keeps it ignored).
            signal.signal(signal.SIGINT, sigint)
            os.execv(sys.executable, [sys.executable, "-m", "aitherctl", *args])
        self.pid, self.fd = pid, fd
        self.seen = ""
        self.read_to = 0

    def _read_until(self, done: Callable[[], bool], what: str, timeout_s: float) -> None:
        """Read what the program writes until `done()`; AssertionError after `timeout_s` or
        when the program ends first."""
        deadline = time.monotonic() + timeout_s
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no {what} in {timeout_s:.0f}s; the terminal showed:\n{self.seen}"
                )
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:  # EIO: the program exited
                    data = b""
                if not data:
                    raise AssertionError(f"the program ended before {what}:\n{self.seen}")
                self.seen += data.decode(errors="replace")

    def expect(self, text: str, timeout_s: float = TIMEOUT_S) -> str:
        """Everything written since the last match, up to and including `text`."""
        self._read_until(lambda: text in self.seen[self.read_to :], repr(text), timeout_s)
        end = self.seen.index(text, self.read_to) + len(text)
        out, self.read_to = self.seen[self.read_to : end], end
        return out

    def expect_more(self, timeout_s: float = TIMEOUT_S) -> str:
        """Wait until something is written after the last match; return it."""
        self._read_until(lambda: len(self.seen) > self.read_to, "more output", timeout_s)
        out, self.read_to = self.seen[self.read_to :], len(self.seen)
        return out

    def rest(self, timeout_s: float = TIMEOUT_S) -> str:
        """Everything written after the last match until the program closes the terminal."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], deadline - time.monotonic())
            try:
                data = os.read(self.fd, 4096) if ready else b""
            except OSError:  # EIO: the program exited
                data = b""
            if ready and not data:
                out, self.read_to = self.seen[self.read_to :], len(self.seen)
                return out
            self.seen += data.decode(errors="replace")
        raise AssertionError(f"still writing after {timeout_s:.0f}s:\n{self.seen}")

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def wait(self, timeout_s: float = TIMEOUT_S) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                while select.select([self.fd], [], [], 0.1)[0] and os.read(self.fd, 4096):
                    pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
        raise AssertionError(f"still running after {timeout_s:.0f}s:\n{self.seen}")

    def close(self) -> None:
        with contextlib.suppress(ChildProcessError, ProcessLookupError):
            if os.waitpid(self.pid, os.WNOHANG) == (0, 0):
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
        os.close(self.fd)


@contextlib.contextmanager
def terminal(*args: str, sigint: Any = signal.SIG_DFL) -> Iterator[Terminal]:
    term = Terminal(list(args), sigint=sigint)
    try:
        yield term
    finally:
        term.close()


def _ledger(data_dir: Path, rows: int) -> list[dict[str, Any]]:
    """The ledger's rows once it holds `rows` (`serve` writes its rows a moment after the
    answer, in batches)."""
    deadline = time.monotonic() + 30
    while True:
        found = []
        if (data_dir / "ledger.sqlite3").exists():
            db = sqlite3.connect(data_dir / "ledger.sqlite3")
            db.row_factory = sqlite3.Row
            try:
                found = [dict(row) for row in db.execute("SELECT * FROM requests ORDER BY id")]
            except sqlite3.OperationalError:  # the table is not there yet
                found = []
            finally:
                db.close()
        if len(found) >= rows or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.fixture
def chatty(clean_namespace: object, llama_image: str, write_profile: Callable[..., Path]) -> str:
    del llama_image
    write_profile(
        "chatty",
        services={
            "llama": llama_service(free_port(), args=["--ctx-size", "2048", "--threads", "1"])
        },
        routing={"max_tokens": 24, "tiers": {"all": {"effort": "1-10", "candidates": ["llama"]}}},
    )
    switched = run_cli("profile", "switch", "chatty", "--yes", timeout=300)
    assert switched.returncode == 0, switched.stderr
    return "chatty"


def _session(term: Terminal, data_dir: Path) -> None:
    """Two messages (the second sent with the first exchange), an answer stopped with Ctrl-C,
    one more message after it, then Ctrl-D."""
    term.expect("Ctrl-C stops an answer, Ctrl-D or /bye leaves")
    term.expect(">>> ")
    term.type("My name is Ada. Say hello to me.\n")
    first = term.expect(">>> ")
    assert first.strip().splitlines()[0] == "My name is Ada. Say hello to me."  # the echo
    assert len(first.strip().splitlines()) > 1  # and an answer
    term.type("What is my name?\n")
    term.expect(">>> ")
    rows = _ledger(data_dir, 2)
    assert len(rows) == 2
    # The second request carried the first message and its answer (the server's own count).
    assert rows[1]["tokens_in"] > rows[0]["tokens_in"] + rows[0]["tokens_out"]

    term.type("Count from one to five hundred in words.\n")
    term.expect("Count from one to five hundred in words.\r\n")  # the echo
    # The answer has begun: its first characters (before, a space was awaited, and an answer of
    # digits alone ran to its end first, so Ctrl-C met the prompt instead).
    term.expect_more()
    term.type("\x03")  # Ctrl-C, as the terminal sends it
    term.expect("(stopped)", timeout_s=10)
    term.expect(">>> ", timeout_s=10)
    term.type("Thanks.\n")
    term.expect(">>> ")
    term.type("\x04")  # Ctrl-D
    assert term.wait() == 0


def test_run_without_a_prompt_on_a_terminal_chats(chatty: str, tmp_path: Path) -> None:
    with terminal("run", "--direct", "-p", chatty, "--max-tokens", "400") as term:
        _session(term, tmp_path / "data")


def test_ctrl_c_stops_an_answer_even_when_started_with_sigint_ignored(
    chatty: str, tmp_path: Path
) -> None:
    """A script that starts the chat in the background leaves SIGINT ignored, and exec keeps it
    so: the chat says Ctrl-C stops an answer, so it still does."""
    with terminal(
        "run", "--direct", "-p", chatty, "--max-tokens", "400", sigint=signal.SIG_IGN
    ) as term:
        _session(term, tmp_path / "data")


def test_chat_through_serve(chatty: str, tmp_path: Path) -> None:
    with serving(chatty), terminal("chat", "llama", "--max-tokens", "400") as term:
        _session(term, tmp_path / "data")
