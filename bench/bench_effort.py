"""Benchmark of the effort scorers: microseconds to score one prompt.

    python bench/bench_effort.py [--rounds 20] [--json-out FILE]

Prompts: every prompt of tests/data/effort_labelled.yaml and effort_holdout.yaml (2 to ~400 words),
plus three long ones (a 2,000-word pasted document with a question, a 6,000-word one, and a long
maths problem), so the tail is measured too. Each prompt is scored `--rounds` times per scorer;
reported: median and p95 per call, and the one-off cost of loading the learned weights and the
embedding (the first call in a fresh process). Target (issues 9, 21): under 2 ms per prompt at p95.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from aitherctl.routing.effort_model import LearnedEffortScorer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def prompts() -> list[str]:
    out: list[str] = []
    for name in ("effort_labelled.yaml", "effort_holdout.yaml"):
        rows = yaml.safe_load((ROOT / "tests" / "data" / name).read_text(encoding="utf-8"))
        out.extend(row["prompt"] for row in rows)
    sentence = "The committee reviewed the budget and moved the vote to Thursday afternoon. "
    out.append(sentence * 180 + "\n\nOn which day is the vote?")
    out.append(sentence * 550 + "\n\nSummarise the decisions in three bullet points.")
    out.append(
        "Let $p$ be a prime and $f(x) = \\sum_{k=0}^{p-1} x^k$. " * 30
        + "Prove that $f$ is irreducible over $\\mathbb{Q}$."
    )
    return out


def candidate(path: str) -> LearnedEffortScorer:
    """A candidate weights module with its embedding (as scripts/effort/evaluate.py --weights)."""
    from aitherctl.routing.static_embedding import candidate_scorer

    return candidate_scorer(path)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--json-out", type=Path)
    parser.add_argument(
        "--weights",
        type=Path,
        help="a candidate weights module (scripts/effort/train_embedding.py --out) "
        "instead of the shipped one",
    )
    args = parser.parse_args()

    first_call = (
        "from aitherctl.routing.static_embedding import score_effort; score_effort('hi'); "
        if args.weights is None
        else "import sys; sys.path.insert(0, 'bench'); from bench_effort import candidate; "
        f"candidate({str(args.weights.resolve())!r}).score('hi'); "
    )
    load = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import time; t = time.perf_counter(); {first_call}print(time.perf_counter() - t)",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    from aitherctl.routing.effort_heuristic import score_effort_heuristic
    from aitherctl.routing.static_embedding import learned_scorer

    learned = learned_scorer() if args.weights is None else candidate(str(args.weights.resolve()))
    scorers = {"learned": learned.score, "heuristic": score_effort_heuristic}
    texts = prompts()
    summary: dict[str, object] = {
        "prompts": len(texts),
        "rounds": args.rounds,
        "first_call_in_fresh_process_ms": round(float(load.stdout) * 1000, 1),
    }
    for name, score in scorers.items():
        for text in texts:  # warm regex caches
            score(text)
        times: list[float] = []
        long_times: list[float] = []
        for _ in range(args.rounds):
            for text in texts:
                start = time.perf_counter()
                score(text)
                elapsed = (time.perf_counter() - start) * 1e6
                times.append(elapsed)
                if len(text) > 5000:
                    long_times.append(elapsed)
        summary[name] = {
            "median_us": round(statistics.median(times), 1),
            "p95_us": round(_percentile(times, 0.95), 1),
            "median_long_prompt_us": round(statistics.median(long_times), 1),
            "max_long_prompt_us": round(max(long_times), 1),
        }
    print(json.dumps(summary, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
