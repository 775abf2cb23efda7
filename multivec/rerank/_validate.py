"""Input checks for the MaxSim functions, kept cheap on the document side.

The query is small, so it is checked fully (shape, type, finiteness). Documents can be hundreds
of megabytes per call; they were validated when they were written, so here only their shapes,
types and offsets are checked: O(number of documents), never O(tokens x width).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from multivec.errors import DimensionMismatchError, InvalidVectorsError

__all__ = ["check_docs", "check_packed", "check_query", "pack_docs"]

_STORAGE = (np.dtype(np.float16), np.dtype(np.float32))
"""Token dtypes the kernels read directly; any other real dtype is converted to float32."""


def _matrix(x: object, what: str) -> npt.NDArray[Any]:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise InvalidVectorsError(
            f"{what} must be a 2-D (tokens, dim) matrix, got an array of shape {arr.shape}"
        )
    if arr.dtype.kind not in "fiu":
        raise InvalidVectorsError(f"{what} must hold real numbers, got dtype {arr.dtype}")
    return arr


def _storage(arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The array itself when a kernel can read it (C-contiguous float16/32), else a float32 copy."""
    if arr.dtype in _STORAGE:
        return np.ascontiguousarray(arr)
    return np.ascontiguousarray(arr, dtype=np.float32)


def check_query(query: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Validate a query token matrix.

    Args:
        query: ``(n_q, dim)`` real-valued matrix.

    Returns:
        The query as C-contiguous float32.

    Raises:
        InvalidVectorsError: Not a 2-D real matrix, no tokens, zero width, NaN or infinity.
    """
    arr = _matrix(query, "the query")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidVectorsError(f"the query is empty (shape {arr.shape}); it needs tokens")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        raise InvalidVectorsError(
            "the query contains NaN or infinity (after conversion to float32)"
        )
    return out


def check_packed(
    tokens: npt.ArrayLike, offsets: npt.ArrayLike, dim: int
) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64]]:
    """Validate packed documents: document ``i`` is ``tokens[offsets[i]:offsets[i + 1]]``.

    Args:
        tokens: ``(N, dim)`` matrix of every document's tokens, back to back.
        offsets: ``n_docs + 1`` integers, starting at 0, strictly increasing, ending at ``N``.
        dim: The query's token width.

    Returns:
        ``(tokens, offsets)``: tokens C-contiguous float16 or float32 (other real dtypes are
        converted to float32), offsets int64.

    Raises:
        InvalidVectorsError: Malformed tokens or offsets, or an empty document.
        DimensionMismatchError: Token width differs from the query's.
    """
    toks = _matrix(tokens, "the packed document tokens")
    if toks.shape[1] != dim:
        raise DimensionMismatchError(
            f"document tokens have width {toks.shape[1]} but the query has width {dim}; "
            "were they encoded with the same model?"
        )
    offs = np.asarray(offsets)
    if offs.ndim != 1 or offs.shape[0] == 0 or offs.dtype.kind not in "iu":
        raise InvalidVectorsError(
            "offsets must be a 1-D integer array of length n_docs + 1, "
            f"got dtype {offs.dtype} and shape {offs.shape}"
        )
    offs = offs.astype(np.int64, copy=False)
    if offs[0] != 0 or offs[-1] != toks.shape[0]:
        raise InvalidVectorsError(
            f"offsets must start at 0 and end at the number of tokens ({toks.shape[0]}), "
            f"got {int(offs[0])} ... {int(offs[-1])}"
        )
    steps = np.diff(offs)
    if steps.size and steps.min() <= 0:
        bad = int(np.argmax(steps <= 0))
        raise InvalidVectorsError(
            f"offsets must increase strictly (every document needs at least one token): "
            f"document {bad} spans offsets {int(offs[bad])} to {int(offs[bad + 1])}"
        )
    return _storage(toks), offs


def check_docs(
    docs: Sequence[npt.ArrayLike], dim: int, width_of: str = "the query"
) -> tuple[list[npt.NDArray[Any]], bool]:
    """Validate a list of document token matrices without copying the ones a kernel can read.

    Args:
        docs: Sequence of ``(n_i, dim)`` matrices (ragged lengths allowed).
        dim: The expected token width.
        width_of: What ``dim`` is the width of, for error messages.

    Returns:
        ``(matrices, half)``: C-contiguous matrices, all float16 (``half``) or all float32.
        Documents are copied only when they are not contiguous or when float16 documents are
        mixed with others (they are then widened to float32).

    Raises:
        InvalidVectorsError: A document that is not a 2-D real matrix or has no tokens.
        DimensionMismatchError: A document's token width differs from the query's.
    """
    mats = []
    for i, doc in enumerate(docs):
        arr = _matrix(doc, f"document {i}")
        if arr.shape[0] == 0:
            raise InvalidVectorsError(f"document {i} has no token vectors")
        if arr.shape[1] != dim:
            raise DimensionMismatchError(
                f"document {i} has token width {arr.shape[1]} but {width_of} has width {dim}; "
                "were they encoded with the same model?"
            )
        mats.append(arr)
    half = bool(mats) and all(m.dtype == np.float16 for m in mats)
    dtype = np.float16 if half else np.float32
    return [np.ascontiguousarray(m, dtype=dtype) for m in mats], half


def pack_docs(
    mats: Sequence[npt.NDArray[Any]], dim: int, dtype: npt.DTypeLike
) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64]]:
    """Concatenate validated matrices into ``(tokens, offsets)`` (one copy of every token)."""
    offsets = np.zeros(len(mats) + 1, dtype=np.int64)
    np.cumsum([m.shape[0] for m in mats], out=offsets[1:])
    tokens = np.concatenate(mats) if mats else np.empty((0, dim), dtype=dtype)
    return tokens, offsets
