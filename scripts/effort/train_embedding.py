"""Sixth round (issue 21): a candidate effort scorer that reads what a prompt means.

    python scripts/effort/train_embedding.py --source-root /path/to/snapshots --out CANDIDATE.py

Not the shipped weights: on the development figure (RESULTS.md, sixth round) it did not beat the
fifth round's model, which scripts/effort/train.py still rebuilds. The module it writes loads with
`LearnedEffortScorer.from_module` (evaluate.py --weights), and would ship by writing it to
aitherctl/routing/effort_weights.py, with `wordllama` moved from the training requirements to the
runtime dependencies.

`--source-root` holds one folder per repository of scripts/effort/sources.yaml, named
`<owner>+<name>`, each either a bare git snapshot under `repo/` or a plain checkout; the pinned
commit is read. Labels: scripts/effort/LABELLING.md. The model (sixth round, issue 21) has two
stages: gradient-boosted regression trees on the named cues of aitherctl/routing/effort_features.py
(and the prompt's length), then a ridge regression on the static embedding of
aitherctl/routing/static_embedding.py (what the prompt means: the whole text, its opening and its
closing) fitted on what the trees left. The trees need scikit-learn, the ridge numpy
(scripts/effort/requirements.txt, pinned so the weights rebuild byte for byte); the shipped scorer
walks the trees in pure Python and takes one dot product.

With `--split` (eighth round) every stage reads the prompt's request apart from the material it
is given (aitherctl/routing/request_split.py): the request's cues, words and embedding, the
material's size and kind as cues; the module it writes says SPLIT = True, and the scorer splits
the same way.

Sources weigh alike (square root of their size), the general ones (--general, --general-weight)
more. The output stretch and shift are fitted on leave-one-source-out predictions (their mean and
spread matched to the targets', each band of targets 1-3, 4-6, 7-10 weighing the same), which are
also printed as the development figure: band agreement on a dataset the model has not seen, per
band recall and Cohen's kappa. One process, deterministic (seeded).
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from data import SUMMARY_TARGET, Example, SourceReader, round6_examples, training_examples
from data_fresh import fresh_training_examples
from data_round7 import t0_examples

from aitherctl.routing.effort_features import CUE_PHRASES, extract_features
from aitherctl.routing.effort_model import MATERIAL_CUES, tree_vector
from aitherctl.routing.request_split import split_request
from aitherctl.routing.static_embedding import StaticEmbedding

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

GENERAL = (
    "aitherctl-labelled",
    "personality-chat",
    "flask",
    "followbench",
    "clinc150",
    "instructionwild",
    "alignbench",
    "hwu64",
    "wizardlm-testset",
    "srdd",
)
# The optional sources the shipped weights use (RESULTS.md): "fresh4" is the fourth round's fresh
# evaluation set's sources (training data from the fifth round on), "round6" the fifth round's
# fresh set, the WizardLM test set, AIME/AMC and SRDD (training data from the sixth round on).
EXTRA = ("flask", "followbench", "fresh4", "round6", "t0")

TREES = 150  # boosting rounds; depth 3, learning rate 0.1 (fourth round: RESULTS.md)
DEPTH = 3
LEARNING_RATE = 0.1
MIN_LEAF = 20
ALPHA = 1.0  # the ridge's penalty (embedding head and word weights)
MIN_DF = 5  # words seen in fewer training prompts get no weight
MIN_WEIGHT = 0.02  # smaller word weights are not shipped
# A tree node: (feature index or -1 for a leaf, threshold, left child, right child, value); a
# sample goes left when its feature value is <= the threshold (scikit-learn's convention).
Node = tuple[int, float, int, int, float]

# What each training source is, in words a user can check (`--explain`'s nearest kinds of task).
KIND = {
    "personality-chat": "small talk",
    "hwu64": "home-assistant commands",
    "clinc150": "assistant requests",
    "nq-open": "short factual questions",
    "xquad": "a question on a given passage",
    "belle-eval": "everyday Chinese instructions",
    "instructionwild": "users' everyday instructions",
    "alignbench": "Chinese chat questions",
    "flask": "open-ended questions and tasks",
    "followbench": "instructions with constraints",
    "aitherctl-labelled": "requests to a workstation's models",
    "wizardlm-testset": "real users' requests of every skill",
    "expertqa": "questions for a domain expert",
    "srdd": "building a whole application",
    "mawps": "grade-school word problems",
    "asdiv": "grade-school word problems",
    "svamp": "grade-school word problems",
    "cmath": "primary-school maths (Chinese)",
    "tabmwp": "word problems on a table",
    "carp_en": "middle-school algebra",
    "cn_middle_school": "middle-school maths (Chinese)",
    "aqua": "GMAT/GRE algebra",
    "gaokao2023en": "university entrance maths",
    "gaokao_math_qa": "university entrance maths",
    "college_math": "college maths exercises",
    "minerva_math": "university science problems",
    "olympiadbench": "olympiad problems",
    "olymmath": "olympiad problems",
    "putnambench": "Putnam competition problems",
    "aime24": "AIME competition problems",
    "amc23": "AMC competition problems",
    "tal-scq5k-en": "K-12 competition maths",
    "tal-scq5k-zh": "K-12 competition maths (Chinese)",
    "mathodyssey": "high-school to olympiad maths",
    "scibench": "university science problems",
    "mbpp-plus": "basic Python functions",
    "humaneval": "a Python function to complete",
    "classeval": "a Python class to complete",
    "exercism-python": "programming exercises",
    "description2code-codechef": "programming contest problems",
    "codejam": "programming contest problems",
    "cmmlu": "exam questions (Chinese)",
    "m3ke": "exam questions (Chinese)",
    "scienceqa": "school science questions",
    "exams-multilingual": "school exam questions",
    "agieval-sat-en": "SAT reading questions",
    "agieval-sat-math": "SAT maths questions",
    "agieval-lsat-lr": "LSAT logical reasoning",
    "agieval-lsat-rc": "LSAT reading comprehension",
    "agieval-lsat-ar": "LSAT logic games",
    "agieval-logiqa-en": "logic puzzles",
    "agieval-logiqa-zh": "logic puzzles (Chinese)",
    "agieval-jec-qa-ca": "law exam questions (Chinese)",
    "agieval-gaokao-biology": "entrance exam questions (Chinese)",
    "agieval-gaokao-chemistry": "entrance exam questions (Chinese)",
    "agieval-gaokao-physics": "entrance exam questions (Chinese)",
    "agieval-gaokao-history": "entrance exam questions (Chinese)",
    "agieval-gaokao-geography": "entrance exam questions (Chinese)",
    "t0": "a short task on a given text (classify, extract, summarise)",
}


@dataclass
class Model:
    """init + the trees' leaves (already x learning rate) + head_bias + head . embedding."""

    init: float
    trees: list[list[Node]]
    head_bias: float
    head: NDArray[np.float64]
    term_w: NDArray[np.float64]  # one per column of the terms matrix (empty without terms)
    boost: Any  # the fitted GradientBoostingRegressor (its predict = init + the trees' leaves)


