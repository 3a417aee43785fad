"""Read the pinned public sources of scripts/effort/sources.yaml into labelled prompts.

Each source is read from a local copy of its repository at the pinned commit: either a bare git
snapshot (`<root>/<owner>+<name>/repo`, read with `git show <commit>:<path>`) or a plain checkout
(`<root>/<owner>+<name>/<path>`). Labels follow scripts/effort/LABELLING.md, nothing else.
"""

from __future__ import annotations

import csv
import io
import json
import random
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCES = Path(__file__).with_name("sources.yaml")
TIER_TARGET = {"reflex": 2.0, "orchestrator": 5.0, "reasoning": 7.5, "frontier": 9.5}


@dataclass(frozen=True, slots=True)
class Example:
    prompt: str
    target: float  # the effort the dataset's own label maps to (LABELLING.md)
    source: str


class SourceReader:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.pins = {
            entry["repo"]: entry.get("commit")
            for group in yaml.safe_load(SOURCES.read_text(encoding="utf-8")).values()
            for entry in group
        }

    def read(self, repo: str, path: str) -> str:
        return self.read_bytes(repo, path).decode("utf-8")

    def read_bytes(self, repo: str, path: str) -> bytes:
        """A file at the pinned commit, as bytes (some sources are compressed)."""
        commit = self.pins[repo]
        folder = self.root / repo.replace("/", "+")
        git_dir = folder / "repo"
        if git_dir.is_dir():
            out = subprocess.run(
                ["git", f"--git-dir={git_dir}", "show", f"{commit}:{path}"],
                check=True,
                capture_output=True,
            )
            return out.stdout
        return (folder / path).read_bytes()

    def list(self, repo: str, folder: str) -> list[str]:
        """The files under `folder` at the pinned commit."""
        commit = self.pins[repo]
        git_dir = self.root / repo.replace("/", "+") / "repo"
        if git_dir.is_dir():
            out = subprocess.run(
                ["git", f"--git-dir={git_dir}", "ls-tree", "--name-only", f"{commit}:{folder}"],
                check=True,
                capture_output=True,
                text=True,
            )
            return [folder + name for name in sorted(out.stdout.split())]
        base = self.root / repo.replace("/", "+")
        return sorted(str(p.relative_to(base)) for p in (base / folder).iterdir())

    def jsonl(self, repo: str, path: str) -> Iterator[dict[str, object]]:
        for line in self.read(repo, path).splitlines():
            if line.strip():
                yield json.loads(line)


QWEN = "QwenLM/Qwen2.5-Math"
WIZARD = "nlpxucan/WizardLM"
CHAT = "ntulsi/BotBuilder-PersonalityChat"
BELLE = "LianjiaTech/BELLE"
AGIEVAL = "ruixiangcui/AGIEval"
NQ = "google-research-datasets/natural-questions"
EXPERTQA = "chaitanyamalaviya/ExpertQA"
EXPERTQA_DIRECTED = "Directed question that has a single unambiguous answer"
XQUAD = "google-deepmind/xquad"
ROUTELLM = "lm-sys/RouteLLM"
FLASK = "kaistAI/FLASK"
FOLLOWBENCH = "YJiangcm/FollowBench"
# FLASK's annotated difficulty level -> effort (LABELLING.md, third round).
FLASK_TARGET = {
    "simple lifestyle knowledge": 2.0,
    "advanced lifestyle knowledge": 3.0,
    "formal education knowledge": 4.0,
    "major level knowledge": 5.5,
    "expert level knowledge": 7.0,
}
# FLASK `task` values not read: our evaluation sets (WizardLM's test set holds Vicuna's questions),
# the reserved sets and their copies, BIG-bench (canary).
FLASK_SKIPPED = (
    "Wizardlm",
    "Vicuna",
    "Gsm8k",
    "Prm800k",
    "Leetcode",
    "Agieval - math (amc + aime)",
    "Bbh",
)
FOLLOWBENCH_FILES = ("content", "example", "format", "mixed", "situation", "style")
FOLLOWBENCH_SKIPPED = ("gsm_8k", "BBH_logical", "BBH_time", "vicuna")
# MMLU subjects by the level their name gives (LABELLING.md); an optional source (--extra).
MMLU_LEVELS = (
    ("elementary_", 3.0),
    ("high_school_", 4.0),
    ("college_", 5.0),
    ("professional_", 6.0),
)
XQUAD_LANGUAGES = ("en", "de", "es", "ru", "zh")
# BELLE eval set: the dataset's own `class` of each instruction -> effort (LABELLING.md).
BELLE_TARGET = {
    "classification": 2.0,
    "closed qa": 2.0,
    "extract": 2.0,
    "math": 2.0,
    "rewrite": 3.0,
    "open qa": 3.0,
    "brainstorming": 4.0,
    "summarization": 4.0,
    "generation": 5.0,
    "code": 5.0,
}
# Sixth round (issue 21): summarising a given text is a short task on a passage, the reflex tier's
# own work, as looking up, classifying and extracting are: 3, not 4 (BELLE and InstructionWild), in
# the sixth round's pipeline (train_embedding.py; train.py keeps the shipped weights' 4).
SUMMARY_TARGET = 3.0
SRDD = "OpenBMB/ChatDev"
SRDD_COMMIT_PATH = "SRDD/data/data_attribute_format.csv"
# SRDD's descriptions say what the software does; the request asks for it to be built.
SRDD_PREFIX = "Build this application: "
SRDD_TARGET = 8.0
# AGIEval exams (data/v1/<name>.jsonl) -> effort; math.jsonl (MATH) and aqua-rat are not read.
AGIEVAL_TARGET = {
    "sat-en": 4.0,
    "sat-math": 4.0,
    "gaokao-biology": 5.0,
    "gaokao-chemistry": 5.0,
    "gaokao-physics": 5.0,
    "gaokao-history": 5.0,
    "gaokao-geography": 5.0,
    "logiqa-en": 6.0,
    "logiqa-zh": 6.0,
    "lsat-lr": 6.0,
    "lsat-rc": 6.0,
    "jec-qa-ca": 6.0,
    "lsat-ar": 8.0,
}


