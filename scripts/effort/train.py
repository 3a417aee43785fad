"""Rebuild aitherctl/core/effort_weights.py, the learned effort scorer's weights.

    python scripts/effort/train.py --source-root /path/to/snapshots   # the shipped weights

`--source-root` holds one folder per repository of scripts/effort/sources.yaml, named
`<owner>+<name>`, each either a bare git snapshot under `repo/` or a plain checkout; the pinned
commit is read. Labels: scripts/effort/LABELLING.md. The model is a linear regression of the effort
target on the features of aitherctl/core/effort_features.py, fitted with AdaGrad and L2 in pure
Python, in two stages (named cues first, then lexical terms on what the cues left). Sources weigh
alike (square root of their size), the general ones (--general, --general-weight) more, and each
band of targets (1-3, 4-6, 7-10) the same in total. The output stretch and shift are fitted on
leave-one-source-out predictions (--calibrate spread: their mean and spread matched to the
targets'), which are also printed as the development figure: band agreement on a dataset the model
has not seen. One process, deterministic (seeded), a few minutes on one core.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from data import SourceReader, training_examples

from aitherctl.core.effort_features import PromptFeatures, extract_features

GENERAL = ("aitherctl-labelled", "personality-chat", "flask", "followbench")
EXTRA = ("flask", "followbench")  # the optional sources the shipped weights use (RESULTS.md)
OUT = Path(__file__).resolve().parents[2] / "aitherctl" / "core" / "effort_weights.py"


def fit(
    rows: list[tuple[PromptFeatures, float, float]],
    *, epochs: int, lr: float, l2_cue: float, l2_term: float, seed: int,
) -> tuple[float, dict[str, float], dict[str, float]]:
    """Two stages: the named cues alone first, then the terms on what the cues left unexplained
    (cue weights frozen). The cues carry over to other languages and datasets; fitted jointly,
    the terms would take their share (the weight of "asks for a proof" would go to "prove")."""
    bias, cue_w, _ = _fit(rows, epochs=epochs, lr=lr, l2_cue=l2_cue, l2_term=l2_term, seed=seed,
                          use_terms=False)
    return _fit(rows, epochs=epochs, lr=lr, l2_cue=l2_cue, l2_term=l2_term, seed=seed,
                use_terms=True, start=(bias, cue_w))


def _fit(
    rows: list[tuple[PromptFeatures, float, float]],
    *, epochs: int, lr: float, l2_cue: float, l2_term: float, seed: int, use_terms: bool,
    start: tuple[float, dict[str, float]] | None = None,
) -> tuple[float, dict[str, float], dict[str, float]]:
    """Squared loss, per-example weight; AdaGrad on bias, cues (unless frozen) and terms."""
    rng = random.Random(seed)
    bias = sum(t for _, t, _ in rows) / len(rows)
    cue_w: dict[str, float] = {}
    frozen = start is not None
    if start is not None:
        bias, cue_w = start[0], dict(start[1])
    term_w: dict[str, float] = {}
    g_bias = 1e-8
    g_cue: dict[str, float] = {}
    g_term: dict[str, float] = {}
    order = list(range(len(rows)))
    for _ in range(epochs):
        rng.shuffle(order)
        for i in order:
            feats, target, weight = rows[i]
            pred = bias + sum(cue_w.get(n, 0.0) * v for n, v in feats.cues)
            pred += feats.term_scale * sum(term_w.get(t, 0.0) for t in feats.terms)
            err = (pred - target) * weight
            g_bias += err * err
            bias -= lr * err / math.sqrt(g_bias)
            for name, value in () if frozen else feats.cues:
                w = cue_w.get(name, 0.0)
                grad = err * value + l2_cue * w
                g_cue[name] = g_cue.get(name, 1e-8) + grad * grad
                cue_w[name] = w - lr * grad / math.sqrt(g_cue[name])
            for term in feats.terms if use_terms else ():
                w = term_w.get(term, 0.0)
                grad = err * feats.term_scale + l2_term * w
                g_term[term] = g_term.get(term, 1e-8) + grad * grad
                term_w[term] = w - lr * grad / math.sqrt(g_term[term])
    return bias, cue_w, term_w


def predict(bias: float, cue_w: dict[str, float], term_w: dict[str, float],
            feats: PromptFeatures) -> float:
    pred = bias + sum(cue_w.get(n, 0.0) * v for n, v in feats.cues)
    return pred + feats.term_scale * sum(term_w.get(t, 0.0) for t in feats.terms)


def calibrate(preds: list[float], targets: list[float], weights: list[float]
              ) -> tuple[float, float]:
    """Weighted least squares target = stretch x prediction + shift."""
    n = sum(weights)
    mp = sum(p * w for p, w in zip(preds, weights, strict=True)) / n
    mt = sum(t * w for t, w in zip(targets, weights, strict=True)) / n
    cov = sum(w * (p - mp) * (t - mt) for p, t, w in zip(preds, targets, weights, strict=True))
    var = sum(w * (p - mp) ** 2 for p, w in zip(preds, weights, strict=True))
    stretch = cov / var if var else 1.0
    return stretch, mt - stretch * mp


def match_spread(preds: list[float], targets: list[float], weights: list[float]
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


def fit_cuts(preds: list[float], targets: list[float], weights: list[float]
             ) -> tuple[float, float]:
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
                w for p, b, w in zip(preds, bands, weights, strict=True)
                if (0 if p < c1 else 1 if p < c2 else 2) == b
            )
            if hits > best[0]:
                best = (hits, c1, c2)
    _, c1, c2 = best
    stretch = 3.0 / (c2 - c1)
    return stretch, 3.5 - stretch * c1


def band(score: float) -> int:
    s = max(1, min(10, math.floor(score + 0.5)))
    return 0 if s <= 3 else 1 if s <= 6 else 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-root", type=Path, required=True)
    parser.add_argument("--cap", type=int, default=400, help="items per source at most")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--min-df", type=int, default=5, help="drop terms seen in fewer prompts")
    parser.add_argument("--calibrate", choices=("spread", "least-squares", "cuts", ""),
                        default="spread",
                        help="how the output stretch is fitted on leave-one-source-out "
                             "predictions ('' for none)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--loso", action="store_true", help="leave-one-source-out report")
    parser.add_argument("--min-weight", type=float, default=0.02,
                        help="terms with a smaller weight are not shipped")
    parser.add_argument("--loso-sources", nargs="*", default=[])
    parser.add_argument("--extra", nargs="*", default=list(EXTRA),
                        choices=("mmlu-levels", "flask", "followbench"),
                        help="optional sources of sources.yaml to read (default: those the "
                             "shipped weights use)")
    parser.add_argument("--dump-unseen", type=Path,
                        help="write the leave-one-source-out predictions here (JSON lines)")
    parser.add_argument("--no-band-balance", action="store_true")
    parser.add_argument("--l2-term", type=float, default=1e-2)
    parser.add_argument("--no-terms", action="store_true", help="cues only")
    parser.add_argument("--stretch", type=float, default=1.0,
                        help="without --check: the output stretch to apply")
    parser.add_argument("--shift", type=float, default=0.0)
    parser.add_argument("--general", nargs="*", default=list(GENERAL),
                        help="the sources that --general-weight applies to")
    parser.add_argument("--general-weight", type=float, default=6.0,
                        help="extra weight of the general (non-maths) sources")
    args = parser.parse_args()

    examples = training_examples(SourceReader(args.source_root), cap=args.cap,
                                 extra=tuple(args.extra))
    per_source = Counter(e.source for e in examples)
    print(f"{len(examples)} training prompts: {dict(per_source)}", file=sys.stderr)
    feats = [extract_features(e.prompt) for e in examples]
    df = Counter(t for f in feats for t in f.terms)
    keep = {t for t, n in df.items() if n >= args.min_df and not args.no_terms}
    feats = [
        PromptFeatures(f.cues, kept, 1.0 / math.sqrt(len(kept)) if kept else 0.0, f.words,
                       f.examples)
        for f in feats
        for kept in [tuple(t for t in f.terms if t in keep)]
    ]
    # Each source weighs the same in total, whatever its size after the cap.
    # General requests (chat, the project's labelled set) weigh more: they are what `run` sees most.
    weight = {s: (len(examples) / len(per_source) / n) ** 0.5 for s, n in per_source.items()}
    for source in args.general:
        weight[source] *= args.general_weight
    rows = [(f, e.target, weight[e.source]) for f, e in zip(feats, examples, strict=True)]
    if not args.no_band_balance:
        # Each band (1-3, 4-6, 7-10) carries the same total weight: the hard band has the fewest
        # public examples, and without this the model learns to answer "4-6" for anything new.
        band_total = Counter[int]()
        for _, target, w in rows:
            band_total[band(target)] += w
        mean = sum(band_total.values()) / len(band_total)
        rows = [(f, t, w * mean / band_total[band(t)]) for f, t, w in rows]
    hyper = {"epochs": args.epochs, "lr": 0.05, "l2_cue": 1e-4, "l2_term": args.l2_term, "seed": 7}

    stretch, shift = args.stretch, args.shift
    if args.loso or args.calibrate:
        # Leave one source out: the model's prediction for each dataset when it has never seen that
        # dataset. Its band agreement is the development figure for generalisation (the evaluation
        # sets are never used for choices), and with --calibrate the output stretch is fitted on
        # these predictions: on data it has not seen, the model is too timid, pulling everything
        # towards the middle, and this undoes that.
        unseen = [0.0] * len(rows)
        for source in args.loso_sources or list(per_source):
            model = fit([r for r, e in zip(rows, examples, strict=True) if e.source != source],
                        **hyper)
            for i, e in enumerate(examples):
                if e.source == source:
                    unseen[i] = predict(*model, rows[i][0])
        if args.dump_unseen:
            with args.dump_unseen.open("w", encoding="utf-8") as fh:
                for i, e in enumerate(examples):
                    fh.write(json.dumps({"source": e.source, "target": e.target,
                                         "weight": rows[i][2], "pred": unseen[i]}) + "\n")
        if args.calibrate == "spread":
            stretch, shift = match_spread(unseen, [r[1] for r in rows], [r[2] for r in rows])
            print(f"calibrated (spread): stretch {stretch:.3f} shift {shift:+.3f}",
                  file=sys.stderr)
        elif args.calibrate == "cuts":
            stretch, shift = fit_cuts(unseen, [r[1] for r in rows], [1.0] * len(rows))
            print(f"calibrated (cuts): stretch {stretch:.3f} shift {shift:+.3f}", file=sys.stderr)
        elif args.calibrate:
            stretch, shift = calibrate(unseen, [r[1] for r in rows], [r[2] for r in rows])
            print(f"calibrated: stretch {stretch:.3f} shift {shift:+.3f}", file=sys.stderr)
        total = hits_all = 0
        for source in args.loso_sources or list(per_source):
            idx = [i for i, e in enumerate(examples) if e.source == source]
            hits = sum(band(stretch * unseen[i] + shift) == band(rows[i][1]) for i in idx)
            total += len(idx)
            hits_all += hits
            print(f"  unseen-source band agreement {source}: {hits / len(idx):.1%}",
                  file=sys.stderr)
        print(f"unseen-source band agreement, all: {hits_all / total:.1%}", file=sys.stderr)

    bias, cue_w, term_w = fit(rows, **hyper)
    bias = stretch * bias + shift
    terms = {t: round(stretch * w, 3) for t, w in term_w.items()
             if abs(stretch * w) >= args.min_weight}
    cues = {c: round(stretch * w, 3) for c, w in sorted(cue_w.items())}
    write_weights(args.out, bias, cues, terms, per_source)
    print(f"wrote {args.out}: {len(cues)} cues, {len(terms)} terms", file=sys.stderr)
    return 0


def write_weights(out: Path, bias: float, cues: dict[str, float], terms: dict[str, float],
                  per_source: Counter[str]) -> None:
    lines = [
        '"""Weights of the learned effort scorer. Made by scripts/effort/train.py; do not edit.',
        "",
        "Sources (pinned in scripts/effort/sources.yaml), prompts per source:",
        *(f"  {name}: {count}" for name, count in sorted(per_source.items())),
        '"""',
        "",
        "from __future__ import annotations",
        "",
        f"BIAS = {bias:.4f}",
        "",
        "CUE_WEIGHTS: dict[str, float] = {",
        *(f"    {name!r}: {w},".replace("'", '"') for name, w in cues.items()),
        "}",
        "",
        "TERM_WEIGHTS: dict[str, float] = {",
        *(f"    {term!r}: {w}," for term, w in sorted(terms.items())),
        "}",
        "",
    ]
    out.write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
