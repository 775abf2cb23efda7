"""Retrieval and latency metrics, each defined once and tested against hand-computed cases.

Two kinds of truth are scored against:

* **exact MaxSim**: brute-force scores of a query against every loaded document. A ranking is
  compared with the exact top ``k`` *tolerating ties*: every document whose exact score reaches
  the ``k``-th best score (within a small tolerance) is a correct answer, so a database that
  returns either of two documents tied at rank ``k`` is not charged with a miss;
* **relevance judgements** (BEIR qrels, graded): nDCG@10 with linear gain, as ``trec_eval``
  and BEIR compute it, and recall@100 over the documents judged relevant (score > 0).

Latencies are summarised by percentiles with linear interpolation between order statistics
(NumPy's default), the convention of most benchmark tools.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from multivec.errors import InvalidInputError

__all__ = [
    "PERCENTILES",
    "exact_threshold",
    "judged_recall_at_k",
    "ndcg_at_k",
    "percentiles",
    "recall_at_k",
]

PERCENTILES = (50, 95, 99)
"""The latency percentiles every measurement reports."""

# Scores within this relative distance of the k-th exact score count as tied with it: the
# database may rescore at another precision or sum in another order (float32 rounding).
_TIE_RTOL = 1e-5
_TIE_ATOL = 1e-6


def exact_threshold(scores: npt.ArrayLike, k: int) -> float:
    """The score a document needs to count among the exact top ``k``: the ``k``-th best, less ties.

    Args:
        scores: Exact scores of every document for one query.
        k: The rank cut-off; more than the number of documents means all of them.

    Returns:
        The ``k``-th highest score, lowered by the tie tolerance.

    Raises:
        InvalidInputError: ``k`` is below 1 or there are no scores.
    """
    values = np.asarray(scores, dtype=np.float64).ravel()
    if k < 1:
        raise InvalidInputError(f"k must be at least 1, got {k}")
    if values.size == 0:
        raise InvalidInputError("no exact scores to take a threshold from")
    kth = float(np.partition(values, values.size - min(k, values.size))[-min(k, values.size)])
    return kth - (_TIE_ATOL + _TIE_RTOL * abs(kth))


def recall_at_k(
    retrieved: Sequence[Any], exact: Mapping[Any, float], threshold: float, k: int
) -> float:
    """Recall of ``retrieved`` against the exact top ``k``, tolerating ties at rank ``k``.

    A retrieved document is correct when its exact score reaches ``threshold`` (from
    :func:`exact_threshold`); at most ``k`` correct answers count. Used for the final ranking
    (``retrieved`` holds ``k`` hits) and for the first stage (``retrieved`` holds every candidate:
    did the exact top ``k`` reach the rerank?).

    Example:
        Exact scores 5, 4, 3, 3, 1 tie at rank 3, so ``c`` and ``d`` are both right:

        >>> exact = {"a": 5.0, "b": 4.0, "c": 3.0, "d": 3.0, "e": 1.0}
        >>> t = exact_threshold(list(exact.values()), 3)
        >>> recall_at_k(["a", "b", "d"], exact, t, 3), recall_at_k(["a", "e"], exact, t, 3)
        (1.0, 0.3333333333333333)

    Args:
        retrieved: Document ids, any number, each at most once.
        exact: Exact score of every document by id.
        threshold: The tie-tolerant cut-off score for rank ``k``.
        k: The rank cut-off; capped at the number of documents.

    Returns:
        A value in ``[0, 1]``.

    Raises:
        InvalidInputError: ``k`` is below 1, or a retrieved id has no exact score (the database
            returned a document that was never loaded).
    """
    if k < 1:
        raise InvalidInputError(f"k must be at least 1, got {k}")
    wanted = min(k, len(exact))
    correct = 0
    for doc in set(retrieved):
        if doc not in exact:
            raise InvalidInputError(f"retrieved document {doc!r} has no exact score")
        if exact[doc] >= threshold:
            correct += 1
    return min(correct, wanted) / wanted if wanted else 0.0


def ndcg_at_k(ranked: Sequence[Any], qrels: Mapping[Any, int], k: int = 10) -> float | None:
    """nDCG@k of a ranking against graded relevance judgements (linear gain).

    ``DCG = sum(rel_i / log2(i + 1))`` over the first ``k`` ranks (from 1), divided by the same
    sum over the judgements sorted best first. Unjudged documents have relevance 0.

    Example:
        >>> round(ndcg_at_k(["x", "a", "b"], {"a": 2, "b": 1}, k=10), 4)
        0.6697

    Args:
        ranked: Document ids, best first.
        qrels: Relevance by document id for this query.
        k: The rank cut-off.

    Returns:
        The nDCG in ``[0, 1]``, or ``None`` when no document is judged relevant (the query
        cannot be scored and is left out of averages).
    """
    gains = sorted((g for g in qrels.values() if g > 0), reverse=True)[:k]
    if not gains:
        return None
    ideal = sum(g / math.log2(rank + 2) for rank, g in enumerate(gains))
    dcg = sum(
        max(qrels.get(doc, 0), 0) / math.log2(rank + 2) for rank, doc in enumerate(ranked[:k])
    )
    return dcg / ideal


def judged_recall_at_k(
    ranked: Sequence[Any], qrels: Mapping[Any, int], k: int = 100
) -> float | None:
    """Share of the documents judged relevant (score > 0) found in the first ``k`` ranks.

    Args:
        ranked: Document ids, best first.
        qrels: Relevance by document id for this query.
        k: The rank cut-off.

    Returns:
        The recall in ``[0, 1]``, or ``None`` when no document is judged relevant.
    """
    relevant = {doc for doc, g in qrels.items() if g > 0}
    if not relevant:
        return None
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def percentiles(values: Sequence[float] | npt.NDArray[Any]) -> dict[str, float]:
    """p50, p95, p99 and the mean of ``values``.

    Example:
        >>> percentiles([1.0, 2.0, 3.0, 4.0])["p50"]
        2.5

    Args:
        values: Measurements, at least one.

    Returns:
        ``{"p50": ..., "p95": ..., "p99": ..., "mean": ...}``.

    Raises:
        InvalidInputError: ``values`` is empty.
    """
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise InvalidInputError("no measurements to summarise")
    values = np.percentile(data, PERCENTILES)
    out = {f"p{p}": float(v) for p, v in zip(PERCENTILES, values, strict=True)}
    out["mean"] = float(data.mean())
    return out
