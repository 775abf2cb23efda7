import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import multivec
from multivec.errors import BackendError, ConfigurationError
from multivec.testing import DIM, SMALL_FDE, BackendConformance, assert_same_topk, make_corpus
from multivec.testing.servers import server_uri

pytest.importorskip("qdrant_client", reason="the qdrant extra is not installed")

from multivec.backends.qdrant import point_id


class TestQdrantEdge(BackendConformance):
    @pytest.fixture
    def uri(self, tmp_path: Path) -> str:
        pytest.importorskip("qdrant_edge", reason="qdrant-edge-py is not installed")
        return f"qdrant+edge://{tmp_path}"


class TestQdrantEdgeClientRerank(BackendConformance):
    """The same suite with the candidates fetched and scored here instead of inside Qdrant."""

    @pytest.fixture
    def uri(self, tmp_path: Path) -> str:
        pytest.importorskip("qdrant_edge", reason="qdrant-edge-py is not installed")
        return f"qdrant+edge://{tmp_path}?rerank=client"


class TestQdrantLocalMemory(BackendConformance):
    @pytest.fixture
    def uri(self) -> str:
        return "qdrant+local://:memory:"


class TestQdrantLocalPath(BackendConformance):
    @pytest.fixture
    def uri(self, tmp_path: Path) -> str:
        return f"qdrant+local://{tmp_path}"


class TestQdrantLocalEngineRerank(BackendConformance):
    """Local mode reranks here by default; its in-engine path stays available and correct."""

    @pytest.fixture
    def uri(self, tmp_path: Path) -> str:
        return f"qdrant+local://{tmp_path}?rerank=engine"


@pytest.fixture(scope="module")
def qdrant_server() -> Iterator[str]:
    with server_uri("qdrant") as uri:
        yield uri


@pytest.mark.server
class TestQdrantServer(BackendConformance):
    @pytest.fixture
    def uri(self, qdrant_server: str) -> str:
        return qdrant_server


def test_point_ids_are_stable_uuids() -> None:
    assert point_id("s:a") == point_id("s:a")
    assert point_id("s:1") != point_id("i:1")
    # A fixed namespace: the mapping must never change between releases.
    assert uuid.UUID(point_id("s:doc")).version == 5
    assert point_id("i:0") == str(uuid.UUID(point_id("i:0")))


@pytest.mark.parametrize("flavour", ["edge", "local"])
def test_awkward_ids_round_trip(tmp_path: Path, flavour: str) -> None:
    if flavour == "edge":
        pytest.importorskip("qdrant_edge", reason="qdrant-edge-py is not installed")
    col = multivec.connect(f"qdrant+{flavour}://{tmp_path}", "ids", dim=DIM, fde=SMALL_FDE)
    ids = [
        "936DA01F9ABD4d9d80C702AF85C822A8",  # a UUID Qdrant would normalise
        str(uuid.uuid4()),
        2**64 - 1,
        0,
        "0",
        -(2**63),
    ]
    _, vectors, _ = make_corpus(len(ids))
    col.upsert(ids, vectors)
    assert [d.id for d in col.get(ids)] == ids
    assert sorted(map(str, (d.id for b in col.iter_documents(2) for d in b))) == sorted(
        map(str, ids)
    )
    col.drop()
    col.close()


def test_edge_shard_reopens_from_disk(tmp_path: Path) -> None:
    pytest.importorskip("qdrant_edge", reason="qdrant-edge-py is not installed")
    uri = f"qdrant+edge://{tmp_path}"
    ids, vectors, metadata = make_corpus(20)
    col = multivec.connect(uri, "persist", dim=DIM, fde=SMALL_FDE)
    col.upsert(ids, vectors, metadata)
    col.close()  # the last handle: the shard is flushed and closed
    again = multivec.connect(uri, "persist")
    assert again.count() == 20
    doc = again.get([ids[3]])[0]
    assert doc.metadata == metadata[3]
    np.testing.assert_array_equal(doc.vectors, vectors[3].astype(np.float16))
    assert again.search(vectors[5], k=1).ids == [ids[5]]
    again.close()


