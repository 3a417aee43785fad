"""Write completions/aitherctl.{bash,zsh,fish} from the app (tests/cli/test_completions.py checks
they are current). The scripts call back into `aitherctl` for the words, so profile and service
names complete from what is installed."""

from __future__ import annotations

import sys
from pathlib import Path

from typer.completion import completion_init, get_completion_script

ROOT = Path(__file__).resolve().parent.parent
SHELLS = {"bash": "aitherctl.bash", "zsh": "_aitherctl", "fish": "aitherctl.fish"}


def scripts() -> dict[str, str]:
    completion_init()
    return {
        filename: get_completion_script(
            prog_name="aitherctl", complete_var="_AITHERCTL_COMPLETE", shell=shell
        ).rstrip()
        + "\n"
        for shell, filename in SHELLS.items()
    }


if __name__ == "__main__":
    target = ROOT / "completions"
    target.mkdir(exist_ok=True)
    for filename, text in scripts().items():
        (target / filename).write_text(text)
        sys.stdout.write(f"wrote completions/{filename}\n")
