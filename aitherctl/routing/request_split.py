"""A prompt read as two parts: the REQUEST (what the user asks) and the MATERIAL it is given.

"Based on the text above, what year did the war end?" after a 300-word article is a look-up; read
as one piece, the article's length and topic say "a long history essay". The eighth round of issue
21 scores the request's meaning and reads the material only as cues: how big it is and what kind
(code, a table, maths, prose). The same split runs at training (scripts/effort/train_embedding.py
--split) and at scoring time (routing/effort_model.py), so what the weights learned from is what
they see.

The split is general, not keyed to one dataset's template. The first of these that finds one:

1. Fenced blocks (```...```) are material; the text around them is the request.
2. Labelled lines: a line that opens with a material label ("Text:", "Passage:", "Context:",
   "Article:", "Document:", "Code:", "Table:"..., and 文章, 材料, 原文...) starts material, which
   runs until a request label ("Question:", "Q:", "Task:", "Instruction:", 问题...); the rest is
   the request.
3. A quoted passage of 200 characters or more is material ("... for the passage \"...\"").
4. Paragraphs, or the lines of a prompt without blank lines: a short opening that points at what
   follows ("the following", "below", or ending in a colon) and/or a short closing that asks
   something of what came before (a question, an instruction or question word, "above", "the
   passage") are the request, the rest the material. Within one block of sentences, only a
   closing question or an opening colon that points at the text.

A prompt is split only when the material is at least MIN_MATERIAL words and at least twice the
request, and the request at most MAX_REQUEST words; otherwise the whole prompt is the request. A
maths problem's set-up is never material (notation-heavy material: no split by layout), so it
stays one piece. String work and a few regular expressions, on at most READ_CHARS characters:
microseconds for most prompts, well under a millisecond for a long one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

MIN_MATERIAL = 40  # words the material needs for a split
MAX_REQUEST = 80  # words a request read apart from its material may have
READ_CHARS = 6000  # longer prompts: the split reads their head and tail only
_CHARS_PER_WORD = 15  # no request of N words is longer than this many characters per word
COUNT_CHARS = 2000  # the material's words are counted on this much, then extrapolated

_WORD = re.compile(r"[^\W\d_]+|\d+", re.UNICODE)
_CJK_LOWEST = "\u3040"
_FENCE = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_MATERIAL_LABELS = (
    "text",
    "passage",
    "context",
    "article",
    "document",
    "paragraph",
    "review",
    "story",
    "abstract",
    "excerpt",
    "input",
    "code",
    "table",
    "data",
    "email",
    "dialogue",
    "dialog",
    "conversation",
    "transcript",
    "premise",
    "background",
    "snippet",
    "content",
    "source",
    "reference",
    "essay",
    "report",
    "news",
    "post",
    "comment",
    "tweet",
    "summary",
    "poem",
    "lyrics",
    "script",
    "log",
    "output",
    "file",
    "plot",
    "description",
    "bio",
    "biography",
    "passages",
    "sentences",
    "sentence 1",
    "sentence 2",
    "文章",
    "文本",
    "段落",
    "材料",
    "原文",
    "上下文",
    "背景",
    "内容",
    "代码",
    "表格",
    "新闻",
)
_REQUEST_LABELS = (
    "question",
    "q",
    "query",
    "task",
    "instruction",
    "instructions",
    "request",
    "prompt",
    "hypothesis",
    "claim",
    "problem",
    "问题",
    "任务",
    "要求",
    "指令",
    "请",
)
_LABEL = re.compile(
    r"^\s*(?:#+\s*)?([^\W\d_][\w ]{0,24}?|[\u4e00-\u9fff]{1,4})\s*[:：]\s*(.*)$", re.UNICODE
)
_SENTENCE_END = re.compile(r"(?<=[.!?。？！])\s+|(?<=[。？！])")
_BACK_REFERENCE = re.compile(
    r"\b(above|below|preceding|previous|following|this (text|passage|article|paragraph|story|"
    r"review|document|excerpt|code|table|email|poem)|the (text|passage|article|paragraph|story|"
    r"review|document|excerpt|context|given)|based on|according to|from the)\b"
    r"|上文|上述|以上|这段|这篇|根据|文中",
)
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$|^[^\n]*\t[^\n]*\t", re.MULTILINE)
_CODE_LINE = re.compile(
    r"^\s*(def |class |fn |func |for .+:|if .+:|return\b|#include|import |SELECT |public |"
    r"private |const |let |var |.*[;{}]\s*$)",
    re.MULTILINE,
)
_QUOTE = re.compile(r'"([^"\n]{200,})"|“([^”]{200,})”')
_CODE_HEAD = re.compile(r"^\s*(def |class |#include|function |public class |fn )", re.MULTILINE)
_MATHS = re.compile(r"\\[a-zA-Z]+|\$[^$\n]{1,200}\$|[∫∑∏√∞≤≥≠≡∈⊂∪∩∀∃∂∇±×÷²³]|\w\^\d")
KINDS = ("prose", "code", "table", "maths")


@dataclass(frozen=True, slots=True)
class Split:
    """The request, the material (empty when the prompt was not split), how it was found, and the
    material's size in words and kind (one of KINDS, "" without material)."""

    request: str
    material: str
    how: str  # "fence", "label", "paragraph", "sentence" or "" (not split)
    material_words: int
    kind: str

    def cues(self) -> dict[str, float]:
        """The material as cues for the trees: its size (log of its words), its kind, and how
        much of the prompt the request is."""
        if not self.material:
            return {}
        return {"material_words": math.log1p(self.material_words), f"material_{self.kind}": 1.0}


