"""Imports scripts/gen-completions.py (its file name is not a module name)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_path = Path(__file__).resolve().parents[2] / "scripts" / "gen-completions.py"
_spec = importlib.util.spec_from_file_location("gen_completions", _path)
assert _spec
assert _spec.loader
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
scripts = _module.scripts
