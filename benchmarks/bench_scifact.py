"""SciFact quality: multivec's two-stage search against exact MaxSim and against fastembed's MUVERA.

For each encoder (the shared MiniLM, and the anisotropic answerai backbone) the 5,183 SciFact
passages are indexed into a real LanceDB collection. For each of the 300 test queries we compare
the top 10 after exact rerank of C first-stage candidates (C = 50, 100, 200, 500) with the top 10
of exact brute-force MaxSim over the whole collection (recall@10), and score both against the
qrels (nDCG@10). fastembed's ``Muvera`` at the same FDE dimension runs side by side: its FDEs are
scored by brute force (no ANN loss, its best case) and reranked by the same exact MaxSim.

Run: ``python benchmarks/bench_scifact.py [--encoders minilm answerai] [--json PATH]``
(first run encodes the corpus, a few minutes per encoder; later runs use the cache).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import multivec
from benchmarks._data import ScifactVectors, scifact
from multivec.muvera import FDEConfig, fit
from multivec.rerank import maxsim_packed

CANDIDATES = (50, 100, 200, 500)
K = 10


def pack(docs: Sequence[npt.NDArray[Any]]) -> tuple[npt.NDArray[np.float16], npt.NDArray[np.int64]]:
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum([d.shape[0] for d in docs], out=offsets[1:])
    return np.ascontiguousarray(np.concatenate(docs), dtype=np.float16), offsets


def exact_scores(data: ScifactVectors) -> npt.NDArray[np.float32]:
    """(n_queries, n_docs) exact MaxSim over the whole collection."""
    tokens, offsets = pack(data.docs)
    return np.stack([maxsim_packed(q, tokens, offsets) for q in data.queries])


def top_k(scores: npt.NDArray[np.float32], ids: Sequence[str], k: int) -> list[str]:
    order = np.argsort(-scores, kind="stable")[:k]
    return [ids[i] for i in order]


def ndcg_at_10(ranked: Sequence[str], rels: dict[str, int]) -> float:
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
    ideal = sorted(rels.values(), reverse=True)[:10]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def evaluate(
    data: ScifactVectors,
    exact: npt.NDArray[np.float32],
    search: Callable[[int, int], list[str]],
) -> dict[str, dict[str, float]]:
    """recall@10 vs exact and nDCG@10 vs qrels for each candidate count."""
    out: dict[str, dict[str, float]] = {}
    truth = [set(top_k(exact[i], data.doc_ids, K)) for i in range(len(data.queries))]
    for c in CANDIDATES:
        recalls, ndcgs, times = [], [], []
        for qi in range(len(data.queries)):
            t0 = time.perf_counter()
            got = search(qi, c)
            times.append(time.perf_counter() - t0)
            recalls.append(len(set(got) & truth[qi]) / K)
            ndcgs.append(ndcg_at_10(got, data.qrels.get(data.query_ids[qi], {})))
        out[str(c)] = {
            "recall@10": float(np.mean(recalls)),
            "ndcg@10": float(np.mean(ndcgs)),
            "median_ms": float(np.median(times) * 1e3),
        }
    return out


def brute_force_two_stage(
    data: ScifactVectors, doc_fdes: npt.NDArray[np.float32], query_fdes: npt.NDArray[np.float32]
) -> Callable[[int, int], list[str]]:
    """First stage by exact FDE inner product, then exact MaxSim over the candidates."""

    def search(qi: int, c: int) -> list[str]:
        cand = np.argsort(-(doc_fdes @ query_fdes[qi]), kind="stable")[:c]
        sub = [data.docs[i] for i in cand]
        t, o = pack(sub)
        scores = maxsim_packed(data.queries[qi], t, o)
        return [data.doc_ids[cand[i]] for i in np.argsort(-scores, kind="stable")[:K]]

    return search


def run_fastembed(data: ScifactVectors, exact: npt.NDArray[np.float32]) -> dict[str, Any]:
    from fastembed.postprocess import Muvera

    muvera = Muvera(data.dim, k_sim=5, dim_proj=16, r_reps=20, random_seed=42)
    t0 = time.perf_counter()
    doc_fdes = np.stack([muvera.process_document(d.astype(np.float32)) for d in data.docs]).astype(
        np.float32
    )
    encode_s = time.perf_counter() - t0
    query_fdes = np.stack([muvera.process_query(q) for q in data.queries]).astype(np.float32)
    return {
        "fde_dim": int(doc_fdes.shape[1]),
        "encode_docs_per_s": len(data.docs) / encode_s,
        "first_stage": "brute force (exact FDE inner product)",
        "results": evaluate(data, exact, brute_force_two_stage(data, doc_fdes, query_fdes)),
    }


def run_multivec(
    data: ScifactVectors, exact: npt.NDArray[np.float32], config: FDEConfig, label: str
) -> dict[str, Any]:
    """Index into a real LanceDB collection and search through the public API."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        col = multivec.connect(f"lancedb://{tmp}", "scifact", dim=data.dim, fde=config)
        for start in range(0, len(data.docs), 500):
            col.upsert(data.doc_ids[start : start + 500], data.docs[start : start + 500])
        col.optimize()
        index_s = time.perf_counter() - t0

        def search(qi: int, c: int) -> list[str]:
            return [str(i) for i in col.search(data.queries[qi], k=K, candidates=c).ids]

        results = evaluate(data, exact, search)
        col.drop()
    settings = json.loads(config.model_dump_json())
    if settings["fitted"]:  # hundreds of KB of base64 arrays: keep their digest
        settings["fitted"] = {
            k: v for k, v in settings["fitted"].items() if k not in ("mean", "centroids")
        }
    return {
        "label": label,
        "fde_dim": config.fde_dim,
        "config": settings,
        "index_s": index_s,
        "first_stage": "LanceDB FDE index from optimize(): HNSW over 8-bit vectors at this size",
        "results": results,
    }


