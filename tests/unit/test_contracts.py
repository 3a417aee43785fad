"""The layer contracts in pyproject.toml ([tool.importlinter]) hold, and they do catch a break.

`lint-imports` (import-linter) builds the import graph from the source, so it sees what a grep for
library names cannot: an adapter importing `ops`, a core module reading the environment through
`os`, a lazy import inside a function.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(project: Path) -> subprocess.CompletedProcess[str]:
    if not LINT_IMPORTS.exists():
        pytest.fail("lint-imports is missing: pip install -e '.[dev]'")
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-logo", "--no-cache", "--config", str(project / "pyproject.toml")],
        cwd=project,
        env={"PYTHONPATH": str(project), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_tree_keeps_every_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
    kept = [row for row in result.stdout.splitlines() if " KEPT" in row]
    contracts = ("Features:", "Inside each feature", "Every model is pure", "Only the TUI")
    for contract in contracts:
        assert any(row.startswith(contract) for row in kept), result.stdout


@pytest.fixture
def copy_of_the_package(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "aitherctl", tmp_path / "aitherctl", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # a model reaching for an I/O library, or for aitherctl's own I/O
        ("units.py", "import os", "Every model is pure"),
        ("engines/metrics.py", "import httpx", "Every model is pure"),
        ("gpu/vram.py", "from aitherctl.docker import listing", "Every model is pure"),
        # the order between features: a lower one importing a higher one
        ("units.py", "from aitherctl import paths", "Features:"),
        ("docker/engine.py", "from aitherctl.switching import state", "Features:"),
        ("profiles/catalog.py", "from aitherctl.gpu import model", "Features:"),
        ("routing/router.py", "from aitherctl.serve import discovery", "Features:"),
        # inside a feature: I/O importing its operations, the model importing its I/O
        ("monitor/scrape.py", "from aitherctl.monitor import collect", "Inside each feature"),
        ("routing/table.py", "from aitherctl.routing import ledger", "Inside each feature"),
        ("routing/usage.py", "import textual", "Only the TUI imports Textual"),
    ],
)
def test_a_broken_contract_fails_the_check(
    copy_of_the_package: Path, module: str, line: str, contract: str
) -> None:
    path = copy_of_the_package / "aitherctl" / module
    text = path.read_text()
    # Inside a function, as lazy imports are written: still an import the graph holds.
    path.write_text(text + f"\n\ndef _added() -> None:\n    {line}  # noqa\n")
    result = lint_imports(copy_of_the_package)
    assert result.returncode != 0
    broken = [row for row in result.stdout.splitlines() if " BROKEN" in row]
    assert any(row.startswith(contract) for row in broken), result.stdout
