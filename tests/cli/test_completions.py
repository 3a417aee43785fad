"""The shipped completion scripts are the ones the app generates, and they complete for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.cli.scripts_gen import scripts

ROOT = Path(__file__).resolve().parents[2]


def test_completion_files_are_current() -> None:
    for filename, text in scripts().items():
        shipped = (ROOT / "completions" / filename).read_text()
        assert shipped == text, (
            f"completions/{filename} is stale: run python scripts/gen-completions.py"
        )


def test_completion_offers_commands_and_profile_names() -> None:
    env = {
        **os.environ,
        "_AITHERCTL_COMPLETE": "complete_bash",
        "COMP_WORDS": "aitherctl profile switch cr",
        "COMP_CWORD": "3",
    }
    result = subprocess.run(
        [sys.executable, "-m", "aitherctl"], env=env, capture_output=True, text=True, check=False
    )
    assert result.stdout.split() == ["creative"]
    env.update(COMP_WORDS="aitherctl pro", COMP_CWORD="1")
    result = subprocess.run(
        [sys.executable, "-m", "aitherctl"], env=env, capture_output=True, text=True, check=False
    )
    assert "profile" in result.stdout.split()
