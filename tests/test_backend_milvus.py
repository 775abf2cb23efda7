"""Milvus: the conformance suite on Milvus Lite and on a server, plus Milvus-specific checks."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="the milvus extra is not installed")

from pymilvus import DataType

import multivec
from multivec import Field
from multivec._models import CollectionInfo
from multivec._uri import URI
from multivec.backends import milvus as milvus_module
from multivec.backends._base import WriteBatch
from multivec.backends._codec import CHUNK_CHARS
from multivec.errors import (
    BackendError,
    CapacityError,
    CollectionNotFoundError,
    ConfigMismatchError,
    ConfigurationError,
    InvalidFilterError,
    InvalidInputError,
)
from multivec.testing import DIM, SMALL_FDE, BackendConformance, make_corpus
from multivec.testing.servers import MilvusLiteServer, embedded_milvus_server, server_uri


@pytest.fixture(scope="module")
def lite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    # One data file for the whole module: Milvus Lite starts a server per file, which is slow,
    # and the backend caches clients per path; each test still gets its own collections.
    path: Path = tmp_path_factory.mktemp("milvus") / "m.db"
    return f"milvus+lite://{path}"


class TestMilvusLite(BackendConformance):
    @pytest.fixture
    def uri(self, lite_uri: str) -> str:
        return lite_uri


@pytest.fixture(scope="module")
def milvus_server() -> Iterator[str]:
    with server_uri("milvus") as uri:
        yield uri


@pytest.mark.server
class TestMilvusServer(BackendConformance):
    @pytest.fixture
    def uri(self, milvus_server: str) -> str:
        return milvus_server


@pytest.fixture(scope="module")
def milvus_embedded() -> Iterator[str]:
    pytest.importorskip(
        "milvus", reason="the embedded Milvus server needs the 'milvus' package (Linux x86-64)"
    )
    with embedded_milvus_server() as uri:
        yield uri


class TestMilvusEmbeddedServer(BackendConformance):
    """The suite on a real Milvus server, 2.3.5, started here without Docker."""

    @pytest.fixture
    def uri(self, milvus_embedded: str) -> str:
        return milvus_embedded


def test_consistency_option() -> None:
    parse = milvus_module._consistency_option
    assert parse(URI.parse("milvus://h:19530")) == "Session"
    assert parse(URI.parse("milvus://h:19530?consistency=STRONG")) == "Strong"
    with pytest.raises(ConfigurationError, match="consistency must be one of"):
        parse(URI.parse("milvus://h:19530?consistency=linearizable"))


def test_another_processs_writes_are_read_with_strong_consistency(milvus_embedded: str) -> None:
    """Session consistency covers this process's writes; ``strong`` also another process's."""
    name = f"x_{uuid.uuid4().hex[:10]}"
    with multivec.connect(milvus_embedded, name, dim=DIM, fde=SMALL_FDE) as col:
        col.upsert(["here"], [np.ones((3, DIM), np.float32)])
        assert col.count() == 1  # read-your-writes under Session
    writer = (
        "import sys, numpy as np, multivec\n"
        "col = multivec.connect(sys.argv[1], sys.argv[2])\n"
        "col.upsert(['there'], [np.ones((3, col.info.dim), np.float32)])\n"
    )
    subprocess.run([sys.executable, "-c", writer, milvus_embedded, name], check=True)
    with multivec.connect(f"{milvus_embedded}?consistency=strong", name) as col:
        assert col.count() == 2
        assert [d.id for d in col.get(["there"])] == ["there"]
        col.drop()


def _with_option(uri: str, option: str) -> str:
    return f"{uri}{'&' if '?' in uri else '?'}{option}"


@pytest.mark.server
class TestMilvusServerNative(BackendConformance):
    """The suite on native=maxsim collections; test_native_modes checks Milvus's own MaxSim."""

    @pytest.fixture
    def uri(self, milvus_server: str) -> str:
        return _with_option(milvus_server, "native=maxsim")


