"""The fused MaxSim kernel, compiled with numba (the optional ``multivec[numba]`` extra).

Importing this module imports numba; :mod:`multivec.rerank` does so on the first call only.

How the kernel works, and why (figures measured on this project's 2-core AMD EPYC, which
reports Zen 4 with AVX-512; one core unless said; sgemm reaches about 105 GFLOP/s per core):

* **Register tile, outer-product form.** The query is cut into tiles of up to 32 tokens (four
  8-lane vectors); a tile is scored against ``12 / vectors`` document tokens at a time (3 for a
  full tile, 8 for a one-vector tile). The query is stored transposed, tile by tile, so at
  each position ``k`` of the token width the tile's query values are contiguous and are
  multiplied by each document token's ``k``-th value broadcast to all lanes. The hot loop
  holds only loads and FMAs, and the maximum over document tokens is taken once per tile.
  (The dot-product form, which needs a horizontal sum per query/document token pair, reached
  85-116 GFLOP/s on two cores.)
* **16 registers.** At most twelve accumulators plus four operands fit the 16 AVX2 registers,
  so the kernel is written for AVX2 (Zen 3) and runs unchanged where AVX-512 offers more.
  Compiled for AVX2 only, an operand order that kept four query vectors live spilled and ran
  at 51 GFLOP/s; the order used (broadcasts first, one query vector at a time) runs at 110.
* **One pass per document.** A 32-token tile reads each document once per query of up to 32
  tokens; 16-token tiles read it twice and were slower on large candidate sets.
* **Software prefetch.** Even so, the loop stalled on memory (64 GFLOP/s); fetching the next
  tile's rows into L1 while the current tile runs gives 105-110, sgemm's speed.
* **Ragged tails without a second kernel.** A tile that runs past a document's last token
  repeats that token; a duplicate cannot change a maximum. Short queries use a narrower tile
  (24, 16 or 8 tokens wide, 4, 6 or 8 rows high) instead of zero padding to 32.
* **float16 documents** are read as stored: each value is broadcast as 16 bits and widened
  in the loop (``vpbroadcastw`` + ``vcvtph2ps``), about 95-100 GFLOP/s, against 80 for
  widening 48-token blocks into a float32 scratch first; the documents are never copied.
* **Threads.** ``prange`` runs over chunks of consecutive documents holding about the same
  number of tokens, 16 per thread, handed out dynamically, so ragged lengths and a core shared
  with another process balance (200 documents of 1,030 tokens beside a busy process: 16 ms
  against 20 with numba's default static split). On two idle cores the kernel reaches about
  205 GFLOP/s, the two-core sgemm figure.

Known interaction: multithreaded OpenBLAS keeps its threads spinning for a while after a
matrix product (about 0.1 s by default), and a numba kernel started within that time runs at
about half speed. ``OPENBLAS_THREAD_TIMEOUT`` (read when NumPy is imported; 4 to 30, the spin
lasts about 2**value cycles) shortens it; ``benchmarks/bench_maxsim.py`` sets it to 20.
"""

# mypy: ignore-errors
# The functions below are typed by numba when they compile, not by mypy; numba's intrinsics and
# untyped decorators only produce noise under mypy --strict.

from __future__ import annotations

import threading

import numba
import numpy as np
import numpy.typing as npt
from numba import njit, prange

from multivec.rerank._simd import (
    LANES,
    f32_pointer,
    prefetch,
    u16_pointer,
    vfma,
    vload,
    vmax,
    vsplat,
    vstore,
    vzero,
)

__all__ = ["maxsim_addresses", "tile_query"]

_BLOCK = 48
"""Document tokens per block (a multiple of every tile height: 3, 4, 6 and 8)."""

_CHUNKS_PER_THREAD = 16
"""Work units per thread: enough to even out ragged documents and uneven CPU shares."""

_LAUNCH_LOCK = threading.Lock()
"""Serialises kernel launches from different Python threads (see :func:`maxsim_addresses`)."""


# The four register tiles below are one loop written out at four widths: numba has no arrays
# that live in registers, so each accumulator is its own variable. Tile ``W x H`` keeps W query
# tokens (W / 8 vectors) and H document rows in W / 8 * H accumulators (12, or 8 for the
# narrowest); rows past ``r1 - 1`` repeat the last row, which cannot change a maximum, so
# ragged tails need no separate kernel.


