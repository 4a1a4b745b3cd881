"""Answer extraction and normalization, following the conventions of MATH / AIME / GPQA runners.

Every suite's checker and the eval pipeline go through `is_correct`, so a change here
moves every accuracy figure the project reports.

The math rules follow Hendrycks MATH's `strip_string`, lm-eval-harness' minerva_math
normalizer and the PRM800K grader; the letter rules follow simple-evals' GPQA extraction.
"""

from __future__ import annotations

import re
from fractions import Fraction

# Commas only as digit grouping (1,000): "42, since ..." must read as 42, not "42,".
_NUMBER = r"-?\d+(?:,\d{3}(?!\d))*(?:\.\d+)?(?:/\d+)?"
# A number must end there ("12" of "$12\sqrt{2}$" is not the answer); else the whole math span is
# read, so "the answer is $\frac{1}{2}$" (the minerva format) is not its last digit.
_WHOLE_NUMBER = "(" + _NUMBER + r")(?![\w\\^{/])"
_ANSWER_IS = re.compile(r"answer is[:\s]*(?:\(?\$?" + _WHOLE_NUMBER + r"|\$([^$\n]+)\$)", re.IGNORECASE)
_ANSWER_COLON = re.compile(r"answer:\s*(?:\$?" + _WHOLE_NUMBER + r"|\$([^$\n]+)\$)", re.IGNORECASE)
_LAST_NUMBER = re.compile(_NUMBER)

# A capital letter counts after the phrase; a lower-case one only in "(b)" or at the end of its
# clause ("answer: b."), so "the answer is a fox" is not choice A.
_LETTER = r"\(?([A-D]\b|[a-d](?=\)|[ \t]*(?:[.\n]|$)))"
_CHOICE_PATTERNS = (
    re.compile(r"(?i:answer is)[:\s]*" + _LETTER),
    re.compile(r"(?i:answer):\s*" + _LETTER),
)
_LAST_CHOICE = re.compile(r"\(([A-D])\)")  # capitals only: "(a)" in prose is usually an enumeration
_BARE_CHOICE = re.compile(r"\s*\(?([A-Da-d])\)?\.?\s*")  # the whole response is one letter, e.g. " C"
# Markdown bold and TeX wrappers around a letter: "**Answer:** C", "Answer: $\text{C}$".
_CHOICE_MARKUP = re.compile(r"\*\*|\$|\\(?:text|textbf|mathrm|mathbf)\{|\}")

# The greedy prefix makes a line with two "Answer:"s give what follows the later one.
_TEXT_ANSWER = re.compile(r".*answer:\s*(.+)", re.IGNORECASE)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = re.compile(r"[^\w\s]")

# Notation that never changes a MATH answer's value, removed or rewritten in this order.
_REPLACEMENTS = (
    ("\\$", ""), ("$", ""),  # dollars and math mode
    ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"),
    ("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\:", ""), ("\\ ", ""), ("~", ""),
    ("^{\\circ}", ""), ("^\\circ", ""), ("\\degree", ""), ("°", ""),
    ("\\%", ""), ("%", ""),
    ("\u2212", "-"),  # Unicode minus sign
)
_LEFT_RIGHT = re.compile(r"\\(?:left|right)(?![A-Za-z])")  # not \leftarrow, \rightarrow
# A unit word closing the answer after a number: "5\text{ cm}", "3\mbox{ m}^2", "10 \text{ inches}."
_TRAILING_UNIT = re.compile(r"(?<=[\d}])\s*\\(?:text|mbox|mathrm)\{[^{}]*\}(?:\^\{?\d\}?)?[\s.]*$")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mbox|mathrm)\{([^{}]*)\}")
_SQRT_SHORT = re.compile(r"\\sqrt(\w)")  # \sqrt3 -> \sqrt{3}
_FRAC_ARG = r"(\{[^{}]*\}|[^{}\\])"  # a braced group or one character: \frac{1}{2}, \frac12, \frac1{72}
_FRAC = re.compile(r"\\frac" + _FRAC_ARG + _FRAC_ARG)
_SIMPLE_TERM = re.compile(r"-?[\w.]+")
_GROUPED_NUMBER = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
# "x = 7", "k=7", "\theta = 30": a name alone on the left of the only "=".
_VARIABLE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,2}|\\[A-Za-z]+")
_DECIMAL = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_RATIONAL = re.compile(rf"({_DECIMAL})(?:/({_DECIMAL}))?")
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
            number, math_span = matches[-1]
            return number or math_span
    numbers = _LAST_NUMBER.findall(text)
    return numbers[-1] if numbers else None


