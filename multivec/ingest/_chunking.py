r"""Chunking: cut text and source code into pieces an encoder can take whole.

Every chunk is an exact slice of its source, ``source[char_start:char_end]``, so a hit points
back into the file. What the encoder sees is that slice with a short *prefix* in front of it:

* prose (plain text, Markdown, a JSONL record, a PDF page's text layer): the document title
  and the path of Markdown headings above the chunk, e.g. ``"Guide > Install > From source"``
  followed by a blank line;
* Python: the signatures of the enclosing class or function when a large definition is split,
  so ``"class Store:\n"`` followed by one of its methods still parses as Python.

Sizes are counted in the encoder's own tokens through a :data:`TokenCounter`, a callable
``count(text) -> int`` that includes the special tokens the encoder adds.
:func:`token_counter` builds one for an encoder, and falls back to :func:`estimate_tokens`, a
deliberate over-estimate, when the encoder offers no tokenizer.

Prose is packed sentence by sentence up to ``max_tokens``, optionally with ``overlap`` tokens
of trailing sentences repeated at the start of the next chunk. A sentence longer than the limit
is split between words (a single over-long "word" between characters); nothing is dropped.

Python is chunked along its syntax tree (the standard library's :mod:`ast`): each top-level
function and class is a chunk, with the comments and decorators just above it; runs of other
module-level statements are packed into their own chunks. A definition over the limit is split
between the statements of its body (methods of a class, statements of a function), never
inside a statement, with its signature carried in the prefix. A single statement over the limit
stays whole and is flagged ``oversize`` (the encoder truncates it). Source that does not parse,
and code in other languages, is cut at blank lines instead (:func:`chunk_lines`).
"""

from __future__ import annotations

import ast
import bisect
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multivec.errors import InvalidInputError

__all__ = [
    "Chunk",
    "TokenCounter",
    "chunk_lines",
    "chunk_python",
    "chunk_text",
    "estimate_tokens",
    "token_counter",
]

TokenCounter = Callable[[str], int]
"""``count(text) -> int``: the number of tokens an encoder turns ``text`` into, special tokens
included."""

