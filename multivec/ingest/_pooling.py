"""Fewer vectors per document at little cost: token pooling and vector budgets.

Both are plain functions from one ``(n_tokens, dim)`` matrix to a shorter one, so either can
be used as an ingest hook between the encoder and the collection:

* :func:`pool_tokens` merges similar document vectors. The vectors are clustered
  hierarchically (Ward linkage, scipy) into ``ceil(n / pool_factor)`` clusters, and each
  cluster is replaced by the mean of its vectors, L2-normalised again. With a pool factor of
  2 a document keeps half its vectors; MaxSim changes little because the merged vectors were
  near each other in the first place (``benchmarks/bench_pooling.py`` measures how little).
* :func:`keep_first` keeps the first ``budget`` vectors, for encoders that order their output
  by importance (or when the start of a chunk matters most).

Pool documents only: a query's vectors are few and each one contributes a term to the score.

Note that a pooled document's rows no longer correspond to tokens, so match explanations of
pooled documents name clusters, not token spans; :func:`keep_first` keeps the first rows
unchanged, so their spans stay valid.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from multivec.errors import InvalidInputError, InvalidVectorsError, MissingDependencyError

__all__ = ["cluster_labels", "keep_first", "pool_tokens"]

# Below this a norm is treated as zero, so a zero mean does not become NaNs.
_NORM_FLOOR = 1e-12


def _as_matrix(vectors: ArrayLike) -> NDArray[Any]:
    matrix = np.asarray(vectors)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise InvalidVectorsError(
            f"expected one non-empty (n_tokens, dim) matrix, got shape {matrix.shape}"
        )
    if not np.issubdtype(matrix.dtype, np.floating):
        raise InvalidVectorsError(f"expected floating-point vectors, got dtype {matrix.dtype}")
    return matrix


def pool_tokens(
    vectors: ArrayLike,
    pool_factor: float = 2,
    *,
    protected: int = 0,
    normalize: bool = True,
) -> NDArray[Any]:
    """Merge similar token vectors of one document by hierarchical clustering.

    The vectors (after the first ``protected`` ones, which are kept as they are) are grouped
    into ``ceil(m / pool_factor)`` clusters by Ward linkage on their float32 values; each
    cluster becomes the mean of its members, re-normalised to unit length. Clusters come out
    in the order of their first member, so the result is deterministic. ``pool_factor=1``
    returns the input unchanged (a copy).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> doc = rng.normal(size=(10, 8)).astype(np.float32)
        >>> pool_tokens(doc, pool_factor=3).shape
        (4, 8)

    Args:
        vectors: ``(n_tokens, dim)`` float matrix of one document.
        pool_factor: How many vectors become one, on average; at least 1 (2 to 4 is typical).
        protected: Keep this many leading vectors unpooled, e.g. 1 for a ``[CLS]`` token, or 2
            for ``[CLS]`` and a ColBERT ``[D]`` marker. They stay first in the output.
        normalize: L2-normalise each merged vector (leave on for cosine-trained models).

    Returns:
        The pooled matrix, of ``protected + ceil((n - protected) / pool_factor)`` rows (fewer
        only when vectors repeat exactly) and the input's dtype.

    Raises:
        InvalidVectorsError: ``vectors`` is not a non-empty 2-D floating-point matrix.
        InvalidInputError: ``pool_factor`` is below 1 or ``protected`` is negative.
        MissingDependencyError: scipy is not installed (``pip install "multivec[ingest]"``).
    """
    matrix = _as_matrix(vectors)
    if isinstance(pool_factor, bool) or not pool_factor >= 1:
        raise InvalidInputError(f"pool_factor must be at least 1, got {pool_factor!r}")
    if isinstance(protected, bool) or not isinstance(protected, int) or protected < 0:
        raise InvalidInputError(f"protected must be a non-negative integer, got {protected!r}")
    kept = matrix[:protected]
    rest = matrix[protected:]
    n = rest.shape[0]
    clusters = math.ceil(n / pool_factor)
    if clusters >= n:
        unchanged: NDArray[Any] = matrix.copy()
        return unchanged
    labels = cluster_labels(rest, clusters)
    pooled = _cluster_means(rest.astype(np.float32), labels)
    if normalize:
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        pooled /= np.maximum(norms, _NORM_FLOOR)
    return np.concatenate([kept, pooled.astype(matrix.dtype, copy=False)])


def cluster_labels(vectors: ArrayLike, clusters: int) -> NDArray[np.intp]:
    """Assign each vector to one of ``clusters`` Ward clusters, numbered by first member.

    This is the clustering :func:`pool_tokens` uses, exposed so a caller can keep the mapping
    from tokens to pooled vectors (e.g. to explain a pooled match by its member tokens).

    Args:
        vectors: ``(n, dim)`` float matrix, ``n >= 1``.
        clusters: Number of clusters, between 1 and ``n``.

    Returns:
        ``(n,)`` labels in ``0 .. clusters - 1``: label 0 is the cluster of vector 0, label 1
        the cluster of the first vector not in cluster 0, and so on.

    Raises:
        InvalidVectorsError: ``vectors`` is not a non-empty 2-D floating-point matrix.
        InvalidInputError: ``clusters`` is out of range.
        MissingDependencyError: scipy is not installed.
    """
    matrix = _as_matrix(vectors)
    n = matrix.shape[0]
    if isinstance(clusters, bool) or not isinstance(clusters, int) or not 1 <= clusters <= n:
        raise InvalidInputError(f"clusters must be between 1 and {n}, got {clusters!r}")
    if clusters == n:
        return np.arange(n, dtype=np.intp)
    if clusters == 1:
        return np.zeros(n, dtype=np.intp)
    try:
        from scipy.cluster.hierarchy import fcluster, linkage
    except ImportError as exc:
        raise MissingDependencyError("scipy", "ingest") from exc
    # Ward on float64: float16 inputs would make the merge order depend on rounding.
    tree = linkage(matrix.astype(np.float64), method="ward")
    raw = np.asarray(fcluster(tree, t=clusters, criterion="maxclust"), dtype=np.intp)
    # fcluster numbers clusters arbitrarily; renumber by first appearance.
    _, first = np.unique(raw, return_index=True)
    order = np.argsort(first)
    renumber = np.empty(order.size, dtype=np.intp)
    renumber[order] = np.arange(order.size, dtype=np.intp)
    _, inverse = np.unique(raw, return_inverse=True)
    labels: NDArray[np.intp] = renumber[inverse.reshape(-1)]
    return labels


def _cluster_means(matrix: NDArray[np.float32], labels: NDArray[np.intp]) -> NDArray[np.float32]:
    # Ward yields the requested count for distinct points; repeated points can give fewer.
    count = int(labels.max()) + 1
    sums = np.zeros((count, matrix.shape[1]), dtype=np.float32)
    np.add.at(sums, labels, matrix)
    sizes = np.bincount(labels, minlength=count).astype(np.float32)
    means: NDArray[np.float32] = sums / sizes[:, None]
    return means


def keep_first(vectors: ArrayLike, budget: int) -> NDArray[Any]:
    """Keep at most the first ``budget`` vectors of one document.

    Meant for encoders that order vectors by importance, or as a hard cap on storage per
    document. The rows kept are unchanged, so token spans of explanations stay valid.

    Example:
        >>> import numpy as np
        >>> keep_first(np.ones((100, 4), dtype=np.float32), budget=32).shape
        (32, 4)

    Args:
        vectors: ``(n_tokens, dim)`` float matrix of one document.
        budget: The most vectors to keep; at least 1.

    Returns:
        The first ``min(n, budget)`` rows (a copy).

    Raises:
        InvalidVectorsError: ``vectors`` is not a non-empty 2-D floating-point matrix.
        InvalidInputError: ``budget`` is below 1.
    """
    matrix = _as_matrix(vectors)
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise InvalidInputError(f"budget must be a positive integer, got {budget!r}")
    kept: NDArray[Any] = matrix[:budget].copy()
    return kept
