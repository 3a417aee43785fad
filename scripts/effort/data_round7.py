"""Seventh round (issue 21): the kind of task as training data, and a held-out check.

Labels: scripts/effort/LABELLING.md ("Seventh round"), written before any model of this round was
trained or scored. Pins: scripts/effort/sources.yaml.

- `t0_examples`: prompts of T0's training mixture (P3, as the self-instruct repository stores it,
  one file per prompt template), labelled by the task cluster the T0 paper puts each dataset in:
  extractive QA, sentiment, topic classification and paraphrase identification 2; multiple-choice
  QA, closed-book QA, structure-to-text and summarisation 3. One source ("t0"): the development
  figure leaves all of it out at once.
- `heldout7_sets`: the held-out check, never trained on, chosen and labelled before training:
  PubMedQA (a yes/no question on a given abstract, 2), the self-instruct seed tasks marked as
  classification (2), MMLU's STEM subjects by the level in the subject's name (3 / 4 / 5),
  TheoremQA (university theorems, 7), DevBench's product requirement documents (8).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict

from data import Example, SourceReader, _with_options

SELF_INSTRUCT = "yizhongw/self-instruct"
T0_FOLDER = "data/finetuning/t0_train_50k/data_per_template/"
PUBMEDQA = "pubmedqa/pubmedqa"
THEOREMQA = "wenhuchen/TheoremQA"
DEVBENCH = "open-compass/DevBench"
QWEN = "QwenLM/Qwen2.5-Math"

# The T0 paper's task clusters (Sanh et al. 2021, figure 2) for the datasets in this mixture.
T0_CLUSTER = {
    "adversarial_qa": "extractive-qa",
    "quoref": "extractive-qa",
    "ropes": "extractive-qa",
    "duorc": "extractive-qa",
    "amazon_polarity": "sentiment",
    "app_reviews": "sentiment",
    "imdb": "sentiment",
    "rotten_tomatoes": "sentiment",
    "yelp_review_full": "sentiment",
    "ag_news": "topic",
    "dbpedia_14": "topic",
    "trec": "topic",
    "glue_mrpc": "paraphrase",
    "glue_qqp": "paraphrase",
    "paws": "paraphrase",
    "commonsense_qa": "multiple-choice-qa",
    "cosmos_qa": "multiple-choice-qa",
    "dream": "multiple-choice-qa",
    "qasc": "multiple-choice-qa",
    "quarel": "multiple-choice-qa",
    "quartz": "multiple-choice-qa",
    "sciq": "multiple-choice-qa",
    "social_i_qa": "multiple-choice-qa",
    "wiki_hop": "multiple-choice-qa",
    "wiqa": "multiple-choice-qa",
    "kilt_tasks_hotpotqa": "closed-book-qa",
    "wiki_qa": "closed-book-qa",
    "common_gen": "structure-to-text",
    "wiki_bio": "structure-to-text",
    "cnn_dailymail": "summarisation",
    "gigaword": "summarisation",
    "multi_news": "summarisation",
    "samsum": "summarisation",
    "xsum": "summarisation",
}
T0_TARGET = {
    "extractive-qa": 2.0,
    "sentiment": 2.0,
    "topic": 2.0,
    "paraphrase": 2.0,
    "multiple-choice-qa": 3.0,
    "closed-book-qa": 3.0,
    "structure-to-text": 3.0,
    "summarisation": 3.0,
}
# Templates that turn the task around into writing a new, longer text from a short one (a story
# from a summary, an article from a title): not a short task on a given text, so not read.
T0_REVERSED = (
    "generate_story",
    "spice_up_story",
    "write_an_article",
    "reverse_writing",
    "expand_reverse_task",
    "build_story_around_qa",
    "Write_a_dialogue_that_match",
    "generate_review",
)
T0_PER_CLUSTER = 100


def _t0_dataset(filename: str) -> str | None:
    for name in sorted(T0_CLUSTER, key=len, reverse=True):
        if filename.startswith(name + "_"):
            return name
    return None


def t0_examples(reader: SourceReader, seed: int = 2029) -> list[Example]:
    """T0_PER_CLUSTER prompts of each task cluster (a seeded sample over its templates)."""
    rng = random.Random(seed)
    by_cluster: dict[str, list[str]] = defaultdict(list)
    for path in reader.list(SELF_INSTRUCT, T0_FOLDER):
        filename = path.rsplit("/", 1)[-1]
        dataset = _t0_dataset(filename)
        if dataset is None or any(r in filename for r in T0_REVERSED):
            continue
        for row in reader.jsonl(SELF_INSTRUCT, path):
            prompt = str(row["prompt"]).strip()
            if prompt:
                by_cluster[T0_CLUSTER[dataset]].append(prompt)
    out: list[Example] = []
    for cluster in sorted(by_cluster):
        prompts = by_cluster[cluster]
        chosen = rng.sample(prompts, min(T0_PER_CLUSTER, len(prompts)))
        out += [Example(p, T0_TARGET[cluster], "t0") for p in chosen]
    return out


MMLU_LEVEL = {"elementary": 3.0, "high_school": 4.0, "college": 5.0}
HELDOUT_PER_SOURCE = 60


def _mmlu_level(subject: str) -> float | None:
    for prefix, level in MMLU_LEVEL.items():
        if subject.startswith(prefix + "_"):
            return level
    return None


def heldout7_sets(reader: SourceReader, seed: int = 2030) -> dict[str, list[Example]]:
    """The seventh round's held-out check (LABELLING.md), each set a seeded sample."""
    rng = random.Random(seed)

    def sample(rows: list[Example], k: int = HELDOUT_PER_SOURCE) -> list[Example]:
        return rng.sample(rows, k) if len(rows) > k else rows

    pubmed = json.loads(reader.read(PUBMEDQA, "data/ori_pqal.json"))
    pubmedqa = [
        Example(
            "\n".join(str(c) for c in r["CONTEXTS"]) + "\n\n" + str(r["QUESTION"]), 2.0, "pubmedqa"
        )
        for _, r in sorted(pubmed.items())
    ]
    seeds = [
        json.loads(line)
        for line in reader.read(SELF_INSTRUCT, "data/seed_tasks.jsonl").splitlines()
        if line.strip()
    ]
    classify = [
        Example(
            (
                str(r["instruction"]).strip() + "\n\n" + str(r["instances"][0]["input"]).strip()
            ).strip(),
            2.0,
            "self-instruct-classify",
        )
        for r in seeds
        if r["is_classification"]
    ]
    mmlu: dict[float, list[Example]] = defaultdict(list)
    for r in reader.jsonl(QWEN, "evaluation/data/mmlu_stem/test.jsonl"):
        level = _mmlu_level(str(r["type"]))
        if level is not None:
            mmlu[level].append(
                Example(_with_options(str(r["question"]), r["choices"]), level, "mmlu-stem")
            )
    mmlu_rows = [e for level in sorted(mmlu) for e in sample(mmlu[level], 20)]
    theorems = json.loads(reader.read(THEOREMQA, "theoremqa_test.json"))
    theoremqa = [
        Example(str(r["Question"]), 7.0, "theoremqa") for r in theorems if not r.get("Picture")
    ]
    devbench = [
        Example(
            "Implement the software that this product requirements document describes.\n\n"
            + reader.read(DEVBENCH, p).strip(),
            8.0,
            "devbench",
        )
        for p in DEVBENCH_PRDS
    ]
    sets = {
        "pubmedqa": sample(pubmedqa),
        "self-instruct-classify": classify,
        "mmlu-stem": mmlu_rows,
        "theoremqa": sample(theoremqa),
        "devbench": devbench,
    }
    sets["held-out (all)"] = [e for rows in list(sets.values()) for e in rows]
    return sets


