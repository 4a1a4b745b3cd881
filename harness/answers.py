"""Answer extraction and normalization, following the conventions of MATH / AIME / GPQA runners.

Every suite's checker and the eval pipeline go through `is_correct`, so a change here
moves every accuracy figure the project reports.
"""

from __future__ import annotations

import re
from fractions import Fraction

_CHOICE_LETTERS = "ABCD"
# Commas only as digit grouping (1,000): "42, since ..." must read as 42, not "42,".
_NUMBER = r"-?\d+(?:,\d{3}(?!\d))*(?:\.\d+)?(?:/\d+)?"
_ANSWER_IS = re.compile(r"answer is[:\s]*\(?\$?(" + _NUMBER + r")", re.IGNORECASE)
_ANSWER_COLON = re.compile(r"answer:\s*\$?(" + _NUMBER + r")", re.IGNORECASE)
_LAST_NUMBER = re.compile(_NUMBER)
_CHOICE_PATTERNS = (
    # The phrase ignores case; the letter must be a capital, so "a fox" is not choice A.
    re.compile(r"(?i:answer is)[:\s]*\(?([A-D])\b\)?"),
    re.compile(r"(?i:answer):\s*\(?([A-D])\b\)?"),
)
_LAST_CHOICE = re.compile(r"\(([A-D])\)")
_BARE_CHOICE = re.compile(r"\s*\(?([A-D])\)?\.?\s*")  # the whole response is one letter, e.g. " C"
# The greedy prefix makes a line with two "Answer:"s give what follows the later one.
_TEXT_ANSWER = re.compile(r".*answer:\s*(.+)", re.IGNORECASE)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = re.compile(r"[^\w\s]")
_FRAC = re.compile(r"\\frac\{([^{}]*)\}\{([^{}]*)\}")
_UNIT_WORDS = re.compile(r"\\(?:text|mbox|mathrm)\{[^{}]*\}")
_NUMERIC_TOLERANCE = 1e-4


def extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`), with nested braces matched."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None  # unclosed: the answer was cut off


def extract_math(text: str) -> str | None:
    """MATH-style: the last boxed answer, else 'the answer is X', else 'Answer: X', else the last number."""
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed
    for pattern in (_ANSWER_IS, _ANSWER_COLON):
        matches = pattern.findall(text)
        if matches:
            return matches[-1]
    numbers = _LAST_NUMBER.findall(text)
    return numbers[-1] if numbers else None


def extract_choice(text: str) -> str | None:
    """GPQA-style letter: 'answer is (X)', else 'Answer: X', else the last '(X)', else a bare 'X'."""
    for pattern in _CHOICE_PATTERNS:
        matches = pattern.findall(text)
        if matches:
            return matches[-1].upper()
    matches = _LAST_CHOICE.findall(text)
    if matches:
        return matches[-1]
    bare = _BARE_CHOICE.fullmatch(text)
    return bare.group(1) if bare else None


def extract_text(text: str) -> str | None:
    """Short-answer text: after the last 'Answer:', else the first non-empty line."""
    matches = _TEXT_ANSWER.findall(text)
    if matches:
        return matches[-1].strip()
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return None


def normalize_math(answer: str) -> str:
    """Strip the notation that does not change a MATH answer's value."""
    s = answer.strip().strip("$").strip()
    s = _UNIT_WORDS.sub("", s)
    s = s.replace("\\left", "").replace("\\right", "").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("\\!", "").replace("\\,", "").replace("^\\circ", "").replace("\\%", "").replace("%", "")
    s = re.sub(r"\s+", "", s)
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)  # digit-grouping commas
    s = _FRAC.sub(r"\1/\2", s)
    s = s.rstrip(".")
    if re.fullmatch(r"-?\d+\.0+", s):
        s = s.split(".")[0]
    return s


def normalize_text(answer: str) -> str:
    """Lower case, no punctuation, no articles, single spaces."""
    s = _PUNCTUATION.sub(" ", answer.lower())
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def parse_number(answer: str) -> Fraction | None:
    """Exact value of an integer, decimal or fraction written in normalized form."""
    try:
        return Fraction(answer)
    except (ValueError, ZeroDivisionError):
        return None


def _numbers_match(predicted: str, gold: str) -> bool:
    if predicted == gold:
        return True
    p, g = parse_number(predicted), parse_number(gold)
    if p is None or g is None:
        return False
    return abs(p - g) <= _NUMERIC_TOLERANCE * max(1, abs(g))


def _as_aime_integer(answer: str) -> int | None:
    value = parse_number(answer)
    if value is None or value.denominator != 1 or not 0 <= value <= 999:
        return None
    return int(value)


def extract_answer(response: str, answer_type: str) -> str | None:
    """The normalized answer a response gives, or None when it gives none."""
    if answer_type in ("number", "integer"):
        raw = extract_math(response)
        return None if raw is None else normalize_math(raw)
    if answer_type == "choice":
        return extract_choice(response)
    if answer_type == "text":
        raw = extract_text(response)
        return None if raw is None else normalize_text(raw)
    raise ValueError(f"unknown answer_type {answer_type!r}")


def is_correct(response: str, gold: str, answer_type: str) -> bool:
    """Whether a model's response carries the gold answer, under the suite's conventions."""
    predicted = extract_answer(response, answer_type)
    if predicted is None:
        return False
    if answer_type == "number":
        return _numbers_match(predicted, normalize_math(gold))
    if answer_type == "integer":
        value = _as_aime_integer(predicted)
        return value is not None and value == _as_aime_integer(normalize_math(gold))
    if answer_type == "choice":
        return predicted == gold.strip().strip("()").upper()
    return predicted == normalize_text(gold)
