"""Weaviate backend: the conformance suite against a server, and server-free unit tests.

The server tests need a Docker engine (a pinned container is started) or
``MULTIVEC_TEST_WEAVIATE_URI``; without either they skip. The unit tests below check the pure
mappings (names, ids, metadata keys) and the filter translation without any database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from multivec import Field
from multivec.errors import ConfigurationError, InvalidMetadataError
from multivec.testing import BackendConformance
from multivec.testing.servers import server_uri

wv = pytest.importorskip("multivec.backends.weaviate", reason="the weaviate extra is not installed")
WFilter = pytest.importorskip("weaviate.classes.query").Filter


@pytest.fixture(scope="module")
def weaviate_uri() -> Iterator[str]:
    """One server (or container) for the whole module; each test uses its own collection."""
    with server_uri("weaviate") as uri:
        yield uri


@pytest.mark.server
class TestWeaviate(BackendConformance):
    @pytest.fixture
    def uri(self, weaviate_uri: str) -> str:
        return weaviate_uri


# --- unit tests (no server) ----------------------------------------------------------------------

KEYS = [
    "",
    "id",
    "_id",
    "_additional",
    "vector",
    "_vector",
    "Year",
    "year",
    "a.b",
    "with space",
    "ünïcødé ☃",
    "x_searchable",
    "__meta_count",
    "CAPS",
    "1starts_with_digit",
    "a" * 100,
]


@pytest.mark.parametrize("key", KEYS)
def test_metadata_key_encoding_round_trips_and_is_a_valid_property_name(key: str) -> None:
    name = wv.encode_key(key)
    assert wv.decode_key(name) == key
    assert name == name.lower()  # Weaviate lower-cases a leading capital; ours never has one
    assert name.startswith("m_")
    assert not name.startswith("mv_")  # no clash with the backend's own properties
    import re

    assert re.fullmatch(r"[_A-Za-z][_0-9A-Za-z]*", name)
    assert name not in {"id", "_id", "_additional", "vector", "_vector"}


def test_metadata_key_encoding_is_injective() -> None:
    assert len({wv.encode_key(k) for k in KEYS}) == len(KEYS)


def test_collection_name_mapping() -> None:
    assert wv.collection_name("t_abc123") == "Mv_t_abc123"
    assert wv.multivec_name(wv.collection_name("Docs_2")) == "Docs_2"
    for bad in ["", "with space", "a-b", "ü"]:
        with pytest.raises(ConfigurationError):
            wv.collection_name(bad)


def test_uuid_mapping_is_deterministic_and_type_aware() -> None:
    assert wv.key_uuid("s:1") == wv.key_uuid("s:1")
    assert wv.key_uuid("s:1") != wv.key_uuid("i:1")
    uuid.UUID(wv.key_uuid("s:ünïcødé"))  # a valid UUID string


def test_typed_values() -> None:
    assert wv._typed_value("k", 1) == ("number", 1.0)
    assert wv._typed_value("k", True) == ("bool", True)
    assert wv._typed_value("k", " a ") == ("text", "< a >")
    assert wv._typed_value("k", ["a", None, {"x": 1}]) == ("text[]", ["<a>"])
    assert wv._typed_value("k", []) is None
    assert wv._typed_value("k", {"a": 1}) is None
    with pytest.raises(InvalidMetadataError, match="'k'"):
        wv._typed_value("k", [1, "a"])


SCHEMA = {
    wv.encode_key("lang"): "text",
    wv.encode_key("year"): "number",
    wv.encode_key("draft"): "bool",
    wv.encode_key("tags"): "text[]",
}


def _p(key: str) -> object:
    return WFilter.by_property(wv.encode_key(key))


def _untyped(key: str) -> object:
    return WFilter.by_property("mv_typed").contains_none([f"<{key}>"])


CASES = [
    (Field("lang") == "en", _p("lang").equal("<en>")),  # type: ignore[attr-defined]
    (Field("lang") != "en", _untyped("lang") | _p("lang").not_equal("<en>")),  # type: ignore[attr-defined]
    (Field("year") >= 2010, _p("year").greater_or_equal(2010.0)),  # type: ignore[attr-defined]
    (
        Field("year").between(2003, 2007),
        WFilter.all_of([_p("year").greater_or_equal(2003.0), _p("year").less_or_equal(2007.0)]),  # type: ignore[attr-defined]
    ),
    (
        ~(Field("year") > 2003),
        WFilter.any_of([_untyped("year"), _p("year").less_or_equal(2003.0)]),  # type: ignore[attr-defined, list-item]
    ),
    (
        Field("lang").isin(["de", "fr"]),
        WFilter.any_of([_p("lang").equal("<de>"), _p("lang").equal("<fr>")]),  # type: ignore[attr-defined]
    ),
    (Field("draft") == True, _p("draft").equal(True)),  # type: ignore[attr-defined]  # noqa: E712
    (Field("opt").exists(), WFilter.by_property("mv_fields").contains_any(["<opt>"])),
    (~Field("opt").exists(), WFilter.by_property("mv_fields").contains_none(["<opt>"])),
    (Field("tags").contains("t2"), _p("tags").contains_any(["<t2>"])),  # type: ignore[attr-defined]
    (
        ~Field("tags").contains("t2"),
        _untyped("tags") | _p("tags").contains_none(["<t2>"]),  # type: ignore[attr-defined]
    ),
    (Field("missing") == 1, False),
    (Field("missing") != 1, True),
    (Field("lang") == 5, False),  # a number never equals a text field
    (Field("tags") == "t2", False),  # equality on a list field never matches
    (Field("year") == 2005, _p("year").equal(2005.0)),  # type: ignore[attr-defined]
    ((Field("lang") == 5) | (Field("year") == 2005), _p("year").equal(2005.0)),  # type: ignore[attr-defined]
    ((Field("lang") == 5) & (Field("year") == 2005), False),
    (
        ~((Field("lang") == "de") & (Field("year") > 2010)),
        WFilter.any_of(
            [
                _untyped("lang") | _p("lang").not_equal("<de>"),  # type: ignore[attr-defined]
                WFilter.any_of([_untyped("year"), _p("year").less_or_equal(2010.0)]),  # type: ignore[attr-defined, list-item]
            ]
        ),
    ),
]


def _structure(f: object) -> object:
    """A comparable form of a Weaviate filter tree (its classes define no equality)."""
    if isinstance(f, bool):
        return f
    children = getattr(f, "filters", None)
    if children is not None and not hasattr(f, "value"):
        return (type(f).__name__, [_structure(c) for c in children])
    return (str(f.target), str(f.operator), f.value)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("flt", "expected"), CASES, ids=[repr(c[0])[:60] for c in CASES])
def test_filter_translation(flt: object, expected: object) -> None:
    got = wv.to_weaviate_filter(flt, SCHEMA)  # type: ignore[arg-type]
    assert _structure(got) == _structure(expected)
