"""`aitherctl status` fits the terminal: at 80 columns no line is longer and nothing is cut
mid-word (readings move to the next line whole, the services table leaves out columns the way
`ps` does and names them); at 200 columns everything is on its line. Every state `status` can
show (tests/cli/status_states.py), exact output at both widths (tests/cli/expected/status.txt).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from aitherctl.cli import runtime
from aitherctl.cli.app import app
from aitherctl.monitor.model import MonitorSnapshot
from tests.cli.expected_text import sections
from tests.cli.status_states import STATES

WIDTHS = (80, 200)


class FixedCollector:
    """The collector `status` reads, on one snapshot (the readings are the test's)."""

    def __init__(self, snapshot: MonitorSnapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> MonitorSnapshot:
        return self.snapshot

    def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    """Times print in the local zone: UTC here, so the expected text holds anywhere."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def status_lines(monkeypatch: pytest.MonkeyPatch, state: str, width: int) -> list[str]:
    monkeypatch.setattr(runtime, "monitor_collector", lambda **_: FixedCollector(STATES[state]))
    result = CliRunner().invoke(app, ["status"], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    return [line.rstrip() for line in result.stdout.splitlines()]


def expected() -> dict[str, list[str]]:
    return sections("status.txt")


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("state", list(STATES))
def test_status_prints_each_state_exactly(
    monkeypatch: pytest.MonkeyPatch, state: str, width: int
) -> None:
    assert status_lines(monkeypatch, state, width) == expected()[f"{state} @ {width}"]


@pytest.mark.parametrize("width", [80, 60])
@pytest.mark.parametrize("state", list(STATES))
def test_on_a_narrow_terminal_no_line_is_longer_and_no_word_is_cut(
    monkeypatch: pytest.MonkeyPatch, state: str, width: int
) -> None:
    """What the 200-column rendering shows, word by word, is at 80 (or 60) columns either
    whole, or a model name shortened with `…`, or left out with its column; never split."""
    narrow = status_lines(monkeypatch, state, width)
    too_long = [line for line in narrow if len(line) > width]
    assert not too_long, too_long
    words: set[str] = set()
    in_note = False  # the note that names the columns left out, however it wraps
    for line in narrow:
        in_note = in_note or line.startswith(f"not shown at {width} columns:")
        if not in_note:
            words.update(line.split())
        in_note = in_note and not line.endswith("(status --json has every reading)")
    wide = {word for line in status_lines(monkeypatch, state, 200) for word in line.split()}
    models = [svc.model or "" for svc in STATES[state].services]
    stray = {
        word
        for word in words - wide
        if not (word.endswith("…") and any(m.startswith(word[:-1]) for m in models))
    }
    assert not stray, stray


def test_the_services_table_at_80_columns_names_what_it_left_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines = status_lines(monkeypatch, "no GPU, CPU services with ram budgets", 80)
    table = lines[lines.index("GPU: no NVIDIA driver (Driver Not Loaded)") + 2 :][:4]
    assert table == [
        "service    engine    model             state    CPU     RAM                queue",
        "assistant  llamacpp  /models/SmolLM2…  running  181.2%  310 MiB / 4.0 GiB  1/0",
        "big        llamacpp  /models/big.gguf  running  3.0%    4.5 GiB / 4.0 GiB  0/0",
        "not shown at 80 columns: port, up (status --json has every reading)",
    ]
