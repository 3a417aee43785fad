"""Rebuild aitherctl/routing/effort_weights.py, the learned effort scorer's weights.

    python scripts/effort/train.py --source-root /path/to/snapshots   # the shipped weights

`--source-root` holds one folder per repository of scripts/effort/sources.yaml, named
`<owner>+<name>`, each either a bare git snapshot under `repo/` or a plain checkout; the pinned
commit is read. Labels: scripts/effort/LABELLING.md. The model has two stages over the features of
aitherctl/routing/effort_features.py: gradient-boosted regression trees on the named cues (and the
prompt's length), then a linear model of the lexical terms on what the trees left, fitted with
AdaGrad and L2 in pure Python. The trees need scikit-learn (scripts/effort/requirements.txt, pinned
so the weights rebuild byte for byte); the shipped scorer walks them in pure Python. Sources weigh
alike (square root of their size), the general ones (--general, --general-weight) more. The
output stretch and shift are fitted on leave-one-source-out predictions (--calibrate spread: their
mean and spread matched to the targets', each band of targets 1-3, 4-6, 7-10 weighing the same),
which are also printed as the development figure: band agreement on a dataset the model has not
seen. One process, deterministic (seeded), a few minutes on one core.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from data import SourceReader, training_examples
from data_fresh import fresh_training_examples

from aitherctl.routing.effort_features import CUE_PHRASES, PromptFeatures, extract_features
from aitherctl.routing.effort_model import tree_vector

GENERAL = ("aitherctl-labelled", "personality-chat", "flask", "followbench", "clinc150")
# The optional sources the shipped weights use (RESULTS.md); "fresh4" is the fourth round's fresh
# evaluation set's sources, training data from the fifth round on (LABELLING.md).
EXTRA = ("flask", "followbench", "fresh4")
OUT = Path(__file__).resolve().parents[2] / "aitherctl" / "routing" / "effort_weights.py"


TREES = 150  # boosting rounds; depth 3, learning rate 0.1 (fourth round: RESULTS.md)
DEPTH = 3
LEARNING_RATE = 0.1
MIN_LEAF = 20
# A tree node: (feature index or -1 for a leaf, threshold, left child, right child, value); a
# sample goes left when its feature value is <= the threshold (scikit-learn's convention).
Node = tuple[int, float, int, int, float]


@dataclass
class Model:
    """init + the trees' leaves (already x learning rate) + term_bias + the terms' part."""

    init: float
    trees: list[list[Node]]
    term_bias: float
    term_w: dict[str, float]


def tree_inputs(feats: PromptFeatures, names: list[str]) -> list[float]:
    """The trees' input vector: each named cue's value (0 when absent) and the length."""
    return tree_vector(dict(feats.cues), feats.words, names)


def fit(
    rows: list[tuple[PromptFeatures, float, float]],
    names: list[str],
    *,
    epochs: int,
    lr: float,
    l2_term: float,
    seed: int,
) -> Model:
    """Two stages: boosted trees on the named cues first, then the terms on what the trees left
    unexplained. The cues carry over to other languages and datasets; fitted jointly, the terms
    would take their share (the weight of "asks for a proof" would go to "prove"). The trees find
    what a linear model cannot: that a long prompt means one thing with maths notation and another
    without, that multiple-choice options matter only with an exam's length, and so on."""
    from sklearn.ensemble import GradientBoostingRegressor

    xs = [tree_inputs(f, names) for f, _, _ in rows]
    ys = [t for _, t, _ in rows]
    ws = [w for _, _, w in rows]
    boost = GradientBoostingRegressor(
        loss="squared_error",
        n_estimators=TREES,
        max_depth=DEPTH,
        learning_rate=LEARNING_RATE,
        subsample=0.8,
        min_samples_leaf=MIN_LEAF,
        random_state=seed,
    )
    boost.fit(xs, ys, sample_weight=ws)
    trees: list[list[Node]] = []
    for estimator in boost.estimators_[:, 0]:
        t = estimator.tree_
        trees.append(
            [
                (
                    int(t.feature[i]) if t.children_left[i] >= 0 else -1,
                    float(t.threshold[i]),
                    int(t.children_left[i]),
                    int(t.children_right[i]),
                    LEARNING_RATE * float(t.value[i][0][0]),
                )
                for i in range(t.node_count)
            ]
        )
    init = float(boost.init_.constant_[0][0])
    model = Model(init, trees, 0.0, {})
    left = [
        (PromptFeatures((), f.terms, f.term_scale, f.words, ()), t - predict(model, f, names), w)
        for f, t, w in rows
    ]
    term_bias, term_w = _fit_terms(left, epochs=epochs, lr=lr, l2_term=l2_term, seed=seed)
    return Model(init, trees, term_bias, term_w)


