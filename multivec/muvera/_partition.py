"""Space partitioning: which block each token lands in, per repetition, and how empty blocks fill.

The encoder only needs the two operations of :class:`Partitioner`, so another partitioning (for
example k-means centroids fitted on a corpus) can replace SimHash without touching the aggregation
code. :class:`SimHashPartitioner` is the reference's: random hyperplanes, Gray-code block order, and
Hamming-nearest fill.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["Partitioner", "SimHashPartitioner"]

# Bounds the (empty blocks x partitions) score matrix of the fill step to about 32 MiB.
_FILL_SCORES_PER_SLICE = 1 << 22
_NO_TOKEN = np.int64(1 << 62)
_BYTE_POPCOUNT = np.array([bin(byte).count("1") for byte in range(256)], dtype=np.uint8)


class Partitioner(Protocol):
    """How tokens are split into ``num_partitions`` blocks in each of ``repetitions`` repetitions.

    Partitioning starts from linear scores of the tokens, ``tokens @ score_matrix``, which the
    encoder computes in the same matmul as the projection. SimHash scores are hyperplane sides; a
    fitted partitioner could score tokens against centroids the same way.
    """

    @property
    def repetitions(self) -> int:
        """Number of independent repetitions."""
        ...

    @property
    def num_partitions(self) -> int:
        """Blocks per repetition."""
        ...

    @property
    def score_matrix(self) -> npt.NDArray[np.float32]:
        """The ``(dim, n_scores)`` matrix whose product with the tokens :meth:`assign` reads."""
        ...

    def assign(self, scores: npt.NDArray[np.float32]) -> npt.NDArray[np.integer[Any]]:
        """Return the block of each token in each repetition, shape ``(n_tokens, repetitions)``.

        Args:
            scores: ``tokens @ score_matrix``, shape ``(n_tokens, n_scores)``.
        """
        ...

    def fill_sources(
        self,
        scores: npt.NDArray[np.float32],
        blocks: npt.NDArray[np.integer[Any]],
        token_doc: npt.NDArray[np.int64],
        empty: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]],
    ) -> npt.NDArray[np.int64]:
        """Choose the token that fills each empty block of a document.

        Args:
            scores: The scores of all tokens of the batch, documents one after another.
            blocks: What :meth:`assign` returned for them.
            token_doc: Document (0-based, within the batch) of each token, non-decreasing.
            empty: ``(doc, repetition, block)`` index arrays of the empty blocks.

        Returns:
            For each empty block, the batch index of a token of that document.
        """
        ...


class SimHashPartitioner:
    """The reference partitioning: k random hyperplanes per repetition, 2**k blocks.

    A token's sign bits are ``b_j = [<token, hyperplane_j> > 0]`` (strictly greater; zero gives 0).
    They are folded into a block index as a Gray code, hyperplane 0 most significant, so block ``g``
    holds the tokens whose sign pattern is ``g ^ (g >> 1)``.

    Args:
        hyperplanes: Shape ``(repetitions, dim, k)``, float32.
    """

    def __init__(self, hyperplanes: npt.NDArray[np.float32]) -> None:
        self._repetitions, self._dim, self._bits = (int(size) for size in hyperplanes.shape)
        # (dim, repetitions * k): one matmul gives every sign bit of every repetition.
        self._all_hyperplanes = np.ascontiguousarray(
            hyperplanes.transpose(1, 0, 2).reshape(self._dim, self._repetitions * self._bits)
        )
        partitions = np.arange(self.num_partitions, dtype=np.int64)
        self._sign_patterns = partitions ^ (partitions >> 1)
        self._index_dtype = np.min_scalar_type(self.num_partitions - 1)

    @property
    def repetitions(self) -> int:
        """Number of independent repetitions."""
        return self._repetitions

    @property
    def num_partitions(self) -> int:
        """Blocks per repetition, ``2**k``."""
        return 1 << self._bits

    @property
    def score_matrix(self) -> npt.NDArray[np.float32]:
        """All hyperplanes side by side, ``(dim, repetitions * k)``: repetition-major, then bit."""
        return self._all_hyperplanes

    def assign(self, scores: npt.NDArray[np.float32]) -> npt.NDArray[np.integer[Any]]:
        """Return the Gray-code block index of each token in each repetition.

        Args:
            scores: ``tokens @ score_matrix``, shape ``(n_tokens, repetitions * k)``.

        Returns:
            Shape ``(n_tokens, repetitions)``, values in ``[0, 2**k)``, in the smallest unsigned
            integer type that holds them (one byte up to k = 8), to keep the bit loop cheap.
        """
        n_tokens = scores.shape[0]
        index = np.zeros((n_tokens, self._repetitions), dtype=self._index_dtype)
        above = scores.reshape(n_tokens, self._repetitions, self._bits) > 0
        one = index.dtype.type(1)
        # The reference appends one bit at a time, g = (g << 1) + (b_j XOR (g & 1)): each step is
        # vectorised over all tokens and repetitions, so only the k hyperplanes are looped over.
        for bit in range(self._bits):
            index = (index << one) | (above[:, :, bit] ^ (index & one))
        return index

    def fill_sources(
        self,
        scores: npt.NDArray[np.float32],
        blocks: npt.NDArray[np.integer[Any]],
        token_doc: npt.NDArray[np.int64],
        empty: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]],
    ) -> npt.NDArray[np.int64]:
        """Pick, for each empty block, the document token whose sign bits are Hamming-nearest.

        Ties go to the document's first such token, as in the reference. All tokens of a block share
        its sign pattern, so only each occupied block's first token can win: the search runs over
        blocks (``2**k`` candidates) rather than over tokens.

        Args:
            scores: The tokens' scores (unused: the block indices already hold the sign bits).
            blocks: Block of each token in each repetition, from :meth:`assign`.
            token_doc: Document of each token, non-decreasing.
            empty: ``(doc, repetition, block)`` of each empty block.

        Returns:
            Index in the batch of the token that fills each empty block.
        """
        del scores
        n_tokens = blocks.shape[0]
        n_docs = int(token_doc[-1]) + 1 if n_tokens else 0
        n_parts = self.num_partitions
        # first_token[(doc, rep), block]: the lowest token index in that block, or _NO_TOKEN.
        first_token = np.full((n_docs * self._repetitions, n_parts), _NO_TOKEN, dtype=np.int64)
        keys = (
            token_doc[:, None] * self._repetitions + np.arange(self._repetitions)
        ) * n_parts + blocks
        token_index = np.broadcast_to(np.arange(n_tokens, dtype=np.int64)[:, None], keys.shape)
        np.minimum.at(first_token.reshape(-1), keys.ravel(), token_index.ravel())

        empty_doc, empty_rep, empty_block = empty
        rows = empty_doc * self._repetitions + empty_rep
        sources = np.empty(rows.size, dtype=np.int64)
        step = max(1, _FILL_SCORES_PER_SLICE // n_parts)
        for start in range(0, rows.size, step):
            part = slice(start, start + step)
            wanted = self._sign_patterns[empty_block[part]]
            distance = _popcount(wanted[:, None] ^ self._sign_patterns[None, :])
            # Distance in the high bits, token index in the low 32: the minimum is the nearest
            # block, and among equally near blocks the one whose first token comes first.
            score = (distance.astype(np.int64) << 32) | first_token[rows[part]]
            sources[part] = score.min(axis=1) & 0xFFFFFFFF
        return sources


def _popcount(values: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
    """Set bits of each value (all below ``2**32``): ``np.bitwise_count`` where numpy has it."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        counts: npt.NDArray[np.uint8] = np.bitwise_count(values)
        return counts
    as_bytes = values.astype("<u4").view(np.uint8).reshape(*values.shape, 4)
    return _BYTE_POPCOUNT[as_bytes].sum(axis=-1, dtype=np.uint8)  # type: ignore[no-any-return]
