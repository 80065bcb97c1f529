"""The project documents its own algorithms: every reference to a section resolves.

Scanned: every file under grpo_cli/, tests/, conf/, recipes/, scripts/ and docs/, and README.md
(not __pycache__, *.egg-info or hidden folders). The rules:

(a) No scanned file, text or binary, mentions the two outside notes files by name (the team's
    private notes, whose names this file builds from pieces so that it does not mention them).
(b) In the text files (.py, .yaml, .yml, .md, .txt, .toml, .cfg, .sh), a named reference is
    `docs/NAME.md` followed by a space, the section sign and a number N or N.M (or deeper),
    optionally continued on the same line by ", ", " and " or " or " and further section
    numbers ("docs/algorithms.md S11.3, S11.4 and S11.5", S standing for the section sign).
    docs/NAME.md must exist and have a Markdown heading numbered exactly so
    ("## 11. Hand-derived ..." is 11, "### 11.3 Loss ..." is 11.3) for every number given.
(c) Every other section sign in those files is a bare reference. It passes when a paper is named
    in the 40 characters before it on the same line: an arXiv id (dddd.dddd or dddd.ddddd, with or
    without "arXiv") or one of PAPER_NAMES. In docs/*.md a bare reference also passes when its
    number is a heading of that same file (the file refers to itself). Anything else fails: a
    bare number would silently point into some file nobody can see.
(d) docs/algorithms.md has a "## N. Hand-derived test vectors" section; each of its `###`
    subsections names at least one tests/test_*.py file, and every tests/*.py path that any
    docs/*.md file names exists.
(e) Links into a docs file with an anchor, `docs/NAME.md#anchor`, name a heading of that file
    by its GitHub anchor.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ["grpo_cli", "tests", "conf", "recipes", "scripts", "docs", "README.md"]
TEXT_SUFFIXES = {".py", ".yaml", ".yml", ".md", ".txt", ".toml", ".cfg", ".sh"}
OUTSIDE_NOTES = ["ALGORITHMS" + ".md", "DESIGN" + ".md"]

SECTION = "\u00a7"
NUMBER = r"\d+(?:\.\d+)*"
NAMED = re.compile(rf"docs/([\w-]+)\.md {SECTION}({NUMBER})((?:(?:,| and| or),? {SECTION}{NUMBER})*)")
CONTINUED = re.compile(rf"{SECTION}({NUMBER})")
BARE = re.compile(rf"{SECTION}\s*({NUMBER})?")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
HEADING_NUMBER = re.compile(rf"^({NUMBER})\.?(?:\s|$)")
ANCHOR_LINK = re.compile(r"docs/([\w-]+)\.md#([\w-]+)")
TEST_FILE = re.compile(r"tests/[\w/]+\.py")

# Papers that may be cited by name right before one of their own sections.
PAPER_NAMES = ["DeepSeekMath", "DeepSeek-R1", "R1", "DAPO", "Dr. GRPO", "GSPO", "GFPO", "Kimi", "MiniMax",
               "CISPO", "RLOO", "REINFORCE++", "GDPO", "AReaL"]
PAPER_MARKER = re.compile(r"(?<![\w.])\d{4}\.\d{4,5}(?![\d])|(?<![\w-])(?:"
                          + "|".join(re.escape(name) for name in PAPER_NAMES) + r")(?![\w])")
LOOKBACK = 40


def scanned_files() -> list[Path]:
    out = []
    for name in SCANNED:
        path = ROOT / name
        if path.is_file():
            out.append(path)
            continue
        for file in sorted(path.rglob("*")):
            parts = file.relative_to(ROOT).parts
            if not file.is_file() or any(p == "__pycache__" or p.endswith(".egg-info") or p.startswith(".")
                                         for p in parts):
                continue
            out.append(file)
    return out


def text_files() -> list[Path]:
    return [f for f in scanned_files() if f.suffix in TEXT_SUFFIXES]


def headings(markdown: str) -> list[str]:
    """The heading titles of a Markdown text, outside fenced code blocks."""
    titles, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            titles.append(match.group(2))
    return titles


def heading_numbers(markdown: str) -> set[str]:
    return {m.group(1) for title in headings(markdown) if (m := HEADING_NUMBER.match(title))}


def github_anchor(title: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def docs_numbers() -> dict[str, set[str]]:
    return {p.stem: heading_numbers(p.read_text(encoding="utf-8")) for p in (ROOT / "docs").glob("*.md")}


def where(path: Path, line_number: int) -> str:
    return f"{path.relative_to(ROOT)}:{line_number}"


def test_nothing_mentions_the_outside_notes():
    offenders = [f"{path.relative_to(ROOT)}: {name}" for path in scanned_files() for name in OUTSIDE_NOTES
                 if name.encode() in path.read_bytes()]
    assert not offenders, "cite docs/algorithms.md or docs/design.md instead:\n" + "\n".join(offenders)


def references():
    """Every section sign of the text files: (path, line number, line, column, kind, docs file, number),
    kind "named" or "bare"; for a bare one the docs file is its own when it is a docs/*.md file."""
    out = []
    for path in text_files():
        is_doc = path.parent == ROOT / "docs" and path.suffix == ".md"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            taken = set()
            for match in NAMED.finditer(line):
                out.append((path, number, line, match.start(2) - 1, "named", match.group(1), match.group(2)))
                for more in CONTINUED.finditer(match.group(3)):
                    out.append((path, number, line, match.start(3) + more.start(), "named", match.group(1),
                                more.group(1)))
                taken.update(range(match.start(), match.end()))
            for match in BARE.finditer(line):
                if match.start() not in taken:
                    out.append((path, number, line, match.start(), "bare", path.stem if is_doc else None,
                                match.group(1)))
    return out


def test_named_references_resolve():
    numbers = docs_numbers()
    problems = [f"{where(p, n)}: docs/{doc}.md has no heading numbered {num}: {line.strip()}"
                for p, n, line, _, kind, doc, num in references()
                if kind == "named" and num not in numbers.get(doc, set())]
    assert not problems, "\n".join(problems)


def test_bare_section_signs_name_a_paper_or_their_own_file():
    numbers = docs_numbers()
    problems = []
    for path, n, line, column, kind, doc, num in references():
        if kind != "bare":
            continue
        if PAPER_MARKER.search(line[max(0, column - LOOKBACK):column]):
            continue
        if doc is not None and num in numbers.get(doc, set()):
            continue
        problems.append(f"{where(path, n)}: a bare section reference with no paper named before it"
                        f"{' and no heading ' + str(num) + ' in this file' if doc else ''}: {line.strip()}")
    assert not problems, ("write docs/NAME.md followed by the section, or name the paper just before it:\n"
                          + "\n".join(problems))


def test_the_reference_checker_tells_the_kinds_apart():
    """The rules above on made-up lines, so that a regex slip cannot make the real checks vacuous."""
    line = (f"see docs/algorithms.md {SECTION}2.4, {SECTION}11.3 and {SECTION}1.1; "
            f"DeepSeekMath {SECTION}4.1.3; {SECTION}7")
    named = [m.group(2) for m in NAMED.finditer(line)] + [c.group(1) for m in NAMED.finditer(line)
                                                          for c in CONTINUED.finditer(m.group(3))]
    assert named == ["2.4", "11.3", "1.1"]
    assert PAPER_MARKER.search("DAPO (arXiv 2503.14476) ") and PAPER_MARKER.search("Kimi k1.5 (2501.12599 ")
    assert not PAPER_MARKER.search("the loss of ") and not PAPER_MARKER.search("GRPO ")
    assert heading_numbers("## 1. Conventions\n### 1.2 Log-probs\n```\n## 9. not a heading\n```\n") == {"1", "1.2"}
    assert github_anchor("10. Several rewards") == "10-several-rewards"


def test_every_vector_section_names_the_test_that_asserts_it():
    text = (ROOT / "docs" / "algorithms.md").read_text(encoding="utf-8")
    top = re.search(r"^## (\d+)\. Hand-derived test vectors$", text, re.MULTILINE)
    assert top, "docs/algorithms.md needs its '## N. Hand-derived test vectors' section"
    body = text[top.end():]
    following = re.search(r"^## ", body, re.MULTILINE)
    body = body[:following.start()] if following else body
    sections = re.split(r"^(?=### )", body, flags=re.MULTILINE)[1:]
    assert len(sections) >= 10
    for section in sections:
        title = section.splitlines()[0]
        assert title.startswith(f"### {top.group(1)}."), f"not numbered under section {top.group(1)}: {title}"
        named = TEST_FILE.findall(section)
        assert any(Path(name).name.startswith("test_") for name in named), f"{title}: names no test file"
    for path in (ROOT / "docs").glob("*.md"):
        for name in TEST_FILE.findall(path.read_text(encoding="utf-8")):
            assert (ROOT / name).is_file(), f"{path.relative_to(ROOT)} names {name}, which does not exist"


@pytest.mark.parametrize("path", [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))],
                         ids=lambda p: p.name)
def test_anchor_links_into_docs_resolve(path):
    for doc, anchor in ANCHOR_LINK.findall(path.read_text(encoding="utf-8")):
        target = ROOT / "docs" / f"{doc}.md"
        assert target.is_file(), f"{path.name} links to docs/{doc}.md, which does not exist"
        anchors = {github_anchor(title) for title in headings(target.read_text(encoding="utf-8"))}
        assert anchor in anchors, f"{path.name} links to docs/{doc}.md#{anchor}; no heading has that anchor"
