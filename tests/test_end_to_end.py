"""The whole search path on real model output: SciFact text → MiniLM → LanceDB → exact rerank."""

import json
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

import multivec
from benchmarks._data import minilm_model_dir, scifact_dir
from multivec.ingest import OnnxLateInteractionEncoder
from multivec.rerank import maxsim

pytestmark = pytest.mark.slow


def test_two_stage_search_matches_exact_maxsim(tmp_path: Path) -> None:
    with (scifact_dir() / "corpus.jsonl").open(encoding="utf-8") as src:
        records = [json.loads(line) for line in islice(src, 300)]
    with (scifact_dir() / "queries.jsonl").open(encoding="utf-8") as src:
        queries = [json.loads(line)["text"] for line in islice(src, 30)]
    encoder = OnnxLateInteractionEncoder(minilm_model_dir(), max_length=128, query_max_length=32)
    docs = list(encoder.embed([f"{r['title']}. {r['text']}" for r in records], batch_size=32))
    query_vectors = list(encoder.query_embed(queries))

    col = multivec.connect(f"lancedb://{tmp_path}", "scifact", dim=encoder.dim)
    col.upsert([r["_id"] for r in records], docs, [{"title": r["title"]} for r in records])
    assert col.count() == 300

    stored = [d.vectors for d in col.get([r["_id"] for r in records])]
    recalls = []
    for q in query_vectors:
        exact = maxsim(q, stored)
        truth = {records[i]["_id"] for i in np.argsort(-exact, kind="stable")[:10]}
        result = col.search(q, k=10, candidates=60)
        recalls.append(len(truth & set(result.ids)) / 10)
        # Scores are exact MaxSim over the stored (float16) vectors.
        by_id = {r["_id"]: s for r, s in zip(records, exact, strict=True)}
        np.testing.assert_allclose(result.scores, [by_id[i] for i in result.ids], rtol=1e-4)
    # 60 of 300 candidates: the FDE must put nearly all of the true top 10 among them.
    assert np.mean(recalls) >= 0.9
