"""`ps`, `status` and the monitor write an uptime the same way (`ps` said 80s, `status` 1m20s)."""

from __future__ import annotations

import pytest

from aitherctl.cli.service_cmds import _duration
from aitherctl.tui.render import fmt_duration


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (5.4, "5s"),
        (80.2, "1m20s"),
        (89.9, "1m29s"),
        (3599, "59m59s"),
        (5400, "1h30m"),
        (90061, "1d1h"),
    ],
)
def test_ps_and_status_agree(seconds: float, words: str) -> None:
    assert _duration(seconds) == fmt_duration(seconds) == words


def test_unknown_uptime() -> None:
    assert (_duration(None), fmt_duration(None)) == ("-", "N/A")
