"""``memory://[name]``: an in-process store with brute-force FDE search.

It is the reference every other backend is tested against: the first stage is an exact inner
product over all FDEs and the filter is :meth:`Filter.matches` itself, so its results depend
only on the data. Collections live as long as the process; two connections to the same
``memory://name`` and collection see the same data.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from multivec._filters import Filter
from multivec._models import CollectionInfo
from multivec.backends._base import Backend, Fetched, WriteBatch

__all__ = ["MemoryBackend"]


@dataclass
class _Row:
    fde: npt.NDArray[np.float32]
    vectors: npt.NDArray[Any]
    metadata: dict[str, Any]
    text: str | None


@dataclass
class _Store:
    info: CollectionInfo
    rows: dict[str, _Row] = field(default_factory=dict)
    # The FDE matrix is rebuilt lazily after writes, so a burst of upserts costs one rebuild.
    matrix: npt.NDArray[np.float32] | None = None
    matrix_keys: list[str] = field(default_factory=list)


_STORES: dict[tuple[str, str], _Store] = {}
_LOCK = threading.Lock()


class MemoryBackend(Backend):
    """Brute force over everything in memory; the oracle for conformance tests."""

    scheme: ClassVar[str] = "memory"
    persistent: ClassVar[bool] = False

    @property
    def _key(self) -> tuple[str, str]:
        return (self.uri.location, self.collection)

    @property
    def _store(self) -> _Store:
        store = _STORES.get(self._key)
        if store is None:
            raise LookupError(f"collection {self.collection!r} was dropped")
        return store

    def load_info(self) -> CollectionInfo | None:  # noqa: D102
        store = _STORES.get(self._key)
        return None if store is None else store.info

    def create(self, info: CollectionInfo) -> None:  # noqa: D102
        with _LOCK:
            _STORES.setdefault(self._key, _Store(info))

    def drop(self) -> None:  # noqa: D102
        with _LOCK:
            _STORES.pop(self._key, None)

    def upsert(self, batch: WriteBatch) -> None:  # noqa: D102
        store = self._store
        with _LOCK:
            for i, key in enumerate(batch.keys):
                store.rows[key] = _Row(
                    batch.fdes[i].copy(), batch.vectors[i].copy(), batch.metadata[i], batch.texts[i]
                )
            store.matrix = None

    def delete(self, keys: Sequence[str]) -> None:  # noqa: D102
        store = self._store
        with _LOCK:
            for key in keys:
                store.rows.pop(key, None)
            store.matrix = None

    def count(self) -> int:  # noqa: D102
        return len(self._store.rows)

    def _matrix(self) -> tuple[npt.NDArray[np.float32], list[str]]:
        store = self._store
        with _LOCK:
            if store.matrix is None:
                store.matrix_keys = list(store.rows)
                store.matrix = (
                    np.stack([store.rows[k].fde for k in store.matrix_keys])
                    if store.rows
                    else np.empty((0, store.info.fde_dim), dtype=np.float32)
                )
            return store.matrix, store.matrix_keys

    def ann(  # noqa: D102
        self, fde_query: npt.NDArray[np.float32], limit: int, filter: Filter | None
    ) -> tuple[list[str], npt.NDArray[np.float32]]:
        matrix, keys = self._matrix()
        rows = self._store.rows
        if filter is not None:
            idx = np.array(
                [i for i, k in enumerate(keys) if filter.matches(rows[k].metadata)], dtype=np.int64
            )
        else:
            idx = np.arange(len(keys))
        if idx.size == 0:
            return [], np.empty(0, dtype=np.float32)
        scores = matrix[idx] @ fde_query if filter is not None else matrix @ fde_query
        # Stable sort: ties keep insertion order, so results are reproducible.
        order = np.argsort(-scores, kind="stable")[:limit]
        return [keys[idx[i]] for i in order], scores[order].astype(np.float32)

    def _fetched(self, keys: list[str], with_metadata: bool) -> Fetched:
        rows = self._store.rows
        info = self._store.info
        return Fetched.pack(
            keys,
            [rows[k].vectors for k in keys],
            info.dim,
            info.dtype,
            metadata=[dict(rows[k].metadata) for k in keys] if with_metadata else None,
            texts=[rows[k].text for k in keys] if with_metadata else None,
        )

    def fetch(self, keys: Sequence[str], *, with_metadata: bool = True) -> Fetched:  # noqa: D102
        rows = self._store.rows
        return self._fetched([k for k in keys if k in rows], with_metadata)

    def fetch_fdes(self, keys: Sequence[str]) -> npt.NDArray[np.float32] | None:  # noqa: D102
        rows = self._store.rows
        if not keys or any(k not in rows for k in keys):
            return None
        return np.stack([rows[k].fde for k in keys]).astype(np.float32, copy=False)

    def scan(self, after: str | None, limit: int) -> Fetched:  # noqa: D102
        ordered = sorted(k for k in self._store.rows if after is None or k > after)
        return self._fetched(ordered[:limit], with_metadata=True)
