"""Final answers of math and science solutions: reading them out of free text, and deciding if two agree.

Reading (`extract_answer`), strongest evidence last-written first:
- an explicit marker: `\\boxed{...}` / `\\fbox{...}` (nested braces), "Final answer: X", "The (final) answer
  is X", "Answer: X" -- the one written last wins, since a revision may quote the answer it corrects;
- failing that, a fallback: for a multiple-choice problem the last option named ("(B)", "option B"),
  else the last number of the last line that has one (the last stated as a result, "= 43", "is 43", "$43",
  where the line has several).
For a multiple-choice problem (its prompt lists "Answer Choices: (A) ... (B) ...") an answer is a letter:
"(C) solar radiation", "C." and "solar radiation" all read as "C".

Agreeing (`equivalent`): letters by letter; numbers by value (commas, units, percent, fractions
`1/2 == 0.5 == \\frac{1}{2} == \\dfrac12`, decimals within a relative 1e-4 or rounded to the places
written); anything else after a light LaTeX normalisation (`\\left`, `\\right`, `\\!`, spaces, `$`,
`\\text{}`), lists item by item in any order, and "x = 5" as 5. It is deliberately simple: no symbolic
algebra, so `\\sqrt{8}` and `2\\sqrt{2}` differ. A disagreement is therefore sometimes a false "wrong";
an agreement is never a guess.
"""

from __future__ import annotations

import math
import re

LETTERS = "ABCDEFGHIJ"

_CHOICE = re.compile(r"\(([A-J])\)\s*(.*?)(?=\s*\([A-J]\)|$)", re.DOTALL)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_MARKER = re.compile(r"(?:final\s+answer|\banswer)\s*(?:is\b\s*:?|:)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.\s")
_MATH_SPAN = re.compile(r"\$\$?(.+?)\$\$?|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_LEADING_LETTER = re.compile(r"^(?:\\text\{)?(?:(?:[Oo]ption|[Cc]hoice)\s*)?\(?([A-J])\)?\}?(?:[\s.:,)]|$)")
_NAMED_LETTER = re.compile(r"\(([A-J])\)|\b(?:option|choice)\s+\(?([A-J])\b|\\boxed\{([A-J])\}|^\s*([A-J])[.)]?\s*$",
                           re.MULTILINE)
_NUMBER_IN_TEXT = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][+-]?\d+|\s*/\s*\d+)?(?![\w])"
                             r"|(?<![\w.])-?\.\d+")
_TEXT_COMMAND = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\[!,;:> ]|\\quad|\\qquad|~")
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?$", re.IGNORECASE)
_SCIENTIFIC = re.compile(r"^(?:([+-]?\d+(?:\.\d+)?)(?:\\times|\\cdot))?10\^\{?([+-]?\d+)\}?$")
_CLAIM = re.compile(r"(?:=|\$|\b(?:is|are|be|of|to|equals|was))$", re.IGNORECASE)
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_FRACTION = re.compile(r"^([+-]?)\\frac\{([^{}]+)\}\{([^{}]+)\}$")
_ASSIGNMENT = re.compile(r"^[a-z](?:_\{?\w+\}?)?=(?!=)", re.IGNORECASE)


def parse_choices(prompt: str) -> dict[str, str]:
    """The options of a multiple-choice prompt ("Answer Choices: (A) ... (B) ..."), letter -> text; {} if none."""
    head, marker, tail = prompt.rpartition("Answer Choices:")
    if not marker:
        return {}
    return {letter: text.strip() for letter, text in _CHOICE.findall(tail)}


def boxed_answers(text: str) -> list[tuple[int, str]]:
    """(position, content) of every `\\boxed{...}` in `text`, nested braces included; an unclosed one is skipped."""
    found = []
    for match in _BOXED.finditer(text):
        depth, start = 1, match.end()
        for index in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[index], 0)
            if depth == 0:
                found.append((match.start(), text[start:index]))
                break
    return found


def extract_answer(text: str, choices: dict[str, str] | None = None) -> str | None:
    """The final answer written in `text` (a letter for a multiple-choice problem), or None when there is none."""
    candidates = [(position, content) for position, content in boxed_answers(text)]
    candidates += [(match.start(), _marked(_stated_after(text, match.end()))) for match in _MARKER.finditer(text)]
    candidates = [(position, answer) for position, answer in candidates if answer.strip()]
    if candidates:
        answer = max(candidates, key=lambda candidate: candidate[0])[1].strip()
        # for a multiple-choice problem an answer naming no option is kept as written: it agrees with no letter
        return (_as_letter(answer, choices) or answer) if choices else answer
    return _fallback(text, choices)


