"""``qdrant+edge://``, ``qdrant+local://`` and ``qdrant://``: Qdrant, embedded or as a server.

Flavours (the driver after ``+`` picks one):

* ``qdrant+edge://<directory>``: **Qdrant Edge** (``qdrant-edge-py``), Qdrant's Rust engine
  running in this process, with real HNSW and payload handling. This is the one to use on one
  machine. Each collection is a shard in the subdirectory ``<directory>/<collection>``; writes
  are flushed before they return, so they are durable. A shard can be open only once per
  process (its WAL is locked), so connections in one process share one open shard.
* ``qdrant+local://:memory:`` and ``qdrant+local://<directory>``: qdrant-client's *local mode*,
  a pure-Python brute-force engine meant for tests and prototypes (it warns above 20,000 points
  and ignores HNSW settings). ``:memory:`` lives as long as the process and is shared by every
  connection to it; a directory allows one client per path, so one is shared per process.
* ``qdrant://host:port[?grpc_port=6334&api_key=...&https=true&prefer_grpc=true&timeout=60]``: a
  server; each request waits at most ``timeout`` seconds (default 60).
  gRPC is preferred (``prefer_grpc=true``, the default): it sends floats as 4 binary bytes where
  REST's JSON spends up to ~12. The server refuses requests above 32 MiB, so batches are capped
  at 8 MiB of token bytes over gRPC and 4 MiB over REST (as counted by the façade). The API key
  comes from ``api_key`` or the ``QDRANT_API_KEY`` environment variable. A connection failure
  or timeout is tried 3 times in all, with 0.5 s and 1 s pauses, before
  :class:`~multivec.errors.BackendUnavailableError`.

Search: by default multivec's exact rerank runs inside Qdrant (``engine_rerank``; not in
qdrant-client's local mode, whose MaxSim is pure Python and slower than multivec's): one Query
API request prefetches the candidates by the FDE and scores them with Qdrant's MaxSim over
``mv``, which holds the same values as ``_v``. The scores are exact MaxSim up to rounding:
Qdrant rounds the query to the stored float16 first, which moved scores by up to 1e-4
(relative) in the tests, so near-ties may swap places. No token vectors leave the database.
On SciFact with Qdrant Edge (5,183 documents, 200 candidates) that took 29.8 ms where
fetching the candidates and scoring them here took 40.7 ms, and at 50,000 documents 31-53 ms
(two runs) where the client-side path took 242-256 ms (its fetch outgrows the page cache).
Against a server it also saves moving about 27 MB of tokens per query. ``rerank=client``
fetches the candidates and scores them here, as on other backends (needed to report the
candidates' ids).

Options for every flavour: ``hnsw_ef`` (default 256, raised to the candidate count when that is
larger) sets the HNSW beam width of the FDE search; ``exact=true`` makes it a full scan of the
float32 FDEs. Collections below Qdrant's ``full_scan_threshold`` are scanned exactly whatever
the setting. ``quantization`` (``int8``, the default, or ``none``; read when a collection is
created, ignored by local mode) keeps an int8 copy of the FDEs in RAM that the HNSW search
scores with, without Qdrant's float32 rescoring: the candidates are reranked exactly anyway. On
SciFact (5,183 documents, 10240-d FDE, 200 candidates) it made Edge's FDE search 2.8x faster
(8.5 to 3.0 ms) with the same recall@10 after the rerank (0.956), for ``fde_dim`` more bytes of
RAM and disk per document.

Layout: one Qdrant collection (an Edge shard) per multivec collection, one point per document:

==========  ===================================================  ===================================
field       Qdrant type                                          why
==========  ===================================================  ===================================
id          UUIDv5 of the internal key (fixed namespace)         Qdrant takes only uint64/UUID ids
``fde``     dense vector, size ``fde_dim``, DOT, HNSW, float32   the ANN index of the first stage
            (+ int8 copy in RAM, below)
``mv``      multivector, size ``dim``, DOT, MAX_SIM, ``m=0``,    the token matrix; ``m=0`` builds no
            float16 or float32 as the collection's dtype         graph (it only serves reranking)
``_k``      payload string                                       the internal key, so ids round-trip
``_m``      payload object                                       the metadata (filters: ``_m.<f>``)
``_t``      payload string or null                               the text
``_x``      payload list of strings                              type tags for exact filters (below)
``_v``      payload string: base64 of the token matrix at the    the fast read path of the rerank
            stored precision (:mod:`multivec.backends._codec`)   (below)
==========  ===================================================  ===================================

``mv`` is the source of truth and what Qdrant's own MaxSim (``mode="native"`` and
``"native-prefetch"``) scores; ``_v`` holds the same bits and is what multivec's rerank reads.
Both are written in the same point upsert, so they cannot disagree. The copy exists because
Qdrant returns vectors to Python as lists of floats: for 200 candidates of 180 x 384 tokens,
turning ``mv`` into NumPy took about 500 ms, decoding ``_v`` 25 ms (Qdrant Edge 0.9, this
machine).

Storage per document is about ``5·fde_dim + (2 + 8/3)·n_tokens·dim`` bytes: the FDE in float32
and int8, the tokens in float16 and as base64 (``(4 + 16/3)·`` for float32 tokens), plus the
FDE's HNSW links, the rest of the payload, and Qdrant's per-point overhead (id tracker,
versions).

The collection's :class:`~multivec.CollectionInfo` is stored as JSON in the payload ``_info`` of
a reserved point (a fixed UUID that no key maps to, a zero FDE and one zero token). Edge has no
collection-level metadata, so all flavours use this point; every count, scan and search
excludes it with a ``must_not has_id`` condition.

Filters are translated to Qdrant filters and applied inside the vector search (pre-filtering).
Qdrant's matching differs from :meth:`Filter.matches` in ways ``_x`` corrects: ``match`` on a
list-valued field matches any element (multivec's ``==`` never matches a list), ``is_empty``
treats ``[]`` as empty (multivec's ``exists`` does not), Qdrant Edge 0.9.0 turns
``MatchValue(True)`` into the integer 1 so booleans cannot be matched directly, and local mode
compares with Python's ``==`` where ``True == 1``. ``_x`` therefore lists, for the top-level
metadata fields that need it, ``"L:<field>"`` (a list), ``"O:<field>"`` (an object),
``"T:<field>"`` / ``"F:<field>"`` (a boolean true / false) and ``"LT:<field>"`` /
``"LF:<field>"`` (a list holding true / false); boolean comparisons are matches on these tags,
and scalar comparisons exclude lists and booleans with them. Field names with ``.``, ``[``,
``]`` or ``"`` cannot be written in Qdrant's key path syntax and are refused in filters (such
metadata keys are still stored and returned).

``scan`` reads the keys of all documents past the cursor (payload only, no vectors), sorts them
and fetches one page: simple and exact, and fine up to about 10^5 documents per collection.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import numpy.typing as npt

from multivec._filters import And, Contains, Eq, Exists, Filter, In, Not, Or, Range, Scalar
from multivec._models import CollectionInfo
from multivec._uri import URI
from multivec.backends._base import Backend, Fetched, WriteBatch
from multivec.backends._codec import decode_tokens, encode_tokens
from multivec.errors import (
    BackendError,
    BackendUnavailableError,
    ConfigurationError,
    InvalidFilterError,
    MissingDependencyError,
)

try:
    from qdrant_client import QdrantClient, models
    from qdrant_client.http.exceptions import ResponseHandlingException
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "qdrant-client", "qdrant") from exc

__all__ = ["QdrantBackend", "point_id"]

T = TypeVar("T")

# Fixed forever: changing it would orphan every stored point.
_NAMESPACE = uuid.UUID("6f1c2a3e-8d4b-5e7f-9a0b-1c2d3e4f5a6b")
# Keys always start with "s:" or "i:", so this name can never collide with a document.
_INFO_ID = str(uuid.uuid5(_NAMESPACE, "multivec:collection-info"))
# Prefix of the point references ann() returns; keys start with "s:" or "i:", so never with it.
_REF = "p:"
_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$")
# Characters with a meaning in Qdrant's payload key paths (nesting, arrays, quoting).
_BAD_FIELD_CHARS = frozenset('.[]"')
_MAX_DIM = 65536
_DEFAULT_HNSW_EF = 256
# int8 FDEs: values beyond this quantile are clipped when Qdrant picks the int8 range.
_QUANTILE = 0.99
_SCROLL_PAGE = 1000
# Integers beyond 2**53 lose precision as the float64 bounds of a Qdrant range.
_EXACT_FLOAT_INT = 2**53
_RETRIES = 3
_BACKOFF_S = 0.5
_DEFAULT_TIMEOUT_S = 60
# The server refuses requests above 32 MiB. The façade counts 2 (float16) or 4 bytes per token
# value; a request carries it as a float32 in "mv" plus base64 in "_v" (about 3.3x the count
# over gRPC) or as JSON text (up to ~12 bytes per float, plus base64: about 7x over REST).
_GRPC_REQUEST_BYTES = 8 * 1024 * 1024
_REST_REQUEST_BYTES = 4 * 1024 * 1024


def point_id(key: str) -> str:
    """The Qdrant point id (a UUID string) of an internal key; stable across processes.

    >>> point_id("s:doc-1") == point_id("s:doc-1") != point_id("i:1")
    True
    """
    return str(uuid.uuid5(_NAMESPACE, key))


def _type_tags(metadata: dict[str, Any]) -> list[str]:
    """The ``_x`` tags of one document's metadata (see the module docstring)."""
    tags: list[str] = []
    for field, value in metadata.items():
        if isinstance(value, bool):
            tags.append(("T:" if value else "F:") + field)
        elif isinstance(value, list):
            tags.append("L:" + field)
            if any(item is True for item in value):
                tags.append("LT:" + field)
            if any(item is False for item in value):
                tags.append("LF:" + field)
        elif isinstance(value, dict):
            tags.append("O:" + field)
    return tags


