"""Reading the model's ``<memory>`` blocks out of its reply, whole or while it streams.

A reply may end (or, rarely, be interrupted) with blocks such as::

    <memory>{"memories": [{"content": "Prefers Go", "category": "preference"}]}</memory>

One scanner, :class:`StreamFilter`, decides what the caller sees; :func:`parse_reply` is that
scanner fed the whole reply at once, so a streamed reply and the same reply returned whole always
show the same text, however the stream was cut into pieces. What the caller sees is the reply
without its blocks:

* a block runs from an opening tag (``<memory>``, any case, a little whitespace allowed inside the
  tag) to the first closing tag, or to the end of the reply when it never closes (a reply cut off
  by ``max_tokens``); blocks do not nest, and a closing tag outside a block is removed too;
* whitespace right before a block goes with it, and so does a code fence opened just for the
  block (with its closing fence); a code block of the reply itself is never touched;
* once a block was removed, whitespace at the very start and end of what is left is removed;
* a reply that ends in what might be the start of a tag (``"hello <mem"``) keeps it, unless the
  model was cut off by its length limit (``cut=True``), when it is the start of a block.

Bad JSON in a block is logged and dropped, never raised; complete objects of a broken or cut-off
block are kept (trailing commas are removed outside strings only: a fact's text is never
touched). A closing tag written inside a fact's text still ends the block (known limit: reading
the JSON's strings to skip it would let one stray quote hide the rest of the reply).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from headroom_integrations.memory.models import MemoryCategory, MemoryScope

__all__ = ["ExtractedMemory", "ParsedReply", "StreamFilter", "parse_block", "parse_parts", "parse_reply"]

logger = logging.getLogger(__name__)

_WS = r"[ \t\r\n]{0,8}"  # whitespace allowed inside a tag: bounded, so a stream can hold a whole tag
_TAG = re.compile(rf"<{_WS}(?P<close>/{_WS})?memory{_WS}>", re.IGNORECASE)
_CLOSE_TAG = re.compile(rf"<{_WS}/{_WS}memory{_WS}>", re.IGNORECASE)
# A proper beginning of either tag (what a stream must hold back until it knows).
_TAG_START = re.compile(rf"<{_WS}(?:/{_WS})?(?:m(?:e(?:m(?:o(?:r(?:y{_WS})?)?)?)?)?)?\Z", re.IGNORECASE)
_TAG_HOLD = 40  # longer than any tag the patterns above accept
_FENCE_AFTER = re.compile(r"[ \t]*\n?[ \t]*```")
_FENCE_AFTER_START = re.compile(r"[ \t]*\n?[ \t]*`{0,2}\Z")
_FENCE_LINE = re.compile(r"^[ \t]{0,3}```", re.MULTILINE)
_INFO = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")
_CLOSER_NEXT = re.compile(r"\s*[}\]]")  # after a comma: it was a trailing one
_DEFAULT_IMPORTANCE = 0.5


@dataclass(frozen=True)
class ExtractedMemory:
    """One memory the model wrote in a block, validated and normalised.

    Example:
        >>> ExtractedMemory(content="Prefers Go", category=MemoryCategory.PREFERENCE).scope
        <MemoryScope.USER: 'user'>
    """

    content: str
    category: MemoryCategory = MemoryCategory.FACT
    scope: MemoryScope = MemoryScope.USER
    importance: float = _DEFAULT_IMPORTANCE
    supersedes: str | None = None


@dataclass(frozen=True)
class ParsedReply:
    """A reply with its memory blocks removed, and what they held.

    Attributes:
        text: the reply as the user should see it.
        memories: valid memories found in every block, in order.
        blocks: how many blocks (complete or cut off) were removed.

    Example:
        >>> ParsedReply("Hi").memories
        []
    """

    text: str
    memories: list[ExtractedMemory] = field(default_factory=list)
    blocks: int = 0


def _default_scope(category: MemoryCategory) -> MemoryScope:
    return MemoryScope.SESSION if category is MemoryCategory.CONTEXT else MemoryScope.USER


def _memory_from(item: Any) -> ExtractedMemory | None:
    """Validate one item of a block; None (with a log line) if it cannot be used."""
    if isinstance(item, str):
        item = {"content": item}
    if not isinstance(item, Mapping):
        logger.warning("memory block item ignored (not an object): %.200r", item)
        return None
    content = item.get("content")
    if not isinstance(content, str) or not content.strip():
        logger.warning("memory block item ignored (no content): %.200r", item)
        return None
    category = MemoryCategory.FACT
    if item.get("category") is not None:
        try:
            category = MemoryCategory.parse(item["category"])
        except ValueError:
            logger.warning("unknown memory category %.50r, using 'fact'", item["category"])
    scope = _default_scope(category)
    if item.get("scope") is not None:
        try:
            scope = MemoryScope.parse(item["scope"])
        except ValueError:
            logger.warning("unknown memory scope %.50r, using %r", item["scope"], scope.value)
    importance = _DEFAULT_IMPORTANCE
    try:
        if item.get("importance") is not None and not isinstance(item["importance"], bool):
            value = float(item["importance"])
            importance = min(1.0, max(0.0, value)) if value == value else _DEFAULT_IMPORTANCE  # NaN: default
    except (TypeError, ValueError, OverflowError):
        logger.warning("memory importance %.50r is not a number, using %s", item["importance"], importance)
    supersedes = item.get("supersedes")
    # a handle as the injected block writes it ("[m1]") or in capitals names the same memory
    supersedes = (supersedes.strip().strip("[]").strip().lower() or None) if isinstance(supersedes, str) else None
    return ExtractedMemory(content.strip(), category, scope, importance, supersedes)


def _items(payload: Any) -> list[Any]:
    if isinstance(payload, Mapping):
        if "memories" in payload:
            inner = payload["memories"]
            return list(inner) if isinstance(inner, list) else [inner]
        return [payload]  # a single memory object
    if isinstance(payload, list):
        return payload
    return [payload]


def _outside_strings(text: str) -> tuple[str, list[int]]:
    """``text`` without the trailing commas of its objects and arrays (``[1, 2,]``), and where
    each of its objects may start; both outside JSON strings, so no fact's text is touched."""
    kept: list[str] = []
    starts: list[int] = []
    in_string = escaped = False
    for position, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "," and _CLOSER_NEXT.match(text, position + 1):
            continue
        elif char == "{":
            starts.append(len(kept))
        kept.append(char)
    return "".join(kept), starts


