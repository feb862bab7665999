"""Every figure the READMEs publish names the committed result file it comes from (issue 19, part 3).

A reference is a JSON pointer (RFC 6901) into a result file, in backticks, right after its figure:

    0.82 CPU µs/event (`bench/results/2026-11-26-2cpu-intel-xeon-processor.json#/benchmarks/decode/rows/0/median`)

or ``#/...`` alone for another value of the file named last in the same paragraph, list item or
table row. The figure is the last number before the reference (text in backticks aside, and
nothing before the previous reference). It must be the value in the file, rounded as quoted, in
the file's unit or a thousand times larger or smaller (ms quoted from seconds, "687k" from
tokens/s); a value that is text (the reliability suites' figures) must contain the number.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
READMES = ("README.md", "bench/README.md")  # there is no reliability/README.md: README.md has those figures
# The parts that publish measured figures: there every row, item and paragraph with a number names its file.
SECTIONS = {"README.md": ("## Benchmarks", "## Reliability"), "bench/README.md": ("## Results", "## Batching")}

_CODE = re.compile(r"`([^`]*)`")
_REFERENCE = re.compile(r"((?:bench|reliability)/results/[^`#\s]+\.json)?#(/[^`]*)")
# A number standing alone: not the 99 of "p99", the 2 of "SmolLM2" or the digits after a decimal point.
_NUMBER = re.compile(r"(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?")
_SCALES = (1.0, 1e3, 1e-3, 1e6, 1e-6)


@dataclass
class Reference:
    readme: str
    line: int
    file: str
    pointer: str
    figure: str | None  # the number quoted before it, as written

    def __str__(self) -> str:
        return f"{self.readme}:{self.line} {self.figure or '(no number)'} -> {self.file}#{self.pointer}"


def blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each paragraph, list item and table row; code blocks and table
    headings left out."""
    found: list[tuple[int, list[str]]] = []
    fresh, fenced = True, False
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fenced, fresh = not fenced, True
            continue
        if fenced or not stripped or stripped.startswith("#"):  # headings stand apart, like blank lines
            fresh = fresh or not stripped or stripped.startswith("#")
            continue
        if re.fullmatch(r"\|(?:\s*:?-+:?\s*\|)+", stripped):  # a table's separator: the row above is its heading
            found.pop()
            fresh = True
            continue
        if fresh or stripped.startswith(("|", "- ", "* ")) or found[-1][1][-1].lstrip().startswith("|"):
            found.append((number, [line]))
        else:
            found[-1][1].append(line)
        fresh = False
    return [(number, "\n".join(lines)) for number, lines in found]


def references(readme: str, text: str) -> list[Reference]:
    found = []
    for line, block in blocks(text):
        file, before, position = None, "", 0
        for code in _CODE.finditer(block):
            match = _REFERENCE.fullmatch(code.group(1))
            before += block[position : code.start()]
            position = code.end()
            if match is None:
                continue
            file = match.group(1) or file
            numbers = _NUMBER.findall(before)
            where = line + block[: code.start()].count("\n")
            found.append(Reference(readme, where, file or "", match.group(2), numbers[-1] if numbers else None))
            before = ""
    return found


def resolve(document: Any, pointer: str) -> Any:
    """The value at an RFC 6901 pointer; KeyError saying where it stopped."""
    value, path = document, ""
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        path += "/" + token
        if isinstance(value, dict) and token in value:
            value = value[token]
        elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        else:
            size = f"a list of {len(value)}" if isinstance(value, list) else type(value).__name__
            keys = f" (keys: {', '.join(list(value)[:12])})" if isinstance(value, dict) else ""
            raise KeyError(f"nothing at {path}: that is {size}{keys}")
    return value


