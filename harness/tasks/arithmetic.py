"""MATH-style and AIME-style arithmetic with worked, step-by-step solutions ending in \\boxed{N}."""

from __future__ import annotations

import random

from harness.tasks.draft import Draft


def _worked(steps: list[str], answer: int) -> str:
    return " " + " ".join(f"{step}." for step in steps) + f" \\boxed{{{answer}}}"


def _math_prompt(expression: str) -> str:
    return f"Problem: What is {expression}?\nSolution:"


def _aime_prompt(question: str) -> str:
    return f"Problem: {question} The answer is an integer from 0 to 999.\nSolution:"


def _add_chain(rng: random.Random, terms: int) -> tuple[str, list[str], int]:
    """a + b (- c or + c)...: every intermediate value stays non-negative."""
    total = rng.randint(10, 99)
    expression, steps = str(total), []
    for _ in range(terms - 1):
        operand = rng.randint(10, 99)
        if rng.random() < 0.5 and operand <= total:
            steps.append(f"{total}-{operand}={total - operand}")
            expression += f" - {operand}"
            total -= operand
        else:
            steps.append(f"{total}+{operand}={total + operand}")
            expression += f" + {operand}"
            total += operand
    return expression, steps, total


def make_math(rng: random.Random) -> Draft:
    """One to three steps on two-digit numbers, sometimes a one-digit product."""
    form = rng.choice(("chain2", "chain3", "chain4", "product"))
    if form == "product":
        a, d, b = rng.randint(10, 99), rng.randint(2, 9), rng.randint(10, 99)
        expression = f"{a} * {d} + {b}"
        steps = [f"{a}*{d}={a * d}", f"{a * d}+{b}={a * d + b}"]
        answer = a * d + b
    else:
        expression, steps, answer = _add_chain(rng, terms=int(form[-1]))
    return Draft(_math_prompt(expression), str(answer), _worked(steps, answer), {"form": form, "steps": len(steps)})


def _two_digit_product(a: int, b: int) -> list[str]:
    """a*b written as the two partial products a school solution would use."""
    tens, units = divmod(b, 10)
    return [f"{a}*{units}={a * units}", f"{a}*{tens * 10}={a * tens * 10}", f"{a * units}+{a * tens * 10}={a * b}"]


def _mod_step(total: int) -> str:
    return f"{total} mod 1000={total % 1000}"


def make_aime(rng: random.Random) -> Draft:
    """Four or five steps with three- and four-digit intermediate values, answered modulo 1000."""
    form = rng.choice(("remainder", "product_chain", "sum_product"))
    if form == "remainder":
        a, b, c = rng.randint(12, 99), rng.randint(11, 99), rng.randint(100, 999)
        total = a * b + c
        steps = _two_digit_product(a, b) + [f"{a * b}+{c}={total}"]
        expression = f"{a}*{b} + {c}"
    elif form == "product_chain":
        a, d, b, c = rng.randint(100, 999), rng.randint(2, 9), rng.randint(100, 999), rng.randint(10, 99)
        total = a * d + b - c
        steps = [f"{a}*{d}={a * d}", f"{a * d}+{b}={a * d + b}", f"{a * d + b}-{c}={total}"]
        expression = f"{a}*{d} + {b} - {c}"
    else:
        a, b, d, c = rng.randint(100, 999), rng.randint(100, 999), rng.randint(2, 9), rng.randint(10, 99)
        total = (a + b) * d - c
        steps = [f"{a}+{b}={a + b}", f"{a + b}*{d}={(a + b) * d}", f"{(a + b) * d}-{c}={total}"]
        expression = f"({a} + {b})*{d} - {c}"
    answer = total % 1000
    question = f"Find the remainder when {expression} is divided by 1000."
    return Draft(_aime_prompt(question), str(answer), _worked([*steps, _mod_step(total)], answer), {"form": form, "steps": len(steps) + 1})
