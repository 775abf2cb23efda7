"""Weaviate backend: the conformance suite against a server, and server-free unit tests.

The server tests need a Docker engine (a pinned container is started) or
``MULTIVEC_TEST_WEAVIATE_URI``; without either they skip. They run the suite twice: on the plain
multi-vector layout and on Weaviate's MUVERA layout (``mv_encoding=muvera``). The unit tests
below check the pure mappings (names, ids, metadata keys), the filter translation, the
``mv_encoding`` options and the vector config sent on creation without any database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pytest

import multivec
from multivec import Collection, Field
from multivec._uri import URI
from multivec.errors import ConfigMismatchError, ConfigurationError, InvalidMetadataError
from multivec.testing import DIM, SMALL_FDE, BackendConformance, assert_same_topk
from multivec.testing.servers import server_uri

wv = pytest.importorskip("multivec.backends.weaviate", reason="the weaviate extra is not installed")
WFilter = pytest.importorskip("weaviate.classes.query").Filter
CollectionConfigCreate = pytest.importorskip(
    "weaviate.collections.classes.config"
)._CollectionConfigCreate
MUVERA_DEFAULTS = wv.MuveraEncoding(ksim=4, dprojections=16, repetitions=10)


@pytest.fixture(scope="module")
def weaviate_uri() -> Iterator[str]:
    """One server (or container) for the whole module; each test uses its own collection."""
    with server_uri("weaviate") as uri:
        yield uri


def _with_options(uri: str, **options: str) -> str:
    """``uri`` with more query options (it may have some already, such as ``grpc_port``)."""
    return uri + ("&" if "?" in uri else "?") + urlencode(options)


def _layout(col: Collection) -> Any:
    """The ``mv`` layout the Weaviate backend behind ``col`` reports."""
    backend = col.backend
    assert isinstance(backend, wv.WeaviateBackend)
    return backend.mv_encoding


@pytest.mark.server
class TestWeaviate(BackendConformance):
    @pytest.fixture
    def uri(self, weaviate_uri: str) -> str:
        return weaviate_uri

    def test_plain_layout_is_reported_and_kept(self, uri: str, collection: Collection) -> None:
        """A collection created without ``mv_encoding`` must report the plain layout.

        Asking for MUVERA when reopening it must raise instead of being ignored: the option only
        applies at creation, and the native path measured would not be the one asked for.
        """
        assert _layout(collection) is None
        assert "mv_encoding='none'" in repr(collection.backend)
        with pytest.raises(ConfigMismatchError, match="mv_encoding"):
            multivec.connect(_with_options(uri, mv_encoding="muvera"), collection.name)


@pytest.mark.server
class TestWeaviateMuvera(BackendConformance):
    """The suite on collections whose ``mv`` uses Weaviate's MUVERA encoding.

    Everything but ``mode="native"`` must behave as on the plain layout: the ``fde`` vector, the
    stored tokens and the filters do not depend on it. ``mode="native"`` is then Weaviate's
    MUVERA path: exact MaxSim over only ``2·k`` candidates, checked below.
    """

    @pytest.fixture
    def uri(self, weaviate_uri: str) -> str:
        return _with_options(weaviate_uri, mv_encoding="muvera")

    def test_native_modes(self, loaded: tuple[Collection, Collection]) -> None:
        """Weaviate's MUVERA search must score exactly, and rank exactly when k covers everything.

        If the layout is not MUVERA with the server's defaults, the server ignored or changed
        the encoding. With ``k`` at least the corpus size its ``2·k`` candidates are every
        document, so the result must be the reference's; with a small ``k`` the candidates are
        approximate, but each hit's score must still be its exact MaxSim (if not, the server did
        not rescore with the original multi-vectors).
        """
        col, ref = loaded
        assert _layout(col) == MUVERA_DEFAULTS
        rng = np.random.default_rng(5)
        query = rng.normal(size=(3, DIM)).astype(np.float32)
        query /= np.linalg.norm(query, axis=1, keepdims=True)
        n = ref.count()
        want = ref.search(query, k=n, candidates=1000)
        got = col.search(query, k=n, mode="native")
        assert_same_topk(
            list(zip(got.ids, got.scores, strict=True)),
            list(zip(want.ids, want.scores, strict=True)),
            rtol=2e-3,
        )
        exact = {h.id: h.score for h in want}
        few = col.search(query, k=5, mode="native")
        assert len(few) == 5
        np.testing.assert_allclose(few.scores, [exact[i] for i in few.ids], rtol=2e-3, atol=1e-4)
        assert list(few.scores) == sorted(few.scores, reverse=True)
        assert few[0].metadata == next(h.metadata for h in want if h.id == few[0].id)
        with pytest.raises(ConfigurationError, match="native"):
            col.search(query, k=5, mode="native-prefetch")

    def test_parameters_are_read_back_and_contradictions_refused(self, weaviate_uri: str) -> None:
        """Chosen MUVERA parameters must reach the server and be read back when reopening.

        Reopening without the options, or with options that agree, must give the stored layout;
        options that contradict it must raise rather than be silently ignored.
        """
        name = f"t_{uuid.uuid4().hex[:12]}"
        chosen = _with_options(
            weaviate_uri,
            mv_encoding="muvera",
            muvera_ksim="3",
            muvera_dprojections="8",
            muvera_repetitions="4",
        )
        col = multivec.connect(chosen, name, dim=DIM, fde=SMALL_FDE)
        try:
            want = wv.MuveraEncoding(ksim=3, dprojections=8, repetitions=4)
            assert _layout(col) == want
            assert "muvera(ksim=3, dprojections=8, repetitions=4)" in repr(col.backend)
            agreeing = _with_options(weaviate_uri, mv_encoding="muvera", muvera_ksim="3")
            for uri in (weaviate_uri, agreeing):
                reopened = multivec.connect(uri, name)
                try:
                    assert _layout(reopened) == want
                finally:
                    reopened.close()
            for options in (
                {"mv_encoding": "none"},
                {"mv_encoding": "muvera", "muvera_ksim": "5"},
            ):
                with pytest.raises(ConfigMismatchError, match="mv_encoding"):
                    multivec.connect(_with_options(weaviate_uri, **options), name)
        finally:
            col.drop()
            col.close()


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


# --- the mv layout: options and creation config (no server) -------------------------------------


def _option(query: str) -> Any:
    return wv.mv_encoding_option(URI.parse("weaviate://localhost:8080" + query))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", None),
        ("?grpc_port=50051", None),
        ("?mv_encoding=none", None),
        ("?mv_encoding=muvera", wv.MuveraEncoding()),
        ("?mv_encoding=MUVERA&muvera_ksim=1", wv.MuveraEncoding(ksim=1)),
        (
            "?mv_encoding=muvera&muvera_ksim=10&muvera_dprojections=8&muvera_repetitions=20",
            wv.MuveraEncoding(ksim=10, dprojections=8, repetitions=20),
        ),
    ],
)
def test_mv_encoding_option(query: str, expected: Any) -> None:
    assert _option(query) == expected


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?mv_encoding=colbert", "mv_encoding must be 'none' .* or 'muvera'"),
        ("?mv_encoding=", "mv_encoding must be"),
        ("?mv_encoding=muvera&muvera_ksim=0", "muvera_ksim must be a whole number from 1 to 10"),
        ("?mv_encoding=muvera&muvera_ksim=11", "muvera_ksim must be a whole number from 1 to 10"),
        ("?mv_encoding=muvera&muvera_ksim=-1", "muvera_ksim must be"),
        ("?mv_encoding=muvera&muvera_ksim=4.0", "muvera_ksim must be"),
        ("?mv_encoding=muvera&muvera_ksim=%C2%B2", "muvera_ksim must be"),  # a Unicode digit
        ("?mv_encoding=muvera&muvera_dprojections=0", "muvera_dprojections must be .* >= 1"),
        ("?mv_encoding=muvera&muvera_repetitions=", "muvera_repetitions must be"),
        ("?muvera_ksim=4", "add mv_encoding=muvera to the URI"),
        ("?mv_encoding=none&muvera_repetitions=5", "add mv_encoding=muvera to the URI"),
    ],
)
def test_bad_mv_encoding_options_are_refused(query: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        _option(query)


def test_bad_layout_option_fails_before_connecting() -> None:
    # Nothing listens on port 1: reaching the network would end in BackendUnavailableError.
    uri = URI.parse("weaviate://localhost:1?mv_encoding=muvera&muvera_ksim=11")
    with pytest.raises(ConfigurationError, match="muvera_ksim"):
        wv.WeaviateBackend(uri, "docs")


def test_muvera_encoding_size_and_text() -> None:
    assert MUVERA_DEFAULTS.fde_dim == 2560
    assert wv.MuveraEncoding(ksim=3, dprojections=8, repetitions=4).fde_dim == 4 * 8 * 8
    assert wv.MuveraEncoding(ksim=3).fde_dim is None
    assert str(MUVERA_DEFAULTS) == "muvera(ksim=4, dprojections=16, repetitions=10)"
    assert str(wv.MuveraEncoding(repetitions=5)) == "muvera(repetitions=5)"


def _sent_vector_config(encoding: Any) -> dict[str, Any]:
    """The ``vectorConfig`` the client sends to create a collection with this ``mv`` layout."""
    payload = CollectionConfigCreate(name="Mv_docs", vector_config=wv._vector_config(encoding))
    sent: dict[str, Any] = payload._to_dict()["vectorConfig"]
    assert set(sent) == {"fde", "mv"}
    assert sent["fde"]["vectorIndexConfig"] == {"distance": "dot"}  # never MUVERA-encoded
    for vector in sent.values():
        assert vector["vectorIndexType"] == "hnsw"
        assert vector["vectorizer"] == {"none": {}}
    assert sent["mv"]["vectorIndexConfig"]["distance"] == "dot"
    return sent


def test_creation_config_carries_the_muvera_encoding() -> None:
    sent = _sent_vector_config(wv.MuveraEncoding(ksim=3, dprojections=8, repetitions=20))
    assert sent["mv"]["vectorIndexConfig"]["multivector"] == {
        "enabled": True,
        "muvera": {"enabled": True, "ksim": 3, "dprojections": 8, "repetitions": 20},
    }


def test_creation_config_leaves_unset_muvera_parameters_to_the_server() -> None:
    sent = _sent_vector_config(wv.MuveraEncoding(ksim=2))
    assert sent["mv"]["vectorIndexConfig"]["multivector"]["muvera"] == {"enabled": True, "ksim": 2}
    sent = _sent_vector_config(wv.MuveraEncoding())
    assert sent["mv"]["vectorIndexConfig"]["multivector"]["muvera"] == {"enabled": True}


def test_creation_config_of_the_plain_layout_has_no_encoding() -> None:
    sent = _sent_vector_config(None)
    assert sent["mv"]["vectorIndexConfig"]["multivector"] == {"enabled": True}


@pytest.mark.parametrize(
    ("requested", "stored", "problem"),
    [
        (None, None, None),
        (wv.MuveraEncoding(), MUVERA_DEFAULTS, None),
        (wv.MuveraEncoding(ksim=4), MUVERA_DEFAULTS, None),
        (MUVERA_DEFAULTS, MUVERA_DEFAULTS, None),
        (None, MUVERA_DEFAULTS, "plain multi-vector index"),
        (wv.MuveraEncoding(), None, "MUVERA"),
        (
            wv.MuveraEncoding(ksim=5, dprojections=16, repetitions=20),
            MUVERA_DEFAULTS,
            "muvera_ksim=5 (stored: 4), muvera_repetitions=20 (stored: 10)",
        ),
    ],
)
def test_layout_contradictions(requested: Any, stored: Any, problem: str | None) -> None:
    got = wv._layout_problem(requested, stored)
    if problem is None:
        assert got is None
    else:
        assert got is not None
        assert problem in got
