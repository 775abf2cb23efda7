"""How search latency grows with the collection: 5k, 20k and 50k documents per embedded engine.

Data: the 5,183 SciFact passages encoded by MiniLM (384-d tokens), then synthetic passages made
from them up to the largest size. Synthetic passage ``j`` joins a random span of about 60 % of
the tokens of one real passage and about 40 % of another (both picked at random), adds Gaussian
noise (sigma 0.02 per value) and re-normalises every token, as MiniLM's tokens are. They are
topical distractors with the real token distribution, never exact copies. The set is seeded and
cached in ``benchmarks/.cache/growth-<n>`` (about 137 KB per passage).

For each engine one collection grows: load up to 5k, ``optimize()``, measure; add up to 20k,
measure; add up to 50k, measure. At each size every variant (a URI option set and a search mode
over the same stored data) runs the first ``--queries`` test queries after warm-up, and reports
recall@10 against exact brute-force MaxSim over the documents loaded so far, median and p95
latency, and the median of each multivec stage. The FDE configuration is the one of
``bench_engines.py`` (``fit`` on the first 2,000 real passages), the same for every engine.

Sub-linear means: latency at 50k divided by latency at 5k is well below 50,000 / 5,000 = 10.

``--engines milvus-2.3-server`` (not in the default set) grows a collection on a real Milvus
2.3.5 server started here without Docker (see ``bench_engines.py``).

Run: ``python benchmarks/bench_growth.py [--sizes 5000 20000 50000] [--queries 100]
[--engines ...] [--json PATH]`` (set ``OPENBLAS_THREAD_TIMEOUT=1`` on a shared machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import multivec
from benchmarks._data import ScifactVectors, cache_dir, scifact
from benchmarks.bench_engines import FIT_SAMPLE, dir_bytes, engine_server, versions
from benchmarks.bench_scifact import top_k
from multivec._collection import SearchMode
from multivec.muvera import FDEConfig, fit
from multivec.rerank import maxsim_packed

K = 10
CANDIDATES = 200
BATCH = 500
WARMUP = 5
SEED = 20261124
NOISE = 0.02


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way to search the same stored collection: URI options and a search mode."""

    label: str
    options: str
    mode: SearchMode


