"""``lancedb://<directory>``: LanceDB, embedded, the default on one machine.

Layout: one Lance table per collection, one row per document:

=========  ===========================================  ==========================================
column     Arrow type                                   why
=========  ===========================================  ==========================================
key        string                                       the typed document id; ``merge_insert`` key
fde        fixed_size_list<float32>[fde_dim + 1]        the ANN column: the FDE and one coordinate
                                                        that puts every row at norm M (below)
fde_norm2  float64                                      the FDE's squared norm, to recompute that
                                                        coordinate if M grows
tokens     list<fixed_size_list<float16|float32>[dim]>  the token matrix (Lance's multivector type)
metadata   lance.json (JSONB)                           filterable with Lance's JSON functions
text       string, nullable                             the source text, if given
=========  ===========================================  ==========================================

``?ef=N`` in the URI sets the HNSW search breadth (default: the number of candidates).

The collection's :class:`~multivec.CollectionInfo` is kept in the table's schema metadata under
``multivec``. Storage per document is about ``5·fde_dim + 2·n_tokens·dim`` bytes (float16
tokens) plus metadata and text once the index exists: the FDE as float32, and the index's own
8-bit copy of it with the graph's links (about 10.4 KB per document for a 10240-d FDE).

The FDE index, built anew by every :meth:`LanceDBBackend.optimize` from ``_MIN_INDEX_ROWS``
documents on: HNSW over 8-bit scalar-quantised vectors (Lance's ``HnswSq``, one partition) once
the FDEs take ``_HNSW_BYTES`` (1 GiB: about 26,000 documents at 10240-d); below that an
IVF_FLAT index of one partition, an exact scan (Lance scans through an index about ten times
faster than a table without one: 23 against 418 ms for 8,000 such FDEs). The threshold is
high because the 8-bit vectors cost quality on anisotropic encoders (see ``_HNSW_BYTES``).
Rows written after that are searched by a flat scan beside the index until the next
``optimize``, so results are always complete. Filters are translated to Lance SQL over the JSON
column and applied as a *pre*-filter of the vector search, so ``candidates`` results come back
even under a selective filter. Measured with HNSW at every size (the growth benchmark, the
README): the ANN stage took 14.6 ms at 5,000 documents and 17.3 ms at 50,000 (the exact scan:
21 and 133 ms), recall@10 within 0.016 of the exact scan on MiniLM; building the index took
11 s and 285 s. IVF partitions were tried first and lost recall fast on FDEs (0.66 recall@10
probing 20 of 112 partitions at 50,000 documents).

Why the extra coordinate (the MIPS-to-nearest-neighbour reduction): the ANN stage ranks by inner
product. Each FDE ``x`` is stored as ``(x, sqrt(M² - |x|²))`` and the query as ``(s·q, 0)`` with
``|s·q| = M``: every stored row has norm M, ``|(s·q, 0) - (x, e)|² = 2M² - 2s<q, x>``, and the
L2 order is exactly the inner-product order, so the index is built and searched with ``l2``.
Measured at 5,000 documents, the same HNSW index searched in 9.0 ms this way and 27 ms over the
bare FDEs with Lance's ``dot`` distance, at the same recall. M is twice the largest FDE norm of
the first write, kept in the ``fde`` field's metadata. A later document with a larger FDE
raises M to twice its norm, and one Lance ``update`` recomputes the extra coordinate of every
row from ``fde_norm2`` (a full rewrite of the table, once per raise; the FDE norms of one
encoder vary far less than 2x, so it is rare). A writer that read the old M checks it again
after writing and brings its rows up to date. Tables created before this layout (no
``multivec_layout`` schema key) keep the bare FDE and are searched with ``dot``; migrate them to
a new table for the faster index.

Upserts use ``merge_insert("key")`` because a plain ``add`` would duplicate existing ids.
Candidates are fetched by the row ids the ANN query returned (one ``take``, not a key lookup).

Lance has no ORDER BY, so :meth:`LanceDBBackend.scan` keeps the sorted keys and their row ids
of the table version it last read (about 100 bytes per document in memory) and takes each page
by row id; any write makes a new version, which is read again on the next page. A migration
into a new table appends (:meth:`LanceDBBackend.insert`) instead of merging on the key.
"""