# --- filters -------------------------------------------------------------------------------


class _Dialect:
    """Builds filter conditions with qdrant-client's models (server and local mode)."""

    def filter(self, must: list[Any], should: list[Any], must_not: list[Any]) -> Any:
        return models.Filter(must=must or None, should=should or None, must_not=must_not or None)

    def match(self, key: str, value: str | int) -> Any:
        return models.FieldCondition(key=key, match=models.MatchValue(value=value))

    def match_any(self, key: str, values: list[str]) -> Any:
        return models.FieldCondition(key=key, match=models.MatchAny(any=values))

    def range(self, key: str, gt: Any, gte: Any, lt: Any, lte: Any) -> Any:
        return models.FieldCondition(key=key, range=models.Range(gt=gt, gte=gte, lt=lt, lte=lte))

    def is_empty(self, key: str) -> Any:
        return models.IsEmptyCondition(is_empty=models.PayloadField(key=key))

    def has_id(self, ids: list[str]) -> Any:
        return models.HasIdCondition(has_id=ids)


class _EdgeDialect(_Dialect):
    """The same conditions with qdrant_edge's classes, whose constructors differ."""

    def __init__(self, qe: Any) -> None:
        self._qe = qe

    def filter(self, must: list[Any], should: list[Any], must_not: list[Any]) -> Any:
        return self._qe.Filter(must=must or None, should=should or None, must_not=must_not or None)

    def match(self, key: str, value: str | int) -> Any:
        return self._qe.FieldCondition(key=key, match=self._qe.MatchValue(value))

    def match_any(self, key: str, values: list[str]) -> Any:
        return self._qe.FieldCondition(key=key, match=self._qe.MatchAny(values))

    def range(self, key: str, gt: Any, gte: Any, lt: Any, lte: Any) -> Any:
        return self._qe.FieldCondition(
            key=key, range=self._qe.RangeFloat(gt=gt, gte=gte, lt=lt, lte=lte)
        )

    def is_empty(self, key: str) -> Any:
        return self._qe.IsEmptyCondition(key)

    def has_id(self, ids: list[str]) -> Any:
        return self._qe.HasIdCondition(set(ids))


