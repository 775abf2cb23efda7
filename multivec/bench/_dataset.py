"""Benchmark datasets: token vectors of documents and queries, plus relevance judgements.

A :class:`Dataset` holds everything a benchmark run needs, already encoded. It comes from:

* a BEIR folder and an encoder (:func:`load_beir`): the corpus is encoded once and cached, keyed
  by the dataset's files, the model id and the encoder settings, so a second run with the same
  inputs reads the cache instead of encoding again;
* a folder of precomputed vectors (:func:`load_vectors`), in the same on-disk format as the cache.

The vectors folder format (``multivec-bench-vectors/1``), written by :func:`save_vectors`::

    meta.json           {"format": "multivec-bench-vectors/1", "name": ..., "model_id": ...,
                         "dim": ..., "n_docs": ..., "n_queries": ..., ...}; written last, so
                         its presence marks a complete folder
    doc_tokens.npy      (total document tokens, dim) float16 or float32, documents back to back
    doc_offsets.npy     (n_docs + 1,) int64: document i is doc_tokens[offsets[i]:offsets[i+1]]
    doc_ids.json        ["id", ...], n_docs strings
    query_tokens.npy    (total query tokens, dim) float32
    query_offsets.npy   (n_queries + 1,) int64
    query_ids.json      ["id", ...], n_queries strings
    qrels.json          optional: {"query id": {"doc id": relevance, ...}, ...}
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from multivec.errors import InvalidInputError
from multivec.rerank import pack

__all__ = [
    "VECTORS_FORMAT",
    "Dataset",
    "Progress",
    "load_beir",
    "load_vectors",
    "save_vectors",
]

VECTORS_FORMAT = "multivec-bench-vectors/1"
"""The ``format`` value of a vectors folder's ``meta.json``."""

Progress = Callable[[str], None]
"""Receives one line of progress text at a time."""

# Bump when the text given to the encoder or the subset rule changes, so caches are rebuilt.
_RECIPE = 1
_ENCODER_SETTINGS = (
    "max_length",
    "query_max_length",
    "normalize",
    "query_prefix",
    "document_prefix",
)


