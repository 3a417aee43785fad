"""Measure the effort scorers on the evaluation sets of scripts/effort/LABELLING.md.

    python scripts/effort/evaluate.py --source-root /path/to/snapshots [--markdown]

For each set and each scorer (the old keyword heuristic, the learned scorer): band agreement
(1-3 / 4-6 / 7-10), agreement within one band, Spearman rank correlation with the ordinal label,
the share of requests per tier (reflex 1-3, orchestrator 4-6, reasoning 7-8, frontier 9-10), and
how many hard maths or contest problems land in the lowest band. None of these sets is trained on.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from data import Example, Seen, SourceReader, evaluation_sets, training_examples
from data_fresh import fresh_evaluation_sets, fresh_training_examples
from data_fresh2 import fresh2_evaluation_sets, is_hard
from data_round7 import heldout7_sets

from aitherctl.routing.effort_heuristic import score_effort_heuristic
from aitherctl.routing.effort_model import LearnedEffortScorer
from aitherctl.routing.static_embedding import candidate_scorer, score_effort

TIERS = (("reflex", 1, 3), ("orchestrator", 4, 6), ("reasoning", 7, 8), ("frontier", 9, 10))


def band(value: float) -> int:
    v = round(value)
    return 0 if v <= 3 else 1 if v <= 6 else 2


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    rx, ry = _ranks(xs), _ranks(ys)
    n = len(xs)
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx) ** 0.5
    vy = sum((b - my) ** 2 for b in ry) ** 0.5
    return cov / (vx * vy) if vx and vy else 0.0


FRESH_MATHS = ("tal-scq5k-en", "tal-scq5k-zh", "mathodyssey", "scibench")


def is_hard_maths(row: Example) -> bool:
    """A hard maths or contest problem (LABELLING.md): none may land in 1-3."""
    return (
        row.source in ("aime24", "amc23")
        or (row.source in FRESH_MATHS and row.target >= 7)
        or is_hard(row)
    )


def measure(rows: list[Example], scorer: Callable[[str], int]) -> dict[str, object]:
    scores = [scorer(r.prompt) for r in rows]
    labels = [r.target for r in rows]
    exact = sum(band(s) == band(t) for s, t in zip(scores, labels, strict=True))
    near = sum(abs(band(s) - band(t)) <= 1 for s, t in zip(scores, labels, strict=True))
    shares = {name: sum(lo <= s <= hi for s in scores) / len(scores) for name, lo, hi in TIERS}
    hard_low = sum(
        1 for s, r in zip(scores, rows, strict=True) if is_hard_maths(r) and band(s) == 0
    )
    return {
        "n": len(rows),
        "band": exact / len(rows),
        "within_one": near / len(rows),
        "spearman": spearman(scores, labels) if len(set(labels)) > 1 else None,
        "shares": shares,
        "hard_in_lowest": hard_low,
    }


def _line(name: str, m: dict[str, object]) -> str:
    shares = m["shares"]
    assert isinstance(shares, dict)
    rho = m["spearman"]
    rho_text = f"{rho:+.2f}" if isinstance(rho, float) else "n/a"
    tiers = " / ".join(f"{shares[t]:.0%}" for t, _, _ in TIERS)
    return (
        f"| {name} | {m['n']} | {m['band']:.1%} | {m['within_one']:.1%} | {rho_text} | "
        f"{tiers} | {m['hard_in_lowest']} |"
    )


def _scorer_from(path: Path) -> LearnedEffortScorer:
    return candidate_scorer(path)


def _unseen(
    sets: dict[str, list[Example]], reader: SourceReader, cap: int
) -> dict[str, list[Example]]:
    """The sets without any prompt that train.py trains on (its normalised text or first 60
    characters), the fourth round's sources read at train.py's cap included."""
    seen = Seen(
        [
            *(e.prompt for e in training_examples(reader, cap=cap, extra=("flask", "followbench"))),
            *(e.prompt for e in fresh_training_examples(reader, cap=cap)),
        ]
    )
    out = {name: [e for e in rows if e.prompt not in seen] for name, rows in sets.items()}
    dropped = sum(len(rows) for rows in sets.values()) - sum(len(rows) for rows in out.values())
    print(f"duplicate guard against the training prompts: {dropped} dropped", file=sys.stderr)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-root", type=Path, required=True)
    parser.add_argument(
        "--weights",
        type=Path,
        help="a weights module written by train.py --out (default: the shipped)",
    )
    parser.add_argument("--learned-only", action="store_true")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="also the fresh external set of the fourth round (LABELLING.md; "
        "training data from the fifth round on, so no longer unseen)",
    )
    parser.add_argument(
        "--fresh2",
        action="store_true",
        help="also the fresh external set of the fifth round (LABELLING.md: "
        "measured once, with the final model)",
    )
    parser.add_argument(
        "--heldout7",
        action="store_true",
        help="only the seventh round's held-out check (LABELLING.md), with the "
        "summary per band; the duplicate guard covers every training source",
    )
    parser.add_argument(
        "--cap", type=int, default=400, help="train.py's --cap, for the --fresh2 duplicate guard"
    )
    args = parser.parse_args()
    reader = SourceReader(args.source_root)
    if args.heldout7:
        return heldout7(reader, args.weights, args.cap)
    sets = evaluation_sets(reader)
    if args.fresh:
        sets |= fresh_evaluation_sets(reader)
    if args.fresh2:
        sets |= _unseen(fresh2_evaluation_sets(reader), reader, args.cap)
    learned = score_effort if args.weights is None else _scorer_from(args.weights).score
    scorers: dict[str, Callable[[str], int]] = {
        "heuristic": lambda p: score_effort_heuristic(p).score,
        "learned": lambda p: learned(p).score,
        "always 5": lambda _: 5,
    }
    if args.learned_only:
        del scorers["heuristic"], scorers["always 5"]
    print(
        "| set / scorer | n | band agreement | within one band | Spearman | "
        "reflex / orchestrator / reasoning / frontier | hard maths in 1-3 |"
    )
    print("|---|---|---|---|---|---|---|")
    for set_name, rows in sets.items():
        for scorer_name, scorer in scorers.items():
            print(_line(f"{set_name} / {scorer_name}", measure(rows, scorer)))
    return 0


def summary(rows: list[Example], scores: list[int]) -> str:
    """Band agreement, Cohen's kappa, recall per band, within one band, hard (7-10) in 1-3."""
    truth = [band(r.target) for r in rows]
    got = [band(s) for s in scores]
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
        f"{agree:.1%} | {kappa:+.2f} | {' / '.join(f'{r:.0%}' for r in recall)} | "
        f"{near:.1%} | {sum(g == 0 for g in hard)} of {len(hard)}"
    )