def _check_field(field: str) -> str:
    bad = _BAD_FIELD_CHARS.intersection(field)
    if bad:
        raise InvalidFilterError(
            f"filter field {field!r} contains {''.join(sorted(bad))!r}, which Qdrant's payload "
            "key syntax cannot express; rename the metadata key to filter on it"
        )
    return "_m." + field


def _scalar_eq(d: _Dialect, field: str, value: Scalar) -> Any:
    """``field == value`` for a scalar field (lists and booleans are excluded by the caller)."""
    key = _check_field(field)
    if isinstance(value, bool):
        return d.match("_x", ("T:" if value else "F:") + field)
    if isinstance(value, str):
        return d.match(key, value)
    if isinstance(value, int) and abs(value) > _EXACT_FLOAT_INT:
        return d.match(key, value)
    # A range, not a match: it also finds 2.0 for 2 (multivec's 1 == 1.0) and takes floats.
    return d.range(key, None, value, None, value)


def _not_list_or_bool(field: str) -> list[str]:
    return ["L:" + field, "T:" + field, "F:" + field]


def to_qdrant_filter(f: Filter, d: _Dialect) -> Any:
    """Translate a multivec filter to a Qdrant filter with the semantics of Filter.matches."""
    if isinstance(f, And):
        return d.filter([to_qdrant_filter(x, d) for x in f.filters], [], [])
    if isinstance(f, Or):
        return d.filter([], [to_qdrant_filter(x, d) for x in f.filters], [])
    if isinstance(f, Not):
        return d.filter([], [], [to_qdrant_filter(f.filter, d)])
    if isinstance(f, (Eq, In)):
        values = (f.value,) if isinstance(f, Eq) else f.values
        bools = [v for v in values if isinstance(v, bool)]
        others = [v for v in values if not isinstance(v, bool)]
        options = [_scalar_eq(d, f.field, v) for v in bools]
        if others:
            # A list-valued field never equals a scalar, though Qdrant matches its elements;
            # booleans are excluded because local mode compares with Python's True == 1.
            scalar = d.filter(
                [],
                [_scalar_eq(d, f.field, v) for v in others],
                [d.match_any("_x", _not_list_or_bool(f.field))],
            )
            options.append(scalar)
        return d.filter([], options, [])
    if isinstance(f, Range):
        key = _check_field(f.field)
        return d.filter(
            [d.range(key, f.gt, f.gte, f.lt, f.lte)],
            [],
            [d.match_any("_x", _not_list_or_bool(f.field))],
        )
    if isinstance(f, Contains):
        key = _check_field(f.field)
        if isinstance(f.value, bool):
            return d.match("_x", ("LT:" if f.value else "LF:") + f.field)
        element = (
            d.match(key, f.value)
            if isinstance(f.value, str)
            else d.range(key, None, f.value, None, f.value)
        )
        return d.filter([element, d.match("_x", "L:" + f.field)], [], [])
    if isinstance(f, Exists):
        key = _check_field(f.field)
        # Qdrant's is_empty also holds for [], which multivec counts as present.
        return d.filter(
            [],
            [
                d.filter([], [], [d.is_empty(key)]),
                d.match_any("_x", ["L:" + f.field, "O:" + f.field]),
            ],
            [],
        )
    raise InvalidFilterError(f"Qdrant cannot translate filter node {type(f).__name__}")


