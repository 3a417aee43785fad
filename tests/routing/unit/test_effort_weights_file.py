"""The shipped weights file is exactly what scripts/effort/train.py writes for its weights.

`train.py` rebuilds aitherctl/routing/effort_weights.py byte for byte from the pinned sources; the
last step of that promise is its writer. Writing the shipped file's own weights back must give the
shipped file, so the file's form (and its load time: the words' weights are two tuples of
constants, not a dict display) is the writer's and cannot drift by hand.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections import Counter
from pathlib import Path

from aitherctl.routing import effort_weights

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "aitherctl" / "routing" / "effort_weights.py"


def _train_module():  # type: ignore[no-untyped-def]
    scripts = str(ROOT / "scripts" / "effort")
    sys.path.insert(0, scripts)
    try:
        spec = importlib.util.spec_from_file_location(
            "effort_train", ROOT / "scripts/effort/train.py"
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up there
        try:
            spec.loader.exec_module(module)
        finally:
            del sys.modules[spec.name]
        return module
    finally:
        sys.path.remove(scripts)


def test_writing_the_shipped_weights_gives_the_shipped_file(tmp_path: Path) -> None:
    train = _train_module()
    assert train.OUT == SHIPPED  # its default output is the shipped file
    per_source = Counter(
        {
            m.group(1): int(m.group(2))
            for m in re.finditer(r"^  (\S+): (\d+)$", effort_weights.__doc__ or "", re.MULTILINE)
        }
    )
    assert per_source, "the sources' counts are listed in the module docstring"
    out = tmp_path / "effort_weights.py"
    train.write_weights(
        out,
        effort_weights.BIAS,
        list(effort_weights.CUE_NAMES),
        [list(tree) for tree in effort_weights.TREES],
        terms=dict(effort_weights.TERM_WEIGHTS),
        per_source=per_source,
    )
    assert out.read_bytes() == SHIPPED.read_bytes()


def test_the_words_weights_pair_each_word_with_its_weight() -> None:
    assert (
        len(effort_weights.TERMS) == len(effort_weights.WEIGHTS) == len(effort_weights.TERM_WEIGHTS)
    )
    assert list(effort_weights.TERMS) == sorted(effort_weights.TERMS)
    assert effort_weights.TERM_WEIGHTS[effort_weights.TERMS[0]] == effort_weights.WEIGHTS[0]
    assert effort_weights.TERM_WEIGHTS[effort_weights.TERMS[-1]] == effort_weights.WEIGHTS[-1]
