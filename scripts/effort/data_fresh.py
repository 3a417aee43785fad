"""The fresh external evaluation set (fourth round): pinned public sources labelled only by what
each dataset says about its items, through the rule in LABELLING.md ("Fresh external evaluation").

The rule, this loader and the pins (`evaluate_fresh:` in sources.yaml) were committed before any
score was computed on these items. This module only reads text and labels; it imports no scorer.
Sources are read like data.py's: a bare git snapshot `<root>/<owner>+<name>/repo` at the pinned
commit, or a plain checkout `<root>/<owner>+<name>/<path>`.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import re
import subprocess
import tarfile
from collections import defaultdict
from typing import Any

from data import Example, Seen, SourceReader, evaluation_sets, training_examples

SEED = 2026
SOURCE_CAP = 54  # per source, split evenly over its labels: `SOURCE_CAP // k` per label
SINGLE_LABEL_CAP = 40  # HumanEval, ClassEval

TAL = "math-eval/TAL-SCQ5K"
ODYSSEY = "protagolabs/odyssey-math"
SCIBENCH = "mandyyyyii/scibench"
CMMLU = "haonan-li/CMMLU"
SCIENCEQA = "Think-ScienceQA/Think-ScienceQA.github.io"
EXAMS = "mhardalov/exams-qa"
CLINC = "clinc/oos-eval"
D2C = "ethancaballero/description2code"
HUMANEVAL = "openai/human-eval"
CLASSEVAL = "FudanSELab/ClassEval"

# TAL-SCQ5K's own `difficulty` 0-4 (K-12 competition maths) -> effort (LABELLING.md).
TAL_TARGET = {"0": 3.0, "1": 4.0, "2": 5.0, "3": 6.0, "4": 7.0}
TAL_FILES = {
    "tal-scq5k-en": "en_single_choice_constructed_5K/en_single_choice_test_2K.jsonl",
    "tal-scq5k-zh": "ch_single_choice_constructed_5K/ch_single_choice_test_2K.jsonl",
}
ODYSSEY_TARGET = {
    "high school math": 5.0,
    "college math": 7.0,
    "high school competition": 8.0,
}
# SciBench: one file per textbook; maths textbooks 5 (as college_math), physics/chemistry 7.
SCIBENCH_TARGET = {
    "calculus": 5.0,
    "stat": 5.0,
    "diff": 5.0,
    "fund": 7.0,
    "class": 7.0,
    "thermo": 7.0,
    "quan": 7.0,
    "chemmc": 7.0,
    "atkins": 7.0,
    "matter": 7.0,
}
# CMMLU subjects by the level their name gives, as the MMLU rule of the second round.
CMMLU_LEVELS = (
    ("elementary_", 3.0),
    ("high_school_", 4.0),
    ("college_", 5.0),
    ("professional_", 6.0),
)
D2C_LEVELS = {"easy": 4.0, "medium": 6.0}
HUMANEVAL_PREFIX = "Complete the following Python function.\n\n"
CLASSEVAL_PREFIX = "Complete the following Python class.\n\n"


def multiple_choice(question: str, options: list[tuple[str, str]]) -> str:
    return question.strip() + "\n" + "  ".join(f"{k}. {v.strip()}" for k, v in options)


def _tal(reader: SourceReader, path: str) -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []
    for row in reader.jsonl(TAL, path):
        r: dict[str, Any] = row
        routes = " ".join(str(x) for x in (r.get("knowledge_point_routes") or []))
        contests = " ".join(str(x) for x in (r.get("competition_source_list") or []))
        if "amc" in (routes + " " + contests).lower() or str(r["difficulty"]) not in TAL_TARGET:
            continue
        opts = [
            (str(o[0]["aoVal"]), str(o[0]["content"]))
            for o in r.get("answer_option_list") or []
            if isinstance(o, list) and o
        ]
        rows.append((multiple_choice(str(r["problem"]), opts), TAL_TARGET[str(r["difficulty"])]))
    return rows


def _odyssey(reader: SourceReader) -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []
    for line in reader.jsonl(ODYSSEY, "final-odyssey-math-with-levels.jsonl"):
        for item in line.values():
            if isinstance(item, dict) and str(item.get("level")) in ODYSSEY_TARGET:
                rows.append((str(item["question"]), ODYSSEY_TARGET[str(item["level"])]))
    return rows


def _scibench(reader: SourceReader) -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []
    for book, target in SCIBENCH_TARGET.items():
        items = json.loads(reader.read(SCIBENCH, f"dataset/original/{book}.json"))
        rows.extend((str(r["problem_text"]), target) for r in items)
    return rows


def _cmmlu(reader: SourceReader) -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []
    for path in reader.list(CMMLU, "data/test/"):
        subject = path.rsplit("/", 1)[-1].removesuffix(".csv")
        target = next((t for prefix, t in CMMLU_LEVELS if subject.startswith(prefix)), None)
        if target is None:
            continue
        for r in csv.DictReader(io.StringIO(reader.read(CMMLU, path))):
            rows.append((multiple_choice(r["Question"], [(k, r[k]) for k in "ABCD"]), target))
    return rows


def _complete_entries(text: str) -> dict[str, dict[str, Any]]:
    """The complete `"id": {...}` entries of a JSON object that may be cut off (the ScienceQA
    copy is): entries are decoded in order until the first one that does not parse."""
    decoder = json.JSONDecoder()
    key = re.compile(r'\s*"([^"]+)"\s*:\s*')
    comma = re.compile(r"\s*,")
    out: dict[str, dict[str, Any]] = {}
    pos = text.index("{") + 1
    while (m := key.match(text, pos)) is not None:
        try:
            value, pos = decoder.raw_decode(text, m.end())
        except json.JSONDecodeError:
            break
        out[m.group(1)] = value
        if (c := comma.match(text, pos)) is None:
            break
        pos = c.end()
    return out


def _scienceqa_target(grade: str) -> float:
    n = int(grade.removeprefix("grade"))
    return 2.0 if n <= 3 else 3.0 if n <= 6 else 4.0


def _scienceqa(reader: SourceReader) -> list[tuple[str, float]]:
    problems = _complete_entries(reader.read(SCIENCEQA, "data/scienceqa/problems.json"))
    rows: list[tuple[str, float]] = []
    for p in problems.values():
        if p.get("image"):
            continue
        letters = "ABCDEFGH"
        choices = [str(c) for c in p.get("choices") or []]
        hint = str(p.get("hint") or "").strip()
        question = (hint + "\n" if hint else "") + str(p["question"])
        rows.append(
            (
                multiple_choice(question, list(zip(letters, choices, strict=False))),
                _scienceqa_target(str(p["grade"])),
            )
        )
    return rows


def _exams_target(grade: int) -> float:
    return 3.0 if grade <= 6 else 4.0 if grade <= 11 else 5.0


def _exams(reader: SourceReader) -> list[tuple[str, float]]:
    raw = reader.read_bytes(EXAMS, "data/exams/multilingual/test.jsonl.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        member = tar.extractfile("test.jsonl")
        assert member is not None
        lines = member.read().decode("utf-8").splitlines()
    rows: list[tuple[str, float]] = []
    for line in lines:
        if not line.strip():
            continue
        r = json.loads(line)
        q = r["question"]
        opts = [(str(c["label"]), str(c["text"])) for c in q["choices"]]
        rows.append((multiple_choice(str(q["stem"]), opts), _exams_target(int(r["info"]["grade"]))))
    return rows


def _clinc(reader: SourceReader) -> list[tuple[str, float]]:
    domains = json.loads(reader.read(CLINC, "data/domains.json"))
    domain_of = {intent: d for d, intents in domains.items() for intent in intents}
    data = json.loads(reader.read(CLINC, "data/data_full.json"))
    return [
        (str(text), 1.0 if domain_of[intent] == "small_talk" else 2.0)
        for text, intent in data["test"]
    ]


def _codechef(reader: SourceReader) -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []
    for level, target in D2C_LEVELS.items():
        folder = f"codechef_data_currently/{level}/"
        for problem in reader.list(D2C, folder):
            if problem.endswith(".DS_Store"):
                continue
            try:
                text = reader.read(D2C, f"{problem}/description/description.txt")
            except subprocess.CalledProcessError:
                continue  # a problem folder without a description
            rows.append((text, target))
    return rows


def _humaneval(reader: SourceReader) -> list[tuple[str, float]]:
    text = gzip.decompress(reader.read_bytes(HUMANEVAL, "data/HumanEval.jsonl.gz")).decode()
    return [
        (HUMANEVAL_PREFIX + json.loads(line)["prompt"], 4.0)
        for line in text.splitlines()
        if line.strip()
    ]


def _classeval(reader: SourceReader) -> list[tuple[str, float]]:
    items = json.loads(reader.read(CLASSEVAL, "data/ClassEval_data.json"))
    return [(CLASSEVAL_PREFIX + str(r["skeleton"]), 5.0) for r in items]


def stratified(
    rows: list[tuple[str, float]], cap: int, rng: random.Random
) -> list[tuple[str, float]]:
    """At most `cap // k` items per label (k labels), a seeded sample; order: by label."""
    by_label: dict[float, list[tuple[str, float]]] = defaultdict(list)
    for row in rows:
        by_label[row[1]].append(row)
    per_label = cap // max(1, len(by_label))
    out: list[tuple[str, float]] = []
    for label in sorted(by_label):
        group = by_label[label]
        out.extend(rng.sample(group, per_label) if len(group) > per_label else group)
    return out


def _fresh_sources(reader: SourceReader) -> list[tuple[str, list[tuple[str, float]], int]]:
    """Each fresh source's name, every labelled item it has (stripped, empty ones dropped) and
    its cap in the evaluation sample."""
    loaders: list[tuple[str, list[tuple[str, float]], int]] = [
        *((name, _tal(reader, path), SOURCE_CAP) for name, path in TAL_FILES.items()),
        ("mathodyssey", _odyssey(reader), SOURCE_CAP),
        ("scibench", _scibench(reader), SOURCE_CAP),
        ("cmmlu", _cmmlu(reader), SOURCE_CAP),
        ("scienceqa", _scienceqa(reader), SOURCE_CAP),
        ("exams-multilingual", _exams(reader), SOURCE_CAP),
        ("clinc150", _clinc(reader), SOURCE_CAP),
        ("description2code-codechef", _codechef(reader), SOURCE_CAP),
        ("humaneval", _humaneval(reader), SINGLE_LABEL_CAP),
        ("classeval", _classeval(reader), SINGLE_LABEL_CAP),
    ]
    return [
        (name, [(p.strip(), t) for p, t in loaded if p and p.strip()], cap)
        for name, loaded, cap in loaders
    ]


def fresh_training_examples(reader: SourceReader, cap: int) -> list[Example]:
    """The fourth round's fresh sources as training data (fifth round on: that set has been
    scored, so it is no longer unseen): at most `cap` items per source, stratified by label as
    the evaluation sample was, a seeded sample of its own."""
    held_out = Seen(e.prompt for rows in evaluation_sets(reader).values() for e in rows)
    rng = random.Random(SEED + 1)
    return [
        Example(p, t, name)
        for name, rows, _ in _fresh_sources(reader)
        for p, t in stratified(rows, cap, rng)
        if p not in held_out
    ]


def fresh_evaluation_sets(reader: SourceReader) -> dict[str, list[Example]]:
    """One entry per fresh source, plus "fresh (all)"; labels per LABELLING.md (fourth round).
    A prompt equal to a training or existing evaluation prompt (normalised text, or its first 60
    characters) is dropped, after the seeded sample."""
    seen = Seen(
        [
            *(e.prompt for e in training_examples(reader, extra=("flask", "followbench"))),
            *(e.prompt for rows in evaluation_sets(reader).values() for e in rows),
        ]
    )
    rng = random.Random(SEED)
    out: dict[str, list[Example]] = {}
    for name, rows, cap in _fresh_sources(reader):
        sample = stratified(rows, cap, rng)
        out[name] = [Example(p, t, name) for p, t in sample if p not in seen]
    out["fresh (all)"] = [e for rows in list(out.values()) for e in rows]
    return out
