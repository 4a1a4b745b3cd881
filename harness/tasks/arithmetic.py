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


def _mod_step(total: int) -> str:
    return f"{total} mod 1000={total % 1000}"


def make_aime(rng: random.Random) -> Draft:
    """Three or four steps with four- and five-digit intermediate values, answered modulo 1000.

    Half the problems need a two-digit by two-digit product in one step, which the embedded
    model only partly masters: that is what makes this suite harder than `math`.
    """
    form = rng.choices(("remainder", "product_chain", "sum_product"), weights=(0.5, 0.25, 0.25))[0]
    if form == "remainder":
        a, b, c = rng.randint(12, 99), rng.randint(11, 99), rng.randint(100, 999)
        total = a * b + c
        steps = [f"{a}*{b}={a * b}", f"{a * b}+{c}={total}"]
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
