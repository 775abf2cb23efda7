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
from collections.abc import Sequence
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
    decode = _decoder()
    lo = 0
    for text, size in zip(texts, sizes, strict=True):
        if decode is not None:
            decode(np.frombuffer(text.encode("ascii"), dtype=np.uint8), _LUT, raw[lo : lo + size])
        else:
            raw[lo : lo + size] = np.frombuffer(binascii.a2b_base64(text), dtype=np.uint8)
        lo += size
    return Fetched(keys, tokens.astype(dtype, copy=False), offsets, metadata, doc_texts)