ENGINES: dict[str, tuple[str, list[Variant]]] = {
    "lancedb": (
        "lancedb://{tmp}",
        [
            # The HNSW search breadth defaults to the number of candidates.
            Variant("multivec@200 (HNSW ef 200)", "", "multivec"),
            Variant("multivec@200 (HNSW ef 400)", "?ef=400", "multivec"),
        ],
    ),
    "qdrant-edge": (
        "qdrant+edge://{tmp}",
        [
            # multivec's default on Qdrant reranks inside the engine (one prefetch-then-MaxSim
            # request); the client-side rerank is the comparison.
            Variant("multivec@200 (engine rerank)", "", "multivec"),
            Variant("multivec@200 (client rerank)", "?rerank=client", "multivec"),
        ],
    ),
    "milvus-lite": ("milvus+lite://{tmp}/m.db", [Variant("multivec@200", "", "multivec")]),
    # A real Milvus 2.3.5 server started here (see bench_engines); not in the default set.
    "milvus-2.3-server": ("milvus://<embedded server>", [Variant("multivec@200", "", "multivec")]),
}


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Real then synthetic passages; passage ``i`` is ``tokens[offsets[i] : offsets[i + 1]]``."""

    ids: list[str]
    tokens: npt.NDArray[np.float16]
    offsets: npt.NDArray[np.int64]

    def docs(self, start: int, stop: int) -> list[npt.NDArray[np.float16]]:
        """Passages ``start`` to ``stop`` (views, no copies)."""
        return [self.tokens[self.offsets[i] : self.offsets[i + 1]] for i in range(start, stop)]


def grow(real: ScifactVectors, n: int) -> Corpus:
    """The first ``n`` passages of the grown corpus, built once and cached (see the module doc)."""
    folder = cache_dir() / f"growth-{n}"
    meta = folder / "meta.json"
    if meta.exists() and json.loads(meta.read_text()) == {"seed": SEED, "noise": NOISE, "n": n}:
        offsets = np.load(folder / "offsets.npy")
        tokens = np.load(folder / "tokens.npy", mmap_mode="r")
        ids = json.loads((folder / "ids.json").read_text())
        return Corpus(ids, tokens, offsets)
    rng = np.random.default_rng(SEED)
    n_real = min(n, len(real.docs))
    # First the spans of every synthetic passage, so the token array can be written in place.
    spans: list[list[tuple[int, int, int]]] = []
    for _ in range(n - n_real):
        spans.append([])
        for source, share in zip(rng.integers(0, len(real.docs), size=2), (0.6, 0.4), strict=True):
            rows = real.docs[source].shape[0]
            length = max(1, round(share * rows))
            spans[-1].append((int(source), int(rng.integers(0, rows - length + 1)), length))
    lengths = [d.shape[0] for d in real.docs[:n_real]] + [sum(s[2] for s in x) for x in spans]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    folder.mkdir(parents=True, exist_ok=True)
    tokens = np.lib.format.open_memmap(
        folder / "tokens.npy", mode="w+", dtype=np.float16, shape=(int(offsets[-1]), real.dim)
    )
    for i in range(n_real):
        tokens[offsets[i] : offsets[i + 1]] = real.docs[i]
    for j, parts in enumerate(spans):
        doc = np.concatenate(
            [
                real.docs[src][start : start + length].astype(np.float32)
                for src, start, length in parts
            ]
        )
        doc += rng.normal(scale=NOISE, size=doc.shape).astype(np.float32)
        doc /= np.linalg.norm(doc, axis=1, keepdims=True)
        tokens[offsets[n_real + j] : offsets[n_real + j + 1]] = doc
    tokens.flush()
    del tokens
    np.save(folder / "offsets.npy", offsets)
    ids = list(real.doc_ids[:n_real]) + [f"syn-{j}" for j in range(n - n_real)]
    (folder / "ids.json").write_text(json.dumps(ids))
    meta.write_text(json.dumps({"seed": SEED, "noise": NOISE, "n": n}))
    return grow(real, n)


def exact_scores(corpus: Corpus, queries: list[npt.NDArray[np.float32]]) -> npt.NDArray[Any]:
    """(n_queries, n_docs) exact MaxSim, computed in slices to bound memory."""
    out = np.empty((len(queries), len(corpus.ids)), dtype=np.float32)
    step = 5000
    for lo in range(0, len(corpus.ids), step):
        hi = min(lo + step, len(corpus.ids))
        tokens = np.ascontiguousarray(corpus.tokens[corpus.offsets[lo] : corpus.offsets[hi]])
        offsets = corpus.offsets[lo : hi + 1] - corpus.offsets[lo]
        for qi, q in enumerate(queries):
            out[qi, lo:hi] = maxsim_packed(q, tokens, offsets)
    return out


def measure(
    col: multivec.Collection,
    variant: Variant,
    queries: list[npt.NDArray[np.float32]],
    truth: list[set[str]],
) -> dict[str, Any]:
    """Warm up, then time ``variant`` over the queries; recall@10 against ``truth``."""
    for q in queries[:WARMUP]:
        col.search(q, k=K, candidates=CANDIDATES, mode=variant.mode)
    totals, stages, recalls = [], [], []
    for q, expected in zip(queries, truth, strict=True):
        t0 = time.perf_counter()
        result = col.search(q, k=K, candidates=CANDIDATES, mode=variant.mode)
        totals.append((time.perf_counter() - t0) * 1e3)
        stages.append(result.timings.as_ms())
        recalls.append(len({str(i) for i in result.ids} & expected) / K)
    out: dict[str, Any] = {
        "variant": variant.label,
        "recall@10": float(np.mean(recalls)),
        "median_ms": float(np.median(totals)),
        "p95_ms": float(np.percentile(totals, 95)),
    }
    if variant.mode == "multivec":
        out["stage_median_ms"] = {
            s: float(np.median([t[s] for t in stages]))
            for s in ("encode", "ann", "fetch", "rerank")
        }
    return out


def run_engine(
    name: str,
    corpus: Corpus,
    sizes: list[int],
    config: FDEConfig,
    queries: list[npt.NDArray[np.float32]],
    exact: npt.NDArray[Any],
    report: dict[str, Any],
    json_path: Path | None,
) -> None:
    template, variants = ENGINES[name]
    entry: dict[str, Any] = report["engines"].setdefault(name, {"sizes": []})
    with (
        tempfile.TemporaryDirectory(prefix=f"growth-{name}-") as tmp,
        engine_server(name, tmp) as server,
    ):
        uri = server or template.format(tmp=tmp)
        col = multivec.connect(uri, "growth", dim=corpus.tokens.shape[1], fde=config)
        loaded, load_s = 0, 0.0
        for size in sizes:
            t0 = time.perf_counter()
            for start in range(loaded, size, BATCH):
                stop = min(start + BATCH, size)
                col.upsert(corpus.ids[start:stop], corpus.docs(start, stop))
            col.optimize()
            load_s += time.perf_counter() - t0
            loaded = size
            truth = [set(top_k(exact[qi, :size], corpus.ids, K)) for qi in range(len(queries))]
            point: dict[str, Any] = {
                "docs": size,
                "load_s_total": load_s,
                "bytes_per_doc": dir_bytes(Path(tmp) / "data" if server else Path(tmp)) / size,
                "variants": [],
            }
            print(f"{name} at {size}: loaded in {load_s:.0f} s so far", flush=True)
            for variant in variants:
                view = multivec.connect(uri + variant.options, "growth")
                res = measure(view, variant, queries, truth)
                print(f"  {json.dumps(res)}", flush=True)
                point["variants"].append(res)
            entry["sizes"].append(point)
            if json_path:  # keep what is done so far if a later step is interrupted
                json_path.write_text(json.dumps(report, indent=2))
        col.drop()
        col.close()


def print_table(report: dict[str, Any]) -> None:
    p = report["parameters"]
    print(f"\n## Latency growth: {p['queries']} queries, k={K}, {CANDIDATES} candidates\n")
    print("| engine | variant | docs | recall@10 | median ms | p95 ms | ann / fetch / rerank ms |")
    print("|---|---|---|---|---|---|---|")
    for name, eng in report["engines"].items():
        for point in eng["sizes"]:
            for v in point["variants"]:
                s = v.get("stage_median_ms")
                stages = f"{s['ann']:.1f} / {s['fetch']:.1f} / {s['rerank']:.1f}" if s else "-"
                print(
                    f"| {name} | {v['variant']} | {point['docs']:,} | {v['recall@10']:.3f} | "
                    f"{v['median_ms']:.1f} | {v['p95_ms']:.1f} | {stages} |"
                )
    print(
        "\nmedian latency at the largest size / at the smallest (collection grew "
        f"{p['sizes'][-1] / p['sizes'][0]:.0f}x):"
    )
    for name, eng in report["engines"].items():
        first, last = eng["sizes"][0], eng["sizes"][-1]
        for a, b in zip(first["variants"], last["variants"], strict=True):
            print(f"- {name} {a['variant']}: {b['median_ms'] / a['median_ms']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 50000])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument(
        "--engines",
        nargs="+",
        choices=list(ENGINES),
        default=[name for name in ENGINES if name != "milvus-2.3-server"],
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    sizes = sorted(args.sizes)
    load_avg = os.getloadavg()
    real = scifact("minilm")
    config = fit(FDEConfig.preset("muvera-10240", dim=real.dim), real.docs[:FIT_SAMPLE])
    corpus = grow(real, sizes[-1])
    queries = real.queries[: args.queries]
    t0 = time.perf_counter()
    cached = cache_dir() / f"growth-{sizes[-1]}" / f"exact-{len(queries)}.npy"
    if cached.exists():
        exact = np.load(cached)
    else:
        exact = exact_scores(corpus, queries)
        np.save(cached, exact)
    report: dict[str, Any] = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_at_start": list(load_avg),
        "versions": versions(),
        "parameters": {
            "encoder": real.model_id,
            "sizes": sizes,
            "real_passages": len(real.docs),
            "synthetic": "span of ~60% of one real passage + ~40% of another, noise 0.02, "
            "tokens re-normalised (see the module docstring)",
            "queries": len(queries),
            "k": K,
            "candidates": CANDIDATES,
            "fde": f"fit(muvera-10240, first {FIT_SAMPLE} passages)",
            "exact_maxsim_s": time.perf_counter() - t0,
            "latency": "wall clock around Collection.search, after warm-up",
        },
        "engines": {},
    }
    for name in args.engines:
        run_engine(name, corpus, sizes, config, queries, exact, report, args.json)
    print_table(report)


if __name__ == "__main__":
    main()
