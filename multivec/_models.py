"""The values that cross the public API: documents, hits, search results, collection info."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from multivec._explain import Explanation
from multivec._validation import DocId, StorageDtype
from multivec.muvera import FDEConfig

__all__ = ["FORMAT_VERSION", "CollectionInfo", "Document", "Hit", "SearchResult", "StageTimings"]

# Bumped whenever the stored layout or the meaning of a stored field changes; a collection
# written with another format version is refused on open rather than misread.
FORMAT_VERSION = 1


class CollectionInfo(BaseModel):
    """What a collection stores about itself, and checks on every write and query.

    Attributes:
        dim: Token vector dimension.
        dtype: Storage precision of token vectors.
        fde: The FDE configuration documents were encoded with.
        format_version: The multivec storage format the collection was written in.
        encoder: Optional id of the model that produced the vectors (informational).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    dim: int
    dtype: StorageDtype
    fde: FDEConfig
    format_version: int = FORMAT_VERSION
    encoder: str | None = None

    @property
    def fde_dim(self) -> int:
        """Length of the FDE vectors stored in the ANN index."""
        return self.fde.fde_dim


@dataclass(frozen=True)
class Document:
    """A stored document: its id, token vectors at the stored precision, metadata and text."""

    id: DocId
    vectors: npt.NDArray[Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    text: str | None = None


@dataclass(frozen=True)
class Hit:
    """One search result: the exact MaxSim ``score`` and the document's metadata and text.

    ``explanation`` is set by ``search(..., explain=True)``: per query token, the document
    vector it matched and its contribution to ``score`` (see :mod:`multivec._explain`).
    """

    id: DocId
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)
    text: str | None = None
    explanation: Explanation | None = None


@dataclass(frozen=True)
class StageTimings:
    """Seconds spent in each stage of one search."""

    encode: float = 0.0
    ann: float = 0.0
    fetch: float = 0.0
    rerank: float = 0.0

    @property
    def total(self) -> float:
        """The sum of all stages."""
        return self.encode + self.ann + self.fetch + self.rerank

    def as_ms(self) -> dict[str, float]:
        """The stage times (and the total) in milliseconds."""
        stages = {
            "encode": self.encode,
            "ann": self.ann,
            "fetch": self.fetch,
            "rerank": self.rerank,
        }
        return {k: v * 1e3 for k, v in {**stages, "total": self.total}.items()}


@dataclass(frozen=True)
class SearchResult(Sequence[Hit]):
    """The ranked hits of one search, best first, with per-stage timings.

    Behaves as a sequence of :class:`Hit`. ``candidates`` is how many documents the first stage
    returned for exact rescoring; ``candidate_ids`` are those documents in first-stage order
    (``mode="multivec"`` only: the native modes do not expose their first stage), to measure
    the first stage's recall.
    """

    hits: tuple[Hit, ...]
    timings: StageTimings
    candidates: int
    candidate_ids: tuple[DocId, ...] = ()

    @overload
    def __getitem__(self, index: int) -> Hit: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Hit]: ...
    def __getitem__(self, index: int | slice) -> Hit | Sequence[Hit]:
        return self.hits[index]

    def __len__(self) -> int:
        return len(self.hits)

    def __iter__(self) -> Iterator[Hit]:
        return iter(self.hits)

    @property
    def ids(self) -> list[DocId]:
        """The hit ids, best first."""
        return [h.id for h in self.hits]

    @property
    def scores(self) -> npt.NDArray[np.float32]:
        """The hit scores, best first."""
        return np.array([h.score for h in self.hits], dtype=np.float32)
