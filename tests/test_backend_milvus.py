"""Milvus: the conformance suite on Milvus Lite and on a server, plus Milvus-specific checks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="the milvus extra is not installed")

import multivec
from multivec import Field
from multivec.backends import milvus as milvus_module
from multivec.backends._codec import CHUNK_CHARS
from multivec.errors import (
    BackendError,
    ConfigurationError,
    InvalidFilterError,
    InvalidInputError,
)
from multivec.testing import DIM, SMALL_FDE, BackendConformance, make_corpus
from multivec.testing.servers import server_uri


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
    from multivec._models import CollectionInfo
    from multivec._uri import URI

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