@njit
def _tile_32x3(q, qo, src, r0, r1, m, mo):
    dim = src.shape[1]
    last = r1 - 1
    m0, m1, m2, m3 = vload(m, mo), vload(m, mo + 8), vload(m, mo + 16), vload(m, mo + 24)
    for j in range(r0, r1, 3):
        j1 = min(j + 1, last)
        j2 = min(j + 2, last)
        a0_0 = a0_1 = a0_2 = a0_3 = vzero()
        a1_0 = a1_1 = a1_2 = a1_3 = vzero()
        a2_0 = a2_1 = a2_2 = a2_3 = vzero()
        for k in range(dim):
            prefetch(src, (j + 3) * dim + k * 3)
            o = qo + k * 32
            # Broadcasts first, then one query vector at a time: 12 accumulators, 3 broadcasts
            # and 1 query vector are exactly the 16 AVX2 registers (4 query vectors would spill).
            x0 = vsplat(src[j, k])
            x1 = vsplat(src[j1, k])
            x2 = vsplat(src[j2, k])
            qv = vload(q, o)
            a0_0 = vfma(qv, x0, a0_0)
            a1_0 = vfma(qv, x1, a1_0)
            a2_0 = vfma(qv, x2, a2_0)
            qv = vload(q, o + 8)
            a0_1 = vfma(qv, x0, a0_1)
            a1_1 = vfma(qv, x1, a1_1)
            a2_1 = vfma(qv, x2, a2_1)
            qv = vload(q, o + 16)
            a0_2 = vfma(qv, x0, a0_2)
            a1_2 = vfma(qv, x1, a1_2)
            a2_2 = vfma(qv, x2, a2_2)
            qv = vload(q, o + 24)
            a0_3 = vfma(qv, x0, a0_3)
            a1_3 = vfma(qv, x1, a1_3)
            a2_3 = vfma(qv, x2, a2_3)
        m0 = vmax(vmax(vmax(m0, a0_0), a1_0), a2_0)
        m1 = vmax(vmax(vmax(m1, a0_1), a1_1), a2_1)
        m2 = vmax(vmax(vmax(m2, a0_2), a1_2), a2_2)
        m3 = vmax(vmax(vmax(m3, a0_3), a1_3), a2_3)
    vstore(m, mo, m0)
    vstore(m, mo + 8, m1)
    vstore(m, mo + 16, m2)
    vstore(m, mo + 24, m3)


@njit
def _tile_24x4(q, qo, src, r0, r1, m, mo):
    dim = src.shape[1]
    last = r1 - 1
    m0, m1, m2 = vload(m, mo), vload(m, mo + 8), vload(m, mo + 16)
    for j in range(r0, r1, 4):
        j1 = min(j + 1, last)
        j2 = min(j + 2, last)
        j3 = min(j + 3, last)
        a0_0 = a0_1 = a0_2 = vzero()
        a1_0 = a1_1 = a1_2 = vzero()
        a2_0 = a2_1 = a2_2 = vzero()
        a3_0 = a3_1 = a3_2 = vzero()
        for k in range(dim):
            prefetch(src, (j + 4) * dim + k * 4)
            o = qo + k * 24
            q0, q1, q2 = vload(q, o), vload(q, o + 8), vload(q, o + 16)
            x = vsplat(src[j, k])
            a0_0 = vfma(q0, x, a0_0)
            a0_1 = vfma(q1, x, a0_1)
            a0_2 = vfma(q2, x, a0_2)
            x = vsplat(src[j1, k])
            a1_0 = vfma(q0, x, a1_0)
            a1_1 = vfma(q1, x, a1_1)
            a1_2 = vfma(q2, x, a1_2)
            x = vsplat(src[j2, k])
            a2_0 = vfma(q0, x, a2_0)
            a2_1 = vfma(q1, x, a2_1)
            a2_2 = vfma(q2, x, a2_2)
            x = vsplat(src[j3, k])
            a3_0 = vfma(q0, x, a3_0)
            a3_1 = vfma(q1, x, a3_1)
            a3_2 = vfma(q2, x, a3_2)
        m0 = vmax(vmax(vmax(vmax(m0, a0_0), a1_0), a2_0), a3_0)
        m1 = vmax(vmax(vmax(vmax(m1, a0_1), a1_1), a2_1), a3_1)
        m2 = vmax(vmax(vmax(vmax(m2, a0_2), a1_2), a2_2), a3_2)
    vstore(m, mo, m0)
    vstore(m, mo + 8, m1)
    vstore(m, mo + 16, m2)


