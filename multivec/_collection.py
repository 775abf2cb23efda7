"""The collection façade: the write path and the two-stage search, the same on every backend.

Search: encode the query's FDE → the database's ANN index returns ``candidates`` ids (with the
filter pushed down) → fetch their token matrices → exact MaxSim → top ``k``.
Write: validate everything first (so a bad batch writes nothing) → convert tokens to the stored
precision → encode FDEs from exactly those stored values (so re-encoding after a migration gives
the same FDEs) → write in batches sized by bytes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from multivec._explain import explain_match
from multivec._filters import Filter
from multivec._models import (
    FORMAT_VERSION,
    CollectionInfo,
    Document,
    Hit,
    SearchResult,
    StageTimings,
)
from multivec._uri import URI
from multivec._validation import (
    DocId,
    StorageDtype,
    check_ids,
    check_metadata,
    check_query,
    check_texts,
    check_token_matrices,
    id_to_key,
    key_to_id,
)
from multivec.backends import Backend, Fetched, WriteBatch, get_backend
from multivec.errors import (
    BackendUnavailableError,
    CollectionNotFoundError,
    ConfigMismatchError,
    ConfigurationError,
    InvalidInputError,
    MultivecError,
    PartialWriteError,
)
from multivec.muvera import FDEConfig, FDEEncoder
from multivec.rerank import maxsim_packed

__all__ = ["DEFAULT_FDE_PRESET", "SEARCH_MODES", "Collection", "SearchMode", "connect"]

SearchMode = Literal["multivec", "native", "native-prefetch"]
SEARCH_MODES: tuple[SearchMode, ...] = ("multivec", "native", "native-prefetch")

DEFAULT_FDE_PRESET = "muvera-10240"
# Write requests stay below this even where a database has no limit, to bound client memory.
_DEFAULT_REQUEST_BYTES = 32 * 2**20
# Headroom for the request envelope (field names, protobuf/JSON framing) under a server's cap.
_REQUEST_HEADROOM = 0.8


def _resolve_fde(fde: FDEConfig | str | None, dim: int) -> FDEConfig:
    if fde is None:
        return FDEConfig.preset(DEFAULT_FDE_PRESET, dim=dim)
    if isinstance(fde, str):
        return FDEConfig.preset(fde, dim=dim)
    if fde.dim != dim:
        raise ConfigurationError(
            f"the FDE configuration is for dim={fde.dim}, the collection has dim={dim}"
        )
    return fde


def connect(
    uri: str | URI,
    collection: str = "default",
    *,
    dim: int | None = None,
    fde: FDEConfig | str | None = None,
    dtype: StorageDtype | None = None,
    encoder: str | None = None,
) -> Collection:
    """Open a collection, creating it if it does not exist.

    Args:
        uri: Where the data lives, e.g. ``"lancedb://./data"`` or ``"memory://"``.
        collection: The collection's name.
        dim: The token vector dimension; required to create a collection, checked on open.
        fde: An :class:`~multivec.muvera.FDEConfig` or a preset name (default
            ``"muvera-10240"``). Used at creation; on open it must match what is stored.
        dtype: Storage precision of token vectors, ``"float16"`` (default) or ``"float32"``.
        encoder: An optional id of the model that produced the vectors, stored for reference.

    Returns:
        The open :class:`Collection`.

    Raises:
        CollectionNotFoundError: The collection does not exist and ``dim`` was not given.
        ConfigMismatchError: The stored configuration differs from ``dim``, ``fde`` or ``dtype``.

    Example:
        >>> import numpy as np, multivec
        >>> col = multivec.connect("memory://doctest", "docs", dim=8, fde="muvera-1280")
        >>> rng = np.random.default_rng(0)
        >>> col.upsert(["a", 7], [rng.normal(size=(5, 8)), rng.normal(size=(3, 8))])
        >>> col.count()
        2
        >>> col.search(rng.normal(size=(4, 8)), k=1).ids[0] in ("a", 7)
        True
        >>> col.drop()
    """
    parsed = URI.parse(uri)
    backend = get_backend(parsed.scheme)(parsed, collection)
    try:
        return Collection(backend, _open_or_create(backend, dim, fde, dtype, encoder))
    except BaseException:
        # Nothing else holds the backend: release its connection or file lock.
        backend.close()
        raise


def _open_or_create(
    backend: Backend,
    dim: int | None,
    fde: FDEConfig | str | None,
    dtype: StorageDtype | None,
    encoder: str | None,
) -> CollectionInfo:
    parsed, collection = backend.uri, backend.collection
    stored = backend.load_info()
    if stored is None:
        if dim is None:
            raise CollectionNotFoundError(
                f"collection {collection!r} does not exist at {parsed}; pass dim= to create it"
            )
        if backend.max_vector_dim is not None and dim > backend.max_vector_dim:
            raise ConfigurationError(
                f"token dimension {dim} exceeds {parsed.scheme}'s limit of {backend.max_vector_dim}"
            )
        info = CollectionInfo(
            dim=dim, dtype=dtype or "float16", fde=_resolve_fde(fde, dim), encoder=encoder
        )
        if backend.max_vector_dim is not None and info.fde_dim > backend.max_vector_dim:
            raise ConfigurationError(
                f"the FDE has {info.fde_dim} dimensions, over {parsed.scheme}'s limit of "
                f"{backend.max_vector_dim}; use an FDE with final_dim <= {backend.max_vector_dim}"
            )
        backend.create(info)
        return info
    _check_stored(stored, dim=dim, fde=fde, dtype=dtype, where=f"{parsed}/{collection}")
    return stored


def _check_stored(
    stored: CollectionInfo,
    *,
    dim: int | None,
    fde: FDEConfig | str | None,
    dtype: str | None,
    where: str,
) -> None:
    if stored.format_version != FORMAT_VERSION:
        raise ConfigMismatchError(
            f"{where} was written in storage format {stored.format_version}; this multivec reads "
            f"format {FORMAT_VERSION}. Export it with the multivec version that wrote it."
        )
    problems = []
    if dim is not None and dim != stored.dim:
        problems.append(f"dim {dim} != stored {stored.dim}")
    if dtype is not None and dtype != stored.dtype:
        problems.append(f"dtype {dtype} != stored {stored.dtype}")
    if fde is not None and _resolve_fde(fde, stored.dim) != stored.fde:
        problems.append(f"fde {fde!r} != stored {stored.fde!r}")
    if problems:
        raise ConfigMismatchError(
            f"{where} exists with a different configuration: {'; '.join(problems)}. "
            "Open it without those arguments to use the stored configuration."
        )


class Collection:
    """A multi-vector collection in one database; create it with :func:`connect`."""

    def __init__(self, backend: Backend, info: CollectionInfo) -> None:
        self._backend = backend
        self.info = info
        self._fde = FDEEncoder(info.fde)
        self._query_fde = FDEEncoder(info.fde.for_queries())
        limit = backend.max_request_bytes or _DEFAULT_REQUEST_BYTES
        self._request_bytes = int(limit * _REQUEST_HEADROOM)

    @property
    def name(self) -> str:
        """The collection's name."""
        return self._backend.collection

    @property
    def backend(self) -> Backend:
        """The backend adapter (for its capability flags and backend-specific operations)."""
        return self._backend

    def __repr__(self) -> str:
        return f"Collection({str(self._backend.uri)!r}, {self.name!r}, dim={self.info.dim})"

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def optimize(self) -> None:
        """Compact storage and build or refresh the FDE index; call it after bulk loads.

        Searches are complete without it (unindexed rows are scanned), only slower.
        """
        self._backend.optimize()

    def close(self) -> None:
        """Release the backend's connections."""
        self._backend.close()

    def drop(self) -> None:
        """Delete the collection and all its documents."""
        self._backend.drop()

    def count(self) -> int:
        """The number of documents."""
        return self._backend.count()

    # --- writing -------------------------------------------------------------------------------

    def upsert(
        self,
        ids: Sequence[DocId],
        vectors: Sequence[npt.ArrayLike] | npt.NDArray[Any],
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        texts: Sequence[str | None] | None = None,
        fdes: npt.ArrayLike | None = None,
    ) -> None:
        """Insert documents, replacing any with the same id.

        Args:
            ids: One id per document, ``str`` or ``int``; returned exactly as given.
            vectors: One ``(n_tokens, dim)`` token matrix per document.
            metadata: Optional JSON-object metadata per document (filterable).
            texts: Optional source text per document, returned with hits.
            fdes: Optional ``(n_documents, fde_dim)`` FDEs of these documents under this
                collection's FDE configuration, stored as given instead of encoded here. Only
                for FDEs read from a collection with the same configuration (as
                :meth:`iter_with_fdes` gives them, and ``multivec migrate`` copies them): others
                would make the first stage miss documents.

        Raises:
            InvalidInputError: Anything wrong with the input; nothing is written then.
            PartialWriteError: The database failed after acknowledging some batches; the error
                lists the ids written, unconfirmed (in the request that failed) and not
                written. Retrying the call is safe.
            BackendError: The database failed before acknowledging anything (its subclass
                :class:`~multivec.errors.BackendUnavailableError` after retries); only the
                first request can have landed. Retrying the call is safe.
        """
        self._write(ids, vectors, metadata, texts, fdes, new=False)

    def _write(
        self,
        ids: Sequence[DocId],
        vectors: Sequence[npt.ArrayLike] | npt.NDArray[Any],
        metadata: Sequence[Mapping[str, Any] | None] | None,
        texts: Sequence[str | None] | None,
        fdes: npt.ArrayLike | None,
        *,
        new: bool,
    ) -> None:
        """:meth:`upsert`; with ``new`` the caller knows no id is stored (``Backend.insert``).

        Only the migration passes ``new``, for batches its ledger proves were never written.
        """
        keys = check_ids(ids)
        if len(vectors) != len(keys):
            raise InvalidInputError(f"got {len(keys)} ids but {len(vectors)} token matrices")
        matrices = check_token_matrices(vectors, self.info.dim, self.info.dtype)
        metas = check_metadata(metadata, len(keys))
        docs_texts = check_texts(texts, len(keys))
        meta_bytes = [len(json.dumps(m, ensure_ascii=False).encode()) for m in metas]
        given = None if fdes is None else self._checked_fdes(fdes, len(keys))
        if not keys:
            return
        # The database's own limits, for every document before the first request: a batch
        # refused half way would leave the earlier ones written.
        for key, meta, text in zip(keys, metas, docs_texts, strict=True):
            problem = self._backend.document_problem(key, meta, text)
            if problem is not None:
                raise InvalidInputError(problem + "; nothing was written")
        limit = self._backend.max_tokens
        for key, matrix in zip(keys, matrices, strict=True):
            if limit is not None and matrix.shape[0] > limit:
                raise InvalidInputError(
                    f"document {key_to_id(key)!r} has {matrix.shape[0]} tokens, over the {limit} "
                    f"per document that {self._backend!r} holds (see its documentation); "
                    "split it into passages; nothing was written"
                )
        written: list[str] = []
        for start, stop in self._byte_batches(keys, matrices, meta_bytes, docs_texts):
            batch_vectors = matrices[start:stop]
            batch_fdes = (
                self._fde.encode_documents([m.astype(np.float32) for m in batch_vectors])
                if given is None
                else given[start:stop]
            )
            batch = WriteBatch(
                keys[start:stop],
                batch_fdes,
                batch_vectors,
                metas[start:stop],
                docs_texts[start:stop],
            )
            try:
                if new:
                    self._backend.insert(batch)
                else:
                    self._backend.upsert(batch)
            except PartialWriteError as exc:
                # The backend knows which of its batch landed (Weaviate reports per object).
                raise PartialWriteError(
                    f"upsert failed part way: {exc}",
                    [key_to_id(k) for k in written] + exc.written,
                    exc.not_written + [key_to_id(k) for k in keys[stop:]],
                    exc.unconfirmed,
                ) from exc
            except Exception as exc:
                if not written:
                    # Nothing acknowledged: the typed error itself says what went wrong.
                    raise
                # A refusal stores nothing; a lost connection or timeout leaves it unknown.
                refused = isinstance(exc, MultivecError) and not isinstance(
                    exc, BackendUnavailableError
                )
                failed = [key_to_id(k) for k in batch.keys]
                raise PartialWriteError(
                    f"upsert failed part way: {exc}",
                    [key_to_id(k) for k in written],
                    (failed if refused else []) + [key_to_id(k) for k in keys[stop:]],
                    [] if refused else failed,
                ) from exc
            written.extend(batch.keys)

    def _checked_fdes(self, fdes: npt.ArrayLike, n: int) -> npt.NDArray[np.float32]:
        matrix = np.asarray(fdes)
        expected = (n, self.info.fde_dim)
        if matrix.shape != expected or not np.issubdtype(matrix.dtype, np.number):
            raise InvalidInputError(
                f"fdes must be a numeric {expected[0]} x {expected[1]} matrix (one FDE per "
                f"document, this collection's FDE dimension), got shape {matrix.shape}; leave "
                "fdes out to have them encoded from the tokens"
            )
        matrix = matrix.astype(np.float32, copy=False)
        if not np.isfinite(matrix).all():
            raise InvalidInputError("fdes hold NaN or infinity; leave fdes out to encode them")
        return matrix

    def _byte_batches(
        self,
        keys: list[str],
        matrices: list[npt.NDArray[Any]],
        meta_bytes: list[int],
        texts: list[str | None],
    ) -> Iterator[tuple[int, int]]:
        fde_bytes = 4 * self.info.fde_dim
        start, size = 0, 0
        for i, matrix in enumerate(matrices):
            doc = fde_bytes + matrix.nbytes + meta_bytes[i] + len(keys[i]) + len(texts[i] or "") * 4
            if doc > self._request_bytes:
                raise InvalidInputError(
                    f"document {key_to_id(keys[i])!r} needs {doc} bytes, over the "
                    f"{self._request_bytes}-byte request limit of this backend; split it or "
                    "reduce its tokens (e.g. token pooling)"
                )
            if size + doc > self._request_bytes and i > start:
                yield start, i
                start, size = i, 0
            size += doc
        yield start, len(matrices)

    def delete(self, ids: Sequence[DocId]) -> None:
        """Delete documents by id; ids that are not stored are ignored."""
        keys = [id_to_key(i) for i in ids]
        if keys:
            self._backend.delete(keys)

    # --- reading -------------------------------------------------------------------------------

    def get(self, ids: Sequence[DocId]) -> list[Document]:
        """Return the stored documents for ``ids``, in that order; missing ids are left out."""
        keys = [id_to_key(i) for i in ids]
        fetched = self._backend.fetch(keys) if keys else None
        if fetched is None:
            return []
        found = _documents(fetched)
        by_key = {id_to_key(d.id): d for d in found}
        return [by_key[k] for k in keys if k in by_key]

    def iter_documents(
        self, batch_size: int = 256, *, start_after: DocId | None = None
    ) -> Iterator[list[Document]]:
        """Iterate over all documents in batches, in a stable order (by id, strings after ints).

        Args:
            batch_size: Documents per batch.
            start_after: Resume after this id (the last id of the last batch seen), e.g. after
                a crash; the batch size may differ between runs.
        """
        if batch_size < 1:
            raise InvalidInputError("batch_size must be at least 1")
        cursor = None if start_after is None else id_to_key(start_after)
        while True:
            fetched = self._backend.scan(cursor, batch_size)
            if not fetched.keys:
                return
            yield _documents(fetched)
            cursor = fetched.keys[-1]

    def iter_with_fdes(
        self, batch_size: int = 256, *, start_after: DocId | None = None
    ) -> Iterator[tuple[list[Document], npt.NDArray[np.float32]]]:
        """Like :meth:`iter_documents`, with each batch's FDEs as a float32 matrix.

        The FDEs are the stored ones where the database hands them back, else encoded again
        from the tokens (the same values under the same configuration).
        """
        for docs in self.iter_documents(batch_size, start_after=start_after):
            fdes = self._backend.fetch_fdes([id_to_key(d.id) for d in docs])
            if fdes is None:
                fdes = self._fde.encode_documents([d.vectors.astype(np.float32) for d in docs])
            yield docs, fdes

    # --- search --------------------------------------------------------------------------------

    def search(
        self,
        query_vectors: npt.ArrayLike,
        k: int = 10,
        candidates: int = 200,
        filter: Filter | Mapping[str, Any] | None = None,
        *,
        mode: SearchMode = "multivec",
        explain: bool = False,
    ) -> SearchResult:
        """Find the ``k`` documents with the highest exact MaxSim score.

        Args:
            query_vectors: The query's ``(n_tokens, dim)`` token matrix.
            k: How many hits to return.
            candidates: How many documents the FDE index returns for exact rescoring; more
                gives higher recall at higher latency (200 is a good start).
            filter: A :class:`~multivec.Filter` or dict filter on metadata, applied in the
                index search.
            mode: ``"multivec"`` (FDE first stage, then exact MaxSim: here, or inside the
                database where its backend's ``engine_rerank`` is set, as on Qdrant, in
                which case the ``ann`` timing holds both and ``rerank`` is 0); ``"native"``: the
                database's own exhaustive multi-vector search; ``"native-prefetch"``: the
                database's own two-stage path (ANN on the FDE for ``candidates``, then its
                MaxSim). The native modes exist to compare with, and report the database's
                scores; see the backend's ``supports_native_*`` flags.
            explain: Attach to each hit an :class:`~multivec.Explanation`: per query token, the
                document vector it matched and its contribution (they sum to the exact MaxSim
                score). Computed from the vectors fetched for the rerank, for the final hits
                only, outside the stage timings.

        Returns:
            The hits, best first, with the time spent in each stage.
        """
        if k < 1:
            raise InvalidInputError(f"k must be at least 1, got {k}")
        candidates = max(candidates, k)
        flt = Filter.parse(filter)
        t0 = time.perf_counter()
        query = check_query(query_vectors, self.info.dim)
        if mode == "native":
            return self._native(query, k, flt, None, t0, explain)
        if mode not in SEARCH_MODES:
            raise InvalidInputError(f"unknown search mode {mode!r}; use one of {SEARCH_MODES}")
        fde_query = self._query_fde.encode_queries([query])[0]
        if mode == "native-prefetch" or self._backend.engine_rerank:
            # The database's MaxSim over the FDE candidates, in one request (see engine_rerank).
            return self._native(query, k, flt, (fde_query, candidates), t0, explain)
        t1 = time.perf_counter()
        keys, _ = self._backend.ann(fde_query, candidates, flt)
        t2 = time.perf_counter()
        fetched = self._backend.fetch(keys)
        t3 = time.perf_counter()
        hits = self._rerank(query, fetched, k)
        t4 = time.perf_counter()
        if explain:
            hits = _explained(hits, query, fetched)
        return SearchResult(
            hits,
            StageTimings(t1 - t0, t2 - t1, t3 - t2, t4 - t3),
            len(keys),
            tuple(key_to_id(k) for k in fetched.keys),
        )

    def _native(
        self,
        query: npt.NDArray[np.float32],
        k: int,
        flt: Filter | None,
        prefetch: tuple[npt.NDArray[np.float32], int] | None,
        t0: float,
        explain: bool = False,
    ) -> SearchResult:
        t1 = time.perf_counter()
        keys, scores = self._backend.native_search(query, k, flt, prefetch=prefetch)
        t2 = time.perf_counter()
        fetched = self._backend.fetch(keys)
        t3 = time.perf_counter()
        found = {key: i for i, key in enumerate(fetched.keys)}
        metadata = fetched.metadata or [{}] * len(fetched.keys)
        texts = fetched.texts or [None] * len(fetched.keys)
        hits = tuple(
            Hit(key_to_id(key), float(score), metadata[found[key]], texts[found[key]])
            for key, score in zip(keys, scores, strict=True)
            if key in found
        )
        candidates = prefetch[1] if prefetch is not None else self.count()
        if explain:
            hits = _explained(hits, query, fetched)
        return SearchResult(hits, StageTimings(t1 - t0, t2 - t1, t3 - t2, 0.0), candidates)

    def _rerank(self, query: npt.NDArray[np.float32], fetched: Fetched, k: int) -> tuple[Hit, ...]:
        if not fetched.keys:
            return ()
        scores = maxsim_packed(query, fetched.tokens, fetched.offsets)
        # Ties are broken by key so every backend returns the same order for the same data.
        order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), fetched.keys[i]))[:k]
        metadata = fetched.metadata or [{}] * len(fetched.keys)
        texts = fetched.texts or [None] * len(fetched.keys)
        return tuple(
            Hit(key_to_id(fetched.keys[i]), float(scores[i]), metadata[i], texts[i]) for i in order
        )


def _explained(
    hits: tuple[Hit, ...], query: npt.NDArray[np.float32], fetched: Fetched
) -> tuple[Hit, ...]:
    # The final hits' vectors are already in `fetched`: explaining needs no other request.
    index = {key: i for i, key in enumerate(fetched.keys)}
    return tuple(
        dataclasses.replace(
            hit, explanation=explain_match(query, fetched.matrix(index[id_to_key(hit.id)]))
        )
        for hit in hits
    )


def _documents(fetched: Fetched) -> list[Document]:
    metadata = fetched.metadata or [{}] * len(fetched.keys)
    texts = fetched.texts or [None] * len(fetched.keys)
    return [
        Document(key_to_id(key), fetched.matrix(i), metadata[i], texts[i])
        for i, key in enumerate(fetched.keys)
    ]
