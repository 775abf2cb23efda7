"""Token pooling and vector budgets on SciFact: storage saved against quality lost.

For each setting (pool factor 1, 2, 3, 4 with :func:`multivec.ingest.pool_tokens`; budgets of
32, 64 and 128 vectors with :func:`multivec.ingest.keep_first`) every SciFact passage is
reduced, then the 300 test queries are scored by exact brute-force MaxSim over all 5,183
reduced passages. Reported per setting:

* vectors per passage (mean) and bytes per passage at float16, and the share saved;
* recall@10 against exact MaxSim over the unpooled passages (ties tolerated);
* nDCG@10 against SciFact's test qrels, and its change from the unpooled passages.

There is no approximate first stage here: the numbers isolate what the reduction costs.
The encoded vectors come from the cache the other benchmarks use (``benchmarks/_data.py``),
so nothing is re-encoded.

Both cached encoders run by default: the isotropic MiniLM and the anisotropic answerai
backbone, whose tokens are all near one another (so clustering merges differently).

Run: ``python benchmarks/bench_pooling.py [--encoders minilm answerai] [--json PATH]``
(``--json`` defaults to ``benchmarks/results/pooling.json``; ``--docs N`` for a quick subset).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._data import ScifactVectors, scifact
from multivec.bench._metrics import exact_threshold, ndcg_at_k, recall_at_k
from multivec.ingest._pooling import keep_first, pool_tokens
from multivec.rerank import maxsim_packed

K = 10
POOL_FACTORS = (1, 2, 3, 4)
BUDGETS = (32, 64, 128)
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "pooling.json"


def pack(docs: Sequence[npt.NDArray[Any]]) -> tuple[npt.NDArray[np.float16], npt.NDArray[np.int64]]:
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum([d.shape[0] for d in docs], out=offsets[1:])
    return np.ascontiguousarray(np.concatenate(docs), dtype=np.float16), offsets


def all_scores(data: ScifactVectors, docs: Sequence[npt.NDArray[Any]]) -> npt.NDArray[np.float32]:
    """(n_queries, n_docs) exact MaxSim of every query against every (reduced) passage."""
    tokens, offsets = pack(docs)
    return np.stack([maxsim_packed(q, tokens, offsets) for q in data.queries])


def evaluate(
    data: ScifactVectors,
    scores: npt.NDArray[np.float32],
    reference: npt.NDArray[np.float32],
) -> dict[str, float]:
    recalls, ndcgs = [], []
    for i, query_id in enumerate(data.query_ids):
        order = np.argsort(-scores[i], kind="stable")[:K]
        ranked = [data.doc_ids[j] for j in order]
        exact = dict(zip(data.doc_ids, reference[i].tolist(), strict=True))
        recalls.append(recall_at_k(ranked, exact, exact_threshold(reference[i], K), K))
        ndcg = ndcg_at_k(ranked, data.qrels.get(query_id, {}), K)
        if ndcg is not None:
            ndcgs.append(ndcg)
    return {"recall@10": float(np.mean(recalls)), "ndcg@10": float(np.mean(ndcgs))}


def settings() -> list[tuple[str, str, int, Callable[[npt.NDArray[Any]], npt.NDArray[Any]]]]:
    out: list[tuple[str, str, int, Callable[[npt.NDArray[Any]], npt.NDArray[Any]]]] = []
    for factor in POOL_FACTORS:
        out.append(
            (f"pool_tokens(pool_factor={factor})", "pool", factor, _pooler(factor)),
        )
    for budget in BUDGETS:
        out.append((f"keep_first(budget={budget})", "budget", budget, _budget(budget)))
    return out


def _pooler(factor: int) -> Callable[[npt.NDArray[Any]], npt.NDArray[Any]]:
    return lambda doc: pool_tokens(doc, pool_factor=factor)


def _budget(budget: int) -> Callable[[npt.NDArray[Any]], npt.NDArray[Any]]:
    return lambda doc: keep_first(doc, budget)


def run_encoder(name: str, n_docs: int | None) -> dict[str, Any]:
    data = scifact(name, n_docs)  # type: ignore[arg-type]
    started = time.perf_counter()
    reference = all_scores(data, data.docs)
    print(
        f"\n## {name}: {data.model_id}; exact MaxSim over unpooled passages "
        f"in {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    base_vectors = float(np.mean([d.shape[0] for d in data.docs]))
    base_ndcg: float | None = None
    runs: list[dict[str, Any]] = []
    for label, kind, value, reduce in settings():
        t0 = time.perf_counter()
        docs = [reduce(d) for d in data.docs]
        reduce_s = time.perf_counter() - t0
        quality = evaluate(data, all_scores(data, docs), reference)
        vectors = float(np.mean([d.shape[0] for d in docs]))
        if base_ndcg is None and kind == "pool" and value == 1:
            base_ndcg = quality["ndcg@10"]
        run = {
            "setting": label,
            "kind": kind,
            "value": value,
            "vectors_per_doc": vectors,
            "bytes_per_doc_float16": vectors * data.dim * 2,
            "storage_saved": 1 - vectors / base_vectors,
            **quality,
            "ndcg@10_change": quality["ndcg@10"] - (base_ndcg or quality["ndcg@10"]),
            "reduce_ms_per_doc": reduce_s / len(docs) * 1e3,
        }
        runs.append(run)
        print(
            f"{label:32s} vectors/doc {vectors:6.1f}  saved {run['storage_saved']:6.1%}  "
            f"R@10 {quality['recall@10']:.3f}  nDCG@10 {quality['ndcg@10']:.4f} "
            f"({run['ndcg@10_change']:+.4f})  [{time.perf_counter() - t0:.0f} s]",
            flush=True,
        )
    return {
        "model": data.model_id,
        "dim": data.dim,
        "passages": len(data.docs),
        "queries": len(data.queries),
        "baseline": {
            "vectors_per_doc": base_vectors,
            "bytes_per_doc_float16": base_vectors * data.dim * 2,
        },
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--encoders", nargs="+", default=["minilm", "answerai"], choices=["minilm", "answerai"]
    )
    parser.add_argument("--docs", type=int, default=None, help="use a subset of N passages")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()

    report: dict[str, Any] = {
        "benchmark": "pooling",
        "machine": platform.processor() or platform.machine(),
        "stored_dtype": "float16",
        "k": K,
        "encoders": {name: run_encoder(name, args.docs) for name in args.encoders},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
