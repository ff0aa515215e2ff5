"""Text normalisation for keyword search, shared by documents and queries.

Words are lower-cased, stripped of accents, stop words and single letters are dropped and the
rest is stemmed (Snowball English), so "liked", "likes" and "liking" meet. Whatever a user typed
(quotes, ``*``, ``NEAR``, ``AND``, parentheses, emoji), a query becomes a list of plain word terms,
so no query string can make the full-text backend raise.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

import snowballstemmer

__all__ = [
    "FINGERPRINT_VERSION",
    "STOPWORDS",
    "bm25",
    "canonical_text",
    "clean_text",
    "fingerprint",
    "idf",
    "index_text",
    "query_terms",
    "select_terms",
    "terms",
]

_WORD = re.compile(r"\w+", re.UNICODE)
# A Snowball stemmer keeps the word it works on in the object: shared by threads, it mixes their
# words up (IndexError, wrong stems). One per thread.
_STEMMERS = threading.local()

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


@lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    stemmer = getattr(_STEMMERS, "english", None)
    if stemmer is None:
        stemmer = _STEMMERS.english = snowballstemmer.stemmer("english")
    return stemmer.stemWord(word)


def terms(text: str) -> list[str]:
    """The normalised terms of ``text``, in order, repeats kept.

    Example:
        >>> terms("Caroline LIKED the café's hiking trails!")
        ['carolin', 'like', 'cafe', 'hike', 'trail']
    """
    folded = unicodedata.normalize("NFKD", text.lower())
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return [_stem(w) for w in _WORD.findall(folded) if w not in STOPWORDS and (len(w) > 1 or w.isdigit())]


def index_text(content: str) -> str:
    """What the full-text index stores for a memory: its terms joined by spaces."""
    return " ".join(terms(content))


#: Recorded in a store's ``meta`` table: stored fingerprints are recomputed when it changes.
FINGERPRINT_VERSION = "3"

# Around a fact, these carry no meaning: quotes wrapping it (a matching pair only: a lone trailing
# ' or " is a unit, 6' is not 6") and a closing full stop, comma, colon, semicolon, exclamation mark
# or ellipsis. A question mark does ("Is vegan?" is not "Is vegan").
_QUOTE_PAIRS = {'"': '"', "'": "'", "`": "`", "\u201c": "\u201d", "\u2018": "\u2019", "\u00ab": "\u00bb"}
_CLOSING = " \t.,;:!\u2026\u3002"
# Compatibility forms that write another number than their plain digits: 10² is not 102, 3½ not 31 over 2.
_NUMBER_FORMS = ("<super>", "<sub>", "<fraction>")


def _compatible(text: str) -> str:
    """NFKC (fullwidth letters, ligatures and the like as their plain form), except superscripts,
    subscripts and vulgar fractions, which stay as written."""
    if text.isascii():
        return text
    if not any(unicodedata.decomposition(c).startswith(_NUMBER_FORMS) for c in text):
        return unicodedata.normalize("NFKC", text)
    kept = "".join(c if unicodedata.decomposition(c).startswith(_NUMBER_FORMS) else unicodedata.normalize("NFKC", c)
                   for c in text)
    return unicodedata.normalize("NFC", kept)


def clean_text(text: str) -> str:
    """``text`` as valid Unicode: surrogate pairs joined into their character, a lone surrogate
    (half of a UTF-16 pair, which no encoder, tokenizer or database accepts) and NUL (which
    PostgreSQL cannot store) replaced by U+FFFD.

    Example:
        >>> clean_text("ok \\ud83d\\ude00"), clean_text("bad \\ud800 x")
        ('ok 😀', 'bad \ufffd x')
    """
    if "\x00" in text:  # no database text type takes NUL (PostgreSQL refuses it): U+FFFD everywhere
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def canonical_text(content: str) -> str:
    """The form two wordings of the *same* fact share: Unicode-normalised (NFKC, but superscripts,
    subscripts and fractions kept), case-folded, whitespace collapsed, wrapping quotes and closing
    punctuation removed. Every word, number, symbol and negation is kept, so "Not allergic to
    peanuts", "C++ developer", "Moved in 2024", "Costs 10² dollars" or "Is 6' tall" never meet
    "Allergic to peanuts", "C developer", "Moved in 2023", "Costs 102 dollars" or "Is 6\" tall".

    Example:
        >>> canonical_text('  "Prefers   dark mode."  '), canonical_text("Writes C# code!")
        ('prefers dark mode', 'writes c# code')
        >>> canonical_text("Height is 6'"), canonical_text("Costs 10\u00b2.")
        ("height is 6'", 'costs 10²')
    """
    text = " ".join(_compatible(clean_text(content)).casefold().split())
    while True:
        before = text
        text = text.rstrip(_CLOSING).strip()
        if len(text) >= 2 and _QUOTE_PAIRS.get(text[0]) == text[-1]:
            text = text[1:-1].strip()
        if text == before:
            return text


def fingerprint(content: str) -> str:
    """A hash of :func:`canonical_text`: equal only for true repeats of a fact (case, spacing,
    wrapping quotes and closing punctuation aside); used to avoid storing or showing a memory twice.

    Example:
        >>> fingerprint("Prefers Go.") == fingerprint("prefers go")
        True
        >>> fingerprint("Allergic to peanuts") == fingerprint("Not allergic to peanuts")
        False
    """
    return hashlib.sha1(canonical_text(content).encode("utf-8")).hexdigest()


def query_terms(text: str, max_terms: int = 32) -> list[str]:
    """The distinct terms of a query, in order (at most ``max_terms``).

    Example:
        >>> query_terms('Where does "alice" work? NEAR(x*) AND 🚀 works')
        ['alic', 'work', 'near']
    """
    return list(dict.fromkeys(terms(text)))[:max_terms]


def select_terms(candidates: list[str], document_frequency: dict[str, int], postings_budget: int) -> list[str]:
    """The rarest terms whose matching rows add up to at most ``postings_budget``.

    Terms that match nothing are dropped; if even the rarest term matches more rows than the
    budget, no term is used (every term is then too common to rank by).

    Example:
        >>> select_terms(["alic", "work", "zebra"], {"alic": 40, "work": 5000}, 1000)
        ['alic']
    """
    chosen: list[str] = []
    total = 0
    for term in sorted((t for t in candidates if document_frequency.get(t)), key=document_frequency.__getitem__):
        total += document_frequency[term]
        if total > postings_budget:
            break
        chosen.append(term)
    return chosen


def idf(document_frequency: int, rows: int) -> float:
    """BM25's inverse document frequency of a term, as SQLite FTS5 computes it (never below 1e-6).

    Example:
        >>> round(idf(1, 100), 2), idf(90, 100)
        (4.19, 1e-06)
    """
    rows = max(rows, document_frequency)  # the row count may be a little stale
    value = math.log((rows - document_frequency + 0.5) / (document_frequency + 0.5))
    return value if value > 0 else 1e-6


def bm25(document: list[str], weights: Iterable[tuple[str, float]], average_length: float) -> float:
    """BM25 of a document (its indexed terms) for query terms with their IDFs, as SQLite FTS5's
    ``bm25()`` computes it (k1 = 1.2, b = 0.75, one column).

    Example:
        >>> round(bm25(["alic", "work", "googl"], [("googl", 2.0)], average_length=3.0), 3)
        2.0
    """
    if not document:
        return 0.0
    norm = 1.2 * (0.25 + 0.75 * len(document) / average_length) if average_length > 0 else 1.2
    score = 0.0
    for term, weight in weights:
        count = document.count(term)
        if count:
            score += weight * count * 2.2 / (count + norm)
    return score