def fit(
    x_tree: NDArray[np.float64],
    x_emb: NDArray[np.float64],
    x_terms: Any,
    y: NDArray[np.float64],
    w: NDArray[np.float64],
    *,
    alpha: float,
    seed: int,
) -> Model:
    """Two stages: boosted trees on the named cues first, then one ridge regression on what the
    trees left, over the embedding and the words (`x_terms`, a sparse matrix, may have no
    columns). The trees find what a linear model cannot (a long prompt means one thing with
    maths notation and another without); the embedding says what kind of request it is, the
    words what the embedding's average blurs."""
    import numpy as np
    import scipy.sparse as sp
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import Ridge

    boost = GradientBoostingRegressor(
        loss="squared_error",
        n_estimators=TREES,
        max_depth=DEPTH,
        learning_rate=LEARNING_RATE,
        subsample=0.8,
        min_samples_leaf=MIN_LEAF,
        random_state=seed,
    )
    boost.fit(x_tree, y, sample_weight=w)
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
    left = y - boost.predict(x_tree)
    if x_terms.shape[1] and not SEQUENTIAL[0]:
        features = sp.hstack([x_terms, sp.csr_matrix(x_emb)]).tocsr()
        ridge = Ridge(alpha=alpha, solver="sparse_cg", max_iter=3000, tol=1e-6)
        ridge.fit(features, left, sample_weight=w)
        n_terms = x_terms.shape[1]
        return Model(
            init,
            trees,
            float(ridge.intercept_),
            ridge.coef_[n_terms:],
            ridge.coef_[:n_terms],
            boost,
        )
    # The embedding first (a dense solve, seconds instead of the joint sparse solve's minutes),
    # then the words, if any, on what the embedding left (a sparse solve over the words alone).
    ridge = Ridge(alpha=alpha, solver="cholesky")
    ridge.fit(x_emb, left, sample_weight=w)
    head_bias = float(ridge.intercept_)
    term_w = np.zeros(x_terms.shape[1])
    if x_terms.shape[1]:
        words = Ridge(alpha=alpha, solver="sparse_cg", max_iter=3000, tol=1e-6)
        words.fit(x_terms, left - ridge.predict(x_emb), sample_weight=w)
        head_bias += float(words.intercept_)
        term_w = words.coef_
    return Model(init, trees, head_bias, ridge.coef_, term_w, boost)


