"""The plain NumPy MaxSim: the reference every faster kernel is checked against.

One matrix product scores every query token against every token of every candidate, then
``np.maximum.reduceat`` takes each document's maximum per query token, and a sum over query
tokens gives the score. It is the fastest NumPy formulation measured on this project's
machines (faster than a loop per document and than a padded ``einsum``), but it writes the
whole ``n_q x N`` score matrix to memory, which a fused kernel avoids.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["maxsim_reference"]


def maxsim_reference(
    query: npt.NDArray[np.float32], tokens: npt.NDArray[Any], offsets: npt.NDArray[np.int64]
) -> npt.NDArray[np.float32]:
    """MaxSim of one query against packed documents, computed with NumPy.

    Inputs are trusted (validated by the public functions): offsets start at 0, increase
    strictly and end at ``len(tokens)``.

    Args:
        query: ``(n_q, dim)`` float32 query.
        tokens: ``(N, dim)`` float16 or float32 tokens of all documents, back to back.
        offsets: ``n_docs + 1`` int64 offsets; document ``i`` is
            ``tokens[offsets[i]:offsets[i + 1]]``.

    Returns:
        float32 score of each document. float16 tokens are widened to float32 first, so the
        result is exact MaxSim over the stored (rounded) values.
    """
    n_docs = offsets.shape[0] - 1
    if n_docs == 0:
        return np.empty(0, dtype=np.float32)
    scores = query @ tokens.astype(np.float32, copy=False).T
    maxima = np.maximum.reduceat(scores, offsets[:-1], axis=1)
    total: npt.NDArray[np.float32] = maxima.sum(axis=0, dtype=np.float32)
    return total
