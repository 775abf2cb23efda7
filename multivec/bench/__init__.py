"""Benchmark backends and search modes on one dataset: load, quality, latency, throughput, storage.

The same documents are loaded into each backend and the same queries run in every search mode
the backend supports (multivec's FDE first stage with exact rerank, the database's native
scoring where it has one), sweeping the candidate count and the FDE configuration. Built only
on the public collection API::

    from multivec.bench import BenchConfig, load_beir, run_benchmark, write_report

    data = load_beir("../shared/data/scifact", max_docs=300, max_queries=10, cache_dir=".cache")
    results = run_benchmark(data, ["memory://", "lancedb://{tmp}"], BenchConfig(repeats=1))
    write_report(results, "bench-results")        # report.md + PNG plots

or from the command line: ``multivec bench --dataset ../shared/data/scifact --out DIR``.

The results document (``schema: "multivec-bench/1"``), in brief::

    command, started_at, finished_at
    machine      platform, cores, memory, load average at start and end
    versions     multivec, python, model, packages {name: version or null}
    dataset      name, model_id, dim, documents, document_tokens, queries, query_tokens,
                 judged, meta
    parameters   BenchConfig's fields, ndcg_cutoff, how latency is taken
    ground_truth method, ms_per_query, ndcg, judged_recall (exact MaxSim's own quality)
    fde          [{label, fde_dim, fit_s}]
    backends     [{name, uri (secrets masked), placement ("in-process" | "server"),
                   server {image} | null, capabilities, error | null,
                   collections: [{fde, load {documents, create_s, upsert_s, docs_per_s,
                                             optimize_s, searchable_s, storage_bytes,
                                             bytes_per_doc, storage_method},
                                  runs: [{mode, candidates, rerank ("engine" | "client" |
                                          null), queries, truncated_by_budget, repeats, error,
                                          quality {recall, first_stage_recall, ndcg,
                                                   judged_recall},
                                          latency_ms {total|encode|ann|fetch|rerank:
                                                      {p50, p95, p99, mean}},
                                          latency_passes_ms [{p50, p95, p99, mean}],
                                          throughput [{threads, qps, queries, planned,
                                                       p50_ms, p99_ms, errors, first_error,
                                                       qps_passes}] | null}]}]}]
    notes        what was not equal between backends, stated from the measurements

``recall`` is recall@k against exact MaxSim (ties tolerated), ``first_stage_recall`` the same
for the candidates reaching the rerank (multivec mode with a client-side rerank only: a rerank
inside the database, as on Qdrant, does not name its candidates), ``ndcg`` nDCG@``ndcg_cutoff`` and
``judged_recall`` recall@``recall_depth`` against the judgements (``null`` without them).
"""

from __future__ import annotations

from multivec.bench._dataset import (
    VECTORS_FORMAT,
    Dataset,
    Progress,
    load_beir,
    load_vectors,
    save_vectors,
)
from multivec.bench._harness import RESULTS_SCHEMA, BenchConfig, Target, run_benchmark
from multivec.bench._metrics import (
    PERCENTILES,
    exact_threshold,
    judged_recall_at_k,
    ndcg_at_k,
    percentiles,
    recall_at_k,
)
from multivec.bench._report import PLOTS, render_markdown, write_report
from multivec.bench._servers import SERVER_KINDS, started_servers

__all__ = [
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
