"""The conformance suite every backend runs: subclass it and give it a URI.

A backend's whole test module is a few lines::

    import pytest
    from multivec.testing import BackendConformance

    class TestLanceDB(BackendConformance):
        @pytest.fixture
        def uri(self, tmp_path):
            return f"lancedb://{tmp_path}"

Each test starts from an empty, uniquely named collection and drops it afterwards. Search results
are compared with the in-memory backend (brute force, the reference) on the same data, tolerating
ties. When a test fails, its docstring says what the backend got wrong.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import multivec
from multivec import Collection, Field, Filter
from multivec._validation import id_to_key
from multivec.errors import (
    CollectionNotFoundError,
    ConfigMismatchError,
    ConfigurationError,
    DimensionMismatchError,
    InvalidIdError,
    InvalidInputError,
    InvalidMetadataError,
    InvalidVectorsError,
)
from multivec.muvera import FDEConfig

__all__ = ["BackendConformance", "assert_same_topk", "make_corpus"]

DIM = 16
# A small FDE keeps the suite fast; the encoding itself is tested elsewhere.
SMALL_FDE = FDEConfig(
    dim=DIM,
    repetitions=4,
    simhash_projections=3,
    projection="countsketch",
    projection_dim=8,
    fill_empty=True,
)
_LANGS = ["en", "de", "fr"]


def make_corpus(
    n: int = 60, seed: int = 0
) -> tuple[list[Any], list[npt.NDArray[np.float32]], list[dict[str, Any]]]:
    """Seeded documents with mixed str/int ids, varied lengths and filterable metadata."""
    rng = np.random.default_rng(seed)
    ids: list[Any] = [f"doc-{i}" if i % 3 else i * 1000 for i in range(n)]
    vectors = []
    for _ in range(n):
        m = rng.normal(size=(int(rng.integers(1, 12)), DIM)).astype(np.float32)
        vectors.append(m / np.linalg.norm(m, axis=1, keepdims=True))
    metadata = [
        {
            "lang": _LANGS[i % 3],
            "year": 2000 + i % 25,
            "score": i / 7,
            "draft": i % 4 == 0,
            "tags": ["t" + str(i % 5), "all"],
            **({"opt": "x"} if i % 2 else {}),
        }
        for i in range(n)
    ]
    return ids, vectors, metadata


def assert_same_topk(
    got: list[tuple[Any, float]], want: list[tuple[Any, float]], rtol: float = 1e-3
) -> None:
    """Assert two ranked lists agree, allowing ties to swap places.

    Scores must match position by position; ids must match except among entries whose score ties
    (within ``rtol``) with the last included score, where any tied id is acceptable.
    """
    assert len(got) == len(want), f"got {len(got)} hits, expected {len(want)}"
    g_scores = np.array([s for _, s in got])
    w_scores = np.array([s for _, s in want])
    np.testing.assert_allclose(g_scores, w_scores, rtol=rtol, atol=1e-4)
    if not want:
        return
    cutoff = w_scores[-1]
    tied = np.isclose(w_scores, cutoff, rtol=rtol, atol=1e-4)
    assert {i for (i, _), t in zip(got, tied, strict=True) if not t} == {
        i for (i, _), t in zip(want, tied, strict=True) if not t
    }


class BackendConformance:
    """Tests every backend must pass. Subclasses provide the ``uri`` fixture."""

    @pytest.fixture
    def uri(self) -> str:
        """The URI of the backend under test; subclasses override this fixture."""
        raise NotImplementedError("subclasses provide a uri fixture")

    @pytest.fixture
    def collection(self, uri: str) -> Iterator[Collection]:
        """A fresh, empty collection, dropped after the test."""
        col = multivec.connect(uri, f"t_{uuid.uuid4().hex[:12]}", dim=DIM, fde=SMALL_FDE)
        try:
            yield col
        finally:
            col.drop()
            col.close()

    @pytest.fixture
    def loaded(self, collection: Collection) -> tuple[Collection, Collection]:
        """The corpus stored in the backend under test and in the in-memory reference."""
        ids, vectors, metadata = make_corpus()
        texts = [f"text {i}" for i in ids]
        ref = multivec.connect(f"memory://ref-{uuid.uuid4().hex}", "ref", dim=DIM, fde=SMALL_FDE)
        for col in (collection, ref):
            col.upsert(ids, vectors, metadata, texts=texts)
        return collection, ref

    # --- configuration ---------------------------------------------------------------------

    def test_configuration_is_stored_and_reused(self, uri: str, collection: Collection) -> None:
        """Reopening without arguments must return the configuration stored in the database."""
        reopened = multivec.connect(uri, collection.name)
        assert reopened.info == collection.info
        assert reopened.info.fde == SMALL_FDE

    def test_mismatched_configuration_is_refused(self, uri: str, collection: Collection) -> None:
        """Opening with another dim, dtype or FDE must raise, not silently mix encodings."""
        with pytest.raises(ConfigMismatchError):
            multivec.connect(uri, collection.name, dim=DIM + 1)
        with pytest.raises(ConfigMismatchError):
            multivec.connect(uri, collection.name, dtype="float32")
        with pytest.raises(ConfigMismatchError):
            multivec.connect(uri, collection.name, fde=SMALL_FDE.model_copy(update={"seed": 99}))

    def test_missing_collection_without_dim(self, uri: str) -> None:
        """Opening a collection that does not exist, without dim=, must say so."""
        with pytest.raises(CollectionNotFoundError):
            multivec.connect(uri, f"absent_{uuid.uuid4().hex[:8]}")

    # --- CRUD ------------------------------------------------------------------------------

    def test_round_trip_ids_metadata_text_and_vectors(self, collection: Collection) -> None:
        """Ids (str and int), metadata, text and float16 token values must come back exactly."""
        ids, vectors, metadata = make_corpus(12)
        ids[1] = 2**64 - 1
        ids[2] = -(2**63)
        ids[4] = "ünïcødé/with spaces?&'\""
        metadata[0] = {
            "nested": {"a": [1, 2.5, None, {"b": True}]},
            "f": 1.0,
            "big": 2**62,
            "e": "☃",
        }
        collection.upsert(ids, vectors, metadata, texts=[f"t{i}" for i in range(12)])
        docs = collection.get(ids)
        assert [d.id for d in docs] == ids
        assert [type(d.id) for d in docs] == [type(i) for i in ids]
        for doc, vec, meta, i in zip(docs, vectors, metadata, range(12), strict=True):
            assert doc.metadata == meta
            assert doc.text == f"t{i}"
            assert doc.vectors.dtype == np.float16
            np.testing.assert_array_equal(doc.vectors, vec.astype(np.float16))

    def test_str_and_int_ids_are_distinct(self, collection: Collection) -> None:
        """The string "1" and the integer 1 are different documents."""
        _, vectors, _ = make_corpus(2)
        collection.upsert(["1", 1], vectors)
        assert collection.count() == 2
        assert [d.id for d in collection.get([1, "1"])] == [1, "1"]

    def test_upsert_replaces_never_duplicates(self, collection: Collection) -> None:
        """Upserting an existing id replaces the document; the count must not grow."""
        ids, vectors, metadata = make_corpus(10)
        collection.upsert(ids, vectors, metadata)
        collection.upsert(ids[:5], vectors[5:], [{"v": 2}] * 5)
        assert collection.count() == 10
        for doc, vec in zip(collection.get(ids[:5]), vectors[5:], strict=True):
            assert doc.metadata == {"v": 2}
            np.testing.assert_array_equal(doc.vectors, vec.astype(np.float16))

    def test_concurrent_upserts_all_land(self, collection: Collection) -> None:
        """Upserts from several threads at once (a migration's writers) must all be stored."""
        ids, vectors, metadata = make_corpus(40)
        with ThreadPoolExecutor(4) as pool:
            done = [
                pool.submit(collection.upsert, ids[i::4], vectors[i::4], metadata[i::4])
                for i in range(4)
            ]
            for future in done:
                future.result()
        assert collection.count() == 40
        stored = {id_to_key(d.id): d for batch in collection.iter_documents(16) for d in batch}
        assert stored.keys() == {id_to_key(i) for i in ids}
        for doc_id, vec, meta in zip(ids, vectors, metadata, strict=True):
            np.testing.assert_array_equal(stored[id_to_key(doc_id)].vectors, vec.astype(np.float16))
            assert stored[id_to_key(doc_id)].metadata == meta

    def test_delete_and_count(self, collection: Collection) -> None:
        """Deleted documents disappear from count, get, iteration and search.

        Unknown ids are ignored.
        """
        ids, vectors, _ = make_corpus(10)
        collection.upsert(ids, vectors)
        collection.delete([ids[0], ids[3], "never-stored"])
        assert collection.count() == 8
        assert collection.get([ids[0], ids[1]])[0].id == ids[1]
        remaining = {d.id for batch in collection.iter_documents(3) for d in batch}
        assert remaining == set(ids) - {ids[0], ids[3]}
        assert ids[0] not in collection.search(vectors[0], k=10).ids

    def test_read_your_writes(self, collection: Collection) -> None:
        """A search right after an upsert must see the new document."""
        _, vectors, _ = make_corpus(5)
        for i, vec in enumerate(vectors):
            collection.upsert([f"w{i}"], [vec])
            assert collection.search(vec, k=1).ids == [f"w{i}"]

    def test_iteration_covers_everything_once_and_resumes(self, collection: Collection) -> None:
        """Iteration must yield every document once, and resume after any id with any batch size."""
        ids, vectors, metadata = make_corpus(23)
        collection.upsert(ids, vectors, metadata)
        seen = [d.id for batch in collection.iter_documents(batch_size=4) for d in batch]
        assert sorted(map(str, seen)) == sorted(map(str, ids))
        assert len(seen) == len(set(map(str, seen)))
        resumed = [
            d.id
            for batch in collection.iter_documents(batch_size=7, start_after=seen[9])
            for d in batch
        ]
        assert resumed == seen[10:]

    def test_given_fdes_are_stored_and_read_back(self, collection: Collection) -> None:
        """FDEs given to upsert are the ones searched and iterated, not encoded ones."""
        ids, vectors, _ = make_corpus(6)
        rng = np.random.default_rng(7)
        fdes = rng.normal(size=(len(ids), collection.info.fde_dim)).astype(np.float32)
        collection.upsert(ids, vectors, fdes=fdes)
        batches = list(collection.iter_with_fdes(batch_size=4))
        got = {str(d.id): row for docs, rows in batches for d, row in zip(docs, rows, strict=True)}
        for doc_id, fde in zip(ids, fdes, strict=True):
            np.testing.assert_array_equal(got[str(doc_id)], fde)
        # The first stage ranks by the given FDEs: the query equal to FDE 3 finds document 3.
        refs, _ = collection.backend.ann(fdes[3], 1, None)
        assert collection.backend.fetch(refs, with_metadata=False).keys == [id_to_key(ids[3])]

    def test_bad_fdes_write_nothing(self, collection: Collection) -> None:
        """FDEs of the wrong shape or with NaN are refused before anything is written."""
        ids, vectors, _ = make_corpus(3)
        bad = np.zeros((3, collection.info.fde_dim + 1), dtype=np.float32)
        with pytest.raises(InvalidInputError, match="fdes must be"):
            collection.upsert(ids, vectors, fdes=bad)
        nan = np.full((3, collection.info.fde_dim), np.nan, dtype=np.float32)
        with pytest.raises(InvalidInputError, match="NaN"):
            collection.upsert(ids, vectors, fdes=nan)
        assert collection.count() == 0

    # --- search ----------------------------------------------------------------------------

    @pytest.mark.parametrize("candidates", [5, 20, 1000])
    def test_search_agrees_with_reference(
        self, loaded: tuple[Collection, Collection], candidates: int
    ) -> None:
        """Top-k (ids and exact scores) must equal the in-memory reference, ties aside."""
        col, ref = loaded
        rng = np.random.default_rng(1)
        for _ in range(5):
            query = rng.normal(size=(int(rng.integers(1, 6)), DIM)).astype(np.float32)
            got = col.search(query, k=5, candidates=candidates)
            want = ref.search(query, k=5, candidates=candidates)
            assert_same_topk(
                list(zip(got.ids, got.scores, strict=True)),
                list(zip(want.ids, want.scores, strict=True)),
            )
            if col.backend.engine_rerank:
                # The database scored its own candidates and neither names nor counts them.
                continue
            assert got.candidates == want.candidates
            assert len(got.candidate_ids) == got.candidates
            if candidates >= ref.count():
                assert set(got.candidate_ids) == set(want.candidate_ids)

    def test_search_after_optimize_agrees_with_reference(self, collection: Collection) -> None:
        """After optimize() (compaction, index builds) results must not change.

        Documents written after it must be found too.
        """
        ids, vectors, metadata = make_corpus(400, seed=3)
        ref = multivec.connect(f"memory://ref-{uuid.uuid4().hex}", "ref", dim=DIM, fde=SMALL_FDE)
        for col in (collection, ref):
            col.upsert(ids[:300], vectors[:300], metadata[:300])
        collection.optimize()
        for col in (collection, ref):
            col.upsert(ids[300:], vectors[300:], metadata[300:])
        rng = np.random.default_rng(4)
        for _ in range(5):
            query = rng.normal(size=(4, DIM)).astype(np.float32)
            got = collection.search(query, k=10, candidates=50, filter=Field("year") > 2003)
            want = ref.search(query, k=10, candidates=50, filter=Field("year") > 2003)
            assert_same_topk(
                list(zip(got.ids, got.scores, strict=True)),
                list(zip(want.ids, want.scores, strict=True)),
            )
        assert collection.count() == 400

    def test_native_modes(self, loaded: tuple[Collection, Collection]) -> None:
        """Native scoring, where declared, must rank like exact MaxSim (unit-norm vectors).

        Where it is not declared, asking for it must raise a clear error.
        """
        col, ref = loaded
        rng = np.random.default_rng(5)
        query = rng.normal(size=(3, DIM)).astype(np.float32)
        query /= np.linalg.norm(query, axis=1, keepdims=True)
        want = ref.search(query, k=5, candidates=1000)
        backend = col.backend
        for mode, supported in (
            ("native", backend.supports_native_multivector),
            ("native-prefetch", backend.supports_native_prefetch),
        ):
            if not supported:
                with pytest.raises(ConfigurationError, match="native"):
                    col.search(query, k=5, mode=mode)  # type: ignore[arg-type]
                continue
            got = col.search(query, k=5, candidates=1000, mode=mode)  # type: ignore[arg-type]
            assert_same_topk(
                list(zip(got.ids, got.scores, strict=True)),
                list(zip(want.ids, want.scores, strict=True)),
                rtol=2e-3,
            )
            assert got[0].metadata == next(h.metadata for h in want if h.id == got[0].id)

    def test_hits_carry_metadata_text_and_timings(
        self, loaded: tuple[Collection, Collection]
    ) -> None:
        """Hits must carry the stored metadata and text; all stage timings must be measured.

        A rerank inside the database is timed with the first stage, in the same request.
        """
        col, _ = loaded
        ids, vectors, metadata = make_corpus()
        result = col.search(vectors[4], k=3)
        assert result.ids[0] == ids[4]
        assert result[0].metadata == metadata[4]
        assert result[0].text == f"text {ids[4]}"
        t = result.timings
        assert min(t.encode, t.ann, t.fetch) > 0
        assert t.rerank == 0 if col.backend.engine_rerank else t.rerank > 0

    FILTERS: tuple[Filter, ...] = (
        Field("lang") == "en",
        Field("lang") != "en",
        Field("year") >= 2010,
        Field("year").between(2003, 2007),
        (Field("score") > 2.5) & (Field("score") < 5),
        Field("lang").isin(["de", "fr"]),
        Field("lang").not_in(["de"]),
        Field("draft") == True,  # noqa: E712 (builds a filter, not a comparison)
        Field("opt").exists(),
        ~Field("opt").exists(),
        Field("tags").contains("t2"),
        (Field("lang") == "en") | (Field("year") < 2003),
        ~((Field("lang") == "de") & (Field("year") > 2010)),
        Field("missing") == 1,
        Field("year") == 2005,
        Field("lang") == 5,
    )

    @pytest.mark.parametrize("flt", FILTERS, ids=[repr(f)[:60] for f in FILTERS])
    def test_filters_agree_with_reference(
        self, loaded: tuple[Collection, Collection], flt: Filter
    ) -> None:
        """A filter must select exactly what Filter.matches selects, inside the ANN stage."""
        col, ref = loaded
        ids, vectors, metadata = make_corpus()
        expected = {i for i, m in zip(ids, metadata, strict=True) if flt.matches(m)}
        got = col.search(vectors[0], k=len(ids), candidates=len(ids), filter=flt)
        assert set(got.ids) == expected
        want = ref.search(vectors[0], k=5, candidates=10, filter=flt)
        got5 = col.search(vectors[0], k=5, candidates=10, filter=flt)
        assert_same_topk(
            list(zip(got5.ids, got5.scores, strict=True)),
            list(zip(want.ids, want.scores, strict=True)),
        )

    def test_dict_filter_equals_builder(self, loaded: tuple[Collection, Collection]) -> None:
        """The dict form of a filter must select the same documents as the builder form."""
        col, _ = loaded
        _, vectors, _ = make_corpus()
        a = col.search(
            vectors[0], k=60, candidates=60, filter={"lang": "en", "year": {"$gte": 2010}}
        )
        b = col.search(
            vectors[0],
            k=60,
            candidates=60,
            filter=(Field("lang") == "en") & (Field("year") >= 2010),
        )
        assert a.ids == b.ids

    # --- bad input -------------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("vectors", "error"),
        [
            ([np.ones((3, DIM + 1))], DimensionMismatchError),
            ([np.full((2, DIM), np.nan)], InvalidVectorsError),
            ([np.full((2, DIM), np.inf)], InvalidVectorsError),
            ([np.full((2, DIM), 1e6)], InvalidVectorsError),  # overflows float16
            ([np.ones((0, DIM))], InvalidVectorsError),
            ([np.ones(DIM)], InvalidVectorsError),
        ],
        ids=["wrong-dim", "nan", "inf", "float16-overflow", "empty", "1-d"],
    )
    def test_bad_vectors_write_nothing(
        self, collection: Collection, vectors: list[Any], error: type[Exception]
    ) -> None:
        """A batch with one bad document must raise and leave the collection unchanged."""
        good = [np.ones((2, DIM), dtype=np.float32)]
        with pytest.raises(error):
            collection.upsert(["good", "bad"], good + vectors)
        assert collection.count() == 0

    @pytest.mark.parametrize(
        ("ids", "error"),
        [
            ([1.5], InvalidIdError),
            ([True], InvalidIdError),
            ([None], InvalidIdError),
            ([""], InvalidIdError),
            ([2**64], InvalidIdError),
            (["x" * 600], InvalidIdError),
        ],
        ids=["float", "bool", "none", "empty", "too-big", "too-long"],
    )
    def test_bad_ids(self, collection: Collection, ids: list[Any], error: type[Exception]) -> None:
        """Unsupported ids must be refused with a clear error."""
        with pytest.raises(error):
            collection.upsert(ids, [np.ones((1, DIM))])

    def test_duplicate_ids_in_a_batch(self, collection: Collection) -> None:
        """Duplicate ids in one batch must be refused (which copy wins would be undefined)."""
        with pytest.raises(InvalidIdError, match="duplicate"):
            collection.upsert(["a", "a"], [np.ones((1, DIM))] * 2)

    @pytest.mark.parametrize(
        "meta",
        [
            {"x": float("nan")},
            {"x": (1, 2)},
            {1: "a"},
            {"x": {1, 2}},
            {"x": b"bytes"},
            "not a dict",
        ],
        ids=["nan", "tuple", "int-key", "set", "bytes", "str"],
    )
    def test_bad_metadata(self, collection: Collection, meta: Any) -> None:
        """Metadata that is not a JSON object must be refused and nothing written."""
        with pytest.raises(InvalidMetadataError):
            collection.upsert(["a"], [np.ones((1, DIM))], [meta])
        assert collection.count() == 0

    def test_bad_query(self, loaded: tuple[Collection, Collection]) -> None:
        """Queries of the wrong width, empty, or with NaN must raise."""
        col, _ = loaded
        for query, error in [
            (np.ones((2, DIM + 3)), DimensionMismatchError),
            (np.ones((0, DIM)), InvalidVectorsError),
            (np.full((2, DIM), np.nan), InvalidVectorsError),
        ]:
            with pytest.raises(error):
                col.search(query)

    def test_large_batch_is_split_by_bytes(self, collection: Collection) -> None:
        """A batch larger than one request must be split and fully written."""
        collection._request_bytes = 4096  # force many small requests
        ids = list(range(50))
        vectors = [np.ones((10, DIM), dtype=np.float32) * (i + 1) / 50 for i in ids]
        collection.upsert(ids, vectors)
        assert collection.count() == 50
