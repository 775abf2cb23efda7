"""Token pooling and vector budgets: shapes, assignments, identity, and real MiniLM vectors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from multivec.errors import InvalidInputError, InvalidVectorsError
from multivec.ingest import OnnxLateInteractionEncoder
from multivec.ingest._pooling import cluster_labels, keep_first, pool_tokens
from multivec.rerank import maxsim

MINILM_DIR = (
    Path(__file__).resolve().parents[1].parent / "shared" / "models" / "all-minilm-l6-v2-onnx"
)


def _unit(rng: np.random.Generator, n: int, dim: int = 16) -> np.ndarray:
    m = rng.normal(size=(n, dim)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


@pytest.mark.parametrize("n", [1, 2, 7, 50, 181])
@pytest.mark.parametrize("factor", [1, 2, 3, 4])
def test_pooled_rows_are_ceil_n_over_factor(n: int, factor: int) -> None:
    doc = _unit(np.random.default_rng(n * 10 + factor), n)
    pooled = pool_tokens(doc, pool_factor=factor)
    assert pooled.shape == (math.ceil(n / factor), doc.shape[1])
    assert pooled.dtype == doc.dtype
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1.0, atol=1e-5)


def test_factor_one_is_identity() -> None:
    doc = _unit(np.random.default_rng(0), 40)
    pooled = pool_tokens(doc, pool_factor=1)
    np.testing.assert_array_equal(pooled, doc)
    assert pooled is not doc


def test_every_vector_is_assigned_and_pooled_vectors_are_cluster_means() -> None:
    doc = _unit(np.random.default_rng(1), 30)
    labels = cluster_labels(doc, 10)
    assert labels.shape == (30,)
    assert set(labels.tolist()) == set(range(10))
    # Numbered by first appearance: the first vector is in cluster 0, and so on.
    firsts = [int(np.flatnonzero(labels == c)[0]) for c in range(10)]
    assert firsts == sorted(firsts)
    pooled = pool_tokens(doc, pool_factor=3)
    for c in range(10):
        mean = doc[labels == c].mean(axis=0)
        np.testing.assert_allclose(pooled[c], mean / np.linalg.norm(mean), atol=1e-5)


def test_similar_vectors_are_merged_first() -> None:
    rng = np.random.default_rng(2)
    centres = _unit(rng, 4)
    # Each centre repeated with a little noise: pooling by 3 must recover the 4 groups.
    doc = np.concatenate([c + 0.01 * rng.normal(size=(3, 16)) for c in centres]).astype(np.float32)
    labels = cluster_labels(doc, 4)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    pooled = pool_tokens(doc, pool_factor=3)
    np.testing.assert_allclose(pooled, centres, atol=0.02)


def test_protected_tokens_are_kept_first_and_unchanged() -> None:
    doc = _unit(np.random.default_rng(3), 21)
    pooled = pool_tokens(doc, pool_factor=2, protected=2)
    assert pooled.shape[0] == 2 + math.ceil(19 / 2)
    np.testing.assert_array_equal(pooled[:2], doc[:2])


def test_float16_in_float16_out() -> None:
    doc = _unit(np.random.default_rng(4), 12).astype(np.float16)
    assert pool_tokens(doc, pool_factor=2).dtype == np.float16


def test_keep_first() -> None:
    doc = _unit(np.random.default_rng(5), 100)
    np.testing.assert_array_equal(keep_first(doc, 32), doc[:32])
    np.testing.assert_array_equal(keep_first(doc, 500), doc)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda d: pool_tokens(d, pool_factor=0.5), InvalidInputError, "pool_factor"),
        (lambda d: pool_tokens(d, protected=-1), InvalidInputError, "protected"),
        (lambda d: pool_tokens(d[:0]), InvalidVectorsError, "non-empty"),
        (lambda d: pool_tokens(d[0]), InvalidVectorsError, "matrix"),
        (lambda d: pool_tokens(d.astype(np.int32)), InvalidVectorsError, "floating"),
        (lambda d: keep_first(d, 0), InvalidInputError, "budget"),
        (lambda d: cluster_labels(d, 0), InvalidInputError, "clusters"),
    ],
)
def test_bad_input_raises(call: object, error: type[Exception], match: str) -> None:
    doc = _unit(np.random.default_rng(6), 8)
    with pytest.raises(error, match=match):
        call(doc)  # type: ignore[operator]


def test_pooling_real_minilm_vectors_keeps_maxsim_close() -> None:
    encoder = OnnxLateInteractionEncoder(MINILM_DIR, max_length=128, query_max_length=32)
    docs = list(
        encoder.embed(
            [
                "Token pooling merges document vectors that lie close together, so a "
                "multi-vector index stores fewer of them at a small cost in quality.",
                "Exact MaxSim sums, over the query tokens, the best similarity with any "
                "document token; every stored vector of every candidate is read.",
                "The weather in the mountains was cold and windy for most of the week.",
            ]
        )
    )
    (query,) = encoder.query_embed(["how does token pooling reduce storage?"])
    exact = maxsim(query, docs, backend="numpy")
    pooled = [pool_tokens(d, pool_factor=2, protected=1) for d in docs]
    approx = maxsim(query, pooled, backend="numpy")
    # Merged vectors lie near their members, so each query token's best match moves little.
    assert [p.shape[0] for p in pooled] == [1 + math.ceil((d.shape[0] - 1) / 2) for d in docs]
    assert int(np.argmax(approx)) == int(np.argmax(exact)) == 0
    np.testing.assert_allclose(approx, exact, rtol=0.1)