def leaf(tree: list[Node], x: list[float]) -> float:
    node = tree[0]
    while node[0] >= 0:
        node = tree[node[2] if x[node[0]] <= node[1] else node[3]]
    return node[4]


def _fit_terms(
    rows: list[tuple[PromptFeatures, float, float]],
    *,
    epochs: int,
    lr: float,
    l2_term: float,
    seed: int,
) -> tuple[float, dict[str, float]]:
    """The terms' stage: squared loss, per-example weight; AdaGrad and L2 on a bias and the term
    weights (the rows' targets are what the trees left)."""
    rng = random.Random(seed)
    bias = 0.0
    term_w: dict[str, float] = {}
    g_bias = 1e-8
    g_term: dict[str, float] = {}
    order = list(range(len(rows)))
    for _ in range(epochs):
        rng.shuffle(order)
        for i in order:
            feats, target, weight = rows[i]
            pred = bias + feats.term_scale * sum(term_w.get(t, 0.0) for t in feats.terms)
            err = (pred - target) * weight
            g_bias += err * err
            bias -= lr * err / math.sqrt(g_bias)
            for term in feats.terms:
                w = term_w.get(term, 0.0)
                grad = err * feats.term_scale + l2_term * w
                g_term[term] = g_term.get(term, 1e-8) + grad * grad
                term_w[term] = w - lr * grad / math.sqrt(g_term[term])
    return bias, term_w


def predict(model: Model, feats: PromptFeatures, names: list[str]) -> float:
    x = tree_inputs(feats, names)
    pred = model.init + sum(leaf(tree, x) for tree in model.trees) + model.term_bias
    return pred + feats.term_scale * sum(model.term_w.get(t, 0.0) for t in feats.terms)


def calibrate(
    preds: list[float], targets: list[float], weights: list[float]
) -> tuple[float, float]:
    """Weighted least squares target = stretch x prediction + shift."""
    n = sum(weights)
    mp = sum(p * w for p, w in zip(preds, weights, strict=True)) / n
    mt = sum(t * w for t, w in zip(targets, weights, strict=True)) / n
    cov = sum(w * (p - mp) * (t - mt) for p, t, w in zip(preds, targets, weights, strict=True))
    var = sum(w * (p - mp) ** 2 for p, w in zip(preds, weights, strict=True))
    stretch = cov / var if var else 1.0
    return stretch, mt - stretch * mp


def match_spread(
    preds: list[float], targets: list[float], weights: list[float]
) -> tuple[float, float]:
    """The stretch and shift that give the predictions the targets' weighted mean and spread.

    Least squares (`calibrate`) regresses towards the mean: on data the model has not seen its
    predictions are noisy, so the fitted stretch is below 1 and nearly everything lands in 4-6.
    Matching the spread keeps the scores as wide as the labels, so each band keeps its share."""
    n = sum(weights)
    mp = sum(p * w for p, w in zip(preds, weights, strict=True)) / n
    mt = sum(t * w for t, w in zip(targets, weights, strict=True)) / n
    vp = sum(w * (p - mp) ** 2 for p, w in zip(preds, weights, strict=True)) / n
    vt = sum(w * (t - mt) ** 2 for t, w in zip(targets, weights, strict=True)) / n
    stretch = math.sqrt(vt / vp) if vp else 1.0
    return stretch, mt - stretch * mp


