"""The random matrices behind an FDE configuration, generated as the reference generates them.

Per repetition r, a fresh ``std::mt19937(seed + r)`` fills the SimHash hyperplanes, and another
fresh one with the same seed draws the Count-Sketch projection (so both start from the same raw
stream). The final Count-Sketch, if any, uses one generator seeded with ``seed``. Building them
costs milliseconds, but an encoder may be created for every batch, so :func:`cached_matrices` keeps
recent ones.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from multivec.muvera._config import FDEConfig
from multivec.muvera._rng import RawStream, normal_float32, uniform_ints_and_signs

__all__ = ["CountSketch", "FDEMatrices", "cached_matrices", "generate_matrices"]

_ArrayT = TypeVar("_ArrayT", bound=np.ndarray)


@dataclass(frozen=True, eq=False)
class CountSketch:
    """A sparse ±1 projection: input coordinate i is added, times ``signs[i]``, to ``buckets[i]``.

    No ``1/sqrt(out_dim)`` scaling, as in the reference; inner products are still unbiased.

    Attributes:
        buckets: Output index of each input coordinate, shape ``(in_dim,)``.
        signs: ±1 factor of each input coordinate, shape ``(in_dim,)``, float32.
        out_dim: Length of the projected vector.
    """

    buckets: npt.NDArray[np.int64]
    signs: npt.NDArray[np.float32]
    out_dim: int

    def dense(self) -> npt.NDArray[np.float32]:
        """Return the projection as a dense ``(in_dim, out_dim)`` matrix, for a BLAS matmul."""
        matrix = np.zeros((self.buckets.size, self.out_dim), dtype=np.float32)
        matrix[np.arange(self.buckets.size), self.buckets] = self.signs
        return matrix

    def apply(self, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Project each row of ``vectors``: ``out[:, buckets[i]] += signs[i] * vectors[:, i]``.

        Args:
            vectors: Shape ``(n, in_dim)``.

        Returns:
            Shape ``(n, out_dim)``, float32.
        """
        order, starts, targets = self._grouping
        projected = np.zeros((vectors.shape[0], self.out_dim), dtype=np.float32)
        signed = vectors[:, order] * self.signs[order]
        # The stable sort keeps each bucket's coordinates in input order, the reference's sum order.
        projected[:, targets] = np.add.reduceat(signed, starts, axis=1)
        return projected

    @functools.cached_property
    def _grouping(
        self,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Coordinates sorted by bucket, where each non-empty bucket starts, and its index."""
        order = np.argsort(self.buckets, kind="stable")
        sorted_buckets = self.buckets[order]
        starts = np.flatnonzero(np.diff(sorted_buckets, prepend=-1))
        return order, starts, sorted_buckets[starts]


@dataclass(frozen=True, eq=False)
class FDEMatrices:
    """Every random matrix one configuration uses; all arrays are read-only.

    Attributes:
        hyperplanes: SimHash hyperplanes, shape ``(repetitions, dim, simhash_projections)``,
            float32.
        inner: Per-repetition Count-Sketch of the token vectors, or ``None`` for the identity.
        final: The final Count-Sketch of the whole encoding, or ``None`` when ``final_dim`` is
            unset.
    """

    hyperplanes: npt.NDArray[np.float32]
    inner: tuple[CountSketch, ...] | None
    final: CountSketch | None

    @functools.cached_property
    def inner_dense(self) -> npt.NDArray[np.float32] | None:
        """All inner projections side by side, ``(dim, repetitions * projection_dim)``, or ``None``.

        One matmul with this matrix projects every token for every repetition at once.
        """
        if self.inner is None:
            return None
        return _read_only(np.concatenate([sketch.dense() for sketch in self.inner], axis=1))


def generate_matrices(config: FDEConfig) -> FDEMatrices:
    """Generate the random matrices of ``config`` from scratch (no cache).

    Args:
        config: The configuration; only its shape, seed and projections matter here.

    Returns:
        The matrices, identical on every platform and numpy version.
    """
    hyperplanes = np.stack(
        [
            _simhash_hyperplanes(config.seed + r, config.dim, config.simhash_projections)
            for r in range(config.repetitions)
        ]
    )
    inner = None
    if config.projection == "countsketch":
        inner = tuple(
            _count_sketch(config.seed + r, config.dim, config.block_dim)
            for r in range(config.repetitions)
        )
    final = None
    if config.final_dim is not None:
        final = _count_sketch(config.seed, config.raw_fde_dim, config.final_dim)
    return FDEMatrices(hyperplanes=_read_only(hyperplanes), inner=inner, final=final)


def cached_matrices(config: FDEConfig) -> FDEMatrices:
    """Return the matrices of ``config``, generating them only on first use.

    Configurations that differ only in ``fill_empty`` (documents and their queries) share matrices.
    """
    return _cached(config.for_queries())


@functools.lru_cache(maxsize=16)
def _cached(config: FDEConfig) -> FDEMatrices:
    return generate_matrices(config)


def _simhash_hyperplanes(seed: int, dim: int, count: int) -> npt.NDArray[np.float32]:
    """A ``(dim, count)`` matrix of standard normals, filled column by column like Eigen does."""
    if count == 0:
        return np.zeros((dim, 0), dtype=np.float32)
    values = normal_float32(RawStream(seed), dim * count)
    by_column: npt.NDArray[np.float32] = values.reshape(count, dim).T.copy()
    return by_column


def _count_sketch(seed: int, in_dim: int, out_dim: int) -> CountSketch:
    """Draw a Count-Sketch: for each input coordinate, a bucket then a sign."""
    buckets, signs = uniform_ints_and_signs(RawStream(seed), out_dim, in_dim)
    return CountSketch(buckets=_read_only(buckets), signs=_read_only(signs), out_dim=out_dim)


def _read_only(array: _ArrayT) -> _ArrayT:
    array.flags.writeable = False
    return array