def _stated_after(text: str, start: int) -> str:
    """What a marker introduces: the rest of its line (the next non-blank line when that is empty)."""
    lines = text[start:].split("\n")
    rest = next((line for line in lines[1:] if line.strip()), "") if not lines[0].strip(" \t*") else lines[0]
    return rest


def _marked(rest: str) -> str:
    """What follows an answer marker: a boxed answer in it, else its first math span, else the line (cleaned)."""
    boxed = boxed_answers(rest)
    if boxed:
        return boxed[-1][1]
    rest = rest.strip().strip("*").strip()
    span = _MATH_SPAN.match(rest)
    if span:
        return next(group for group in span.groups() if group is not None)
    return _SENTENCE_END.split(rest)[0].rstrip(".").strip()  # "350. The vendor saves..." -> 350


def _as_letter(answer: str, choices: dict[str, str]) -> str | None:
    """The option an answer names: a leading letter ("(C) text", "C.", "option C"), else an option's own text."""
    answer = _TEXT_COMMAND.sub(r"\1", answer).strip().strip("$").strip()
    match = _LEADING_LETTER.match(answer)
    if match and match.group(1).upper() in (choices or LETTERS):
        return match.group(1).upper()
    return _option_named(answer, choices)


def _option_named(text: str, choices: dict[str, str]) -> str | None:
    """The letter of the option whose own text `text` is, else None."""
    wanted = _canonical(text)
    return next((letter for letter, option in choices.items() if wanted and wanted == _canonical(option)), None)


def _fallback(text: str, choices: dict[str, str] | None) -> str | None:
    if choices:
        letters = [next(g for g in match.groups() if g) for match in _NAMED_LETTER.finditer(text)]
        letters = [letter.upper() for letter in letters if letter.upper() in choices]
        if letters:
            return letters[-1]
        lines = [line for line in text.splitlines() if line.strip()]
        return _option_named(lines[-1], choices) if lines else None  # a last line that is an option's own text
    lines = [line for line in text.splitlines() if _NUMBER_IN_TEXT.search(line)]
    if not lines:
        return None
    # the last line that has numbers; in it, the last number stated as a result ("= 43", "$43", "is 43"),
    # else its last number: "spends $43.00 on dry-cleaning in 5 weeks" answers 43.00
    numbers = list(_NUMBER_IN_TEXT.finditer(lines[-1]))
    claimed = [m for m in numbers if _CLAIM.search(lines[-1][:m.start()].rstrip(" $\\(["))
               or lines[-1][:m.start()].endswith("$")]
    return (claimed or numbers)[-1].group().replace(" ", "")


# ------------------------------------------------------------------------------------------- agreement


def normalize(answer: str) -> str:
    """A light LaTeX normalisation, spaces kept: no `$`, `\\left`/`\\right`, spacing commands or `\\text{}`
    wrappers, `\\dfrac`/`\\tfrac` as `\\frac` with braced arguments, no degree signs or final full stop."""
    text = answer.strip()
    text = re.sub(r"\\[()\[\]]", "", text).replace("\\$", "").replace("$", "")
    text = text.replace("\\left", "").replace("\\right", "").replace("\\displaystyle", "")
    text = _SPACING.sub(" ", text)
    while _TEXT_COMMAND.search(text):
        text = _TEXT_COMMAND.sub(r" \1 ", text)
    text = re.sub(r"\\[dt]frac", r"\\frac", text)
    text = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", text)  # \frac12
    text = re.sub(r"\\frac\s*\{([^{}]*)\}\s*(\d)", r"\\frac{\1}{\2}", text)  # \frac{1}2
    text = re.sub(r"\\frac\s*(\d)\s*\{", r"\\frac{\1}{", text)  # \frac1{2}
    text = re.sub(r"\^\s*\{?\\circ\}?|°|\\degree", "", text).replace("\\%", "%")
    text = re.sub(r"_\{(\w)\}", r"_\1", text)
    text = " ".join(text.split())
    return text.rstrip(".").strip()


def _canonical(answer: str) -> str:
    """The normalised answer without spaces, lower-cased: the string two answers are compared by."""
    return normalize(answer).replace(" ", "").lower()