def fit_cuts(preds: list[float], targets: list[float], weights: list[float]) -> tuple[float, float]:
    """The two cut points (1-3 | 4-6 | 7-10) on the predictions that agree best, by weight, with
    the target bands; returned as the stretch and shift that put them at 3.5 and 6.5."""
    grid = [2.0 + 0.05 * i for i in range(121)]  # 2.0 .. 8.0
    bands = [band(t) for t in targets]
    best = (-1.0, 3.5, 6.5)
    for c1 in grid:
        for c2 in grid:
            if c2 <= c1 + 0.5:
                continue
            hits = sum(
                w
                for p, b, w in zip(preds, bands, weights, strict=True)
                if (0 if p < c1 else 1 if p < c2 else 2) == b
            )
            if hits > best[0]:
                best = (hits, c1, c2)
    _, c1, c2 = best
    stretch = 3.0 / (c2 - c1)
    return stretch, 3.5 - stretch * c1


def balance_bands(
    rows: list[tuple[PromptFeatures, float, float]],
) -> list[tuple[PromptFeatures, float, float]]:
    """The rows reweighted so that each band of targets carries the same total weight."""
    band_total = Counter[int]()
    for _, target, w in rows:
        band_total[band(target)] += w
    mean = sum(band_total.values()) / len(band_total)
    return [(f, t, w * mean / band_total[band(t)]) for f, t, w in rows]


