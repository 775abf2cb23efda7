import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import multivec.bench
from multivec.bench import (
    PLOTS,
    RESULTS_SCHEMA,
    BenchConfig,
    Dataset,
    exact_threshold,
    judged_recall_at_k,
    load_beir,
    load_vectors,
    ndcg_at_k,
    percentiles,
    recall_at_k,
    render_markdown,
    run_benchmark,
    save_vectors,
    started_servers,
)
from multivec.bench._cli import add_parser, run
from multivec.errors import ConfigurationError, InvalidInputError

SHARED_MINILM = Path(__file__).resolve().parents[1].parent / "shared/models/all-minilm-l6-v2-onnx"
EMBEDDED = (
    "memory://bench-test",
    "lancedb://{tmp}",
    "qdrant+edge://{tmp}",
    "milvus+lite://{tmp}/m.db",
)


def test_public_names_are_pinned():
    assert sorted(multivec.bench.__all__) == sorted(
        [
            "PERCENTILES",
            "PLOTS",
            "RESULTS_SCHEMA",
            "SERVER_KINDS",
            "VECTORS_FORMAT",
            "BenchConfig",
            "Dataset",
            "Progress",
            "Target",
            "exact_threshold",
            "judged_recall_at_k",
            "load_beir",
            "load_vectors",
            "ndcg_at_k",
            "percentiles",
            "recall_at_k",
            "render_markdown",
            "run_benchmark",
            "save_vectors",
            "started_servers",
            "write_report",
        ]
    )


