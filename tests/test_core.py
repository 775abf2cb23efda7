"""The small core: URIs, filters, ids, the public surface, lazy imports."""

import json
import subprocess
import sys

import pytest

import multivec
from multivec import URI, Field, Filter
from multivec._validation import id_to_key, key_to_id
from multivec.backends import available_backends, get_backend, register_backend
from multivec.backends.memory import MemoryBackend
from multivec.errors import ConfigurationError, InvalidFilterError, MissingDependencyError


def test_public_surface_is_pinned() -> None:
    assert sorted(multivec.__all__) == sorted(
        [
            "URI",
            "BackendError",
            "Collection",
            "CollectionInfo",
            "CollectionNotFoundError",
            "ConfigMismatchError",
            "ConfigurationError",
            "DimensionMismatchError",
            "Document",
            "Explanation",
            "ExportReport",
            "Field",
            "Filter",
            "Hit",
            "InvalidInputError",
            "MigrationPlan",
            "MigrationReport",
            "MultivecError",
            "PatchLayout",
            "SearchResult",
            "SpanEncoder",
            "SpanMatch",
            "StageTimings",
            "TokenSpans",
            "VerifyReport",
            "__version__",
            "connect",
            "explain_match",
            "explain_text",
            "explanation_heatmap",
            "export_collection",
            "import_collection",
            "migrate",
            "patch_scores",
            "plan_migration",
            "verify",
        ]
    )
    for name in multivec.__all__:
        assert hasattr(multivec, name)


def test_import_loads_no_vendor_sdk() -> None:
    code = (
        "import sys, multivec, multivec.muvera, multivec.rerank, multivec.backends, "
        "multivec.ingest, multivec.testing, multivec.cli; "
        "heavy = ['lancedb', 'pyarrow', 'qdrant_client', 'qdrant_edge', 'pymilvus', 'weaviate', "
        "'numba', 'onnxruntime', 'tokenizers', 'fastembed']; "
        "print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("text", "scheme", "driver", "location"),
    [
        ("lancedb://./data", "lancedb", None, "./data"),
        ("lancedb:///abs/path", "lancedb", None, "/abs/path"),
        ("memory://", "memory", None, ""),
        ("qdrant+grpc://host:6334", "qdrant", "grpc", "host:6334"),
    ],
)
def test_uri_parse(text: str, scheme: str, driver: str | None, location: str) -> None:
    uri = URI.parse(text)
    assert (uri.scheme, uri.driver, uri.location) == (scheme, driver, location)


def test_uri_hides_secrets() -> None:
    uri = URI.parse("qdrant://me:hunter2@db:6333?api_key=abc&timeout=5")
    assert "hunter2" not in repr(uri)
    assert "abc" not in str(uri)
    assert uri.userinfo == ("me", "hunter2")
    assert uri.hostport == "db:6333"
    assert uri.option("api_key") == "abc"
    assert uri.option("timeout") == "5"
    assert "hunter2" in uri.render(mask_secrets=False)


def test_uri_without_scheme_is_explained() -> None:
    with pytest.raises(ConfigurationError, match="scheme://location"):
        URI.parse("./data")


def test_registry() -> None:
    assert {"lancedb", "memory"} <= set(available_backends())
    with pytest.raises(ConfigurationError, match="no backend"):
        get_backend("nosuchdb")
    register_backend("mem2", MemoryBackend)
    try:
        assert get_backend("mem2") is MemoryBackend
        with pytest.raises(ConfigurationError, match="already registered"):
            register_backend("mem2", MemoryBackend)
    finally:
        register_backend("mem2", "multivec.backends.memory:MemoryBackend", replace=True)


def test_missing_extra_names_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from multivec import backends

    monkeypatch.setitem(backends._KNOWN, "fakedb", ("multivec_absent_sdk_module", "B", "fakedb"))
    with pytest.raises(MissingDependencyError, match=r'pip install "multivec\[fakedb\]"'):
        get_backend("fakedb")


@pytest.mark.parametrize("doc_id", ["a", "1", 1, 0, -5, 2**64 - 1, "ü/ ?"])
def test_id_keys_round_trip(doc_id: object) -> None:
    key = id_to_key(doc_id)
    assert key_to_id(key) == doc_id
    assert type(key_to_id(key)) is type(doc_id)


def test_filter_semantics() -> None:
    meta = {"lang": "en", "year": 2020, "flag": True, "tags": ["a", 1], "none": None}
    assert (Field("lang") == "en").matches(meta)
    assert not (Field("year") == "2020").matches(meta)
    assert (Field("year") == 2020.0).matches(meta)
    assert not (Field("flag") == 1).matches(meta)  # a boolean is not a number
    assert (Field("missing") != 1).matches(meta)
    assert not (Field("lang") > 1).matches(meta)  # ranges compare numbers only
    assert (Field("tags").contains("a")).matches(meta)
    assert not (Field("tags").contains("1")).matches(meta)
    assert not Field("none").exists().matches(meta)
    assert (~Field("none").exists() & Field("year").between(2020, 2020)).matches(meta)


def test_filter_dict_form() -> None:
    f = Filter.parse(
        {"$or": [{"lang": "de"}, {"year": {"$gt": 2019, "$lt": 2021}}], "flag": {"$exists": True}}
    )
    assert f is not None
    assert f.matches({"lang": "en", "year": 2020, "flag": False})
    for bad in [{"x": {"$regex": "a"}}, {"$or": []}, {"x": {"$in": "abc"}}, {"x": [1, 2]}, {}]:
        with pytest.raises(InvalidFilterError):
            Filter.parse(bad)


def test_filter_rejects_bad_values() -> None:
    with pytest.raises(InvalidFilterError):
        Field("x") >= "a"  # noqa: B015
    with pytest.raises(InvalidFilterError):
        Field("x") == None  # noqa: B015, E711
    with pytest.raises(InvalidFilterError):
        Field("")


def test_lance_sql_translation_escapes_names_and_values() -> None:
    pytest.importorskip("lancedb")
    from multivec.backends.lancedb import to_lance_sql

    sql = to_lance_sql((Field("it's") == "o'k") & ~(Field('q"x') >= 3))
    assert "'o''k'" in sql
    assert "it''s" in sql
    assert json.dumps('q"x').replace("'", "''") in sql
    assert sql.count("COALESCE") == 2