def test_filter_on_unpathable_field_is_refused() -> None:
    col = multivec.connect("qdrant+local://:memory:", "badfield", dim=DIM, fde=SMALL_FDE)
    _, vectors, _ = make_corpus(1)
    col.upsert(["a"], vectors, [{"a.b": 1}])
    assert col.get(["a"])[0].metadata == {"a.b": 1}
    with pytest.raises(multivec.errors.InvalidFilterError, match="key syntax"):
        col.search(vectors[0], filter=multivec.Field("a.b") == 1)
    col.drop()


@pytest.mark.parametrize("flavour", ["edge", "local"])
def test_type_edge_cases_agree_with_matches(tmp_path: Path, flavour: str) -> None:
    if flavour == "edge":
        pytest.importorskip("qdrant_edge", reason="qdrant-edge-py is not installed")
    F = multivec.Field
    metas = [
        {"v": 1},
        {"v": 1.0},
        {"v": True},
        {"v": [1]},
        {"v": "1"},
        {"v": []},
        {"v": None},
        {"v": {}},
        {"v": [True]},
        {"v": False},
        {},
    ]
    ids = list(range(len(metas)))
    _, vectors, _ = make_corpus(len(ids))
    col = multivec.connect(f"qdrant+{flavour}://{tmp_path}", "types", dim=DIM, fde=SMALL_FDE)
    col.upsert(ids, vectors, metas)
    for flt in [
        F("v") == 1,
        F("v") == True,  # noqa: E712 (builds a filter)
        F("v") == False,  # noqa: E712
        F("v") == "1",
        F("v") >= 1,
        F("v").isin([1, "1", True]),
        F("v").contains(1),
        F("v").contains(True),
        F("v").exists(),
        ~F("v").exists(),
        F("v") != 1,
    ]:
        want = {i for i, m in zip(ids, metas, strict=True) if flt.matches(m)}
        got = set(col.search(vectors[0], k=len(ids), candidates=len(ids), filter=flt).ids)
        assert got == want, flt
    col.drop()
    col.close()


@pytest.mark.parametrize("grpc", ["true", "false"])
def test_unreachable_server_raises_unavailable(grpc: str) -> None:
    # Port 9 (discard) is closed here: every try fails fast, then the retries give up.
    with pytest.raises(multivec.errors.BackendUnavailableError, match=r"127\.0\.0\.1"):
        multivec.connect(f"qdrant://127.0.0.1:9?grpc_port=9&prefer_grpc={grpc}", "x", dim=DIM)


def test_token_payload_matches_the_multivector(tmp_path: Path) -> None:
    """The payload copy that multivec reads holds exactly the values Qdrant's MaxSim scores."""
    pytest.importorskip("qdrant_edge", reason="qdrant-edge-py is not installed")
    col = multivec.connect(f"qdrant+edge://{tmp_path}", "c", dim=DIM, fde=SMALL_FDE)
    try:
        vec = np.random.default_rng(3).normal(size=(5, DIM))
        col.upsert(["a"], [vec])
        backend = col.backend
        (record,) = backend._shard().retrieve(  # type: ignore[attr-defined]
            point_ids=[point_id("s:a")], with_payload=False, with_vector=["mv"]
        )
        stored = np.asarray(record.vector["mv"], dtype=np.float32)
        np.testing.assert_array_equal(stored, vec.astype(np.float16).astype(np.float32))
        np.testing.assert_array_equal(col.get(["a"])[0].vectors, vec.astype(np.float16))
    finally:
        col.drop()


def test_points_without_the_token_payload_are_reported() -> None:
    """A point written by another tool (no '_v') fails loudly instead of scoring garbage."""
    col = multivec.connect(
        "qdrant+local://:memory:", f"c{uuid.uuid4().hex}", dim=DIM, fde=SMALL_FDE
    )
    try:
        col.upsert(["a"], [np.ones((2, DIM))])
        api = col.backend._api()  # type: ignore[attr-defined]
        api.delete_payload(col.name, keys=["_v"], points=[point_id("s:a")])
        with pytest.raises(BackendError, match="no token payload"):
            col.get(["a"])
    finally:
        col.drop()


