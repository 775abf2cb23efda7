"""The backend contract: the few primitives a database adapter implements.

A backend instance is bound to one collection of one database. It stores, per document, an
internal key (see :mod:`multivec._validation`), the FDE in the database's ANN index, the token
matrix at the stored precision, the metadata and the optional text; and, once per collection,
the :class:`~multivec.CollectionInfo`. Everything that is the same for all databases
(validation, FDE encoding, batching by bytes, reranking, timing) lives in the collection façade,
so an adapter stays small and the behaviour stays identical.

Shared code branches on the capability attributes below, never on the backend's class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from multivec._filters import Filter
from multivec._models import CollectionInfo
from multivec._uri import URI
from multivec.errors import ConfigurationError

__all__ = ["Backend", "Fetched", "WriteBatch"]


@dataclass(frozen=True)
class WriteBatch:
    """Validated documents ready to store; all lists are aligned."""

    keys: list[str]
    fdes: npt.NDArray[np.float32]
    vectors: list[npt.NDArray[Any]]
    metadata: list[dict[str, Any]]
    texts: list[str | None]


@dataclass(frozen=True)
class Fetched:
    """Documents read back, with their token matrices packed into one array.

    Document ``i`` is ``tokens[offsets[i]:offsets[i + 1]]``. ``metadata`` and ``texts`` are
    ``None`` when not asked for.
    """

    keys: list[str]
    tokens: npt.NDArray[Any]
    offsets: npt.NDArray[np.int64]
    metadata: list[dict[str, Any]] | None = None
    texts: list[str | None] | None = None

    def matrix(self, i: int) -> npt.NDArray[Any]:
        """The token matrix of the ``i``-th document."""
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    @classmethod
    def pack(
        cls,
        keys: list[str],
        matrices: Sequence[npt.NDArray[Any]],
        dim: int,
        dtype: str,
        metadata: list[dict[str, Any]] | None = None,
        texts: list[str | None] | None = None,
    ) -> Fetched:
        """Pack separate matrices (for backends that do not store them contiguously)."""
        offsets = np.zeros(len(matrices) + 1, dtype=np.int64)
        np.cumsum([m.shape[0] for m in matrices], out=offsets[1:])
        tokens = np.concatenate(matrices) if matrices else np.empty((0, dim), dtype=dtype)
        return cls(keys, tokens, offsets, metadata, texts)


class Backend(ABC):
    """Base class of the database adapters multivec ships; third parties subclass it too.

    Capability attributes (class-level, documented so shared code can branch on them):

    Attributes:
        scheme: The URI scheme that selects this backend.
        extra: The ``multivec[...]`` extra that installs its SDK, or ``None``.
        persistent: Data survives the process (False for ``memory://``).
        supports_native_multivector: The database can score MaxSim itself over all documents
            (``search(mode="native")``). Backends whose collections differ may set it per
            connection, from the opened collection's layout (Milvus).
        supports_native_prefetch: The database can run its own two-stage search: ANN on the
            FDE column, then its own MaxSim over those candidates (``mode="native-prefetch"``).
        max_vector_dim: The largest vector the database accepts, or ``None`` for no limit.
        max_request_bytes: The largest write request the database accepts, or ``None``.
        max_tokens: The most tokens one document may have in the opened collection, or
            ``None``; the collection refuses a longer one before anything is written.
        engine_rerank: multivec's exact rerank runs inside the database: its MaxSim over the
            FDE candidates, in the same request as the first stage (``native_search`` with
            ``prefetch``), instead of fetching the candidates' tokens. The scores are the same
            exact MaxSim of the stored tokens; the candidates' ids are not reported. Backends
            that can do it may set it per connection (a URI option).
    """

    scheme: ClassVar[str]
    extra: ClassVar[str | None] = None
    persistent: ClassVar[bool] = True
    supports_native_multivector: bool = False
    supports_native_prefetch: ClassVar[bool] = False
    max_vector_dim: ClassVar[int | None] = None
    max_request_bytes: ClassVar[int | None] = None
    engine_rerank: bool = False
    max_tokens: int | None = None

    def __init__(self, uri: URI, collection: str) -> None:
        self.uri = uri
        self.collection = collection

    @abstractmethod
    def load_info(self) -> CollectionInfo | None:
        """Return the stored configuration, or ``None`` if the collection does not exist."""

    @abstractmethod
    def create(self, info: CollectionInfo) -> None:
        """Create the empty collection and store ``info`` inside the database."""

    @abstractmethod
    def drop(self) -> None:
        """Delete the collection and everything in it; a missing collection is not an error."""

    @abstractmethod
    def upsert(self, batch: WriteBatch) -> None:
        """Insert or replace documents by key; must never create duplicates."""

    def insert(self, batch: WriteBatch) -> None:
        """Store documents whose keys are known not to be stored yet.

        For bulk loads into a new collection (a migration's copy), where a database appends
        faster than it upserts. The default upserts; an override may append without looking
        for existing keys, so callers must be sure none exists.
        """
        self.upsert(batch)

    @abstractmethod
    def delete(self, keys: Sequence[str]) -> None:
        """Delete documents by key; unknown keys are ignored."""

    @abstractmethod
    def count(self) -> int:
        """Return the exact number of documents."""

    @abstractmethod
    def ann(
        self, fde_query: npt.NDArray[np.float32], limit: int, filter: Filter | None
    ) -> tuple[list[str], npt.NDArray[np.float32]]:
        """Return up to ``limit`` documents by inner product with ``fde_query``, best first.

        Each document is named by its key or by a backend-specific reference that only
        :meth:`fetch` needs to understand (Qdrant returns point ids, so the search reads no
        payload); :meth:`fetch` returns the keys. Also returns their FDE scores. ``filter`` is
        applied inside the index search, not afterwards, so a selective filter still yields
        ``limit`` results when enough match.
        """

    @abstractmethod
    def fetch(self, keys: Sequence[str], *, with_metadata: bool = True) -> Fetched:
        """Read documents by key or :meth:`ann` reference, in order; unknown ones are left out."""

    @abstractmethod
    def scan(self, after: str | None, limit: int) -> Fetched:
        """Return up to ``limit`` documents whose keys sort after ``after``, in key order.

        The last key of a page is the cursor for the next, so iteration resumes exactly where
        it stopped, whatever the page size, and sees each document once.
        """

    def fetch_fdes(self, keys: Sequence[str]) -> npt.NDArray[np.float32] | None:
        """Return the stored FDEs of ``keys``, one row each, in order.

        ``None`` means the database cannot hand them back (the default) or a key is not stored
        (deleted since it was listed); callers then encode them again from the tokens, which
        gives the same values under the same configuration.
        """
        return None

    def server_version(self) -> str | None:
        """The database server's version as it reports it; ``None`` for embedded engines."""
        return None

    def document_problem(self, key: str, metadata: dict[str, Any], text: str | None) -> str | None:
        """Why this database cannot store a document exactly, or ``None`` when it can.

        For limits of the database itself (value sizes, characters), checked for every document
        before anything is written, and by the migration dry run. Input errors common to every
        backend are caught earlier, by the collection.
        """
        return None

    def native_search(
        self,
        query: npt.NDArray[np.float32],
        k: int,
        filter: Filter | None,
        *,
        prefetch: tuple[npt.NDArray[np.float32], int] | None = None,
    ) -> tuple[list[str], npt.NDArray[np.float32]]:
        """Score with the database's own multi-vector search; the second search mode.

        Args:
            query: The query token matrix, float32.
            k: How many keys to return, best first.
            filter: Applied by the database.
            prefetch: ``(fde_query, candidates)`` for the database's own two-stage path, or
                ``None`` for its exhaustive multi-vector search.

        Returns:
            Keys and the database's scores, converted to MaxSim (higher is better) where the
            database reports distances.
        """
        raise ConfigurationError(
            f"{type(self).__name__} has no native multi-vector scoring "
            "(see its supports_native_multivector / supports_native_prefetch flags)"
        )

    def optimize(self) -> None:  # noqa: B027 (optional hook: not every database needs it)
        """Compact storage and build or refresh indexes after bulk writes."""

    def close(self) -> None:  # noqa: B027 (optional hook: most backends hold nothing to release)
        """Release connections or file handles."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.uri)!r}, collection={self.collection!r})"
