"""The second fresh external evaluation set (fifth round): pinned public sources labelled only by
what each dataset says about its items, through the rule in LABELLING.md ("Fresh external
evaluation (fifth round)").

The rule, this loader and the pins (`evaluate_fresh2:` in sources.yaml) were committed before any
score was computed on these items. This module only reads text and labels; it imports no scorer.
Sources are read like data.py's: a bare git snapshot `<root>/<owner>+<name>/repo` at the pinned
commit, or a plain checkout `<root>/<owner>+<name>/<path>`. The fourth round's fresh set
(data_fresh.py) is training data from this round on, so the duplicate guard covers it too.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import subprocess
import zipfile
from html.parser import HTMLParser

from data import Example, Seen, SourceReader, evaluation_sets, training_examples
from data_fresh import fresh_evaluation_sets, multiple_choice, stratified

SEED = 2026
SOURCE_CAP = 54  # per source, split evenly over its labels: `SOURCE_CAP // k` per label
SINGLE_LABEL_CAP = 40  # a source with one label (none in this round; kept for the rule)

ALIGNBENCH = "THUDM/AlignBench"
HWU = "xliuhw/NLU-Evaluation-Data"
WILD = "XueFuzhao/InstructionWild"
TABMWP = "lupantech/PromptPG"
M3KE = "tjunlp-lab/M3KE"
EXERCISM = "exercism/python"
CODEJAM = "google/coding-competitions-archive"
OLYMMATH = "RUCAIBox/OlymMATH"
PUTNAM = "trishullab/PutnamBench"

# "Hard maths or contest problems" of this set (LABELLING.md, fifth round): an item labelled 7 or
# more from one of these sources (contest maths, programming contests); none may land in 1-3.
HARD_SOURCES = ("olymmath", "putnambench", "codejam")

# AlignBench's own `category` (and, where named, `subcategory`) -> effort (LABELLING.md).
ALIGNBENCH_TARGET = {
    "基本任务": 2.0,  # fundamental language tasks: classification, extraction, look-up
    "中文理解": 3.0,  # Chinese understanding: words, culture
    "综合问答": 4.0,  # open-ended questions: advice, opinion
    "文本写作": 5.0,  # writing
    "角色扮演": 5.0,  # task-oriented role play (writing in a role)
    "专业能力": 6.0,  # professional knowledge
    "逻辑推理": 6.0,  # logical reasoning
}
ALIGNBENCH_SUBTARGET = {
    "翻译": 3.0,  # translation (fundamental tasks): rewrite, as BELLE's rewrite
    "初等数学": 4.0,  # elementary (school) mathematics
    "高等数学": 5.0,  # higher (university) mathematics
    "应用数学": 5.0,  # applied mathematics
}
HWU_TESTSET = (
    "CrossValidation/autoGeneFromRealAnno/autoGene_2018_03_22-13_01_25_169/"
    "CrossValidation/KFold_1/testset/csv/"
)
# InstructionWild v2 (Twitter instructions), its own `instruction_type` -> effort, as BELLE's class.
WILD_TARGET = {
    "Chat": 1.0,
    "Classification": 2.0,
    "Closed QA": 2.0,
    "Rewrite": 3.0,
    "Open QA": 3.0,
    "Brainstorming": 4.0,
    "Summarization": 4.0,
    "Generation": 5.0,
}
# M3KE: the education level in each test file's name (`<subject>-<cluster>-<level>.jsonl`);
# "High schoo" is the file name's own spelling for physics. Level "Other" is not read.
M3KE_TARGET = {
    "Primary school": 3.0,
    "Junior high school": 4.0,
    "High school": 4.0,
    "High schoo": 4.0,
    "College": 5.0,
}
EXERCISM_PREFIX = "Write a Python solution to the following exercise.\n\n"
# Code Jam archive: the contest and round (its folder) -> effort (LABELLING.md).
CODEJAM_ROUNDS = {
    "qualification_round": 5.0,
    "round_1a": 6.0,
    "round_1b": 6.0,
    "round_1c": 6.0,
    "round_2": 7.0,
    "round_3": 8.0,
    "world_finals": 9.0,
    "virtual_world_finals": 9.0,
}
KICKSTART_TARGET = 4.0  # every Kick Start round except its practice rounds
OLYMMATH_TARGET = {"EASY": 9.0, "HARD": 10.0}
PUTNAM_NAME = re.compile(r"putnam_\d{4}_[ab]([1-6])")


def _alignbench(reader: SourceReader) -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []
    for r in reader.jsonl(ALIGNBENCH, "data/data_v1.1_release.jsonl"):
        target = ALIGNBENCH_SUBTARGET.get(
            str(r.get("subcategory")), ALIGNBENCH_TARGET.get(str(r["category"]))
        )
        if target is not None:
            rows.append((str(r["question"]), target))
    return rows


def _hwu64(reader: SourceReader) -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []
    for path in reader.list(HWU, HWU_TESTSET):
        table = csv.DictReader(io.StringIO(reader.read(HWU, path)), delimiter=";")
        rows.extend(
            (str(r["answer_from_anno"]), 1.0 if r["scenario"] == "general" else 2.0) for r in table
        )
    return rows


def _instructionwild(reader: SourceReader) -> list[tuple[str, float]]:
    return [
        (str(r["instruction"]), WILD_TARGET[str(r["instruction_type"])])
        for r in reader.jsonl(WILD, "data_v2/user_1.jsonl")
        if str(r.get("instruction_type")) in WILD_TARGET
    ]


def _tabmwp_target(grade: int) -> float:
    return 2.0 if grade <= 3 else 3.0 if grade <= 6 else 4.0


def _tabmwp(reader: SourceReader) -> list[tuple[str, float]]:
    problems = json.loads(reader.read(TABMWP, "data/tabmwp/problems_test1k.json"))
    rows: list[tuple[str, float]] = []
    for p in problems.values():
        question = f"{p.get('table_title') or ''}\n{p['table']}\n\n{p['question']}".strip()
        if p.get("choices"):
            question = multiple_choice(
                question, list(zip("ABCDEFGH", map(str, p["choices"]), strict=False))
            )
        rows.append((question, _tabmwp_target(int(p["grade"]))))
    return rows


def _m3ke(reader: SourceReader) -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []
    with zipfile.ZipFile(io.BytesIO(reader.read_bytes(M3KE, "data/M3KE.zip"))) as archive:
        for name in sorted(archive.namelist()):
            level = name.removesuffix(".jsonl").rsplit("-", 1)[-1]
            if not name.startswith("test/") or level not in M3KE_TARGET:
                continue
            for line in archive.read(name).decode("utf-8").splitlines():
                if line.strip():
                    r = json.loads(line)
                    opts = [(k, str(r[k])) for k in "ABCD"]
                    rows.append((multiple_choice(str(r["question"]), opts), M3KE_TARGET[level]))
    return rows


def _exercism_target(difficulty: int) -> float:
    """Exercism's own 1-10 difficulty, in its three published bands: easy 1-3, medium 4-7,
    hard 8-10."""
    return 4.0 if difficulty <= 3 else 5.0 if difficulty <= 7 else 6.0


def _exercism(reader: SourceReader) -> list[tuple[str, float]]:
    config = json.loads(reader.read(EXERCISM, "config.json"))
    rows: list[tuple[str, float]] = []
    for ex in config["exercises"]["practice"]:
        if ex.get("status", "active") == "deprecated":
            continue
        path = f"exercises/practice/{ex['slug']}/.docs/instructions.md"
        try:
            text = reader.read(EXERCISM, path)
        except subprocess.CalledProcessError:
            continue  # an exercise without instructions
        rows.append((EXERCISM_PREFIX + text, _exercism_target(int(ex["difficulty"]))))
    return rows


class _Text(HTMLParser):
    """The visible text of a problem statement page: no script or style, one line per block."""

    BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "pre", "table"})

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        del attrs  # HTMLParser's signature; attributes are not text
        if tag in ("script", "style", "head"):
            self.skip += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head"):
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)

    def text(self) -> str:
        lines = (" ".join(line.split()) for line in "".join(self.parts).splitlines())
        return "\n".join(line for line in lines if line)


def _html_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    parser.close()
    return parser.text()


def _codejam(reader: SourceReader) -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []
    for contest in ("codejam/", "kickstart/"):
        for year in reader.list(CODEJAM, contest):
            for round_path in reader.list(CODEJAM, year + "/"):
                name = round_path.rsplit("/", 1)[-1]
                if contest == "codejam/":
                    target = CODEJAM_ROUNDS.get(name)
                else:
                    target = None if name.startswith("practice") else KICKSTART_TARGET
                if target is None:
                    continue
                for problem in reader.list(CODEJAM, round_path + "/"):
                    try:
                        html = reader.read(CODEJAM, f"{problem}/problem_statement/problem.html")
                    except subprocess.CalledProcessError:
                        continue  # a problem folder without a statement page
                    rows.append((_html_text(html), target))
    return rows


def _olymmath(reader: SourceReader) -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []
    for lang in ("EN", "ZH"):
        for level, target in OLYMMATH_TARGET.items():
            rows.extend(
                (str(r["problem"]), target)
                for r in reader.jsonl(OLYMMATH, f"data/OlymMATH-{lang}-{level}.jsonl")
            )
    return rows


def _putnam_target(number: int) -> float:
    """The problem's place in its session (A1-A6, B1-B6 are set in rising difficulty)."""
    return 8.0 if number <= 2 else 9.0 if number <= 4 else 10.0