def test_int8_fde_search_keeps_the_results(tmp_path: Path) -> None:
    """The int8 FDE index (the default) finds the same top hits as float32 FDEs after rerank."""
    pytest.importorskip("qdrant_edge", reason="qdrant-edge-py is not installed")
    ids, vectors, metadata = make_corpus(300)
    hits = {}
    for quantization in ("int8", "none"):
        col = multivec.connect(
            f"qdrant+edge://{tmp_path}/{quantization}?quantization={quantization}",
            "q",
            dim=DIM,
            fde=SMALL_FDE,
        )
        col.upsert(ids, vectors, metadata)
        col.optimize()
        hits[quantization] = [col.search(v, k=5, candidates=60).ids for v in vectors[:20]]
        col.close()
    agree = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(*hits.values(), strict=True)])
    assert agree >= 0.95, agree


def test_unknown_quantization_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="quantization must be"):
        multivec.connect(f"qdrant+edge://{tmp_path}?quantization=pq", "q", dim=DIM)


def test_unknown_rerank_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="rerank must be"):
        multivec.connect(f"qdrant+edge://{tmp_path}?rerank=gpu", "q", dim=DIM)


def test_engine_and_client_rerank_return_the_same_hits_and_scores(tmp_path: Path) -> None:
    """Qdrant's MaxSim over its candidates equals multivec's over the fetched tokens.

    Up to rounding: Qdrant rounds the query to the float16 of the stored tokens (scores
    differed by up to 7e-5 relative here), so near-ties may swap.
    """
    pytest.importorskip("qdrant_edge", reason="qdrant-edge-py is not installed")
    ids, vectors, metadata = make_corpus(300, seed=7)
    col = multivec.connect(f"qdrant+edge://{tmp_path}", "r", dim=DIM, fde=SMALL_FDE)
    col.upsert(ids, vectors, metadata)
    col.optimize()
    client = multivec.connect(f"qdrant+edge://{tmp_path}?rerank=client", "r")
    assert col.backend.engine_rerank
    assert not client.backend.engine_rerank
    for query in vectors[:15]:
        engine = col.search(query, k=5, candidates=60, filter={"draft": False})
        here = client.search(query, k=5, candidates=60, filter={"draft": False})
        assert engine.timings.rerank == 0.0
        assert not engine.candidate_ids
        assert len(here.candidate_ids) == 60
        assert_same_topk(
            list(zip(engine.ids, engine.scores, strict=True)),
            list(zip(here.ids, here.scores, strict=True)),
        )
        np.testing.assert_allclose(engine.scores, here.scores, rtol=2e-4)
        by_id = {h.id: h.metadata for h in here}
        assert all(h.metadata == by_id[h.id] for h in engine if h.id in by_id)
    client.close()
    col.close()


def test_local_mode_scores_queries_in_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local mode receives the float32 query itself, FDE and token search alike.

    A validated query reaches local mode as Python floats, and it then upcasts every stored
    vector to float64 on each search (about 9x slower). This watches the real scoring calls.
    """
    from qdrant_client.local import distances

    seen: list[np.dtype] = []
    dot_product = distances.dot_product

    def watched(query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        seen.append(query.dtype)
        return dot_product(query, vectors)

    monkeypatch.setattr(distances, "dot_product", watched)
    ids, vectors, metadata = make_corpus(40)
    col = multivec.connect("qdrant+local://:memory:", "f", dim=DIM, fde=SMALL_FDE)
    col.upsert(ids, vectors, metadata)
    assert col.search(vectors[3], k=3, candidates=20).ids[0] == ids[3]
    assert col.search(vectors[3], k=3, mode="native").ids[0] == ids[3]
    assert col.search(vectors[3], k=3, candidates=20, mode="native-prefetch").ids[0] == ids[3]
    col.close()
    assert seen
    assert all(dtype == np.float32 for dtype in seen), seen