@njit
def _tile_16x6(q, qo, src, r0, r1, m, mo):
    dim = src.shape[1]
    last = r1 - 1
    m0, m1 = vload(m, mo), vload(m, mo + 8)
    for j in range(r0, r1, 6):
        j1 = min(j + 1, last)
        j2 = min(j + 2, last)
        j3 = min(j + 3, last)
        j4 = min(j + 4, last)
        j5 = min(j + 5, last)
        a0_0 = a0_1 = vzero()
        a1_0 = a1_1 = vzero()
        a2_0 = a2_1 = vzero()
        a3_0 = a3_1 = vzero()
        a4_0 = a4_1 = vzero()
        a5_0 = a5_1 = vzero()
        for k in range(dim):
            prefetch(src, (j + 6) * dim + k * 6)
            o = qo + k * 16
            q0, q1 = vload(q, o), vload(q, o + 8)
            x = vsplat(src[j, k])
            a0_0 = vfma(q0, x, a0_0)
            a0_1 = vfma(q1, x, a0_1)
            x = vsplat(src[j1, k])
            a1_0 = vfma(q0, x, a1_0)
            a1_1 = vfma(q1, x, a1_1)
            x = vsplat(src[j2, k])
            a2_0 = vfma(q0, x, a2_0)
            a2_1 = vfma(q1, x, a2_1)
            x = vsplat(src[j3, k])
            a3_0 = vfma(q0, x, a3_0)
            a3_1 = vfma(q1, x, a3_1)
            x = vsplat(src[j4, k])
            a4_0 = vfma(q0, x, a4_0)
            a4_1 = vfma(q1, x, a4_1)
            x = vsplat(src[j5, k])
            a5_0 = vfma(q0, x, a5_0)
            a5_1 = vfma(q1, x, a5_1)
        m0 = vmax(vmax(vmax(vmax(m0, a0_0), a1_0), a2_0), a3_0)
        m0 = vmax(vmax(m0, a4_0), a5_0)
        m1 = vmax(vmax(vmax(vmax(m1, a0_1), a1_1), a2_1), a3_1)
        m1 = vmax(vmax(m1, a4_1), a5_1)
    vstore(m, mo, m0)
    vstore(m, mo + 8, m1)


@njit
def _tile_8x8(q, qo, src, r0, r1, m, mo):
    dim = src.shape[1]
    last = r1 - 1
    m0 = vload(m, mo)
    # Eight rows, not twelve: with one query vector, 12 accumulators left the AVX2 register
    # allocator shuffling and spilling (52 against 76 GFLOP/s); 8 still cover the FMA latency.
    for j in range(r0, r1, 8):
        j1 = min(j + 1, last)
        j2 = min(j + 2, last)
        j3 = min(j + 3, last)
        j4 = min(j + 4, last)
        j5 = min(j + 5, last)
        j6 = min(j + 6, last)
        j7 = min(j + 7, last)
        a0 = a1 = a2 = a3 = vzero()
        a4 = a5 = a6 = a7 = vzero()
        for k in range(dim):
            prefetch(src, (j + 8) * dim + k * 8)
            qv = vload(q, qo + k * 8)
            a0 = vfma(qv, vsplat(src[j, k]), a0)
            a1 = vfma(qv, vsplat(src[j1, k]), a1)
            a2 = vfma(qv, vsplat(src[j2, k]), a2)
            a3 = vfma(qv, vsplat(src[j3, k]), a3)
            a4 = vfma(qv, vsplat(src[j4, k]), a4)
            a5 = vfma(qv, vsplat(src[j5, k]), a5)
            a6 = vfma(qv, vsplat(src[j6, k]), a6)
            a7 = vfma(qv, vsplat(src[j7, k]), a7)
        m0 = vmax(vmax(vmax(vmax(m0, a0), a1), a2), a3)
        m0 = vmax(vmax(vmax(vmax(m0, a4), a5), a6), a7)
    vstore(m, mo, m0)


@njit
def _fold_block(q, widths, src, r0, r1, m):
    """Fold rows ``r0:r1`` of ``src`` into the maxima of every query tile."""
    dim = src.shape[1]
    qo = 0
    mo = 0
    for t in range(widths.shape[0]):
        nv = widths[t]
        if nv == 4:
            _tile_32x3(q, qo, src, r0, r1, m, mo)
        elif nv == 3:
            _tile_24x4(q, qo, src, r0, r1, m, mo)
        elif nv == 2:
            _tile_16x6(q, qo, src, r0, r1, m, mo)
        else:
            _tile_8x8(q, qo, src, r0, r1, m, mo)
        qo += nv * LANES * dim
        mo += nv * LANES


@njit
def _score(q, widths, n_query, doc, m):
    """MaxSim of one document (float32, or float16 bits as uint16) with running maxima ``m``."""
    n = doc.shape[0]
    m[:] = -np.inf
    # Blocks keep a document slice in cache while every query tile passes over it.
    for b in range(0, n, _BLOCK):
        _fold_block(q, widths, doc, b, min(b + _BLOCK, n), m)
    s = np.float32(0.0)
    for i in range(n_query):
        s += m[i]
    return s


