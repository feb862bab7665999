"""A page's main text (``trafilatura``), cut into passages, and the passages most relevant to the
question chosen by BM25 (``rank_bm25``) within a budget of characters."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Passage", "choose", "main_text", "split"]

_WORD = re.compile(r"\w+", re.UNICODE)
PASSAGE_WORDS = 60  # about 80 tokens: several passages fit the budget, each long enough to say something


@dataclass(frozen=True)
class Passage:
    source: int  # the index of its source
    text: str


def main_text(content: str, content_type: str) -> str:
    """The readable text: a plain-text page as it is, an HTML page's main text (no menus, no scripts)."""
    if content_type == "text/plain":
        return content
    import trafilatura  # the search extra; imported when a search runs

    return trafilatura.extract(content, include_comments=False, include_tables=False) or ""


def split(text: str, source: int, words: int = PASSAGE_WORDS) -> list[Passage]:
    tokens = text.split()
    return [Passage(source, " ".join(tokens[i : i + words])) for i in range(0, len(tokens), words)]


def _terms(text: str) -> list[str]:
    return [word.lower() for word in _WORD.findall(text)]


def choose(query: str, passages: list[Passage], budget_chars: int) -> list[Passage]:
    """The best-scoring passages that fit ``budget_chars``, in the order of their sources."""
    if not passages:
        return []
    from rank_bm25 import BM25Okapi

    scores = BM25Okapi([_terms(p.text) or [""] for p in passages]).get_scores(_terms(query))
    ranked = sorted(range(len(passages)), key=lambda i: -scores[i])
    chosen, used = [], 0
    for index in ranked:
        size = len(passages[index].text)
        if used + size <= budget_chars:
            chosen.append(index)
            used += size
    return [passages[i] for i in sorted(chosen)]
