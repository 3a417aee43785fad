"""The keyword heuristic effort scorer (`score_effort_heuristic`), kept for comparison and as a
fallback (aitherctl/routing/effort.py says why the learned scorer replaced it). Its own module so
that `run`, which scores with the learned scorer, never compiles these expressions.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from aitherctl.routing.effort import FRONTIER_FLOOR, MAX_EFFORT, MIN_EFFORT, EffortScore

# Graded reasoning markers: (points, pattern, label). The strongest matching group counts in full,
# each further group adds a little (several kinds of reasoning in one request is harder still).
_REASONING_GROUPS: tuple[tuple[float, re.Pattern[str], str], ...] = (
    (
        6.0,
        re.compile(
            r"\b(prove|proof|proofs|derive|derivation|lemma|invariants?|rigorous(ly)?|"
            r"formal(ly)?\s+(verify|proof|specification)|linearizab\w*|counterexample|"
            r"by induction|tla\+)\b",
            re.IGNORECASE,
        ),
        "proof or derivation",
    ),
    (
        4.0,
        re.compile(
            r"\b(design|architect\w*|trade-?offs?|scal(e|able|ability)|root cause|diagnos\w+|"
            r"deadlocks?|race condition|threat model|consisten(cy|t)|fault[- ]toleran\w+|"
            r"leak(s|ing)?|what could cause|hypothes[ie]s|intermittent(ly)?|hangs?|bottleneck)\b",
            re.IGNORECASE,
        ),
        "design or diagnosis",
    ),
    (
        3.0,
        re.compile(
            r"\b(analy[sz]e|analysis|compare|comparison|evaluate|critique|critically|debug|"
            r"optimi[sz]e|assess|justify|why does|why is|explain why|step[- ]by[- ]step|"
            r"pros and cons|edge cases|complexity|recommend|fails|flaw|fallacy|"
            r"precisely|is this .{0,40} correct)\b",
            re.IGNORECASE,
        ),
        "analysis",
    ),
)

# Signals that the request is at the frontier: breadth, stakes or novelty.
_FRONTIER = re.compile(
    r"\b(production[- ]ready|research(-grade| paper)?|novel|state[- ]of[- ]the[- ]art|"
    r"comprehensive|complete|full|end[- ]to[- ]end|security audit|due[- ]diligence|"
    r"formally verify|exhaustive|survey|postmortem|migration plan|roadmap|rigorous(ly)?)\b",
    re.IGNORECASE,
)

# Work verbs: the prompt asks for something to be produced, not just a fact.
_TASK = re.compile(
    r"\b(write|implement|create|build|generate|draft|refactor|review|explain|describe|"
    r"summari[sz]e|plan|make|convert|translate|rewrite|give me \d+|list the|help me|show how|"
    r"differences?|difference between|how does|how do i set up|what are the|feedback)\b",
    re.IGNORECASE,
)

# Small outputs: a few words or lines, whatever the verb.
_SMALL_OUTPUT = re.compile(
    r"\b(haiku|joke|limerick|synonym|antonym|one (sentence|line|word)|just the word|"
    r"into (spanish|french|german|italian|japanese)|politely|to (celsius|fahrenheit))\b",
    re.IGNORECASE,
)

# Short-answer and small-talk markers: the dampener.
_SIMPLE = re.compile(
    r"^\s*(hi|hello|hey|thanks?|thank you|ok(ay)?|yes|no|good (morning|night)|bye|"
    r"what( i|')s|who (is|wrote|was)|when (did|was)|where is|which (is|planet)|define|"
    r"how many|how do (i|you) (say|exit|check)|is (a|an|the|\d+|python)|quick)\b",
    re.IGNORECASE,
)

_TECH_TERMS = frozenset(
    (
        "algorithm",
        "api",
        "async",
        "await",
        "backend",
        "bandwidth",
        "batch",
        "bcrypt",
        "b-tree",
        "cache",
        "caching",
        "cdn",
        "ci",
        "cluster",
        "compiler",
        "concurrency",
        "consensus",
        "container",
        "cpu",
        "crdt",
        "cryptographic",
        "csrf",
        "cuda",
        "database",
        "deadlock",
        "distributed",
        "dns",
        "docker",
        "encryption",
        "endpoint",
        "gc",
        "gpu",
        "graphql",
        "grpc",
        "hash",
        "heap",
        "http",
        "https",
        "idempotent",
        "index",
        "indexing",
        "inference",
        "jvm",
        "jwt",
        "kafka",
        "kernel",
        "kubernetes",
        "kv",
        "latency",
        "ledger",
        "lock",
        "lock-free",
        "memory",
        "microservice",
        "microservices",
        "mutex",
        "mvcc",
        "nginx",
        "oauth",
        "orm",
        "p95",
        "p99",
        "parallelism",
        "partition",
        "partitions",
        "pipeline",
        "pod",
        "pods",
        "postgresql",
        "protocol",
        "queue",
        "raft",
        "redis",
        "regex",
        "replication",
        "rest",
        "runtime",
        "rust",
        "schema",
        "sharding",
        "snapshot",
        "sql",
        "ssl",
        "sync",
        "tcp",
        "thread",
        "threads",
        "throughput",
        "tls",
        "tokenizer",
        "transaction",
        "transformer",
        "udp",
        "vllm",
        "vpc",
        "wal",
        "websocket",
    )
)

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9+\-]*")
_CODE_FENCE = re.compile(r"```")
_CODE_LINE = re.compile(
    r"^\s*(def |class |fn |func |for .+:|if .+:|return\b|#include|import |SELECT |"
    r"[\w.\[\]]+\s*=\s*.+|.*[;{}]\s*$)",
    re.MULTILINE,
)
_TRACE = re.compile(
    r"(Traceback \(most recent call last\)|\b\w+(Error|Exception):|panic:|segmentation fault|"
    r"OOMKilled|stack trace)",
    re.IGNORECASE,
)
_NUMBERED = re.compile(r"^\s*(\d+[.)]|[-*•])\s+\S", re.MULTILINE)
_SEQUENCE = re.compile(r"\b(first|then|finally|after that|next,|for every|for each)\b", re.I)


@dataclass(frozen=True, slots=True)
class HeuristicEffortScorer:
    """`EffortScorer` for the keyword heuristic below (kept for comparison and as a fallback)."""

    def score(self, prompt: str, system: str | None = None) -> EffortScore:
        return score_effort_heuristic(prompt, system)


def _length_points(words: int) -> float:
    if words >= 400:
        return 3.0
    if words >= 150:
        return 2.0
    if words >= 70:
        return 1.5
    if words >= 30:
        return 1.0
    if words >= 12:
        return 0.5
    return 0.0


def score_effort_heuristic(prompt: str, system: str | None = None) -> EffortScore:
    """Score `prompt` (and the system prompt, which only adds length) from 1 to 10.

    Base 1, plus: length, a requested piece of work, graded reasoning markers, frontier markers,
    code and stack traces, multi-step structure, technical vocabulary; minus small talk.
    """
    text = prompt.strip()
    words = _WORD.findall(text)
    n_words = len(words) + (len(_WORD.findall(system)) // 4 if system else 0)
    reasons: list[str] = []
    points = 0.0

    def add(value: float, why: str) -> None:
        nonlocal points
        if value:
            points += value
            reasons.append(f"{value:+g} {why}")

    add(_length_points(n_words), f"length {n_words} words")

    task = bool(_TASK.search(text))
    if task:
        add(2.5, "asks for a piece of work")
    if _SMALL_OUTPUT.search(text) and n_words < 30:
        add(-1.5, "small output")

    groups = [(pts, label) for pts, pattern, label in _REASONING_GROUPS if pattern.search(text)]
    if groups:
        best = max(pts for pts, _ in groups)
        extra = 0.75 * (len(groups) - 1)
        labels = ", ".join(label for _, label in groups)
        add(best + extra, f"reasoning markers ({labels})")

    frontier_hits = {m.group(0).lower() for m in _FRONTIER.finditer(text)}
    if frontier_hits:
        hits = ", ".join(sorted(frontier_hits))
        add(min(3.0, 1.0 * len(frontier_hits)), f"breadth/stakes ({hits})")

    fences = len(_CODE_FENCE.findall(text)) // 2
    code_lines = len(_CODE_LINE.findall(text))
    if fences:
        add(1.5 if code_lines < 15 else 2.0, f"{fences} code block(s)")
    elif code_lines >= 3:
        add(1.0, f"{code_lines} code-like lines")
    if _TRACE.search(text):
        add(0.5, "error message or stack trace")

    steps = len(_NUMBERED.findall(text))
    questions = text.count("?")
    sequence = len(_SEQUENCE.findall(text))
    structure = 0.0
    if steps >= 5:
        structure += 1.5
    elif steps >= 2:
        structure += 0.75
    if questions >= 3:
        structure += 1.0
    elif questions == 2:
        structure += 0.5
    structure += min(1.0, 0.5 * sequence)
    add(min(structure, 2.5), f"multi-step ({steps} items, {questions} questions)")

    tech = {w.lower() for w in words} & _TECH_TERMS
    if tech:
        add(min(2.0, 0.5 * len(tech)), f"technical terms ({', '.join(sorted(tech)[:5])})")

    if _SIMPLE.match(text) and n_words < 25 and not groups and not task:
        add(-1.5, "short question or small talk")

    total = 1.0 + points
    score = max(MIN_EFFORT, min(MAX_EFFORT, math.floor(total + 0.5)))
    if score >= FRONTIER_FLOOR and not frontier_hits and total < FRONTIER_FLOOR + 3:
        # The frontier is for breadth, stakes or novelty, not only for many markers at once.
        score = FRONTIER_FLOOR - 1
        reasons.append(f"capped at {score}: no breadth/stakes marker")
    return EffortScore(score=score, points=total, reasons=tuple(reasons))
