"""Is a completion's final answer the reference? The checker behind the `math` reward (and
`length` with `checker: math`): answer extraction here, equivalence by math-verify
(huggingface/Math-Verify, which reads LaTeX into SymPy through latex2sympy2_extended).

Where we differ from math-verify's defaults, and why:
- A reference is an answer, not a solution, so it is read whole as LaTeX. math-verify's default
  `parse` searches a text for an answer (a LaTeX environment, else the last number) and reads
  `\\frac{a M^{1/3}}{G M^{2/3}+b}` or `3e6` without `$` as the number 3.
- The completion's answer is the last `\\boxed{}` (or `\\fbox{}`), else the last `Answer:` line,
  and that text is read exactly as a reference is, so every form a reference takes matches
  itself. A completion with neither goes to math-verify's own search.
- Text that mixes prose and math (`$x=-3$ or $x=11$`, `concave up on $(0, \\infty)$`) goes to
  math-verify's search on both sides, which joins the environments joined by "and", "or" or
  commas. Plain words ("No solution", "all real numbers") compare as lower-case text.
- `4.5e33` is rewritten `4.5\\times10^{33}` on both sides: as LaTeX, `e` is Euler's number.
  A number with thousands separators (`1,234`) loses them; other commas make a tuple.
- `y = f` against `y = g` compares f with g (see `same_answer`).
- Time: sympy can take a minute to decide that two expressions differ. Every parse and comparison
  runs under math-verify's own limit (a signal alarm, so only in a main thread: the reward
  workers' and the trainer's); an answer that overruns it is wrong. The reward workers' per-call
  limit stays the backstop for code that an alarm cannot interrupt.
"""

from __future__ import annotations

import functools
import logging
import re
import threading

from math_verify import LatexExtractionConfig, parse, verify
from sympy import Eq, Symbol

# math-verify logs each timeout and a warning when its limits are off; the reward reports them.
logging.getLogger("math_verify").setLevel(logging.ERROR)

