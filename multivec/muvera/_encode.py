"""Encoding batches of token matrices into FDEs, vectorised across documents.

A batch is processed in chunks of whole documents. Each chunk's tokens are stacked into one array,
and every step works on all of its tokens, repetitions and documents at once:

1. partition: the block of every token in every repetition (:mod:`multivec.muvera._partition`);
2. project: every token through every repetition's Count-Sketch (or not at all for the identity),
   in the same matmul that computes the partitioning scores;
3. aggregate: add each (token, repetition) row into the block ``(document, repetition, block)``;
   documents then divide by the block sizes (centroids), queries keep the sums;
4. fill (documents, if configured): copy a chosen token into every block left empty;
5. final projection (if configured): one Count-Sketch of each whole encoding.

The output of repetition r, block g sits at offset ``(r * 2**k + g) * d'``, as in the reference.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from multivec.errors import ConfigurationError, DimensionMismatchError, InvalidVectorsError
from multivec.muvera._config import FDEConfig
from multivec.muvera._fitted import KMeansPartitioner, fit_partitions, kmeans_projections
from multivec.muvera._kernels import scatter_add
from multivec.muvera._matrices import FDEMatrices, cached_matrices
from multivec.muvera._partition import Partitioner, SimHashPartitioner

__all__ = ["FDEEncoder", "encode_documents", "encode_queries", "fit"]

# Working memory per chunk. Smaller chunks also stay in cache better; 32 MiB is about 14,000
# tokens at the default configuration.
_CHUNK_BYTES = 32 << 20


class FDEEncoder:
    """Encodes documents and queries under one :class:`FDEConfig`.

    Creating an encoder is cheap: the random matrices are generated once per configuration and
    shared by every encoder of that configuration (and of its :meth:`~FDEConfig.for_queries` twin).
    Encoders hold no mutable state, so one can serve several threads.

    Args:
        config: The configuration. Use ``config.for_queries()`` for the encoder that encodes
            queries.
        chunk_bytes: Approximate working memory per chunk of documents, beyond the output itself.

    Example:
        >>> import numpy as np
        >>> config = FDEConfig.preset("muvera-2560", dim=4)
        >>> docs = [np.eye(4, dtype=np.float32), np.ones((2, 4), dtype=np.float32)]
        >>> FDEEncoder(config).encode_documents(docs).shape
        (2, 2560)
    """

    def __init__(self, config: FDEConfig, *, chunk_bytes: int = _CHUNK_BYTES) -> None:
        if not isinstance(config, FDEConfig):
            raise ConfigurationError(f"FDEEncoder needs an FDEConfig, got {type(config).__name__}")
        self._config = config
        self._matrices = cached_matrices(config)
        self._partitioner: Partitioner
        self._center: npt.NDArray[np.float32] | None = None
        if config.fitted is None:
            self._partitioner = SimHashPartitioner(self._matrices.hyperplanes)
        else:
            self._center, centroids = config.fitted.arrays(
                config.dim, config.repetitions, config.num_partitions
            )
            projections = kmeans_projections(
                config.seed, config.repetitions, config.dim, config.fitted.kmeans_dim
            )
            self._partitioner = KMeansPartitioner(projections, centroids)
        self._chunk_bytes = chunk_bytes
        # One matmul serves both the projection and the partitioning: [inner | score_matrix].
        inner = self._matrices.inner_dense
        parts = (
            [self._partitioner.score_matrix]
            if inner is None
            else [inner, self._partitioner.score_matrix]
        )
        self._weights = np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)
        self._n_projected = 0 if inner is None else inner.shape[1]

    @property
    def config(self) -> FDEConfig:
        """The configuration this encoder implements."""
        return self._config

    @property
    def matrices(self) -> FDEMatrices:
        """The random matrices of the configuration (read-only, shared between encoders)."""
        return self._matrices

    def encode_documents(self, documents: Iterable[npt.ArrayLike]) -> npt.NDArray[np.float32]:
        """Encode documents: block centroids, with empty blocks filled if ``fill_empty`` is set.

        Args:
            documents: One ``(n_tokens, dim)`` matrix per document (float16, float32 or float64;
                integers are converted too). A 3-D array is read as equally long documents.

        Returns:
            ``(len(documents), config.fde_dim)`` float32 encodings, one row per document.

        Raises:
            InvalidVectorsError: A document is empty, not 2-D, not numeric, or holds NaN or
                infinity.
            DimensionMismatchError: A document's token width is not ``config.dim``.
        """
        return self._encode(documents, is_document=True)

    def encode_queries(self, queries: Iterable[npt.ArrayLike]) -> npt.NDArray[np.float32]:
        """Encode queries: block sums, empty blocks left at zero.

        Args:
            queries: One ``(n_tokens, dim)`` matrix per query.

        Returns:
            ``(len(queries), config.fde_dim)`` float32 encodings.

        Raises:
            ConfigurationError: The configuration has ``fill_empty=True``, which is for documents
                only.
            InvalidVectorsError: A query is empty, not 2-D, not numeric, or holds NaN or infinity.
            DimensionMismatchError: A query's token width is not ``config.dim``.
        """
        if self._config.fill_empty:
            raise ConfigurationError(
                "fill_empty=True applies to documents only (the reference rejects it for "
                "queries); encode queries with config.for_queries(), the same configuration "
                "with fill_empty=False"
            )
        return self._encode(queries, is_document=False)

    def encode_document(self, document: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Encode one document; the same as ``encode_documents([document])[0]``."""
        fde: npt.NDArray[np.float32] = self.encode_documents([document])[0]
        return fde

    def encode_query(self, query: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Encode one query; the same as ``encode_queries([query])[0]``."""
        fde: npt.NDArray[np.float32] = self.encode_queries([query])[0]
        return fde

    def _encode(
        self, items: Iterable[npt.ArrayLike], *, is_document: bool
    ) -> npt.NDArray[np.float32]:
        noun = "document" if is_document else "query"
        matrices = _checked_matrices(items, self._config.dim, noun)
        config = self._config
        output = np.zeros((len(matrices), config.fde_dim), dtype=np.float32)
        lengths = np.array([matrix.shape[0] for matrix in matrices], dtype=np.int64)
        for start, stop in self._chunks(lengths):
            tokens = _stack_finite(matrices, start, stop, noun)
            if self._center is not None:
                tokens -= self._center
            if self._matrices.final is None:
                self._encode_chunk(tokens, lengths[start:stop], output[start:stop], is_document)
            else:
                raw = np.zeros((stop - start, config.raw_fde_dim), dtype=np.float32)
                self._encode_chunk(tokens, lengths[start:stop], raw, is_document)
                output[start:stop] = self._matrices.final.apply(raw)
        return output

    def _encode_chunk(
        self,
        tokens: npt.NDArray[np.float32],
        lengths: npt.NDArray[np.int64],
        out: npt.NDArray[np.float32],
        is_document: bool,
    ) -> None:
        """Write one chunk's encodings (before any final projection) into the zeroed ``out``."""
        config = self._config
        repetitions, n_parts, width = config.repetitions, config.num_partitions, config.block_dim
        token_doc = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths)

        # Steps 1 and 2: one matmul gives every token's projection for every repetition (columns
        # r*width .. r*width+width-1) followed by its partitioning scores.
        product = tokens @ self._weights
        scores = product[:, self._n_projected :]
        blocks = self._partitioner.assign(scores)
        if self._n_projected:
            values, rep_stride = product, width
        else:
            values, rep_stride = tokens, 0  # identity: every repetition reads the token itself

        # Step 3: `out` viewed as one block per row; block (doc, rep, part) is row `keys`.
        keys = (token_doc[:, None] * repetitions + np.arange(repetitions)) * n_parts + blocks
        rows = out.reshape(-1, width)
        scatter_add(rows, keys, values, rep_stride)
        if not is_document:
            return
        sizes = np.bincount(keys.reshape(-1), minlength=rows.shape[0])
        rows /= np.maximum(sizes, 1).astype(np.float32)[:, None]

        # Step 4: an empty block of a document takes one of its tokens (as projected for that rep).
        if not (config.fill_empty and n_parts > 1):
            return
        empty = np.flatnonzero(sizes == 0)
        if empty.size:
            doc, within_doc = np.divmod(empty, repetitions * n_parts)
            rep, block = np.divmod(within_doc, n_parts)
            source = self._partitioner.fill_sources(scores, blocks, token_doc, (doc, rep, block))
            columns = rep[:, None] * rep_stride + np.arange(width)
            rows[empty] = values[source[:, None], columns]

    def _chunks(self, lengths: npt.NDArray[np.int64]) -> list[tuple[int, int]]:
        """Split documents into consecutive ``(start, stop)`` ranges of ~``chunk_bytes`` work."""
        if lengths.size == 0:
            return []
        config = self._config
        repetitions = config.repetitions
        per_token = 4 * config.dim + repetitions * (
            5 * config.simhash_projections + 4 * config.block_dim + 32
        )
        # With a final projection each document also needs its raw encoding and two temporaries.
        per_doc = 12 * config.raw_fde_dim if config.final_dim is not None else 0
        cost = lengths * per_token + per_doc
        # A document starts a new chunk when the work before it crosses a multiple of the budget.
        before = np.cumsum(cost) - cost
        chunk_of_doc = before // max(self._chunk_bytes, 1)
        starts = np.flatnonzero(np.diff(chunk_of_doc, prepend=-1))
        stops = np.append(starts[1:], lengths.size)
        return list(zip(starts.tolist(), stops.tolist(), strict=True))