@dataclass(frozen=True)
class Dataset:
    """Documents and queries as packed token matrices, with optional relevance judgements.

    Attributes:
        name: A short label for reports, e.g. ``"scifact"``.
        model_id: The encoder that produced the vectors.
        doc_ids: One id per document.
        doc_tokens: ``(N, dim)`` tokens of all documents back to back (float16 or float32).
        doc_offsets: ``n_docs + 1`` offsets into ``doc_tokens``.
        query_ids: One id per query.
        query_tokens: ``(M, dim)`` tokens of all queries back to back.
        query_offsets: ``n_queries + 1`` offsets into ``query_tokens``.
        qrels: ``{query id: {doc id: relevance}}``, or ``None`` when the dataset has none.
        meta: Free-form provenance (source path, encoder settings, cache folder), kept in the
            results.
    """

    name: str
    model_id: str
    doc_ids: list[str]
    doc_tokens: npt.NDArray[Any]
    doc_offsets: npt.NDArray[np.int64]
    query_ids: list[str]
    query_tokens: npt.NDArray[Any]
    query_offsets: npt.NDArray[np.int64]
    qrels: dict[str, dict[str, int]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for what, ids, tokens, offsets in (
            ("document", self.doc_ids, self.doc_tokens, self.doc_offsets),
            ("query", self.query_ids, self.query_tokens, self.query_offsets),
        ):
            if not ids:
                raise InvalidInputError(f"a dataset needs at least one {what}")
            if len(set(ids)) != len(ids):
                raise InvalidInputError(f"{what} ids are not unique")
            if tokens.ndim != 2 or offsets.shape != (len(ids) + 1,):
                raise InvalidInputError(
                    f"{what} tokens must be 2-D with {len(ids) + 1} offsets, got shapes "
                    f"{tokens.shape} and {offsets.shape}"
                )
            if offsets[0] != 0 or offsets[-1] != tokens.shape[0] or np.any(np.diff(offsets) < 1):
                raise InvalidInputError(
                    f"{what} offsets must start at 0, increase strictly and end at the token count"
                )
        if self.doc_tokens.shape[1] != self.query_tokens.shape[1]:
            raise InvalidInputError(
                f"documents are {self.doc_tokens.shape[1]}-d but queries are "
                f"{self.query_tokens.shape[1]}-d"
            )

    @classmethod
    def from_matrices(
        cls,
        name: str,
        model_id: str,
        doc_ids: Sequence[str],
        docs: Sequence[npt.ArrayLike],
        query_ids: Sequence[str],
        queries: Sequence[npt.ArrayLike],
        qrels: Mapping[str, Mapping[str, int]] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Dataset:
        """Build a dataset from one ``(n_tokens, dim)`` matrix per document and per query.

        Raises:
            InvalidInputError: Counts, widths or ids do not agree.
            InvalidVectorsError: An empty or malformed matrix.
        """
        if len(doc_ids) != len(docs) or len(query_ids) != len(queries):
            raise InvalidInputError("one id per document and per query is needed")
        doc_tokens, doc_offsets = pack(docs)
        query_tokens, query_offsets = pack([np.asarray(q, dtype=np.float32) for q in queries])
        return cls(
            name=name,
            model_id=model_id,
            doc_ids=[str(i) for i in doc_ids],
            doc_tokens=doc_tokens,
            doc_offsets=doc_offsets,
            query_ids=[str(i) for i in query_ids],
            query_tokens=query_tokens,
            query_offsets=query_offsets,
            qrels=None if qrels is None else {q: dict(j) for q, j in qrels.items()},
            meta=dict(meta or {}),
        )

    @property
    def dim(self) -> int:
        """The token width."""
        return int(self.doc_tokens.shape[1])

    @property
    def n_docs(self) -> int:
        """The number of documents."""
        return len(self.doc_ids)

    @property
    def n_queries(self) -> int:
        """The number of queries."""
        return len(self.query_ids)

    def doc(self, i: int) -> npt.NDArray[Any]:
        """Document ``i``'s token matrix (a view)."""
        return self.doc_tokens[self.doc_offsets[i] : self.doc_offsets[i + 1]]

    def query(self, i: int) -> npt.NDArray[Any]:
        """Query ``i``'s token matrix (a view)."""
        return self.query_tokens[self.query_offsets[i] : self.query_offsets[i + 1]]


def save_vectors(dataset: Dataset, folder: str | os.PathLike[str]) -> Path:
    """Write ``dataset`` as a vectors folder (the format in this module's docstring).

    The files are written to a sibling temporary folder that is renamed into place, so an
    interrupted write never leaves a folder that looks complete.

    Args:
        dataset: What to write.
        folder: The target folder; replaced if it exists.

    Returns:
        The folder.
    """
    target = Path(folder)
    staging = target.parent / f".{target.name}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    np.save(staging / "doc_tokens.npy", dataset.doc_tokens)
    np.save(staging / "doc_offsets.npy", dataset.doc_offsets)
    np.save(staging / "query_tokens.npy", dataset.query_tokens)
    np.save(staging / "query_offsets.npy", dataset.query_offsets)
    _write_json(staging / "doc_ids.json", dataset.doc_ids)
    _write_json(staging / "query_ids.json", dataset.query_ids)
    if dataset.qrels is not None:
        _write_json(staging / "qrels.json", dataset.qrels)
    meta = {
        **dataset.meta,
        "format": VECTORS_FORMAT,
        "name": dataset.name,
        "model_id": dataset.model_id,
        "dim": dataset.dim,
        "n_docs": dataset.n_docs,
        "n_queries": dataset.n_queries,
    }
    _write_json(staging / "meta.json", meta)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def load_vectors(folder: str | os.PathLike[str]) -> Dataset:
    """Read a vectors folder written by :func:`save_vectors` (or by hand, in that format).

    Document tokens are memory-mapped, so a large corpus costs no read until it is used.

    Args:
        folder: The folder.

    Returns:
        The dataset.

    Raises:
        InvalidInputError: The folder is not a complete vectors folder of a known format.
    """
    path = Path(folder)
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise InvalidInputError(
            f"{path} is not a vectors folder: no meta.json (see multivec.bench.save_vectors)"
        )
    meta = _read_json(meta_path)
    if meta.get("format") != VECTORS_FORMAT:
        raise InvalidInputError(
            f"{meta_path} has format {meta.get('format')!r}; expected {VECTORS_FORMAT!r}"
        )
    qrels_path = path / "qrels.json"
    try:
        return Dataset(
            name=str(meta.get("name") or path.name),
            model_id=str(meta.get("model_id") or "unknown"),
            doc_ids=[str(i) for i in _read_json(path / "doc_ids.json")],
            doc_tokens=np.load(path / "doc_tokens.npy", mmap_mode="r"),
            doc_offsets=np.load(path / "doc_offsets.npy").astype(np.int64),
            query_ids=[str(i) for i in _read_json(path / "query_ids.json")],
            query_tokens=np.load(path / "query_tokens.npy").astype(np.float32),
            query_offsets=np.load(path / "query_offsets.npy").astype(np.int64),
            qrels=_read_json(qrels_path) if qrels_path.is_file() else None,
            meta={**meta, "source": str(path)},
        )
    except FileNotFoundError as exc:
        raise InvalidInputError(f"{path} lacks {Path(str(exc.filename)).name}") from exc


def load_beir(
    folder: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | None = None,
    split: str = "test",
    max_docs: int | None = None,
    max_queries: int | None = None,
    doc_max_tokens: int = 180,
    query_max_tokens: int = 64,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> Dataset:
    """Encode a BEIR dataset (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``), cached.

    Each document's text is its title and body (``"title. body"``), as ``multivec index``
    writes them. The queries are those judged in ``qrels/<split>.tsv``, in ``queries.jsonl``
    order, the first ``max_queries`` of them. With ``max_docs``, the documents judged for the
    chosen queries come first, then the rest in corpus order, ``max_docs`` in all (kept in
    corpus order): a subset on which nDCG still means something.

    The encoded vectors are cached under ``cache_dir`` in a folder named from a hash of the
    dataset files (path, size, modification time), the model id, the encoder settings and the
    limits above; a later call with the same inputs loads it instead of encoding.

    Args:
        folder: The BEIR folder.
        model: A local model folder or fastembed model name; ``None`` picks the default
            encoder (:func:`multivec.ingest.default_encoder`, the shared MiniLM offline).
        split: Which qrels file judges the queries.
        max_docs: Keep at most this many documents.
        max_queries: Keep at most this many queries.
        doc_max_tokens: Document truncation (ONNX encoders), special tokens included.
        query_max_tokens: Query truncation (ONNX encoders).
        cache_dir: Where encoded datasets are cached; ``None`` encodes without caching.
        progress: Receives progress lines (encoding takes minutes on a large corpus).

    Returns:
        The encoded dataset.

    Raises:
        InvalidInputError: A file is missing or malformed, no query is judged, or a limit is
            below 1.
        MissingDependencyError: The encoder's libraries are not installed.
    """
    from multivec.ingest import encoder_id

    root = Path(folder)
    files = {
        "corpus": root / "corpus.jsonl",
        "queries": root / "queries.jsonl",
        "qrels": root / "qrels" / f"{split}.tsv",
    }
    for what, path in files.items():
        if not path.is_file():
            raise InvalidInputError(f"the BEIR folder {root} has no {what} file {path}")
    for name, value in (("max_docs", max_docs), ("max_queries", max_queries)):
        if value is not None and value < 1:
            raise InvalidInputError(f"{name} must be at least 1, got {value}")
    encoder = _build_encoder(model, doc_max_tokens, query_max_tokens)
    settings = {a: getattr(encoder, a) for a in _ENCODER_SETTINGS if hasattr(encoder, a)}
    key = {
        "recipe": _RECIPE,
        "files": {
            what: [str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns]
            for what, p in files.items()
        },
        "model_id": encoder_id(encoder),
        "encoder_settings": settings,
        "max_docs": max_docs,
        "max_queries": max_queries,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    cached = Path(cache_dir) / f"{root.resolve().name}-{digest}" if cache_dir else None
    if cached is not None and (cached / "meta.json").is_file():
        _say(progress, f"encoded vectors: cached in {cached}")
        return load_vectors(cached)

    texts = _read_beir(files, max_docs, max_queries)
    started = time.perf_counter()
    docs = _encode(
        lambda batch: encoder.embed(batch, batch_size=32), texts.docs, "documents", progress
    )
    queries = _encode(lambda batch: encoder.query_embed(batch), texts.queries, "queries", progress)
    meta = {
        "source": str(root.resolve()),
        "split": split,
        "encoder_settings": settings,
        "encode_s": round(time.perf_counter() - started, 2),
        "cache_key": key,
    }
    dataset = Dataset.from_matrices(
        root.resolve().name,
        encoder_id(encoder),
        texts.doc_ids,
        [np.asarray(d, dtype=np.float16) for d in docs],
        texts.query_ids,
        queries,
        texts.qrels,
        meta,
    )
    if cached is None:
        return dataset
    save_vectors(dataset, cached)
    _say(progress, f"encoded vectors: cached in {cached}")
    return load_vectors(cached)


def _build_encoder(
    model: str | os.PathLike[str] | None, doc_max_tokens: int, query_max_tokens: int
) -> Any:
    from multivec.ingest import OnnxLateInteractionEncoder, default_encoder

    encoder = default_encoder(model)
    if isinstance(encoder, OnnxLateInteractionEncoder):
        # default_encoder keeps the model's full input length; the benchmark fixes its own, so
        # that the cache key and the results state the truncation.
        return OnnxLateInteractionEncoder(
            encoder.model_dir,
            model_file=encoder.model_file,
            max_length=doc_max_tokens,
            query_max_length=query_max_tokens,
        )
    return encoder


@dataclass
class _Texts:
    doc_ids: list[str]
    docs: list[str]
    query_ids: list[str]
    queries: list[str]
    qrels: dict[str, dict[str, int]]


def _read_beir(files: Mapping[str, Path], max_docs: int | None, max_queries: int | None) -> _Texts:
    from multivec.ingest import iter_beir_corpus, iter_beir_queries, load_beir_qrels

    qrels = load_beir_qrels(files["qrels"])
    queries = [q for q in iter_beir_queries(files["queries"]) if q.id in qrels][:max_queries]
    if not queries:
        raise InvalidInputError(f"no query of {files['queries']} is judged in {files['qrels']}")
    doc_ids: list[str] = []
    docs: list[str] = []
    for record in iter_beir_corpus(files["corpus"]):
        title = record.title.strip()
        # Most titles end with a full stop already; a second one would waste a token.
        joiner = " " if title.endswith((".", "?", "!")) else ". "
        doc_ids.append(record.id)
        docs.append(f"{title}{joiner}{record.text}" if title else record.text)
    if max_docs is not None and max_docs < len(doc_ids):
        judged = {d for q in queries for d in qrels[q.id]}
        first = [i for i, d in enumerate(doc_ids) if d in judged]
        rest = [i for i, d in enumerate(doc_ids) if d not in judged]
        keep = sorted((first + rest)[:max_docs])
        doc_ids = [doc_ids[i] for i in keep]
        docs = [docs[i] for i in keep]
    kept = set(doc_ids)
    return _Texts(
        doc_ids,
        docs,
        [q.id for q in queries],
        [q.text for q in queries],
        {q.id: {d: s for d, s in qrels[q.id].items() if d in kept} for q in queries},
    )


def _encode(
    embed: Callable[[list[str]], Any], texts: list[str], label: str, progress: Progress | None
) -> list[npt.NDArray[Any]]:
    """Encode ``texts`` longest first (less padding per batch); return them in input order."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    out: list[npt.NDArray[Any]] = [np.empty(0)] * len(texts)
    started = last = time.perf_counter()
    for done, (index, matrix) in enumerate(
        zip(order, embed([texts[i] for i in order]), strict=True), start=1
    ):
        out[index] = np.asarray(matrix)
        now = time.perf_counter()
        if now - last >= 5 or done == len(texts):
            last = now
            rate = done / max(now - started, 1e-9)
            _say(progress, f"encoding {label}: {done}/{len(texts)} ({rate:,.1f}/s)")
    return out


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))