def to_number(answer: str) -> tuple[float, bool] | None:
    """(value, was a percentage) of an answer that is one number, else None.

    Reads "1,234.5", "-3", ".5", "1.45e-5", "1.70 \\times 10^{-5}", "350 dollars", "\\$350", "50%", "1/2",
    "-\\frac{3}{4}", "\\frac{-3}{4}"; words after a number (units) are left out.
    """
    words = normalize(answer).split(" ")
    for cut in range(len(words), 0, -1):
        if all(word[:1].isalpha() for word in words[cut:]):
            value = _one_number("".join(words[:cut]))
            if value is not None:
                return value
    return None


def _one_number(text: str) -> tuple[float, bool] | None:
    percent = text.endswith("%")
    text = text.removesuffix("%")
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    value = _plain_number(text)
    scientific = _SCIENTIFIC.match(text)
    fraction = _FRACTION.match(text)
    if value is None and scientific:
        mantissa, exponent = scientific.groups()
        value = float(mantissa or 1) * 10.0 ** int(exponent)
    elif value is None and fraction:
        sign, top, bottom = fraction.groups()
        value = _ratio(_plain_number(top), _plain_number(bottom), sign)
    elif value is None and text.count("/") == 1:
        top, bottom = text.split("/")
        value = _ratio(_plain_number(top), _plain_number(bottom), "")
    return None if value is None else (value, percent)


def _plain_number(text: str) -> float | None:
    match = _NUMBER.match(text)
    if not match:
        return None
    try:
        return float(text)
    except OverflowError:
        return None


def _ratio(top: float | None, bottom: float | None, sign: str) -> float | None:
    if top is None or bottom is None or bottom == 0:
        return None
    return (-1 if sign == "-" else 1) * top / bottom


def _decimals(answer: str) -> int:
    """Places written after the decimal point of a plain decimal answer (0 for anything else)."""
    match = re.search(r"\.(\d+)\s*%?\s*$", normalize(answer))
    return len(match.group(1)) if match else 0


def numbers_agree(a: str, b: str) -> bool | None:
    """Whether two one-number answers have the same value; None when either is not a number.

    Equal within a relative 1e-4, or one rounded to the places the other wrote (two or more: "0.33" for
    1/3). A percentage equals its number and its fraction (50% == 50 == 0.5).
    """
    first, second = to_number(a), to_number(b)
    if first is None or second is None:
        return None
    values_a = {first[0], first[0] / 100} if first[1] else {first[0]}
    values_b = {second[0], second[0] / 100} if second[1] else {second[0]}
    return any(_close(x, y, _decimals(a)) or _close(y, x, _decimals(b)) for x in values_a for y in values_b)


def _close(written: float, other: float, places: int) -> bool:
    """`written` (with `places` decimals) is `other` within a relative 1e-4, or `other` rounded to those places."""
    if math.isclose(written, other, rel_tol=1e-4, abs_tol=1e-9):
        return True
    return places >= 2 and math.isclose(round(other, places), written, abs_tol=10 ** -(places + 3))


def split_items(answer: str) -> list[str]:
    """The top-level comma-separated items of an answer (commas inside brackets or braces stay)."""
    items, depth, current = [], 0, []
    for char in normalize(answer):
        depth += char in "([{" and 1 or (char in ")]}" and -1 or 0)
        if char == "," and depth == 0:
            items.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    items.append("".join(current).strip())
    return items


def equivalent(a: str | None, b: str | None) -> bool:
    """Whether two extracted answers say the same thing (see the module docstring); None never agrees."""
    if a is None or b is None:
        return False
    numbers = numbers_agree(a, b)
    if numbers is not None:
        return numbers
    first, second = _canonical(a), _canonical(b)
    if first == second:
        return True
    if _ASSIGNMENT.match(first) or _ASSIGNMENT.match(second):  # "x = 5" and 5
        first_value, second_value = _ASSIGNMENT.sub("", first), _ASSIGNMENT.sub("", second)
        if (first_value, second_value) != (first, second):
            return equivalent(first_value, second_value)
    items_a, items_b = split_items(a), split_items(b)
    if len(items_a) > 1 and len(items_a) == len(items_b):
        remaining = list(items_b)
        for item in items_a:
            match = next((other for other in remaining if equivalent(item, other)), None)
            if match is None:
                return False
            remaining.remove(match)
        return True
    return False
