"""The backend-agnostic metadata filter: a small expression tree every backend translates.

Build filters with :class:`Field` and combine them with ``&``, ``|`` and ``~``::

    >>> from multivec import Field
    >>> f = (Field("year") >= 2020) & Field("lang").isin(["en", "de"]) & ~Field("draft").exists()
    >>> f.matches({"year": 2021, "lang": "en"})
    True

or write them as JSON-style dicts (what the command line takes)::

    >>> spec = {"year": {"$gte": 2020}, "lang": {"$in": ["en", "de"]}}
    >>> Filter.parse(spec).matches({"year": 2019})
    False

Semantics, identical on every backend (the in-memory backend's :meth:`Filter.matches` is the
reference the others are tested against):

* Fields are top-level metadata keys. Values are strings, numbers or booleans; a boolean never
  equals a number, and ``1 == 1.0``.
* ``==`` and ``isin`` match only a present value of the same kind; ``!=`` and ``not_in`` are
  their negations, so a document without the field matches them.
* Ranges (``<``, ``<=``, ``>``, ``>=``) compare numbers only.
* ``contains(v)`` matches a list-valued field holding ``v``; ``exists()`` a present, non-null field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

from multivec.errors import InvalidFilterError

__all__ = [
    "And",
    "Contains",
    "Eq",
    "Exists",
    "Field",
    "Filter",
    "In",
    "Not",
    "Or",
    "Range",
    "Scalar",
]

Scalar: TypeAlias = str | int | float | bool


def _kind(value: object) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _check_scalar(value: object, field: str) -> Scalar:
    if _kind(value) is None:
        raise InvalidFilterError(
            f"filter value {value!r} for field {field!r} must be a string, number or boolean"
        )
    if isinstance(value, float) and value != value:
        raise InvalidFilterError(f"filter value for field {field!r} is NaN")
    return value  # type: ignore[return-value]


def _same(a: object, b: Scalar) -> bool:
    return _kind(a) == _kind(b) and a == b


class Filter:
    """Base class of filter expressions; combine with ``&``, ``|`` and ``~``."""

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        """Return whether a document with this metadata satisfies the filter."""
        raise NotImplementedError  # every concrete node overrides it

    def __and__(self, other: Filter) -> Filter:
        return And((self, other))

    def __or__(self, other: Filter) -> Filter:
        return Or((self, other))

    def __invert__(self) -> Filter:
        return Not(self)

    @staticmethod
    def parse(spec: Filter | Mapping[str, Any] | None) -> Filter | None:
        """Turn a dict filter into a :class:`Filter`.

        The dict form: ``{"field": value}``, ``{"field": {"$op": value}}``, ``$and``,
        ``$or``, ``$not``) into a :class:`Filter`; a :class:`Filter` or ``None`` passes through.
        """
        if spec is None or isinstance(spec, Filter):
            return spec
        if not isinstance(spec, Mapping):
            raise InvalidFilterError(
                f"a filter must be a dict or a Filter, got {type(spec).__name__}"
            )
        parts = [_parse_entry(key, value) for key, value in spec.items()]
        if not parts:
            raise InvalidFilterError("an empty filter dict; pass None for no filter")
        return parts[0] if len(parts) == 1 else And(tuple(parts))


def _parse_entry(key: str, value: Any) -> Filter:
    if key in ("$and", "$or"):
        if not isinstance(value, list) or not value:
            raise InvalidFilterError(f"{key} takes a non-empty list of filters")
        parts = tuple(_require(Filter.parse(v)) for v in value)
        return And(parts) if key == "$and" else Or(parts)
    if key == "$not":
        return Not(_require(Filter.parse(value)))
    if key.startswith("$"):
        raise InvalidFilterError(f"unknown filter operator {key!r} at the top level")
    field = Field(key)
    if not isinstance(value, Mapping):
        return field.equals(value)
    ops = [_parse_op(field, op, arg) for op, arg in value.items()]
    if not ops:
        raise InvalidFilterError(f"no operator given for field {key!r}")
    return ops[0] if len(ops) == 1 else And(tuple(ops))


def _parse_op(field: Field, op: str, arg: Any) -> Filter:
    simple = {
        "$eq": field.equals,
        "$ne": field.__ne__,
        "$gt": field.__gt__,
        "$gte": field.__ge__,
        "$lt": field.__lt__,
        "$lte": field.__le__,
        "$in": field.isin,
        "$nin": field.not_in,
        "$contains": field.contains,
    }
    if op in simple:
        return simple[op](arg)
    if op == "$exists":
        return field.exists() if arg else ~field.exists()
    raise InvalidFilterError(
        f"unknown filter operator {op!r} for field {field.name!r}; "
        f"use one of {sorted([*simple, '$exists'])}"
    )


def _require(f: Filter | None) -> Filter:
    if f is None:
        raise InvalidFilterError("a nested filter must not be None")
    return f


@dataclass(frozen=True)
class Eq(Filter):
    """``field == value``."""

    field: str
    value: Scalar

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        return self.field in metadata and _same(metadata[self.field], self.value)


@dataclass(frozen=True)
class In(Filter):
    """``field`` equals one of ``values``."""

    field: str
    values: tuple[Scalar, ...]

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        if self.field not in metadata:
            return False
        got = metadata[self.field]
        return any(_same(got, v) for v in self.values)


@dataclass(frozen=True)
class Range(Filter):
    """A numeric range; unset bounds are open."""

    field: str
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        value = metadata.get(self.field)
        if _kind(value) != "number":
            return False
        number = cast(float, value)  # _kind() has just checked it
        return not (
            (self.gt is not None and not number > self.gt)
            or (self.gte is not None and not number >= self.gte)
            or (self.lt is not None and not number < self.lt)
            or (self.lte is not None and not number <= self.lte)
        )


@dataclass(frozen=True)
class Contains(Filter):
    """A list-valued ``field`` holds ``value``."""

    field: str
    value: Scalar

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        got = metadata.get(self.field)
        return isinstance(got, list) and any(_same(item, self.value) for item in got)


@dataclass(frozen=True)
class Exists(Filter):
    """``field`` is present and not null."""

    field: str

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        return metadata.get(self.field) is not None


@dataclass(frozen=True)
class And(Filter):
    """All of ``filters``."""

    filters: tuple[Filter, ...]

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        return all(f.matches(metadata) for f in self.filters)


@dataclass(frozen=True)
class Or(Filter):
    """Any of ``filters``."""

    filters: tuple[Filter, ...]

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        return any(f.matches(metadata) for f in self.filters)


@dataclass(frozen=True)
class Not(Filter):
    """The negation of ``filter``."""

    filter: Filter

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        return not self.filter.matches(metadata)


@dataclass(frozen=True, eq=False)
class Field:
    """A metadata field, the starting point for building filters.

    Comparison operators return filters rather than booleans, so ``Field`` instances
    themselves are not comparable or hashable.
    """

    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidFilterError("a filter field name must be a non-empty string")

    def equals(self, value: object) -> Filter:
        """``field == value`` (what ``==`` builds)."""
        return Eq(self.name, _check_scalar(value, self.name))

    def __eq__(self, value: object) -> Filter:  # type: ignore[override]
        return self.equals(value)

    def __ne__(self, value: object) -> Filter:  # type: ignore[override]
        return Not(Eq(self.name, _check_scalar(value, self.name)))

    __hash__ = None  # type: ignore[assignment]

    def _bound(self, value: object) -> float:
        if _kind(value) != "number":
            raise InvalidFilterError(
                f"range bound {value!r} for field {self.name!r} must be a number"
            )
        return value  # type: ignore[return-value]

    def __gt__(self, value: object) -> Filter:
        return Range(self.name, gt=self._bound(value))

    def __ge__(self, value: object) -> Filter:
        return Range(self.name, gte=self._bound(value))

    def __lt__(self, value: object) -> Filter:
        return Range(self.name, lt=self._bound(value))

    def __le__(self, value: object) -> Filter:
        return Range(self.name, lte=self._bound(value))

    def between(self, low: float, high: float) -> Filter:
        """``low <= field <= high``."""
        return Range(self.name, gte=self._bound(low), lte=self._bound(high))

    def isin(self, values: Iterable[Scalar]) -> Filter:
        """The field equals one of ``values``."""
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise InvalidFilterError(f"isin() for field {self.name!r} takes a list of values")
        items = tuple(_check_scalar(v, self.name) for v in values)
        if not items:
            raise InvalidFilterError(f"isin() for field {self.name!r} got an empty list")
        return In(self.name, items)

    def not_in(self, values: Iterable[Scalar]) -> Filter:
        """The field equals none of ``values`` (or is absent)."""
        return Not(self.isin(values))

    def contains(self, value: Scalar) -> Filter:
        """The list-valued field holds ``value``."""
        return Contains(self.name, _check_scalar(value, self.name))

    def exists(self) -> Filter:
        """The field is present and not null."""
        return Exists(self.name)


def leaves(f: Filter) -> Sequence[Filter]:
    """Return the leaf conditions of ``f`` (used by backends to check fields up front)."""
    if isinstance(f, (And, Or)):
        return [leaf for sub in f.filters for leaf in leaves(sub)]
    if isinstance(f, Not):
        return leaves(f.filter)
    return [f]