@njit(parallel=True, cache=True)
def _kernel_f32(q, widths, n_query, addresses, lengths, dim, bounds, out):
    for c in prange(bounds.shape[0] - 1):
        m = np.empty(q.shape[0] // dim, dtype=np.float32)
        for d in range(bounds[c], bounds[c + 1]):
            doc = numba.carray(f32_pointer(addresses[d]), (lengths[d], dim))
            out[d] = _score(q, widths, n_query, doc, m)


@njit(parallel=True, cache=True)
def _kernel_f16(q, widths, n_query, addresses, lengths, dim, bounds, out):
    for c in prange(bounds.shape[0] - 1):
        m = np.empty(q.shape[0] // dim, dtype=np.float32)
        for d in range(bounds[c], bounds[c + 1]):
            doc = numba.carray(u16_pointer(addresses[d]), (lengths[d], dim))
            out[d] = _score(q, widths, n_query, doc, m)


def tile_query(
    query: npt.NDArray[np.float32],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Lay a query out the way the kernel reads it.

    Args:
        query: ``(n_q, dim)`` float32 query token matrix.

    Returns:
        ``(q, widths)``: ``q`` is flat float32 holding, tile after tile, each tile's query tokens
        transposed to ``(dim, 8 * width)`` and padded with zero tokens; ``widths[t]`` is tile
        ``t``'s width in 8-lane vectors (4, then one narrower tile for the remainder).
    """
    n_q, dim = query.shape
    vectors = -(-n_q // LANES)
    widths = np.full(vectors // 4, 4, dtype=np.int64)
    if vectors % 4:
        widths = np.append(widths, vectors % 4)
    padded = np.zeros((vectors * LANES, dim), dtype=np.float32)
    padded[:n_q] = query
    parts = []
    start = 0
    for w in widths:
        stop = start + int(w) * LANES
        parts.append(padded[start:stop].T.ravel())
        start = stop
    return np.concatenate(parts), widths


def _chunk_bounds(lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Cut documents into consecutive chunks of about the same token count (some may be empty)."""
    n_docs = lengths.shape[0]
    n_chunks = numba.get_num_threads() * _CHUNKS_PER_THREAD
    if n_docs <= n_chunks:
        return np.arange(n_docs + 1, dtype=np.int64)
    ends = np.cumsum(lengths)
    bounds = np.empty(n_chunks + 1, dtype=np.int64)
    bounds[0] = 0
    bounds[-1] = n_docs
    # A chunk ends after the first document that reaches its share of the tokens.
    targets = np.arange(1, n_chunks, dtype=np.int64) * ends[-1] // n_chunks
    bounds[1:-1] = np.searchsorted(ends, targets, side="left") + 1
    return bounds


def maxsim_addresses(
    query: npt.NDArray[np.float32],
    addresses: npt.NDArray[np.int64],
    lengths: npt.NDArray[np.int64],
    dim: int,
    half: bool,
) -> npt.NDArray[np.float32]:
    """Score documents given by the data addresses of C-contiguous token matrices.

    The caller guarantees that every address points at ``lengths[i] * dim`` values of the right
    type (float16 when ``half``, else float32) that stay alive for the call, and that every
    length is at least 1; nothing is checked here.

    Args:
        query: ``(n_q, dim)`` C-contiguous, finite float32 query.
        addresses: Data pointer of each document's ``(lengths[i], dim)`` token matrix.
        lengths: Token count of each document.
        dim: Token width.
        half: Whether the documents hold float16 (else float32) values.

    Returns:
        float32 MaxSim score of each document.
    """
    out = np.empty(lengths.shape[0], dtype=np.float32)
    if lengths.shape[0] == 0:
        return out
    q, widths = tile_query(query)
    kernel = _kernel_f16 if half else _kernel_f32
    bounds = _chunk_bounds(lengths)
    # Hand chunks out one at a time as threads free up (numba's default splits the range
    # evenly up front): on a shared machine one thread often gets less CPU than the other.
    # One kernel at a time: it already uses every core, and numba's fallback threading layer
    # (workqueue) aborts the process on concurrent launches from several Python threads.
    with _LAUNCH_LOCK:
        previous = numba.set_parallel_chunksize(1)
        try:
            kernel(q, widths, query.shape[0], addresses, lengths, dim, bounds, out)
        finally:
            numba.set_parallel_chunksize(previous)
    return out