def encode_documents(
    documents: Iterable[npt.ArrayLike], config: FDEConfig
) -> npt.NDArray[np.float32]:
    """Encode documents with a shared :class:`FDEEncoder` for ``config``.

    Args:
        documents: One ``(n_tokens, dim)`` matrix per document.
        config: The document configuration.

    Returns:
        ``(len(documents), config.fde_dim)`` float32 encodings.

    Raises:
        InvalidVectorsError: A document is empty, not 2-D, not numeric, or holds NaN or infinity.
        DimensionMismatchError: A document's token width is not ``config.dim``.
    """
    return _shared_encoder(config).encode_documents(documents)


def encode_queries(queries: Iterable[npt.ArrayLike], config: FDEConfig) -> npt.NDArray[np.float32]:
    """Encode queries with a shared :class:`FDEEncoder` for ``config``.

    Args:
        queries: One ``(n_tokens, dim)`` matrix per query.
        config: The query configuration, ``fill_empty=False`` (see :meth:`FDEConfig.for_queries`).

    Returns:
        ``(len(queries), config.fde_dim)`` float32 encodings.

    Raises:
        ConfigurationError: ``config.fill_empty`` is set.
        InvalidVectorsError: A query is empty, not 2-D, not numeric, or holds NaN or infinity.
        DimensionMismatchError: A query's token width is not ``config.dim``.
    """
    return _shared_encoder(config).encode_queries(queries)