def _salvage(body: str, starts: list[int]) -> list[Any]:
    """Complete JSON objects inside a broken or cut-off body (each decoded on its own, from the
    given starts): the items of a ``{"memories": [...]}`` payload, or a memory object."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    end = 0
    for position in starts:
        if position < end:
            continue  # inside an object already read
        try:
            value, end = decoder.raw_decode(body, position)
        except (ValueError, RecursionError):
            end = 0
            continue
        if isinstance(value, Mapping):
            found.extend(_items(value))
        else:
            end = 0
    return found


def parse_block(body: str, complete: bool = True) -> list[ExtractedMemory]:
    """Memories from one block body (the text between the tags). Never raises.

    Example:
        >>> [m.content for m in parse_block('{"memories": [{"content": "Likes tea",}],}')]
        ['Likes tea']
    """
    text = body.strip()
    if text.startswith("```"):
        text = re.sub(r"^```[a-zA-Z]*\s*", "", text)
        text = re.sub(r"\s*```$", "", text)
    if not text:
        return []
    try:
        items = _items(json.loads(text))
    except (ValueError, RecursionError):
        repaired, starts = _outside_strings(text)
        try:
            items = _items(json.loads(repaired))
        except (ValueError, RecursionError):
            items = _salvage(repaired, starts)
        if complete and not items:
            logger.warning("memory block is not valid JSON, dropped: %.200s", text)
        elif not complete:
            logger.info("memory block was cut off; kept %d complete item(s)", len(items))
    return [m for m in (_memory_from(item) for item in items) if m is not None]


def parse_reply(text: str | None, cut: bool = False) -> ParsedReply:
    """Remove every ``<memory>`` block from a whole reply and parse them (rules in the module doc).

    Args:
        text: the model's reply.
        cut: the model stopped at its length limit (``finish_reason == "length"``): a beginning
            of a tag at the very end is the beginning of a block and is removed too.

    Example:
        >>> parsed = parse_reply('Go is a fine choice.\\n\\n<memory>{"memories":[{"content":"Prefers Go"}]}</memory>')
        >>> parsed.text, [m.content for m in parsed.memories]
        ('Go is a fine choice.', ['Prefers Go'])
    """
    if not text:
        return ParsedReply(text or "")
    scanner = StreamFilter()
    shown = scanner.feed(text) + scanner.finish(cut)
    return ParsedReply(shown, scanner.memories(), scanner.blocks)


def parse_parts(parts: list[str]) -> tuple[list[str], list[ExtractedMemory]]:
    """The text parts of one reply (a message's text blocks, in order) without their ``<memory>``
    blocks, each part in its place, and the memories; a block may run from one part into the next.

    Example:
        >>> shown, found = parse_parts(["Sure.", ' <memory>{"content": "Likes tea"}</memory>'])
        >>> shown, [m.content for m in found]
        (['Sure.', ''], ['Likes tea'])
    """
    scanner = StreamFilter()
    shown = [scanner.feed(part) for part in parts]
    tail = scanner.finish()
    if shown:
        shown[-1] += tail
    return shown, scanner.memories()


def _fences(text: str, line_start: bool) -> int:
    """How many code-fence lines (```) ``text`` holds; ``line_start``: it starts a line."""
    return sum(1 for m in _FENCE_LINE.finditer(text) if m.start() > 0 or line_start)


class StreamFilter:
    """Strips ``<memory>`` blocks from text that arrives in pieces (rules in the module doc).

    :meth:`feed` returns what may be shown now: everything except a tail that might still turn
    into a block's beginning (whitespace, a code fence line, the first characters of a tag),
    which is held until that is decided. :meth:`finish` releases what is left. :attr:`text` is
    the whole raw reply; :meth:`memories` what its blocks held.

    Example:
        >>> f = StreamFilter()
        >>> "".join([f.feed("Sure!\\n<mem"), f.feed('ory>{"memories":[]}</mem'), f.feed("ory> Bye"), f.finish()])
        'Sure! Bye'
    """

    def __init__(self) -> None:
        self._raw: list[str] = []
        self._held = ""
        self._in_block = False
        self._fenced = False  # the block in progress was opened with a code fence of its own
        self._after_fence = False  # such a block just closed: its closing fence may follow
        self._body: list[str] = []
        self._shown = False  # visible text other than whitespace was released
        self._fences = 0  # code fences in the released text (odd: inside a code block of the reply)
        self._line_start = True  # the unread text starts a line of the raw reply (or the reply)
        self.bodies: list[tuple[str, bool]] = []  # (block body, whether its closing tag came)
        self.blocks = 0
        self.finished = False

    @property
    def text(self) -> str:
        """Everything fed so far, blocks included."""
        return "".join(self._raw)

    def memories(self, complete_only: bool = False) -> list[ExtractedMemory]:
        """The memories of the blocks seen so far (only of closed blocks with ``complete_only``)."""
        return [m for body, done in self.bodies if done or not complete_only for m in parse_block(body, done)]

    def feed(self, piece: str) -> str:
        """Take the next piece of the stream; return the text that can be released."""
        if not piece or self.finished:
            return ""
        self._raw.append(piece)
        buf = self._held + piece
        out: list[str] = []
        while buf:
            if self._in_block:
                close = _CLOSE_TAG.search(buf)
                if close is None:
                    keep = self._tag_start(buf)
                    self._body.append(buf[:keep])
                    buf = self._advance(buf, keep)
                    break
                self._body.append(buf[: close.start()])
                self._end_block(complete=True)
                buf = self._advance(buf, close.end())
                continue
            if self._after_fence:
                fence = _FENCE_AFTER.match(buf)
                if fence is not None:
                    buf = self._advance(buf, fence.end())
                elif _FENCE_AFTER_START.fullmatch(buf):
                    break  # could still become the block's closing fence
                self._after_fence = False
                continue
            if self.blocks and not self._shown:
                buf = self._advance(buf, len(buf) - len(buf.lstrip()))
                if not buf:
                    break
            tag = _TAG.search(buf)
            if tag is None:
                keep = self._hold_from(buf)
                out.append(self._emit(buf[:keep]))
                buf = self._advance(buf, keep)
                break
            before, fenced = self._before_block(buf[: tag.start()])
            out.append(self._emit(before))
            buf = self._advance(buf, tag.end())
            self.blocks += 1
            if tag.group("close") is None:
                self._in_block, self._fenced, self._body = True, fenced, []
        self._held = buf
        return "".join(out)

    def finish(self, cut: bool = False) -> str:
        """End of stream: release held text that never became a block; a block left open is
        swallowed. ``cut``: the model stopped at its length limit (see :func:`parse_reply`)."""
        if self.finished:
            return ""
        self.finished = True
        held, self._held = self._held, ""
        if self._in_block:
            self._body.append(held)
            self._end_block(complete=False)
            return ""
        if cut and self._tag_start(held) < len(held):  # a block's opening tag, cut off
            held, _ = self._before_block(held[: self._tag_start(held)])
            self.blocks += 1
        if self.blocks:
            held = held.rstrip()
            if not self._shown:
                held = held.lstrip()
        return self._emit(held)

    # -- helpers --------------------------------------------------------------------------------

    def _emit(self, text: str) -> str:
        """Release ``text``, a beginning of the unread text."""
        if text:
            self._fences += _fences(text, self._line_start)
            self._shown = self._shown or not text.isspace()
        return text

    def _advance(self, buf: str, count: int) -> str:
        """``buf`` without its first ``count`` characters (read: released, swallowed or held in a block)."""
        if count:
            self._line_start = buf[count - 1] == "\n"
        return buf[count:]

    def _end_block(self, complete: bool) -> None:
        self.bodies.append(("".join(self._body), complete))
        self._body = []
        self._in_block = False
        self._after_fence = self._fenced and complete

    @staticmethod
    def _tag_start(text: str) -> int:
        """Where a beginning of a tag at the end of ``text`` starts (``len(text)`` if none)."""
        lt = text.rfind("<", max(0, len(text) - _TAG_HOLD))
        return lt if lt != -1 and _TAG_START.match(text, lt) else len(text)

    def _fence_opener(self, text: str, end: int) -> int | None:
        """Start of a code-fence line (indent, ```, info string, spaces) ending at ``end``, if any.

        Only at the start of a line; a run of one or two backticks counts when nothing follows it
        (it may still grow into a fence).
        """
        info = end
        while info > 0 and text[info - 1] in _INFO:
            info -= 1
        ticks = info
        while ticks > 0 and text[ticks - 1] == "`":
            ticks -= 1
        run = info - ticks
        if not (run >= 3 or (run > 0 and info == end == len(text))):
            return None
        line = ticks
        while line > 0 and text[line - 1] in " \t" and ticks - line < 3:
            line -= 1
        at_line_start = text[line - 1] == "\n" if line > 0 else self._line_start
        return line if at_line_start else None

    def _hold_from(self, text: str) -> int:
        """Where the tail that might still become a block's beginning starts."""
        start = self._tag_start(text)
        start = len(text[:start].rstrip())
        fence = self._fence_opener(text, start)
        if fence is not None:
            start = len(text[:fence].rstrip())
        return start

    def _before_block(self, text: str) -> tuple[str, bool]:
        """The text before a block without its trailing whitespace and, if the block has a code
        fence of its own (one that does not close a code block of the reply), without that fence."""
        text = text.rstrip()
        fence = self._fence_opener(text, len(text))
        if (
            fence is not None
            and text[fence:].lstrip(" \t").startswith("```")
            and (self._fences + _fences(text[:fence], self._line_start)) % 2 == 0
        ):
            return text[:fence].rstrip(), True
        return text, False