_ANSWER = re.compile(r"(?i)\banswer\s*:")
_MATH_START = ("$", "\\[", "\\(", "\\begin")
_DELIMITERS = (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$"))
_SCIENTIFIC = re.compile(r"(?<![\w.\\])(\d+(?:\.\d+)?)[eE]([+-]?\d+)(?![\w.])")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_TEXT_COMMAND = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_WORDS = re.compile(r"[A-Za-z]+(?:[\s,'-]+[A-Za-z]+)*")
_PERCENT = re.compile(r"(.+?)\s*\\?%")
_SPACING = re.compile(r"\s+|\\(?:left|right|[,;:!]|quad|qquad)(?![a-zA-Z])")
_UNICODE = str.maketrans({"×": "\\times ", "·": "\\cdot ", "−": "-", "√": "\\sqrt", "π": "\\pi "})
# Inside the boxed answer, only LaTeX: a `\boxed` nested in it is unwrapped by math-verify.
_LATEX = [LatexExtractionConfig(boxed_match_priority=-1)]


def closing_brace(text: str, opening: int) -> int:
    """Index of the `}` that closes the `{` at `opening`, or -1; `\\{` and `\\}` are not braces."""
    depth, index = 0, opening
    while index < len(text):
        if text[index] == "\\":
            index += 2
            continue
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return index
        index += 1
    return -1


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` or `\\fbox{...}`, or None."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    opening = text.index("{", start)
    end = closing_brace(text, opening)
    return text[opening + 1:end] if end >= 0 else None


def _complete(line: str) -> bool:
    """No math delimiter or environment is left open at the end of this line."""
    displays = line.count("$$")
    dollars = len(re.findall(r"(?<!\\)\$", line.replace("$$", "")))
    return (displays % 2 == 0 and dollars % 2 == 0 and line.count("\\[") == line.count("\\]")
            and line.count("\\begin") == line.count("\\end"))


def answer_line(completion: str) -> str | None:
    """The text after the last `Answer:`: its line, unless that line leaves math open or the
    next line that is not blank starts with math (a multi-line answer), then all the rest."""
    found = list(_ANSWER.finditer(completion))
    if not found:
        return None
    rest = completion[found[-1].end():].lstrip("* \t\n").rstrip()
    first, _, after = rest.partition("\n")
    if _complete(first) and not after.lstrip().startswith(_MATH_START):
        rest = first
    return rest.removesuffix("**").strip() or None


def final_answer_text(completion: str) -> str | None:
    """What the completion gives as its answer: the last box, else the last `Answer:` line."""
    boxed = last_boxed(completion)
    return boxed if boxed is not None else answer_line(completion)


def unwrap(text: str) -> str:
    """The answer without surrounding space, full stop, box or math delimiters."""
    while True:
        text = text.strip().removesuffix(".").strip()
        if text.startswith(("\\boxed{", "\\fbox{")) and closing_brace(text, text.index("{")) == len(text) - 1:
            text = text[text.index("{") + 1:-1]
            continue
        pair = next(((o, c) for o, c in _DELIMITERS if text.startswith(o) and text.endswith(c)
                     and len(text) >= len(o) + len(c) and o not in text[len(o):len(text) - len(c)]), None)
        if pair is None:
            return text
        text = text[len(pair[0]):len(text) - len(pair[1])]


def normal_form(text: str) -> str:
    """The text both sides are read from: unwrapped, `e` notation and separators rewritten."""
    text = unwrap(text.translate(_UNICODE))
    if _THOUSANDS.fullmatch(text):
        text = text.replace(",", "")
    return _SCIENTIFIC.sub(r"\1\\times10^{\2}", text)


def limit_here(seconds: int) -> int | None:
    """math-verify's limit uses SIGALRM, which only a main thread can set."""
    return seconds if threading.current_thread() is threading.main_thread() else None


@functools.lru_cache(maxsize=65536)
def read_answer(text: str, seconds: int) -> tuple:
    """An answer's text as math-verify objects: SymPy values; or one string, for plain words
    (lower case) and for LaTeX that latex2sympy cannot read (without spacing); empty when prose
    with math in it holds nothing math-verify finds."""
    text = normal_form(text)
    plain = _TEXT_COMMAND.sub(r"\1", text).strip()
    if _WORDS.fullmatch(plain) and len(plain) > 1:
        return (" ".join(plain.lower().replace(",", " ").split()),)
    if "$" in text or "\\(" in text:  # prose with math in it: math-verify's own search
        return tuple(parse(text, parsing_timeout=limit_here(seconds)))
    latex = " ".join(text.split())  # an inline `$...$` holds one line; LaTeX ignores the breaks
    percent = _PERCENT.fullmatch(latex)  # math-verify reads a percent sign after the `$`
    wrapped = f"${percent.group(1)}$\\%" if percent else f"${latex}$"
    parsed = parse(wrapped, _LATEX, fallback_mode="no_fallback", parsing_timeout=limit_here(seconds))
    # What latex2sympy cannot read (set-builder sets, chains like b > a > c) is compared as
    # written, never as some number math-verify's search finds in it.
    return tuple(parsed) or (_SPACING.sub("", latex),)


def completion_answer(completion: str, seconds: int) -> tuple:
    """The completion's final answer read as a reference is; math-verify's search when it has
    no box and no `Answer:` line (the text is its last number or math environment)."""
    text = final_answer_text(completion)
    if text is not None:
        return read_answer(text, seconds)
    return tuple(parse(completion, parsing_timeout=limit_here(seconds)))


def _named_value(answer) -> tuple | None:
    """`name = value` (one symbol on the left) as (name, value); None for anything else."""
    if isinstance(answer, Eq) and isinstance(answer.lhs, Symbol):
        return answer.lhs.name, answer.rhs
    return None


def same_answer(gold, predicted, seconds: int) -> bool:
    """math-verify's `verify`, except that `y = f` and `y = g` compare f with g. math-verify
    solves both equations for every symbol instead: slow (a minute for two ODE solutions), and
    two equations it cannot solve compare equal (`I_p = ...` against `y = ...`)."""
    named_gold, named_predicted = _named_value(gold), _named_value(predicted)
    if named_gold and named_predicted:
        return named_gold[0] == named_predicted[0] and verify(
            named_gold[1], named_predicted[1], timeout_seconds=limit_here(seconds))
    return verify(gold, predicted, timeout_seconds=limit_here(seconds))


def math_equal(completion: str, reference, seconds: int = 5) -> bool:
    """True when the completion's final answer equals the reference within `seconds` per parse
    and comparison."""
    gold = read_answer(str(reference), seconds)
    if not gold:
        return False
    predicted = completion_answer(completion, seconds)
    return any(same_answer(g, p, seconds) for g in gold for p in predicted)