def matches(figure: str, value: Any) -> bool:
    """Whether ``figure`` (as quoted) is ``value`` rounded as quoted, in its unit or scaled by 1000s."""
    if isinstance(value, str):
        return any(matches(figure, float(n.replace(",", ""))) for n in _NUMBER.findall(value))
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    quoted = float(figure.replace(",", ""))
    decimals = len(figure.split(".")[1]) if "." in figure else 0
    tolerance = 0.5 * 10**-decimals * (1 + 1e-9)
    return any(abs(value * scale - quoted) <= tolerance for scale in _SCALES)


def problems(reference: Reference, root: Path = ROOT) -> list[str]:
    if not reference.file:
        return [f"{reference}: `#...` with no file named before it in the same paragraph or row"]
    path = root / reference.file
    if not path.is_file():
        return [f"{reference}: no such file; commit the result file or fix the name"]
    try:
        value = resolve(json.loads(path.read_text(encoding="utf-8")), reference.pointer)
    except KeyError as error:
        return [f"{reference}: {error.args[0]}"]
    if reference.figure is not None and not matches(reference.figure, value):
        return [f"{reference}: the file says {value!r}; quote that (rounded) or point at the right value"]
    return []


def all_references() -> list[Reference]:
    return [r for name in READMES for r in references(name, (ROOT / name).read_text(encoding="utf-8"))]


@pytest.mark.parametrize("reference", all_references(), ids=str)
def test_the_referenced_file_holds_the_quoted_figure(reference: Reference) -> None:
    assert problems(reference) == []


def sections(text: str, headings: tuple[str, ...]) -> str:
    """The text under the level-2 headings that start with one of ``headings``, up to the next one."""
    kept, keep = [], False
    for line in text.splitlines():
        if line.startswith("## "):
            keep = line.startswith(headings)
        kept.append(line if keep else "")
    return "\n".join(kept)


@pytest.mark.parametrize("readme", READMES)
def test_every_published_figure_names_its_file(readme: str) -> None:
    text = sections((ROOT / readme).read_text(encoding="utf-8"), SECTIONS[readme])
    bare = [
        f"{readme}:{line}: {block.splitlines()[0][:90]}"
        for line, block in blocks(text)
        if _NUMBER.search(_CODE.sub("", block)) and not references(readme, block)
    ]
    assert bare == [], "figures without a result file (see tests/test_evidence.py for the format)"


def test_a_missing_file_or_key_or_a_wrong_figure_is_reported(tmp_path: Path) -> None:
    results = tmp_path / "bench" / "results"
    results.mkdir(parents=True)
    (results / "run.json").write_text(json.dumps({"rows": [{"median": 0.0123}], "note": "0 of 62"}))
    text = (
        "p50 12 ms (`bench/results/run.json#/rows/0/median`), 12.3 ms (`#/rows/0/median`), 0 of 62 (`#/note`)\n\n"
        "gone 5 (`bench/results/gone.json#/rows`), no key 5 (`bench/results/run.json#/rows/1/median`), "
        "wrong 13 ms (`#/rows/0/median`)\n\nno file 1 (`#/rows`)\n"
    )
    found = references("R.md", text)
    assert [r.figure for r in found] == ["12", "12.3", "62", "5", "5", "13", "1"]
    assert [problems(r, tmp_path) for r in found[:3]] == [[], [], []]
    reported = [" ".join(problems(r, tmp_path)) for r in found[3:]]
    assert "no such file" in reported[0] and "nothing at /rows/1: that is a list of 1" in reported[1]
    assert "the file says 0.0123" in reported[2] and "no file named before it" in reported[3]


def test_each_table_row_is_a_block_and_its_heading_none() -> None:
    text = "## Results\n\nBefore.\n\n| | |\n|---|---|\n| decode | 0.82 (`#/a`) |\n| load | 12 ms |\n\nAfter 3 runs.\n"
    assert [block for _, block in blocks(text)] == [
        "Before.",
        "| decode | 0.82 (`#/a`) |",
        "| load | 12 ms |",
        "After 3 runs.",
    ]