def test_import_loads_no_vendor_sdk_nor_plotting():
    code = (
        "import sys, multivec.bench, multivec.bench._cli; "
        "heavy = ['lancedb', 'qdrant_client', 'qdrant_edge', 'pymilvus', 'weaviate', 'numba', "
        "'onnxruntime', 'tokenizers', 'fastembed', 'matplotlib', 'pytest', 'testcontainers']; "
        "print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- metrics, against hand-computed cases ------------------------------------------------------

EXACT = {"a": 5.0, "b": 4.0, "c": 3.0, "d": 3.0, "e": 1.0}


def test_recall_counts_either_document_tied_at_rank_k():
    threshold = exact_threshold(list(EXACT.values()), 3)
    assert recall_at_k(["a", "b", "c"], EXACT, threshold, 3) == 1.0
    assert recall_at_k(["a", "b", "d"], EXACT, threshold, 3) == 1.0
    assert recall_at_k(["a", "b", "e"], EXACT, threshold, 3) == pytest.approx(2 / 3)
    assert recall_at_k(["e"], EXACT, threshold, 3) == 0.0


def test_first_stage_recall_is_capped_at_k():
    threshold = exact_threshold(list(EXACT.values()), 3)
    # Four candidates reach the tied cut-off; only k of them can count.
    assert recall_at_k(["e", "d", "c", "b", "a"], EXACT, threshold, 3) == 1.0
    assert recall_at_k(["e", "d", "c"], EXACT, threshold, 3) == pytest.approx(2 / 3)


def test_recall_tolerates_rounding_but_not_a_lower_score():
    exact = {"a": 2.0, "b": 1.0, "c": 1.0 - 1e-7, "d": 0.99}
    threshold = exact_threshold(list(exact.values()), 2)
    assert recall_at_k(["a", "c"], exact, threshold, 2) == 1.0
    assert recall_at_k(["a", "d"], exact, threshold, 2) == 0.5


def test_recall_with_k_above_the_corpus_and_unknown_ids():
    exact = {"a": 1.0, "b": 0.5}
    threshold = exact_threshold(list(exact.values()), 10)
    assert recall_at_k(["b", "a"], exact, threshold, 10) == 1.0
    with pytest.raises(InvalidInputError, match="no exact score"):
        recall_at_k(["zzz"], exact, threshold, 10)
    with pytest.raises(InvalidInputError):
        exact_threshold([], 3)


def test_ndcg_with_graded_relevance():
    qrels = {"a": 2, "b": 1, "z": 0}
    expected = (2 / math.log2(3) + 1 / math.log2(4)) / (2 + 1 / math.log2(3))
    assert ndcg_at_k(["x", "a", "b"], qrels, 10) == pytest.approx(expected)
    assert ndcg_at_k(["a", "b"], qrels, 10) == pytest.approx(1.0)
    # Swapping the grades' order costs: b (1) first, then a (2).
    swapped = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert ndcg_at_k(["b", "a"], qrels, 10) == pytest.approx(swapped)
    # Ranks past k do not count.
    assert ndcg_at_k(["x", "a"], qrels, 1) == 0.0
    assert ndcg_at_k(["a"], {"a": 0}, 10) is None


def test_recall_at_100_against_judgements():
    ranked = [f"n{i}" for i in range(99)] + ["a", "b"]  # a at rank 100, b at rank 101
    qrels = {"a": 1, "b": 2, "c": 0}
    assert judged_recall_at_k(ranked, qrels, 100) == 0.5
    assert judged_recall_at_k(ranked, qrels, 101) == 1.0
    assert judged_recall_at_k(ranked, {"c": 0}, 100) is None


def test_percentiles_interpolate_linearly():
    assert percentiles([1.0, 2.0, 3.0, 4.0]) == {
        "p50": 2.5,
        "p95": pytest.approx(3.85),
        "p99": pytest.approx(3.97),
        "mean": 2.5,
    }
    stats = percentiles(np.arange(1, 101, dtype=float))
    assert (stats["p50"], stats["p95"], stats["p99"]) == pytest.approx((50.5, 95.05, 99.01))
    assert percentiles([7.0]) == {"p50": 7.0, "p95": 7.0, "p99": 7.0, "mean": 7.0}
    with pytest.raises(InvalidInputError):
        percentiles([])


def test_config_rejects_unfair_or_unknown_settings():
    with pytest.raises(ConfigurationError, match="at least k"):
        BenchConfig(k=10, candidates=(5, 20))
    with pytest.raises(ConfigurationError, match="unknown FDE"):
        BenchConfig(fde=("muvera-7",))
    with pytest.raises(ConfigurationError):
        BenchConfig(repeats=0)


# --- datasets ----------------------------------------------------------------------------------


def synthetic(n_docs: int = 60, n_queries: int = 5, dim: int = 16) -> Dataset:
    """Unit-norm random tokens (so cosine and dot products agree) with graded judgements."""
    rng = np.random.default_rng(7)

    def matrix(rows: int) -> np.ndarray:
        m = rng.normal(size=(rows, dim)).astype(np.float32)
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    docs = [matrix(int(rng.integers(4, 12))) for _ in range(n_docs)]
    queries = [matrix(4) for _ in range(n_queries)]
    qrels = {f"q{i}": {f"d{i}": 2, f"d{i + 10}": 1} for i in range(n_queries)}
    return Dataset.from_matrices(
        "synthetic",
        "random-unit",
        [f"d{i}" for i in range(n_docs)],
        docs,
        [f"q{i}" for i in range(n_queries)],
        queries,
        qrels,
    )


def test_vectors_folder_round_trip(tmp_path):
    data = synthetic(8, 2)
    folder = save_vectors(data, tmp_path / "vectors")
    loaded = load_vectors(folder)
    assert loaded.doc_ids == data.doc_ids
    assert loaded.query_ids == data.query_ids
    assert loaded.qrels == data.qrels
    assert loaded.model_id == "random-unit"
    np.testing.assert_array_equal(loaded.doc(3), data.doc(3))
    np.testing.assert_array_equal(loaded.query(1), data.query(1))
    (folder / "meta.json").write_text(json.dumps({"format": "other/9"}))
    with pytest.raises(InvalidInputError, match="format"):
        load_vectors(folder)


def test_dataset_rejects_inconsistent_vectors():
    data = synthetic(4, 1)
    with pytest.raises(InvalidInputError, match="not unique"):
        Dataset.from_matrices(
            "x", "m", ["a", "a"], [data.doc(0), data.doc(1)], ["q"], [data.query(0)]
        )
    with pytest.raises(InvalidInputError, match="-d"):
        Dataset.from_matrices("x", "m", ["a"], [data.doc(0)], ["q"], [np.ones((2, 3))])


@pytest.mark.skipif(not SHARED_MINILM.is_dir(), reason="the shared MiniLM model is missing")
def test_beir_folder_is_encoded_once_then_read_from_the_cache(tmp_path):
    beir = tmp_path / "tiny"
    (beir / "qrels").mkdir(parents=True)
    corpus = [
        {"_id": "d1", "title": "Statins", "text": "Statins lower cholesterol."},
        {"_id": "d2", "title": "", "text": "Aspirin thins the blood."},
        {"_id": "d3", "title": "Sleep.", "text": "Sleep helps memory."},
        {"_id": "d4", "title": "Coffee", "text": "Coffee contains caffeine."},
    ]
    (beir / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in corpus))
    queries = [{"_id": "q1", "text": "cholesterol drugs"}, {"_id": "q2", "text": "unjudged"}]
    (beir / "queries.jsonl").write_text("\n".join(json.dumps(r) for r in queries))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td4\t1\n")
    lines: list[str] = []
    kwargs = {"model": SHARED_MINILM, "max_docs": 2, "cache_dir": tmp_path / "cache"}
    first = load_beir(beir, progress=lines.append, **kwargs)
    # The judged document comes first in a subset, which keeps corpus order.
    assert first.doc_ids == ["d1", "d4"]
    assert first.query_ids == ["q1"]
    assert first.qrels == {"q1": {"d4": 1}}
    assert first.dim == 384
    assert any(line.startswith("encoding") for line in lines)
    lines.clear()
    second = load_beir(beir, progress=lines.append, **kwargs)
    assert not any(line.startswith("encoding") for line in lines)
    np.testing.assert_array_equal(second.doc(1), first.doc(1))
    assert second.meta["encoder_settings"]["max_length"] == 180


