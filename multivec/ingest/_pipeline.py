"""The streaming ingest pipeline: files on disk in, multi-vector documents in a collection out.

:func:`ingest` walks its inputs lazily, reads each file (:mod:`multivec.ingest._readers`),
cuts it into chunks (:mod:`multivec.ingest._chunking`), looks the chunks up in the collection,
encodes only those that are new or changed, and writes them in batches. Memory holds one
lookup window of chunks and two write batches, however large the input is.

Two threads share the work: this one reads, chunks and runs the encoder (onnxruntime releases
the GIL while it computes), a writer thread computes FDEs and writes the previous batch. Every
call into the collection holds one lock, so a backend never sees two at once.

**Document ids.** A chunk's id is ``<key>#<index>``, the index counting from 0 in document
order. The key of a file is its path relative to its root, with ``/`` separators: the folder
given as input, or the file's own folder for a file given as input, or ``root=`` when passed
(a path outside it keeps its absolute path). So ``ingest(["docs"])`` and
``ingest(["docs/guide.md"])`` both give ``guide.md#0``. The key of a JSONL record is its
``_id``. A key over 400 bytes is replaced by ``sha256:<32 hex digits>`` of it.

**Resuming and updating.** Every chunk stores a ``content_hash`` in its metadata: a hash of what
the encoder sees (the chunk's text with its prefix, or the image file's bytes, or the PDF's
bytes and page number) together with the encoder's id, ``max_tokens``, ``overlap``, the pooling
function and the PDF resolution. A chunk already stored with the same hash is not encoded
again; if only its metadata moved (e.g. its line numbers), the stored vectors are written back
with the new metadata. Every chunk also stores ``chunks``, the number of chunks of its document:
when a document shrinks, the ids past its new end are deleted. Chunks of one document are
written in order, so an interrupted run leaves a consistent prefix and the next run carries
on from there. Files that disappeared, and files skipped as unreadable, are left as they are
in the collection.

**Bad input.** A file that cannot be read (damaged PDF or image, undecodable text, empty file,
an image for a text-only encoder) and a malformed JSONL line are reported in
:attr:`IngestSummary.skipped` with the reason, and everything else is ingested. Errors of the
encoder or the database stop the run; whatever was written stays and a rerun resumes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from multivec.errors import InvalidInputError, MissingDependencyError
from multivec.ingest._chunking import (
    Chunk,
    TokenCounter,
    chunk_lines,
    chunk_python,
    chunk_text,
    resolve_max_tokens,
    token_counter,
)
from multivec.ingest._encoders import _sha256, encoder_id
from multivec.ingest._readers import (
    FileKind,
    file_kind,
    iter_files,
    iter_jsonl_records,
    read_image,
    read_pdf,
    read_text_file,
)

if TYPE_CHECKING:
    from PIL.Image import Image

    from multivec._collection import Collection

__all__ = ["CallableEncoder", "IngestSummary", "SkippedInput", "ingest"]

Pool = Callable[[NDArray[Any]], NDArray[Any]]
"""A hook applied to each token matrix before it is written, e.g. token pooling."""

# Bumped when chunk boundaries or prefixes change for the same settings, so a rerun re-encodes.
_CHUNKER_VERSION = 1
_MAX_KEY_BYTES = 400
# Chunks looked up in the collection per request.
_LOOKUP_SLICE = 256
_DEFAULT_DPI = 144


@dataclass(frozen=True, slots=True)
class SkippedInput:
    """An input that was not ingested, and why.

    Attributes:
        path: The file (``path:line`` for a JSONL line, ``path#page`` for a PDF page).
        reason: What was wrong, and what to do about it.
    """

    path: str
    reason: str


@dataclass
class IngestSummary:
    """What one :func:`ingest` run did.

    Attributes:
        files: Files read successfully (unchanged ones included).
        documents: Documents read: files, and records of JSONL files.
        chunks: Chunks encoded and written.
        vectors: Token vectors of the encoded chunks, as written (after ``pool``).
        tokens: Token vectors the encoder returned (before ``pool``).
        unchanged: Chunks already stored with the same content hash, not encoded again.
        relabelled: Unchanged chunks whose metadata moved, written back with stored vectors.
        deleted: Stale chunks deleted because their document shrank.
        skipped: Inputs not ingested, with the reason.
        ignored: Files of types multivec does not read, found while walking folders.
        seconds: Wall-clock time of the run.
        timings: Seconds spent per stage: ``read`` (reading and chunking), ``lookup``,
            ``encode`` and ``write`` (FDE encoding and database writes, in the writer thread,
            overlapping the others).
    """

    files: int = 0
    documents: int = 0
    chunks: int = 0
    vectors: int = 0
    tokens: int = 0
    unchanged: int = 0
    relabelled: int = 0
    deleted: int = 0
    skipped: list[SkippedInput] = field(default_factory=list)
    ignored: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("read", "lookup", "encode", "write"), 0.0)
    )

    @property
    def ok(self) -> bool:
        """Whether every input was ingested (nothing skipped)."""
        return not self.skipped

    def as_dict(self) -> dict[str, Any]:
        """The summary as plain JSON-ready values."""
        out = asdict(self)
        out["timings"] = {k: round(v, 3) for k, v in self.timings.items()}
        out["seconds"] = round(self.seconds, 3)
        return out

    def summary(self) -> str:
        """A few lines for people."""
        lines = [
            f"ingested {self.files} files ({self.documents} documents): {self.chunks} chunks "
            f"encoded, {self.vectors} vectors written; {self.unchanged} chunks unchanged, "
            f"{self.relabelled} relabelled, {self.deleted} stale deleted "
            f"in {self.seconds:.1f} s",
        ]
        if self.ignored:
            lines.append(f"ignored {self.ignored} files of unsupported types")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)}:")
            lines.extend(f"  {s.path}: {s.reason}" for s in self.skipped)
        return "\n".join(lines)


class CallableEncoder:
    """A plain function ``f(list[str]) -> list[matrix]`` as a late-interaction encoder.

    The function gets a batch of texts and returns one ``(n_tokens, dim)`` matrix per text.
    Queries are encoded by the same function unless ``query_fn`` is given.

    Example:
        >>> import numpy as np
        >>> enc = CallableEncoder(lambda texts: [np.ones((len(t.split()), 4)) for t in texts])
        >>> [m.shape for m in enc.embed(["two words", "and three words"])]
        [(2, 4), (3, 4)]

    Attributes:
        model_id: The id stored with chunks (default: the function's qualified name).
        max_length: The model's input limit in tokens, when known.
    """

    def __init__(
        self,
        fn: Callable[[list[str]], Iterable[Any]],
        *,
        query_fn: Callable[[list[str]], Iterable[Any]] | None = None,
        model_id: str | None = None,
        count_tokens: TokenCounter | None = None,
        max_length: int | None = None,
        batch_size: int = 32,
    ) -> None:
        """Wrap ``fn``.

        Args:
            fn: Encodes a batch of document texts.
            query_fn: Encodes a batch of queries; defaults to ``fn``.
            model_id: The id to store; change it when the function's model changes, so
                chunks are re-encoded.
            count_tokens: The model's token counter, for chunk sizes; without one, chunks are
                sized with a conservative estimate.
            max_length: The model's input limit in tokens.
            batch_size: Texts per call of ``fn``.
        """
        if not callable(fn):
            raise InvalidInputError(f"expected a callable, got {type(fn).__name__}")
        self._fn = fn
        self._query_fn = query_fn or fn
        self.model_id = model_id or _callable_name(fn)
        self.max_length = max_length
        self.batch_size = batch_size
        if count_tokens is not None:
            self.count_tokens = count_tokens

    def __repr__(self) -> str:
        return f"CallableEncoder(model_id={self.model_id!r})"

    def embed(
        self, documents: str | Iterable[str], batch_size: int | None = None, **kwargs: Any
    ) -> Iterator[NDArray[Any]]:
        """Encode documents in batches, one token matrix per document."""
        return self._run(self._fn, documents, batch_size or self.batch_size)

    def query_embed(self, query: str | Iterable[str], **kwargs: Any) -> Iterator[NDArray[Any]]:
        """Encode queries, one token matrix per query."""
        return self._run(self._query_fn, query, self.batch_size)

    @staticmethod
    def _run(
        fn: Callable[[list[str]], Iterable[Any]], texts: str | Iterable[str], size: int
    ) -> Iterator[NDArray[Any]]:
        items = [texts] if isinstance(texts, str) else list(texts)
        for start in range(0, len(items), size):
            batch = items[start : start + size]
            out = [np.asarray(m) for m in fn(batch)]
            if len(out) != len(batch):
                raise InvalidInputError(
                    f"the encoder function returned {len(out)} matrices for {len(batch)} texts"
                )
            yield from out


def _callable_name(fn: object) -> str:
    if isinstance(fn, functools.partial):
        args = [repr(a) for a in fn.args] + [f"{k}={v!r}" for k, v in sorted(fn.keywords.items())]
        return f"{_callable_name(fn.func)}({', '.join(args)})"
    for attribute in ("model_id", "pool_id"):
        value = getattr(fn, attribute, None)
        if isinstance(value, str) and value:
            return value
    module = getattr(fn, "__module__", None) or ""
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{name}" if module else name


# --- encoders ------------------------------------------------------------------------------------


@dataclass
class _Encoders:
    text: Callable[[list[str]], list[NDArray[Any]]] | None
    image: Callable[[list[Image]], list[NDArray[Any]]] | None
    ident: str
    count: TokenCounter
    limit: int | None
    name: str


def _resolve_encoder(encoder: object) -> _Encoders:
    if not any(hasattr(encoder, m) for m in ("embed", "embed_text", "embed_image")):
        if not callable(encoder):
            raise InvalidInputError(
                f"{type(encoder).__name__} is not an encoder: it needs embed(texts) (or "
                "embed_image(images)), or pass a function f(list[str]) -> list[matrix]"
            )
        encoder = CallableEncoder(encoder)
    text_method = getattr(encoder, "embed", None) or getattr(encoder, "embed_text", None)
    image_method = getattr(encoder, "embed_image", None)

    def checked(method: Callable[..., Iterable[Any]], what: str) -> Callable[[list[Any]], Any]:
        def run(items: list[Any]) -> list[NDArray[Any]]:
            out = [np.asarray(m) for m in method(items, batch_size=len(items))]
            if len(out) != len(items):
                raise InvalidInputError(
                    f"the encoder returned {len(out)} matrices for {len(items)} {what}"
                )
            return out

        return run

    count, limit = token_counter(encoder)
    return _Encoders(
        text=checked(text_method, "texts") if callable(text_method) else None,
        image=checked(image_method, "images") if callable(image_method) else None,
        ident=encoder_id(encoder),
        count=count,
        limit=limit,
        name=encoder_id(encoder),
    )


# --- documents and their pieces --------------------------------------------------------------


@dataclass
class _Piece:
    text: str | None  # what the text encoder sees
    image: Callable[[], Image] | None  # what the image encoder sees, loaded on demand
    stored_text: str | None
    metadata: dict[str, Any]
    payload: bytes  # what the content hash covers, besides the settings


@dataclass
class _Doc:
    key: str
    path: str  # for messages
    pieces: list[_Piece]


@dataclass
class _Item:
    """One chunk on its way to the collection."""

    doc_id: str
    piece: _Piece
    vectors: NDArray[Any] | None = None  # stored vectors, reused when only metadata moved


def _key(relative: str) -> str:
    if len(relative.encode("utf-8")) <= _MAX_KEY_BYTES:
        return relative
    return "sha256:" + hashlib.sha256(relative.encode("utf-8")).hexdigest()[:32]


def _chunk_metadata(chunk: Chunk) -> dict[str, Any]:
    return {
        "char_start": chunk.char_start,
        "char_end": chunk.char_end,
        "line_start": chunk.line_start,
        "line_end": chunk.line_end,
        "text_offset": len(chunk.prefix),
        **chunk.metadata,
    }


class _Ingest:
    def __init__(
        self,
        collection: Collection,
        encoders: _Encoders,
        *,
        max_tokens: int,
        overlap: int,
        batch_size: int,
        pool: Pool | None,
        pdf_dpi: int,
        bar: Any,
    ) -> None:
        self.collection = collection
        self.enc = encoders
        self.max_tokens = max_tokens
        self.overlap = overlap
        self.batch_size = batch_size
        self.pool = pool
        self.pdf_dpi = pdf_dpi
        self.bar = bar
        self.summary = IngestSummary()
        self.lock = threading.Lock()
        settings = {
            "chunker": _CHUNKER_VERSION,
            "encoder": encoders.ident,
            "max_tokens": max_tokens,
            "overlap": overlap,
            "pool": None if pool is None else _callable_name(pool),
            "pdf_dpi": pdf_dpi,
        }
        self.settings = json.dumps(settings, sort_keys=True).encode()
        self.pending: list[_Item] = []

    def digest(self, payload: bytes) -> str:
        return hashlib.sha256(self.settings + b"\0" + payload).hexdigest()[:32]

    # --- reading ---

    def skip(self, path: object, reason: str) -> None:
        self.summary.skipped.append(SkippedInput(str(path), reason))

    def text_pieces(
        self, chunks: Sequence[Chunk], extra: dict[str, Any] | None = None
    ) -> list[_Piece]:
        return [
            _Piece(
                text=c.embed_text,
                image=None,
                stored_text=c.embed_text,
                metadata={**(extra or {}), **_chunk_metadata(c)},
                payload=c.embed_text.encode("utf-8"),
            )
            for c in chunks
        ]

    def read_file(self, path: Path, kind: FileKind, relative: str) -> Iterator[_Doc]:
        """The documents of one file; raises InvalidInputError for a bad one."""
        common = {"source": relative, "kind": kind}
        if kind in ("text", "markdown", "python", "code"):
            if self.enc.text is None:
                raise InvalidInputError(f"the encoder {self.enc.name} encodes images only")
            text = read_text_file(path)
            count, size = self.enc.count, self.max_tokens
            if kind == "python":
                chunks = chunk_python(text, count_tokens=count, max_tokens=size)
            elif kind == "code":
                chunks = chunk_lines(text, count_tokens=count, max_tokens=size)
            else:
                chunks = chunk_text(
                    text,
                    count_tokens=count,
                    max_tokens=size,
                    overlap=self.overlap,
                    markdown=kind == "markdown",
                )
            yield _Doc(_key(relative), relative, self.text_pieces(chunks, common))
        elif kind == "pdf":
            yield self.read_pdf(path, relative, common)
        elif kind == "image":
            if self.enc.image is None:
                raise InvalidInputError(
                    f"an image, but the encoder {self.enc.name} has no embed_image(); use a "
                    "page-image encoder (e.g. ColPali) for images"
                )
            image = read_image(path)
            piece = _Piece(
                text=None,
                image=lambda: image,
                stored_text=None,
                metadata={**common, "width": image.width, "height": image.height},
                payload=b"image:" + _sha256(path).encode(),
            )
            yield _Doc(_key(relative), relative, [piece])

    def read_pdf(self, path: Path, relative: str, common: dict[str, Any]) -> _Doc:
        pdf = read_pdf(path)
        pieces: list[_Piece] = []
        if self.enc.image is not None:
            file_hash = _sha256(path)
            for page, text in enumerate(pdf.texts):

                def render(page: int = page) -> Image:
                    return pdf.render(page, self.pdf_dpi)

                pieces.append(
                    _Piece(
                        text=None,
                        image=render,
                        stored_text=text.strip() or None,
                        metadata={**common, "page": page + 1},
                        payload=f"pdf:{file_hash}:{page}".encode(),
                    )
                )
        else:
            for page, text in enumerate(pdf.texts):
                chunks = chunk_text(
                    text,
                    count_tokens=self.enc.count,
                    max_tokens=self.max_tokens,
                    overlap=self.overlap,
                )
                pieces.extend(self.text_pieces(chunks, {**common, "page": page + 1}))
            if not pieces:
                raise InvalidInputError(
                    f"no text layer on any of its {pdf.pages} pages (a scan?); use a page-image "
                    "encoder, or run OCR first"
                )
        return _Doc(_key(relative), relative, pieces)

    def read_jsonl(self, path: Path, relative: str) -> Iterator[_Doc]:
        if self.enc.text is None:
            raise InvalidInputError(f"the encoder {self.enc.name} encodes images only")
        seen: set[str] = set()
        for line_no, size, record in iter_jsonl_records(path):
            if self.bar is not None:
                self.bar.update(size)
            if isinstance(record, InvalidInputError):
                self.skip(f"{path}:{line_no}", str(record).split(": ", 1)[-1])
                continue
            if record.id in seen:
                self.skip(f"{path}:{line_no}", f"duplicate _id {record.id!r}; kept the first")
                continue
            seen.add(record.id)
            t0 = time.perf_counter()
            body, title = (record.text, record.title) if record.text.strip() else (record.title, "")
            chunks = chunk_text(
                body,
                count_tokens=self.enc.count,
                max_tokens=self.max_tokens,
                overlap=self.overlap,
                title=title,
            )
            extra = {
                **record.metadata,
                "source": relative,
                "kind": "jsonl",
                "doc_id": record.id,
                "title": record.title,
                "line": line_no,
            }
            doc = _Doc(_key(record.id), f"{path}:{line_no}", self.text_pieces(chunks, extra))
            self.summary.timings["read"] += time.perf_counter() - t0
            yield doc

    def documents(self, paths: Sequence[Path], root: Path | None) -> Iterator[_Doc]:
        seen: set[Path] = set()
        for argument in paths:
            base = (
                root if root is not None else (argument if argument.is_dir() else argument.parent)
            )
            explicit = argument.is_file()
            for path in iter_files(argument):
                resolved = path.resolve()
                if resolved in seen:
                    continue
                seen.add(resolved)
                kind = file_kind(path)
                if kind is None:
                    if explicit:
                        self.skip(path, f"unsupported file type {path.suffix or '(none)'!r}")
                    else:
                        self.summary.ignored += 1
                    continue
                try:
                    relative = path.resolve().relative_to(base.resolve()).as_posix()
                except ValueError:
                    relative = path.resolve().as_posix()
                if kind == "jsonl":
                    # Streamed record by record: a corpus file may not fit in memory.
                    try:
                        yield from self.read_jsonl(path, relative)
                    except InvalidInputError as exc:
                        self.skip(path, str(exc))
                    else:
                        self.summary.files += 1
                    continue
                t0 = time.perf_counter()
                try:
                    docs = list(self.read_file(path, kind, relative))
                except InvalidInputError as exc:
                    self.skip(path, str(exc))
                    continue
                finally:
                    self.summary.timings["read"] += time.perf_counter() - t0
                    if self.bar is not None:
                        self.bar.update(_size(path))
                self.summary.files += 1
                yield from docs

    # --- lookup, encoding, writing ---

    def lookup(self, docs: list[_Doc], writer: _Writer) -> None:
        """Decide per chunk: unchanged, relabel with stored vectors, or encode; drop stale ids."""
        t0 = time.perf_counter()
        ids = [f"{d.key}#{i}" for d in docs for i in range(len(d.pieces))]
        stored = self.fetch(ids)
        for doc in docs:
            self.summary.documents += 1
            n = len(doc.pieces)
            counts = [
                stored[f"{doc.key}#{i}"].metadata.get("chunks", 0)
                for i in range(n)
                if f"{doc.key}#{i}" in stored
            ]
            old = max([c for c in counts if isinstance(c, int)], default=0)
            if old > n:
                stale = list(self.fetch([f"{doc.key}#{i}" for i in range(n, old)]))
                if stale:
                    writer.put(("delete", stale))
                    self.summary.deleted += len(stale)
            for index, piece in enumerate(doc.pieces):
                doc_id = f"{doc.key}#{index}"
                piece.metadata.update(
                    {"chunk": index, "chunks": n, "content_hash": self.digest(piece.payload)}
                )
                found = stored.get(doc_id)
                if (
                    found is not None
                    and found.metadata.get("content_hash") == (piece.metadata["content_hash"])
                ):
                    if found.metadata == piece.metadata and found.text == piece.stored_text:
                        self.summary.unchanged += 1
                        continue
                    self.pending.append(_Item(doc_id, piece, np.asarray(found.vectors)))
                    self.summary.relabelled += 1
                else:
                    self.pending.append(_Item(doc_id, piece))
        self.summary.timings["lookup"] += time.perf_counter() - t0

    def fetch(self, ids: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for start in range(0, len(ids), _LOOKUP_SLICE):
            with self.lock:
                documents = self.collection.get(ids[start : start + _LOOKUP_SLICE])
            found.update((str(d.id), d) for d in documents)
        return found

    def to_encode(self) -> int:
        return sum(1 for item in self.pending if item.vectors is None)

    def flush(self, writer: _Writer, *, final: bool = False) -> None:
        """Encode and hand to the writer full batches of pending chunks (all of them if final)."""
        while self.pending:
            if not final and (
                self.to_encode() < self.batch_size and len(self.pending) < 4 * self.batch_size
            ):
                return
            # The batch: pending items up to the batch_size-th that needs encoding.
            take, needed = 0, 0
            while take < len(self.pending) and needed < self.batch_size:
                needed += self.pending[take].vectors is None
                take += 1
            batch, self.pending = self.pending[:take], self.pending[take:]
            self.encode(batch)
            written = [item for item in batch if item.vectors is not None]
            if written:
                writer.put(("upsert", written))

    def encode(self, batch: list[_Item]) -> None:
        t0 = time.perf_counter()
        texts = [i for i in batch if i.vectors is None and i.piece.text is not None]
        images = [i for i in batch if i.vectors is None and i.piece.text is None]
        if texts and self.enc.text is not None:
            self.assign(texts, self.enc.text([i.piece.text or "" for i in texts]))
        if images and self.enc.image is not None:
            loaded: list[tuple[_Item, Image]] = []
            for item in images:
                try:
                    loaded.append((item, item.piece.image() if item.piece.image else _no_image()))
                except InvalidInputError as exc:
                    self.skip(item.doc_id, str(exc))
            if loaded:
                matrices = self.enc.image([image for _, image in loaded])
                self.assign([item for item, _ in loaded], matrices)
        self.summary.timings["encode"] += time.perf_counter() - t0

    def assign(self, items: list[_Item], matrices: list[NDArray[Any]]) -> None:
        for item, matrix in zip(items, matrices, strict=True):
            if matrix.ndim != 2 or matrix.shape[0] == 0:
                self.skip(item.doc_id, f"the encoder returned an array of shape {matrix.shape}")
                continue
            self.summary.tokens += matrix.shape[0]
            item.vectors = self.pool(matrix) if self.pool is not None else matrix
            self.summary.vectors += item.vectors.shape[0]
            self.summary.chunks += 1


def _no_image() -> Image:
    raise InvalidInputError("no image to encode")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class _Writer:
    """A thread writing batches to the collection in order, one at a time."""

    def __init__(self, job: _Ingest) -> None:
        self.job = job
        self.queue: queue.Queue[tuple[str, Any] | None] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self.loop, name="multivec-ingest-writer", daemon=True)
        self.thread.start()

    def put(self, op: tuple[str, Any]) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.queue.put(op, timeout=0.1)
                return
            except queue.Full:
                continue

    def loop(self) -> None:
        job = self.job
        while (op := self.queue.get()) is not None:
            if self.error is not None:
                continue  # drain: a failed writer keeps taking so the producer never blocks
            t0 = time.perf_counter()
            try:
                kind, payload = op
                with job.lock:
                    if kind == "delete":
                        job.collection.delete(payload)
                    else:
                        self.upsert(payload)
            except BaseException as exc:
                self.error = exc
            finally:
                job.summary.timings["write"] += time.perf_counter() - t0

    def upsert(self, items: list[_Item]) -> None:
        job = self.job
        vectors = [item.vectors for item in items]
        job.collection.upsert(
            [item.doc_id for item in items],
            vectors,  # type: ignore[arg-type]
            [item.piece.metadata for item in items],
            texts=[item.piece.stored_text for item in items],
        )
        if job.bar is not None:
            job.bar.set_postfix(chunks=job.summary.chunks, refresh=False)

    def close(self, *, raise_error: bool = True) -> None:
        """Write what is queued, stop, and raise the writer's error if it had one."""
        while True:
            try:
                self.queue.put(None, timeout=0.1)
                break
            except queue.Full:
                if not self.thread.is_alive():
                    break
        self.thread.join()
        if raise_error and self.error is not None:
            raise self.error


def _progress_bar(paths: Sequence[Path]) -> Any:
    try:
        from tqdm import tqdm
    except ImportError as exc:
        raise MissingDependencyError("tqdm", "cli") from exc
    total = sum(_size(f) for p in paths for f in iter_files(p) if file_kind(f) is not None)
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, dynamic_ncols=True)


def ingest(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    collection: Collection,
    encoder: object,
    *,
    root: str | os.PathLike[str] | None = None,
    max_tokens: int | None = None,
    overlap: int = 0,
    batch_size: int = 32,
    pool: Pool | None = None,
    pdf_dpi: int = _DEFAULT_DPI,
    progress: bool = False,
) -> IngestSummary:
    """Read files and folders, chunk, encode and store them; skip what is already stored.

    Text and Markdown are cut into sentence-packed chunks with their heading path, Python along
    its syntax tree, other code at blank lines (see :mod:`multivec.ingest._chunking`); JSONL
    files are read as BEIR corpora, one document per record. PDF pages and PNG/JPEG images go
    to the encoder's ``embed_image`` when it has one (one document per page, its text layer
    stored as the text); without it, a PDF's text layer is chunked like text and images are
    skipped. Rerunning on the same input encodes nothing; see the module documentation for
    ids, content hashes and resuming.

    Args:
        paths: Files and folders (walked recursively, hidden entries skipped).
        collection: Where the chunks go; its ``dim`` must match the encoder's.
        encoder: A :class:`~multivec.ingest.LateInteractionEncoder` (``embed``), an object
            with ``embed_image(images, batch_size=...)`` for page images (and ``embed`` or
            ``embed_text`` for text), or a function ``f(list[str]) -> list[matrix]``.
        root: Folder that document keys are relative to; by default each input folder (or a
            file's own folder).
        max_tokens: Most tokens per text chunk, prefix and special tokens included; defaults
            to the encoder's limit (512 if it states none).
        overlap: Tokens of trailing sentences repeated at the start of the next prose chunk.
        batch_size: Chunks per encoder call and per write.
        pool: Applied to each token matrix before it is written (e.g. token pooling).
        pdf_dpi: Resolution PDF pages are rendered at for an image encoder.
        progress: Show a progress bar (bytes read, with rate and ETA) on standard error.

    Returns:
        What was done, including what was skipped and why.

    Raises:
        InvalidInputError: A path does not exist, an argument is out of range, every input is
            of a kind the encoder cannot encode, or the encoder returns the wrong number of
            matrices.
        DimensionMismatchError: The encoder's vectors do not have the collection's width.
        MissingDependencyError: A reader's or the progress bar's package is missing.
        BackendError: The database failed; what was written stays, and a rerun resumes.
    """
    started = time.perf_counter()
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    inputs = [Path(p) for p in items]
    if not inputs:
        raise InvalidInputError("no paths to ingest")
    for path in inputs:
        if not path.exists():
            raise InvalidInputError(f"{path} does not exist; pass existing files or folders")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
    if pool is not None and not callable(pool):
        raise InvalidInputError(f"pool must be a function of a matrix, got {type(pool).__name__}")
    encoders = _resolve_encoder(encoder)
    _refuse_unencodable(inputs, encoders)
    size = resolve_max_tokens(max_tokens, encoders.limit)
    # chunk_text checks overlap against the size; check it now rather than per file.
    chunk_text("", max_tokens=size, overlap=overlap)
    bar = _progress_bar(inputs) if progress else None
    job = _Ingest(
        collection,
        encoders,
        max_tokens=size,
        overlap=overlap,
        batch_size=batch_size,
        pool=pool,
        pdf_dpi=pdf_dpi,
        bar=bar,
    )
    writer = _Writer(job)
    try:
        window: list[_Doc] = []
        pieces = 0
        for doc in job.documents(inputs, Path(root) if root is not None else None):
            window.append(doc)
            pieces += len(doc.pieces)
            if pieces >= 2 * batch_size:
                job.lookup(window, writer)
                window, pieces = [], 0
                job.flush(writer)
        job.lookup(window, writer)
        job.flush(writer, final=True)
    except BaseException:
        # Keep what was encoded: the writer finishes its queue, then the error goes up.
        writer.close(raise_error=False)
        if bar is not None:
            bar.close()
        raise
    writer.close()
    if bar is not None:
        bar.close()
    job.summary.seconds = time.perf_counter() - started
    return job.summary


def _refuse_unencodable(inputs: Sequence[Path], encoders: _Encoders) -> None:
    """Refuse up front when every input is a file the encoder cannot encode."""
    if not all(path.is_file() for path in inputs):
        return
    kinds = {file_kind(path) for path in inputs}
    if encoders.image is None and kinds == {"image"}:
        raise InvalidInputError(
            f"every input is an image, and the encoder {encoders.name} has no embed_image(); "
            "use a page-image encoder (e.g. ColPali) for images"
        )
    if encoders.text is None and kinds and kinds <= {"text", "markdown", "python", "code", "jsonl"}:
        raise InvalidInputError(
            f"every input is text, and the encoder {encoders.name} encodes images only"
        )