def predict(
    model: Model, x_tree: NDArray[np.float64], x_emb: NDArray[np.float64], x_terms: Any
) -> NDArray[np.float64]:
    out: NDArray[np.float64] = (
        model.boost.predict(x_tree) + model.head_bias + x_emb @ model.head + x_terms @ model.term_w
    )
    return out


def terms_matrix(texts: list[str], min_df: int) -> tuple[Any, list[str]]:
    """The words' matrix: a row per prompt, a column per term seen in at least `min_df` prompts,
    each present term 1/sqrt(number of present terms) (as the scorer scales them)."""
    import scipy.sparse as sp

    terms = [set(extract_features(text).terms) for text in texts]
    df = Counter(t for ts in terms for t in ts)
    vocab = sorted(t for t, n in df.items() if n >= min_df)
    column = {t: i for i, t in enumerate(vocab)}
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for r, ts in enumerate(terms):
        kept = sorted(column[t] for t in ts if t in column)
        for c in kept:
            rows.append(r)
            cols.append(c)
            vals.append(1.0 / math.sqrt(len(kept)))
    return sp.csr_matrix((vals, (rows, cols)), shape=(len(texts), len(vocab))), vocab


def match_spread(
    preds: NDArray[np.float64], targets: NDArray[np.float64], weights: NDArray[np.float64]
) -> tuple[float, float]:
    """The stretch and shift that give the predictions the targets' weighted mean and spread.

    Least squares regresses towards the mean: on data the model has not seen its predictions
    are noisy, so nearly everything would land in 4-6. Matching the spread keeps the scores as
    wide as the labels, so each band keeps its share."""
    import numpy as np

    mp = float(np.average(preds, weights=weights))
    mt = float(np.average(targets, weights=weights))
    vp = float(np.average((preds - mp) ** 2, weights=weights))
    vt = float(np.average((targets - mt) ** 2, weights=weights))
    stretch = math.sqrt(vt / vp) if vp else 1.0
    return stretch, mt - stretch * mp


def band(score: float) -> int:
    s = max(1, min(10, math.floor(score + 0.5)))
    return 0 if s <= 3 else 1 if s <= 6 else 2


def kappa(truth: list[int], got: list[int]) -> float:
    """Cohen's kappa of two band labellings."""
    n = len(truth)
    agree = sum(t == g for t, g in zip(truth, got, strict=True)) / n
    chance = sum(truth.count(b) * got.count(b) for b in range(3)) / n / n
    return (agree - chance) / (1 - chance) if chance < 1 else 0.0


def balance_bands(targets: list[float], weights: list[float]) -> list[float]:
    """The weights scaled so that each band of targets carries the same total weight."""
    band_total = Counter[int]()
    for t, w in zip(targets, weights, strict=True):
        band_total[band(t)] += w
    mean = sum(band_total.values()) / len(band_total)
    return [w * mean / band_total[band(t)] for t, w in zip(targets, weights, strict=True)]


SEQUENTIAL = [False]  # --sequential: the embedding's ridge, then the words' on what it left
KIND_MIN = 10  # prompts a (source, label) group needs to be a kind of task
KIND_TOP = 5  # the nearest kinds the prior averages over
KIND_TEMPERATURE = 0.05  # the softmax's temperature over their cosine similarities


def kind_groups(
    whole: NDArray[np.float64], y: NDArray[np.float64], sources: NDArray[Any]
) -> tuple[NDArray[np.float64], NDArray[np.float64], list[str]]:
    """The kinds of task: each (source, label) with at least KIND_MIN prompts, as the unit mean of
    its prompts' whole-text embeddings, its label and its source."""
    import numpy as np

    centroids: list[NDArray[np.float64]] = []
    efforts: list[float] = []
    group_sources: list[str] = []
    for source in sorted(set(sources.tolist())):
        for label in sorted(set(y[sources == source].tolist())):
            rows = whole[(sources == source) & (y == label)]
            if len(rows) < KIND_MIN:
                continue
            mean = rows.mean(axis=0)
            centroids.append(mean / np.linalg.norm(mean))
            efforts.append(float(label))
            group_sources.append(source)
    return np.array(centroids), np.array(efforts), group_sources