def heldout7(reader: SourceReader, weights: Path | None, cap: int) -> int:
    """The seventh round's held-out check: the committed weights, the candidate (--weights), the
    heuristic and "always 5", per set and pooled."""
    from data_round7 import t0_examples
    from train_embedding import load_examples

    sets = heldout7_sets(reader)
    seen = Seen(
        [e.prompt for e in load_examples(reader, cap, ("flask", "followbench", "fresh4", "round6"))]
        + [e.prompt for e in t0_examples(reader)]
    )
    kept = {name: [e for e in rows if e.prompt not in seen] for name, rows in sets.items()}
    dropped = sum(len(r) for r in sets.values()) - sum(len(r) for r in kept.values())
    print(f"duplicate guard against every training prompt: {dropped} dropped", file=sys.stderr)
    scorers: dict[str, Callable[[str], int]] = {
        "committed": lambda p: score_effort(p).score,
        "heuristic": lambda p: score_effort_heuristic(p).score,
        "always 5": lambda _: 5,
    }
    if weights is not None:
        candidate = _scorer_from(weights)
        scorers["candidate"] = lambda p: candidate.score(p).score
    print(
        "| set / scorer | n | band agreement | kappa | recall 1-3 / 4-6 / 7-10 | "
        "within one band | hard (7-10) in 1-3 | Spearman | mean score per label |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, rows in kept.items():
        for scorer_name, scorer in scorers.items():
            scores = [scorer(r.prompt) for r in rows]
            labels = [r.target for r in rows]
            rho = spearman(scores, labels) if len(set(labels)) > 1 else None
            per_label = {
                t: [s for s, r in zip(scores, rows, strict=True) if r.target == t]
                for t in sorted(set(labels))
            }
            means = ", ".join(f"{t:g}: {sum(v) / len(v):.1f}" for t, v in per_label.items())
            print(
                f"| {name} / {scorer_name} | {len(rows)} | {summary(rows, scores)} | "
                f"{'n/a' if rho is None else f'{rho:+.2f}'} | {means} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