# Each DevBench project's PRD at the pinned commit (git ls-tree -r, paths ending in /PRD.md).
DEVBENCH_PRDS = (
    "benchmark_data/cpp/area_calculation/PRD.md",
    "benchmark_data/cpp/graph-cpp/PRD.md",
    "benchmark_data/cpp/logistic_system/PRD.md",
    "benchmark_data/cpp/people_management/docs/PRD.md",
    "benchmark_data/cpp/xlsx2csv/PRD.md",
    "benchmark_data/java/Actor_relationship_game/docs/PRD.md",
    "benchmark_data/java/idcenter/docs/PRD.md",
    "benchmark_data/java/image-similarity/docs/PRD.md",
    "benchmark_data/java/java_heap/docs/PRD.md",
    "benchmark_data/java/redis-cache/docs/PRD.md",
    "benchmark_data/javascript/listen-now-frontend/docs/PRD.md",
    "benchmark_data/javascript/login-registration/docs/PRD.md",
    "benchmark_data/python/ArXiv_digest/docs/PRD.md",
    "benchmark_data/python/Hybrid_Images/docs/PRD.md",
    "benchmark_data/python/TextCNN/PRD.md",
    "benchmark_data/python/chakin/PRD.md",
    "benchmark_data/python/geotext/PRD.md",
    "benchmark_data/python/hone/docs/PRD.md",
    "benchmark_data/python/lice/PRD.md",
    "benchmark_data/python/particle-swarm-optimization/docs/PRD.md",
    "benchmark_data/python/readtime/docs/PRD.md",
    "benchmark_data/python/stocktrends/docs/PRD.md",
)
