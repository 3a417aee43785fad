"""The development figure from train_embedding.py --dump-unseen (each source's predictions when
the model was fitted without that source), summed up as RESULTS.md reports it.

    python scripts/effort/dev_figure.py UNSEEN.jsonl [--sources-of WEIGHTS.py]

Pooled band agreement, Cohen's kappa, recall per band, within one band, hard (7-10) in 1-3, and
Spearman within each source with graded labels; separately over the sources the committed weights
were trained on (`--sources-of`: the weights module's docstring lists them) and over the others.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from evaluate import spearman


def band(score: float) -> int:
    s = max(1, min(10, math.floor(score + 0.5)))
    return 0 if s <= 3 else 1 if s <= 6 else 2


def line(name: str, rows: list[dict[str, float]], key: str = "pred") -> str:
    truth = [band(r["target"]) for r in rows]
    got = [band(r[key]) for r in rows]
    n = len(rows)
    agree = sum(t == g for t, g in zip(truth, got, strict=True)) / n
    chance = sum(truth.count(b) * got.count(b) for b in range(3)) / n / n
    kappa = (agree - chance) / (1 - chance) if chance < 1 else 0.0
    recall = [
        sum(t == g == b for t, g in zip(truth, got, strict=True)) / max(1, truth.count(b))
        for b in range(3)
    ]
    near = sum(abs(t - g) <= 1 for t, g in zip(truth, got, strict=True)) / n
    hard = [g for t, g in zip(truth, got, strict=True) if t == 2]
    return (
        f"| {name} | {n} | {agree:.1%} | {kappa:+.2f} | "
        f"{' / '.join(f'{r:.0%}' for r in recall)} | {near:.1%} | "
        f"{sum(g == 0 for g in hard)} of {len(hard)} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("unseen", type=Path)
    parser.add_argument("--sources-of", type=Path)
    parser.add_argument(
        "--committed-on",
        type=Path,
        help="train_embedding.py's --cache: also score the prompts of the sources "
        "the committed weights never saw with the committed weights",
    )
    args = parser.parse_args()
    rows = [json.loads(x) for x in args.unseen.read_text("utf-8").splitlines() if x.strip()]
    by_source: dict[str, list[dict[str, float]]] = defaultdict(list)
    for r in rows:
        by_source[r["source"]].append(r)
    print(
        "| sources | n | band agreement | kappa | recall 1-3 / 4-6 / 7-10 | within one band "
        "| hard (7-10) in 1-3 |"
    )
    print("|---|---|---|---|---|---|---|")
    print(line(f"all {len(by_source)}", rows))
    if args.sources_of:
        doc = args.sources_of.read_text("utf-8").split('"""')[1]
        old = set(re.findall(r"^  ([\w.-]+): \d+$", doc, re.M))
        print(
            line(
                f"the committed model's {len(old & set(by_source))}",
                [r for r in rows if r["source"] in old],
            )
        )
        print(line("the others", [r for r in rows if r["source"] not in old]))
        if args.committed_on:
            import pickle

            from aitherctl.routing.static_embedding import score_effort

            with args.committed_on.open("rb") as fh:
                examples = pickle.load(fh)[0]
            fresh = [
                {"source": e.source, "target": e.target, "pred": score_effort(e.prompt).score}
                for e in examples
                if e.source not in old
            ]
            print(line("the others, committed weights (never saw them)", fresh))
    print()
    print("| source | n | agreement | Spearman with its label |")
    print("|---|---|---|---|")
    for source, group in sorted(by_source.items()):
        labels = [r["target"] for r in group]
        rho = spearman([r["pred"] for r in group], labels) if len(set(labels)) > 1 else None
        agree = sum(band(r["pred"]) == band(r["target"]) for r in group) / len(group)
        print(
            f"| {source} | {len(group)} | {agree:.0%} | {'n/a' if rho is None else f'{rho:+.2f}'} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