@functools.lru_cache(maxsize=16)
def _shared_encoder(config: FDEConfig) -> FDEEncoder:
    return FDEEncoder(config)


def _checked_matrices(
    items: Iterable[npt.ArrayLike], dim: int, noun: str
) -> list[npt.NDArray[np.generic]]:
    """Check the shape and type of every matrix, naming the first bad one by its index."""
    if isinstance(items, np.ndarray) and items.ndim != 3:
        raise InvalidVectorsError(
            f"expected a list of (n_tokens, {dim}) matrices, one per {noun}, or a 3-D array; "
            f"got an array of shape {items.shape}. To encode a single {noun}, wrap it in a list"
        )
    matrices = []
    for index, item in enumerate(items):
        matrix = np.asarray(item)
        if matrix.dtype.kind not in "fiu":
            raise InvalidVectorsError(
                f"{noun} {index}: token vectors must be real numbers, got dtype {matrix.dtype}"
            )
        if matrix.ndim != 2:
            raise InvalidVectorsError(
                f"{noun} {index} has shape {matrix.shape}; expected a 2-D (n_tokens, {dim}) matrix"
            )
        if matrix.shape[0] == 0:
            raise InvalidVectorsError(
                f"{noun} {index} has no token vectors; an empty {noun} has no encoding, "
                "so drop it or give it at least one token"
            )
        if matrix.shape[1] != dim:
            raise DimensionMismatchError(
                f"{noun} {index} has tokens of width {matrix.shape[1]}, "
                f"but the FDE configuration expects dim={dim}"
            )
        matrices.append(matrix)
    return matrices