def band(score: float) -> int:
    s = max(1, min(10, math.floor(score + 0.5)))
    return 0 if s <= 3 else 1 if s <= 6 else 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-root", type=Path, required=True)
    parser.add_argument("--cap", type=int, default=400, help="items per source at most")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--min-df", type=int, default=5, help="drop terms seen in fewer prompts")
    parser.add_argument(
        "--calibrate",
        choices=("spread", "least-squares", "cuts", ""),
        default="spread",
        help="how the output stretch is fitted on leave-one-source-out predictions ('' for none)",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--loso", action="store_true", help="leave-one-source-out report")
    parser.add_argument(
        "--min-weight", type=float, default=0.02, help="terms with a smaller weight are not shipped"
    )
    parser.add_argument("--loso-sources", nargs="*", default=[])
    parser.add_argument(
        "--extra",
        nargs="*",
        default=list(EXTRA),
        choices=("mmlu-levels", "flask", "followbench", "fresh4"),
        help="optional sources of sources.yaml to read (default: those the shipped weights use)",
    )
    parser.add_argument(
        "--dump-unseen",
        type=Path,
        help="write the leave-one-source-out predictions here (JSON lines)",
    )
    parser.add_argument(
        "--band-balance",
        choices=("calibrate", "train", "none"),
        default="calibrate",
        help="where each band (1-3, 4-6, 7-10) is given the same total weight: "
        "in the output calibration only (default), also in training, or "
        "nowhere",
    )
    parser.add_argument("--l2-term", type=float, default=1e-2)
    parser.add_argument("--no-terms", action="store_true", help="cues only")
    parser.add_argument(
        "--stretch", type=float, default=1.0, help="without --check: the output stretch to apply"
    )
    parser.add_argument("--shift", type=float, default=0.0)
    parser.add_argument(
        "--general",
        nargs="*",
        default=list(GENERAL),
        help="the sources that --general-weight applies to",
    )
    parser.add_argument(
        "--general-weight",
        type=float,
        default=6.0,
        help="extra weight of the general (non-maths) sources",
    )
    args = parser.parse_args()

    reader = SourceReader(args.source_root)
    examples = training_examples(reader, cap=args.cap, extra=tuple(args.extra))
    if "fresh4" in args.extra:
        examples += fresh_training_examples(reader, cap=args.cap)
    per_source = Counter(e.source for e in examples)
    print(f"{len(examples)} training prompts: {dict(per_source)}", file=sys.stderr)
    feats = [extract_features(e.prompt) for e in examples]
    df = Counter(t for f in feats for t in f.terms)
    keep = {t for t, n in df.items() if n >= args.min_df and not args.no_terms}
    feats = [
        PromptFeatures(
            f.cues, kept, 1.0 / math.sqrt(len(kept)) if kept else 0.0, f.words, f.examples
        )
        for f in feats
        for kept in [tuple(t for t in f.terms if t in keep)]
    ]
    # Each source weighs the same in total, whatever its size after the cap.
    # General requests (chat, the project's labelled set) weigh more: they are what `run` sees most.
    weight = {s: (len(examples) / len(per_source) / n) ** 0.5 for s, n in per_source.items()}
    for source in args.general:
        weight[source] *= args.general_weight
    rows = [(f, e.target, weight[e.source]) for f, e in zip(feats, examples, strict=True)]
    # Each band (1-3, 4-6, 7-10) carrying the same total weight: the hard band has the fewest
    # public examples. Fifth round: balancing the training itself made the trees lean on the few
    # hard sources; balancing only the output calibration (which decides how many prompts each
    # band gets) generalised better on the development figure (RESULTS.md).
    balanced = balance_bands(rows)
    if args.band_balance == "train":
        rows = balanced
    calib_weights = [w for _, _, w in (rows if args.band_balance == "none" else balanced)]
    hyper = {"epochs": args.epochs, "lr": 0.05, "l2_term": args.l2_term, "seed": 7}
    # The trees' inputs: every named cue (the length buckets become one number, the length).
    names = [*sorted(CUE_PHRASES), "length"]

    stretch, shift = args.stretch, args.shift
    if args.loso or args.calibrate:
        # Leave one source out: the model's prediction for each dataset when it has never seen that
        # dataset. Its band agreement is the development figure for generalisation (the evaluation
        # sets are never used for choices), and with --calibrate the output stretch is fitted on
        # these predictions: on data it has not seen, the model is too timid, pulling everything
        # towards the middle, and this undoes that.
        unseen = [0.0] * len(rows)
        for source in args.loso_sources or list(per_source):
            model = fit(
                [r for r, e in zip(rows, examples, strict=True) if e.source != source],
                names,
                **hyper,
            )
            for i, e in enumerate(examples):
                if e.source == source:
                    unseen[i] = predict(model, rows[i][0], names)
        if args.dump_unseen:
            with args.dump_unseen.open("w", encoding="utf-8") as fh:
                for i, e in enumerate(examples):
                    fh.write(
                        json.dumps(
                            {
                                "source": e.source,
                                "target": e.target,
                                "weight": rows[i][2],
                                "pred": unseen[i],
                            }
                        )
                        + "\n"
                    )
        if args.calibrate == "spread":
            stretch, shift = match_spread(unseen, [r[1] for r in rows], calib_weights)
            print(f"calibrated (spread): stretch {stretch:.3f} shift {shift:+.3f}", file=sys.stderr)
        elif args.calibrate == "cuts":
            stretch, shift = fit_cuts(unseen, [r[1] for r in rows], [1.0] * len(rows))
            print(f"calibrated (cuts): stretch {stretch:.3f} shift {shift:+.3f}", file=sys.stderr)
        elif args.calibrate:
            stretch, shift = calibrate(unseen, [r[1] for r in rows], calib_weights)
            print(f"calibrated: stretch {stretch:.3f} shift {shift:+.3f}", file=sys.stderr)
        total = hits_all = 0
        by_band = Counter[int]()
        hits_band = Counter[int]()
        for source in args.loso_sources or list(per_source):
            idx = [i for i, e in enumerate(examples) if e.source == source]
            hit = [band(stretch * unseen[i] + shift) == band(rows[i][1]) for i in idx]
            total += len(idx)
            hits_all += sum(hit)
            for i, h in zip(idx, hit, strict=True):
                by_band[band(rows[i][1])] += 1
                hits_band[band(rows[i][1])] += h
            print(
                f"  unseen-source band agreement {source}: {sum(hit) / len(idx):.1%}",
                file=sys.stderr,
            )
        recall = [hits_band[b] / by_band[b] for b in sorted(by_band)]
        print(
            f"unseen-source band agreement, all: {hits_all / total:.1%}; per band (1-3, 4-6, "
            f"7-10): {', '.join(f'{r:.1%}' for r in recall)}; their mean (balanced): "
            f"{sum(recall) / len(recall):.1%}",
            file=sys.stderr,
        )

    model = fit(rows, names, **hyper)
    # The shipped form: each node's value x stretch; the scorer adds, per tree, the change from
    # the root to the leaf it reaches (so each step is a cue's contribution, for --explain), and
    # the roots, the trees' start, the terms' bias and the shift are folded into BIAS.
    roots = sum(tree[0][4] for tree in model.trees)
    bias = stretch * (model.init + roots + model.term_bias) + shift
    trees = [
        [(f, thr, lo, hi, round(stretch * v, 4)) for f, thr, lo, hi, v in tree]
        for tree in model.trees
    ]
    terms = {
        t: round(stretch * w, 3)
        for t, w in model.term_w.items()
        if abs(stretch * w) >= args.min_weight
    }
    write_weights(args.out, bias, names, trees, terms=terms, per_source=per_source)
    print(
        f"wrote {args.out}: {len(trees)} trees over {len(names)} cues, {len(terms)} terms",
        file=sys.stderr,
    )
    return 0


def write_weights(
    out: Path,
    bias: float,
    names: list[str],
    trees: list[list[Node]],
    *,
    terms: dict[str, float],
    per_source: Counter[str],
) -> None:
    def node(n: Node) -> str:
        f, thr, lo, hi, v = n
        return f"({f}, {thr!r}, {lo}, {hi}, {v})" if f >= 0 else f"(-1, 0.0, -1, -1, {v})"

    lines = [
        '"""Weights of the learned effort scorer. Made by scripts/effort/train.py; do not edit.',
        "",
        "Sources (pinned in scripts/effort/sources.yaml), prompts per source:",
        *(f"  {name}: {count}" for name, count in sorted(per_source.items())),
        "",
        "TREES: boosted regression trees over CUE_NAMES; a node is (cue index or -1 for a leaf,",
        "threshold, left, right, value); a prompt goes left when its cue value <= the threshold.",
        '"""',
        "",
        "# ruff: noqa: E501  (generated: one tree per line)",
        "",
        "from __future__ import annotations",
        "",
        f"BIAS = {bias:.4f}",
        "",
        "CUE_NAMES: tuple[str, ...] = (",
        *(f'    "{name}",' for name in names),
        ")",
        "",
        "TREES: tuple[tuple[tuple[int, float, int, int, float], ...], ...] = (",
        *(f"    ({', '.join(node(n) for n in tree)},)," for tree in trees),
        ")",
        "",
        "# The words' weights as two tuples of constants, one word per line: Python loads them",
        "# from the bytecode cache about twice as fast as a dict literal of the same entries (a",
        "# dict display is built entry by entry when the module runs).",
        "TERMS: tuple[str, ...] = (",
        *(f"    {term!r}," for term in sorted(terms)),
        ")",
        "",
        "WEIGHTS: tuple[float, ...] = (",
        *(f"    {terms[term]}," for term in sorted(terms)),
        ")",
        "",
        "TERM_WEIGHTS: dict[str, float] = dict(zip(TERMS, WEIGHTS, strict=True))",
        "",
    ]
    out.write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
