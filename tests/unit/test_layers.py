"""The layers hold: every feature's pure model does no I/O (imports or file/environment access),
and the monitor's TUI is the only Textual user.

The models are the source modules of pyproject.toml's "Every model is pure" contract: one list, read
here too, so a module added to it is checked both ways."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "aitherctl"
FORBIDDEN_IN_MODELS = (
    "docker",
    "pynvml",
    "httpx",
    "aiohttp",
    "rich",
    "textual",
    "psutil",
    "sqlite3",
    "aitherctl.cli",
    "aitherctl.tui",
    "aitherctl.paths",
    "aitherctl.docker.engine",
    "aitherctl.gpu.nvml",
)


def model_files() -> list[Path]:
    """Each file of the models named by the purity contract (a package stands for all of it)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contract = next(
        c
        for c in config["tool"]["importlinter"]["contracts"]
        if c["name"].startswith("Every model is pure")
    )
    files: list[Path] = []
    for name in contract["source_modules"]:
        path = ROOT / name.replace(".", "/")
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
    return files


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_importing_every_model_loads_no_io_library() -> None:
    modules = [module_name(path) for path in model_files()]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n    importlib.import_module(name)\n"
        f"print([m for m in {FORBIDDEN_IN_MODELS!r} if m in sys.modules])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", f"a model imported: {result.stdout.strip()}"
    assert len(modules) >= 30


def test_only_the_tui_imports_textual() -> None:
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "tui" not in path.parts
        and any(
            line.lstrip().startswith(("import textual", "from textual"))
            for line in path.read_text().splitlines()
        )
    ]
    assert offenders == []


# What "no file or environment access" means for a model, checked on its source (an import
# check cannot see `Path.read_text()` or `os.environ`): files, folders, the environment and
# processes belong in each feature's I/O modules.
FORBIDDEN_CALLS = {"open", "exec", "eval", "__import__"}
FORBIDDEN_METHODS = {
    "read_text",
    "write_text",
    "read_bytes",
    "write_bytes",
    "exists",
    "is_file",
    "is_dir",
    "iterdir",
    "glob",
    "rglob",
    "mkdir",
    "unlink",
    "rmdir",
    "touch",
    "stat",
    "samefile",
    "expanduser",
    "expandvars",
    "getenv",
    "putenv",
    "listdir",
    "scandir",
    "walk",
    "home",
    "cwd",
}
FORBIDDEN_NAMES = {"environ", "environb", "platformdirs", "subprocess", "shutil", "tempfile"}


def model_io_uses(source: str, filename: str) -> list[str]:
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


def test_models_have_no_file_or_environment_access() -> None:
    files = model_files()
    offenders = []
    for path in files:
        offenders += model_io_uses(path.read_text(), str(path.relative_to(PACKAGE)))
    assert offenders == []
    assert len(files) >= 30


def test_the_core_scan_catches_each_kind_of_access() -> None:
    """The scan above must be able to fail: each of these is something a model may not do."""
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
        found = model_io_uses(code, "sample.py")
        assert found, code
        assert expected in found[0], (code, found)
    assert model_io_uses("import re\nfrom pathlib import PurePosixPath\n", "ok.py") == []


# HTTP clients, one per place (pyproject.toml's "aiohttp only inside serve" and "Serve talks to
# backends through aiohttp" contracts hold the rest): no fourth stack. `requests` and `urllib3`
# are the Docker SDK's transport: met only where the SDK is driven (its exceptions, its SSH
# connection classes), nowhere else.
NO_HTTP_STACK = ("http.client", "urllib.request")
REQUESTS_ONLY_IN = ("docker/", "gpu/remote.py")


def imported_modules(source: str, filename: str) -> list[tuple[int, str]]:
    """(line, module) of every import in `source`, inside functions too."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found += [(node.lineno, node.module)]
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def http_stack_offences(source: str, filename: str) -> list[str]:
    def offends(module: str) -> bool:
        if module in NO_HTTP_STACK or module.startswith(tuple(f"{m}." for m in NO_HTTP_STACK)):
            return True
        sdk = module.partition(".")[0] in ("requests", "urllib3")
        return sdk and not filename.startswith(REQUESTS_ONLY_IN)

    found = imported_modules(source, filename)
    return [f"{filename}:{line}: {module}" for line, module in found if offends(module)]


def test_no_fourth_http_stack() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = str(path.relative_to(PACKAGE))
        offenders += http_stack_offences(path.read_text(), name)
    assert offenders == []


def test_the_http_stack_scan_can_fail() -> None:
    assert http_stack_offences("def f():\n    import http.client\n", "monitor/x.py") == [
        "monitor/x.py:2: http.client"
    ]
    assert http_stack_offences("from http import client\n", "a.py") == ["a.py:1: http.client"]
    assert http_stack_offences("import requests.exceptions\n", "routing/x.py") != []
    assert http_stack_offences("import requests.exceptions\n", "docker/engine.py") == []
    assert http_stack_offences("from http import HTTPStatus\n", "serve/x.py") == []