def count_words(text: str) -> int:
    """Words, and CJK characters 0.6 each (about as routing/effort_features.py counts)."""
    if text and max(text) >= _CJK_LOWEST:
        cjk = sum(1 for c in text if "\u3040" <= c <= "\u9fff" or "\uac00" <= c <= "\ud7af")
        return round(len(_WORD.findall(text)) + 0.6 * cjk)
    return len(_WORD.findall(text))


def material_kind(material: str) -> str:
    """What the material is: code, a table, maths (notation-heavy) or prose."""
    lines = max(1, material.count("\n") + 1)
    code = len(_CODE_LINE.findall(material))
    if code >= max(2, lines // 4) or (code >= 2 and _CODE_HEAD.search(material)):
        return "code"
    if len(_TABLE_ROW.findall(material)) >= max(2, lines // 3):
        return "table"
    if len(_MATHS.findall(material)) >= 3:
        return "maths"
    return "prose"


def _short(unit: str, words: int) -> bool:
    """At most `words` words (a longer text is ruled out by its characters first, cheaply)."""
    return len(unit) <= words * _CHARS_PER_WORD and count_words(unit) <= words


def _made(request: str, material: str, how: str) -> Split | None:
    request, material = request.strip(), material.strip()
    if not request or not material or len(request) > MAX_REQUEST * _CHARS_PER_WORD:
        return None
    r_words = count_words(request)
    if r_words < 2 or r_words > MAX_REQUEST:
        return None
    m_words = count_words(material[:COUNT_CHARS])
    if len(material) > COUNT_CHARS:
        m_words = round(m_words * len(material) / COUNT_CHARS)
    if m_words < MIN_MATERIAL or m_words < 2 * r_words:
        return None
    return Split(request, material, how, m_words, material_kind(material[:COUNT_CHARS]))


def _by_fence(text: str) -> Split | None:
    if "```" not in text:
        return None
    blocks = [m.group(1) for m in _FENCE.finditer(text)]
    request = _FENCE.sub("\n", text)
    return _made(request, "\n".join(blocks), "fence")


def _label(line: str) -> str:
    match = _LABEL.match(line)
    if match is None:
        return ""
    name = match.group(1).strip().lower()
    if name in _MATERIAL_LABELS or name.split()[-1] in _MATERIAL_LABELS:
        return "material"
    if name in _REQUEST_LABELS or name.split()[0] in _REQUEST_LABELS:
        return "request"
    return ""


def _by_label(text: str) -> Split | None:
    lines = text.split("\n")
    labels = [_label(line) for line in lines]
    if "material" not in labels:
        return None
    request: list[str] = []
    material: list[str] = []
    inside = False
    for line, label in zip(lines, labels, strict=True):
        if label:
            inside = label == "material"
        (material if inside else request).append(line)
    return _made("\n".join(request), "\n".join(material), "label")


_REQUEST_WORDS = frozenset(
    (
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "is",
        "are",
        "was",
        "were",
        "does",
        "do",
        "did",
        "can",
        "could",
        "would",
        "should",
        "will",
        "summarize",
        "summarise",
        "classify",
        "extract",
        "translate",
        "rewrite",
        "paraphrase",
        "list",
        "give",
        "write",
        "explain",
        "identify",
        "answer",
        "choose",
        "select",
        "describe",
        "tell",
        "based",
        "according",
        "using",
        "given",
        "please",
        "generate",
        "create",
        "name",
        "provide",
        "correct",
        "rate",
        "label",
        "categorize",
        "categorise",
        "decide",
        "find",
        "determine",
        "question",
        "q",
        "read",
        "compose",
        "make",
        "suggest",
        "edit",
        "请",
        "根据",
        "总结",
        "概括",
        "判断",
        "回答",
    )
)
_FORWARD_REFERENCE = re.compile(
    r"\b(following|below|these|this (text|passage|article|paragraph|story|review|document|"
    r"excerpt|code|table|email|poem))\b|以下|下面|下列|如下",
)
_FIRST_WORD = re.compile(r"[^\W\d_]+|[\u4e00-\u9fff]", re.UNICODE)


def _opens(unit: str) -> bool:
    """A short opening that introduces what follows ("Summarise the following article:")."""
    if not _short(unit, MAX_REQUEST):
        return False
    return unit.endswith((":", "：")) or _FORWARD_REFERENCE.search(unit.lower()) is not None


def _closes(unit: str) -> bool:
    """A short closing that asks something of what came before."""
    if not _short(unit, MAX_REQUEST // 2) or _CODE_LINE.search(unit):
        return False
    if unit.endswith(("?", "？")):
        return True
    first = _FIRST_WORD.search(unit)
    return (first is not None and first.group(0).lower() in _REQUEST_WORDS) or (
        _BACK_REFERENCE.search(unit.lower()) is not None
    )


def _by_units(units: list[str], how: str, joint: str) -> Split | None:
    units = [u.strip() for u in units if u.strip()]
    if len(units) < 2:
        return None
    first, last = units[0], units[-1]
    opens, closes = _opens(first), _closes(last)
    found = None
    if opens and closes and len(units) > 2:
        found = _made(first + "\n" + last, joint.join(units[1:-1]), how)
    if found is None and opens:
        found = _made(first, joint.join(units[1:]), how)
    if found is None and closes:
        found = _made(last, joint.join(units[:-1]), how)
    if found is not None and found.kind == "maths":
        return None  # a maths problem is one piece: its set-up is no passage to look up
    return found


def _by_quote(text: str) -> Split | None:
    """A long quoted passage ("... the passage \"...\" ...") is material."""
    quotes = [
        m
        for m in _QUOTE.finditer(text)
        if count_words((m.group(1) or m.group(2))[:COUNT_CHARS]) >= MIN_MATERIAL
    ]
    if not quotes:
        return None
    request = text
    for m in reversed(quotes):
        request = request[: m.start()] + '"…"' + request[m.end() :]
    return _made(request, "\n".join(m.group(1) or m.group(2) for m in quotes), "quote")


def _by_layout(text: str) -> Split | None:
    paragraphs = re.split(r"\n\s*\n", text.strip())
    if len(paragraphs) >= 2:
        return _by_units(paragraphs, "paragraph", "\n\n")
    lines = text.strip().split("\n")
    if len(lines) >= 2:
        return _by_units(lines, "line", "\n")
    sentences = _SENTENCE_END.split(text)
    found = _by_units(sentences, "sentence", " ")
    if found is not None and not (
        found.request.endswith(("?", "？", ":", "："))
        and (
            _BACK_REFERENCE.search(found.request.lower())
            or _FORWARD_REFERENCE.search(found.request.lower())
        )
    ):
        return None  # within one block, only a question or an opening that points at the text
    return found


def split_request(prompt: str) -> Split:
    """The prompt's request and material (see the module's docstring)."""
    text = prompt.strip()
    if len(text) > READ_CHARS:
        text = text[: READ_CHARS - 2000] + "\n\n" + text[-2000:]
    if len(text) >= 200:
        for way in (_by_fence, _by_label, _by_quote, _by_layout):
            found = way(text)
            if found is not None:
                return found
    return Split(text, "", "", 0, "")
