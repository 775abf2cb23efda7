"""Migration, verification, export/import and the dry run, on real MiniLM token matrices.

The corpus: the first SciFact passages encoded once per session by the offline MiniLM, with
integer and string ids (one non-ASCII), varied metadata and texts (some absent, one empty).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import multivec
from benchmarks._data import REPO_ROOT, minilm_model_dir, scifact_dir
from multivec import Collection
from multivec._export import MANIFEST_NAME, ExportReader
from multivec._migrate import _agree, _Ledger
from multivec._uri import URI
from multivec._validation import id_to_key
from multivec.cli import main
from multivec.errors import (
    CollectionNotFoundError,
    ConfigurationError,
    InvalidInputError,
    MissingDependencyError,
)
from multivec.ingest import default_encoder
from multivec.muvera import FDEConfig, FDEEncoder
from multivec.testing.servers import MilvusLiteServer, embedded_milvus_server, server_uri

pytestmark = pytest.mark.slow

N_DOCS = 48
DIM = 384
FDE = FDEConfig.preset("muvera-1280", dim=DIM)
EMBEDDED = ["memory", "lancedb", "qdrant-edge", "qdrant-local", "milvus-lite"]


@dataclass(frozen=True)
class Corpus:
    ids: list[Any]
    vectors: list[npt.NDArray[np.float32]]
    metadata: list[dict[str, Any]]
    texts: list[str | None]

    def load(self, uri: str, collection: str, **kwargs: Any) -> Collection:
        col = multivec.connect(uri, collection, dim=DIM, fde=kwargs.pop("fde", FDE), **kwargs)
        col.upsert(self.ids, self.vectors, self.metadata, texts=self.texts)
        return col


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    with (scifact_dir() / "corpus.jsonl").open(encoding="utf-8") as src:
        records = [json.loads(line) for line in islice(src, N_DOCS)]
    encoder = default_encoder(minilm_model_dir())
    # Abstracts cut to 600 characters (about 130 tokens) keep every backend quick.
    passages = [f"{r['title']}. {r['text'][:600]}" for r in records]
    vectors = list(encoder.embed(passages, batch_size=16))
    ids: list[Any] = [int(r["_id"]) if i % 2 else f"sf-{r['_id']}" for i, r in enumerate(records)]
    ids[2] = "café-ü-2"
    metadata: list[dict[str, Any]] = []
    for i, r in enumerate(records):
        meta: dict[str, Any] = {"title": r["title"], "n": i, "share": i / 7, "even": i % 2 == 0}
        if i % 3 == 0:
            meta["tags"] = ["scifact", f"t{i % 4}"]
            meta["nested"] = {"a": i, "b": [1.5, "x", None]}
        if i % 5 == 0:
            meta = {}
        metadata.append(meta)
    texts: list[str | None] = [None if i % 6 == 0 else p for i, p in enumerate(passages)]
    texts[7] = ""
    return Corpus(ids, vectors, metadata, texts)


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    # One location per backend for the module: Milvus Lite starts a server per data file.
    base = tmp_path_factory.mktemp("backends")
    return {
        "memory": f"memory://migrate-{uuid.uuid4().hex[:8]}",
        "lancedb": f"lancedb://{base}/lance",
        "qdrant-edge": f"qdrant+edge://{base}/edge",
        "qdrant-local": f"qdrant+local://{base}/local",
        "milvus-lite": f"milvus+lite://{base}/milvus/m.db",
    }


@pytest.fixture(scope="module")
def source(roots: dict[str, str], corpus: Corpus) -> Callable[[str], str]:
    """The corpus in collection ``src`` of a backend, loaded on first use."""
    loaded: set[str] = set()

    def get(kind: str) -> str:
        if kind not in loaded:
            corpus.load(roots[kind], "src").close()
            loaded.add(kind)
        return roots[kind]

    return get


def _name() -> str:
    return f"c_{uuid.uuid4().hex[:10]}"


def _drop(uri: str, collection: str) -> None:
    with multivec.connect(uri, collection) as col:
        col.drop()


# --- every pair of embedded backends ------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "dst"), [(a, b) for a in EMBEDDED for b in EMBEDDED if a != b], ids=str
)
def test_every_pair_round_trips(
    src: str,
    dst: str,
    source: Callable[[str], str],
    roots: dict[str, str],
    corpus: Corpus,
    tmp_path: Path,
) -> None:
    target = _name()
    report = multivec.migrate(
        source(src),
        roots[dst],
        collection="src",
        target_collection=target,
        ledger_dir=tmp_path,
        queries=8,
        batch_bytes=1 << 20,
    )
    try:
        check = report.verification
        assert check is not None
        assert check.ok, check.summary()
        assert check.identical == N_DOCS
        assert report.fde == "copied"
        assert report.documents == report.total_documents == N_DOCS
        assert report.vectors == sum(v.shape[0] for v in corpus.vectors)
        with multivec.connect(roots[dst], target) as col:
            assert col.count() == N_DOCS
            assert col.info.fde == FDE
            # Ids come back with their type: int stays int, str stays str.
            assert [d.id for d in col.get(corpus.ids[:5])] == corpus.ids[:5]
        # Copied: the target's stored FDEs are the source's, bit for bit.
        copied, stored = _stored_fdes(roots[dst], target), _stored_fdes(source(src), "src")
        assert copied.keys() == stored.keys()
        for key, fde in stored.items():
            np.testing.assert_array_equal(copied[key], fde)
    finally:
        _drop(roots[dst], target)


def _stored_fdes(uri: str, collection: str) -> dict[str, npt.NDArray[np.float32]]:
    with multivec.connect(uri, collection) as col:
        return {
            repr(d.id): fde
            for docs, fdes in col.iter_with_fdes(16)
            for d, fde in zip(docs, fdes, strict=True)
        }


def test_stored_fdes_that_do_not_follow_from_the_tokens_are_encoded_again(
    corpus: Corpus, tmp_path: Path
) -> None:
    """A source whose FDEs are not its tokens' (another tool wrote them) is not copied blindly."""
    src = multivec.connect(f"memory://{_name()}", "src", dim=DIM, fde=FDE)
    rng = np.random.default_rng(3)
    wrong = rng.normal(size=(N_DOCS, FDE.fde_dim)).astype(np.float32)
    src.upsert(corpus.ids, corpus.vectors, corpus.metadata, texts=corpus.texts, fdes=wrong)
    target = f"lancedb://{tmp_path}/lance"
    report = multivec.migrate(
        src.backend.uri.render(), target, collection="src", ledger_dir=tmp_path, queries=4
    )
    assert any("encoded again" in note for note in report.notes), report.notes
    fresh = multivec.muvera.FDEEncoder(FDE).encode_documents(
        [v.astype(np.float16).astype(np.float32) for v in corpus.vectors]
    )
    stored = _stored_fdes(target, "src")
    for doc_id, fde in zip(corpus.ids, fresh, strict=True):
        np.testing.assert_allclose(stored[repr(doc_id)], fde, rtol=1e-6, atol=1e-6)


