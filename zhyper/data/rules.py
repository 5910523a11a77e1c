"""The built-in suite's formatting rules: for each context, how to rewrite a base answer and how to
check that an answer complies (exactly, without knowing the prompt).

A base answer is one plain sentence that ends with "." and contains at least one number written in
digits (see ``builtin_suite.yaml``). ``RULES[name].apply(base)`` is the suite's target response;
``RULES[name].check(answer)`` is True iff ``answer`` obeys the rule. Every rule is chosen so the
base answer itself fails every checker and the rules differ strongly for the same prompt.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Callable

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))
NUMBER_WORDS = frozenset([*_ONES, *_TENS[2:], *(s for _, s in _SCALES)])


def number_to_words(n: int) -> str:
    """English words for a non-negative integer below 10**12: 1969 -> 'one thousand nine hundred sixty-nine'."""
    if not 0 <= n < 10**12:
        raise ValueError(f"n: expected 0 <= n < 10**12, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    for size, name in _SCALES:
        if n >= size:
            head, rest = divmod(n, size)
            return f"{number_to_words(head)} {name}" + ("" if rest == 0 else " " + number_to_words(rest))
    raise AssertionError(n)


def _words(text: str) -> list[str]:
    return text.split()


def _bare(text: str) -> list[str]:
    """Words with surrounding punctuation removed (empty ones dropped)."""
    out = [re.sub(r"^[^\w]+|[^\w]+$", "", w) for w in text.split()]
    return [w for w in out if w]


def _chunks(words: list[str], size: int) -> list[str]:
    return [" ".join(words[i:i + size]) for i in range(0, len(words), size)]


def _end(text: str, mark: str) -> str:
    return text.rstrip(".!?") + mark


def _title(text: str) -> str:
    return " ".join(w[:1].upper() + w[1:] for w in text.split())


def _has_letters(text: str) -> bool:
    return any(ch.isalpha() for ch in text)


def _wrapped(answer: str, left: str, right: str) -> bool:
    inner = answer[len(left):len(answer) - len(right)] if len(answer) > len(left) + len(right) else ""
    return (answer.startswith(left) and answer.endswith(right) and inner.strip() == inner and _has_letters(inner)
            and left not in inner and right not in inner)


def _suffixed(answer: str, suffix: str) -> bool:
    return answer.endswith(suffix) and _has_letters(answer[: -len(suffix)])


def _prefixed(answer: str, prefix: str) -> bool:
    return answer.startswith(prefix) and _has_letters(answer[len(prefix):])


def _lines(answer: str) -> list[str]:
    return answer.split("\n")


def _spell_numbers(text: str) -> str:
    return re.sub(r"\d+", lambda m: number_to_words(int(m.group())), text)


def _check_json(answer: str) -> bool:
    try:
        value = json.loads(answer)
    except ValueError:
        return False
    return isinstance(value, dict) and list(value) == ["answer"] and isinstance(value["answer"], str) \
        and _has_letters(value["answer"])


def _check_title(answer: str) -> bool:
    words = _words(answer)
    return (len(words) >= 2 and "\n" not in answer and any(ch.islower() for ch in answer)
            and all(w[0].isupper() or w[0].isdigit() for w in words))


def _check_numbered(answer: str) -> bool:
    lines = _lines(answer)
    return len(lines) >= 2 and all(re.fullmatch(rf"{i}\. \S.*", line) for i, line in enumerate(lines, 1))


def _check_numbers_as_words(answer: str) -> bool:
    return (not re.search(r"\d", answer) and answer.endswith(".") and "\n" not in answer
            and any(w.lower() in NUMBER_WORDS or "-" in w and w.split("-")[0].lower() in NUMBER_WORDS
                    for w in _bare(answer)))


def _check_repeat(answer: str) -> bool:
    lines = _lines(answer)
    return len(lines) == 2 and lines[0] == lines[1] and _has_letters(lines[0])


@dataclass(frozen=True)
class Rule:
    """One context's rule: ``apply(base_answer) -> response`` and ``check(answer) -> bool``."""

    apply: Callable[[str], str]
    check: Callable[[str], bool]


SIGN_OFF = "\n\nKind regards, Zed"
PS_LINE = "\nP.S. Thanks for asking."
PREFIX = "Short answer: "
SMILEY = " :)"

