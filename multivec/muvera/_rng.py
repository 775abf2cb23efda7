"""Random numbers exactly as the reference C++ draws them, emulated with numpy.

Google's reference FDE code draws its random matrices from ``std::mt19937`` through the libstdc++
(GCC >= 11) distributions ``normal_distribution<float>``, ``uniform_int_distribution`` and
``bernoulli_distribution``. Reproducing its encodings bit for bit therefore needs three things:

* the raw 32-bit stream of ``std::mt19937(seed)``. numpy's legacy ``RandomState(seed)`` seeds
  the same Mersenne Twister the same way, and its stream is frozen by numpy's compatibility policy
  (NEP 19), so it is used here through public APIs only;
* the exact arithmetic each libstdc++ distribution applies to those raw values (below);
* vectorised versions of both: the matrices are built once per configuration, but a final
  Count-Sketch over a 300,000-long FDE would still take seconds with one Python call per draw.

Every function takes a :class:`RawStream` and consumes from it exactly the draws the C++ code
consumes, in the same order, so sequences of calls reproduce the reference's streams.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["RawStream", "normal_float32", "uniform_ints_and_signs"]

_TWO_POW_32 = 2.0**32
_TWO_POW_64 = 2.0**64
_LOW_32_BITS = np.uint64(0xFFFFFFFF)
# generate_canonical<float> never returns 1: a value that rounds up to 1 becomes the float below it.
_LARGEST_FLOAT_BELOW_ONE = np.nextafter(np.float32(1.0), np.float32(0.0))


class RawStream:
    """The raw 32-bit outputs of ``std::mt19937(seed)``, read in order with look-ahead.

    Look-ahead (:meth:`peek` then :meth:`advance`) lets the vectorised distributions draw a whole
    block speculatively and then consume only the values the C++ code would have used.

    Args:
        seed: The ``std::mt19937`` seed, ``0 <= seed < 2**32``.
    """

    def __init__(self, seed: int) -> None:
        # RandomState(seed) runs the same init_genrand as std::mt19937(seed); copying its state
        # into a plain MT19937 bit generator gives the raw stream without private attributes.
        legacy_state = np.random.RandomState(seed).get_state(legacy=False)
        self._bit_generator = np.random.MT19937(0)
        self._bit_generator.state = {"bit_generator": "MT19937", "state": legacy_state["state"]}
        self._buffer: npt.NDArray[np.uint64] = np.empty(0, dtype=np.uint64)
        self._position = 0

    def peek(self, count: int) -> npt.NDArray[np.uint64]:
        """Return the next ``count`` raw values without consuming them.

        Args:
            count: How many values to look at.

        Returns:
            A read-only array of ``count`` values, each below ``2**32``, stored as ``uint64``.
        """
        missing = self._position + count - self._buffer.size
        if missing > 0:
            fresh = self._bit_generator.random_raw(max(missing, 1024))
            self._buffer = np.concatenate([self._buffer[self._position :], fresh])
            self._position = 0
        view = self._buffer[self._position : self._position + count]
        view.flags.writeable = False
        return view

    def advance(self, count: int) -> None:
        """Consume ``count`` values that were looked at with :meth:`peek`.

        Args:
            count: How many values to consume.
        """
        self._position += count

    def take(self, count: int) -> npt.NDArray[np.uint64]:
        """Return and consume the next ``count`` raw values.

        Args:
            count: How many values to draw.

        Returns:
            An array of ``count`` values, each below ``2**32``, stored as ``uint64``.
        """
        values = self.peek(count)
        self.advance(count)
        return values


def _canonical_float32(raw: npt.NDArray[np.uint64]) -> npt.NDArray[np.float32]:
    """``generate_canonical<float, 24>`` on a 32-bit engine: one draw each, float32 arithmetic."""
    # Going through float64 makes the uint32 -> float32 rounding exactly round-to-nearest-even.
    uniform = raw.astype(np.float64).astype(np.float32) / np.float32(_TWO_POW_32)
    below_one: npt.NDArray[np.float32] = np.minimum(uniform, _LARGEST_FLOAT_BELOW_ONE)
    return below_one


def _bernoulli_half(
    first: npt.NDArray[np.uint64], second: npt.NDArray[np.uint64]
) -> npt.NDArray[np.bool_]:
    """``bernoulli_distribution(0.5)``: a double built from two draws, compared with 0.5.

    The sum is rounded to double exactly as in C++ (numpy float64 arithmetic is IEEE), which matters
    in the rare case where rounding carries ``x1 + x2 * 2**32`` up to ``2**63``.
    """
    canonical = (first.astype(np.float64) + second.astype(np.float64) * _TWO_POW_32) / _TWO_POW_64
    return canonical < 0.5


def normal_float32(stream: RawStream, count: int) -> npt.NDArray[np.float32]:
    """Draw ``count`` values of libstdc++ ``std::normal_distribution<float>(0, 1)``.

    libstdc++ uses the Marsaglia polar method: each attempt turns two uniforms into a point in the
    unit square, rejects it unless ``0 < s <= 1``, and otherwise yields two normals, returning
    ``b * m`` now and caching ``a * m`` for the next call. Each attempt consumes exactly two raw
    values whether it is accepted or not, so all attempts can be evaluated at once and the
    accepted ones kept in order.

    Args:
        stream: The engine to draw from.
        count: How many normals to return.

    Returns:
        ``count`` float32 values in the order the C++ calls return them.
    """
    chunks: list[npt.NDArray[np.float32]] = [np.empty(0, dtype=np.float32)]
    produced = 0
    two, one = np.float32(2.0), np.float32(1.0)
    while produced < count:
        # Each attempt is accepted with probability pi/4 and yields two values; overshoot a little
        # so one pass nearly always suffices. Extra draws are harmless: each matrix has a fresh
        # generator.
        attempts = math.ceil((count - produced) / 2 / (math.pi / 4) * 1.1) + 8
        uniform = _canonical_float32(stream.take(2 * attempts))
        a = two * uniform[0::2] - one
        b = two * uniform[1::2] - one
        s = a * a + b * b
        accepted = (s <= one) & (s != np.float32(0.0))
        a, b, s = a[accepted], b[accepted], s[accepted]
        # std::log(float) is logf; computing in float64 and rounding gives the correctly rounded
        # value, independent of which SIMD float32 log numpy picks on this CPU.
        log_s = np.log(s.astype(np.float64)).astype(np.float32)
        multiplier = np.sqrt(np.float32(-2.0) * log_s / s)
        pairs = np.stack([b * multiplier, a * multiplier], axis=1)
        chunks.append(pairs.reshape(-1))
        produced += pairs.size
    return np.concatenate(chunks)[:count].astype(np.float32, copy=False)


def uniform_ints_and_signs(
    stream: RawStream, bound: int, count: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Draw ``count`` (bucket, sign) pairs as the reference's Count-Sketch loops do.

    For each item the C++ code calls ``uniform_int_distribution(0, bound - 1)`` and then
    ``2 * bernoulli_distribution(0.5) - 1``. The integer uses Lemire's method: ``p = x * bound`` in
    64 bits, result ``p >> 32``, redrawing while the low 32 bits fall below
    ``(2**32 - bound) % bound``. Redraws are rare (never when ``bound`` is a power of two), so
    every item is first evaluated on the assumption that none happens; a redraw, when one occurs,
    is replayed one item at a time.

    Args:
        stream: The engine to draw from.
        bound: The number of buckets, ``1 <= bound < 2**32``.
        count: How many items to draw.

    Returns:
        ``(buckets, signs)``: int64 buckets in ``[0, bound)`` and float32 signs in ``{-1, +1}``.
    """
    threshold = np.uint64((2**32 - bound) % bound)
    bound_u64 = np.uint64(bound)
    buckets = np.empty(count, dtype=np.int64)
    positive = np.empty(count, dtype=np.bool_)
    done = 0
    while done < count:
        remaining = count - done
        raw = stream.peek(3 * remaining).reshape(remaining, 3)
        product = raw[:, 0] * bound_u64
        rejected = (product & _LOW_32_BITS) < threshold
        clean = int(np.argmax(rejected)) if rejected.any() else remaining
        buckets[done : done + clean] = product[:clean] >> np.uint64(32)
        positive[done : done + clean] = _bernoulli_half(raw[:clean, 1], raw[:clean, 2])
        stream.advance(3 * clean)
        done += clean
        if done < count:
            buckets[done] = _lemire_with_redraws(stream, bound_u64, threshold)
            second_and_third = stream.take(2)
            positive[done] = _bernoulli_half(second_and_third[:1], second_and_third[1:])[0]
            done += 1
    signs = np.where(positive, np.float32(1.0), np.float32(-1.0)).astype(np.float32)
    return buckets, signs


def _lemire_with_redraws(stream: RawStream, bound: np.uint64, threshold: np.uint64) -> int:
    """One ``uniform_int_distribution`` draw, looping over rejections like libstdc++ does."""
    product = stream.take(1)[0] * bound
    while (product & _LOW_32_BITS) < threshold:
        product = stream.take(1)[0] * bound
    return int(product >> np.uint64(32))
