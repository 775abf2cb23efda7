"""Token matrices as base64 text (Qdrant's payload copy, Milvus's VARCHAR chunks)."""

from __future__ import annotations

import numpy as np
import pytest

from multivec.backends import _codec
from multivec.backends._codec import decode_tokens, encode_tokens
from multivec.errors import BackendError
from multivec.rerank import DISABLE_NUMBA_ENV


@pytest.mark.parametrize("numba", [True, False], ids=["numba", "binascii"])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_round_trip_is_bit_exact(numba: bool, dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every byte comes back, for widths that leave 0, 1 or 2 padding characters."""
    if not numba:
        monkeypatch.setenv(DISABLE_NUMBA_ENV, "1")
    rng = np.random.default_rng(0)
    for dim in (1, 2, 3, 7, 128, 384):
        mats = [rng.normal(size=(n, dim)).astype(dtype) for n in (1, 2, 3, 5, 180)]
        mats[0][0, 0] = np.nan  # any bit pattern survives, not only finite values
        fetched = decode_tokens(
            [f"s:{i}" for i in range(len(mats))], [encode_tokens(m) for m in mats], dim, dtype
        )
        assert fetched.tokens.dtype == np.dtype(dtype)
        for i, m in enumerate(mats):
            assert fetched.matrix(i).tobytes() == m.tobytes(), (dim, i)


def test_big_endian_input_is_stored_little_endian() -> None:
    """The stored bytes do not depend on the byte order of the array given."""
    m = np.arange(6, dtype=">f4").reshape(2, 3)
    assert encode_tokens(m) == encode_tokens(m.astype("<f4"))


@pytest.mark.parametrize("text", ["AAA", "AAAAAA==", "AAAA"])
def test_text_that_is_not_whole_tokens_is_an_error(text: str) -> None:
    """Wrong lengths mean the data was not written by multivec: say so, never guess."""
    with pytest.raises(BackendError, match="changed outside multivec"):
        decode_tokens(["s:x"], [text], 4, "float32")


@pytest.mark.parametrize("helper_busy", [False, True])
def test_large_fetches_decode_the_same_on_two_threads(helper_busy: bool) -> None:
    """Over the parallel threshold both halves land in place, and a busy helper is not waited on."""
    rng = np.random.default_rng(1)
    mats = [rng.normal(size=(int(n), 384)).astype(np.float16) for n in rng.integers(1, 300, 60)]
    assert sum(m.nbytes for m in mats) > _codec._PARALLEL_BYTES
    keys = [f"s:{i}" for i in range(len(mats))]
    if helper_busy:
        assert _codec._helper_idle.acquire(blocking=False)
    try:
        fetched = decode_tokens(keys, [encode_tokens(m) for m in mats], 384, "float16")
    finally:
        if helper_busy:
            _codec._helper_idle.release()
    for i, m in enumerate(mats):
        np.testing.assert_array_equal(fetched.matrix(i), m)
