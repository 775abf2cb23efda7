"""Embedded engines side by side: load time, disk, recall@10 and latency of every search mode.

The SciFact passages encoded by MiniLM (384-d tokens, ``benchmarks/_data.py: scifact("minilm")``)
are loaded into each embedded engine, ``lancedb://``, ``qdrant+edge://`` and ``milvus+lite://``
(optionally ``qdrant+local://``, qdrant-client's NumPy brute force), all with the same FDE
configuration: ``fit(FDEConfig.preset("muvera-10240", dim=384), first 2,000 passages)``, fitted
once. For each engine we record the load time (upserts in batches of 500, then ``optimize()``)
and the bytes on disk per document after ``optimize()``. Then every search mode the engine
supports runs over the queries, after 5 warm-up queries:

* ``multivec`` at 100, 200 and 400 candidates: FDE ANN in the engine, then exact MaxSim: here, or
  inside the engine where the backend does that by default (Qdrant: ``engine_rerank``); there
  ``multivec+client-rerank`` at 200 also runs the client-side rerank (``?rerank=client``);
* ``native``: the engine's own exhaustive MaxSim (slow, so only the first ``--native-queries``
  queries; the output says how many);
* ``native-prefetch`` at 200 candidates: the engine's own FDE-then-MaxSim query, on multivec's
  fitted FDE.

``qdrant-edge-reference-fde`` (``--engines``) loads a second Qdrant Edge collection whose FDE is
the unfitted reference MUVERA (the SimHash encoding fastembed's ``Muvera`` follows) and runs only
Qdrant's own prefetch-then-MaxSim at 200, 400 and 800 candidates: Qdrant's native two-stage path
as its documentation builds it, the baseline multivec must beat. ``milvus-2.3-server`` starts a
real Milvus 2.3.5 server here (no Docker, see ``multivec.testing.servers``) and loads it over
gRPC; its bytes on disk are the server's data directory.

Each mode reports recall@10 against exact brute-force MaxSim over the whole loaded collection,
the median and p95 wall-clock latency per query, and for ``multivec`` the median of each stage
(encode / ann / fetch / rerank, from ``SearchResult.timings``).

Run: ``python benchmarks/bench_engines.py [--docs N] [--queries Q] [--json PATH]``
(set ``OPENBLAS_THREAD_TIMEOUT=1`` on a shared machine; ``--engines`` picks engines).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import multivec
from benchmarks._data import ScifactVectors, scifact
from benchmarks.bench_scifact import exact_scores, ndcg_at_10, top_k
from multivec._collection import SearchMode
from multivec.muvera import FDEConfig, fit
from multivec.testing.servers import embedded_milvus_server

K = 10
BATCH = 500
WARMUP = 5
FIT_SAMPLE = 2000
MULTIVEC_CANDIDATES = (100, 200, 400)
PREFETCH_CANDIDATES = 200
ENGINES = {
    "lancedb": "lancedb://{tmp}",
    "qdrant-edge": "qdrant+edge://{tmp}",
    "milvus-lite": "milvus+lite://{tmp}/m.db",
    "qdrant-local": "qdrant+local://{tmp}",
    # A real Milvus server started here without Docker: Milvus's embedded distribution, 2.3.5
    # (multivec.testing.servers.embedded_milvus_server); the URI is the server's.
    "milvus-2.3-server": "milvus://<embedded server>",
    # Qdrant's own two-stage path as its documentation builds it: an unfitted SimHash MUVERA
    # (Google's reference, which fastembed's Muvera follows) in the prefetch, then Qdrant's MaxSim.
    "qdrant-edge-reference-fde": "qdrant+edge://{tmp}",
}
REFERENCE_FDE_ENGINES = {"qdrant-edge-reference-fde"}
REFERENCE_PREFETCH = (200, 400, 800)
PACKAGES = (
    "lancedb",
    "qdrant-edge-py",
    "qdrant-client",
    "pymilvus",
    "milvus-lite",
    "milvus",
    "numpy",
)


@dataclasses.dataclass(frozen=True)
class Mode:
    """One search configuration: a ``search(mode=...)`` value and its candidate count."""

    mode: SearchMode
    candidates: int
    n_queries: int
    # URI options of a second connection to the same collection ("" for the first).
    options: str = ""

    @property
    def label(self) -> str:
        """How the tables name the mode."""
        name = self.mode + ("+client-rerank" if "rerank=client" in self.options else "")
        return name if self.mode == "native" else f"{name}@{self.candidates}"


def subset(data: ScifactVectors, n_docs: int, n_queries: int) -> ScifactVectors:
    """The first ``n_docs`` passages and the first ``n_queries`` queries."""
    return dataclasses.replace(
        data,
        doc_ids=data.doc_ids[:n_docs],
        docs=data.docs[:n_docs],
        query_ids=data.query_ids[:n_queries],
        queries=data.queries[:n_queries],
    )


def modes_for(backend: Any, n_queries: int, native_queries: int, engine: str) -> list[Mode]:
    """The search modes ``backend`` supports, with the number of queries each runs."""
    if engine in REFERENCE_FDE_ENGINES:
        return [Mode("native-prefetch", c, n_queries) for c in REFERENCE_PREFETCH]
    modes = [Mode("multivec", c, n_queries) for c in MULTIVEC_CANDIDATES]
    if backend.engine_rerank:
        modes.append(Mode("multivec", PREFETCH_CANDIDATES, n_queries, "?rerank=client"))
    if backend.supports_native_multivector:
        modes.append(Mode("native", 0, min(native_queries, n_queries)))
    if backend.supports_native_prefetch:
        modes.append(Mode("native-prefetch", PREFETCH_CANDIDATES, n_queries))
    return modes


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def load(col: multivec.Collection, data: ScifactVectors) -> float:
    """Upsert every passage in batches, then ``optimize()``; return the seconds taken."""
    t0 = time.perf_counter()
    for start in range(0, len(data.docs), BATCH):
        col.upsert(data.doc_ids[start : start + BATCH], data.docs[start : start + BATCH])
    col.optimize()
    return time.perf_counter() - t0


def search(col: multivec.Collection, query: Any, mode: Mode) -> multivec.SearchResult:
    return col.search(query, k=K, candidates=mode.candidates or K, mode=mode.mode)


def run_mode(
    col: multivec.Collection,
    data: ScifactVectors,
    truth: Sequence[set[str]],
    mode: Mode,
    budget_s: float | None,
) -> dict[str, Any]:
    """Warm up, then time ``mode`` over its queries and score recall@10 against ``truth``.

    With ``budget_s``, queries stop once that many seconds have been spent (the warm-up stops
    at a third of it), so a slow engine runs on a prefix of the queries; the output says how many.
    """
    start = time.perf_counter()
    for q in data.queries[:WARMUP]:
        search(col, q, mode)
        if budget_s is not None and time.perf_counter() - start > budget_s / 3:
            break
    start = time.perf_counter()
    totals, stages, recalls, ndcgs = [], [], [], []
    for qi in range(mode.n_queries):
        if budget_s is not None and time.perf_counter() - start > budget_s:
            break
        t0 = time.perf_counter()
        result = search(col, data.queries[qi], mode)
        totals.append((time.perf_counter() - t0) * 1e3)
        stages.append(result.timings.as_ms())
        ranked = [str(i) for i in result.ids]
        recalls.append(len(set(ranked) & truth[qi]) / K)
        ndcgs.append(ndcg_at_10(ranked, data.qrels.get(data.query_ids[qi], {})))
    out: dict[str, Any] = {
        "mode": mode.mode,
        "label": mode.label,
        "rerank": ("engine" if col.backend.engine_rerank else "client")
        if mode.mode == "multivec"
        else None,
        "candidates": mode.candidates or None,
        "queries": len(totals),
        "recall@10": float(np.mean(recalls)),
        "ndcg@10": float(np.mean(ndcgs)),
        "median_ms": float(np.median(totals)),
        "p95_ms": float(np.percentile(totals, 95)),
    }
    if mode.mode == "multivec":
        out["stage_median_ms"] = {
            s: float(np.median([t[s] for t in stages]))
            for s in ("encode", "ann", "fetch", "rerank")
        }
    return out


@contextlib.contextmanager
def engine_server(name: str, tmp: str) -> Iterator[str | None]:
    """The URI of a server this engine needs, started in ``tmp`` and stopped afterwards."""
    if name != "milvus-2.3-server":
        yield None
        return
    with embedded_milvus_server(tmp) as uri:
        yield uri


def run_engine(
    name: str,
    data: ScifactVectors,
    config: FDEConfig,
    truth: Sequence[set[str]],
    native_queries: int,
    budget_s: float | None,
) -> dict[str, Any]:
    """Load ``data`` into a fresh collection of engine ``name`` and run its search modes."""
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp,
        engine_server(name, tmp) as server,
    ):
        uri = server or ENGINES[name].format(tmp=tmp)
        fde = (
            FDEConfig.preset("muvera-10240", dim=data.dim)
            if name in REFERENCE_FDE_ENGINES
            else config
        )
        col = multivec.connect(uri, "scifact", dim=data.dim, fde=fde)
        load_s = load(col, data)
        # A server's stored data only (its etcd and object storage), not its unpacked binaries.
        disk = dir_bytes(Path(tmp) / "data" if server else Path(tmp))
        entry: dict[str, Any] = {
            "uri": ENGINES[name].format(tmp="<tmp>"),
            "load_s": load_s,
            "docs_per_s": len(data.docs) / load_s,
            "disk_bytes": disk,
            "bytes_per_doc": disk / len(data.docs),
            "modes": [],
        }
        print(f"{name}: loaded {len(data.docs)} docs in {load_s:.1f} s", flush=True)
        for mode in modes_for(col.backend, len(data.queries), native_queries, name):
            view = multivec.connect(uri + mode.options, "scifact") if mode.options else col
            res = run_mode(view, data, truth, mode, budget_s)
            print(f"  {mode.label}: {json.dumps(res)}", flush=True)
            entry["modes"].append(res)
        col.drop()
        col.close()
    return entry


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for pkg in packages:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def ground_truth(data: ScifactVectors) -> tuple[list[set[str]], float, float]:
    """Exact MaxSim over the loaded passages: top-10 ids per query, ms per query, nDCG@10."""
    t0 = time.perf_counter()
    exact = exact_scores(data)
    ms = (time.perf_counter() - t0) / len(data.queries) * 1e3
    ranked = [top_k(exact[i], data.doc_ids, K) for i in range(len(data.queries))]
    ndcg = np.mean(
        [ndcg_at_10(r, data.qrels.get(q, {})) for r, q in zip(ranked, data.query_ids, strict=True)]
    )
    return [set(r) for r in ranked], ms, float(ndcg)


def print_table(report: dict[str, Any]) -> None:
    p = report["parameters"]
    print(
        f"\n## Engines on SciFact MiniLM: {p['docs']} passages, {p['queries']} queries "
        f"(native: first {p['native_queries']}), k={K}\n"
    )
    print(f"exact MaxSim nDCG@10: {p['exact_maxsim_ndcg@10']:.4f}\n")
    print(
        "| engine | mode | queries | recall@10 | nDCG@10 | median ms | p95 ms | load s "
        "| bytes/doc |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, eng in report["engines"].items():
        for m in eng["modes"]:
            print(
                f"| {name} | {m['label']} | {m['queries']} | {m['recall@10']:.3f} | "
                f"{m['ndcg@10']:.3f} | "
                f"{m['median_ms']:.1f} | {m['p95_ms']:.1f} | {eng['load_s']:.1f} | "
                f"{eng['bytes_per_doc']:,.0f} |"
            )
    print("\nmultivec stage medians (ms): encode / ann / fetch / rerank")
    for name, eng in report["engines"].items():
        for m in eng["modes"]:
            if "stage_median_ms" in m:
                s = m["stage_median_ms"]
                print(
                    f"- {name} {m['label']}: {s['encode']:.1f} / {s['ann']:.1f} / "
                    f"{s['fetch']:.1f} / {s['rerank']:.1f}"
                )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=None, help="passages to load (default all)")
    parser.add_argument("--queries", type=int, default=None, help="queries (default all 300)")
    parser.add_argument("--native-queries", type=int, default=30)
    parser.add_argument(
        "--mode-budget-s",
        type=float,
        default=None,
        help="stop a mode's queries after this many seconds (default: no limit)",
    )
    parser.add_argument(
        "--engines",
        nargs="+",
        choices=list(ENGINES),
        default=["lancedb", "qdrant-edge", "milvus-lite"],
    )
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    load_avg = os.getloadavg()
    full = scifact("minilm")
    config = fit(FDEConfig.preset("muvera-10240", dim=full.dim), full.docs[:FIT_SAMPLE])
    data = subset(full, args.docs or len(full.docs), args.queries or len(full.queries))
    truth, exact_ms, exact_ndcg = ground_truth(data)
    report: dict[str, Any] = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_at_start": list(load_avg),
        "versions": versions(),
        "parameters": {
            "encoder": data.model_id,
            "dim": data.dim,
            "docs": len(data.docs),
            "tokens": int(sum(d.shape[0] for d in data.docs)),
            "queries": len(data.queries),
            "native_queries": min(args.native_queries, len(data.queries)),
            "k": K,
            "warmup_queries": WARMUP,
            "upsert_batch": BATCH,
            "fde": f"fit(muvera-10240, first {FIT_SAMPLE} passages), one config for all engines",
            "fde_dim": config.fde_dim,
            "ground_truth": "exact brute-force MaxSim over the loaded passages",
            "exact_maxsim_ms_per_query": exact_ms,
            "exact_maxsim_ndcg@10": exact_ndcg,
            "latency": "wall clock around Collection.search, after warm-up",
            "mode_budget_s": args.mode_budget_s,
        },
        "engines": {},
    }
    for name in args.engines:
        report["engines"][name] = run_engine(
            name, data, config, truth, args.native_queries, args.mode_budget_s
        )
        if args.json:  # keep what is done so far if a later engine is interrupted
            args.json.write_text(json.dumps(report, indent=2))
    print_table(report)


if __name__ == "__main__":
    main()