@pytest.fixture
def name() -> str:
    return f"m_{uuid.uuid4().hex[:12]}"


def test_dimension_limit_is_enforced_even_on_lite(lite_uri: str, name: str) -> None:
    """Milvus Lite accepts 40,000-d vectors; a server does not, so multivec refuses them."""
    with pytest.raises(ConfigurationError, match="32768"):
        multivec.connect(lite_uri, name, dim=40_000, fde="muvera-1280")
    big_fde = SMALL_FDE.model_copy(update={"final_dim": 40_000})
    with pytest.raises(ConfigurationError, match="32768"):
        multivec.connect(lite_uri, name, dim=DIM, fde=big_fde)


def test_backend_create_refuses_large_dims_directly(lite_uri: str, name: str) -> None:
    """The backend itself refuses an over-limit FDE, not only the façade."""
    backend = milvus_module.MilvusBackend(URI.parse(lite_uri), name)
    info = CollectionInfo(dim=40_000, dtype="float16", fde=SMALL_FDE)
    with pytest.raises(ConfigurationError, match="Milvus's limit"):
        backend.create(info)


def test_rows_are_split_across_requests_and_reads_are_grouped(
    lite_uri: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes split when rows exceed the request size; reads split by the stored row sizes."""
    monkeypatch.setattr(milvus_module.MilvusBackend, "max_request_bytes", 4096)
    col = multivec.connect(lite_uri, name, dim=DIM, fde=SMALL_FDE)
    try:
        backend: Any = col.backend
        writes: list[int] = []
        reads: list[int] = []
        upsert, read = backend._client.upsert, backend._read

        def spy_upsert(collection: str, rows: list[dict[str, Any]], **kwargs: Any) -> Any:
            writes.append(len(rows))
            return upsert(collection, rows, **kwargs)

        def spy_read(keys: list[str], fields: list[str]) -> Any:
            reads.append(len(keys))
            return read(keys, fields)

        monkeypatch.setattr(backend._client, "upsert", spy_upsert)
        monkeypatch.setattr(backend, "_read", spy_read)
        monkeypatch.setattr(milvus_module, "_READ_BYTES", 3000)
        rng = np.random.default_rng(0)
        vectors = [rng.normal(size=(30, DIM)).astype(np.float32) for _ in range(10)]
        col.upsert(list(range(10)), vectors)
        assert len(writes) > 1
        assert sum(writes) == 10
        assert col.count() == 10
        got = col.get(list(range(10)))
        assert len(reads) > 1
        assert sum(reads) == 10
        for doc, vec in zip(got, vectors, strict=True):
            np.testing.assert_array_equal(doc.vectors, vec.astype(np.float16))
    finally:
        col.drop()


def test_long_documents_span_several_chunks(lite_uri: str, name: str) -> None:
    """A token matrix above one VARCHAR chunk is split and joined back bit for bit."""
    col = multivec.connect(lite_uri, name, dim=DIM, fde=SMALL_FDE, dtype="float32")
    try:
        rows = 2 * CHUNK_CHARS // (4 * DIM) + 7
        long = np.random.default_rng(1).normal(size=(rows, DIM)).astype(np.float32)
        col.upsert(["long", "short"], [long, long[:1]])
        stored = col.backend._query('key == "s:long"', ["tokens"], 1)  # type: ignore[attr-defined]
        assert len(stored[0]["tokens"]) == 3
        np.testing.assert_array_equal(col.get(["long"])[0].vectors, long)
        col.upsert(["long"], [long[:2]])
        np.testing.assert_array_equal(col.get(["long"])[0].vectors, long[:2])
        assert col.count() == 2
    finally:
        col.drop()


def test_tokens_changed_outside_multivec_are_reported(lite_uri: str, name: str) -> None:
    """A row whose token text is not whole tokens fails loudly instead of scoring garbage."""
    col = multivec.connect(lite_uri, name, dim=DIM, fde=SMALL_FDE)
    try:
        col.upsert(["a"], [np.ones((2, DIM))])
        backend: Any = col.backend
        row = backend._query('key == "s:a"', ["key", "fde", "size", "meta", "fmeta", "text"], 1)
        backend._client.upsert(backend.collection, [{**row[0], "tokens": ["AAAA"]}])
        with pytest.raises(BackendError, match="changed outside multivec"):
            col.get(["a"])
    finally:
        col.drop()


def test_float32_collection_round_trip(lite_uri: str, name: str) -> None:
    """float32 collections keep full precision."""
    col = multivec.connect(lite_uri, name, dim=DIM, fde=SMALL_FDE, dtype="float32")
    try:
        vec = np.random.default_rng(2).normal(size=(3, DIM)).astype(np.float32)
        col.upsert([1], [vec])
        got = col.get([1])[0].vectors
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, vec)
    finally:
        col.drop()


def test_filter_translation_escapes_and_types() -> None:
    """Strings are escaped, and booleans and numbers compare in separate kinds."""
    expr = milvus_module.to_milvus_expr(Field('we"ird\\') == 'a"b\\c\n')
    assert 'fmeta["s"]["we\\"ird\\\\"] == "a\\"b\\\\c\\n"' in expr
    assert 'fmeta["b"]' in milvus_module.to_milvus_expr(Field("x") == True)  # noqa: E712
    assert 'fmeta["n"]' in milvus_module.to_milvus_expr(Field("x") == 1)
    with pytest.raises(InvalidFilterError):
        milvus_module.to_milvus_expr(Field("x") == "\x01")


def test_bool_and_number_kinds_on_lite(lite_uri: str, name: str) -> None:
    """Milvus alone compares true == 1; multivec's filters must keep them apart."""
    col = multivec.connect(lite_uri, name, dim=DIM, fde=SMALL_FDE)
    try:
        metas: list[dict[str, Any]] = [
            {"x": True, "t": [True]},
            {"x": 1, "t": [1]},
            {"x": 1.0},
            {"x": "1"},
            {},
        ]
        vecs = [np.ones((1, DIM))] * len(metas)
        col.upsert(list(range(len(metas))), vecs, metas)
        for flt in (
            Field("x") == True,  # noqa: E712
            Field("x") == 1,
            Field("x") == "1",
            Field("x") > 0,
            Field("x") != 1,
            Field("t").contains(1),
            Field("t").contains(True),
            Field("x") < float("inf"),
        ):
            got = set(col.search(np.ones((1, DIM)), k=10, candidates=10, filter=flt).ids)
            assert got == {i for i, m in enumerate(metas) if flt.matches(m)}, flt
    finally:
        col.drop()


def test_bad_uris() -> None:
    with pytest.raises(ConfigurationError, match=r"\.db"):
        multivec.connect("milvus+lite:///tmp/not-a-db-file", "c", dim=DIM)
    with pytest.raises(ConfigurationError, match="collection name"):
        multivec.connect("milvus+lite:///tmp/x.db", "bad-name", dim=DIM)


def test_ids_with_escapes_round_trip(lite_uri: str, name: str) -> None:
    """Ids with quotes, backslashes and newlines are escaped in every key expression."""
    col = multivec.connect(lite_uri, name, dim=DIM, fde=SMALL_FDE)
    try:
        ids: list[str | int] = ['q"uo\\te', "new\nline", "tab\tcr\r", "plain"]
        col.upsert(ids, [np.ones((2, DIM))] * len(ids))
        assert [d.id for d in col.get(ids)] == ids
        col.upsert(ids[:1], [np.ones((1, DIM))])
        assert col.get(ids[:1])[0].vectors.shape == (1, DIM)
        col.delete(ids[:3])
        assert col.count() == 1
        with pytest.raises(InvalidInputError, match="control character"):
            col.upsert(["bell\x07"], [np.ones((1, DIM))])
    finally:
        col.drop()


def test_paged_reads_with_a_small_row_cap(
    lite_uri: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a tiny reply cap, scans narrow their key range and long documents are paged."""
    col = multivec.connect(lite_uri, name, dim=DIM, fde=SMALL_FDE)
    try:
        ids, vectors, metadata = make_corpus(23)
        col.upsert(ids, vectors, metadata)
        monkeypatch.setattr(milvus_module, "_MAX_ROWS", 8)
        seen = [d.id for batch in col.iter_documents(batch_size=3) for d in batch]
        assert sorted(map(str, seen)) == sorted(map(str, ids))
        assert len(seen) == len(set(map(str, seen)))
        keys = [str(k) for k in col.backend.scan(None, 100).keys]
        assert keys == sorted(keys)
        for doc, vec in zip(col.get(ids), vectors, strict=True):
            np.testing.assert_array_equal(doc.vectors, vec.astype(np.float16))
    finally:
        col.drop()


def test_a_document_milvus_refuses_stops_the_whole_upsert(
    lite_uri: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Milvus's own limits are checked for every document before the first request."""
    monkeypatch.setattr(milvus_module.MilvusBackend, "max_request_bytes", 2048)
    col = multivec.connect(lite_uri, name, dim=DIM, fde=SMALL_FDE)
    try:
        ids = list(range(20))
        texts: list[str | None] = [None] * 19 + ["x" * 70_000]
        with pytest.raises(InvalidInputError, match=r"VARCHAR limit.*nothing was written"):
            col.upsert(ids, [np.ones((2, DIM))] * 20, texts=texts)
        assert col.count() == 0
    finally:
        col.drop()


# --- Milvus's own MaxSim (native=maxsim) --------------------------------------------------------

SERVER_VERSIONS = ["v2.6.22", "v3.0.0"]


def _info() -> CollectionInfo:
    return CollectionInfo(dim=DIM, dtype="float16", fde=SMALL_FDE)


def test_native_option_parsing() -> None:
    """native=maxsim asks for the field, native=none refuses it, no option takes what is stored."""
    option = milvus_module._native_option
    assert option(URI.parse("milvus://db:19530")) is None
    assert option(URI.parse("milvus://db:19530?native=maxsim")) is True
    assert option(URI.parse("milvus://db:19530?native=MaxSim")) is True
    assert option(URI.parse("milvus://db:19530?native=none")) is False
    with pytest.raises(ConfigurationError, match="'maxsim' or 'none'"):
        option(URI.parse("milvus://db:19530?native=yes"))
    # Refused before any connection is attempted (nothing listens on port 1).
    with pytest.raises(ConfigurationError, match="'maxsim' or 'none'"):
        multivec.connect("milvus://127.0.0.1:1?native=colbert", "c", dim=DIM)


def test_native_maxsim_is_refused_on_lite(lite_uri: str, name: str) -> None:
    """Milvus Lite has no StructArray or MAX_SIM: the option fails clearly, the flags stay false."""
    col = multivec.connect(lite_uri, name, dim=DIM, fde=SMALL_FDE)
    try:
        ids, vectors, _ = make_corpus(5)
        col.upsert(ids, vectors)
        for uri, dim in ((lite_uri, None), (lite_uri, DIM)):
            with pytest.raises(ConfigurationError, match="Milvus Lite has no StructArray"):
                multivec.connect(_with_option(uri, "native=maxsim"), name, dim=dim)
        with pytest.raises(ConfigurationError, match="Milvus Lite has no StructArray"):
            multivec.connect(_with_option(lite_uri, "native=maxsim"), f"{name}_new", dim=DIM)
        reopened = multivec.connect(_with_option(lite_uri, "native=none"), name)
        assert reopened.count() == 5
        assert reopened.backend.supports_native_multivector is False
        assert milvus_module.MilvusBackend.supports_native_multivector is False
        for mode in ("native", "native-prefetch"):
            with pytest.raises(ConfigurationError, match="native"):
                reopened.search(vectors[0], k=3, mode=mode)
    finally:
        col.drop()


def test_native_layout_follows_the_server_version() -> None:
    """FLOAT16 subfields only where Milvus takes them (3.0+); 2.6 structs hold FLOAT_VECTOR."""
    layout = milvus_module._native_layout
    f16, f32 = DataType.FLOAT16_VECTOR, DataType.FLOAT_VECTOR
    assert layout("float16", "v3.0.0").vector_type == f16
    assert layout("float16", "v3.0.0").dtype == "float16"
    assert layout("float16", "v2.6.22").vector_type == f32
    assert layout("float16", "v2.6.22").dtype == "float32"
    assert layout("float32", "3.0.1").vector_type == f32
    assert layout("float16", "not a version").vector_type == f32
    assert layout("float16", None).capacity == 4096
    with pytest.raises(ConfigurationError, match=r"2\.6\.4"):
        layout("float16", "v2.6.3")


@pytest.mark.parametrize("version", SERVER_VERSIONS)
def test_creation_schema_has_the_struct_field_and_maxsim_index(version: str) -> None:
    """create() builds its schema with _schema: the StructArray and its MAX_SIM_IP index."""
    native = milvus_module._native_layout("float16", version)
    schema, index = milvus_module._schema(_info(), "HNSW", native)
    (struct,) = schema.to_dict()["struct_fields"]
    assert struct["name"] == "tokens_mv"
    assert struct["max_capacity"] == 4096
    (sub,) = struct["fields"]
    assert (sub["name"], sub["type"], sub["params"]) == ("emb", native.vector_type, {"dim": DIM})
    by_field = {i.field_name: i for i in index}
    assert set(by_field) == {"fde", "tokens_mv[emb]"}
    maxsim = by_field["tokens_mv[emb]"]
    assert maxsim.index_type == "HNSW"
    assert maxsim.get_index_configs()["metric_type"] == "MAX_SIM_IP"
    assert by_field["fde"].get_index_configs()["metric_type"] == "IP"
    # Without the option the layout is unchanged: no struct field, one index.
    plain, plain_index = milvus_module._schema(_info(), "HNSW", None)
    assert "struct_fields" not in plain.to_dict()
    assert [i.field_name for i in plain_index] == ["fde"]


def _server_schema(schema: Any) -> dict[str, Any]:
    """``schema`` as pymilvus holds a collection's schema once the server describes it."""
    from pymilvus.client.abstract import CollectionSchema
    from pymilvus.client.prepare import Prepare
    from pymilvus.grpc_gen import milvus_pb2

    proto = Prepare.get_schema_from_collection_schema("c", schema)
    described: dict[str, Any] = CollectionSchema(
        milvus_pb2.DescribeCollectionResponse(schema=proto)
    ).dict()
    return described


def _described(schema: Any) -> dict[str, Any]:
    """What describe_collection returns for ``schema``, through pymilvus's own conversions."""
    from pymilvus.client.utils import convert_struct_fields_to_user_format

    described = _server_schema(schema)
    structs = convert_struct_fields_to_user_format(described.pop("struct_array_fields"))
    described["fields"].extend(structs)
    return described


@pytest.mark.parametrize("version", SERVER_VERSIONS)
def test_stored_layout_is_read_from_the_schema(version: str) -> None:
    """Opening reads tokens_mv's type and capacity from the described schema, not the URI."""
    native = milvus_module._native_layout("float16", version)
    schema, _ = milvus_module._schema(_info(), "HNSW", native)
    assert milvus_module._stored_native(_described(schema)) == native
    plain, _ = milvus_module._schema(_info(), "HNSW", None)
    assert milvus_module._stored_native(_described(plain)) is None


@pytest.mark.parametrize("version", SERVER_VERSIONS)
def test_rows_carry_the_struct_copy_pymilvus_accepts(version: str) -> None:
    """Rows hold each token at the subfield's type; pymilvus serialises them for the schema."""
    from pymilvus.client.prepare import Prepare

    native = milvus_module._native_layout("float16", version)
    _, vectors, metadata = make_corpus(3)
    stored = [v.astype(np.float16) for v in vectors]
    fde_dim = _info().fde_dim
    batch = WriteBatch(
        ["s:a", "s:b", "i:3"],
        np.zeros((3, fde_dim), dtype=np.float32),
        stored,
        metadata,
        [None, "t", None],
    )
    rows = milvus_module._rows(batch, native)
    for row, matrix in zip(rows, stored, strict=True):
        got = np.array([element["emb"] for element in row["tokens_mv"]])
        assert got.dtype == np.dtype(native.dtype)
        np.testing.assert_array_equal(got, matrix.astype(np.float32))
    assert all("tokens_mv" not in row for row in milvus_module._rows(batch, None))
    schema, _ = milvus_module._schema(_info(), "HNSW", native)
    # The arguments pymilvus's upsert passes it, from the schema the server describes.
    server = _server_schema(schema)
    request = Prepare.row_upsert_param(
        "c", rows, "", server["fields"], server["struct_array_fields"]
    )
    (field,) = [f for f in request.fields_data if f.field_name == "tokens_mv"]
    sent = field.struct_arrays.fields[0].vectors.vector_array
    assert len(sent.data) == 3
    width = 2 if native.dtype == "float16" else 4
    sizes = [len(v.float16_vector) or 4 * len(v.float_vector.data) for v in sent.data]
    assert sizes == [m.shape[0] * DIM * width for m in stored]


@pytest.mark.server
class TestMilvusServerNativeLayout:
    """Milvus-specific checks of native=maxsim collections (need a server 2.6.4+)."""

    def test_flag_and_layout_follow_the_opened_collection(self, milvus_server: str) -> None:
        """The schema decides; a URI option that contradicts it is refused."""
        plain_name, native_name = (f"m_{uuid.uuid4().hex[:12]}" for _ in range(2))
        native_uri = _with_option(milvus_server, "native=maxsim")
        plain = multivec.connect(milvus_server, plain_name, dim=DIM, fde=SMALL_FDE)
        native = multivec.connect(native_uri, native_name, dim=DIM, fde=SMALL_FDE)
        try:
            assert plain.backend.supports_native_multivector is False
            assert native.backend.supports_native_multivector is True
            assert milvus_module.MilvusBackend.supports_native_multivector is False
            reopened = multivec.connect(milvus_server, native_name)
            assert reopened.backend.supports_native_multivector is True
            reopened.close()
            with pytest.raises(ConfigMismatchError, match="created with the native MaxSim"):
                multivec.connect(_with_option(milvus_server, "native=none"), native_name)
            with pytest.raises(ConfigMismatchError, match="created without the native MaxSim"):
                multivec.connect(native_uri, plain_name)
        finally:
            for col in (plain, native):
                col.drop()
                col.close()

    def test_native_scores_are_exact_maxsim_and_filtered(self, milvus_server: str) -> None:
        """Milvus's MAX_SIM_IP scores equal MaxSim over the stored tokens; filters apply."""
        uri = _with_option(milvus_server, "native=maxsim")
        col = multivec.connect(uri, f"m_{uuid.uuid4().hex[:12]}", dim=DIM, fde=SMALL_FDE)
        try:
            ids, vectors, metadata = make_corpus(40)
            col.upsert(ids, vectors, metadata)
            query = np.random.default_rng(3).normal(size=(3, DIM)).astype(np.float32)
            got = col.search(query, k=5, mode="native")
            for hit in got:
                stored = col.get([hit.id])[0].vectors.astype(np.float32)
                want = float((query @ stored.T).max(axis=1).sum())
                np.testing.assert_allclose(hit.score, want, rtol=2e-3, atol=1e-4)
            english = col.search(query, k=40, mode="native", filter=Field("lang") == "en")
            assert english.ids
            assert all(m["lang"] == "en" for m in (h.metadata for h in english))
        finally:
            col.drop()
            col.close()

    def test_too_many_tokens_write_nothing(self, milvus_server: str) -> None:
        """A document over the StructArray capacity (4,096 tokens) is refused before writing."""
        uri = _with_option(milvus_server, "native=maxsim")
        col = multivec.connect(uri, f"m_{uuid.uuid4().hex[:12]}", dim=DIM, fde=SMALL_FDE)
        try:
            with pytest.raises(InvalidInputError, match="4097 tokens, over the 4096"):
                col.upsert(["short", "long"], [np.ones((2, DIM)), np.ones((4097, DIM))])
            assert col.count() == 0
        finally:
            col.drop()
            col.close()


@pytest.fixture(scope="module")
def lite_grpc_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``milvus://`` to Milvus Lite's own gRPC server: the server code path, without Docker."""
    with MilvusLiteServer(str(tmp_path_factory.mktemp("milvus-grpc") / "data")) as server:
        yield server.uri


def test_native_maxsim_is_refused_by_a_lite_grpc_server(lite_grpc_uri: str, name: str) -> None:
    """A milvus:// URI served by Milvus Lite is recognised by its version and refused."""
    with pytest.raises(ConfigurationError, match="Milvus Lite has no StructArray"):
        multivec.connect(_with_option(lite_grpc_uri, "native=maxsim"), name, dim=DIM)
    col = multivec.connect(lite_grpc_uri, name, dim=DIM, fde=SMALL_FDE)
    try:
        assert col.count() == 0
        assert col.backend.supports_native_multivector is False
    finally:
        col.drop()
        col.close()


def test_a_server_that_drops_the_struct_field_is_detected(
    lite_grpc_uri: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Create checks the schema Milvus kept; a collection without tokens_mv is not left behind.

    Milvus Lite's gRPC server creates the collection without the StructArray and fails only on
    its index; with the version check bypassed, it stands in for any server that does so.
    """
    layout = milvus_module._NativeLayout(DataType.FLOAT_VECTOR, 4096)
    monkeypatch.setattr(milvus_module, "_native_layout", lambda dtype, version: layout)
    with pytest.raises(ConfigurationError, match="created no 'tokens_mv' StructArray"):
        multivec.connect(_with_option(lite_grpc_uri, "native=maxsim"), name, dim=DIM)
    with pytest.raises(CollectionNotFoundError):
        multivec.connect(lite_grpc_uri, name)


def test_lite_refuses_a_write_past_what_its_compaction_can_merge(
    lite_uri: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past _LITE_MAX_BYTES a Lite collection would break on compaction: the write is refused."""
    col = multivec.connect(lite_uri, name, dim=DIM, fde=SMALL_FDE)
    try:
        ids, vectors, metadata = make_corpus(12)
        col.upsert(ids[:9], vectors[:9], metadata[:9])
        monkeypatch.setattr(milvus_module, "_MAX_ROWS", 4)  # counting pages through 9 rows
        stored = col.backend._stored_bytes()  # type: ignore[attr-defined]
        sizes = [r["size"] for r in col.backend._query("", ["size"], 100)]  # type: ignore[attr-defined]
        assert stored == sum(sizes)
        monkeypatch.setattr(milvus_module, "_LITE_MAX_BYTES", stored + 1)
        col.backend._lite_bytes = None  # type: ignore[attr-defined]
        with pytest.raises(CapacityError, match=r"Milvus Lite collection .* over the"):
            col.upsert(ids[9:], vectors[9:], metadata[9:])
        assert col.count() == 9
        col.upsert(ids[:3], vectors[:3], metadata[:3])  # replacing stored documents adds nothing
    finally:
        col.drop()


@pytest.mark.parametrize(
    ("version", "nullable"),
    [(None, True), ("v2.3.5-lite", False), ("v2.4.23", False), ("v2.5.0", True), ("v2.6.22", True)],
)
def test_text_is_nullable_from_milvus_25(version: str | None, nullable: bool) -> None:
    assert milvus_module._nullable_text(version) is nullable
    schema, _ = milvus_module._schema(_info(), "HNSW", None, nullable)
    described = _described(schema)
    assert bool(described["fields"][-1].get("nullable")) is nullable
    assert milvus_module._stored_nullable_text(described) is nullable