def _q(path: str) -> str:
    return f"evaluation/data/{path}/test.jsonl"


def _with_options(question: str, options: object) -> str:
    if isinstance(options, dict):
        return question + "\n" + "  ".join(f"{k}. {v}" for k, v in options.items())
    if isinstance(options, list):
        return question + "\n" + "  ".join(str(o) for o in options)
    return question


def _question_types(row: dict[str, object]) -> set[str]:
    meta = row.get("metadata")
    kinds = str(meta.get("question_type", "")) if isinstance(meta, dict) else ""
    return {k.strip() for k in kinds.split("|") if k.strip()}


def norm(text: str) -> str:
    return " ".join(text.lower().split())


class Seen:
    """Prompts used elsewhere (LABELLING.md's duplicate rule): a prompt is one of them when its
    normalised text, or the first 60 characters of it, equals one of theirs or their start."""

    def __init__(self, prompts: Iterable[str]) -> None:
        keys = {norm(p) for p in prompts}
        self._keys = keys | {k[:60] for k in keys}

    def __contains__(self, prompt: str) -> bool:
        key = norm(prompt)
        return key in self._keys or key[:60] in self._keys


def _flask_rows(reader: SourceReader) -> list[tuple[str, float]]:
    rows = reader.jsonl(FLASK, "evaluation_set/flask_evaluation.jsonl")
    return [
        (str(r["instruction"]), FLASK_TARGET[str(r["difficulty"])])
        for r in rows
        if str(r["difficulty"]) in FLASK_TARGET
        and str(r["task"]) not in FLASK_SKIPPED
        and not str(r["task"]).startswith("Bigbench")
    ]


def _followbench_rows(reader: SourceReader) -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []
    for folder in ("data", "data_zh"):
        for name in FOLLOWBENCH_FILES:
            items = json.loads(reader.read(FOLLOWBENCH, f"{folder}/{name}_constraints.json"))
            rows.extend(
                (str(r["instruction"]), 3.0 + 0.6 * int(r["level"]))
                for r in items
                if str(r.get("source")) not in FOLLOWBENCH_SKIPPED
            )
    return rows