# Sentence ends: terminal punctuation, then closing quotes or brackets, then whitespace.
_SENTENCE_END = re.compile("[.!?\u3002\uff01\uff1f]+[\"'\u201d\u2019)\\]]*(?=\\s)")
_WORD = re.compile(r"\S+")
_BLANK_LINE = re.compile(r"\n[ \t\r]*\n")
_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
# Markdown blocks whose lines are units of their own rather than running prose.
_LINE_BLOCK = re.compile(r"^ {0,3}([-*+]\s|\d+[.)]\s|\||>)|^( {4}|\t)")
# Characters per token below which no real tokenizer goes for text in general: WordPiece and
# BPE vocabularies average 3.5 to 4.5 bytes per token on English, and one token per character
# (3 UTF-8 bytes) on CJK text.
_ESTIMATE_BYTES_PER_TOKEN = 3
_ESTIMATE_SPECIAL_TOKENS = 2
_DEFAULT_MAX_TOKENS = 512


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a document, as stored and as encoded.

    Attributes:
        text: The exact slice of the source, ``source[char_start:char_end]``.
        char_start: Offset of the slice's first character in the source string.
        char_end: Offset just past its last character.
        line_start: First line of the slice, counted from 1.
        line_end: Last line of the slice, counted from 1.
        prefix: Context put before ``text`` for the encoder: title and heading path for prose,
            enclosing signatures for code; ``""`` when there is none.
        metadata: What else the chunker knows: ``heading`` (the heading path), ``symbol`` and
            ``symbol_kind`` for code, ``oversize`` when a piece could not be cut below the
            limit, ``fallback`` when code was chunked by lines (and why).
    """

    text: str
    char_start: int
    char_end: int
    line_start: int
    line_end: int
    prefix: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def embed_text(self) -> str:
        """What the encoder sees: ``prefix + text``."""
        return self.prefix + self.text


def estimate_tokens(text: str) -> int:
    """A conservative token count for encoders that offer no tokenizer.

    One token per three UTF-8 bytes, plus two special tokens: more than WordPiece or BPE
    tokenizers give for prose in any script, so chunks sized with it fit the real limit.

    Args:
        text: Any text.

    Returns:
        The estimated number of tokens.

    Example:
        >>> estimate_tokens("late interaction")
        8
    """
    return math.ceil(len(text.encode("utf-8")) / _ESTIMATE_BYTES_PER_TOKEN) + (
        _ESTIMATE_SPECIAL_TOKENS
    )


def _tokenizer_counter(tokenizer: Any) -> TokenCounter:
    """Count with a clone of a HuggingFace ``tokenizers.Tokenizer``, without its truncation."""
    import tokenizers

    clone = tokenizers.Tokenizer.from_str(tokenizer.to_str())
    clone.no_truncation()
    clone.no_padding()

    def count(text: str) -> int:
        return len(clone.encode(text).ids)

    return count


def _find_tokenizer(encoder: object) -> Any:
    """A ``tokenizers.Tokenizer`` inside a known encoder, or ``None``."""
    model_dir = getattr(encoder, "model_dir", None)
    if isinstance(model_dir, Path) and (model_dir / "tokenizer.json").is_file():
        import tokenizers

        return tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    # fastembed keeps its tokenizer on the inner model object.
    for owner in (encoder, getattr(encoder, "model", None)):
        tokenizer = getattr(owner, "tokenizer", None)
        if tokenizer is not None and hasattr(tokenizer, "to_str"):
            return tokenizer
    return None


def token_counter(encoder: object) -> tuple[TokenCounter, int | None]:
    """The token counter and input limit of an encoder, as far as it tells.

    The counter is, by preference: the encoder's own ``count_tokens(text)`` method; a
    HuggingFace tokenizer found on it (:class:`~multivec.ingest.OnnxLateInteractionEncoder`'s
    ``tokenizer.json``, fastembed's ``model.tokenizer``), cloned without truncation or padding;
    else :func:`estimate_tokens`. The limit is the encoder's ``max_length`` attribute, else the
    tokenizer's truncation length, else ``None``.

    Args:
        encoder: Any encoder object.

    Returns:
        ``(count, limit)``.
    """
    limit = getattr(encoder, "max_length", None)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        limit = None
    own = getattr(encoder, "count_tokens", None)
    if callable(own):
        return own, limit
    tokenizer = None
    try:
        tokenizer = _find_tokenizer(encoder)
    except Exception:  # an unreadable or foreign tokenizer: estimate instead of failing
        tokenizer = None
    if tokenizer is None:
        return estimate_tokens, limit
    if limit is None:
        truncation = getattr(tokenizer, "truncation", None)
        if isinstance(truncation, dict) and isinstance(truncation.get("max_length"), int):
            limit = int(truncation["max_length"])
    try:
        return _tokenizer_counter(tokenizer), limit
    except Exception:  # a tokenizer that cannot be cloned: estimate
        return estimate_tokens, limit


def resolve_max_tokens(max_tokens: int | None, limit: int | None) -> int:
    """The chunk size to use: ``max_tokens`` checked against the model's ``limit``.

    Args:
        max_tokens: The requested size, or ``None`` for the model's limit (512 if unknown).
        limit: The model's input limit, when known.

    Returns:
        The size.

    Raises:
        InvalidInputError: ``max_tokens`` is below 8 or above the model's limit.
    """
    if max_tokens is None:
        return limit if limit is not None else _DEFAULT_MAX_TOKENS
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 8:
        raise InvalidInputError(f"max_tokens must be an integer of at least 8, got {max_tokens!r}")
    if limit is not None and max_tokens > limit:
        raise InvalidInputError(
            f"max_tokens={max_tokens} exceeds the encoder's limit of {limit} tokens; "
            f"use at most {limit}"
        )
    return max_tokens


# --- positions ---------------------------------------------------------------------------------


class _Lines:
    """Line numbers of character offsets in one source string."""

    def __init__(self, source: str) -> None:
        self.starts = [0] + [m.end() for m in re.finditer("\n", source)]
        self.length = len(source)

    def line_of(self, offset: int) -> int:
        """The 1-based line holding the character at ``offset``."""
        return bisect.bisect_right(self.starts, offset)

    def start(self, line: int) -> int:
        """Offset of the first character of 1-based ``line``."""
        return self.starts[line - 1]

    def end(self, line: int) -> int:
        """Offset just past 1-based ``line``, its newline included."""
        return self.starts[line] if line < len(self.starts) else self.length


def _make_chunk(
    source: str, lines: _Lines, start: int, end: int, prefix: str, metadata: dict[str, Any]
) -> Chunk:
    return Chunk(
        text=source[start:end],
        char_start=start,
        char_end=end,
        line_start=lines.line_of(start),
        line_end=lines.line_of(max(start, end - 1)),
        prefix=prefix,
        metadata=dict(metadata),
    )


# --- packing spans under a token budget ----------------------------------------------------------


class _Budget:
    """Counts tokens of spans of one source, relative to a fixed prefix."""

    def __init__(self, source: str, prefix: str, count: TokenCounter, max_tokens: int) -> None:
        self.source = source
        self.prefix = prefix
        self.count = count
        self.max_tokens = max_tokens

    def fits(self, start: int, end: int) -> bool:
        return self.count(self.prefix + self.source[start:end]) <= self.max_tokens

    def tokens(self, start: int, end: int) -> int:
        return self.count(self.source[start:end])


def _split_long(budget: _Budget, start: int, end: int) -> list[tuple[int, int]]:
    """Cut one span that is over the budget at word boundaries (at characters for one word)."""
    words = [(start + m.start(), start + m.end()) for m in _WORD.finditer(budget.source[start:end])]
    pieces: list[tuple[int, int]] = []
    i = 0
    while i < len(words):
        # The longest run of words from i that fits, by bisection on its length.
        lo, hi = 1, len(words) - i
        if not budget.fits(words[i][0], words[i][1]):
            pieces.extend(_split_chars(budget, *words[i]))
            i += 1
            continue
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if budget.fits(words[i][0], words[i + mid - 1][1]):
                lo = mid
            else:
                hi = mid - 1
        pieces.append((words[i][0], words[i + lo - 1][1]))
        i += lo
    return pieces


def _split_chars(budget: _Budget, start: int, end: int) -> list[tuple[int, int]]:
    pieces: list[tuple[int, int]] = []
    while start < end:
        lo, hi = 1, end - start
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if budget.fits(start, start + mid):
                lo = mid
            else:
                hi = mid - 1
        pieces.append((start, start + lo))
        start += lo
    return pieces


def _pack(
    units: Sequence[tuple[int, int]], budget: _Budget, overlap: int
) -> list[tuple[int, int, bool]]:
    """Greedily pack consecutive spans into chunks within the budget.

    Returns ``(start, end, oversize)`` per chunk, where ``oversize`` marks a single unit that
    is over the budget on its own (callers split those beforehand when they may).
    """
    if not units:
        return []
    specials = budget.count("")
    prefix_tokens = budget.count(budget.prefix) - specials
    sizes = [max(0, budget.tokens(s, e) - specials) for s, e in units]
    chunks: list[tuple[int, int, bool]] = []
    first = must = 0
    while first < len(units):
        total = specials + prefix_tokens + sum(sizes[first : must + 1])
        last = max(first, must)
        while last + 1 < len(units) and total + sizes[last + 1] <= budget.max_tokens:
            last += 1
            total += sizes[last]
        # Token counts of parts do not add up exactly; the real count has the last word.
        while last > must and not budget.fits(units[first][0], units[last][1]):
            last -= 1
        oversize = last == first and not budget.fits(*units[first])
        chunks.append((units[first][0], units[last][1], oversize))
        if last + 1 >= len(units):
            break
        must = last + 1
        back = must
        if overlap > 0:
            # Repeat trailing units of this chunk (at most `overlap` tokens) in the next one,
            # always moving forward by at least one unit.
            carried = 0
            while back - 1 > first and carried + sizes[back - 1] <= overlap:
                back -= 1
                carried += sizes[back]
            while back < must and not budget.fits(units[back][0], units[must][1]):
                back += 1
        first = back
    return chunks


# --- prose ----------------------------------------------------------------------------------------


def _sentences(source: str, start: int, end: int) -> list[tuple[int, int]]:
    """Sentence spans inside ``source[start:end]``, trimmed of surrounding whitespace."""
    spans: list[tuple[int, int]] = []
    cursor = start
    for match in _SENTENCE_END.finditer(source, start, end):
        spans.append((cursor, match.end()))
        cursor = match.end()
    spans.append((cursor, end))
    trimmed = []
    for s, e in spans:
        piece = source[s:e]
        lead = len(piece) - len(piece.lstrip())
        tail = len(piece) - len(piece.rstrip())
        if e - tail > s + lead:
            trimmed.append((s + lead, e - tail))
    return trimmed


@dataclass
class _Section:
    headings: tuple[str, ...]
    start: int
    end: int
    fences: list[tuple[int, int]] = field(default_factory=list)


def _markdown_sections(source: str, lines: _Lines) -> list[_Section]:
    """Split Markdown at ATX headings (``#`` to ``######``) outside fenced code."""
    sections = [_Section((), 0, len(source))]
    stack: list[tuple[int, str]] = []
    fence: str | None = None
    fence_start = 0
    for number, line_start in enumerate(lines.starts, start=1):
        line_end = lines.end(number)
        line = source[line_start:line_end].rstrip("\r\n")
        fence_match = _FENCE.match(line)
        if fence is not None:
            if (
                fence_match
                and fence_match.group(1)[0] == fence[0]
                and len(fence_match.group(1)) >= len(fence)
            ):
                sections[-1].fences.append((fence_start, line_end))
                fence = None
            continue
        if fence_match:
            fence, fence_start = fence_match.group(1), line_start
            continue
        heading = _ATX_HEADING.match(line)
        if heading is None:
            continue
        level, title = len(heading.group(1)), heading.group(2).strip()
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        sections[-1].end = line_start
        sections.append(_Section(tuple(t for _, t in stack if t), line_end, len(source)))
    if fence is not None:  # an unclosed fence runs to the end of the file
        sections[-1].fences.append((fence_start, len(source)))
    return sections


def _blocks(source: str, section: _Section) -> list[tuple[int, int, bool]]:
    """Blocks of a section: ``(start, end, is_code)``, split at blank lines outside fences."""
    blocks: list[tuple[int, int, bool]] = []
    cursor = section.start
    for fence_start, fence_end in [*section.fences, (section.end, section.end)]:
        prose_end = min(fence_start, section.end)
        for match in _BLANK_LINE.finditer(source, cursor, prose_end):
            blocks.append((cursor, match.start(), False))
            cursor = match.end()
        blocks.append((cursor, prose_end, False))
        if fence_start < section.end:
            blocks.append((fence_start, min(fence_end, section.end), True))
        cursor = max(cursor, min(fence_end, section.end))
    out = []
    for s, e, code in blocks:
        piece = source[s:e]
        lead = len(piece) - len(piece.lstrip())
        tail = len(piece) - len(piece.rstrip())
        if e - tail > s + lead:
            out.append((s + lead, e - tail, code))
    return out


def _line_spans(source: str, start: int, end: int) -> list[tuple[int, int]]:
    spans = []
    cursor = start
    for match in re.finditer("\n", source[start:end]):
        stop = start + match.start()
        if source[cursor:stop].strip():
            spans.append((cursor, stop))
        cursor = start + match.end()
    if source[cursor:end].strip():
        spans.append((cursor, end))
    return spans


def _prefix(parts: Iterable[str]) -> str:
    text = " > ".join(p for p in parts if p)
    return f"{text}\n\n" if text else ""


def _fit_prefix(prefix: str, count: TokenCounter, max_tokens: int) -> str:
    # A title or heading path taking over half the budget would leave too little for text.
    return prefix if count(prefix) <= max_tokens // 2 else ""


def chunk_text(
    text: str,
    *,
    count_tokens: TokenCounter = estimate_tokens,
    max_tokens: int = _DEFAULT_MAX_TOKENS,
    overlap: int = 0,
    title: str = "",
    markdown: bool = False,
) -> list[Chunk]:
    r"""Cut prose into chunks of whole sentences that fit ``max_tokens``.

    Paragraphs (blocks between blank lines) are split into sentences, and sentences are packed
    greedily. In Markdown, ATX headings (``#`` to ``######``) start new sections; each chunk's
    prefix is ``title > heading > subheading`` and a blank line, and its ``heading`` metadata
    is that path without the title. Fenced code blocks, list items, table rows and quotes are
    kept as lines rather than cut into sentences. Setext headings (underlined with ``===``) are
    read as plain text.

    Args:
        text: The document.
        count_tokens: The encoder's token counter (see :func:`token_counter`).
        max_tokens: Most tokens per chunk, prefix and special tokens included.
        overlap: Tokens of trailing sentences of a chunk repeated at the start of the next
            one, within a section; 0 for none.
        title: The document title, carried into every chunk's prefix.
        markdown: Read headings and Markdown blocks.

    Returns:
        The chunks, in document order; none for blank text.

    Raises:
        InvalidInputError: ``max_tokens`` or ``overlap`` is out of range.

    Example:
        >>> doc = "# Setup\n\nInstall it. Then run it.\n\n## Tests\n\nRun pytest."
        >>> [(c.metadata["heading"], c.text) for c in chunk_text(doc, markdown=True)]
        [('Setup', 'Install it. Then run it.'), ('Setup > Tests', 'Run pytest.')]
    """
    _check_sizes(max_tokens, overlap)
    lines = _Lines(text)
    sections = _markdown_sections(text, lines) if markdown else [_Section((), 0, len(text))]
    chunks: list[Chunk] = []
    for section in sections:
        prefix = _fit_prefix(_prefix((title, *section.headings)), count_tokens, max_tokens)
        budget = _Budget(text, prefix, count_tokens, max_tokens)
        units: list[tuple[int, int]] = []
        for start, end, is_code in _blocks(text, section):
            if is_code and budget.fits(start, end):
                units.append((start, end))
            elif is_code or (markdown and _LINE_BLOCK.match(text[start:end])):
                units.extend(_line_spans(text, start, end))
            else:
                units.extend(_sentences(text, start, end))
        split: list[tuple[int, int]] = []
        for start, end in units:
            split.extend(
                [(start, end)] if budget.fits(start, end) else _split_long(budget, start, end)
            )
        metadata: dict[str, Any] = {}
        if markdown and section.headings:
            metadata["heading"] = " > ".join(section.headings)
        for start, end, oversize in _pack(split, budget, overlap):
            extra = {"oversize": True} if oversize else {}
            chunks.append(_make_chunk(text, lines, start, end, prefix, {**metadata, **extra}))
    return chunks


def _check_sizes(max_tokens: int, overlap: int) -> None:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 8:
        raise InvalidInputError(f"max_tokens must be an integer of at least 8, got {max_tokens!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise InvalidInputError(f"overlap must be a non-negative integer, got {overlap!r}")
    if overlap >= max_tokens // 2:
        raise InvalidInputError(
            f"overlap={overlap} must be under half of max_tokens={max_tokens}, or chunks would "
            "mostly repeat each other"
        )


# --- code -------------------------------------------------------------------------------------


def chunk_lines(
    source: str,
    *,
    count_tokens: TokenCounter = estimate_tokens,
    max_tokens: int = _DEFAULT_MAX_TOKENS,
    fallback: str | None = None,
) -> list[Chunk]:
    """Cut code into chunks at blank lines, for languages without a syntax-aware chunker.

    Blocks between blank lines are packed greedily; a block over the limit is cut between
    lines, and a line over the limit between words.

    Args:
        source: The file's text.
        count_tokens: The encoder's token counter.
        max_tokens: Most tokens per chunk, special tokens included.
        fallback: Why lines were used (e.g. a syntax error), stored as ``fallback`` metadata.

    Returns:
        The chunks, in file order.
    """
    _check_sizes(max_tokens, 0)
    lines = _Lines(source)
    budget = _Budget(source, "", count_tokens, max_tokens)
    units: list[tuple[int, int]] = []
    section = _Section((), 0, len(source))
    for start, end, _ in _blocks(source, section):
        if budget.fits(start, end):
            units.append((start, end))
            continue
        for line_start, line_end in _line_spans(source, start, end):
            if budget.fits(line_start, line_end):
                units.append((line_start, line_end))
            else:
                units.extend(_split_long(budget, line_start, line_end))
    metadata: dict[str, Any] = {"symbol_kind": "lines"}
    if fallback:
        metadata["fallback"] = fallback
    return [
        _make_chunk(source, lines, s, e, "", {**metadata, **({"oversize": True} if o else {})})
        for s, e, o in _pack(units, budget, 0)
    ]


_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@dataclass
class _Unit:
    """Whole lines ``first..last`` (1-based) covering one statement and the comments above it."""

    first: int
    last: int
    node: ast.stmt


def _statement_units(
    body: Sequence[ast.stmt], first_line: int, lines: _Lines, source: str
) -> list[_Unit]:
    """Line ranges of a body's statements; comments above a statement go with it.

    Statements that share a line (``a = 1; b = 2``) are merged, so no cut falls inside a line.
    """
    units: list[_Unit] = []
    cursor = first_line
    for node in body:
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        end = node.end_lineno or node.lineno
        if units and start <= units[-1].last:
            # Only simple statements share a line; the merged unit stays a simple one.
            units[-1].last = max(units[-1].last, end)
            continue
        # Skip blank lines between the previous statement and this one's leading comments.
        line = max(cursor, 1)
        while line < start and not source[lines.start(line) : lines.end(line)].strip():
            line += 1
        units.append(_Unit(line, end, node))
        cursor = end + 1
    return units


class _PythonChunker:
    def __init__(self, source: str, count: TokenCounter, max_tokens: int) -> None:
        self.source = source
        self.lines = _Lines(source)
        self.count = count
        self.max_tokens = max_tokens
        self.chunks: list[Chunk] = []

    def span(self, first: int, last: int) -> tuple[int, int]:
        return self.lines.start(first), self.lines.end(last)

    def fits(self, prefix: str, first: int, last: int) -> bool:
        start, end = self.span(first, last)
        return self.count(prefix + self.source[start:end]) <= self.max_tokens

    def emit(self, prefix: str, first: int, last: int, metadata: dict[str, Any]) -> None:
        start, end = self.span(first, last)
        self.chunks.append(_make_chunk(self.source, self.lines, start, end, prefix, metadata))

    def body(self, units: list[_Unit], prefix: str, owner: str, owner_kind: str) -> None:
        """Chunk a list of statements: definitions alone, other runs packed together."""
        run: list[_Unit] = []
        for unit in units:
            if isinstance(unit.node, _DEFINITIONS):
                self.run(run, prefix, owner, owner_kind)
                run = []
                self.definition(unit, unit.node, prefix, owner, owner_kind)
            else:
                run.append(unit)
        self.run(run, prefix, owner, owner_kind)

    def run(self, units: list[_Unit], prefix: str, owner: str, owner_kind: str) -> None:
        if not units:
            return
        budget = _Budget(self.source, prefix, self.count, self.max_tokens)
        spans = [self.span(u.first, u.last) for u in units]
        for start, end, oversize in _pack(spans, budget, 0):
            metadata: dict[str, Any] = {"symbol": owner, "symbol_kind": owner_kind}
            if oversize:
                metadata["oversize"] = True
            self.chunks.append(_make_chunk(self.source, self.lines, start, end, prefix, metadata))

    def definition(
        self,
        unit: _Unit,
        node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef,
        prefix: str,
        owner: str,
        owner_kind: str,
    ) -> None:
        name = f"{owner}.{node.name}" if owner != "<module>" else node.name
        if isinstance(node, ast.ClassDef):
            kind = "class"
        else:
            kind = "method" if owner_kind == "class" else "function"
        metadata: dict[str, Any] = {"symbol": name, "symbol_kind": kind}
        if self.fits(prefix, unit.first, unit.last):
            self.emit(prefix, unit.first, unit.last, metadata)
            return
        body_first = node.body[0].lineno
        decorators = [d.lineno for d in node.decorator_list]
        head_last = body_first - 1
        if head_last < min([node.lineno, *decorators]):
            # `def f(): return 1` on one line: nothing to split between.
            self.emit(prefix, unit.first, unit.last, {**metadata, "oversize": True})
            return
        head_start, head_end = self.span(unit.first, head_last)
        header = prefix + self.source[head_start:head_end]
        units = _statement_units(node.body, head_last + 1, self.lines, self.source)
        # Trailing comments inside the definition stay with its last statement.
        units[-1].last = max(units[-1].last, unit.last)
        self.body(units, header, name, kind)


def chunk_python(
    source: str,
    *,
    count_tokens: TokenCounter = estimate_tokens,
    max_tokens: int = _DEFAULT_MAX_TOKENS,
) -> list[Chunk]:
    r"""Cut Python source into chunks along its syntax tree.

    Each top-level function and class is one chunk (with its decorators, signature, docstring
    and the comments just above it), and runs of other module-level statements are packed
    into chunks of their own. A definition over the limit is split between the statements of
    its body: methods stand alone, and other statements are packed; every piece carries the
    signatures of its enclosing definitions as its prefix, so ``chunk.embed_text`` parses on
    its own. Chunks cover whole lines; ``symbol`` metadata is the qualified name
    (``Store.upsert``), or ``<module>`` for module-level code, and ``symbol_kind`` one of
    ``function``, ``class``, ``method``, ``module``.

    Source that does not parse is chunked by :func:`chunk_lines`, with ``fallback`` metadata
    naming the syntax error.

    Args:
        source: The module's text.
        count_tokens: The encoder's token counter.
        max_tokens: Most tokens per chunk, prefix and special tokens included.

    Returns:
        The chunks, in file order.

    Example:
        >>> code = "import os\n\n\ndef home():\n    return os.getcwd()\n"
        >>> [(c.metadata["symbol"], c.line_start, c.line_end) for c in chunk_python(code)]
        [('<module>', 1, 1), ('home', 4, 5)]
    """
    _check_sizes(max_tokens, 0)
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as exc:  # ValueError: NUL bytes in the source
        where = f" at line {exc.lineno}" if isinstance(exc, SyntaxError) and exc.lineno else ""
        reason = f"Python syntax error{where}: {getattr(exc, 'msg', None) or exc}"
        return chunk_lines(
            source, count_tokens=count_tokens, max_tokens=max_tokens, fallback=reason
        )
    chunker = _PythonChunker(source, count_tokens, max_tokens)
    units = _statement_units(tree.body, 1, chunker.lines, source)
    if units:
        # Comments after the last statement stay with it.
        last_line = chunker.lines.line_of(max(0, len(source.rstrip()) - 1))
        units[-1].last = max(units[-1].last, last_line)
    elif source.strip():  # only comments: nothing for the tree to say
        return chunk_lines(source, count_tokens=count_tokens, max_tokens=max_tokens)
    chunker.body(units, "", "<module>", "module")
    return chunker.chunks
