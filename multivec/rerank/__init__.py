"""Exact MaxSim scoring: the rerank stage of late-interaction retrieval.

A document is a matrix of token vectors; its MaxSim score against a query matrix ``Q`` is
``sum_i max_j <Q[i], D[j]>``. The collection fetches the first-stage candidates packed into one
token matrix plus offsets and calls :func:`maxsim_packed`; :func:`maxsim` takes a list of
matrices instead.

Two implementations give the same scores (to float32 rounding):

* a fused, register-tiled numba kernel (:func:`maxsim_numba`, the ``multivec[numba]`` extra),
  about 3x the fastest NumPy formulation on two cores (``benchmarks/bench_maxsim.py``), that
  reads float16 documents as stored;
* the NumPy reference (:func:`maxsim_numpy`): one matrix product, then ``maximum.reduceat``.

The default ``backend="auto"`` uses numba when it can be imported and the environment variable
``MULTIVEC_DISABLE_NUMBA`` is not set to a true value (``1``, ``true``, ``yes``), else NumPy.
Importing this package does not import numba; the first numba call does, and compiles the
kernel once per machine (cached next to the sources, or under ``NUMBA_CACHE_DIR``).

Example:
    >>> import numpy as np
    >>> from multivec.rerank import maxsim
    >>> q = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    >>> docs = [np.array([[1.0, 0.0]], dtype=np.float32), np.eye(2, dtype=np.float32)]
    >>> maxsim(q, docs, backend="numpy").tolist()
    [1.0, 2.0]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from multivec.errors import InvalidInputError, InvalidVectorsError, MissingDependencyError
from multivec.rerank._numpy import maxsim_reference
from multivec.rerank._validate import check_docs, check_packed, check_query, pack_docs

__all__ = [
    "Backend",
    "maxsim",
    "maxsim_numba",
    "maxsim_numpy",
    "maxsim_packed",
    "numba_available",
    "pack",
]

Backend = Literal["auto", "numba", "numpy"]
"""Which implementation scores: ``"auto"`` picks numba when available and not disabled."""

DISABLE_NUMBA_ENV = "MULTIVEC_DISABLE_NUMBA"
"""Environment variable that, set to ``1``/``true``/``yes``/``on``, makes ``"auto"`` use NumPy."""

_numba_module: ModuleType | None = None
_numba_missing = False


def _load_numba() -> ModuleType | None:
    """Import the numba kernel module once; ``None`` (remembered) when numba is not installed."""
    global _numba_module, _numba_missing
    if _numba_module is None and not _numba_missing:
        try:
            from multivec.rerank import _numba
        except ImportError:
            _numba_missing = True
        else:
            _numba_module = _numba
    return _numba_module


def _disabled_by_env() -> bool:
    return os.environ.get(DISABLE_NUMBA_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def numba_available() -> bool:
    """Whether ``backend="auto"`` will use the numba kernel.

    Returns:
        True when numba can be imported and ``MULTIVEC_DISABLE_NUMBA`` is not set to a true
        value. The first call imports numba.
    """
    return not _disabled_by_env() and _load_numba() is not None


def _kernels(backend: str) -> ModuleType | None:
    """The numba kernel module to use, or ``None`` for NumPy."""
    if backend == "numpy":
        return None
    if backend == "numba":
        module = _load_numba()
        if module is None:
            raise MissingDependencyError("numba", "numba")
        return module
    if backend == "auto":
        return None if _disabled_by_env() else _load_numba()
    raise InvalidInputError(f"backend must be 'auto', 'numba' or 'numpy', got {backend!r}")


def _addresses(mats: Sequence[npt.NDArray[Any]]) -> npt.NDArray[np.int64]:
    """Data pointers of C-contiguous matrices (the caller keeps them alive while they are used)."""
    return np.array([m.__array_interface__["data"][0] for m in mats], dtype=np.int64)


def maxsim_packed(
    query: npt.ArrayLike,
    tokens: npt.ArrayLike,
    offsets: npt.ArrayLike,
    *,
    backend: Backend = "auto",
) -> npt.NDArray[np.float32]:
    """MaxSim of one query against documents packed into one token matrix.

    This is the hot path of a search: the collection packs the fetched candidates once and
    scores them here. Document values are not scanned (they were validated when written);
    only shapes and offsets are checked.

    Args:
        query: ``(n_q, dim)`` query token matrix (converted to float32; must be finite).
        tokens: ``(N, dim)`` float16 or float32 tokens of all documents, back to back. float16
            is read directly by the numba kernel, without a float32 copy.
        offsets: ``n_docs + 1`` integers: document ``i`` is ``tokens[offsets[i]:offsets[i + 1]]``;
            they start at 0, increase strictly and end at ``N``.
        backend: ``"auto"``, ``"numba"`` or ``"numpy"``.

    Returns:
        float32 array of shape ``(n_docs,)``.

    Raises:
        InvalidVectorsError: Empty or non-finite query, malformed tokens or offsets, or an
            empty document.
        DimensionMismatchError: Query and token widths differ.
        MissingDependencyError: ``backend="numba"`` without numba installed.
    """
    q = check_query(query)
    toks, offs = check_packed(tokens, offsets, q.shape[1])
    kernels = _kernels(backend)
    if kernels is None:
        return maxsim_reference(q, toks, offs)
    dim = q.shape[1]
    base = toks.__array_interface__["data"][0]
    addresses = base + offs[:-1] * (dim * toks.itemsize)
    # ``toks`` stays referenced until the kernel returns, so the addresses stay valid.
    scores: npt.NDArray[np.float32] = kernels.maxsim_addresses(
        q, addresses, np.diff(offs), dim, toks.dtype == np.float16
    )
    return scores


def maxsim(
    query: npt.ArrayLike, docs: Sequence[npt.ArrayLike], *, backend: Backend = "auto"
) -> npt.NDArray[np.float32]:
    """MaxSim of one query against each of a list of document token matrices.

    With numba the documents are scored where they lie (no packing copy); with NumPy they are
    packed first. Documents that are all float16 are read as float16; a mix is widened to
    float32.

    Args:
        query: ``(n_q, dim)`` query token matrix (converted to float32; must be finite).
        docs: Sequence of ``(n_i, dim)`` float16 or float32 matrices, lengths may differ.
        backend: ``"auto"``, ``"numba"`` or ``"numpy"``.

    Returns:
        float32 array of shape ``(len(docs),)``.

    Raises:
        InvalidVectorsError: Empty or non-finite query, or a document that is empty or not a
            2-D real matrix.
        DimensionMismatchError: A document's width differs from the query's.
        MissingDependencyError: ``backend="numba"`` without numba installed.
    """
    q = check_query(query)
    dim = q.shape[1]
    mats, half = check_docs(docs, dim)
    kernels = _kernels(backend)
    if kernels is None:
        tokens, offsets = pack_docs(mats, dim, np.float16 if half else np.float32)
        return maxsim_reference(q, tokens, offsets)
    lengths = np.array([m.shape[0] for m in mats], dtype=np.int64)
    scores: npt.NDArray[np.float32] = kernels.maxsim_addresses(
        q, _addresses(mats), lengths, dim, half
    )
    return scores


def maxsim_numpy(
    query: npt.ArrayLike, tokens: npt.ArrayLike, offsets: npt.ArrayLike
) -> npt.NDArray[np.float32]:
    """The NumPy reference: ``query @ tokens.T``, ``maximum.reduceat`` over offsets, sum.

    Args:
        query: ``(n_q, dim)`` query token matrix.
        tokens: ``(N, dim)`` float16 or float32 packed document tokens (float16 is widened).
        offsets: ``n_docs + 1`` document offsets into ``tokens``.

    Returns:
        float32 array of shape ``(n_docs,)``.

    Raises:
        InvalidVectorsError: As :func:`maxsim_packed`.
        DimensionMismatchError: As :func:`maxsim_packed`.
    """
    return maxsim_packed(query, tokens, offsets, backend="numpy")


def maxsim_numba(
    query: npt.ArrayLike, tokens: npt.ArrayLike, offsets: npt.ArrayLike
) -> npt.NDArray[np.float32]:
    """The fused numba kernel on packed documents, whatever ``MULTIVEC_DISABLE_NUMBA`` says.

    Args:
        query: ``(n_q, dim)`` query token matrix.
        tokens: ``(N, dim)`` float16 or float32 packed document tokens (read as stored).
        offsets: ``n_docs + 1`` document offsets into ``tokens``.

    Returns:
        float32 array of shape ``(n_docs,)``.

    Raises:
        InvalidVectorsError: As :func:`maxsim_packed`.
        DimensionMismatchError: As :func:`maxsim_packed`.
        MissingDependencyError: numba is not installed.
    """
    return maxsim_packed(query, tokens, offsets, backend="numba")


def pack(docs: Sequence[npt.ArrayLike]) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64]]:
    """Pack document matrices into ``(tokens, offsets)`` for :func:`maxsim_packed`.

    Args:
        docs: Non-empty ``(n_i, dim)`` matrices of one width.

    Returns:
        ``(tokens, offsets)``: float16 tokens when every document is float16, else float32.

    Raises:
        InvalidVectorsError: No documents, or one that is empty or not a 2-D real matrix.
        DimensionMismatchError: Documents of different widths.
    """
    if len(docs) == 0:
        raise InvalidVectorsError("pack() needs at least one document to know the token width")
    first = np.asarray(docs[0])
    dim = first.shape[1] if first.ndim == 2 else -1
    mats, half = check_docs(docs, dim, width_of="document 0")
    return pack_docs(mats, dim, np.float16 if half else np.float32)
