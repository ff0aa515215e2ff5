"""Hypothesis strategies for text a user, a model or an attacker might send."""

from __future__ import annotations

from hypothesis import strategies as st

FRAGMENTS = [
    '"', "'", "*", "NEAR(", "NEAR/3", "AND", "OR", "NOT", "^", ":", "(", ")", "{", "}", "-", "+", "col:",
    "\x00", "\x01", "\x07", "\x1b[31m", "\r\n", "\t", "\u2028", "\u202e", "\u200f", "\u200b", "\ufeff",
    "\ud800", "\udfff", "\ud83d", "\ude00", "\ud83d\ude00", "🚀", "👩‍👩‍👧", "é", "e\u0301", "ﬁ", "İ", "ß",
    "日本語", "עברית", "مرحبا", "<memory>", "</memory>", "<memories>", "[m1]", "%s", "{0}", "\\", "/*", "--",
    "'; DROP TABLE memories; --", "NaN", "null", "0x7f", "\U0010ffff", "\ufffd",
]

#: Any code point, surrogates and controls included.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=60)

#: Mixtures of hostile fragments, words and arbitrary code points.
hostile_text = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), any_text, st.sampled_from(["tea", "Lisbon", "2024", "C++", "not"])),
    max_size=12,
).map("".join)
