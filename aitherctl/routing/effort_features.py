"""What the learned effort scorer reads from a prompt: named cues and lexical terms.

Two kinds of feature, both cheap enough for every request (pure Python, no tokenizer, no model):

- **Cues**: a few dozen named, mostly language-independent signals, each with words a user can
  check in `--explain`: maths notation (LaTeX, Unicode operators), equations, code, contest-style
  constraints, multiple-choice options, numbered parts, the prompt's length, a long pasted passage
  followed by a short question, the share of long (specialised) words, the number of clauses, and
  small multilingual lexicons (asks for a proof, asks for a piece of work, a look-up question, a
  hypothetical scenario, stated requirements, small talk) in English, German, French, Spanish,
  Italian, Portuguese, Russian, Chinese, Japanese and Korean. The lexicons let what the model
  learned from English data carry over: the weight is learned for "asks for a proof", not for the
  word "prove". Language itself is not a cue (a Chinese request is not easier for being Chinese).
- **Terms**: lower-cased words, a five-letter prefix of longer words (a poor man's stem, so
  "proving" meets "prove"), and for Chinese, Japanese and Korean, single characters and character
  bigrams (those scripts have no spaces). Their weights are learned; each term counts once, and the
  whole group is scaled by 1/sqrt(number of terms) so a long prompt does not win by word count.

Only the head and tail of a very long prompt are read for terms (HEAD_CHARS + TAIL_CHARS): a pasted
document says little about the effort its question needs, and it keeps scoring under a millisecond.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache
from itertools import pairwise

HEAD_CHARS = 2000
TAIL_CHARS = 600
PREFIX_LEN = 5
REQUEST_CHARS = 400
SHORT_PROOF_WORDS = 20
COUNT_CHARS = 8000

_TOKEN = re.compile(r"[^\W\d_]+", re.UNICODE)
# CJK ideographs, kana and hangul: scripts written without spaces between words. Compiling this
# class builds a 64K-entry bitmap (6 ms, a third of this module's start-up), so it is compiled the
# first time a text has a character at or above its lowest one (never for most prompts).
_CJK_PATTERN = r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]"
_CJK_LOWEST = "\u3040"


@cache
def _cjk() -> re.Pattern[str]:
    return re.compile(_CJK_PATTERN)


def _may_be_cjk(text: str) -> bool:
    """False when no character of `text` can be CJK (a C-speed scan, no regex)."""
    return bool(text) and max(text) >= _CJK_LOWEST


_LATEX = re.compile(
    r"\\(frac|dfrac|int|iint|sum|prod|sqrt|lim|infty|binom|cdot|times|le|leq|ge|geq|neq|equiv|pmod|"
    r"mod|angle|triangle|pi|alpha|beta|gamma|delta|theta|lambda|sigma|omega|mathbb|mathrm|mathcal|"
    r"left|right|overline|vec|log|ln|sin|cos|tan|cdots|ldots|in|subset|cup|cap|forall|exists|"
    r"partial|nabla|begin|end|dots|qquad|quad|mathbf|operatorname)\b|\$[^$\n]{1,200}\$|"
    r"\\\[|\\\(|\^\{|_\{|\w\^\d"
)
# A formula's extent: $...$, $$...$$, \\[...\\], \\(...\\).
_LATEX_SPAN = re.compile(r"\$\$.*?\$\$|\$[^$]*\$|\\\[.*?\\\]|\\\(.*?\\\)", re.DOTALL)
_MATH_SYMBOLS = re.compile(r"[∫∑∏√∞≤≥≠≡∈∉⊂⊆∪∩∀∃∂∇±×÷→⇒⇔⌊⌋⌈⌉πθαβγλσΩω²³]")
_EQUATION = re.compile(r"[\w)\]}]\s*(=|<|>|≤|≥)\s*[-\w(\\√]")
_CONSTRAINT = re.compile(
    r"(\d\s*(≤|<=|\\le|\\leq)\s*[a-zA-Z_]\w*\s*(≤|<=|\\le|\\leq))|10\^\{?\d|\b1e\d\b|"
    r"\b(time limit|memory limit|input format|output format|test cases?|standard input|"
    r"stdin|stdout)\b",
    re.IGNORECASE,
)
_CODE_FENCE = re.compile(r"```")
_CODE_LINE = re.compile(
    r"^\s*(def |class |fn |func |for .+:|if .+:|return\b|#include|import |SELECT |public |"
    r"private |const |let |var |.*[;{}]\s*$)",
    re.MULTILINE,
)
_CHOICES = re.compile(r"(^|\s|\()[A-E]\s*[).:：]\s*\S", re.MULTILINE)
_NUMBERED = re.compile(r"^\s*(\d+[.)、]|[-*•]|\([a-z0-9]\))\s+\S", re.MULTILINE)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_QUESTION = re.compile(r"[?？]")

# Multilingual lexicons. Stems, matched anywhere in the lower-cased text (lower-casing once and
# matching case-sensitively is several times faster than re.IGNORECASE on these alternations).
_PROOF = re.compile(
    r"\b(prove|proof|proving|show that|derive|derivation|demonstrate that|lemma|theorem|"
    r"beweis|beweisen|zeigen sie|zeige, dass|herleit|démontr|montrer que|preuve|demostr|"
    r"prueb[ae] que|dimostra|provar que|prove que|докаж|доказ|теорем)"
    r"|证明|證明|証明|求证|증명",
)
_WORK = re.compile(
    r"\b(write|implement|create|build|develop|design|prepare|draft|generate|compose|refactor|"
    r"schreib|erstell|entwick|implementier|entwirf|écri|rédig|crée|créer|développ|escrib|"
    r"crea|desarroll|implementa|scriv|svilupp|напиши|напис|создай|разработ|реализ)"
    r"|写一|编写|实现|设计|开发|撰写|作成|書いて|実装|작성|구현",
)
_ANALYSIS = re.compile(
    r"\b(analy[sz]|compare|comparison|evaluate|critique|trade-?offs?|pros and cons|explain why|"
    r"justify|assess|analysier|vergleich|bewert|analys|compar|évalu|analiz|valuta|анализ|сравн)"
    r"|分析|比较|比較|评价|評価|분석|비교",
)
# Borrowed from the keyword heuristic (routing/effort_heuristic.py), whose English signals held
# up on general requests: design and diagnosis, breadth or stakes, a small output.
_DESIGN = re.compile(
    r"\b(design|architect\w*|trade-?offs?|scal(e|able|ability)|root cause|diagnos\w+|deadlocks?|"
    r"race condition|threat model|consisten(cy|t)|fault[- ]toleran\w+|bottleneck|migrat\w+|"
    r"optimi[sz]\w+|debug\w*|strateg\w+|framework)\b",
)
_BREADTH = re.compile(
    r"\b(production[- ]ready|research|novel|state[- ]of[- ]the[- ]art|comprehensive|complete|"
    r"full|end[- ]to[- ]end|security audit|exhaustive|survey|roadmap|in[- ]depth|detailed|"
    r"proposal|essay|thesis|business plan|migration plan)\b",
)
_SMALL_OUTPUT = re.compile(
    r"\b(haiku|joke|limerick|synonym|antonym|one (sentence|line|word)|just the word|politely|"
    r"translate|spell|define|abbreviation|stand for)\b",
)
_SMALL_TALK = re.compile(
    r"^\s*(hi|hello|hey|hiya|yo|thanks|thank you|thx|bye|goodbye|good (morning|night|evening)|"
    r"how are you|what's up|hallo|danke|tschüss|guten (morgen|tag|abend)|wie geht|bonjour|salut|"
    r"merci|ça va|hola|gracias|buenos días|qué tal|ciao|grazie|buongiorno|olá|obrigad|привет|"
    r"спасибо|здравствуй|как дела)\b"
    r"|^\s*(你好|您好|谢谢|再见|早上好|こんにちは|ありがとう|おはよう|안녕|감사)",
)
_EXTRACT = re.compile(
    r"\b(according to|based on the (text|passage|article|paragraph|context)|in the (text|passage|"
    r"article|paragraph) above|from the (text|passage|article)|laut dem text|selon le texte|"
    r"según el texto)\b|根据(上文|文章|材料)",
)

# A short look-up question: who / when / where / which / how many ..., in the languages above.
# Search queries often carry no question mark ("when was the last time anyone was on the moon").
_LOOKUP = re.compile(
    r"^\s*(who|whom|when|where|which|what (is|was|are|were|does|did|year|day|time)|how (many|much|"
    r"old|long|far|tall)|wer|wann|wo|welche[rsmn]?|wie (viele|viel|alt|lange|weit)|qui|quand|où|"
    r"quel(le)?s?|combien|quién|cuándo|dónde|cuál|cuánto|chi|quando|dove|quale|quanti|quem|onde|"
    r"qual|quantos|кто|когда|где|какой|сколько)\b"
    r"|^\s*(谁|什么时候|哪|多少|几)",
)
# A hypothetical or counterfactual scenario to reason through.
_HYPOTHETICAL = re.compile(
    r"\b(what would happen|what if|suppose|supposing|imagine|hypothetical(ly)?|would have|were to|"
    r"if you were|if (i|we|they|he|she|someone) (had|were|wanted)|"
    r"in a world where|angenommen|stell dir vor|was wäre|supposons|imagin|si hubiera|"
    r"supponiamo|immagina|suponha|предполож|представь)"
    r"|假设|如果.{0,20}会|假如|もし|만약",
)
# Requirements stated in the request (a length, a format, things it must include).
_REQUIREMENTS = re.compile(
    r"\b(at least|no more than|must|should (include|cover|be)|make sure|ensure|include|including|"
    r"in \d+ words|\d+[- ]words?|format|table|bullet|step[- ]by[- ]step|each|every|both|"
    r"mindestens|muss|müssen|enthalten|au moins|doit|inclure|al menos|debe|incluir|almeno|deve|"
    r"не менее|должен|включ)"
    r"|至少|必须|包括|包含|要求|每个|表格",
)
# A specialised field of knowledge (law, medicine, the sciences, economics, philosophy, history,
# politics, computing theory): what FLASK annotates as "major" or "expert level knowledge".
_FIELD = re.compile(
    r"\b(legal|law(s|yer)?|court|statut|jurisd|liabil|constitution|regulat|medic|clinic|patient|"
    r"diagnos|disease|symptom|therap|pharma|surg|genet|molecul|protein|neuro|quantum|physic|chemi|"
    r"biolog|ecolog|evolution|thermodyn|econom|financ|invest|monetar|fiscal|inflation|accounting|"
    r"philosoph|ethic|moral|epistem|metaphys|psycholog|cognit|sociolog|anthropolog|politic|"
    r"geopolit|democra|histor|empire|colonial|algorithm|cryptograph|statistic|probabilit|"
    r"hypothes|empiric|gesetz|jurist|medizin|wirtschaft|physik|chemie|psycholog|geschicht|"
    r"juridi|médic|économ|physique|chimi|jurídic|económ|filosof|físic|químic|закон|юрид|медиц|"
    r"эконом|философ|физи|хими|биолог|истори|полит|психолог)"
    r"|法律|医学|醫學|经济|經濟|経済|哲学|哲學|物理|化学|化學|生物|历史|歷史|歴史|政治|心理|算法|伦理|"
    r"量子|基因|법률|의학|경제|철학|물리|화학|생물|역사|정치|심리",
)
# Clause breaks: punctuation and joining words ("..., and also ...").
_CLAUSE = re.compile(r"[,;:，；：]|\b(?:and|also|then|und|et|y|e|и)\b|并且|然后|以及")
_LONG_WORD = re.compile(r"[^\W\d_]{10,}")

# The words `--explain` uses for each cue: (name, phrase).
CUE_PHRASES: dict[str, str] = {
    "maths_notation": "maths notation",
    "equations": "equations or inequalities",
    "constraints": "contest-style constraints",
    "code": "code",
    "choices": "multiple-choice options",
    "numbered": "numbered parts or steps",
    "numbers": "numbers to work with",
    "questions": "several questions",
    "proof": "asks for a proof",
    "work": "asks for a piece of work",
    "analysis": "asks for analysis or comparison",
    "design": "design, diagnosis or optimisation",
    "breadth": "breadth or stakes (complete, detailed, proposal...)",
    "small_output": "a small output (a word, a line, a translation)",
    "small_talk": "small talk",
    "short_question": "short question",
    "passage_question": "long pasted passage with a short question",
    "extract": "asks to look something up in the given text",
    "lookup": "a look-up question (who, when, where, how many...)",
    "hypothetical": "a hypothetical scenario to reason through",
    "requirements": "requirements stated in the request",
    "long_words": "long, specialised words",
    "word_length": "long words on average",
    "field": "a specialised field (law, medicine, science, economics...)",
    "clauses": "several clauses in the request",
}


@dataclass(frozen=True, slots=True)
class PromptFeatures:
    """One prompt as the learned scorer sees it."""

    cues: tuple[tuple[str, float], ...]  # (cue name, value) of the cues that fired
    terms: tuple[str, ...]  # unique lexical terms, "w:word", "p:prefi", "c:字", "c:汉字"
    term_scale: float  # 1/sqrt(len(terms)), the weight of each term
    words: int  # the prompt's length in words (CJK characters x 0.6)
    examples: tuple[tuple[str, str], ...]  # (cue name, a snippet that fired it) for --explain


def _terms(text: str) -> list[str]:
    terms: set[str] = set()
    cjk = _cjk() if _may_be_cjk(text) else None
    for token in _TOKEN.findall(text):
        if cjk is not None and cjk.search(token):
            chars = [c for c in token if cjk.match(c)]
            terms.update("c:" + c for c in chars)
            terms.update("c:" + a + b for a, b in pairwise(chars))
            continue
        word = token.lower()
        if len(word) > 25:
            continue
        terms.add("w:" + word)
        if len(word) > PREFIX_LEN + 1:
            terms.add("p:" + word[:PREFIX_LEN])
    return sorted(terms)


def _count_words(text: str) -> int:
    """Words, CJK characters counting 0.6 each; past COUNT_CHARS, extrapolated from the first
    COUNT_CHARS (a 40,000-character paste is "more than 800 words" either way, and counting all of
    it would take most of the time budget)."""
    head = text[:COUNT_CHARS]
    if _may_be_cjk(head):
        cjk = len(_cjk().findall(head))
        count = len(_TOKEN.findall(_cjk().sub(" ", head))) + 0.6 * cjk
    else:
        count = len(_TOKEN.findall(head))
    if len(text) > COUNT_CHARS:
        count *= len(text) / COUNT_CHARS
    return round(count)


def _last_paragraph(text: str) -> str:
    parts = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    return parts[-1] if parts else text


def extract_features(prompt: str, system: str | None = None) -> PromptFeatures:
    """Read the cues and terms of `prompt`; the system prompt only adds to the length."""
    text = prompt.strip()
    if len(text) > HEAD_CHARS + TAIL_CHARS:
        sample = text[:HEAD_CHARS] + "\n\n" + text[-TAIL_CHARS:]
    else:
        sample = text
    words = _count_words(text)
    cjk_text = _may_be_cjk(sample) and _cjk().search(sample) is not None
    if system:
        words += len(system.split()) // 4

    cues: list[tuple[str, float]] = []
    examples: list[tuple[str, str]] = []

    def cue(name: str, value: float, example: str = "") -> None:
        if value:
            cues.append((name, value))
            if example:
                examples.append((name, example.strip()[:24]))

    latex = list(_LATEX.finditer(sample))
    symbols = _MATH_SYMBOLS.findall(sample)
    notation = len(latex) + len(symbols)
    if notation:
        shown = [m.group(0) for m in latex[:2]] + symbols[:1]
        cue("maths_notation", math.log1p(notation), ", ".join(shown))
    cue("equations", math.log1p(len(_EQUATION.findall(sample))))
    constraints = _CONSTRAINT.findall(sample)
    cue("constraints", math.log1p(len(constraints)))
    fences = len(_CODE_FENCE.findall(sample)) // 2
    code_lines = len(_CODE_LINE.findall(sample))
    cue("code", math.log1p(fences * 3 + code_lines) if fences or code_lines >= 2 else 0.0)
    choices = len(_CHOICES.findall(sample))
    cue("choices", 1.0 if choices >= 3 else 0.0)
    cue("numbered", math.log1p(len(_NUMBERED.findall(sample))))
    # Quantities in the prose (a word problem's data), not the digits inside a formula.
    prose = _LATEX_SPAN.sub(" ", sample) if notation else sample
    cue("numbers", math.log1p(len(_NUMBER.findall(prose))))
    questions = len(_QUESTION.findall(sample))
    cue("questions", math.log1p(questions - 1) if questions > 1 else 0.0)

    # What is asked is read from the request, not from a pasted document ("... the quarterly
    # report ..." is not a request for one): a long prompt that ends in a short question is a
    # passage and that question; another long prompt is read at its opening and its end.
    request = sample
    if words > 120:
        tail = _last_paragraph(text[-COUNT_CHARS:])
        tail_words = _count_words(tail)
        if tail_words <= 30 and tail_words * 4 < words:
            cue("passage_question", 1.0)
            request = tail
        else:
            request = sample[:REQUEST_CHARS] + "\n" + tail[-REQUEST_CHARS:]
    low = request.lower()

    def seen(match: re.Match[str], original: str, lowered: str) -> str:
        """The matched words as the user wrote them (lower-casing rarely changes the length)."""
        return original[match.start() : match.end()] if len(original) == len(lowered) else match[0]

    for name, pattern in (
        ("proof", _PROOF),
        ("work", _WORK),
        ("analysis", _ANALYSIS),
        ("design", _DESIGN),
        ("breadth", _BREADTH),
        ("small_output", _SMALL_OUTPUT),
    ):
        match = pattern.search(low)
        if match:
            # A short request for a proof is all demand ("Beweisen Sie, dass ..."): its shortness
            # is not the shortness of a quick question, so the cue counts double there.
            value = 2.0 if name == "proof" and words <= SHORT_PROOF_WORDS else 1.0
            cue(name, value, seen(match, request, low))
    if words <= 12:
        text_low = text.lower()
        match = _SMALL_TALK.search(text_low)
        if match:
            cue("small_talk", 1.0, seen(match, text, text_low))
        if questions and not notation:  # a short formula to work out is not a quick question
            cue("short_question", 1.0)
    if words <= 25 and not notation:  # "how many ordered pairs ... (a formula)" is not a look-up
        match = _LOOKUP.search(low)
        if match:
            cue("lookup", 1.0, seen(match, request, low))
    match = _HYPOTHETICAL.search(low)
    if match:
        cue("hypothetical", 1.0, seen(match, request, low))
    needs = _REQUIREMENTS.findall(low)
    if needs:
        cue("requirements", math.log1p(len(needs)))
    # Word lengths in the scripts that separate words (a run of Chinese characters is not a word).
    spaced = _cjk().sub(" ", request) if cjk_text else request
    request_words = _TOKEN.findall(spaced)
    if len(request_words) >= 5:
        long_share = len(_LONG_WORD.findall(spaced)) / len(request_words)
        cue("long_words", min(1.0, 4.0 * long_share))
        mean_length = sum(map(len, request_words)) / len(request_words)
        cue("word_length", max(-1.0, min(1.0, (mean_length - 4.5) / 2.0)))
    fields = _FIELD.findall(low)
    if fields:
        match = _FIELD.search(low)
        cue("field", math.log1p(len(fields)), seen(match, request, low) if match else "")
    cue("clauses", math.log1p(len(_CLAUSE.findall(low))))
    sample_low = sample.lower()
    match = _EXTRACT.search(sample_low)
    if match:
        cue("extract", 1.0, seen(match, sample, sample_low))

    terms = tuple(_terms(sample))
    return PromptFeatures(
        cues=tuple(cues),
        terms=terms,
        term_scale=1.0 / math.sqrt(len(terms)) if terms else 0.0,
        words=words,
        examples=tuple(examples),
    )
