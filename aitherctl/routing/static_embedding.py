"""What a prompt means, as numbers: the static word embedding the effort scorer reads.

WordLlama's token table (the `wordllama` package ships it inside its wheel: 32,000 tokens x 256
dimensions, float16, 16 MB) with the tokenizer it was trained with. A prompt's embedding is the mean
of its tokens' rows; three of them are read, each scaled to length 1:

- the whole prompt (what it is about),
- its first SEGMENT_TOKENS tokens (where a request usually says what it wants),
- its last SEGMENT_TOKENS tokens (where a question after a pasted passage says it).

Nothing is downloaded: the files are found inside the installed package, whose Python code is never
imported (it pulls pydantic and requests for its downloader, ~1 s). The table is memory-mapped, so
only the rows a prompt uses are read from disk. Loading costs the imports of numpy and tokenizers
and the tokenizer's JSON (tens of milliseconds); it happens on the first prompt that must be scored,
once per process. Very long prompts are cut to their head and tail first (MAX_CHARS) so that scoring
stays well under a millisecond.
"""

from __future__ import annotations

import importlib.util
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aitherctl.routing.effort import EffortScore

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from aitherctl.routing.effort_model import LearnedEffortScorer

SEGMENT_TOKENS = 32
DIM = 256
SEGMENTS = ("whole", "opening", "closing")
HEAD_CHARS = 4000
TAIL_CHARS = 2000
MAX_CHARS = HEAD_CHARS + TAIL_CHARS
_WEIGHTS = "weights/l2_supercat_256.safetensors"
_TOKENIZER = "tokenizers/l2_supercat_tokenizer_config.json"
# The table must be the one the head was trained on: the first rows' sum, checked once at load.
_TABLE_ROWS = 32000


class EmbeddingUnavailableError(RuntimeError):
    """The `wordllama` package (which ships the table) is missing or not the expected version."""


def package_files() -> tuple[Path, Path]:
    """The table and the tokenizer inside the installed `wordllama` package (not imported)."""
    spec = importlib.util.find_spec("wordllama")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingUnavailableError(
            "the effort scorer needs the 'wordllama' package (pip install wordllama)"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    table, tokenizer = root / _WEIGHTS, root / _TOKENIZER
    if not table.is_file() or not tokenizer.is_file():
        raise EmbeddingUnavailableError(
            f"the 'wordllama' package at {root} lacks {_WEIGHTS} or {_TOKENIZER}; "
            "reinstall the version in pyproject.toml"
        )
    return table, tokenizer


@dataclass(frozen=True, slots=True)
class StaticEmbedding:
    """Token table + tokenizer: `vector(text)` is the three segment means, 3 x DIM numbers."""

    table: NDArray[np.float16]
    tokenizer: Any  # tokenizers.Tokenizer (untyped)

    @classmethod
    def shipped(cls) -> StaticEmbedding:
        import numpy as np
        from tokenizers import Tokenizer

        table_path, tokenizer_path = package_files()
        with table_path.open("rb") as fh:
            header_len = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(header_len))
        entry = header["embedding.weight"]
        if entry["dtype"] != "F16" or entry["shape"] != [_TABLE_ROWS, DIM]:
            raise EmbeddingUnavailableError(
                f"unexpected embedding table in {table_path}: {entry['dtype']} {entry['shape']}"
            )
        table = np.memmap(
            table_path, dtype=np.float16, mode="r", offset=8 + header_len, shape=(_TABLE_ROWS, DIM)
        )
        return cls(table, Tokenizer.from_file(str(tokenizer_path)))

    def token_ids(self, text: str) -> list[int]:
        if len(text) > MAX_CHARS:
            text = text[:HEAD_CHARS] + " " + text[-TAIL_CHARS:]
        ids: list[int] = self.tokenizer.encode(text, add_special_tokens=False).ids
        return ids or [0]

    def vector(self, text: str) -> NDArray[np.float32]:
        """The whole prompt's, its opening's and its closing's mean token vectors, each of
        length 1, one after the other (3 x DIM)."""
        import numpy as np

        rows = self.table[self.token_ids(text)].astype(np.float32)
        parts = []
        for part in (rows, rows[:SEGMENT_TOKENS], rows[-SEGMENT_TOKENS:]):
            mean = part.mean(axis=0)
            parts.append(mean / (float(np.linalg.norm(mean)) + 1e-8))
        return np.concatenate(parts)

    def checksum(self) -> float:
        """A fingerprint of the table (sum of its first 64 rows), stored with the weights."""
        import numpy as np

        return round(float(np.asarray(self.table[:64], dtype=np.float64).sum()), 3)


_LEARNED: list[LearnedEffortScorer] = []


def learned_scorer() -> LearnedEffortScorer:
    """The default `EffortScorer`: the shipped weights over the shipped embedding, loaded on the
    first prompt that must be scored and then shared by the process (`serve` keeps it)."""
    if not _LEARNED:
        from aitherctl.routing import effort_weights
        from aitherctl.routing.effort_model import LearnedEffortScorer

        embedding = None
        if hasattr(effort_weights, "HEAD"):
            embedding = StaticEmbedding.shipped()
            if embedding.checksum() != getattr(effort_weights, "TABLE_CHECKSUM", None):
                raise EmbeddingUnavailableError(
                    "the installed 'wordllama' package's table is not the one the effort scorer "
                    "was trained on; install the version in pyproject.toml"
                )
        _LEARNED.append(LearnedEffortScorer.from_module(effort_weights, embedding))
    return _LEARNED[0]


def candidate_scorer(path: Path | str) -> LearnedEffortScorer:
    """A candidate weights module (scripts/effort/train_embedding.py --out) with the shipped
    embedding when it has a head: what scripts/effort/evaluate.py and bench/bench_effort.py
    score and time with `--weights`."""
    import importlib.util

    from aitherctl.routing.effort_model import LearnedEffortScorer

    spec = importlib.util.spec_from_file_location("effort_weights_candidate", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    embedding = StaticEmbedding.shipped() if hasattr(module, "HEAD") else None
    return LearnedEffortScorer.from_module(module, embedding)


def score_effort(prompt: str, system: str | None = None) -> EffortScore:
    """Score `prompt` from 1 to 10 with the learned scorer."""
    return learned_scorer().score(prompt, system)