RULES: dict[str, Rule] = {
    "upper_case": Rule(str.upper, lambda a: _has_letters(a) and not any(ch.islower() for ch in a)),
    "lower_case": Rule(str.lower, lambda a: _has_letters(a) and not any(ch.isupper() for ch in a)
                       and " " in a),
    "json_answer": Rule(lambda b: json.dumps({"answer": b}), _check_json),
    "three_words": Rule(lambda b: " ".join(_bare(b)[:3]), lambda a: len(_words(a)) == 3 and "\n" not in a),
    "sign_off": Rule(lambda b: b + SIGN_OFF, lambda a: _suffixed(a, SIGN_OFF)),
    "short_answer_prefix": Rule(lambda b: PREFIX + b, lambda a: _prefixed(a, PREFIX)),
    "numbers_as_words": Rule(_spell_numbers, _check_numbers_as_words),
    "word_per_line": Rule(lambda b: "\n".join(_bare(b)),
                          lambda a: len(_lines(a)) >= 3 and all(ln and not re.search(r"\s", ln)
                                                                and not ln.startswith(("-", "#")) for ln in _lines(a))),
    "bullet_list": Rule(lambda b: "\n".join("- " + c for c in _chunks(_bare(b), 3)),
                        lambda a: len(_lines(a)) >= 2 and all(re.fullmatch(r"- \S.*", ln) for ln in _lines(a))),
    "title_case": Rule(_title, _check_title),
    "exclaim": Rule(lambda b: _end(b, "!"), lambda a: a.endswith("!") and not a.endswith("!!") and _has_letters(a)),
    "double_quoted": Rule(lambda b: f'"{b}"', lambda a: _wrapped(a, '"', '"')),
    "parentheses": Rule(lambda b: f"({b})", lambda a: _wrapped(a, "(", ")")),
    "snake_case": Rule(lambda b: "_".join(_bare(b)).lower(), lambda a: bool(re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)+", a))),
    "hashtags": Rule(lambda b: " ".join("#" + w for w in _bare(b)),
                     lambda a: len(_words(a)) >= 3 and "\n" not in a
                     and all(re.fullmatch(r"#\w[\w-]*", w) for w in _words(a))),
    "number_only": Rule(lambda b: re.search(r"\d+", b).group(), lambda a: bool(re.fullmatch(r"\d+", a))),
    "bold": Rule(lambda b: f"**{b}**", lambda a: _wrapped(a, "**", "**")),
    "xml_tag": Rule(lambda b: f"<answer>{b}</answer>", lambda a: _wrapped(a, "<answer>", "</answer>")),
    "repeat_twice": Rule(lambda b: f"{b}\n{b}", _check_repeat),
    "numbered_list": Rule(lambda b: "\n".join(f"{i}. {c}" for i, c in enumerate(_chunks(_bare(b), 3), 1)),
                          _check_numbered),
    "comma_separated": Rule(lambda b: ", ".join(_bare(b)),
                            lambda a: len(a.split(", ")) >= 3 and all(re.fullmatch(r"[^\s,]+", w) for w in a.split(", "))),
    "ps_line": Rule(lambda b: b + PS_LINE, lambda a: _suffixed(a, PS_LINE)),
    "code_block": Rule(lambda b: f"```\n{b}\n```", lambda a: _wrapped(a, "```\n", "\n```")),
    "smiley": Rule(lambda b: b + SMILEY, lambda a: _suffixed(a, SMILEY)),
    # Held out entirely in the default suite (each is a sibling of a seen rule).
    "five_words": Rule(lambda b: " ".join(_bare(b)[:5]), lambda a: len(_words(a)) == 5 and "\n" not in a),
    "single_quoted": Rule(lambda b: f"'{b}'", lambda a: _wrapped(a, "'", "'")),
    "square_brackets": Rule(lambda b: f"[{b}]", lambda a: _wrapped(a, "[", "]")),
    "kebab_case": Rule(lambda b: "-".join(_bare(b)).lower(), lambda a: bool(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", a))),
    "question_mark": Rule(lambda b: _end(b, "?"), lambda a: a.endswith("?") and not a.endswith("??") and _has_letters(a)),
}