def _putnam(reader: SourceReader) -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []
    for r in json.loads(reader.read(PUTNAM, "informal/putnam.json")):
        m = PUTNAM_NAME.fullmatch(str(r["problem_name"]))
        if m is not None:
            rows.append((str(r["informal_statement"]), _putnam_target(int(m.group(1)))))
    return rows


def is_hard(row: Example) -> bool:
    """A hard maths or contest problem of this set (LABELLING.md): none may land in 1-3."""
    return row.source in HARD_SOURCES and row.target >= 7


def fresh2_evaluation_sets(reader: SourceReader) -> dict[str, list[Example]]:
    """One entry per source of the fifth round, plus "fresh2 (all)"; labels per LABELLING.md.
    A prompt equal to a training prompt (the fourth round's fresh set included) or an existing
    evaluation prompt (normalised text, or its first 60 characters) is dropped, after the seeded
    sample."""
    seen = Seen(
        [
            *(e.prompt for e in training_examples(reader, extra=("flask", "followbench"))),
            *(e.prompt for rows in fresh_evaluation_sets(reader).values() for e in rows),
            *(e.prompt for rows in evaluation_sets(reader).values() for e in rows),
        ]
    )
    rng = random.Random(SEED)
    loaders: list[tuple[str, list[tuple[str, float]], int]] = [
        ("alignbench", _alignbench(reader), SOURCE_CAP),
        ("hwu64", _hwu64(reader), SOURCE_CAP),
        ("instructionwild", _instructionwild(reader), SOURCE_CAP),
        ("tabmwp", _tabmwp(reader), SOURCE_CAP),
        ("m3ke", _m3ke(reader), SOURCE_CAP),
        ("exercism-python", _exercism(reader), SOURCE_CAP),
        ("codejam", _codejam(reader), SOURCE_CAP),
        ("olymmath", _olymmath(reader), SOURCE_CAP),
        ("putnambench", _putnam(reader), SOURCE_CAP),
    ]
    out: dict[str, list[Example]] = {}
    for name, loaded, cap in loaders:
        rows = [(p.strip(), t) for p, t in loaded if p and p.strip()]
        labels = {t for _, t in rows}
        sample = stratified(rows, cap if len(labels) > 1 else SINGLE_LABEL_CAP, rng)
        out[name] = [Example(p, t, name) for p, t in sample if p not in seen]
    out["fresh2 (all)"] = [e for rows in list(out.values()) for e in rows]
    return out