from __future__ import annotations

import bisect
import json
import os
import re
import threading
import warnings
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from multivec._filters import And, Contains, Eq, Exists, Filter, In, Not, Or, Range, Scalar
from multivec._models import CollectionInfo
from multivec.backends._base import Backend, Fetched, WriteBatch
from multivec.errors import (
    BackendError,
    ConfigurationError,
    InvalidFilterError,
    MissingDependencyError,
)

# Lance's index builds log a warning line per internal queue overflow: thousands of
# "visited_generator_queue is full" on a 50k-row index build, which would bury a command's own
# output. Only errors are shown unless the user chose a level.
os.environ.setdefault("LANCEDB_LOG", "error")
try:
    import lancedb
    import pyarrow as pa
    import pyarrow.compute as pc
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "lancedb", "lancedb") from exc

__all__ = ["LanceDBBackend", "to_lance_sql"]

_INFO_KEY = b"multivec"
# Tables created before the MIPS-to-L2 layout (see the module docstring) lack this key: their
# ``fde`` column holds the bare FDE and is searched with ``dot``. They stay readable and
# writable in that layout; migrate them to a new table to get the faster index.
_LAYOUT_KEY = b"multivec_layout"
_MIPS_L2 = b"mips-l2"
# The norm bound M of the ``fde`` column, in that field's metadata (it can change, the
# table's schema metadata cannot).
_BOUND_KEY = "multivec:norm_bound"
# M starts at this multiple of the largest FDE norm of the first write, so a rewrite (a larger
# norm arriving later) stays rare; FDE norms of one encoder vary by far less than 2x.
_HEADROOM = 2.0
# Serialises raising M in this process; other processes are reconciled by the check every
# write makes afterwards.
_BOUND_LOCK = threading.Lock()
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# A key IN (...) list this long keeps a single SQL statement small enough to plan quickly.
_IN_CHUNK = 1000
# An index needs a few hundred vectors; below this a scan without one is fast anyway.
_MIN_INDEX_ROWS = 256
# From this many bytes of FDEs the index is HNSW; below, an exact one-partition IVF_FLAT scan
# (about 9 GB/s here: 57 ms at 20,000 FDEs of 10240-d). HNSW's 8-bit vectors cost quality on
# anisotropic encoders: on SciFact with answerai-colbert (5,183 passages, 200 candidates)
# recall@10 fell from 0.954 to 0.947 and nDCG@10 from 0.704 to 0.689. So the exact scan is
# kept while it is affordable, up to 1 GiB (about 26,000 FDEs of 10240-d).
_HNSW_BYTES = 1 << 30


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_num(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(int(value))


def _path(field: str) -> str:
    # JSONPath bracket notation accepts any key once quotes and backslashes are escaped.
    return "$[" + json.dumps(field) + "]"


def _raw(field: str) -> str:
    return f"json_extract(metadata, {_sql_str(_path(field))})"


def _number(field: str) -> str:
    # TRY_CAST yields NULL for strings, booleans and null, so a number comparison never
    # matches another JSON type and never fails on a mixed-type field.
    return f"TRY_CAST({_raw(field)} AS DOUBLE)"


def _eq(field: str, value: Scalar) -> str:
    if isinstance(value, bool):
        return f"{_raw(field)} = {_sql_str('true' if value else 'false')}"
    if isinstance(value, (int, float)):
        return f"{_number(field)} = {_sql_num(value)}"
    # The LIKE guard restricts the match to JSON strings (json_get_string would also render
    # the number 5 as '5').
    return (
        f"({_raw(field)} LIKE '\"%' AND json_get_string(metadata, {_sql_str(field)}) = "
        f"{_sql_str(value)})"
    )


def _leaf(f: Filter) -> str:
    if isinstance(f, Eq):
        return _eq(f.field, f.value)
    if isinstance(f, In):
        return "(" + " OR ".join(_eq(f.field, v) for v in f.values) + ")"
    if isinstance(f, Range):
        num = _number(f.field)
        bounds = [(f.gt, ">"), (f.gte, ">="), (f.lt, "<"), (f.lte, "<=")]
        return (
            "("
            + " AND ".join(f"{num} {op} {_sql_num(v)}" for v, op in bounds if v is not None)
            + ")"
        )
    if isinstance(f, Exists):
        return f"({_raw(f.field)} IS NOT NULL AND {_raw(f.field)} <> 'null')"
    if isinstance(f, Contains):
        value = f.value
        literal = json.dumps(value) if not isinstance(value, str) else value
        # json_array_contains compares rendered values, so a string "1" and a number 1 would
        # both match; the type check on an exact element match is left to the conformance test.
        return f"json_array_contains(metadata, {_sql_str(_path(f.field))}, {_sql_str(literal)})"
    raise InvalidFilterError(f"LanceDB cannot translate filter node {type(f).__name__}")


def to_lance_sql(f: Filter) -> str:
    """Translate a filter to a Lance SQL predicate over the ``metadata`` JSON column.

    Every leaf is wrapped in ``COALESCE(..., false)`` so SQL's three-valued logic (a missing
    field is NULL, and ``NOT NULL`` is NULL) gives the same answers as :meth:`Filter.matches`.
    """
    if isinstance(f, And):
        return "(" + " AND ".join(to_lance_sql(x) for x in f.filters) + ")"
    if isinstance(f, Or):
        return "(" + " OR ".join(to_lance_sql(x) for x in f.filters) + ")"
    if isinstance(f, Not):
        return f"(NOT {to_lance_sql(f.filter)})"
    return f"COALESCE({_leaf(f)}, false)"


class LanceDBBackend(Backend):
    """LanceDB (Lance format) in a local directory; see the module docstring for the layout."""

    scheme: ClassVar[str] = "lancedb"
    extra: ClassVar[str | None] = "lancedb"
    # Exhaustive cosine MaxSim over the token column; Lance has no prefetch-then-rerank query.
    supports_native_multivector = True

    def __init__(self, uri: Any, collection: str) -> None:
        super().__init__(uri, collection)
        if not uri.location:
            raise ConfigurationError("lancedb:// needs a directory, e.g. lancedb://./data")
        if not _TABLE_NAME.match(collection):
            raise ConfigurationError(
                f"collection name {collection!r} is not valid for LanceDB; use letters, digits, "
                "'_', '-' and '.', starting with a letter, digit or '_'"
            )
        # A zero interval makes every read see the latest committed version, including writes
        # made through another connection (read-your-writes across handles).
        self._db = lancedb.connect(uri.location, read_consistency_interval=timedelta(0))
        self._table: Any = None
        self._dim = 0
        self._dtype = "float16"
        self._fde_dim = 0
        # True for tables in the MIPS-to-L2 layout (every table multivec creates now).
        self._mips_l2 = True
        ef = uri.option("ef")
        if ef is not None and not (ef.isascii() and ef.isdigit() and int(ef) > 0):
            raise ConfigurationError(f"ef must be a whole number >= 1, got {ef!r}")
        # The HNSW search breadth; never below the number of candidates asked for.
        self._ef = int(ef) if ef else 0
        # Row ids of the last ANN result or scan page, so reading those rows is a direct take.
        self._last_rows: dict[str, int] = {}
        # (table version, sorted keys, their row ids) for scan; see the module docstring.
        self._key_order: tuple[int, list[str], list[int]] | None = None

    def _open(self) -> Any:
        if self._table is None:
            try:
                self._table = self._db.open_table(self.collection)
            except (FileNotFoundError, ValueError) as exc:
                raise BackendError(f"LanceDB table {self.collection!r} does not exist") from exc
        return self._table

    def _schema_for(self, fde_dim: int) -> Any:
        token_type = pa.float16() if self._dtype == "float16" else pa.float32()
        width = fde_dim + 1 if self._mips_l2 else fde_dim
        fields = [
            pa.field("key", pa.string(), nullable=False),
            pa.field("fde", pa.list_(pa.float32(), width), nullable=False),
            pa.field("tokens", pa.list_(pa.list_(token_type, self._dim)), nullable=False),
            pa.field("metadata", pa.json_(pa.utf8())),
            pa.field("text", pa.string()),
        ]
        if self._mips_l2:
            fields.append(pa.field("fde_norm2", pa.float64(), nullable=False))
        return pa.schema(fields)

    def load_info(self) -> CollectionInfo | None:  # noqa: D102
        if self.collection not in self._db.list_tables().tables:
            return None
        meta = self._open().schema.metadata or {}
        if _INFO_KEY not in meta:
            raise ConfigurationError(
                f"LanceDB table {self.collection!r} exists but was not created by multivec"
            )
        info = CollectionInfo.model_validate_json(meta[_INFO_KEY])
        self._dim, self._dtype, self._fde_dim = info.dim, info.dtype, info.fde_dim
        self._mips_l2 = meta.get(_LAYOUT_KEY) == _MIPS_L2
        return info

    def create(self, info: CollectionInfo) -> None:  # noqa: D102
        self._dim, self._dtype, self._fde_dim = info.dim, info.dtype, info.fde_dim
        self._mips_l2 = True
        schema = self._schema_for(info.fde_dim).with_metadata(
            {_INFO_KEY: info.model_dump_json().encode(), _LAYOUT_KEY: _MIPS_L2}
        )
        self._table = self._db.create_table(self.collection, schema=schema, exist_ok=True)

    def drop(self) -> None:  # noqa: D102
        if self.collection in self._db.list_tables().tables:
            self._db.drop_table(self.collection)
        self._table = None

    def upsert(self, batch: WriteBatch) -> None:  # noqa: D102
        self._write(batch, self._merge)

    def _merge(self, data: Any) -> None:
        # Built only now, after any raise of M: a merge prepared on the table version before
        # that update, measured here, committed over it and restored the old rows.
        merge = self._open().merge_insert("key").when_matched_update_all()
        merge.when_not_matched_insert_all().execute(data)

    def insert(self, batch: WriteBatch) -> None:
        """Append: measured here, a quarter faster than ``merge_insert`` on a 10k bulk load."""
        self._write(batch, lambda data: self._open().add(data))

    def _write(self, batch: WriteBatch, write: Callable[[Any], None]) -> None:
        if not self._mips_l2:
            write(self._arrow(batch, 0.0))
            return
        bound = self._bound_for(batch.fdes)
        write(self._arrow(batch, bound))
        stored = self._stored_bound()
        if stored is not None and stored != bound:
            # Another writer raised M while this batch was being written; the update brings
            # every row still augmented for a smaller M, these included, up to date.
            self._reaugment(stored)

    def _stored_bound(self) -> float | None:
        raw = (self._open().schema.field("fde").metadata or {}).get(_BOUND_KEY.encode())
        return float(raw) if raw is not None else None

    def _bound_for(self, fdes: npt.NDArray[np.float32]) -> float:
        """The norm bound M to augment ``fdes`` with, raised first if one of them exceeds it."""
        largest = float(np.sqrt(np.einsum("ij,ij->i", fdes, fdes, dtype=np.float64).max()))
        current = self._stored_bound()
        if current is not None and largest <= current:
            return current
        with _BOUND_LOCK:
            current = self._stored_bound()
            if current is not None and largest <= current:
                return current
            bound = largest * _HEADROOM if largest > 0 else 1.0
            self._open().update_field_metadata(
                {"path": "fde", "metadata": {_BOUND_KEY: repr(bound)}}
            )
            if current is not None:
                self._reaugment(bound)
            return bound

    def _reaugment(self, bound: float) -> None:
        """Set the extra coordinate of every row not yet augmented for ``bound``, in place.

        Lance computes ``sqrt(M² - |x|²)`` from the row's own ``fde_norm2``, so a document
        rewritten meanwhile is never overwritten with an older FDE, and running it twice
        changes nothing. Rewritten rows leave the index until the next ``optimize``.
        """
        extra = f"fde[{self._fde_dim + 1}]"  # SQL arrays count from 1
        m2 = repr(bound * bound)
        # Only `fde` is assigned: Lance was seen evaluating one assignment after another, so
        # an expression must not read a column the same update sets.
        self._open().update(
            where=f"abs({extra} * {extra} + fde_norm2 - {m2}) > {m2} * 1e-4",
            values_sql={
                "fde": f"array_append(array_slice(fde, 1, {self._fde_dim}), "
                f"CAST(sqrt(greatest({m2} - fde_norm2, 0.0)) AS FLOAT))"
            },
        )

    def _arrow(self, batch: WriteBatch, bound: float) -> Any:
        lengths = np.array([v.shape[0] for v in batch.vectors], dtype=np.int32)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.concatenate(batch.vectors).reshape(-1)
        # Our schema, not the table's: Lance stores the JSON column as JSONB and converts only
        # Arrow's json type on write; raw JSON text cast to its binary type would be unreadable.
        schema = self._schema_for(batch.fdes.shape[1])
        inner = pa.FixedSizeListArray.from_arrays(pa.array(flat), self._dim)
        fdes = batch.fdes
        columns: dict[str, Any] = {}
        if self._mips_l2:
            norms2 = np.einsum("ij,ij->i", fdes, fdes, dtype=np.float64)
            extra = np.sqrt(np.maximum(bound * bound - norms2, 0.0)).astype(np.float32)
            fdes = np.hstack([fdes, extra[:, None]])
            columns["fde_norm2"] = pa.array(norms2)
        return pa.table(
            {
                "key": pa.array(batch.keys, pa.string()),
                "fde": pa.FixedSizeListArray.from_arrays(pa.array(fdes.reshape(-1)), fdes.shape[1]),
                "tokens": pa.ListArray.from_arrays(pa.array(offsets), inner),
                "metadata": pa.array(
                    [json.dumps(m, ensure_ascii=False) for m in batch.metadata], pa.json_(pa.utf8())
                ),
                "text": pa.array(batch.texts, pa.string()),
                **columns,
            },
            schema=schema,
        )

    def delete(self, keys: Sequence[str]) -> None:  # noqa: D102
        table = self._open()
        for start in range(0, len(keys), _IN_CHUNK):
            chunk = keys[start : start + _IN_CHUNK]
            table.delete("key IN (" + ", ".join(_sql_str(k) for k in chunk) + ")")

    def count(self) -> int:  # noqa: D102
        return int(self._open().count_rows())

    def ann(  # noqa: D102
        self, fde_query: npt.NDArray[np.float32], limit: int, filter: Filter | None
    ) -> tuple[list[str], npt.NDArray[np.float32]]:
        bound = scale = 0.0
        if self._mips_l2:
            stored = self._stored_bound()
            if stored is None:  # nothing was ever written
                return [], np.empty(0, dtype=np.float32)
            # Any positive scale of the query keeps the order; at norm M it sits on the sphere
            # the augmented FDEs lie on, which keeps the L2 distances well conditioned.
            bound, norm = stored, float(np.linalg.norm(fde_query))
            scale = bound / norm if norm > 0 else 1.0
            vector, metric = np.append(fde_query * np.float32(scale), np.float32(0.0)), "l2"
        else:
            vector, metric = fde_query, "dot"
        query = (
            self._open()
            .search(vector, vector_column_name="fde")
            .metric(metric)
            # _distance named explicitly: leaving it implicit makes Lance log a deprecation
            # warning on every search.
            .select(["key", "_distance"])
            .with_row_id(True)
            .limit(limit)
            .ef(max(limit, self._ef))
        )
        if filter is not None:
            query = query.where(to_lance_sql(filter), prefilter=True)
        result = query.to_arrow()
        keys = result.column("key").to_pylist()
        self._last_rows = dict(zip(keys, result.column("_rowid").to_pylist(), strict=True))
        distance = result.column("_distance").to_numpy().astype(np.float64)
        if self._mips_l2:
            # Lance's l2 _distance is squared: |s·q|² + M² - 2s<q, x> with |s·q| = M.
            scores = (2.0 * bound * bound - distance) / (2.0 * scale)
        else:
            scores = 1.0 - distance  # for dot, Lance reports 1 - <q, x>
        return keys, scores.astype(np.float32)

    def native_search(  # noqa: D102
        self,
        query: npt.NDArray[np.float32],
        k: int,
        filter: Filter | None,
        *,
        prefetch: tuple[npt.NDArray[np.float32], int] | None = None,
    ) -> tuple[list[str], npt.NDArray[np.float32]]:
        if prefetch is not None:
            raise ConfigurationError(
                "LanceDB has no prefetch-then-MaxSim path; use mode='native' or 'multivec'"
            )
        # Lance scores multivector columns with cosine only, and without .metric() an unindexed
        # search silently uses L2; cosine equals the dot product for unit-norm tokens.
        search = (
            self._open()
            .search(query, vector_column_name="tokens")
            .metric("cosine")
            .select(["key", "_distance"])
            .limit(k)
        )
        if filter is not None:
            search = search.where(to_lance_sql(filter), prefilter=True)
        result = search.to_arrow()
        # _distance = sum over query tokens of (1 - max cosine) = n_query_tokens - MaxSim.
        distance = result.column("_distance").to_numpy().astype(np.float32)
        return result.column("key").to_pylist(), np.float32(query.shape[0]) - distance

    def _read(self, where: str, with_metadata: bool) -> Any:
        columns = ["key", "tokens"] + (["metadata", "text"] if with_metadata else [])
        return self._open().search().where(where).select(columns).limit(None).to_arrow()

    def _to_fetched(self, table: Any, with_metadata: bool) -> Fetched:
        tokens = table.column("tokens").combine_chunks()
        # flatten() honours slicing offsets, unlike .values; to_numpy is then zero-copy.
        flat = tokens.flatten().flatten().to_numpy(zero_copy_only=False)
        lengths = tokens.value_lengths().to_numpy(zero_copy_only=False)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        metadata = texts = None
        if with_metadata:
            metadata = [
                json.loads(m) if m is not None else {} for m in table.column("metadata").to_pylist()
            ]
            texts = table.column("text").to_pylist()
        return Fetched(
            table.column("key").to_pylist(), flat.reshape(-1, self._dim), offsets, metadata, texts
        )

    def fetch(self, keys: Sequence[str], *, with_metadata: bool = True) -> Fetched:  # noqa: D102
        if not keys:
            return Fetched.pack([], [], self._dim, self._dtype, [] if with_metadata else None)
        rows = [self._last_rows.get(k) for k in keys]
        if None not in rows:
            columns = ["key", "tokens"] + (["metadata", "text"] if with_metadata else [])
            taken = self._open().take_row_ids(rows).select(columns).to_arrow()
            # A compaction between the ANN query and this take would move rows: check the keys.
            if sorted(taken.column("key").to_pylist()) == sorted(keys):
                return self._to_fetched(taken, with_metadata)
        parts = [
            self._read(
                "key IN (" + ", ".join(_sql_str(k) for k in keys[i : i + _IN_CHUNK]) + ")",
                with_metadata,
            )
            for i in range(0, len(keys), _IN_CHUNK)
        ]
        return self._to_fetched(pa.concat_tables(parts), with_metadata)

    def fetch_fdes(self, keys: Sequence[str]) -> npt.NDArray[np.float32] | None:  # noqa: D102
        row_ids = [self._last_rows.get(k) for k in keys]
        if keys and None not in row_ids:
            taken = self._open().take_row_ids(row_ids).select(["key", "fde"]).to_arrow()
            got = taken.column("key").to_pylist()
            # A compaction since the scan or search would move rows: check the keys.
            if sorted(got) == sorted(keys):
                flat = taken.column("fde").combine_chunks().flatten().to_numpy(zero_copy_only=False)
                matrix: npt.NDArray[np.float32] = flat.reshape(len(got), -1)[:, : self._fde_dim]
                position = {k: i for i, k in enumerate(got)}
                return matrix[[position[k] for k in keys]].astype(np.float32, copy=False)
        rows: dict[str, Any] = {}
        for i in range(0, len(keys), _IN_CHUNK):
            where = "key IN (" + ", ".join(_sql_str(k) for k in keys[i : i + _IN_CHUNK]) + ")"
            query = self._open().search().where(where).select(["key", "fde"]).limit(None)
            part = query.to_arrow()
            fdes = part.column("fde").combine_chunks().flatten().to_numpy(zero_copy_only=False)
            fdes = fdes.reshape(len(part), -1)[:, : self._fde_dim]
            rows.update(zip(part.column("key").to_pylist(), fdes, strict=True))
        if not keys or any(k not in rows for k in keys):
            return None
        return np.stack([rows[k] for k in keys]).astype(np.float32, copy=False)

    def scan(self, after: str | None, limit: int) -> Fetched:  # noqa: D102
        table = self._open()
        version = table.version
        if self._key_order is None or self._key_order[0] != version:
            listed = table.search().select(["key"]).with_row_id(True).limit(None).to_arrow()
            # Arrow sorts strings by their UTF-8 bytes: the same order as Python's str.
            order = pc.sort_indices(listed.column("key"))
            self._key_order = (
                version,
                listed.column("key").take(order).to_pylist(),
                listed.column("_rowid").take(order).to_pylist(),
            )
        _, keys, rows = self._key_order
        start = 0 if after is None else bisect.bisect_right(keys, after)
        page = keys[start : start + limit]
        self._last_rows = dict(zip(page, rows[start : start + limit], strict=True))
        fetched = self.fetch(page)
        if fetched.keys == page:  # rows written in key order (a migrated table) come back so
            return fetched
        position = {k: i for i, k in enumerate(fetched.keys)}
        return _reorder(fetched, [position[k] for k in page if k in position])

    def optimize(self) -> None:
        """Compact the fragments many upserts leave, drop old versions, train the FDE index.

        Run it when no other process is reading or writing the table: Lance deletes the files
        of every version but the latest, and a reader still on an older one would fail.
        """
        table = self._open()
        # Lance's own index maintenance (part of every table.optimize) merges IVF partitions
        # it finds undersized: measured here, it folded an 18-partition index over 1,300 FDEs
        # into one. Dropping the index before compaction and building it anew afterwards keeps
        # it as configured, and costs no more than the incremental update of a graph index.
        for index in table.list_indices():
            if index.columns == ["fde"]:
                table.drop_index(index.name)
        # Every merge_insert writes a table version, and Lance keeps old ones (for time travel)
        # for 7 days by default; multivec never reads them, and after a bulk load they more
        # than double the bytes on disk. Lance warns that this is unsafe with concurrent
        # users, which the docstring above makes the caller's condition.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"optimize\(cleanup_older_than=0\)")
            table.optimize(cleanup_older_than=timedelta(0))
        rows = table.count_rows()
        if rows < _MIN_INDEX_ROWS:
            return
        from lancedb.index import HnswSq, IvfFlat

        distance: Literal["l2", "dot"] = "l2" if self._mips_l2 else "dot"
        # One partition either way: IVF partitions of FDEs lost recall fast (0.66 recall@10 at
        # 20 of 112 partitions on 50k documents); the HNSW graph alone finds the candidates.
        if rows * 4 * (self._fde_dim + 1) >= _HNSW_BYTES:
            table.create_index(
                "fde", config=HnswSq(distance_type=distance, num_partitions=1), name="fde_hnsw"
            )
        else:
            table.create_index(
                "fde", config=IvfFlat(distance_type=distance, num_partitions=1), name="fde_scan"
            )


def _reorder(fetched: Fetched, order: list[int]) -> Fetched:
    matrices = [fetched.matrix(i) for i in order]
    return Fetched.pack(
        [fetched.keys[i] for i in order],
        matrices,
        fetched.tokens.shape[1],
        str(fetched.tokens.dtype),
        [fetched.metadata[i] for i in order] if fetched.metadata is not None else None,
        [fetched.texts[i] for i in order] if fetched.texts is not None else None,
    )
