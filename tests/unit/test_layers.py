"""The layers hold: the pure core does no I/O imports, and the monitor's TUI is the only Textual user."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "aitherctl"
FORBIDDEN_IN_CORE = ("docker", "pynvml", "httpx", "rich", "textual", "psutil", "sqlite3",
                     "aitherctl.adapters", "aitherctl.ops", "aitherctl.cli", "aitherctl.tui")


def test_importing_the_whole_core_loads_no_io_library() -> None:
    modules = sorted(
        "aitherctl.core." + str(path.relative_to(PACKAGE / "core").with_suffix("")).replace("/", ".")
        for path in (PACKAGE / "core").rglob("*.py")
        if path.name != "__init__.py"
    )
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n    importlib.import_module(name)\n"
        f"print([m for m in {FORBIDDEN_IN_CORE!r} if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", f"the core imported: {result.stdout.strip()}"
    assert len(modules) >= 15


def test_only_the_tui_imports_textual() -> None:
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "tui" not in path.parts
        and any(line.lstrip().startswith(("import textual", "from textual"))
                for line in path.read_text().splitlines())
    ]
    assert offenders == []