def kind_prior(
    whole: NDArray[np.float64],
    centroids: NDArray[np.float64],
    efforts: NDArray[np.float64],
    group_sources: list[str],
    *,
    exclude: NDArray[Any] | None = None,
) -> NDArray[np.float64]:
    """The effort of the KIND_TOP nearest kinds of task, weighted by a softmax of their cosine
    similarity. `exclude`: each row's own source, whose kinds it may not use (a training prompt
    must see its prior as a prompt from an unseen source would)."""
    import numpy as np

    sims = whole @ centroids.T
    if exclude is not None:
        owner = np.array(group_sources)
        sims = np.where(exclude[:, None] == owner[None, :], -np.inf, sims)
    top = np.argsort(-sims, axis=1, kind="stable")[:, :KIND_TOP]
    top_sims = np.take_along_axis(sims, top, axis=1)
    weights = np.exp((top_sims - top_sims[:, :1]) / KIND_TEMPERATURE)
    out: NDArray[np.float64] = (weights * efforts[top]).sum(axis=1) / weights.sum(axis=1)
    return out


def load_examples(reader: SourceReader, cap: int, extra: tuple[str, ...]) -> list[Example]:
    examples = training_examples(reader, cap=cap, extra=extra, summary_target=SUMMARY_TARGET)
    if "fresh4" in extra:
        examples += fresh_training_examples(reader, cap=cap)
    if "round6" in extra:
        examples += round6_examples(reader, cap=cap)
    if "t0" in extra:
        examples += t0_examples(reader)
    return examples