def _stack_finite(
    matrices: list[npt.NDArray[np.generic]], start: int, stop: int, noun: str
) -> npt.NDArray[np.float32]:
    """Stack ``matrices[start:stop]`` into one float32 array, refusing NaN and infinity."""
    # Values beyond float32's range become infinite here and are reported just below.
    with np.errstate(over="ignore"):
        tokens = np.concatenate(matrices[start:stop], axis=0, dtype=np.float32)
    finite = np.isfinite(tokens).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        ends = np.cumsum([matrix.shape[0] for matrix in matrices[start:stop]])
        within = int(np.searchsorted(ends, row, side="right"))
        token = row - (int(ends[within - 1]) if within else 0)
        raise InvalidVectorsError(
            f"{noun} {start + within} has a NaN or infinite value in token {token} "
            "(values beyond float32's range, about 3.4e38, count as infinite)"
        )
    return tokens


def fit(
    config: FDEConfig,
    documents: Iterable[npt.ArrayLike],
    *,
    sample_tokens: int = 50_000,
    iterations: int = 20,
    kmeans_dim: int = 64,
) -> FDEConfig:
    """Fit a data-aware (centred, k-means) configuration on a sample of the corpus.

    Use it when a collection is created, on a few thousand representative documents; the
    result holds the fitted arrays, is stored with the collection, and encodes every later
    document and query. Anisotropic encoders (ColBERT-style models whose token vectors share a
    dominant direction) need it; on isotropic ones it does no harm. See
    :mod:`multivec.muvera._fitted` for the method.

    Args:
        config: The shape to fit (repetitions, ``2**simhash_projections`` centroids per
            repetition, projection, seed); its partitioning is replaced by k-means.
        documents: Sample documents, ``(n_tokens, dim)`` each.
        sample_tokens: At most this many tokens fit the centroids (the mean uses all of them).
        iterations: Lloyd iterations after k-means++ seeding.
        kmeans_dim: Width of each repetition's random projection the centroids live in.

    Returns:
        A configuration with ``partitioning="kmeans"`` and the fitted arrays.

    Raises:
        InvalidVectorsError: The sample is empty, malformed, or has fewer tokens than partitions.
        ConfigurationError: ``sample_tokens``, ``iterations`` or ``kmeans_dim`` is out of range.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> docs = [rng.normal(size=(20, 8)).astype(np.float32) + 3 for _ in range(50)]
        >>> fitted = fit(FDEConfig.preset("muvera-1280", dim=8), docs, kmeans_dim=4)
        >>> fitted.partitioning, FDEEncoder(fitted).encode_documents(docs[:2]).shape
        ('kmeans', (2, 1280))
    """
    if sample_tokens < 1 or iterations < 0 or kmeans_dim < 1:
        raise ConfigurationError(
            "sample_tokens and kmeans_dim must be positive and iterations non-negative; got "
            f"sample_tokens={sample_tokens}, iterations={iterations}, kmeans_dim={kmeans_dim}"
        )
    matrices = _checked_matrices(documents, config.dim, "document")
    if not matrices:
        raise InvalidVectorsError("fit() needs at least one document")
    tokens = _stack_finite(matrices, 0, len(matrices), "document")
    fitted = fit_partitions(
        tokens,
        seed=config.seed,
        repetitions=config.repetitions,
        partitions=config.num_partitions,
        kmeans_dim=kmeans_dim,
        sample_tokens=sample_tokens,
        iterations=iterations,
    )
    return config._replace(partitioning="kmeans", fitted=fitted)
