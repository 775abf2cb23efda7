"""Exact MaxSim: the numba kernel against the NumPy reference and a naive loop, fallback, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import multivec.rerank as rerank
from multivec.errors import (
    DimensionMismatchError,
    InvalidInputError,
    InvalidVectorsError,
    MissingDependencyError,
)
from multivec.rerank import maxsim, maxsim_numba, maxsim_numpy, maxsim_packed, pack

needs_numba = pytest.mark.skipif(
    rerank._load_numba() is None, reason="numba is not installed (multivec[numba])"
)


def _ragged(
    seed: int, n_docs: int, dim: int, max_len: int, dtype: npt.DTypeLike = np.float32
) -> list[npt.NDArray[Any]]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_len + 1, n_docs)
    return [rng.standard_normal((int(n), dim)).astype(dtype) for n in lengths]


def _query(seed: int, n_q: int, dim: int) -> npt.NDArray[np.float32]:
    return np.random.default_rng(seed).standard_normal((n_q, dim)).astype(np.float32)


def _naive(query: npt.NDArray[np.float32], docs: list[npt.NDArray[Any]]) -> npt.NDArray[Any]:
    """MaxSim straight from the definition, in float64, one document at a time."""
    q = query.astype(np.float64)
    return np.array([(q @ d.astype(np.float64).T).max(axis=1).sum() for d in docs])


def _close(actual: npt.NDArray[Any], expected: npt.NDArray[Any]) -> None:
    assert actual.dtype == np.float32
    assert actual.shape == expected.shape
    # Scores are sums of n_q maxima; an absolute floor scaled by the largest score covers
    # cancellation in scores near zero.
    scale = float(np.abs(expected).max()) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * scale)


def test_public_surface_is_pinned() -> None:
    assert sorted(rerank.__all__) == [
        "Backend",
        "maxsim",
        "maxsim_numba",
        "maxsim_numpy",
        "maxsim_packed",
        "numba_available",
        "pack",
    ]


def test_golden_values() -> None:
    q = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    docs = [
        np.array([[1.0, 0.0]], dtype=np.float32),
        np.eye(2, dtype=np.float32),
        np.array([[-1.0, -2.0], [0.5, 0.25]], dtype=np.float32),
    ]
    for backend in ("numpy", "auto"):
        assert maxsim(q, docs, backend=backend).tolist() == [1.0, 2.0, 0.75]


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize(("dim", "n_q"), [(128, 32), (96, 20), (384, 7), (13, 37), (128, 1)])
def test_numba_matches_numpy_on_ragged_documents(dtype: type, dim: int, n_q: int) -> None:
    docs = _ragged(dim + n_q, n_docs=60, dim=dim, max_len=130, dtype=dtype)
    query = _query(n_q, n_q, dim)
    tokens, offsets = pack(docs)
    assert tokens.dtype == dtype
    expected = maxsim_numpy(query, tokens, offsets)
    _close(maxsim_numba(query, tokens, offsets), expected)
    _close(maxsim(query, docs, backend="numba"), expected)
    # float16 storage is scored on the stored (rounded) values, exactly like the reference.
    _close(expected, _naive(query, [d.astype(np.float32) for d in docs]).astype(np.float32))


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_every_query_length_and_tiny_documents(dtype: type) -> None:
    dim = 24
    docs = _ragged(3, n_docs=40, dim=dim, max_len=5, dtype=dtype)
    docs[:5] = [d[:1] for d in docs[:5]]  # single-token documents
    tokens, offsets = pack(docs)
    for n_q in range(1, 38):
        query = _query(n_q, n_q, dim)
        _close(maxsim_numba(query, tokens, offsets), maxsim_numpy(query, tokens, offsets))


@needs_numba
def test_long_documents_span_several_blocks_and_chunks() -> None:
    # Lengths around the kernel's 48-token blocks and 3..12-row tiles, plus many documents so
    # every thread gets several chunks.
    lengths = [1, 2, 3, 11, 12, 13, 47, 48, 49, 95, 96, 97, 300, 1030] * 12
    rng = np.random.default_rng(11)
    docs = [rng.standard_normal((n, 64)).astype(np.float32) for n in lengths]
    query = _query(5, 33, 64)
    _close(maxsim(query, docs, backend="numba"), _naive(query, docs).astype(np.float32))


@needs_numba
def test_unusual_layouts_and_dtypes() -> None:
    rng = np.random.default_rng(7)
    base = rng.standard_normal((40, 300)).astype(np.float32)
    docs: list[npt.NDArray[Any]] = [
        base[:10, :30],  # a strided view
        np.asfortranarray(base[10:20, 100:130]),
        base[20:25, 200:230].astype(np.float64),
        base[25:40, :30].astype(np.float16),  # mixed with float32: widened
    ]
    query = rng.standard_normal((6, 30)).astype(np.float64)
    expected = _naive(query.astype(np.float32), [d.astype(np.float32) for d in docs])
    _close(maxsim(query, docs, backend="numba"), expected.astype(np.float32))
    _close(maxsim(query, docs, backend="numpy"), expected.astype(np.float32))


@needs_numba
def test_list_and_packed_entry_points_agree() -> None:
    docs = _ragged(5, n_docs=30, dim=48, max_len=60, dtype=np.float16)
    query = _query(5, 11, 48)
    tokens, offsets = pack(docs)
    assert tokens.dtype == np.float16
    np.testing.assert_array_equal(maxsim(query, docs), maxsim_packed(query, tokens, offsets))


def test_no_documents() -> None:
    query = _query(0, 4, 8)
    for backend in ("numpy", "auto"):
        assert maxsim(query, [], backend=backend).shape == (0,)
        empty = np.empty((0, 8), dtype=np.float32)
        out = maxsim_packed(query, empty, np.zeros(1, dtype=np.int64), backend=backend)
        assert out.shape == (0,)
        assert out.dtype == np.float32


def test_env_var_forces_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = _ragged(2, n_docs=10, dim=16, max_len=20)
    query = _query(2, 9, 16)
    expected = maxsim(query, docs, backend="numpy")
    module = rerank._load_numba()
    if module is not None:

        def forbidden(*args: object, **kwargs: object) -> None:
            raise AssertionError("the numba kernel ran although it was disabled")

        monkeypatch.setattr(module, "maxsim_addresses", forbidden)
    monkeypatch.setenv("MULTIVEC_DISABLE_NUMBA", "1")
    assert not rerank.numba_available()
    np.testing.assert_array_equal(maxsim(query, docs), expected)
    np.testing.assert_array_equal(maxsim_packed(query, *pack(docs)), expected)


def test_missing_numba_falls_back_silently(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rerank, "_numba_module", None)
    monkeypatch.setattr(rerank, "_numba_missing", True)
    docs = _ragged(4, n_docs=5, dim=8, max_len=6)
    query = _query(4, 3, 8)
    assert not rerank.numba_available()
    _close(maxsim(query, docs), _naive(query, docs).astype(np.float32))
    with pytest.raises(MissingDependencyError, match=r"multivec\[numba\]"):
        maxsim_numba(query, *pack(docs))


def test_import_is_lazy_and_works_without_numba() -> None:
    # ``sys.modules["numba"] = None`` makes ``import numba`` fail as if it were not installed.
    code = (
        "import sys\n"
        "import multivec.rerank as r\n"
        "assert 'numba' not in sys.modules, 'importing multivec.rerank imported numba'\n"
        "sys.modules['numba'] = None\n"
        "import numpy as np\n"
        "q = np.ones((2, 3), np.float32)\n"
        "print(r.maxsim(q, [np.ones((4, 3), np.float16)]).tolist(), r.numba_available())\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "[6.0] False"


@pytest.mark.parametrize("backend", ["numpy", "auto"])
def test_errors(backend: rerank.Backend) -> None:
    q = _query(1, 4, 8)
    docs = _ragged(1, n_docs=3, dim=8, max_len=5)
    tokens, offsets = pack(docs)
    with pytest.raises(DimensionMismatchError, match="width 6"):
        maxsim(q, [*docs, np.ones((2, 6), np.float32)], backend=backend)
    with pytest.raises(DimensionMismatchError):
        maxsim_packed(q[:, :7], tokens, offsets, backend=backend)
    with pytest.raises(InvalidVectorsError, match="query is empty"):
        maxsim(q[:0], docs, backend=backend)
    with pytest.raises(InvalidVectorsError, match="2-D"):
        maxsim(q[0], docs, backend=backend)
    with pytest.raises(InvalidVectorsError, match="document 1 has no token"):
        maxsim(q, [docs[0], docs[1][:0]], backend=backend)
    for bad in (np.nan, np.inf, -np.inf):
        q_bad = q.copy()
        q_bad[2, 3] = bad
        with pytest.raises(InvalidVectorsError, match="NaN or infinity"):
            maxsim(q_bad, docs, backend=backend)
    with pytest.raises(InvalidVectorsError, match="real numbers"):
        maxsim(q, [np.array([["a"] * 8])], backend=backend)
    with pytest.raises(InvalidVectorsError, match="increase strictly"):
        maxsim_packed(q, tokens, np.array([0, 2, 2, len(tokens)]), backend=backend)
    with pytest.raises(InvalidVectorsError, match="increase strictly"):
        maxsim_packed(q, tokens, np.array([0, 3, 1, len(tokens)]), backend=backend)
    with pytest.raises(InvalidVectorsError, match="end at the number of tokens"):
        maxsim_packed(q, tokens, np.array([0, 1, len(tokens) + 1]), backend=backend)
    with pytest.raises(InvalidVectorsError, match="start at 0"):
        maxsim_packed(q, tokens, np.array([1, len(tokens)]), backend=backend)
    with pytest.raises(InvalidVectorsError, match="1-D integer"):
        maxsim_packed(q, tokens, np.array([0.0, float(len(tokens))]), backend=backend)
    with pytest.raises(InvalidVectorsError, match="2-D"):
        maxsim_packed(q, tokens[None], offsets, backend=backend)
    # Every validation error is also a ValueError, for callers that do not know multivec.
    with pytest.raises(ValueError, match="width"):
        maxsim(q, [np.ones((2, 6), np.float32)], backend=backend)


def test_bad_backend_and_pack_errors() -> None:
    q = _query(1, 2, 4)
    with pytest.raises(InvalidInputError, match="backend"):
        maxsim(q, [np.ones((1, 4), np.float32)], backend="gpu")  # type: ignore[arg-type]
    with pytest.raises(InvalidVectorsError, match="at least one document"):
        pack([])
    with pytest.raises(DimensionMismatchError, match="document 1 has token width 5 but document 0"):
        pack([np.ones((1, 4)), np.ones((1, 5))])
