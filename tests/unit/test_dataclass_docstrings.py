"""Every dataclass under aitherctl/ has a docstring.

On Python 3.11, `@dataclass` gives a class that has no docstring a `__doc__` built at import time
from `inspect.signature(cls)`, which is slow: measured at about 3 ms of `aitherctl run`'s start-up
(18 such classes on that path). A written docstring skips that work, and documents the class.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "aitherctl"


def is_dataclass(node: ast.ClassDef) -> bool:
    """Decorated `@dataclass` or `@dataclasses.dataclass`, called with arguments or not."""
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Name) and target.id == "dataclass":
            return True
        if isinstance(target, ast.Attribute) and target.attr == "dataclass":
            return True
    return False


def undocumented_dataclasses(package: Path) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ClassDef)
                and is_dataclass(node)
                and ast.get_docstring(node) is None
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    return found


def test_the_walk_finds_dataclasses() -> None:
    tree = ast.parse((PACKAGE / "switching" / "plan.py").read_text(encoding="utf-8"))
    classes = [node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    assert any(is_dataclass(node) for node in classes)


def test_every_dataclass_has_a_docstring() -> None:
    missing = undocumented_dataclasses(PACKAGE)
    assert not missing, "dataclasses without a docstring:\n" + "\n".join(missing)
