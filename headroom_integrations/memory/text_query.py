"""Turning free user text into a safe keyword query.

Whatever the user typed (quotes, ``*``, ``NEAR``, ``AND``, parentheses, emoji), the result is a
list of plain word terms; the full-text backend quotes each one, so no query string can raise.
"""

from __future__ import annotations

import re

__all__ = ["STOPWORDS", "query_terms"]

_WORD = re.compile(r"\w+", re.UNICODE)

STOPWORDS = frozenset(
    {
        "a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are", "as", "at", "be",
        "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could", "did", "do",
        "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have", "having",
        "he", "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it",
        "its", "itself", "just", "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off", "on",
        "once", "only", "or", "other", "our", "ours", "ourselves", "out", "over", "own", "same", "she", "should",
        "so", "some", "such", "than", "that", "the", "their", "theirs", "them", "themselves", "then", "there",
        "these", "they", "this", "those", "through", "to", "too", "under", "until", "up", "very", "was", "we", "were",
        "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your",
        "yours", "yourself", "yourselves",
    }
)


def query_terms(text: str, max_terms: int = 32) -> list[str]:
    """Lower-cased word terms of ``text`` without stop words (unless nothing else is left).

    Example:
        >>> query_terms('Where does "alice" work? NEAR(x*) AND 🚀')
        ['alice', 'work', 'near', 'x']
    """
    words = [w.lower() for w in _WORD.findall(text)]
    seen: dict[str, None] = {}
    for word in words:
        if word not in STOPWORDS:
            seen.setdefault(word, None)
    if not seen:
        for word in words:
            seen.setdefault(word, None)
    return list(seen)[:max_terms]
