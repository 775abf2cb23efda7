"""The base64 decode loop of :mod:`multivec.backends._codec`, compiled with numba."""

# mypy: ignore-errors
# numba types this function when it compiles; its untyped decorator is noise under --strict.

from __future__ import annotations

from numba import njit

__all__ = ["decode_into"]


@njit(cache=True, nogil=True, boundscheck=False)
def decode_into(src, lut, out):
    """Decode base64 ``src`` (uint8, length a multiple of 4) into ``out`` (its exact size).

    The caller checked the lengths; ``=`` padding maps to 0 in ``lut`` and the bytes it stands
    for are not written.
    """
    quads = src.shape[0] // 4
    # Every quad but the last decodes to three whole bytes.
    for q in range(quads - 1):
        a = lut[src[4 * q]]
        b = lut[src[4 * q + 1]]
        c = lut[src[4 * q + 2]]
        d = lut[src[4 * q + 3]]
        out[3 * q] = (a << 2) | (b >> 4)
        out[3 * q + 1] = ((b & 15) << 4) | (c >> 2)
        out[3 * q + 2] = ((c & 3) << 6) | d
    if quads == 0:
        return
    q = quads - 1
    a = lut[src[4 * q]]
    b = lut[src[4 * q + 1]]
    c = lut[src[4 * q + 2]]
    d = lut[src[4 * q + 3]]
    n = out.shape[0]
    out[3 * q] = (a << 2) | (b >> 4)
    if 3 * q + 1 < n:
        out[3 * q + 1] = ((b & 15) << 4) | (c >> 2)
    if 3 * q + 2 < n:
        out[3 * q + 2] = ((c & 3) << 6) | d