def training_examples(
    reader: SourceReader,
    cap: int = 400,
    seed: int = 7,
    extra: tuple[str, ...] = (),
    summary_target: float | None = None,
) -> list[Example]:
    """The training set: every source capped at `cap` items (a seeded sample); `extra` names
    optional sources ("mmlu-levels", "flask", "followbench") that the shipped weights may leave
    out (RESULTS.md says which are in). A prompt that is also an evaluation prompt is dropped."""
    rng = random.Random(seed)
    out: list[Example] = []
    held_out = Seen(e.prompt for rows in evaluation_sets(reader).values() for e in rows)

    def add(source: str, rows: list[tuple[str, float]], limit: int = cap) -> None:
        rows = [(p.strip(), t) for p, t in rows if p and p.strip() and p not in held_out]
        if len(rows) > limit:
            rows = rng.sample(rows, limit)
        out.extend(Example(p, t, source) for p, t in rows)

    chat = reader.read(CHAT, "CSharp/Datasets/Queries_Responses_Professional_QnAMaker.tsv")
    queries = {line.split("\t")[0] for line in chat.splitlines()[1:] if "\t" in line}
    add("personality-chat", [(q, 1.0) for q in sorted(queries)])

    add("mawps", [(str(r["input"]), 2.0) for r in reader.jsonl(QWEN, _q("mawps"))])
    add("asdiv", [(f"{r['body']} {r['question']}", 2.0) for r in reader.jsonl(QWEN, _q("asdiv"))])
    add("svamp", [(f"{r['Body']} {r['Question']}", 2.0) for r in reader.jsonl(QWEN, _q("svamp"))])
    add(
        "cmath",
        [
            (str(r["question"]), 2.0 if int(str(r["grade"])) <= 3 else 3.0)
            for r in reader.jsonl(QWEN, _q("cmath"))
        ],
    )
    add("carp_en", [(str(r["content"]), 4.0) for r in reader.jsonl(QWEN, _q("carp_en"))])
    add(
        "cn_middle_school",
        [(str(r["question"]), 4.0) for r in reader.jsonl(QWEN, _q("cn_middle_school"))],
    )
    add(
        "aqua",
        [
            (_with_options(str(r["question"]), r["options"]), 4.0)
            for r in reader.jsonl(QWEN, _q("aqua"))
        ],
    )
    mbpp = json.loads(reader.read(WIZARD, "WizardCoder/data/mbppplus.json"))
    add("mbpp-plus", [(str(p), 4.0) for p in mbpp.values()])
    add("gaokao2023en", [(str(r["question"]), 5.0) for r in reader.jsonl(QWEN, _q("gaokao2023en"))])
    add(
        "gaokao_math_qa",
        [
            (_with_options(str(r["question"]), r.get("options")), 5.0)
            for r in reader.jsonl(QWEN, _q("gaokao_math_qa"))
        ],
    )
    add("college_math", [(str(r["question"]), 5.0) for r in reader.jsonl(QWEN, _q("college_math"))])
    add("minerva_math", [(str(r["problem"]), 7.0) for r in reader.jsonl(QWEN, _q("minerva_math"))])
    add(
        "olympiadbench",
        [(str(r["question"]), 8.0) for r in reader.jsonl(QWEN, _q("olympiadbench"))],
    )
    belle = [
        json.loads(line)
        for line in reader.read(BELLE, "eval/eval_set.json").splitlines()
        if line.strip()
    ]
    add(
        "belle-eval",
        [
            (
                str(r["question"]),
                summary_target
                if summary_target is not None and _belle_class(r) == "summarization"
                else BELLE_TARGET[_belle_class(r)],
            )
            for r in belle
        ],
    )
    for exam, target in AGIEVAL_TARGET.items():
        add(
            f"agieval-{exam}",
            [
                (
                    _with_options(f"{r.get('passage') or ''}\n{r['question']}", r.get("options")),
                    target,
                )
                for r in reader.jsonl(AGIEVAL, f"data/v1/{exam}.jsonl")
            ],
            limit=cap // 3,
        )
    nq = reader.jsonl(NQ, "nq_open/NQ-open.dev.jsonl")
    add("nq-open", [(str(r["question"]), 2.0) for r in nq])
    add(
        "expertqa",
        [
            (str(r["question"]), 5.0 if _question_types(r) == {EXPERTQA_DIRECTED} else 7.0)
            for r in reader.jsonl(EXPERTQA, "data/r1_data_anon.jsonl")
        ],
    )
    passages: list[tuple[str, float]] = []
    for lang in XQUAD_LANGUAGES:  # one question per paragraph: the paragraph, then the question
        squad = json.loads(reader.read(XQUAD, f"xquad.{lang}.json"))
        passages.extend(
            (f"{para['context']}\n\n{para['qas'][0]['question']}", 2.0)
            for article in squad["data"]
            for para in article["paragraphs"]
            if para["qas"]
        )
    add("xquad", passages)
    if "mmlu-levels" in extra:
        for prefix, target in MMLU_LEVELS:
            rows: list[tuple[str, float]] = []
            for path in reader.list(ROUTELLM, "routellm/evals/mmlu/responses/"):
                subject = path.rsplit("/", 1)[-1].removeprefix("mmlu_").removesuffix(".csv")
                if subject.startswith(prefix):
                    table = csv.DictReader(io.StringIO(reader.read(ROUTELLM, path)))
                    rows.extend((str(r["prompt"]), target) for r in table)
            add(f"mmlu-{prefix.rstrip('_')}", rows, limit=cap // 3)
    if "flask" in extra:
        add("flask", _flask_rows(reader))
    if "followbench" in extra:
        add("followbench", _followbench_rows(reader))
    own = yaml.safe_load((REPO_ROOT / "tests/data/effort_labelled.yaml").read_text("utf-8"))
    add("aitherctl-labelled", [(r["prompt"], TIER_TARGET[r["tier"]]) for r in own])
    return out


def round6_examples(reader: SourceReader, cap: int = 400, seed: int = 2027) -> list[Example]:
    """Training data from the sixth round on (LABELLING.md): the fifth round's fresh sources (seen
    and scored, so no longer unseen) at `cap` items each, stratified by label; the WizardLM test
    set and AIME/AMC (the earlier external sets, development sets since the fourth round); SRDD's
    software descriptions, as requests to build the application."""
    import data_fresh2 as f2
    from data_fresh import stratified

    rng = random.Random(seed)
    out: list[Example] = []
    loaders = (
        ("alignbench", f2._alignbench),
        ("hwu64", f2._hwu64),
        ("instructionwild", _instructionwild),
        ("tabmwp", f2._tabmwp),
        ("m3ke", f2._m3ke),
        ("exercism-python", f2._exercism),
        ("codejam", f2._codejam),
        ("olymmath", f2._olymmath),
        ("putnambench", f2._putnam),
    )
    for name, load in loaders:
        rows = [(p.strip(), t) for p, t in load(reader) if p and p.strip()]
        out += [Example(p, t, name) for p, t in stratified(rows, cap, rng)]
    sets = evaluation_sets(reader)
    out += sets["wizardlm-testset"] + sets["contest-maths"]
    table = csv.DictReader(io.StringIO(reader.read(SRDD, SRDD_COMMIT_PATH)))
    srdd = [(SRDD_PREFIX + str(r["Description"]).strip(), SRDD_TARGET) for r in table]
    out += [Example(p, t, "srdd") for p, t in rng.sample(srdd, min(cap, len(srdd)))]
    return out


def _instructionwild(reader: SourceReader) -> list[tuple[str, float]]:
    """InstructionWild by its own `instruction_type` (data_fresh2's map), summaries at 3."""
    import data_fresh2 as f2

    target = {**f2.WILD_TARGET, "Summarization": SUMMARY_TARGET}
    return [
        (str(r["instruction"]), target[str(r["instruction_type"])])
        for r in reader.jsonl(f2.WILD, "data_v2/user_1.jsonl")
        if str(r.get("instruction_type")) in target
    ]


def _belle_class(row: dict[str, object]) -> str:
    return str(row["class"]).replace("\xa0", " ")


def evaluation_sets(reader: SourceReader) -> dict[str, list[Example]]:
    """The evaluation sets of LABELLING.md: never used for training."""
    wizard = [
        Example(str(r["Instruction"]), float(str(r["Difficulty"])), "wizardlm-testset")
        for r in reader.jsonl(WIZARD, "WizardLM/data/WizardLM_testset.jsonl")
    ]
    contest = [
        Example(str(r["problem"]), 9.0, "aime24") for r in reader.jsonl(QWEN, _q("aime24"))
    ] + [Example(str(r["question"]), 8.0, "amc23") for r in reader.jsonl(QWEN, _q("amc23"))]
    own = yaml.safe_load((REPO_ROOT / "tests/data/effort_holdout.yaml").read_text("utf-8"))
    holdout = [Example(r["prompt"], TIER_TARGET[r["tier"]], "aitherctl-holdout") for r in own]
    return {
        "wizardlm-testset": wizard,
        "contest-maths": contest,
        "external (wizardlm + contest)": wizard + contest,
        "aitherctl-holdout": holdout,
    }
