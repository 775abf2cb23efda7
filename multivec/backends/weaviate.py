"""``weaviate://host:port[?grpc_port=50051&secure=true&api_key=...&timeout=60]``: a Weaviate server.

``timeout`` (seconds) bounds each query; connecting waits at most 10 s and inserts three times
the query timeout (defaults 60 and 180 s). ``mv_encoding`` and the ``muvera_*`` options choose
how Weaviate indexes the token matrices when a collection is created (below).

Needs Weaviate 1.33 or later (multi-vectors arrived in 1.29; the ``ContainsNone`` filter used for
negations in 1.33) and ``weaviate-client`` 4.x. The API key may also come from ``WEAVIATE_API_KEY``.

Layout: one Weaviate collection per multivec collection, named ``Mv_<name>`` because Weaviate
collection names must start with an upper-case letter (``name`` itself may use ``[A-Za-z0-9_]``;
the mapping is reversible by stripping the prefix). One object per document:

==============  =====================================  =========================================
field           Weaviate type                          why
==============  =====================================  =========================================
uuid            UUIDv5 of the internal key             Weaviate ids are UUIDs only
``fde``         named vector, HNSW, ``dot``            the ANN stage
``mv``          named multi-vector, HNSW, ``dot``;     token matrix (float32 on the wire and on
                MUVERA-encoded if ``mv_encoding``      disk); also serves ``mode="native"``
                is ``muvera``
mv_key          text                                   the internal key (``s:``/``i:`` + id)
mv_meta         text, not indexed                      the metadata JSON, verbatim round trip
mv_text         text, not indexed                      the source text (absent when ``None``)
mv_fields       text[], field tokenization             keys present and not null, for ``exists``
mv_typed        text[], field tokenization             keys whose typed property holds a value
m_<base32 key>  text / number / boolean / their []     one filterable property per metadata key
==============  =====================================  =========================================

The :class:`~multivec.CollectionInfo` JSON is the collection's *description*.

The layout of ``mv``, and so what ``mode="native"`` measures, is chosen by ``mv_encoding``:

* ``none`` (the default): Weaviate's multi-vector HNSW over the token vectors themselves.
* ``muvera``: Weaviate's own MUVERA encoding (server 1.31+). The server encodes each document's
  tokens into one fixed-size vector of ``repetitions · 2^ksim · dprojections`` floats and builds
  the HNSW over those. A query is encoded the same way, the HNSW returns ``2·k`` documents (a
  factor hard-coded in the server, not configurable), and the server rescores them by exact
  MaxSim over the original multi-vectors, which stay stored. The scores are exact; recall is
  bounded by that short candidate list. ``muvera_ksim`` (1 to 10), ``muvera_dprojections`` and
  ``muvera_repetitions`` (whole numbers >= 1) override the server's defaults (4, 16 and 10, so
  2560 floats); options left out are not sent, so the server's defaults apply. The server's
  encoding is its own, independent of multivec's ``fde`` (which is still written), so on such a
  collection ``mode="native"`` and ``mode="multivec"`` compare two MUVERA implementations over
  the same stored tokens.

These options only matter when the collection is created. Opening an existing collection reads
its layout back from the server's vector config, whatever the URI says, and reports it as
:attr:`WeaviateBackend.mv_encoding` (``None`` for ``none``) and in the backend's ``repr``. A URI
whose ``mv_encoding`` or ``muvera_*`` options contradict the stored layout is refused with
:class:`~multivec.errors.ConfigMismatchError`; ``muvera_*`` options left out match any value.

Metadata filtering. Weaviate properties are typed and their names restricted, so each top-level
metadata key gets its own property named ``m_`` + the lower-case, unpadded base32 of its UTF-8
bytes (any key, including ``id``, ``vector`` or upper-case ones, fits the name rule and Weaviate's
reserved names and suffixes cannot occur). Its type is fixed by the first value seen: strings are
``text``, numbers (int and float alike, so ``1 == 1.0``) ``number``, booleans ``boolean``, and
lists of one of those the array type. A key whose scalar kind later differs (``"year": 2020`` then
``"year": "2020"``), or a list mixing kinds, is refused with :class:`InvalidMetadataError`;
nothing is coerced. ``None``, nested objects and empty lists are kept in ``mv_meta`` but have no
typed value. Text values are stored as ``"<" + value + ">"`` with ``field`` tokenization, because
that tokenization trims whitespace and equality must stay exact. Negations never rely on how
Weaviate treats null or missing properties: ``a != v`` becomes "key not in ``mv_typed``, or
``not_equal``", which is exactly :meth:`Filter.matches`. New keys are added to the schema with
``config.add_property`` before the objects that use them are written.

Costs and quirks:

* Per document: ``4·fde_dim + 4·n_tokens·dim`` bytes of vectors (Weaviate stores float32 even for
  ``dtype="float16"`` collections; values are converted back on read), plus HNSW graphs for both
  vectors. With ``mv_encoding=muvera`` add ``4·repetitions·2^ksim·dprojections`` bytes for
  Weaviate's encoding (10 KiB at the defaults; the tokens stay stored beside it), while the
  ``mv`` graph holds one vector per document instead of one per token. Skipping the ``mv``
  index (``vectorIndexConfig.skip``) would save the multi-vector HNSW memory but is unverified
  for multi-vectors and would disable ``mode="native"``, so it is not used.
* Upserts use ``data.insert_many`` (the gRPC batch), which replaces an existing object with the
  same UUID; ``data.insert`` would refuse it. Writes are searchable at once unless the server runs
  with ``ASYNC_INDEXING=true``.
* One query returns at most ``QUERY_MAXIMUM_RESULTS`` (10,000 by default) objects, so ``ann``
  caps ``limit`` there and ``fetch``/``delete`` work in chunks of 1,000 ids.
* :meth:`WeaviateBackend.scan` lists every key with the cursor API and sorts them client-side,
  because ordering plus a ``mv_key > cursor`` text range filter could not be verified; a full
  iteration therefore costs ``O(n²/page)`` key reads. Fine up to ~10⁵ documents.
* ``mode="native"`` is Weaviate's multi-vector search over ``mv`` in its stored layout
  (distance = -MaxSim with ``dot``). Weaviate cannot run its MaxSim over candidates from a
  separate vector such as ``fde``, so ``supports_native_prefetch`` is false in both layouts
  (MUVERA's candidates come from Weaviate's own encoding, ``2·k`` of them).

Not run against a real server where this module was written (no Docker there), the MUVERA
layout included: the conformance suite in ``tests/test_backend_weaviate.py`` exercises both
layouts wherever a Docker engine or ``MULTIVEC_TEST_WEAVIATE_URI`` is available. The filter
translation, key encoding, name and id mappings, the ``mv_encoding`` options and the vector
config sent on creation are unit-tested without a server.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import partial
from typing import Any, ClassVar, TypeVar

import numpy as np
import numpy.typing as npt

from multivec._filters import And, Contains, Eq, Exists, Filter, In, Not, Or, Range, Scalar
from multivec._models import CollectionInfo
from multivec._uri import URI
from multivec._validation import key_to_id
from multivec.backends._base import Backend, Fetched, WriteBatch
from multivec.errors import (
    BackendError,
    BackendUnavailableError,
    ConfigMismatchError,
    ConfigurationError,
    InvalidFilterError,
    InvalidMetadataError,
    MissingDependencyError,
    PartialWriteError,
)

try:
    # weaviate-client imports authlib's httpx integration, which warns about its own
    # deprecation on import; nothing a caller can act on, so it is silenced here only.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The httpx module is deprecated")
        import weaviate
        from weaviate.classes.config import (
            Configure,
            DataType,
            Property,
            Tokenization,
            VectorDistances,
        )
        from weaviate.classes.init import AdditionalConfig, Auth, Timeout
        from weaviate.classes.query import Filter as WFilter
        from weaviate.classes.query import MetadataQuery
        from weaviate.collections.classes.data import DataObject
        from weaviate.collections.classes.filters import _Filters
        from weaviate.exceptions import (
            WeaviateBaseError,
            WeaviateConnectionError,
            WeaviateGRPCUnavailableError,
            WeaviateStartUpError,
            WeaviateTimeoutError,
        )
        from weaviate.util import generate_uuid5
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "weaviate-client", "weaviate") from exc

__all__ = [
    "MuveraEncoding",
    "WeaviateBackend",
    "collection_name",
    "decode_key",
    "encode_key",
    "key_uuid",
    "multivec_name",
    "mv_encoding_option",
    "to_weaviate_filter",
]

T = TypeVar("T")

_PREFIX = "Mv_"
_NAME = re.compile(r"^[A-Za-z0-9_]{1,200}$")
_META_PREFIX = "m_"
# Fixed for ever: changing it would orphan every stored object.
_UUID_NAMESPACE = "multivec"
# Entry always present in mv_fields / mv_typed, so those arrays are never empty or null and a
# ContainsNone on them never depends on how the server treats missing values.
_SENTINEL = "*"
_CHUNK = 1000
_MAX_RESULTS = 10_000
_RETRIES = 4
_BACKOFF_S = 0.5
_TRANSIENT: tuple[type[BaseException], ...] = (
    WeaviateConnectionError,
    WeaviateGRPCUnavailableError,
    WeaviateStartUpError,
    WeaviateTimeoutError,
)

# Metadata kinds and their Weaviate data types.
_TYPES: dict[str, Any] = {
    "text": DataType.TEXT,
    "number": DataType.NUMBER,
    "bool": DataType.BOOL,
    "text[]": DataType.TEXT_ARRAY,
    "number[]": DataType.NUMBER_ARRAY,
    "bool[]": DataType.BOOL_ARRAY,
}
_KIND_OF_TYPE = {str(t.value): k for k, t in _TYPES.items()}

# Layouts of the mv multi-vector (the mv_encoding option), and the bounds of Weaviate's MUVERA
# parameters as (smallest, largest or None); the server refuses ksim above 10.
_MV_ENCODINGS = ("none", "muvera")
_DIGITS = re.compile(r"[0-9]+")
_MUVERA_BOUNDS: dict[str, tuple[int, int | None]] = {
    "ksim": (1, 10),
    "dprojections": (1, None),
    "repetitions": (1, None),
}


# --- pure mappings (unit-tested without a server) ----------------------------------------------


def collection_name(name: str) -> str:
    """Map a multivec collection name to its Weaviate collection name (``Mv_`` + name)."""
    if not _NAME.match(name):
        raise ConfigurationError(
            f"collection name {name!r} is not valid for Weaviate; use 1-200 letters, digits and '_'"
        )
    return _PREFIX + name


def multivec_name(weaviate_name: str) -> str:
    """Invert :func:`collection_name`."""
    if not weaviate_name.startswith(_PREFIX):
        raise ConfigurationError(f"{weaviate_name!r} is not a multivec collection")
    return weaviate_name[len(_PREFIX) :]


def encode_key(key: str) -> str:
    """The property name for a metadata key: ``m_`` + lower-case unpadded base32 of its UTF-8.

    >>> encode_key("Year")
    'm_lfswc4q'
    >>> decode_key(encode_key("id"))
    'id'
    """
    b32 = base64.b32encode(key.encode("utf-8")).decode("ascii").rstrip("=").lower()
    return _META_PREFIX + b32


def decode_key(name: str) -> str:
    """Invert :func:`encode_key`."""
    if not name.startswith(_META_PREFIX):
        raise ValueError(f"{name!r} is not an encoded metadata key")
    b32 = name[len(_META_PREFIX) :].upper()
    return base64.b32decode(b32 + "=" * (-len(b32) % 8)).decode("utf-8")


def key_uuid(key: str) -> str:
    """The deterministic object UUID of an internal document key."""
    return str(generate_uuid5(key, _UUID_NAMESPACE))


def _wrap(text: str) -> str:
    # Field tokenization trims whitespace; the brackets keep equality exact.
    return "<" + text + ">"


def _scalar_kind(value: object) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "text"
    return None


def _typed_value(key: str, value: Any) -> tuple[str, Any] | None:
    """Return ``(kind, stored value)`` for a metadata value, or ``None`` if it has no typed form."""
    kind = _scalar_kind(value)
    if kind is not None:
        return kind, _store_scalar(kind, value)
    if not isinstance(value, list):
        return None  # None and nested objects: kept in mv_meta only
    items = [(k, v) for v in value if (k := _scalar_kind(v)) is not None]
    kinds = {k for k, _ in items}
    if not kinds:
        return None
    if len(kinds) > 1:
        raise InvalidMetadataError(
            f"metadata key {key!r} holds a list mixing {sorted(kinds)}; Weaviate properties are "
            "typed, so a filterable list must hold one kind of value"
        )
    kind = kinds.pop()
    return kind + "[]", [_store_scalar(kind, v) for _, v in items]


def _store_scalar(kind: str, value: Any) -> Any:
    if kind == "number":
        return float(value)
    if kind == "text":
        return _wrap(value)
    return value


# --- filter translation ------------------------------------------------------------------------

# A translated filter, or a constant when the schema already decides it.
_Translated = Any  # _Filters | bool


def _prop_kind(schema: Mapping[str, str], field: str) -> str | None:
    return schema.get(encode_key(field))


def _not_typed(field: str) -> _Filters:
    return WFilter.by_property("mv_typed").contains_none([_wrap(field)])


def _eq(schema: Mapping[str, str], field: str, value: Scalar, negate: bool) -> _Translated:
    kind = _scalar_kind(value)
    if kind is None or _prop_kind(schema, field) != kind:
        return negate  # no document of this kind can hold the value
    prop = WFilter.by_property(encode_key(field))
    stored = _store_scalar(kind, value)
    if not negate:
        return prop.equal(stored)
    return _not_typed(field) | prop.not_equal(stored)


def _range(schema: Mapping[str, str], f: Range, negate: bool) -> _Translated:
    if _prop_kind(schema, f.field) != "number":
        return negate
    prop = WFilter.by_property(encode_key(f.field))
    parts: list[_Filters] = []
    # (bound, filter when kept, filter when negated): not (x > b) is x <= b, and so on.
    for bound, keep, flip in (
        (f.gt, prop.greater_than, prop.less_or_equal),
        (f.gte, prop.greater_or_equal, prop.less_than),
        (f.lt, prop.less_than, prop.greater_or_equal),
        (f.lte, prop.less_or_equal, prop.greater_than),
    ):
        if bound is not None:
            parts.append((flip if negate else keep)(float(bound)))
    if not parts:
        # An unbounded range matches any number.
        return _not_typed(f.field) if negate else _typed(f.field)
    if negate:
        return WFilter.any_of([_not_typed(f.field), *parts])
    return WFilter.all_of(parts)


def _typed(field: str) -> _Filters:
    return WFilter.by_property("mv_typed").contains_any([_wrap(field)])


def _contains(schema: Mapping[str, str], f: Contains, negate: bool) -> _Translated:
    kind = _scalar_kind(f.value)
    if kind is None or _prop_kind(schema, f.field) != kind + "[]":
        return negate
    prop = WFilter.by_property(encode_key(f.field))
    stored = _store_scalar(kind, f.value)
    if not negate:
        return prop.contains_any([stored])
    return _not_typed(f.field) | prop.contains_none([stored])


def _combine(parts: list[_Translated], conjunction: bool) -> _Translated:
    # Fold constants: True/False absorb or vanish as in boolean algebra.
    kept: list[_Filters] = []
    for part in parts:
        if isinstance(part, bool):
            if part != conjunction:
                return part
            continue
        kept.append(part)
    if not kept:
        return conjunction
    return WFilter.all_of(kept) if conjunction else WFilter.any_of(kept)


def _translate(f: Filter, schema: Mapping[str, str], negate: bool) -> _Translated:
    if isinstance(f, Not):
        return _translate(f.filter, schema, not negate)
    if isinstance(f, (And, Or)):
        parts = [_translate(sub, schema, negate) for sub in f.filters]
        # De Morgan: a negated AND is an OR of negations, and vice versa.
        return _combine(parts, conjunction=isinstance(f, And) != negate)
    if isinstance(f, Eq):
        return _eq(schema, f.field, f.value, negate)
    if isinstance(f, In):
        parts = [_eq(schema, f.field, v, negate) for v in f.values]
        return _combine(parts, conjunction=negate)
    if isinstance(f, Range):
        return _range(schema, f, negate)
    if isinstance(f, Contains):
        return _contains(schema, f, negate)
    if isinstance(f, Exists):
        prop = WFilter.by_property("mv_fields")
        key = [_wrap(f.field)]
        return prop.contains_none(key) if negate else prop.contains_any(key)
    raise InvalidFilterError(f"Weaviate cannot translate filter node {type(f).__name__}")


def to_weaviate_filter(f: Filter, schema: Mapping[str, str]) -> _Filters | bool:
    """Translate a filter to a Weaviate filter, with the semantics of :meth:`Filter.matches`.

    Negations are pushed down to the leaves, so no ``Not`` reaches the server and a missing
    field is handled through the ``mv_typed``/``mv_fields`` key lists rather than null states.

    Args:
        f: The multivec filter.
        schema: Property name → metadata kind (``"text"``, ``"number[]"``, ...), as stored.

    Returns:
        A Weaviate filter, or ``True``/``False`` when the schema alone decides the answer
        (e.g. a number compared with a text field, or a field no document has).
    """
    result: _Filters | bool = _translate(f, schema, negate=False)
    return result


# --- the layout of mv (unit-tested without a server) -------------------------------------------


@dataclass(frozen=True)
class MuveraEncoding:
    """Weaviate's MUVERA encoding of the ``mv`` multi-vector (``mv_encoding=muvera``).

    A parameter that is ``None`` was not chosen, so the server applies its default; one read
    back from a collection always has all three.

    Attributes:
        ksim: SimHash bits per repetition: each token falls in one of ``2^ksim`` buckets.
        dprojections: Dimensions each bucket is projected to.
        repetitions: Independent encodings concatenated.

    >>> enc = MuveraEncoding(ksim=4, dprojections=16, repetitions=10)
    >>> str(enc), enc.fde_dim
    ('muvera(ksim=4, dprojections=16, repetitions=10)', 2560)
    >>> str(MuveraEncoding(ksim=3)), str(MuveraEncoding())
    ('muvera(ksim=3)', 'muvera')
    """

    ksim: int | None = None
    dprojections: int | None = None
    repetitions: int | None = None

    @property
    def fde_dim(self) -> int | None:
        """Floats per document: ``repetitions · 2^ksim · dprojections``, or ``None`` if unset."""
        if self.ksim is None or self.dprojections is None or self.repetitions is None:
            return None
        return self.repetitions * (1 << self.ksim) * self.dprojections

    def __str__(self) -> str:
        chosen = [f"{f.name}={v}" for f in fields(self) if (v := getattr(self, f.name)) is not None]
        return f"muvera({', '.join(chosen)})" if chosen else "muvera"


def mv_encoding_option(uri: URI) -> MuveraEncoding | None:
    """The layout of ``mv`` asked for by ``uri``: MUVERA, or ``None`` for the plain index.

    Reads ``mv_encoding`` (``none``, the default, or ``muvera``) and, with ``muvera``,
    ``muvera_ksim``, ``muvera_dprojections`` and ``muvera_repetitions``.

    >>> mv_encoding_option(URI.parse("weaviate://h?mv_encoding=muvera&muvera_ksim=3"))
    MuveraEncoding(ksim=3, dprojections=None, repetitions=None)

    Raises:
        ConfigurationError: An unknown encoding, a parameter that is not a whole number in its
            range, or a ``muvera_*`` option without ``mv_encoding=muvera``.
    """
    given = uri.option("mv_encoding")
    encoding = "none" if given is None else given.lower()
    if encoding not in _MV_ENCODINGS:
        raise ConfigurationError(
            f"mv_encoding must be 'none' (Weaviate's plain multi-vector index, the default) or "
            f"'muvera' (Weaviate's MUVERA encoding, server 1.31+), got {given!r}"
        )
    values: dict[str, int] = {}
    for name, (low, high) in _MUVERA_BOUNDS.items():
        option = f"muvera_{name}"
        raw = uri.option(option)
        if raw is None:
            continue
        if encoding != "muvera":
            raise ConfigurationError(
                f"{option} only applies to Weaviate's MUVERA encoding; add mv_encoding=muvera to "
                f"the URI, or drop {option}"
            )
        span = f"from {low} to {high}" if high is not None else f">= {low}"
        if not _DIGITS.fullmatch(raw) or int(raw) < low or (high is not None and int(raw) > high):
            raise ConfigurationError(
                f"{option} must be a whole number {span}, got {raw!r}; leave it out to use the "
                "server's default"
            )
        values[name] = int(raw)
    return MuveraEncoding(**values) if encoding == "muvera" else None


def _describe(encoding: MuveraEncoding | None) -> str:
    if encoding is None:
        return "the plain multi-vector index (mv_encoding=none)"
    return f"Weaviate's MUVERA encoding, {encoding}"


def _layout_problem(requested: MuveraEncoding | None, stored: MuveraEncoding | None) -> str | None:
    """How the requested ``mv`` layout contradicts the stored one, or ``None`` if it does not.

    Parameters left unset in ``requested`` match any stored value.
    """
    if (requested is None) != (stored is None):
        return f"the URI asks for {_describe(requested)}"
    if requested is None or stored is None:
        return None
    differ = [
        f"muvera_{f.name}={want} (stored: {getattr(stored, f.name)})"
        for f in fields(requested)
        if (want := getattr(requested, f.name)) is not None and want != getattr(stored, f.name)
    ]
    return f"the URI asks for {', '.join(differ)}" if differ else None


def _vector_config(encoding: MuveraEncoding | None) -> list[Any]:
    """The named vectors a new collection is created with: ``fde``, and ``mv`` in its layout."""
    hnsw_dot = partial(Configure.VectorIndex.hnsw, distance_metric=VectorDistances.DOT)
    muvera = None
    if encoding is not None:
        # Unset parameters stay None, which the client leaves out so the server's defaults apply.
        muvera = Configure.VectorIndex.MultiVector.Encoding.muvera(
            ksim=encoding.ksim,
            dprojections=encoding.dprojections,
            repetitions=encoding.repetitions,
        )
    return [
        Configure.Vectors.self_provided(name="fde", vector_index_config=hnsw_dot()),
        Configure.MultiVectors.self_provided(
            name="mv", encoding=muvera, vector_index_config=hnsw_dot()
        ),
    ]


def _stored_encoding(config: Any) -> MuveraEncoding | None:
    """The MUVERA encoding of ``mv`` in a collection config read from the server, if enabled."""
    named = (config.vector_config or {}).get("mv")
    multi = getattr(getattr(named, "vector_index_config", None), "multi_vector", None)
    muvera = getattr(multi, "encoding", None)
    if muvera is None or not muvera.enabled:
        return None
    return MuveraEncoding(
        ksim=muvera.ksim, dprojections=muvera.dprojections, repetitions=muvera.repetitions
    )


# --- the backend -------------------------------------------------------------------------------


def _retry(fn: Callable[[], T], what: str) -> T:
    delay = _BACKOFF_S
    for attempt in range(_RETRIES + 1):
        try:
            return fn()
        except _TRANSIENT as exc:
            if attempt == _RETRIES:
                raise BackendUnavailableError(
                    f"Weaviate unreachable during {what} after {_RETRIES + 1} attempts: {exc}"
                ) from exc
            time.sleep(delay)
            delay *= 2
        except WeaviateBaseError as exc:
            raise BackendError(f"Weaviate failed during {what}: {exc}") from exc
    raise AssertionError("unreachable")  # pragma: no cover - the loop always returns or raises


class WeaviateBackend(Backend):
    """A Weaviate server; see the module docstring for the layout and filter design.

    Attributes:
        mv_encoding: How Weaviate indexes ``mv``, which is what ``mode="native"`` runs:
            :class:`MuveraEncoding` with the server's parameters, or ``None`` for the plain
            multi-vector index. Read back from the server when the collection is opened or
            created; before that, what the URI asks for.
    """

    scheme: ClassVar[str] = "weaviate"
    extra: ClassVar[str | None] = "weaviate"
    supports_native_multivector = True
    max_vector_dim: ClassVar[int | None] = 65535
    # Under the ~100 MB gRPC message limit of server and client, with room for framing.
    max_request_bytes: ClassVar[int | None] = 90 * 1024 * 1024

    def __init__(self, uri: URI, collection: str) -> None:
        super().__init__(uri, collection)
        self._name = collection_name(collection)
        host, _, port = uri.hostport.partition(":")
        if not host:
            raise ConfigurationError("weaviate:// needs a host, e.g. weaviate://localhost:8080")
        secure = (uri.option("secure") or "false").lower() in ("1", "true", "yes")
        http_port = int(port) if port else (443 if secure else 8080)
        grpc_port = int(uri.option("grpc_port") or 50051)
        api_key = uri.option("api_key") or os.environ.get("WEAVIATE_API_KEY")
        given = uri.option("timeout") or "60"
        if not given.isdigit() or int(given) < 1:
            raise ConfigurationError(
                f"timeout must be a whole number of seconds >= 1, got {given!r}"
            )
        timeout = int(given)
        # Checked before connecting, so a bad option fails without a server.
        self._requested = mv_encoding_option(uri)
        # Only an explicit mv_encoding is checked against an existing collection's layout.
        self._pins_layout = uri.option("mv_encoding") is not None
        self.mv_encoding: MuveraEncoding | None = self._requested
        self._client: Any = _retry(
            lambda: weaviate.connect_to_custom(
                http_host=host,
                http_port=http_port,
                http_secure=secure,
                grpc_host=uri.option("grpc_host") or host,
                grpc_port=grpc_port,
                grpc_secure=secure,
                auth_credentials=Auth.api_key(api_key) if api_key else None,
                additional_config=AdditionalConfig(
                    timeout=Timeout(init=min(10, timeout), query=timeout, insert=3 * timeout)
                ),
            ),
            "connect",
        )
        self._dim = 0
        self._dtype = "float16"
        # Property name → metadata kind; refreshed from the server when a key is unknown.
        self._schema: dict[str, str] = {}

    @property
    def _col(self) -> Any:
        return self._client.collections.use(self._name)

    # --- collection lifecycle ------------------------------------------------------------------

    def load_info(self) -> CollectionInfo | None:  # noqa: D102
        if not _retry(lambda: self._client.collections.exists(self._name), "load_info"):
            return None
        config = _retry(lambda: self._col.config.get(), "load_info")
        try:
            info = CollectionInfo.model_validate_json(config.description or "")
        except ValueError as exc:
            raise ConfigurationError(
                f"Weaviate collection {self._name!r} exists but was not created by multivec"
            ) from exc
        stored = _stored_encoding(config)
        problem = _layout_problem(self._requested, stored) if self._pins_layout else None
        if problem is not None:
            raise ConfigMismatchError(
                f"Weaviate collection {self._name!r} stores 'mv' as {_describe(stored)}, but "
                f"{problem}. mv_encoding and muvera_* only take effect when a collection is "
                "created: drop them from the URI to open it as stored, or use a new collection "
                "name for the other layout."
            )
        self._dim, self._dtype = info.dim, info.dtype
        self.mv_encoding = stored
        self._set_schema(config.properties)
        return info

    def create(self, info: CollectionInfo) -> None:  # noqa: D102
        self._dim, self._dtype = info.dim, info.dtype

        def text(name: str, filterable: bool) -> Any:
            return Property(
                name=name,
                data_type=(
                    DataType.TEXT_ARRAY if name.endswith(("_fields", "_typed")) else DataType.TEXT
                ),
                index_filterable=filterable,
                index_searchable=False,
                tokenization=Tokenization.FIELD if filterable else None,
            )

        _retry(
            lambda: self._client.collections.create(
                self._name,
                description=info.model_dump_json(),
                vector_config=_vector_config(self._requested),
                properties=[
                    text("mv_key", True),
                    text("mv_meta", False),
                    text("mv_text", False),
                    text("mv_fields", True),
                    text("mv_typed", True),
                ],
            ),
            "create",
        )
        self._schema = {}
        # Read the layout back: it carries the server's defaults, and shows that the server
        # understood the encoding rather than ignoring it.
        stored = _stored_encoding(_retry(lambda: self._col.config.get(), "create"))
        if _layout_problem(self._requested, stored) is not None:
            self.drop()
            raise ConfigurationError(
                f"Weaviate created {self._name!r} with {_describe(stored)} where "
                f"{_describe(self._requested)} was asked for, so it was dropped again; "
                "MUVERA needs Weaviate 1.31 or later"
            )
        self.mv_encoding = stored

    def drop(self) -> None:  # noqa: D102
        _retry(lambda: self._client.collections.delete(self._name), "drop")
        self._schema = {}

    def close(self) -> None:  # noqa: D102
        self._client.close()

    def __repr__(self) -> str:
        layout = "none" if self.mv_encoding is None else str(self.mv_encoding)
        return (
            f"{type(self).__name__}({str(self.uri)!r}, collection={self.collection!r}, "
            f"mv_encoding={layout!r})"
        )

    # --- schema --------------------------------------------------------------------------------

    def _set_schema(self, properties: Sequence[Any]) -> None:
        self._schema = {
            p.name: _KIND_OF_TYPE[str(p.data_type.value)]
            for p in properties
            if p.name.startswith(_META_PREFIX) and str(p.data_type.value) in _KIND_OF_TYPE
        }

    def _refresh_schema(self) -> None:
        config = _retry(lambda: self._col.config.get(), "reading the schema")
        self._set_schema(config.properties)

    def _ensure_properties(self, wanted: Mapping[str, tuple[str, str]]) -> None:
        """Add missing typed properties; refuse kinds that differ from the stored ones."""
        if any(name not in self._schema for name in wanted):
            self._refresh_schema()
        for name, (key, kind) in wanted.items():
            stored = self._schema.get(name)
            if stored is not None and stored != kind:
                raise InvalidMetadataError(
                    f"metadata key {key!r} has a {kind} value, but the collection stores it as "
                    f"{stored}; Weaviate properties are typed, so a key must keep one kind"
                )
        for name, (_, kind) in wanted.items():
            if name in self._schema:
                continue
            prop = Property(
                name=name,
                data_type=_TYPES[kind],
                index_filterable=True,
                index_searchable=False,
                tokenization=Tokenization.FIELD if kind.startswith("text") else None,
            )
            try:
                self._col.config.add_property(prop)
            except WeaviateBaseError as exc:
                # Another writer may have added it meanwhile; accept it if the kind agrees.
                self._refresh_schema()
                if self._schema.get(name) != kind:
                    raise BackendError(f"adding property {name!r} failed: {exc}") from exc
            self._schema[name] = kind

    # --- writes --------------------------------------------------------------------------------

    def _properties(self, key: str, meta: dict[str, Any], text: str | None) -> dict[str, Any]:
        props: dict[str, Any] = {
            "mv_key": key,
            "mv_meta": json.dumps(meta, ensure_ascii=False),
        }
        if text is not None:
            props["mv_text"] = text
        fields, typed = [_SENTINEL], [_SENTINEL]
        for name, value in meta.items():
            if value is None:
                continue
            fields.append(_wrap(name))
            stored = _typed_value(name, value)
            if stored is not None:
                typed.append(_wrap(name))
                props[encode_key(name)] = stored[1]
        props["mv_fields"], props["mv_typed"] = fields, typed
        return props

    def upsert(self, batch: WriteBatch) -> None:  # noqa: D102
        wanted: dict[str, tuple[str, str]] = {}
        for meta in batch.metadata:
            for name, value in meta.items():
                stored = _typed_value(name, value)
                if stored is None:
                    continue
                prop = encode_key(name)
                if prop in wanted and wanted[prop][1] != stored[0]:
                    raise InvalidMetadataError(
                        f"metadata key {name!r} has both {wanted[prop][1]} and {stored[0]} values "
                        "in one batch; Weaviate properties are typed, so a key must keep one kind"
                    )
                wanted[prop] = (name, stored[0])
        self._ensure_properties(wanted)
        objects = [
            DataObject(
                properties=self._properties(key, batch.metadata[i], batch.texts[i]),
                uuid=key_uuid(key),
                vector={
                    "fde": batch.fdes[i].astype(np.float32).tolist(),
                    "mv": batch.vectors[i].astype(np.float32).tolist(),
                },
            )
            for i, key in enumerate(batch.keys)
        ]
        result = _retry(lambda: self._col.data.insert_many(objects), "upsert")
        if result.errors:
            failed = sorted(result.errors)
            first = result.errors[failed[0]].message
            bad = set(failed)
            raise PartialWriteError(
                f"Weaviate refused {len(failed)} of {len(objects)} objects (first error: {first})",
                [key_to_id(k) for i, k in enumerate(batch.keys) if i not in bad],
                [key_to_id(batch.keys[i]) for i in failed],
            )

    def delete(self, keys: Sequence[str]) -> None:  # noqa: D102
        for start in range(0, len(keys), _CHUNK):
            uuids = [key_uuid(k) for k in keys[start : start + _CHUNK]]
            where = WFilter.by_id().contains_any(uuids)
            _retry(partial(self._col.data.delete_many, where=where), "delete")

    # --- reads ---------------------------------------------------------------------------------

    def count(self) -> int:  # noqa: D102
        result = _retry(lambda: self._col.aggregate.over_all(total_count=True), "count")
        return int(result.total_count or 0)

    def _filter(self, filter: Filter | None) -> _Filters | bool:
        if filter is None:
            return True
        from multivec._filters import leaves

        # A field unknown here may have been added by another writer since the last look.
        if any(encode_key(getattr(x, "field", "")) not in self._schema for x in leaves(filter)):
            self._refresh_schema()
        return to_weaviate_filter(filter, self._schema)

    def _near(
        self, vector: Any, target: str, limit: int, filter: Filter | None, what: str
    ) -> tuple[list[str], npt.NDArray[np.float32]]:
        flt = self._filter(filter)
        if flt is False:
            return [], np.empty(0, dtype=np.float32)
        result = _retry(
            lambda: self._col.query.near_vector(
                near_vector=vector,
                target_vector=target,
                limit=min(limit, _MAX_RESULTS),
                filters=None if flt is True else flt,
                return_metadata=MetadataQuery(distance=True),
                return_properties=["mv_key"],
            ),
            what,
        )
        keys = [str(o.properties["mv_key"]) for o in result.objects]
        # With the dot metric Weaviate reports distance = -dot (for multi-vectors: -MaxSim).
        scores = np.array([-float(o.metadata.distance) for o in result.objects], dtype=np.float32)
        return keys, scores

    def ann(  # noqa: D102
        self, fde_query: npt.NDArray[np.float32], limit: int, filter: Filter | None
    ) -> tuple[list[str], npt.NDArray[np.float32]]:
        return self._near(fde_query.astype(np.float32).tolist(), "fde", limit, filter, "ann")

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
                "Weaviate has no prefetch-then-MaxSim path over a separate FDE vector; "
                "use mode='native' or 'multivec'"
            )
        return self._near(query.astype(np.float32).tolist(), "mv", k, filter, "native search")

    def _read(self, uuids: list[str], with_metadata: bool) -> dict[str, tuple[Any, Any]]:
        props = ["mv_key", *(["mv_meta", "mv_text"] if with_metadata else [])]
        result = _retry(
            lambda: self._col.query.fetch_objects(
                filters=WFilter.by_id().contains_any(uuids),
                limit=len(uuids),
                include_vector=["mv"],
                return_properties=props,
            ),
            "fetch",
        )
        return {str(o.properties["mv_key"]): (o.properties, o.vector["mv"]) for o in result.objects}

    def fetch(self, keys: Sequence[str], *, with_metadata: bool = True) -> Fetched:  # noqa: D102
        found: dict[str, tuple[Any, Any]] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = list(keys[start : start + _CHUNK])
            found.update(self._read([key_uuid(k) for k in chunk], with_metadata))
        present = [k for k in keys if k in found]
        matrices = [np.asarray(found[k][1], dtype=np.float32).astype(self._dtype) for k in present]
        metadata = texts = None
        if with_metadata:
            metadata = [json.loads(found[k][0].get("mv_meta") or "{}") for k in present]
            texts = [found[k][0].get("mv_text") for k in present]
        return Fetched.pack(present, matrices, self._dim, self._dtype, metadata, texts)

    def fetch_fdes(self, keys: Sequence[str]) -> npt.NDArray[np.float32] | None:  # noqa: D102
        found: dict[str, Any] = {}
        for start in range(0, len(keys), _CHUNK):
            uuids = [key_uuid(k) for k in keys[start : start + _CHUNK]]
            result = _retry(
                partial(
                    self._col.query.fetch_objects,
                    filters=WFilter.by_id().contains_any(uuids),
                    limit=len(uuids),
                    include_vector=["fde"],
                    return_properties=["mv_key"],
                ),
                "fetch",
            )
            found.update((str(o.properties["mv_key"]), o.vector["fde"]) for o in result.objects)
        if not keys or any(k not in found for k in keys):
            return None
        return np.array([found[k] for k in keys], dtype=np.float32)

    def server_version(self) -> str | None:  # noqa: D102
        return str(_retry(self._client.get_meta, "version")["version"])

    def scan(self, after: str | None, limit: int) -> Fetched:  # noqa: D102
        # The cursor API walks objects in UUID order; keys are sorted here (see module doc).
        keys: list[str] = []
        cursor: Any = None
        while True:
            page = _retry(
                partial(
                    self._col.query.fetch_objects,
                    after=cursor,
                    limit=_CHUNK,
                    return_properties=["mv_key"],
                ),
                "scan",
            )
            if not page.objects:
                break
            for o in page.objects:
                key = str(o.properties["mv_key"])
                if after is None or key > after:
                    keys.append(key)
            cursor = page.objects[-1].uuid
        return self.fetch(sorted(keys)[:limit])