def _bare_letter(text: str) -> str | None:
    bare = _BARE_CHOICE.fullmatch(_CHOICE_MARKUP.sub("", text))
    return bare.group(1).upper() if bare else None


def extract_choice(text: str) -> str | None:
    """GPQA-style letter: 'answer is (X)', else 'Answer: X', else a boxed letter, else the last '(X)', else a bare 'X'."""
    plain = _CHOICE_MARKUP.sub("", text)
    for pattern in _CHOICE_PATTERNS:
        matches = pattern.findall(plain)
        if matches:
            return matches[-1].upper()
    boxed = extract_boxed(text)
    if boxed is not None and _bare_letter(boxed):
        return _bare_letter(boxed)
    matches = _LAST_CHOICE.findall(plain)
    if matches:
        return matches[-1]
    return _bare_letter(text)


def extract_text(text: str) -> str | None:
    """Short-answer text: after the last 'Answer:', else the first non-empty line."""
    matches = _TEXT_ANSWER.findall(text)
    if matches:
        return matches[-1].strip()
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return None


def _frac(match: re.Match[str]) -> str:
    """\\frac{a}{b} -> a/b; compound parts keep parentheses, so \\frac{x+1}{2} is not x+1/2."""
    parts = [arg[1:-1] if arg.startswith("{") else arg for arg in match.groups()]
    return "/".join(p if _SIMPLE_TERM.fullmatch(p) else f"({p})" for p in parts)


def _strip_notation(answer: str) -> str:
    """The answer without spacing, math mode, units, degrees and percent signs; fractions as a/b."""
    s = answer.strip()
    for old, new in _REPLACEMENTS:
        s = s.replace(old, new)
    s = _LEFT_RIGHT.sub("", s)
    s = _TRAILING_UNIT.sub("", s)
    s = _TEXT_WRAPPER.sub(r"\1", s)
    s = re.sub(r"\s+", "", s)  # \s also covers thin and no-break spaces
    s = _SQRT_SHORT.sub(r"\\sqrt{\1}", s)
    return _FRAC.sub(_frac, s)


def _tidy_number(s: str) -> str:
    """Drop a number's grouping commas, leading '+', trailing '.' and a zero fractional part."""
    if _GROUPED_NUMBER.fullmatch(s):  # only a whole number: "(1,234)" is an ordered pair
        s = s.replace(",", "")
    s = s.rstrip(".")
    if s.startswith("+"):
        s = s[1:]
    if re.fullmatch(r"-?\d+\.0+", s):
        s = s.split(".")[0]
    return s


def normalize_math(answer: str) -> str:
    """Strip the notation that does not change a MATH answer's value.

    A leading "x =" goes only when a number remains: "y = 2x + 1" is an equation, kept whole.
    """
    s = _strip_notation(answer)
    name, equals, value = s.partition("=")
    if equals and _VARIABLE.fullmatch(name):
        value = _tidy_number(value)
        if parse_number(value) is not None:
            return value
    return _tidy_number(s)


def normalize_text(answer: str) -> str:
    """Lower case, no punctuation, no articles, single spaces."""
    s = _PUNCTUATION.sub(" ", answer.lower())
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def parse_number(answer: str) -> Fraction | None:
    """Exact value of an integer, decimal or a/b (decimals allowed) written in normalized form."""
    match = _RATIONAL.fullmatch(answer)
    if match is None:
        return None
    numerator, denominator = match.groups()
    try:
        return Fraction(numerator) / Fraction(denominator or 1)
    except ZeroDivisionError:
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