def main() -> int:
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-root", type=Path, required=True)
    parser.add_argument("--cap", type=int, default=400, help="items per source at most")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--alpha", type=float, default=ALPHA, help="the ridge's penalty")
    parser.add_argument(
        "--no-terms", action="store_true", help="no word weights, the embedding only"
    )
    parser.add_argument(
        "--no-embedding",
        action="store_true",
        help="no embedding head, the words only (the fifth round's kind of model)",
    )
    parser.add_argument(
        "--extra",
        nargs="*",
        default=list(EXTRA),
        choices=("mmlu-levels", "flask", "followbench", "fresh4", "round6", "t0"),
        help="optional sources of sources.yaml to read (default: those the shipped weights use)",
    )
    parser.add_argument(
        "--loso-sources",
        nargs="*",
        default=[],
        help="leave out only these sources for the development figure",
    )
    parser.add_argument(
        "--dump-unseen",
        type=Path,
        help="write the leave-one-source-out predictions here (JSON lines)",
    )
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
    parser.add_argument(
        "--kind-prior",
        action="store_true",
        help="give the trees the nearest kinds of task's effort as one more input (seventh round)",
    )
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="fit the embedding's ridge first, then the words' on what it left "
        "(instead of one joint sparse solve, which takes minutes per fit)",
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="read each prompt's request apart from the material it is given "
        "(eighth round, routing/request_split.py): the cues, the words and "
        "the embedding of the request, the material's size and kind as cues",
    )
    parser.add_argument(
        "--cache", type=Path, help="keep the prompts' features here (a pickle), for a later run"
    )
    args = parser.parse_args()

    reader = SourceReader(args.source_root)
    SEQUENTIAL[0] = args.sequential
    names = [*sorted(CUE_PHRASES), "length"]
    if args.split:
        names += list(MATERIAL_CUES)
    embedding = StaticEmbedding.shipped()
    if args.cache and args.cache.is_file():
        with args.cache.open("rb") as fh:
            examples, x_tree, vectors, x_terms, vocab = pickle.load(fh)
    else:
        examples = load_examples(reader, args.cap, tuple(args.extra))
        # The same split as the scorer's (LearnedEffortScorer.score): the request is read, the
        # material only as its cues.
        splits = [split_request(e.prompt) if args.split else None for e in examples]
        texts = [
            e.prompt if sp is None else sp.request for e, sp in zip(examples, splits, strict=True)
        ]
        x_tree = np.array(
            [
                tree_vector({**dict(f.cues), **(sp.cues() if sp else {})}, f.words, names)
                for f, sp in zip((extract_features(t) for t in texts), splits, strict=True)
            ]
        )
        vectors = np.array([embedding.vector(t) for t in texts], dtype=np.float64)
        x_terms, vocab = terms_matrix(texts, MIN_DF)
        if args.cache:
            with args.cache.open("wb") as fh:
                pickle.dump((examples, x_tree, vectors, x_terms, vocab), fh)
    per_source = Counter(e.source for e in examples)
    print(f"{len(examples)} training prompts: {dict(per_source)}", file=sys.stderr)
    x_emb = np.zeros((len(examples), 0)) if args.no_embedding else vectors
    if args.no_terms:
        x_terms, vocab = x_terms[:, :0], []
    y = np.array([e.target for e in examples])
    sources = np.array([e.source for e in examples])
    # Each source weighs the same in total, whatever its size after the cap; general requests
    # (chat, users' instructions, the project's labelled set) weigh more: `run` sees them most.
    weight = {s: (len(examples) / len(per_source) / n) ** 0.5 for s, n in per_source.items()}
    for source in args.general:
        if source in weight:
            weight[source] *= args.general_weight
    w = np.array([weight[e.source] for e in examples])
    # The output calibration gives each band (1-3, 4-6, 7-10) the same total weight: the hard
    # band has the fewest public examples (fifth round: in the calibration only, RESULTS.md).
    calib_w = np.array(balance_bands(list(y), list(w)))

    # Leave one source out: the model's prediction for each dataset when it has never seen that
    # dataset. Its band agreement is the development figure for generalisation, and the output
    # stretch is fitted on these predictions (on data it has not seen, the model is too timid).
    dim = vectors.shape[1] // 3
    whole = vectors[:, :dim]
    if args.kind_prior:
        names.append("kind_prior")
    unseen = np.zeros(len(examples))
    for source in args.loso_sources or sorted(per_source):
        out = sources == source
        x_fold = x_tree
        if args.kind_prior:
            groups = kind_groups(whole[~out], y[~out], sources[~out])
            x_fold = np.hstack([x_tree, kind_prior(whole, *groups, exclude=sources)[:, None]])
        model = fit(
            x_fold[~out], x_emb[~out], x_terms[~out], y[~out], w[~out], alpha=args.alpha, seed=7
        )
        unseen[out] = predict(model, x_fold[out], x_emb[out], x_terms[out])
    stretch, shift = match_spread(unseen, y, calib_w)
    print(f"calibrated (spread): stretch {stretch:.3f} shift {shift:+.3f}", file=sys.stderr)
    if args.dump_unseen:
        with args.dump_unseen.open("w", encoding="utf-8") as fh:
            for i, e in enumerate(examples):
                fh.write(
                    json.dumps(
                        {
                            "source": e.source,
                            "target": e.target,
                            "pred": stretch * unseen[i] + shift,
                        }
                    )
                    + "\n"
                )
    report(examples, [stretch * p + shift for p in unseen], args.loso_sources or sorted(per_source))

    kinds: list[tuple[str, float, list[float]]] = []
    if args.kind_prior:
        centroids, efforts, group_sources = kind_groups(whole, y, sources)
        centroids = np.round(centroids, 4)  # as shipped, so the trees see what the scorer will
        x_tree = np.hstack(
            [x_tree, kind_prior(whole, centroids, efforts, group_sources, exclude=sources)[:, None]]
        )
        kinds = [
            (f"{KIND.get(g, g)} ({g})", float(e), [round(float(v), 4) for v in c])
            for g, e, c in zip(group_sources, efforts, centroids, strict=True)
        ]
    model = fit(x_tree, x_emb, x_terms, y, w, alpha=args.alpha, seed=7)
    # The shipped form: each node's value x stretch; the scorer adds, per tree, the change from
    # the root to the leaf it reaches (so each step is a cue's contribution, for --explain), and
    # the roots, the trees' start, the head's bias and the shift are folded into BIAS.
    roots = sum(tree[0][4] for tree in model.trees)
    bias = stretch * (model.init + roots + model.head_bias) + shift
    trees = [
        [(f, thr, lo, hi, round(stretch * v, 4)) for f, thr, lo, hi, v in tree]
        for tree in model.trees
    ]
    head = [round(stretch * float(v), 5) for v in model.head]
    terms = {
        t: round(stretch * float(v), 3)
        for t, v in zip(vocab, model.term_w, strict=True)
        if abs(stretch * v) >= MIN_WEIGHT
    }
    for source in [] if args.kind_prior else sorted(per_source):
        rows = vectors[sources == source][:, :dim].mean(axis=0)
        centroid = rows / np.linalg.norm(rows)
        kinds.append(
            (
                f"{KIND.get(source, source)} ({source})",
                round(float(y[sources == source].mean()), 1),
                [round(float(v), 4) for v in centroid],
            )
        )
    write_weights(
        args.out,
        bias,
        names,
        trees,
        head=head,
        kinds=kinds,
        terms=terms,
        checksum=embedding.checksum(),
        per_source=per_source,
        split=args.split,
    )
    print(
        f"wrote {args.out}: {len(trees)} trees over {len(names)} cues, head {len(head)}, "
        f"{len(kinds)} kinds, {len(terms)} words",
        file=sys.stderr,
    )
    return 0


