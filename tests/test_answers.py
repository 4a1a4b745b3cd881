"""Answer extraction and normalization: the conventions every accuracy figure depends on."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.tasks.answers import (
    extract_answer,
    extract_boxed,
    extract_choice,
    extract_math,
    extract_text,
    is_correct,
    normalize_math,
    normalize_text,
    parse_number,
)

# --- \boxed{} -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{42}", "42"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\sqrt{\frac{a}{b}}} done", r"\sqrt{\frac{a}{b}}"),
        (r"first \boxed{1}, then \boxed{7}", "7"),
        (r"\boxed{3} and finally \fbox{9}", "9"),
        (r"\fbox{5} then \boxed{6}", "6"),
        (r"\boxed{}", ""),
    ],
)
def test_extract_boxed_takes_last_with_nested_braces(text: str, expected: str) -> None:
    assert extract_boxed(text) == expected


@pytest.mark.parametrize("text", [r"\boxed{12", r"\boxed{\frac{1}{2}", r"\boxed{4} then \boxed{5", "no box here 7"])
def test_extract_boxed_unclosed_or_absent_is_none(text: str) -> None:
    assert extract_boxed(text) is None


def test_unclosed_last_box_is_not_answered_by_the_fallback() -> None:
    # A cut-off \boxed{ means "no boxed answer"; the fallback then reads the text instead.
    assert extract_math(r"so \boxed{12") == "12"
    assert extract_math(r"\boxed{") is None


# --- fallback order ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"The answer is 3. Answer: 4. \boxed{5} and then 6", "5"),
        ("Answer: 4. Later the answer is 3. Finally 6", "3"),
        ("The answer is 3. The answer is 8. Then 9", "8"),
        ("Answer: 4 and then 6", "4"),
        ("Answer: 4. Answer: 11. then 6", "11"),
        ("we add 2 and 3 to get 5", "5"),
        ("the answer is: (17)", "17"),
        ("The answer is $-3$", "-3"),
        ("nothing numeric", None),
        ("", None),
        (r"The answer is $\frac{1}{2}$.", r"\frac{1}{2}"),  # the whole math span, not its last digit
        (r"Answer: $12\sqrt{2}$", r"12\sqrt{2}"),
        ("The answer is $5 and the cost is $10 in total", "5"),  # dollars in prose are no math span
    ],
)
def test_extract_math_fallback_order(text: str, expected: str | None) -> None:
    assert extract_math(text) == expected


@pytest.mark.parametrize(
    "text",
    ["The answer is 42, since 40+2=42", "Answer: 42, as shown", "We end with 42, which"],
)
def test_trailing_comma_is_not_part_of_the_number(text: str) -> None:
    assert extract_answer(text, "number") == "42"
    assert is_correct(text, "42", "number")


def test_grouped_number_is_read_whole() -> None:
    assert extract_answer("The answer is 1,000,000.", "number") == "1000000"
    assert extract_answer("total 12,345.5 units", "number") == "12345.5"


# --- normalization -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (r"\left(1,2\right)", "(1,2)"),
        (r"\dfrac{3}{4}", "3/4"),
        (r"\tfrac{3}{4}", "3/4"),
        (r"\frac{3}{4}", "3/4"),
        (r"-\frac{1}{2}", "-1/2"),
        ("5.0", "5"),
        ("-7.000", "-7"),
        ("5.5", "5.5"),
        ("1,000", "1000"),
        ("1,234,567", "1234567"),
        ("$12$", "12"),
        (" $ 12 $ ", "12"),
        (r"5\text{ cm}", "5"),
        (r"5 \text{cm}", "5"),
        (r"5\mbox{m}", "5"),
        (r"30^\circ", "30"),
        (r"50\%", "50"),
        ("50%", "50"),
        ("12.", "12"),
        (r"1\,000", "1000"),
        ("x + 1", "x+1"),
    ],
)
def test_normalize_math(raw: str, expected: str) -> None:
    assert normalize_math(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("The Cat!", "cat"),
        ("  a   BLUE  whale. ", "blue whale"),
        ("an owl", "owl"),
        ("Oslo.", "oslo"),
        ("then", "then"),  # "the" only as a whole word
        ("Anne", "anne"),
    ],
)
def test_normalize_text(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


def test_parse_number() -> None:
    assert parse_number("1/2") == Fraction(1, 2)
    assert parse_number("0.5") == Fraction(1, 2)
    assert parse_number("-3") == -3
    assert parse_number("1/0") is None
    assert parse_number("x") is None
    assert parse_number("(1,2)") is None


# --- is_correct: number --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "gold"),
    [
        ("0.5", r"\frac{1}{2}"),
        (r"\boxed{\dfrac{1}{2}}", "0.5"),
        (r"\boxed{1,000}", "1000"),
        (r"\boxed{1000.0}", "1,000"),
        (r"\boxed{12\text{ cm}}", "12"),
        (r"\boxed{$7$}", "7"),
        ("The answer is 0.33333", r"\frac{1}{3}"),
        (r"\boxed{100000.5}", "100000"),  # within relative tolerance 1e-4 of the gold
    ],
)
def test_number_equal(response: str, gold: str) -> None:
    assert is_correct(response, gold, "number")


@pytest.mark.parametrize(
    ("response", "gold"),
    [
        ("0.51", r"\frac{1}{2}"),
        ("The answer is 0.333", r"\frac{1}{3}"),
        (r"\boxed{100011}", "100000"),  # outside relative tolerance
        (r"\boxed{13}", "12"),
        (r"\boxed{-12}", "12"),
        ("no number here", "12"),
    ],
)
def test_number_unequal(response: str, gold: str) -> None:
    assert not is_correct(response, gold, "number")


# Below 10**4 in size an off-by-one is outside the 1e-4 relative tolerance (above it, it is not).
@given(st.integers(-9999, 9999), st.integers(1, 1000))
@settings(max_examples=50, deadline=None)
def test_number_off_by_one_is_wrong(gold: int, delta: int) -> None:
    assert is_correct(rf"work \boxed{{{gold}}}", str(gold), "number")
    assert not is_correct(rf"work \boxed{{{gold + delta}}}", str(gold), "number")


def test_relative_tolerance_scales_with_gold() -> None:
    assert is_correct("1.00005", "1", "number")
    assert not is_correct("1.0002", "1", "number")
    assert is_correct("1000000.5", "1000000", "number")
    assert not is_correct("1000200", "1000000", "number")


# --- is_correct: integer (AIME) ------------------------------------------------------------


@pytest.mark.parametrize(("response", "gold"), [(r"\boxed{0}", "0"), (r"\boxed{999}", "999"), (r"\boxed{42.0}", "42"), ("Answer: 7", "7")])
def test_integer_in_range_accepted(response: str, gold: str) -> None:
    assert is_correct(response, gold, "integer")


@pytest.mark.parametrize(
    ("response", "gold"),
    [
        (r"\boxed{1000}", "1000"),  # out of range: never correct, even against itself
        (r"\boxed{-1}", "-1"),
        (r"\boxed{12.5}", "12.5"),
        (r"\boxed{\frac{1}{2}}", "1/2"),
        (r"\boxed{42.00001}", "42"),  # no numeric tolerance for integers
        (r"\boxed{43}", "42"),
        (r"\boxed{x}", "42"),
    ],
)
def test_integer_rejects_out_of_range_and_non_integers(response: str, gold: str) -> None:
    assert not is_correct(response, gold, "integer")


# --- choice --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is (B).", "B"),
        ("the answer is B", "B"),
        ("Answer: C", "C"),
        ("Answer: (C)", "C"),
        ("answer: d", "D"),  # a lower-case letter that ends its clause is a choice
        ("answer: a fox", None),  # ... but the article "a" in prose is not choice A
        ("The answer is a fox (C)", "C"),
        ("I compared (A) with (D)", "D"),
        ("(A) looks wrong. The answer is (C). Not (D).", "C"),
        ("Answer: A. On reflection the answer is (B).", "B"),
        ("The answer is (B). Actually the answer is (C).", "C"),
        ("no letter", None),
        ("(E)", None),
        (" C", "C"),  # the prompt ends with "Answer:", so a bare letter is a complete answer
        ("B.\n", "B"),
        ("A fox", None),  # an article is not a bare letter
        ("E", None),
    ],
)
def test_extract_choice(text: str, expected: str | None) -> None:
    assert extract_choice(text) == expected


def test_choice_correct_against_gold_forms() -> None:
    assert is_correct("The answer is (B).", "B", "choice")
    assert is_correct("The answer is (B).", "(B)", "choice")
    assert is_correct("The answer is (B).", " b ", "choice")
    assert not is_correct("The answer is (B).", "C", "choice")
    assert not is_correct("no letter at all", "A", "choice")


# --- text ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" Oslo\nQuestion: more", "Oslo"),
        ("\n\n  blue  \nnext", "blue"),
        ("Thinking... Answer: red. Final Answer: The Fox", "The Fox"),
        ("Answer: red\nno, wait.\nAnswer: blue\n", "blue"),
        ("Answer:\nOslo", "Oslo"),
        ("", None),
        ("   \n  ", None),
    ],
)
def test_extract_text(text: str, expected: str | None) -> None:
    assert extract_text(text) == expected


def test_text_correct_ignores_case_punctuation_articles() -> None:
    assert is_correct(" The Owl.", "owl", "text")
    assert is_correct("Answer: a FOX!", "fox", "text")
    assert is_correct("oslo", "Oslo", "text")
    assert not is_correct(" cat", "dog", "text")
    assert not is_correct("Oslo\nTarn", "Tarn", "text")  # only the first line counts


def test_unknown_answer_type_raises() -> None:
    with pytest.raises(ValueError, match="answer_type"):
        is_correct("x", "x", "essay")


# --- MATH / minerva / PRM800K normalization rules -------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("x = 7", "7"),
        ("k=7", "7"),
        ("n = -3", "-3"),
        (r"x = \frac{1}{2}", "1/2"),
        (r"\theta = 30^\circ", "30"),
        ("x_1 = 4", "4"),
        ("x = 1,000", "1000"),
        ("y=2x+1", "y=2x+1"),  # an equation stays whole: its right side is not a number
        (r"y = 2x + 1", "y=2x+1"),
        ("x=1,y=2", "x=1,y=2"),  # two "="s: a system, not one value
        ("2x = 14", "2x=14"),  # the left side is not a bare name
        ("abcd = 5", "abcd=5"),  # nor a long word
        (r"n \geq 3", r"n\geq3"),  # an inequality keeps its sign
        ("x < 7", "x<7"),
    ],
)
def test_variable_prefix_dropped_only_before_a_number(raw: str, expected: str) -> None:
    assert normalize_math(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (r"10 \text{ inches}", "10"),
        (r"5\text{ cm}^2", "5"),
        (r"3\mbox{ m}^{3}", "3"),
        (r"7\mathrm{kg}", "7"),
        (r"12\text{ cm}.", "12"),
        (r"\frac{1}{2}\text{ mile}", "1/2"),
        (r"5\,\text{cm}", "5"),
        (r"\$5", "5"),
        (r"\$ 1,250.00", "1250"),
        (r"5\$", "5"),
        (r"30^{\circ}", "30"),
        (r"30 \degree", "30"),
        ("30°", "30"),
        (r"12.5\%", "12.5"),
        (r"\text{5}", "5"),  # a wrapper around the whole answer is unwrapped
        (r"\text{Monday}", "Monday"),
    ],
)
def test_units_dollars_degrees_percent_removed(raw: str, expected: str) -> None:
    assert normalize_math(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (r"2\text{ and }3", "2and3"),  # a word between numbers is not a unit: never "23"
        (r"\text{(C)}", "(C)"),
        ("5 cm", "5cm"),  # units outside \text{} are not guessed at
    ],
)
def test_text_that_is_not_a_trailing_unit_stays(raw: str, expected: str) -> None:
    assert normalize_math(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (r"\frac12", "1/2"),
        (r"\dfrac12", "1/2"),
        (r"\frac1{72}", "1/72"),
        (r"\frac{3}4", "3/4"),
        (r"\frac ab", "a/b"),
        (r"\frac{-1}{2}", "-1/2"),
        (r"\frac{x+1}{2}", "(x+1)/2"),  # not x+1/2, which is another value
        (r"\frac{\sqrt{3}}{2}", r"\frac{\sqrt{3}}{2}"),
        (r"\sqrt3", r"\sqrt{3}"),
        (r"2\sqrt{2}", r"2\sqrt{2}"),
        (r"\left[ 1, 2 \right)", "[1,2)"),
        (r"\leftarrow", r"\leftarrow"),
        (r"1\!000", "1000"),
        (r"1\;000", "1000"),
        ("1\u2009000", "1000"),  # thin space
        ("1\u202f000", "1000"),  # narrow no-break space
        ("1{,}000", "1{,}000"),
        ("+5", "5"),
        ("+2.50", "2.50"),
        ("7.00", "7"),
        ("7.", "7"),
        ("\u22123", "-3"),  # Unicode minus
        ("(1,234)", "(1,234)"),  # an ordered pair's comma is not digit grouping
        ("1,2345", "1,2345"),
    ],
)
def test_tex_spelling_normalized(raw: str, expected: str) -> None:
    assert normalize_math(raw) == expected


@pytest.mark.parametrize(
    ("response", "gold"),
    [
        (r"\boxed{x = 7}", "7"),
        (r"\boxed{k=7}", "x = 7"),
        (r"\boxed{y = 2x+1}", "y=2x+1"),
        (r"\boxed{\frac12}", "0.5"),
        (r"\boxed{1/2}", r"\frac{1}{2}"),
        (r"\boxed{.5}", r"\dfrac{1}{2}"),
        (r"\boxed{\tfrac{3}{2}}", "1.5"),
        (r"\boxed{\frac{1.5}{3}}", "1/2"),
        (r"\boxed{10\text{ inches}}", "10"),
        (r"\boxed{\$1,000}", "1000"),
        (r"\boxed{50\%}", "50"),
        (r"\boxed{45^\circ}", "45"),
        (r"\boxed{+3}", "3"),
        (r"\boxed{\left(1,2\right)}", "(1,2)"),
        (r"\boxed{\frac{x+1}{2}}", r"\dfrac{x+1}{2}"),
        (r"Final Answer: The final answer is $\frac{1}{2}$. I hope it is correct.", "0.5"),
        (r"Answer: $\frac{3}{4}$", "0.75"),
    ],
)
def test_math_rules_equal(response: str, gold: str) -> None:
    assert is_correct(response, gold, "number")


@pytest.mark.parametrize(
    ("response", "gold"),
    [
        (r"\boxed{2x+1}", "y=2x+1"),  # an equation's right side alone is not the equation
        (r"\boxed{y=2x+1}", "2x+1"),
        (r"\boxed{n \geq 3}", "3"),
        (r"\boxed{x < 7}", "7"),
        (r"\boxed{2x = 14}", "14"),
        (r"\boxed{\frac{x+1}{2}}", "x+1/2"),
        (r"\boxed{\frac{1}{3}}", "0.33"),  # outside the tolerance
        (r"\boxed{0.5}", r"50\%"),  # percent signs are dropped, not converted
        (r"\boxed{(1,234)}", "1234"),
        (r"\boxed{2\text{ and }3}", "23"),
        (r"\boxed{x = 8}", "7"),
        ("The answer is $12\\sqrt{2}$", "12"),  # the math span is read whole, not up to its first digit
    ],
)
def test_math_rules_unequal(response: str, gold: str) -> None:
    assert not is_correct(response, gold, "number")


@pytest.mark.parametrize(
    ("response", "gold"),
    [(r"\boxed{x = 7}", "7"), (r"\boxed{n=042}", "42"), (r"\boxed{\$999}", "999"), (r"\boxed{+0}", "0"), (r"\boxed{7\text{ ways}}", "7")],
)
def test_integer_rules(response: str, gold: str) -> None:
    assert is_correct(response, gold, "integer")


def test_integer_expression_is_not_a_value() -> None:
    assert not is_correct(r"\boxed{1,000 - 1}", "999", "integer")
    assert not is_correct(r"\boxed{x = 7.5}", "7", "integer")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1/2", Fraction(1, 2)), ("1.5/3", Fraction(1, 2)), (".5", Fraction(1, 2)), ("+2", 2), ("1/2/3", None), ("1e5", None), ("1_000", None), ("", None)],
)
def test_parse_number_forms(raw: str, expected: Fraction | None) -> None:
    assert parse_number(raw) == expected


@given(st.integers(-10**6, 10**6), st.integers(1, 10**4))
@settings(max_examples=50, deadline=None)
def test_fraction_spellings_agree(numerator: int, denominator: int) -> None:
    value = Fraction(numerator, denominator)
    spellings = [rf"\frac{{{numerator}}}{{{denominator}}}", rf"\dfrac{{{numerator}}}{{{denominator}}}", f"{numerator}/{denominator}"]
    if value.denominator in (1, 2, 4, 5, 8, 10):  # a terminating decimal close enough to compare
        spellings.append(f"{float(value):.6f}")
    for spelling in spellings:
        assert parse_number(normalize_math(spelling)) is not None
        for gold in spellings:
            assert is_correct(rf"\boxed{{{spelling}}}", gold, "number"), (spelling, gold)


@given(st.integers(0, 10**7))
@settings(max_examples=50, deadline=None)
def test_grouped_and_dressed_numbers_equal_plain(n: int) -> None:
    grouped = f"{n:,}"
    for dressed in (grouped, rf"\${grouped}", rf"{grouped}\text{{ cm}}", f"x = {grouped}", f"{grouped}.00", rf"{grouped}\%"):
        assert normalize_math(dressed) == str(n), dressed


# --- choice letters: lower case, markdown, boxes ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("the answer is (b)", "B"),
        ("The answer is (b) because the rest fail.", "B"),
        ("The answer is c.", "C"),
        ("answer: d\n", "D"),
        ("Answer: b)", "B"),
        ("**Answer: C**", "C"),
        ("**Answer:** C", "C"),
        ("Answer: **(D)**", "D"),
        (r"Answer: $\boxed{A}$", "A"),
        (r"Answer: $\text{B}$", "B"),
        (r"so \boxed{C}", "C"),
        (r"so \boxed{(d)}", "D"),
        (" b", "B"),  # the prompt ends with "Answer:"
        ("(c).", "C"),
        ("The answer is a fox", None),
        ("The answer is a good one (D)", "D"),  # the article does not win over a later (D)
        ("I think a is wrong and b too", None),
        ("a fox ate (a) and (b)", None),  # lower-case enumerations in prose are not choices
        (r"\boxed{42}", None),
        ("Answer: E", None),
    ],
)
def test_extract_choice_lower_case_and_markup(text: str, expected: str | None) -> None:
    assert extract_choice(text) == expected


def test_choice_lower_case_is_correct_and_wrong_letter_is_not() -> None:
    assert is_correct("the answer is (b)", "B", "choice")
    assert is_correct("**Answer:** c", "C", "choice")
    assert not is_correct("the answer is (b)", "A", "choice")
    assert not is_correct("The answer is a fox", "A", "choice")
