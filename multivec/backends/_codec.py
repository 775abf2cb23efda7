"""Token matrices as base64 text, for databases whose fast columns are strings.

Qdrant's payload and Milvus's VARCHAR are the only columns those databases return quickly from
Python: their vector columns come back as Python lists of floats (Qdrant Edge: about 2 s per
million values to turn into NumPy; Milvus Lite: a Python loop per value on the server). A token
matrix is stored instead as the base64 of its little-endian bytes at the stored precision
(float16 or float32), so it round-trips bit for bit and costs 4/3 of its raw size.

Decoding is the hot part of a search's fetch stage: about 37 MB of text for 200 candidates of
180 tokens x 384 dims. ``binascii`` decodes about 0.45 GB/s here; the numba loop below about
2.5 GB/s, and it writes straight into the packed array the rerank kernel reads.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

from multivec import rerank
from multivec.backends._base import Fetched
from multivec.errors import BackendError

__all__ = ["CHUNK_CHARS", "decode_tokens", "encode_tokens"]

CHUNK_CHARS = 65_532
"""Longest chunk that fits a 65,535-byte VARCHAR and keeps every chunk a whole base64 quad."""

_LUT = np.zeros(256, dtype=np.uint8)
for _i, _c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"):
    _LUT[_c] = _i


def encode_tokens(matrix: npt.NDArray[Any]) -> str:
    """The base64 text of a token matrix's little-endian bytes."""
    data = np.ascontiguousarray(matrix, dtype=matrix.dtype.newbyteorder("<"))
    return base64.b64encode(data.tobytes()).decode("ascii")


# Below this many decoded bytes a second thread costs more than it saves.
_PARALLEL_BYTES = 1 << 20
_pool: tuple[int, ThreadPoolExecutor] | None = None
_helper_idle = threading.Lock()


def _helper() -> ThreadPoolExecutor | None:
    """One helper thread where a second core exists, made anew in a forked child."""
    global _pool
    # sched_getaffinity sees container CPU limits that os.cpu_count() does not.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if (cores or 1) < 2:
        return None
    # A pool inherited through fork has no thread behind it: work sent there would never run.
    if _pool is None or _pool[0] != os.getpid():
        _pool = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="multivec-decode"))
    return _pool[1]


def _decoder() -> Any:
    """The numba decode loop, or ``None`` when numba is off (see :mod:`multivec.rerank`)."""
    if not rerank.numba_available():
        return None
    from multivec.backends import _codec_numba

    return _codec_numba.decode_into


def decode_tokens(
    keys: list[str],
    texts: Sequence[str],
    dim: int,
    dtype: str,
    metadata: list[dict[str, Any]] | None = None,
    doc_texts: list[str | None] | None = None,
) -> Fetched:
    """Decode one base64 text per document into a packed :class:`Fetched`.

    Args:
        keys: The documents' keys.
        texts: Each document's base64 text (chunks already joined).
        dim: The token width.
        dtype: The stored precision, ``"float16"`` or ``"float32"``.
        metadata: Passed through to the result.
        doc_texts: The documents' source texts, passed through to the result.

    Raises:
        BackendError: A stored text is not the base64 of whole tokens of this width and
            precision: the database holds something multivec did not write.
    """
    item = np.dtype(dtype).newbyteorder("<")
    row_bytes = dim * item.itemsize
    sizes = [len(t) // 4 * 3 - t[-2:].count("=") for t in texts]
    for key, text, size in zip(keys, texts, sizes, strict=True):
        if len(text) % 4 or size % row_bytes:
            raise BackendError(
                f"the stored tokens of document {key[2:]!r} are not base64 of {dim}-wide "
                f"{dtype} tokens; the collection was changed outside multivec"
            )
    offsets = np.zeros(len(keys) + 1, dtype=np.int64)
    np.cumsum([size // row_bytes for size in sizes], out=offsets[1:])
    tokens = np.empty((int(offsets[-1]), dim), dtype=item)
    raw = tokens.reshape(-1).view(np.uint8)
    starts = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=starts[1:])
    decode = _decoder()
    if decode is None:
        for i, text in enumerate(texts):
            raw[starts[i] : starts[i + 1]] = np.frombuffer(binascii.a2b_base64(text), np.uint8)
    else:

        def run(docs: range) -> None:
            for i in docs:
                src = np.frombuffer(texts[i].encode("ascii"), dtype=np.uint8)
                decode(src, _LUT, raw[starts[i] : starts[i + 1]])

        # The loop releases the GIL: a second core decodes the second half of a large fetch.
        half = len(texts) // 2
        helper = _helper() if starts[-1] >= _PARALLEL_BYTES else None
        # Only when the helper is idle: concurrent searches would otherwise queue behind it.
        if helper is not None and _helper_idle.acquire(blocking=False):
            try:
                second = helper.submit(run, range(half, len(texts)))
                run(range(half))
                second.result()
            finally:
                _helper_idle.release()
        else:
            run(range(len(texts)))
    return Fetched(keys, tokens.astype(dtype, copy=False), offsets, metadata, doc_texts)