# --- crash and resume ---------------------------------------------------------------------------


def _ledger_documents(directory: Path) -> int:
    files = list(directory.glob("*.json"))
    return json.loads(files[0].read_text())["documents"] if files else 0


@pytest.mark.parametrize("target_kind", ["lancedb", "qdrant-edge"])
def test_sigkill_at_random_points_then_resume(
    target_kind: str, corpus: Corpus, tmp_path: Path
) -> None:
    """Kill the migrating process with SIGKILL repeatedly; the last run must end exact."""
    src = f"lancedb://{tmp_path}/src"
    corpus.load(src, "docs").close()
    tgt = f"lancedb://{tmp_path}/tgt" if target_kind == "lancedb" else f"qdrant+edge://{tmp_path}/q"
    ledger = tmp_path / "ledger"
    cmd = [sys.executable, "-m", "multivec.cli", "migrate", src, tgt, "--collection", "docs"]
    # About one document per batch, so there are many batch boundaries to be killed between.
    cmd += ["--ledger", str(ledger), "--batch-mb", "0.05", "--no-verify", "--no-optimize"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OPENBLAS_THREAD_TIMEOUT": "1"}
    rng = random.Random(20260101 + len(target_kind))
    killed_at: list[int] = []
    for _ in range(6):
        with (tmp_path / "stderr.txt").open("ab") as err:
            proc = subprocess.Popen(
                cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err
            )
        before = _ledger_documents(ledger)
        deadline = time.monotonic() + 60
        while proc.poll() is None and _ledger_documents(ledger) <= before:
            assert time.monotonic() < deadline, "the migration made no progress"
            time.sleep(0.01)
        # Short: the copy itself takes well under a second once started.
        time.sleep(rng.uniform(0.0, 0.08))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed_at.append(_ledger_documents(ledger))
    assert len(killed_at) >= 3, f"only {len(killed_at)} kills landed"
    assert any(0 < n < N_DOCS for n in killed_at), killed_at
    final = subprocess.run(
        [*cmd[:-2], "--json"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert final.returncode == 0, final.stderr[-2000:]
    summary = json.loads(final.stdout)
    assert summary["total_documents"] == N_DOCS
    assert summary["resumed_after"] is not None or summary["already_complete"]
    check = summary["verification"]
    assert check["missing_count"] == check["extra_count"] == check["different_count"] == 0
    assert check["duplicates"] == 0
    assert check["identical"] == check["target_documents"] == N_DOCS


class _StopError(Exception):
    pass


def _stop_after(n: int) -> Callable[[int, int], None]:
    def progress(done: int, total: int) -> None:
        if done >= n:
            raise _StopError

    return progress


def test_resume_after_a_crash_with_other_batch_size_and_workers(
    source: Callable[[str], str], corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tgt, name = f"lancedb://{tmp_path}/t", "docs"
    src = source("lancedb")
    args: dict[str, Any] = {"collection": "src", "target_collection": name, "ledger_dir": tmp_path}
    with pytest.raises(_StopError):
        multivec.migrate(src, tgt, batch_bytes=200_000, progress=_stop_after(10), **args)
    first = _ledger_documents(tmp_path)
    assert 10 <= first < N_DOCS
    report = multivec.migrate(src, tgt, batch_bytes=3 << 20, workers=3, **args)
    assert report.resumed_after is not None
    assert report.documents == N_DOCS - first
    assert report.total_documents == N_DOCS
    assert report.verification is not None
    assert report.verification.ok
    # A finished migration writes nothing when run again.
    writes: list[int] = []
    monkeypatch.setattr(Collection, "_write", lambda self, ids, *a, **k: writes.append(len(ids)))
    again = multivec.migrate(src, tgt, workers=2, **args)
    assert again.already_complete
    assert again.documents == 0
    assert writes == []
    assert again.verification is not None
    assert again.verification.ok
    monkeypatch.undo()
    # A ledger that claims more than the target holds (dropped meanwhile) starts over.
    _drop(tgt, name)
    fresh = multivec.migrate(src, tgt, verify=False, **args)
    assert fresh.documents == N_DOCS
    assert fresh.resumed_after is None
    assert any("started again" in note for note in fresh.notes)


def test_writes_that_landed_after_the_last_ledger_entry_are_upserted_not_appended(
    source: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run dies after its writes landed but before the ledger counted them; resume exactly.

    Into a new LanceDB target batches are appended, and an append of a document that is
    already there would duplicate it. The ledger is rolled back by hand to what a crash right
    after the writes would leave; the resumed run must upsert those batches.
    """
    tgt, name = f"lancedb://{tmp_path}/t", "docs"
    src = source("lancedb")
    args: dict[str, Any] = {"collection": "src", "target_collection": name, "ledger_dir": tmp_path}
    kinds: list[str] = []
    original = Collection._write

    def spy(self: Collection, *a: Any, new: bool, **k: Any) -> None:
        kinds.append("append" if new else "upsert")
        original(self, *a, new=new, **k)

    monkeypatch.setattr(Collection, "_write", spy)
    multivec.migrate(src, tgt, batch_bytes=200_000, verify=False, optimize=False, **args)
    assert set(kinds) == {"append"}
    ledger = next(tmp_path.glob("*.json"))
    record = json.loads(ledger.read_text())
    assert record["append"] is True
    assert record["dispatched"] == record["cursor"]
    record.update(cursor=None, documents=0, vectors=0, bytes=0, complete=False)
    ledger.write_text(json.dumps(record))
    kinds.clear()
    report = multivec.migrate(src, tgt, batch_bytes=500_000, **args)
    # Every batch reaches up to the last id handed to a writer: all are upserted again.
    assert set(kinds) == {"upsert"}
    assert report.verification is not None
    assert report.verification.duplicates == 0
    assert report.verification.ok
    with multivec.connect(tgt, name) as col:
        assert col.count() == N_DOCS


def test_a_target_that_held_documents_is_never_appended_to(
    source: Callable[[str], str], corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tgt, name = f"lancedb://{tmp_path}/t", "docs"
    corpus.load(tgt, name).delete(corpus.ids[1:])  # one source document is there already
    kinds: list[bool] = []
    original = Collection._write

    def spy(self: Collection, *a: Any, new: bool, **k: Any) -> None:
        kinds.append(new)
        original(self, *a, new=new, **k)

    monkeypatch.setattr(Collection, "_write", spy)
    src = source("lancedb")
    report = multivec.migrate(
        src, tgt, collection="src", target_collection=name, ledger_dir=tmp_path
    )
    assert kinds
    assert not any(kinds)
    assert report.verification is not None
    assert report.verification.ok


def test_a_finished_migration_picks_up_documents_added_after_its_cursor(
    corpus: Corpus, tmp_path: Path
) -> None:
    src, tgt = f"lancedb://{tmp_path}/s", f"lancedb://{tmp_path}/t"
    col = multivec.connect(src, "docs", dim=DIM, fde=FDE)
    col.upsert(corpus.ids[:10], corpus.vectors[:10], corpus.metadata[:10])
    args: dict[str, Any] = {"collection": "docs", "ledger_dir": tmp_path, "queries": 0}
    assert multivec.migrate(src, tgt, **args).documents == 10
    col.upsert(["zz-after"], [corpus.vectors[0]])  # sorts after every id copied
    col.upsert([-5], [corpus.vectors[1]])  # sorts before the cursor: not picked up
    again = multivec.migrate(src, tgt, **args)
    assert again.documents == 1
    assert not again.already_complete
    assert any("added before the resume point" in note for note in again.notes)
    assert again.verification is not None
    assert again.verification.missing == (-5,)
    assert again.exit_code == 1


def test_an_empty_collection_migrates_and_verifies(tmp_path: Path) -> None:
    src = f"memory://empty-{uuid.uuid4().hex[:8]}"
    multivec.connect(src, "e", dim=DIM, fde=FDE)
    report = multivec.migrate(src, f"lancedb://{tmp_path}", collection="e", ledger_dir=tmp_path)
    assert report.documents == report.total_documents == 0
    assert report.verification is not None
    assert report.verification.ok
    assert report.verification.search is None  # no document to draw a query from


def test_ledger_is_locked_keyed_without_secrets(
    source: Callable[[str], str], tmp_path: Path
) -> None:
    src = multivec.connect(source("memory"), "src")
    a = _Ledger(tmp_path, src, URI.parse("qdrant://me:pw1@db:6333?api_key=k1"), "c")
    b = _Ledger(tmp_path, src, URI.parse("qdrant://me:pw2@db:6333?api_key=k2"), "c")
    c = _Ledger(tmp_path, src, URI.parse("qdrant://me:pw1@db:6333"), "other")
    assert a.key == b.key != c.key
    assert "pw1" not in json.dumps(a.identity)
    assert "k1" not in json.dumps(a.identity)
    lance = source("lancedb")
    held = _Ledger(tmp_path, multivec.connect(lance, "src"), URI.parse(f"{lance}2"), "src")
    with held.locked(), pytest.raises(ConfigurationError, match="another run"):
        multivec.migrate(lance, f"{lance}2", collection="src", ledger_dir=tmp_path)


# --- FDE copied or recomputed, precision ----------------------------------------------------


def test_fde_over_the_target_limit_is_recomputed(
    corpus: Corpus, roots: dict[str, str], tmp_path: Path
) -> None:
    big = FDEConfig(dim=DIM, repetitions=20, simhash_projections=6, projection_dim=32)
    assert big.fde_dim == 40_960  # over Milvus's 32,768
    src = f"lancedb://{tmp_path}/big"
    corpus.load(src, "big", fde=big).close()
    plan = multivec.plan_migration(src, roots["milvus-lite"], collection="big", sample=10)
    assert plan.ok
    assert plan.fde == "recomputed"
    assert "32768" in plan.fde_reason
    target = _name()
    report = multivec.migrate(
        src, roots["milvus-lite"], collection="big", target_collection=target, ledger_dir=tmp_path
    )
    try:
        assert report.fde == "recomputed"
        assert "final_dim=32768" in report.fde_reason
        assert "FDEs recomputed" in report.summary()
        assert report.verification is not None
        assert report.verification.ok
        with multivec.connect(roots["milvus-lite"], target) as col:
            assert col.info.fde_dim == 32_768
            assert col.info.fde.partitioning == big.partitioning
    finally:
        _drop(roots["milvus-lite"], target)


def test_requested_fde_and_wider_precision(source: Callable[[str], str], tmp_path: Path) -> None:
    src = source("lancedb")
    tgt = f"qdrant+edge://{tmp_path}/q"
    report = multivec.migrate(
        src, tgt, collection="src", fde="muvera-2560", dtype="float32", ledger_dir=tmp_path
    )
    assert report.fde == "recomputed"
    assert "different FDE" in report.fde_reason
    # float16 values widen to float32 exactly, so every checksum still matches.
    assert report.verification is not None
    assert report.verification.ok
    with multivec.connect(tgt, "src") as col:
        assert col.info.dtype == "float32"
        assert col.info.fde_dim == 2560


def test_narrowing_precision_is_refused_before_writing(corpus: Corpus, tmp_path: Path) -> None:
    src = f"lancedb://{tmp_path}/f32"
    corpus.load(src, "f", dtype="float32").close()
    tgt = f"lancedb://{tmp_path}/f16"
    plan = multivec.plan_migration(src, tgt, collection="f", dtype="float16")
    assert not plan.ok
    assert "round" in plan.problems[0].what
    with pytest.raises(ConfigurationError, match="round"):
        multivec.migrate(src, tgt, collection="f", dtype="float16", ledger_dir=tmp_path)
    with pytest.raises(CollectionNotFoundError):
        multivec.connect(tgt, "f")


# --- verification ---------------------------------------------------------------------------


def test_verify_lists_missing_extra_and_different(corpus: Corpus) -> None:
    base = f"memory://verify-{uuid.uuid4().hex[:8]}"
    src = corpus.load(base, "a")
    tgt = corpus.load(base, "b")
    tgt.delete([corpus.ids[0]])
    tgt.upsert(["extra-doc"], [corpus.vectors[0]])
    changed = corpus.vectors[1].copy()
    changed[3, 5] += 0.25
    tgt.upsert([corpus.ids[1]], [changed], [corpus.metadata[1]], texts=[corpus.texts[1]])
    meta = {**corpus.metadata[3], "n": float(corpus.metadata[3]["n"])}  # 3 -> 3.0
    tgt.upsert([corpus.ids[3]], [corpus.vectors[3]], [meta], texts=[corpus.texts[3]])
    tgt.upsert([corpus.ids[6]], [corpus.vectors[6]], [corpus.metadata[6]], texts=[""])  # None
    report = multivec.verify(base, base, collection="a", target_collection="b", queries=6)
    assert report.exit_code == 1
    assert not report.data_ok
    assert report.missing == (corpus.ids[0],)
    assert report.extra == ("extra-doc",)
    by_id = {d.id: d for d in report.different}
    assert set(by_id) == {corpus.ids[1], corpus.ids[3], corpus.ids[6]}
    assert by_id[corpus.ids[1]].fields == ("tokens",)
    stored = np.float16(corpus.vectors[1][3, 5])
    expected = abs(float(np.float16(changed[3, 5])) - float(stored))
    assert by_id[corpus.ids[1]].max_abs_diff == pytest.approx(expected)
    assert report.max_abs_diff == pytest.approx(expected)
    assert by_id[corpus.ids[3]].fields == ("metadata",)
    assert "'n'" in by_id[corpus.ids[3]].detail
    assert by_id[corpus.ids[6]].fields == ("text",)
    assert "DIFFERENT" in report.summary()
    src.drop()
    tgt.drop()


def test_index_drift_is_told_apart_from_data_loss(corpus: Corpus) -> None:
    """Same documents, another FDE, few candidates: searches differ but the data agree."""
    base = f"memory://drift-{uuid.uuid4().hex[:8]}"
    corpus.load(base, "a")
    corpus.load(base, "b", fde=FDE.model_copy(update={"seed": 7}))
    report = multivec.verify(
        base, base, collection="a", target_collection="b", queries=20, k=10, candidates=10
    )
    assert report.data_ok
    assert report.search is not None
    assert report.search.disagreements > 0
    assert report.exit_code == 3
    assert "INDEX DRIFT" in report.summary()
    exhaustive = multivec.verify(base, base, collection="a", target_collection="b", candidates=100)
    assert exhaustive.ok
    assert exhaustive.search is not None
    assert exhaustive.search.mean_overlap == 1.0


def test_top_k_comparison_tolerates_ties_only() -> None:
    a = [("x", 3.0), ("y", 2.0), ("z", 1.0)]
    assert _agree(a, a) == (1.0, 0.0, True)
    # Two hits tie at the cut-off: which one makes the top 3 is arbitrary.
    overlap, diff, ok = _agree(a, [("x", 3.0), ("y", 2.0), ("w", 1.0)])
    assert ok
    assert diff == 0.0
    assert overlap == pytest.approx(2 / 3)
    # Tied hits above the cut-off may swap places.
    assert _agree([("x", 3.0), ("y", 3.0)], [("y", 3.0), ("x", 3.0)])[2]
    # A different hit above the cut-off, or a different score, is a disagreement.
    assert not _agree(a, [("w", 3.0), ("y", 2.0), ("z", 1.0)])[2]
    assert not _agree(a, [("x", 3.0), ("y", 2.5), ("z", 1.0)])[2]
    assert not _agree(a, a[:2])[2]


# --- export and import ----------------------------------------------------------------------


def test_export_is_bit_exact_self_describing_and_imports_back(
    source: Callable[[str], str], corpus: Corpus, roots: dict[str, str], tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "export"
    report = multivec.export_collection(
        source("lancedb"), out, collection="src", part_bytes=1_500_000, batch_bytes=400_000
    )
    assert report.documents == N_DOCS
    assert report.parts > 1
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["documents"] == N_DOCS
    assert manifest["ids"] == {"int": N_DOCS // 2, "str": N_DOCS // 2}
    assert multivec.CollectionInfo.model_validate(manifest["collection"]).fde == FDE
    for part in manifest["parts"]:
        data = (out / part["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == part["sha256"]
        # Bounded parts: at most one row group (a read batch) past the limit.
        assert len(data) < 1_500_000 + 400_000 + 200_000
    table = pq.read_table(out / manifest["parts"][0]["file"])
    row = table.slice(0, 1).to_pylist()[0]
    first = min(range(N_DOCS), key=lambda i: id_to_key(corpus.ids[i]))  # exports are in key order
    assert row["id_type"] == "int"
    assert int(row["id"]) == corpus.ids[first]
    tokens = np.frombuffer(row["tokens"], "<f2").reshape(row["n_tokens"], DIM)
    assert tokens.tobytes() == corpus.vectors[first].astype(np.float16).tobytes()
    fde = np.frombuffer(row["fde"], "<f4")
    expected = FDEEncoder(FDE).encode_documents([tokens.astype(np.float32)])[0]
    np.testing.assert_array_equal(fde, expected)
    assert json.loads(row["metadata"]) == corpus.metadata[first]
    assert row["text"] == corpus.texts[first]

    target = _name()
    imported = multivec.import_collection(
        out, roots["qdrant-edge"], collection=target, ledger_dir=tmp_path
    )
    try:
        assert imported.verification is not None
        assert imported.verification.ok
        assert imported.verification.fde_max_abs_diff == 0.0
        assert imported.fde == "copied"
        assert imported.total_documents == N_DOCS
        both_ways = multivec.verify(roots["qdrant-edge"], out, collection=target)
        assert both_ways.ok, both_ways.summary()
    finally:
        _drop(roots["qdrant-edge"], target)


def test_import_resumes_and_damaged_or_partial_exports_are_refused(
    source: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "export"
    multivec.export_collection(source("lancedb"), out, collection="src", part_bytes=1_000_000)
    tgt = f"lancedb://{tmp_path}/t"
    with pytest.raises(_StopError):
        multivec.import_collection(
            out, tgt, ledger_dir=tmp_path, batch_bytes=300_000, progress=_stop_after(5)
        )
    done = multivec.import_collection(out, tgt, ledger_dir=tmp_path)
    assert done.resumed_after is not None
    assert done.total_documents == N_DOCS
    assert done.verification is not None
    assert done.verification.ok

    with pytest.raises(InvalidInputError, match="not empty"):
        multivec.export_collection(source("lancedb"), out, collection="src")
    part = sorted(out.glob("part-*.parquet"))[-1]
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(InvalidInputError, match="SHA-256"):
        multivec.verify(out, tgt)
    (out / MANIFEST_NAME).unlink()
    with pytest.raises(InvalidInputError, match="did not finish"):
        ExportReader(out)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(MissingDependencyError, match=r"multivec\[lancedb\]"):
        multivec.export_collection(source("lancedb"), tmp_path / "x", collection="src")


# --- dry run --------------------------------------------------------------------------------


def test_dry_run_shows_the_mapping_and_writes_nothing(
    source: Callable[[str], str], tmp_path: Path
) -> None:
    tgt = f"lancedb://{tmp_path}/t"
    plan = multivec.plan_migration(source("lancedb"), tgt, collection="src", sample=20)
    assert plan.ok, plan.summary()
    assert plan.documents == N_DOCS
    assert plan.sampled == 20
    assert plan.id_types["int"] + plan.id_types["str"] == 20
    assert {"title", "n", "share", "even"} <= set(plan.metadata_fields)
    assert plan.fde == "copied"
    assert not plan.target_exists
    assert plan.target_configuration["fde_dim"] == FDE.fde_dim
    assert plan.estimated_bytes > N_DOCS * 100 * DIM * 2
    assert any("first 20 of 48" in w for w in plan.warnings)
    assert "nothing written" in plan.summary()
    with pytest.raises(CollectionNotFoundError):
        multivec.connect(tgt, "src")


def test_dry_run_reports_what_cannot_be_carried_over(
    corpus: Corpus, roots: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = f"memory://plan-{uuid.uuid4().hex[:8]}"
    col = corpus.load(src, "src")
    col.upsert(["odd-year"], [corpus.vectors[0]], [{"n": "three"}])
    from multivec.backends import milvus as milvus_module

    # Documents above about 100 KB no longer fit one write request.
    monkeypatch.setattr(milvus_module.MilvusBackend, "max_request_bytes", 125_000)
    plan = multivec.plan_migration(src, roots["milvus-lite"], collection="src", sample=None)
    assert not plan.ok
    [problem] = plan.problems
    # The collection's own cut: FDE, tokens, metadata, id and text must fit 80 % of a request.
    too_big = {
        d.id
        for batch in col.iter_documents()
        for d in batch
        if 4 * FDE.fde_dim
        + d.vectors.nbytes
        + len(json.dumps(d.metadata, ensure_ascii=False).encode())
        + len(id_to_key(d.id))
        + 4 * len(d.text or "")
        > 100_000
    }
    assert too_big
    assert set(problem.ids) == too_big
    assert "token pooling" in problem.fix
    assert any("'n'" in w and "kinds" in w for w in plan.warnings)
    assert any("does not outlive" in w for w in plan.warnings)
    col.drop()


def test_dry_run_reports_documents_the_target_refuses(
    corpus: Corpus, roots: dict[str, str]
) -> None:
    """Milvus's own limits (text size, control characters in ids) surface before any write."""
    src = f"memory://refused-{uuid.uuid4().hex[:8]}"
    name = f"refused_{uuid.uuid4().hex[:8]}"
    col = corpus.load(src, name)
    col.upsert(["long-text", "bell\x07"], [corpus.vectors[0]] * 2, texts=["x" * 70_000, None])
    plan = multivec.plan_migration(src, roots["milvus-lite"], collection=name, sample=None)
    refused = [p for p in plan.problems if "refuses" in p.what]
    assert len(refused) == 1
    assert set(refused[0].ids) == {"long-text", "bell\x07"}
    with pytest.raises(CollectionNotFoundError):
        multivec.connect(roots["milvus-lite"], name)
    col.drop()


# --- the command line -----------------------------------------------------------------------


def test_cli_migrate_verify_export_import(
    source: Callable[[str], str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, tgt = source("lancedb"), f"qdrant+edge://{tmp_path}/q"
    ledger = ["--ledger", str(tmp_path / "ledger")]
    assert main(["migrate", src, tgt, "--collection", "src", "--dry-run", *ledger]) == 0
    assert "nothing written" in capsys.readouterr().out
    with pytest.raises(CollectionNotFoundError):
        multivec.connect(tgt, "src")
    code = main(["migrate", src, tgt, "--collection", "src", "--json", "--queries", "5", *ledger])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["fde"] == "copied"
    assert out["verification"]["ok"]
    assert out["documents"] == N_DOCS
    assert out["documents_per_second"] > 0

    with multivec.connect(tgt, "src") as col:
        first = next(iter(col.iter_documents(1)))[0]
        col.delete([first.id])
    assert main(["verify", src, tgt, "--collection", "src", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["missing"] == [first.id]
    assert report["exit_code"] == 1

    export_dir = tmp_path / "export"
    assert main(["export", src, str(export_dir), "--collection", "src"]) == 0
    assert "48 documents" in capsys.readouterr().out
    tgt2 = f"lancedb://{tmp_path}/imported"
    assert main(["import", str(export_dir), tgt2, *ledger, "--queries", "5"]) == 0
    assert "OK: every document" in capsys.readouterr().out
    assert main(["verify", str(export_dir), tgt2, "--target-collection", "src"]) == 0
    assert main(["migrate", src, "nonsense", "--collection", "src"]) == 2


# --- servers --------------------------------------------------------------------------------


def test_migrate_to_a_milvus_server_and_back(source: Callable[[str], str], tmp_path: Path) -> None:
    """A ``milvus://`` server without Docker: Milvus Lite's gRPC server in a child process."""
    pytest.importorskip("milvus_lite", reason="milvus-lite is not installed")
    with MilvusLiteServer() as server:
        there = multivec.migrate(
            source("lancedb"),
            server.uri,
            collection="src",
            target_collection="mv",
            ledger_dir=tmp_path,
            queries=5,
        )
        assert there.verification is not None
        assert there.verification.ok
        back = multivec.migrate(
            server.uri,
            f"lancedb://{tmp_path}/back",
            collection="mv",
            ledger_dir=tmp_path,
            queries=5,
        )
        assert back.verification is not None
        assert back.verification.ok
        assert back.total_documents == N_DOCS


def test_migrate_to_a_real_milvus_23_server_and_back(corpus: Corpus, tmp_path: Path) -> None:
    """A real Milvus 2.3.5 server, no Docker.

    It has no nullable fields: the corpus's one empty text is refused, naming the document, and
    once the source holds no text there instead the same migration resumes and goes there and
    back exactly.
    """
    pytest.importorskip("milvus", reason="the embedded Milvus server needs the 'milvus' package")
    empty = corpus.texts.index("")
    with embedded_milvus_server() as uri:
        src = f"lancedb://{tmp_path}/src"
        corpus.load(src, "src").close()
        with pytest.raises(
            InvalidInputError, match=f"document '{corpus.ids[empty]}' has an empty text"
        ) as refused:
            multivec.migrate(
                src, uri, collection="src", target_collection="mv", ledger_dir=tmp_path
            )
        assert "run the same migration again to resume" in str(refused.value)
        texts = [None if text == "" else text for text in corpus.texts]
        replace(corpus, texts=texts).load(src, "src").close()
        there = multivec.migrate(
            src, uri, collection="src", target_collection="mv", ledger_dir=tmp_path, queries=5
        )
        assert there.verification is not None
        assert there.verification.ok
        back = multivec.migrate(
            uri, f"lancedb://{tmp_path}/back", collection="mv", ledger_dir=tmp_path, queries=5
        )
        assert back.verification is not None
        assert back.verification.ok
        assert back.total_documents == N_DOCS


@pytest.fixture(params=["qdrant", "milvus", "weaviate"])
def server(request: pytest.FixtureRequest) -> Iterator[str]:
    with server_uri(request.param) as uri:
        yield uri


@pytest.mark.server
def test_migrate_to_server_flavours(
    source: Callable[[str], str], server: str, tmp_path: Path
) -> None:
    target = _name()
    report = multivec.migrate(
        source("lancedb"),
        server,
        collection="src",
        target_collection=target,
        ledger_dir=tmp_path,
        queries=5,
    )
    try:
        assert report.verification is not None
        assert report.verification.ok
    finally:
        _drop(server, target)