def report(examples: list[Example], preds: list[float], sources: list[str]) -> None:
    """The development figure: band agreement of the leave-one-source-out predictions, pooled,
    per source, per band (recall) and as Cohen's kappa."""
    truth: list[int] = []
    got: list[int] = []
    for source in sources:
        idx = [i for i, e in enumerate(examples) if e.source == source]
        hit = [band(preds[i]) == band(examples[i].target) for i in idx]
        truth += [band(examples[i].target) for i in idx]
        got += [band(preds[i]) for i in idx]
        print(
            f"  unseen-source band agreement {source}: {sum(hit) / len(idx):.1%}", file=sys.stderr
        )
    recall = [
        sum(t == g == b for t, g in zip(truth, got, strict=True)) / max(1, truth.count(b))
        for b in range(3)
    ]
    pooled = sum(t == g for t, g in zip(truth, got, strict=True)) / len(truth)
    print(
        f"unseen-source band agreement, all: {pooled:.1%}; per band (1-3, 4-6, 7-10): "
        f"{', '.join(f'{r:.1%}' for r in recall)}; kappa {kappa(truth, got):+.3f}",
        file=sys.stderr,
    )


def write_weights(
    out: Path,
    bias: float,
    names: list[str],
    trees: list[list[Node]],
    *,
    head: list[float],
    kinds: list[tuple[str, float, list[float]]],
    terms: dict[str, float],
    checksum: float,
    per_source: Counter[str],
    split: bool = False,
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
        "HEAD: the weights of the static embedding (whole text, opening, closing: 3 x 256).",
        "KINDS / CENTROIDS: the kinds of task (a training source, or a source's label when the",
        "trees read kind_prior: the effort of the KIND_TOP nearest), their effort, mean embedding.",
        "TERM_WEIGHTS: the words' weights (w:word, p:five-letter prefix, c: CJK characters).",
        "TABLE_CHECKSUM: the embedding table these weights were fitted on (its first rows' sum).",
        '"""',
        "",
        "# ruff: noqa: E501  (generated: one tree per line)",
        "",
        "from __future__ import annotations",
        "",
        f"BIAS = {bias:.4f}",
        f"TABLE_CHECKSUM = {checksum!r}",
        *(
            [f"KIND_TOP = {KIND_TOP}", f"KIND_TEMPERATURE = {KIND_TEMPERATURE}"]
            if "kind_prior" in names
            else []
        ),
        *(
            [
                "# The request is read apart from its material (routing/request_split.py).",
                "SPLIT = True",
            ]
            if split
            else []
        ),
        "",
        "CUE_NAMES: tuple[str, ...] = (",
        *(f'    "{name}",' for name in names),
        ")",
        "",
        "TREES: tuple[tuple[tuple[int, float, int, int, float], ...], ...] = (",
        *(f"    ({', '.join(node(n) for n in tree)},)," for tree in trees),
        ")",
        "",
        "HEAD: tuple[float, ...] = (",
        *(f"    {', '.join(repr(v) for v in head[i : i + 16])}," for i in range(0, len(head), 16)),
        ")",
        "",
        "KINDS: tuple[tuple[str, float], ...] = (",
        *(f"    ({d!r}, {e!r})," for d, e, _ in kinds),
        ")",
        "",
        "CENTROIDS: tuple[tuple[float, ...], ...] = (",
        *(f"    ({', '.join(repr(v) for v in c)},)," for _, _, c in kinds),
        ")",
        "",
        "TERM_WEIGHTS: dict[str, float] = {",
        *(f"    {term!r}: {w}," for term, w in sorted(terms.items())),
        "}",
        "",
    ]
    out.write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
