"""Streaming readers for corpora in the BEIR layout.

A BEIR dataset is a folder holding ``corpus.jsonl`` (one JSON object per line with ``_id``,
``title`` and ``text``), ``queries.jsonl`` (``_id`` and ``text``) and ``qrels/<split>.tsv``
(``query-id``, ``corpus-id`` and ``score``, tab-separated, with a header line). The readers
here yield one small record per line and never hold the whole file, so a corpus of any size
can be piped straight into an encoder.

A malformed line raises :class:`~multivec.errors.InvalidInputError` whose message starts with
``path:line:``, the form editors and terminals turn into a link.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multivec.errors import InvalidInputError

__all__ = [
    "CorpusRecord",
    "QrelRecord",
    "QueryRecord",
    "iter_beir_corpus",
    "iter_beir_qrels",
    "iter_beir_queries",
    "load_beir_qrels",
]


@dataclass(frozen=True, slots=True)
class CorpusRecord:
    """One corpus document.

    Attributes:
        id: The document id (``_id``), always a string.
        title: The title, ``""`` when the line has none.
        text: The body text.
        metadata: Any other keys of the line, untouched.
    """

    id: str
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QueryRecord:
    """One query.

    Attributes:
        id: The query id (``_id``), always a string.
        text: The query text.
        metadata: Any other keys of the line, untouched.
    """

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QrelRecord:
    """One relevance judgement: ``doc_id`` has relevance ``score`` for ``query_id``."""

    query_id: str
    doc_id: str
    score: int


def _error(path: Path, line_no: int, problem: str) -> InvalidInputError:
    return InvalidInputError(f"{path}:{line_no}: {problem}")


def _iter_json_objects(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for every non-blank line of a JSONL file."""
    file = Path(path)
    # utf-8-sig: some exporters write a byte-order mark that json.loads would reject.
    with file.open(encoding="utf-8-sig") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _error(
                    file, line_no, f"not valid JSON ({exc.msg} at column {exc.colno})"
                ) from exc
            if not isinstance(obj, dict):
                raise _error(file, line_no, f"expected a JSON object, got {type(obj).__name__}")
            yield line_no, obj


def _required_id(obj: dict[str, Any], path: Path, line_no: int) -> str:
    if "_id" not in obj:
        raise _error(path, line_no, 'missing "_id"')
    value = obj["_id"]
    # Some BEIR exports write numeric ids; they are the same ids as their decimal strings.
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _error(
            path, line_no, f'"_id" must be a string or an integer, got {type(value).__name__}'
        )
    text = str(value)
    if not text:
        raise _error(path, line_no, '"_id" is empty')
    return text


def _string_field(
    obj: dict[str, Any], key: str, path: Path, line_no: int, *, required: bool
) -> str:
    if key not in obj or obj[key] is None:
        if required:
            raise _error(path, line_no, f'missing "{key}"')
        return ""
    value = obj[key]
    if not isinstance(value, str):
        raise _error(path, line_no, f'"{key}" must be a string, got {type(value).__name__}')
    return value


def iter_beir_corpus(path: str | os.PathLike[str]) -> Iterator[CorpusRecord]:
    """Stream the documents of a BEIR ``corpus.jsonl``.

    Args:
        path: The JSONL file.

    Yields:
        One :class:`CorpusRecord` per non-blank line, in file order.

    Raises:
        InvalidInputError: A line is not a JSON object, lacks ``_id`` or ``text``, or has a
            field of the wrong type; the message starts with ``path:line:``.
        FileNotFoundError: The file does not exist.
    """
    file = Path(path)
    for line_no, obj in _iter_json_objects(file):
        doc_id = _required_id(obj, file, line_no)
        title = _string_field(obj, "title", file, line_no, required=False)
        text = _string_field(obj, "text", file, line_no, required=True)
        extra = {k: v for k, v in obj.items() if k not in ("_id", "title", "text")}
        yield CorpusRecord(id=doc_id, title=title, text=text, metadata=extra)


def iter_beir_queries(path: str | os.PathLike[str]) -> Iterator[QueryRecord]:
    """Stream the queries of a BEIR ``queries.jsonl``.

    Args:
        path: The JSONL file.

    Yields:
        One :class:`QueryRecord` per non-blank line, in file order.

    Raises:
        InvalidInputError: A line is not a JSON object, lacks ``_id`` or ``text``, or has a
            field of the wrong type; the message starts with ``path:line:``.
        FileNotFoundError: The file does not exist.
    """
    file = Path(path)
    for line_no, obj in _iter_json_objects(file):
        query_id = _required_id(obj, file, line_no)
        text = _string_field(obj, "text", file, line_no, required=True)
        extra = {k: v for k, v in obj.items() if k not in ("_id", "text")}
        yield QueryRecord(id=query_id, text=text, metadata=extra)


def iter_beir_qrels(path: str | os.PathLike[str]) -> Iterator[QrelRecord]:
    """Stream the judgements of a BEIR qrels TSV file.

    The first line is skipped when it is the usual ``query-id  corpus-id  score`` header (any
    first line whose score column is not an integer counts as a header). Four-column TREC
    files (``query-id  iteration  corpus-id  score``) are read too.

    Args:
        path: The TSV file, e.g. ``qrels/test.tsv``.

    Yields:
        One :class:`QrelRecord` per non-blank line, in file order.

    Raises:
        InvalidInputError: A line has neither three nor four tab-separated columns, or a score
            that is not an integer; the message starts with ``path:line:``.
        FileNotFoundError: The file does not exist.
    """
    file = Path(path)
    with file.open(encoding="utf-8-sig") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            columns = line.rstrip("\r\n").split("\t")
            if len(columns) == 3:
                query_id, doc_id, raw_score = columns
            elif len(columns) == 4:
                # TREC layout: query id, an unused iteration column, document id, score.
                query_id, _, doc_id, raw_score = columns
            else:
                raise _error(file, line_no, f"expected 3 tab-separated columns, got {len(columns)}")
            try:
                score = int(raw_score)
            except ValueError as exc:
                if line_no == 1:
                    continue  # the header line
                raise _error(file, line_no, f"score {raw_score!r} is not an integer") from exc
            if not query_id or not doc_id:
                raise _error(file, line_no, "empty query id or document id")
            yield QrelRecord(query_id=query_id, doc_id=doc_id, score=score)


def load_beir_qrels(path: str | os.PathLike[str]) -> dict[str, dict[str, int]]:
    """Read a qrels TSV file into the ``{query_id: {doc_id: score}}`` form evaluators use.

    Args:
        path: The TSV file, e.g. ``qrels/test.tsv``.

    Returns:
        The judgements by query id, queries in order of first appearance.

    Raises:
        InvalidInputError: A malformed line, as for :func:`iter_beir_qrels`.
        FileNotFoundError: The file does not exist.
    """
    qrels: dict[str, dict[str, int]] = {}
    for record in iter_beir_qrels(path):
        qrels.setdefault(record.query_id, {})[record.doc_id] = record.score
    return qrels