def test_start_without_docker_says_so_and_continues(monkeypatch):
    from multivec.testing import servers

    monkeypatch.setattr(servers, "docker_unavailable_reason", lambda: "no engine here")
    said: list[str] = []
    with started_servers(["qdrant", "milvus", "weaviate"], said.append) as (targets, notes):
        assert targets == []
    assert notes == ["no Docker engine: skipping qdrant, milvus, weaviate (no engine here)"]
    assert said == notes
    with pytest.raises(ConfigurationError), started_servers(["oracle"], said.append):
        pass


# --- end to end on the embedded engines ----------------------------------------------------------


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One small run through the command's code path: 4 engines, 2 FDEs, 2 candidate counts."""
    root = tmp_path_factory.mktemp("bench")
    vectors = save_vectors(synthetic(), root / "vectors")
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    argv = ["bench", "--vectors", str(vectors), "--out", str(root / "out"), "-k", "5"]
    for uri in EMBEDDED:
        argv += ["--backend", uri]
    argv += ["--candidates", "10,20", "--fde", "muvera-1280,muvera-1280:simhash"]
    argv += ["--fit-docs", "30", "--warmup", "1", "--repeats", "2", "--concurrency", "1,2"]
    argv += ["--qps-candidates", "20", "--recall-depth", "20"]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    out = root / "out"
    return json.loads((out / "results.json").read_text()), out


def _runs(results):
    for backend in results["backends"]:
        for collection in backend["collections"]:
            for r in collection["runs"]:
                yield backend, collection, r


def test_results_document_structure(bench_run):
    results, _ = bench_run
    assert results["schema"] == RESULTS_SCHEMA
    assert results["command"].startswith("multivec bench --vectors ")
    assert results["versions"]["packages"]["numpy"] == np.__version__
    assert results["machine"]["usable_cores"] >= 1
    assert [b["name"] for b in results["backends"]] == [
        "memory",
        "lancedb",
        "qdrant+edge",
        "milvus+lite",
    ]
    assert [f["label"] for f in results["fde"]] == ["muvera-1280 fitted", "muvera-1280 simhash"]
    for backend in results["backends"]:
        assert backend["error"] is None
        assert backend["placement"] == "in-process"
        assert [c["fde"] for c in backend["collections"]] == [f["label"] for f in results["fde"]]
    runs = {(b["name"], c["fde"], r["mode"], r["candidates"]) for b, c, r in _runs(results)}
    fitted = "muvera-1280 fitted"
    assert ("qdrant+edge", fitted, "native", None) in runs
    assert ("qdrant+edge", fitted, "native-prefetch", 20) in runs
    assert ("lancedb", fitted, "native", None) in runs
    # The exhaustive native mode does not read the FDE: it runs on the first configuration only.
    assert ("lancedb", "muvera-1280 simhash", "native", None) not in runs
    assert not any(name == "milvus+lite" and mode != "multivec" for name, _, mode, _ in runs)


