"""The layers hold: the pure core does no I/O (imports or file/environment access), and the
monitor's TUI is the only Textual user."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "aitherctl"
FORBIDDEN_IN_CORE = ("docker", "pynvml", "httpx", "rich", "textual", "psutil", "sqlite3",
                     "aitherctl.adapters", "aitherctl.ops", "aitherctl.cli", "aitherctl.tui")


def test_importing_the_whole_core_loads_no_io_library() -> None:
    modules = sorted(
        "aitherctl.core."
        + str(path.relative_to(PACKAGE / "core").with_suffix("")).replace("/", ".")
        for path in (PACKAGE / "core").rglob("*.py")
        if path.name != "__init__.py"
    )
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n    importlib.import_module(name)\n"
        f"print([m for m in {FORBIDDEN_IN_CORE!r} if m in sys.modules])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
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


# What "no file or environment access" means for the core, checked on its source (an import
# check cannot see `Path.read_text()` or `os.environ`): files, folders, the environment and
# processes belong in aitherctl/adapters.
FORBIDDEN_CALLS = {"open", "exec", "eval", "__import__"}
FORBIDDEN_METHODS = {
    "read_text", "write_text", "read_bytes", "write_bytes", "exists", "is_file", "is_dir",
    "iterdir", "glob", "rglob", "mkdir", "unlink", "rmdir", "touch", "stat", "samefile",
    "expanduser", "expandvars", "getenv", "putenv", "listdir", "scandir", "walk", "home", "cwd",
}
FORBIDDEN_NAMES = {"environ", "environb", "platformdirs", "subprocess", "shutil", "tempfile"}


def core_io_uses(source: str, filename: str) -> list[str]:
    """`file:line: what` for each file, folder, environment or process access in `source`."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source, filename)):
        what = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            what = node.func.id if node.func.id in FORBIDDEN_CALLS else None
        elif isinstance(node, ast.Attribute):
            if node.attr in FORBIDDEN_METHODS or node.attr in FORBIDDEN_NAMES:
                what = f".{node.attr}"
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            what = node.id
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            modules += [alias.name for alias in node.names]
            bad = [m for m in modules if m.split(".")[0] in FORBIDDEN_NAMES | {"io", "socket"}]
            if isinstance(node, ast.ImportFrom) and node.module == "os":
                bad += [a.name for a in node.names if a.name not in {"path", "sep"}]
            what = f"import {', '.join(bad)}" if bad else None
        if what:
            found.append(f"{filename}:{getattr(node, 'lineno', '?')}: {what}")
    return found


def test_core_has_no_file_or_environment_access() -> None:
    offenders = []
    for path in sorted((PACKAGE / "core").rglob("*.py")):
        offenders += core_io_uses(path.read_text(), str(path.relative_to(PACKAGE)))
    assert offenders == []


def test_the_core_scan_catches_each_kind_of_access() -> None:
    """The scan above must be able to fail: each of these is something the core may not do."""
    samples = {
        "open('x')": "open",
        "Path('x').read_text()": ".read_text",
        "p.write_text('y')": ".write_text",
        "p.exists()": ".exists",
        "p.iterdir()": ".iterdir",
        "p.glob('*.yaml')": ".glob",
        "os.environ['HOME']": ".environ",
        "os.getenv('HOME')": ".getenv",
        "from os import environ": "environ",
        "import platformdirs": "import platformdirs",
        "from platformdirs import user_config_path": "import platformdirs",
        "import subprocess": "import subprocess",
        "from subprocess import run": "import subprocess",
    }
    for code, expected in samples.items():
        found = core_io_uses(code, "sample.py")
        assert found, code
        assert expected in found[0], (code, found)
    assert core_io_uses("import re\nfrom pathlib import PurePosixPath\n", "ok.py") == []