# --- engines: one per flavour, sharing the backend's logic ---------------------------------


@dataclass
class _Shared:
    """A client or shard shared by the connections of this process to one location."""

    handle: Any
    refs: int = 0
    open: bool = True
    # qdrant-client's local mode is not thread-safe (its SQLite persistence fails on concurrent
    # commits), so its calls are serialised; Edge and servers take concurrent calls.
    calls: threading.Lock = dataclasses.field(default_factory=threading.Lock)


_SHARED: dict[str, _Shared] = {}
_LOCK = threading.RLock()


@atexit.register
def _close_shared() -> None:
    """Close what connections left open, while the interpreter can still run the closing.

    Without it, a local-mode client closes from ``__del__`` during interpreter shutdown, fails
    there, and leaves its lock file open (a ResourceWarning); an Edge shard would skip its flush.
    """
    with _LOCK:
        for shared in _SHARED.values():
            if shared.open:
                shared.open = False
                with contextlib.suppress(Exception):  # best effort at exit
                    if hasattr(shared.handle, "flush"):
                        shared.handle.flush()
                    shared.handle.close()
        _SHARED.clear()


class QdrantBackend(Backend):
    """Qdrant Edge, qdrant-client local mode, or a Qdrant server; see the module docstring."""

    scheme: ClassVar[str] = "qdrant"
    extra: ClassVar[str | None] = "qdrant"
    supports_native_multivector = True
    supports_native_prefetch: ClassVar[bool] = True
    max_vector_dim: ClassVar[int | None] = _MAX_DIM

    def __init__(self, uri: URI, collection: str) -> None:
        super().__init__(uri, collection)
        if not _COLLECTION_NAME.match(collection):
            raise ConfigurationError(
                f"collection name {collection!r} is not valid for Qdrant; use letters, digits, "
                "'_', '-' and '.', starting with a letter, digit or '_'"
            )
        self._driver = uri.driver or "server"
        if self._driver not in ("edge", "local", "server"):
            raise ConfigurationError(
                f"unknown Qdrant flavour {uri.driver!r}; use qdrant+edge://<dir>, "
                "qdrant+local://<dir or :memory:> or qdrant://host:port"
            )
        if self._driver in ("edge", "local") and not uri.location:
            raise ConfigurationError(
                f"qdrant+{self._driver}:// needs a directory, e.g. qdrant+{self._driver}://./data"
            )
        ef = uri.option("hnsw_ef") or str(_DEFAULT_HNSW_EF)
        if not ef.isdigit() or int(ef) < 1:
            raise ConfigurationError(f"hnsw_ef must be a positive integer, got {ef!r}")
        self._hnsw_ef = int(ef)
        self._exact = (uri.option("exact") or "false").lower() in ("1", "true", "yes")
        # qdrant-client's local mode scores MaxSim in Python: measured on 2,000 SciFact
        # passages, its in-engine rerank took 293 ms a query, fetching and scoring here 53 ms.
        rerank = (
            uri.option("rerank") or ("client" if self._driver == "local" else "engine")
        ).lower()
        if rerank not in ("engine", "client"):
            raise ConfigurationError(f"rerank must be 'engine' or 'client', got {rerank!r}")
        self.engine_rerank = rerank == "engine"
        quantization = (uri.option("quantization") or "int8").lower()
        if quantization not in ("int8", "none"):
            raise ConfigurationError(
                f"quantization must be 'int8' or 'none', got {uri.option('quantization')!r}"
            )
        # Local mode scans in Python and has no quantized index.
        self._int8 = quantization == "int8" and self._driver != "local"
        self._dim = 0
        self._dtype = "float16"
        self._shared: _Shared | None = None
        self._client: Any = None
        self._qe: Any = None
        self._where = f"Qdrant ({self._driver}) at {uri}"
        if self._driver == "edge":
            try:
                import qdrant_edge
            except ImportError as exc:
                raise MissingDependencyError("qdrant-edge-py", "qdrant") from exc
            self._qe = qdrant_edge
            self._dialect: _Dialect = _EdgeDialect(qdrant_edge)
            self._path = str(Path(uri.location) / collection)
        else:
            self._dialect = _Dialect()
            if self._driver == "server":
                self._client = self._connect_server(uri)

    # --- connections -----------------------------------------------------------------------

    def _connect_server(self, uri: URI) -> Any:
        host, _, port = uri.hostport.partition(":")
        prefer_grpc = (uri.option("prefer_grpc") or "true").lower() in ("1", "true", "yes")
        # Instance attributes: embedded flavours have no request limit.
        self.max_request_bytes = (  # type: ignore[misc]
            _GRPC_REQUEST_BYTES if prefer_grpc else _REST_REQUEST_BYTES
        )
        grpc_port = uri.option("grpc_port")
        https = uri.option("https")
        try:
            return QdrantClient(
                host=host or "localhost",
                port=int(port) if port else 6333,
                grpc_port=int(grpc_port) if grpc_port else 6334,
                prefer_grpc=prefer_grpc,
                https=https.lower() in ("1", "true", "yes") if https else None,
                api_key=uri.option("api_key") or os.environ.get("QDRANT_API_KEY"),
                timeout=_timeout(uri.option("timeout")),
                # The version check makes a request (and warns) at construction; errors surface
                # on the first real call instead, where they are retried and mapped.
                check_compatibility=False,
            )
        except Exception as exc:
            raise BackendError(f"cannot create a client for {self._where}: {exc}") from exc

    def _local(self) -> Any:
        """The shared local-mode client of this location."""
        if self._shared is None or not self._shared.open:
            location = self.uri.location
            with _LOCK:
                shared = _SHARED.get("local:" + location)
                if shared is None or not shared.open:
                    if location == ":memory:":
                        client = QdrantClient(location=":memory:")
                    else:
                        client = QdrantClient(path=location)
                    shared = _SHARED["local:" + location] = _Shared(client)
                shared.refs += 1
                self._shared = shared
        return self._shared.handle

    def server_version(self) -> str | None:  # noqa: D102
        if self._driver != "server":
            return None
        return str(self._call("version", self._api().info).version)

    def _api(self) -> Any:
        return self._client if self._driver == "server" else self._local()

    def _shard(self, *, create: Any = None) -> Any:
        """The shared open Edge shard, loading it (or creating it with ``create``)."""
        if self._shared is not None and self._shared.open:
            return self._shared.handle
        with _LOCK:
            shared = _SHARED.get("edge:" + self._path)
            if shared is None or not shared.open:
                try:
                    if create is not None:
                        shard = self._qe.EdgeShard.create(self._path, create)
                    else:
                        shard = self._qe.EdgeShard.load(self._path)
                except Exception as exc:
                    raise BackendError(f"cannot open the Edge shard {self._path}: {exc}") from exc
                shared = _SHARED["edge:" + self._path] = _Shared(shard)
            shared.refs += 1
            self._shared = shared
        return shared.handle

    def _edge_exists(self) -> bool:
        path = Path(self._path)
        return path.is_dir() and any(path.iterdir())

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a vendor call, retrying connection failures (server) and mapping errors."""
        attempts = _RETRIES if self._driver == "server" else 1
        for attempt in range(attempts):
            try:
                if self._driver == "local" and self._shared is not None:
                    with self._shared.calls:
                        return fn(*args, **kwargs)
                return fn(*args, **kwargs)
            except Exception as exc:
                if self._driver == "server" and _transient(exc):
                    if attempt + 1 < attempts:
                        time.sleep(_BACKOFF_S * 2**attempt)
                        continue
                    raise BackendUnavailableError(
                        f"{self._where} is unreachable ({what}; {attempts} tries): {exc}"
                    ) from exc
                raise BackendError(f"{self._where} failed to {what}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    # --- collection lifecycle --------------------------------------------------------------

    def load_info(self) -> CollectionInfo | None:  # noqa: D102
        if self._driver == "edge":
            if not self._edge_exists():
                return None
            shard = self._shard()
            records = self._call(
                "read the collection info",
                shard.retrieve,
                point_ids=[_INFO_ID],
                with_payload=True,
                with_vector=False,
            )
        else:
            api = self._api()
            if not self._call("check the collection", api.collection_exists, self.collection):
                return None
            records = self._call(
                "read the collection info",
                api.retrieve,
                self.collection,
                [_INFO_ID],
                with_payload=True,
                with_vectors=False,
            )
        if not records or not records[0].payload or "_info" not in records[0].payload:
            raise ConfigurationError(
                f"Qdrant collection {self.collection!r} exists but was not created by multivec"
            )
        info = CollectionInfo.model_validate_json(records[0].payload["_info"])
        self._dim, self._dtype = info.dim, info.dtype
        return info

    def create(self, info: CollectionInfo) -> None:  # noqa: D102
        for what, size in (("token dimension", info.dim), ("FDE dimension", info.fde_dim)):
            if not 1 <= size <= _MAX_DIM:
                raise ConfigurationError(
                    f"Qdrant vectors hold 1 to {_MAX_DIM} values; the {what} is {size}"
                )
        self._dim, self._dtype = info.dim, info.dtype
        info_payload = {"_info": info.model_dump_json()}
        vector = {"fde": [0.0] * info.fde_dim, "mv": [[0.0] * info.dim]}
        if self._driver == "edge":
            qe = self._qe
            config = qe.EdgeConfig(
                vectors={
                    "fde": qe.EdgeVectorParams(
                        size=info.fde_dim,
                        distance=qe.Distance.Dot,
                        quantization_config=qe.ScalarQuantizationConfig(
                            type=qe.ScalarType.Int8, quantile=_QUANTILE, always_ram=True
                        )
                        if self._int8
                        else None,
                    ),
                    "mv": qe.EdgeVectorParams(
                        size=info.dim,
                        distance=qe.Distance.Dot,
                        multivector_config=qe.MultiVectorConfig(
                            comparator=qe.MultiVectorComparator.MaxSim
                        ),
                        # m=0: no graph over the tokens; they only serve reranking.
                        hnsw_config=qe.HnswIndexConfig(
                            m=0, ef_construct=100, full_scan_threshold=10000
                        ),
                        datatype=qe.VectorStorageDatatype.Float16
                        if info.dtype == "float16"
                        else qe.VectorStorageDatatype.Float32,
                    ),
                }
            )
            shard = self._shard(create=config)
            self._call(
                "store the collection info",
                shard.update,
                qe.UpdateOperation.upsert_points([qe.Point(_INFO_ID, vector, info_payload)]),
            )
            self._call("flush", shard.flush)
            return
        api = self._api()
        self._call(
            "create the collection",
            api.create_collection,
            self.collection,
            vectors_config={
                "fde": models.VectorParams(
                    size=info.fde_dim,
                    distance=models.Distance.DOT,
                    quantization_config=models.ScalarQuantization(
                        scalar=models.ScalarQuantizationConfig(
                            type=models.ScalarType.INT8, quantile=_QUANTILE, always_ram=True
                        )
                    )
                    if self._int8
                    else None,
                ),
                "mv": models.VectorParams(
                    size=info.dim,
                    distance=models.Distance.DOT,
                    multivector_config=models.MultiVectorConfig(
                        comparator=models.MultiVectorComparator.MAX_SIM
                    ),
                    hnsw_config=models.HnswConfigDiff(m=0),
                    datatype=models.Datatype.FLOAT16
                    if info.dtype == "float16"
                    else models.Datatype.FLOAT32,
                ),
            },
        )
        if self._driver == "server":
            # The server's filtered HNSW search plans with payload indexes; the type tags take
            # part in most translated filters. (Local mode has no indexes and would warn.)
            self._call(
                "index the type tags",
                api.create_payload_index,
                self.collection,
                "_x",
                field_schema=models.PayloadSchemaType.KEYWORD,
                wait=True,
            )
        self._call(
            "store the collection info",
            api.upsert,
            self.collection,
            [models.PointStruct(id=_INFO_ID, vector=vector, payload=info_payload)],
            wait=True,
        )

    def drop(self) -> None:  # noqa: D102
        if self._driver == "edge":
            with _LOCK:
                shared = _SHARED.pop("edge:" + self._path, None)
                if shared is not None and shared.open:
                    shared.open = False
                    self._call("close the shard", shared.handle.close)
                self._shared = None
                shutil.rmtree(self._path, ignore_errors=True)
            return
        api = self._api()
        if self._call("check the collection", api.collection_exists, self.collection):
            self._call("drop the collection", api.delete_collection, self.collection)

    def close(self) -> None:
        """Release this connection's share of the client or shard (the last one closes it)."""
        if self._driver == "server":
            if self._client is not None:
                self._client.close()
                self._client = None
            return
        shared, self._shared = self._shared, None
        if shared is None or not shared.open:
            return
        with _LOCK:
            shared.refs -= 1
            # An in-memory local client holds the data itself: it lives as long as the process.
            if shared.refs > 0 or (self._driver == "local" and self.uri.location == ":memory:"):
                return
            shared.open = False
            key = (
                ("edge:" + self._path) if self._driver == "edge" else ("local:" + self.uri.location)
            )
            if _SHARED.get(key) is shared:
                del _SHARED[key]
            if self._driver == "edge":
                self._call("flush", shared.handle.flush)
            self._call("close", shared.handle.close)

    # --- writes ----------------------------------------------------------------------------

    def upsert(self, batch: WriteBatch) -> None:  # noqa: D102
        rows = []
        for i, key in enumerate(batch.keys):
            vector = {
                "fde": batch.fdes[i].tolist(),
                "mv": batch.vectors[i].astype(np.float32).tolist(),
            }
            payload = {
                "_k": key,
                "_m": batch.metadata[i],
                "_t": batch.texts[i],
                "_x": _type_tags(batch.metadata[i]),
                "_v": encode_tokens(batch.vectors[i]),
            }
            rows.append((point_id(key), vector, payload))
        if self._driver == "edge":
            qe = self._qe
            shard = self._shard()
            points = [qe.Point(pid, vector, payload) for pid, vector, payload in rows]
            self._call("upsert", shard.update, qe.UpdateOperation.upsert_points(points))
            self._call("flush", shard.flush)
            return
        points_ = [
            models.PointStruct(id=pid, vector=vector, payload=payload)
            for pid, vector, payload in rows
        ]
        self._call("upsert", self._api().upsert, self.collection, points_, wait=True)

    def delete(self, keys: Sequence[str]) -> None:  # noqa: D102
        ids = [point_id(k) for k in keys]
        if self._driver == "edge":
            shard = self._shard()
            self._call("delete", shard.update, self._qe.UpdateOperation.delete_points(ids))
            self._call("flush", shard.flush)
            return
        self._call(
            "delete",
            self._api().delete,
            self.collection,
            models.PointIdsList(points=ids),
            wait=True,
        )

    # --- reads -----------------------------------------------------------------------------

    def _documents_only(self, filter: Filter | None = None) -> Any:
        """A Qdrant filter for ``filter`` that also leaves out the collection-info point."""
        d = self._dialect
        must = [to_qdrant_filter(filter, d)] if filter is not None else []
        return d.filter(must, [], [d.has_id([_INFO_ID])])

    def count(self) -> int:  # noqa: D102
        flt = self._documents_only()
        if self._driver == "edge":
            shard = self._shard()
            return int(
                self._call("count", shard.count, self._qe.CountRequest(exact=True, filter=flt))
            )
        result = self._call(
            "count", self._api().count, self.collection, count_filter=flt, exact=True
        )
        return int(result.count)

    def _search_params(self, limit: int) -> Any:
        if self._driver == "local":
            # Local mode always searches exactly and warns that search params have no effect.
            return None
        ef = max(self._hnsw_ef, limit)
        # The int8 scores only pick candidates that are rescored exactly afterwards, so Qdrant's
        # own rescoring with the float32 FDEs would cost time for nothing; an exact search
        # reads the float32 FDEs.
        if self._driver == "edge":
            quantization = self._qe.QuantizationSearchParams(ignore=self._exact, rescore=False)
            return self._qe.SearchParams(hnsw_ef=ef, exact=self._exact, quantization=quantization)
        return models.SearchParams(
            hnsw_ef=ef,
            exact=self._exact,
            quantization=models.QuantizationSearchParams(ignore=self._exact, rescore=False),
        )

    def _query(
        self,
        query: npt.NDArray[np.float32],
        using: str,
        limit: int,
        filter: Filter | None,
        prefetch: tuple[npt.NDArray[np.float32], int] | None = None,
        *,
        keys: bool = True,
    ) -> tuple[list[str], npt.NDArray[np.float32]]:
        """One Query API call: nearest by ``using``, optionally over an FDE prefetch.

        Returns keys, or with ``keys=False`` point references (see :meth:`ann`).
        """
        payload: Any = ["_k"] if keys else False
        # Without a filter of the caller's or a prefetch, the collection-info point is dropped
        # from one extra result rather than filtered out: local mode evaluates a filter point
        # by point in Python (14 ms per search at 2,000 points). A prefetch keeps the filter,
        # so it returns exactly its number of documents.
        plain = filter is None and prefetch is None
        flt = None if plain else self._documents_only(filter)
        wanted, limit = limit, limit + plain
        if self._driver == "edge":
            qe = self._qe
            prefetches = None
            if prefetch is not None:
                prefetches = [
                    qe.Prefetch(
                        limit=prefetch[1],
                        query=qe.Query.Nearest(prefetch[0].tolist(), using="fde"),
                        params=self._search_params(prefetch[1]),
                        filter=flt,
                    )
                ]
                flt = None
            request = qe.QueryRequest(
                limit=limit,
                query=qe.Query.Nearest(query.tolist(), using=using),
                prefetches=prefetches,
                filter=flt,
                params=self._search_params(limit) if using == "fde" else None,
                with_payload=payload,
                with_vector=False,
            )
            points = self._call("search", self._shard().query, request)
        else:
            prefetch_ = None
            if prefetch is not None:
                prefetch_ = models.Prefetch(
                    query=self._nearest(prefetch[0]),
                    using="fde",
                    limit=prefetch[1],
                    filter=flt,
                    params=self._search_params(prefetch[1]),
                )
                flt = None
            response = self._call(
                "search",
                self._api().query_points,
                self.collection,
                query=self._nearest(query),
                using=using,
                prefetch=prefetch_,
                query_filter=flt,
                search_params=self._search_params(limit) if using == "fde" else None,
                limit=limit,
                with_payload=payload,
                with_vectors=False,
            )
            points = response.points
        points = [p for p in points if str(p.id) != _INFO_ID][:wanted]
        found = [p.payload["_k"] if keys else _REF + str(p.id) for p in points]
        return found, np.array([p.score for p in points], dtype=np.float32)

    def _nearest(self, query: npt.NDArray[np.float32]) -> models.NearestQuery:
        if self._driver == "local":
            # Unvalidated, so the float32 array itself reaches local mode's numpy scoring.
            # Validation turns it into Python floats, which local mode scores in float64,
            # upcasting every stored FDE per search: 62 against 7 ms at 5,000 FDEs.
            array: Any = np.asarray(query, np.float32)  # not in the model's declared types
            return models.NearestQuery.model_construct(nearest=array)
        return models.NearestQuery(nearest=query.tolist())

    def ann(  # noqa: D102
        self, fde_query: npt.NDArray[np.float32], limit: int, filter: Filter | None
    ) -> tuple[list[str], npt.NDArray[np.float32]]:
        # Point references, not keys: selecting even one payload field makes Qdrant read the
        # whole payload, token copy included (27 ms more for 200 candidates on Edge).
        return self._query(fde_query, "fde", limit, filter, keys=False)

    def native_search(  # noqa: D102
        self,
        query: npt.NDArray[np.float32],
        k: int,
        filter: Filter | None,
        *,
        prefetch: tuple[npt.NDArray[np.float32], int] | None = None,
    ) -> tuple[list[str], npt.NDArray[np.float32]]:
        # Qdrant's MAX_SIM with DOT is sum over query tokens of the best dot product: MaxSim.
        return self._query(query, "mv", k, filter, prefetch)

    def _retrieve(self, ids: list[str], payload: Any, vectors: Any) -> list[Any]:
        if self._driver == "edge":
            return self._call(
                "fetch",
                self._shard().retrieve,
                point_ids=ids,
                with_payload=payload,
                with_vector=vectors,
            )
        return self._call(
            "fetch",
            self._api().retrieve,
            self.collection,
            ids,
            with_payload=payload,
            with_vectors=vectors,
        )

    def fetch(self, keys: Sequence[str], *, with_metadata: bool = True) -> Fetched:  # noqa: D102
        # Tokens come from the payload copy: reading the "mv" vector builds a Python float per
        # value (about 0.5 s for 200 documents of 180 x 384 tokens), the copy decodes in 25 ms.
        payload = ["_k", "_v"] + (["_m", "_t"] if with_metadata else [])
        ids = [k[len(_REF) :] if k.startswith(_REF) else point_id(k) for k in keys]
        records = self._retrieve(ids, payload, False) if ids else []
        # Edge builds the payload dict on every access of ``.payload``: read it once.
        payloads = ((str(r.id), r.payload) for r in records)
        by_id = {i: p for i, p in payloads if p and "_k" in p}
        found = {by_id[i]["_k"]: by_id[i] for i in ids if i in by_id}
        present = list(found)
        missing = [k for k in present if "_v" not in found[k]]
        if missing:
            raise BackendError(
                f"document {missing[0][2:]!r} has no token payload '_v': the collection was "
                "written by another tool or an older multivec; re-upsert it with this version"
            )
        metadata = texts = None
        if with_metadata:
            metadata = [dict(found[k].get("_m") or {}) for k in present]
            texts = [found[k].get("_t") for k in present]
        return decode_tokens(
            present, [found[k]["_v"] for k in present], self._dim, self._dtype, metadata, texts
        )

    def fetch_fdes(self, keys: Sequence[str]) -> npt.NDArray[np.float32] | None:  # noqa: D102
        ids = [k[len(_REF) :] if k.startswith(_REF) else point_id(k) for k in keys]
        if not ids:
            return None
        by_id = {str(r.id): r.vector for r in self._retrieve(ids, False, ["fde"])}
        if any(i not in by_id or not isinstance(by_id[i], dict) for i in ids):
            return None
        return np.array([by_id[i]["fde"] for i in ids], dtype=np.float32)

    def _all_keys(self) -> list[str]:
        """Every document key, read page by page without vectors."""
        flt = self._documents_only()
        keys: list[str] = []
        offset: Any = None
        while True:
            if self._driver == "edge":
                request = self._qe.ScrollRequest(
                    offset=offset,
                    limit=_SCROLL_PAGE,
                    filter=flt,
                    with_payload=["_k"],
                    with_vector=False,
                )
                records, offset = self._call("scan", self._shard().scroll, request)
            else:
                records, offset = self._call(
                    "scan",
                    self._api().scroll,
                    self.collection,
                    scroll_filter=flt,
                    limit=_SCROLL_PAGE,
                    offset=offset,
                    with_payload=["_k"],
                    with_vectors=False,
                )
            keys.extend(r.payload["_k"] for r in records)
            if offset is None:
                return keys

    def scan(self, after: str | None, limit: int) -> Fetched:  # noqa: D102
        keys = sorted(k for k in self._all_keys() if after is None or k > after)[:limit]
        return self.fetch(keys)

    def optimize(self) -> None:
        """Run Edge's segment optimizers (merging, HNSW builds); servers optimize by themselves."""
        if self._driver == "edge":
            shard = self._shard()
            self._call("optimize", shard.optimize)
            self._call("flush", shard.flush)


def _timeout(value: str | None) -> int:
    """The ``timeout`` option in whole seconds (qdrant-client takes an int), default 60."""
    if value is None:
        return _DEFAULT_TIMEOUT_S
    if not value.isdigit() or int(value) < 1:
        raise ConfigurationError(f"timeout must be a whole number of seconds >= 1, got {value!r}")
    return int(value)


def _transient(exc: Exception) -> bool:
    """Whether a server error is a connection failure or timeout worth retrying."""
    if isinstance(exc, (ResponseHandlingException, ConnectionError, TimeoutError)):
        return True
    # gRPC errors carry a status code; duck typing keeps grpcio (untyped) out of this module.
    code = getattr(exc, "code", None)
    if callable(code):
        status = getattr(code(), "name", "")
        return status in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
    return False