def test_measurements_are_sane(bench_run):
    results, _ = bench_run
    for backend in results["backends"]:
        for collection in backend["collections"]:
            load = collection["load"]
            assert load["documents"] == 60
            assert load["docs_per_s"] > 0
            assert 0 < load["upsert_s"] <= load["searchable_s"]
            if backend["name"] == "memory":
                assert load["bytes_per_doc"] is None
            else:
                assert load["bytes_per_doc"] > 0
    for backend, _, r in _runs(results):
        assert r["error"] is None
        assert r["queries"] == 5
        assert not r["truncated_by_budget"]
        q = r["quality"]
        assert 0.0 <= q["recall"] <= 1.0
        assert 0.0 <= q["ndcg"] <= 1.0
        if r["mode"] == "multivec" and r["rerank"] == "client":
            # The final top k is drawn from the candidates, so it can only lose exact hits.
            assert q["recall"] <= q["first_stage_recall"] <= 1.0
        elif r["mode"] == "multivec":
            assert r["rerank"] == "engine"
            assert backend["name"].startswith("qdrant"), backend["name"]
            assert q["first_stage_recall"] is None
        else:
            assert q["first_stage_recall"] is None
        if r["mode"] == "native":
            assert q["recall"] >= 0.8, backend["name"]  # exhaustive MaxSim in the database
        for part in ("total", "encode", "ann", "fetch", "rerank"):
            lat = r["latency_ms"][part]
            assert 0.0 <= lat["p50"] <= lat["p95"] <= lat["p99"]
        assert r["repeats"] == 2
        assert len(r["latency_passes_ms"]) == 2
    operating = [r for _, c, r in _runs(results) if r["throughput"]]
    assert {(r["mode"], r["candidates"]) for r in operating} >= {("multivec", 20), ("native", None)}
    for r in operating:
        assert [t["threads"] for t in r["throughput"]] == [1, 2]
        assert all(t["qps"] > 0 and t["errors"] == 0 for t in r["throughput"])
    truth = results["ground_truth"]
    assert 0 <= truth["ndcg"] <= 1
    assert 0 <= truth["judged_recall"] <= 1


def test_report_has_every_section_and_plot(bench_run):
    results, out = bench_run
    report = (out / "report.md").read_text()
    for heading in (
        "## Setup",
        "## What was not equal",
        "## Load",
        "## Quality and latency",
        "## Latency by stage",
        "## Throughput",
        "## Storage",
        "## Versions",
    ):
        assert heading in report
    assert results["command"] in report
    assert "milvus+lite has no native multi-vector scoring" in report
    for name in PLOTS.values():
        assert f"]({name})" in report
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_renders_again_from_the_json_alone(bench_run, tmp_path):
    _results, out = bench_run
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["bench", "--render", str(out / "results.json"), "--out", str(tmp_path)]
    )
    assert run(args) == 0
    assert (tmp_path / "report.md").read_text() == (out / "report.md").read_text()


def test_time_budget_runs_a_prefix_once_and_says_so():
    config = BenchConfig(
        k=5,
        candidates=(10,),
        fde=("muvera-1280:simhash",),
        warmup=1,
        repeats=3,
        concurrency=(),
        mode_budget_s=1e-9,
    )
    results = run_benchmark(synthetic(30, 4), ["memory://bench-budget"], config)
    (r,) = results["backends"][0]["collections"][0]["runs"]
    assert r["truncated_by_budget"]
    assert r["queries"] == 1
    assert r["repeats"] == 1
    assert r["throughput"] is None
    assert any("ran only the first 1 of 4 queries" in note for note in results["notes"])
    assert "ran only the first 1 of 4" in render_markdown(results)


def test_a_server_backend_reports_its_version_and_says_storage_was_not_measured(tmp_path):
    """A server given by URI (Milvus Lite's gRPC server here) is placed and described as one."""
    from multivec.testing.servers import MilvusLiteServer

    config = BenchConfig(
        k=5, candidates=(10,), fde=("muvera-1280:simhash",), warmup=1, repeats=1, concurrency=()
    )
    with MilvusLiteServer(str(tmp_path / "m.db")) as server:
        results = run_benchmark(synthetic(30, 4), [server.uri], config)
    (backend,) = results["backends"]
    assert backend["error"] is None, backend["error"]
    assert backend["placement"] == "server"
    assert backend["server"]["version"].startswith("milvus_lite")
    load = backend["collections"][0]["load"]
    assert load["storage_bytes"] is None
    assert "not measured" in load["storage_method"]
    assert backend["server"]["version"] in render_markdown(results)