def fitted_config(data: ScifactVectors, base: FDEConfig) -> FDEConfig:
    """The data-aware configuration, fitted on a sample of the corpus as at collection creation."""
    return fit(base, data.docs[:2000])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoders", nargs="+", default=["minilm", "answerai"])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--skip-fastembed", action="store_true")
    args = parser.parse_args()

    report: dict[str, Any] = {"machine": platform.processor() or platform.machine(), "encoders": {}}
    for name in args.encoders:
        data = scifact(name)
        t0 = time.perf_counter()
        exact = exact_scores(data)
        exact_ms = (time.perf_counter() - t0) / len(data.queries) * 1e3
        exact_ndcg = float(
            np.mean(
                [
                    ndcg_at_10(top_k(exact[i], data.doc_ids, K), data.qrels.get(q, {}))
                    for i, q in enumerate(data.query_ids)
                ]
            )
        )
        entry: dict[str, Any] = {
            "model": data.model_id,
            "dim": data.dim,
            "passages": len(data.docs),
            "queries": len(data.queries),
            "exact_maxsim": {"ndcg@10": exact_ndcg, "ms_per_query": exact_ms},
            "runs": [],
        }
        base = FDEConfig.preset("muvera-10240", dim=data.dim)
        entry["runs"].append(run_multivec(data, exact, base, "multivec reference (SimHash) 10240"))
        entry["runs"].append(
            run_multivec(data, exact, fitted_config(data, base), "multivec fitted 10240")
        )
        if not args.skip_fastembed:
            fe = run_fastembed(data, exact)
            fe["label"] = "fastembed Muvera 10240 (brute-force first stage)"
            entry["runs"].append(fe)
        report["encoders"][name] = entry
        print_table(name, entry)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def print_table(name: str, entry: dict[str, Any]) -> None:
    print(
        f"\n## {name}: {entry['model']} ({entry['dim']}-d), {entry['passages']} passages, "
        f"{entry['queries']} queries; exact MaxSim nDCG@10 = {entry['exact_maxsim']['ndcg@10']:.4f}"
    )
    head = " | ".join(f"C={c} R@10 / nDCG@10" for c in CANDIDATES)
    print(f"| run | {head} |\n|---|" + "---|" * len(CANDIDATES))
    for run in entry["runs"]:
        cells = " | ".join(
            f"{run['results'][str(c)]['recall@10']:.3f} / {run['results'][str(c)]['ndcg@10']:.4f}"
            for c in CANDIDATES
        )
        print(f"| {run['label']} | {cells} |")


if __name__ == "__main__":
    main()
