"""``lancedb://<directory>``: LanceDB, embedded, the default on one machine.

Layout: one Lance table per collection, one row per document:

=========  ===========================================  ==========================================
column     Arrow type                                   why
=========  ===========================================  ==========================================
key        string                                       the typed document id; ``merge_insert`` key
fde        fixed_size_list<float32>[fde_dim]            the ANN column, searched with ``dot``
tokens     list<fixed_size_list<float16|float32>[dim]>  the token matrix (Lance's multivector type)
metadata   lance.json (JSONB)                           filterable with Lance's JSON functions
text       string, nullable                             the source text, if given
=========  ===========================================  ==========================================

The collection's :class:`~multivec.CollectionInfo` is kept in the table's schema metadata under
``multivec``. Storage per document is about ``8·fde_dim + 2·n_tokens·dim`` bytes (float16) plus
metadata and text once the index exists (IVF_FLAT keeps its own copy of the FDEs).

Upserts use ``merge_insert("key")`` because a plain ``add`` would duplicate existing ids.
Filters are translated to Lance SQL over the JSON column and applied as a *pre*-filter of the
vector search, so ``candidates`` results come back even under a selective filter.

The FDE column gets an IVF_FLAT index (inner product) when :meth:`LanceDBBackend.optimize` runs
on at least ``_MIN_INDEX_ROWS`` documents; rows written after that are searched by a flat scan
until the next ``optimize``, so results are always complete. Measured here, Lance's unindexed
scan is an order of magnitude slower than the same search through an IVF_FLAT index probing every
partition (exact), so the index pays off even for exact search. ``?nprobes=N`` in the URI is
meant to probe fewer partitions, but measured on FDEs it changes nothing: trained with the
``dot`` distance, the index puts every FDE in one partition (Lance's ``analyze_plan`` shows one
partition searched and one comparison per row), so the search is an exact, linear scan through
the index; see the README's growth results.
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
import warnings
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, ClassVar

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

# Lance's IVF training logs a warning line per internal queue overflow: thousands of
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
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# A key IN (...) list this long keeps a single SQL statement small enough to plan quickly.
_IN_CHUNK = 1000
# IVF training needs a few hundred vectors; below this a flat scan is fast anyway.
# The FDE index's name records its partition count, to know when to train it again.
_INDEX_NAME = re.compile(r"fde_ivf_(\d+)")
_MIN_INDEX_ROWS = 256


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
    supports_native_multivector: ClassVar[bool] = True

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
        nprobes = uri.option("nprobes")
        self._nprobes = int(nprobes) if nprobes else None
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
        return pa.schema(
            [
                pa.field("key", pa.string(), nullable=False),
                pa.field("fde", pa.list_(pa.float32(), fde_dim), nullable=False),
                pa.field("tokens", pa.list_(pa.list_(token_type, self._dim)), nullable=False),
                pa.field("metadata", pa.json_(pa.utf8())),
                pa.field("text", pa.string()),
            ]
        )

    def load_info(self) -> CollectionInfo | None:  # noqa: D102
        if self.collection not in self._db.list_tables().tables:
            return None
        meta = self._open().schema.metadata or {}
        if _INFO_KEY not in meta:
            raise ConfigurationError(
                f"LanceDB table {self.collection!r} exists but was not created by multivec"
            )
        info = CollectionInfo.model_validate_json(meta[_INFO_KEY])
        self._dim, self._dtype = info.dim, info.dtype
        return info

    def create(self, info: CollectionInfo) -> None:  # noqa: D102
        self._dim, self._dtype = info.dim, info.dtype
        schema = self._schema_for(info.fde_dim).with_metadata(
            {_INFO_KEY: info.model_dump_json().encode()}
        )
        self._table = self._db.create_table(self.collection, schema=schema, exist_ok=True)

    def drop(self) -> None:  # noqa: D102
        if self.collection in self._db.list_tables().tables:
            self._db.drop_table(self.collection)
        self._table = None

    def upsert(self, batch: WriteBatch) -> None:  # noqa: D102
        merge = self._open().merge_insert("key")
        merge.when_matched_update_all().when_not_matched_insert_all().execute(self._arrow(batch))

    def _arrow(self, batch: WriteBatch) -> Any:
        lengths = np.array([v.shape[0] for v in batch.vectors], dtype=np.int32)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.concatenate(batch.vectors).reshape(-1)
        # Our schema, not the table's: Lance stores the JSON column as JSONB and converts only
        # Arrow's json type on write; raw JSON text cast to its binary type would be unreadable.
        schema = self._schema_for(batch.fdes.shape[1])
        inner = pa.FixedSizeListArray.from_arrays(pa.array(flat), self._dim)
        fdes = pa.FixedSizeListArray.from_arrays(
            pa.array(batch.fdes.reshape(-1)), batch.fdes.shape[1]
        )
        return pa.table(
            {
                "key": pa.array(batch.keys, pa.string()),
                "fde": fdes,
                "tokens": pa.ListArray.from_arrays(pa.array(offsets), inner),
                "metadata": pa.array(
                    [json.dumps(m, ensure_ascii=False) for m in batch.metadata], pa.json_(pa.utf8())
                ),
                "text": pa.array(batch.texts, pa.string()),
            },
            schema=schema,
        )

    def insert(self, batch: WriteBatch) -> None:
        """Append: measured here, a quarter faster than ``merge_insert`` on a 10k bulk load."""
        self._open().add(self._arrow(batch))

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
        query = (
            self._open()
            .search(fde_query, vector_column_name="fde")
            .metric("dot")
            # _distance named explicitly: leaving it implicit makes Lance log a deprecation
            # warning on every search.
            .select(["key", "_distance"])
            .with_row_id(True)
            .limit(limit)
            # Probing every partition of the IVF_FLAT index is exact (and fast); see the module doc.
            .nprobes(self._nprobes or 1_000_000)
        )
        if filter is not None:
            query = query.where(to_lance_sql(filter), prefilter=True)
        result = query.to_arrow()
        keys = result.column("key").to_pylist()
        self._last_rows = dict(zip(keys, result.column("_rowid").to_pylist(), strict=True))
        # For the dot metric Lance reports _distance = 1 - <q, x>.
        scores = 1.0 - result.column("_distance").to_numpy().astype(np.float32)
        return keys, scores

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
                matrix: npt.NDArray[np.float32] = flat.reshape(len(got), -1)
                position = {k: i for i, k in enumerate(got)}
                return matrix[[position[k] for k in keys]].astype(np.float32, copy=False)
        rows: dict[str, Any] = {}
        for i in range(0, len(keys), _IN_CHUNK):
            where = "key IN (" + ", ".join(_sql_str(k) for k in keys[i : i + _IN_CHUNK]) + ")"
            query = self._open().search().where(where).select(["key", "fde"]).limit(None)
            part = query.to_arrow()
            fdes = part.column("fde").combine_chunks().flatten().to_numpy(zero_copy_only=False)
            fdes = fdes.reshape(len(part), -1)
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
        """Compact the fragments many upserts leave, build the FDE index, drop old versions.

        Run it when no other process is reading or writing the table: Lance deletes the files
        of every version but the latest, and a reader still on an older one would fail.
        """
        table = self._open()
        table.optimize()
        rows = table.count_rows()
        # About sqrt(n) / 2 partitions keeps lists long enough for fast scans when probed.
        partitions = max(2, round(rows**0.5 / 2))
        current = [ix.name for ix in table.list_indices() if ix.columns == ["fde"]]
        trained = [int(m.group(1)) for n in current if (m := _INDEX_NAME.fullmatch(n))]
        # Lance adds new rows to the existing partitions; once the table has outgrown them
        # (twice the partitions it would get now, i.e. four times the rows), train again, or
        # every probe scans ever longer lists.
        if rows >= _MIN_INDEX_ROWS and (not trained or partitions >= 2 * trained[0]):
            from lancedb.index import IvfFlat

            for name in current:
                table.drop_index(name)
            table.create_index(
                "fde",
                config=IvfFlat(distance_type="dot", num_partitions=partitions),
                name=f"fde_ivf_{partitions}",
            )
        # Every merge_insert and the compaction write a new table version, and Lance keeps old
        # ones (for time travel) for 7 days by default; multivec never reads them, and after a
        # bulk load they more than double the bytes on disk. Lance warns that this is unsafe
        # with concurrent users, which the docstring above makes the caller's condition.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"optimize\(cleanup_older_than=0\)")
            # The first pass's index update writes one more version; the second drops it.
            for _ in range(2):
                table.optimize(cleanup_older_than=timedelta(0))


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
