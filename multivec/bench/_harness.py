"""The benchmark run: the same documents and queries through every backend, every mode, every sweep.

For each backend and each FDE configuration a fresh collection is created and loaded (that is
the load measurement), then every search mode the backend supports runs over the queries:

* ``multivec`` at every candidate count of the sweep: FDE ANN in the database, exact MaxSim here;
* ``native-prefetch`` at every candidate count (backends with ``supports_native_prefetch``);
* ``native``, the database's exhaustive MaxSim (``supports_native_multivector``), once, on the
  first FDE configuration: it does not read the FDE.

Every measurement of one mode follows the same protocol: ``warmup`` untimed queries, then the
queries in order, timed one at a time (wall clock around :meth:`Collection.search`, plus the stage
times it reports); that pass is repeated ``repeats`` times and each percentile is the median over
the passes. With a time budget, the first pass stops when the budget is spent, and that prefix of
the queries is used for everything else in the mode (and it runs once); the results say so.
Throughput runs at one operating point per mode (the candidate count nearest ``qps_candidates``)
on the first FDE configuration: threads share one collection and pull the next query from a
common counter.

Quality is scored against exact brute-force MaxSim over the loaded documents at the storage
precision (recall@k after rerank, and of the first stage: did the exact top k reach the rerank?),
and against the relevance judgements when the dataset has them (nDCG@10 from the timed pass;
recall@100 from a second, untimed pass that asks for 100 hits).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import multivec
from multivec._collection import SEARCH_MODES, SearchMode
from multivec._uri import URI
from multivec._validation import StorageDtype
from multivec.backends import Backend
from multivec.bench._dataset import Dataset, Progress
from multivec.bench._metrics import (
    exact_threshold,
    judged_recall_at_k,
    ndcg_at_k,
    percentiles,
    recall_at_k,
)
from multivec.errors import ConfigurationError
from multivec.muvera import PRESETS, FDEConfig, FDEEncoder, fit
from multivec.rerank import maxsim_packed

__all__ = ["RESULTS_SCHEMA", "BenchConfig", "Target", "run_benchmark"]

RESULTS_SCHEMA = "multivec-bench/1"
"""The ``schema`` value of a results document."""

STAGES = ("encode", "ann", "fetch", "rerank")
TMP_PLACEHOLDER = "{tmp}"
# Reference SimHash partitions instead of fitted k-means, e.g. "muvera-10240:simhash".
_SIMHASH_SUFFIX = ":simhash"
_VERSIONED_PACKAGES = (
    "numpy",
    "numba",
    "lancedb",
    "pyarrow",
    "qdrant-client",
    "qdrant-edge-py",
    "pymilvus",
    "milvus-lite",
    "weaviate-client",
    "onnxruntime",
    "tokenizers",
    "fastembed",
    "testcontainers",
    "matplotlib",
)


@dataclass(frozen=True)
class BenchConfig:
    """What to measure; the same for every backend.

    Attributes:
        k: Hits per query.
        candidates: First-stage candidate counts to sweep (``multivec``, ``native-prefetch``).
        fde: FDE presets to sweep (:data:`multivec.muvera.PRESETS`); append ``":simhash"`` to
            keep the reference SimHash partitions instead of fitting.
        fit_docs: Fit the FDEs on the first this many documents; 0 fits none (all SimHash).
        modes: Search modes to run where the backend supports them.
        warmup: Untimed queries before each measurement.
        repeats: Timed passes over the queries; percentiles are medians over passes.
        concurrency: Thread counts for the throughput runs; empty skips them.
        qps_candidates: Throughput runs at the swept candidate count nearest this.
        mode_budget_s: Seconds one mode's first timed pass may take, or ``None`` for no limit.
            A mode cut short by it runs that pass once and spends at most about three budgets:
            the timed pass, the recall@depth pass and its throughput runs (which share one),
            plus a quarter for the warm-up.
        recall_depth: Hits asked for in the untimed pass scoring recall@depth against the
            judgements; 0 skips that pass.
        batch_size: Documents per upsert call.
        dtype: Storage precision of token vectors (the ground truth uses the same).
        searchable_timeout_s: Give up waiting for a loaded collection to answer after this.
        command: The command line that reproduces the run, recorded in the results.
    """

    k: int = 10
    candidates: tuple[int, ...] = (50, 100, 200, 500)
    fde: tuple[str, ...] = ("muvera-10240",)
    fit_docs: int = 2000
    modes: tuple[SearchMode, ...] = SEARCH_MODES
    warmup: int = 5
    repeats: int = 3
    concurrency: tuple[int, ...] = (1, 2, 4, 8)
    qps_candidates: int = 200
    mode_budget_s: float | None = None
    recall_depth: int = 100
    batch_size: int = 256
    dtype: StorageDtype = "float16"
    searchable_timeout_s: float = 120.0
    command: str | None = None

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigurationError(f"k must be at least 1, got {self.k}")
        if not self.candidates or min(self.candidates) < self.k:
            raise ConfigurationError(
                f"candidate counts must be given and at least k={self.k}, got {self.candidates}"
            )
        if not self.fde:
            raise ConfigurationError("at least one FDE configuration is needed")
        for spec in self.fde:
            if spec.removesuffix(_SIMHASH_SUFFIX) not in PRESETS:
                raise ConfigurationError(
                    f"unknown FDE {spec!r}; use one of {sorted(PRESETS)}, optionally with "
                    f"{_SIMHASH_SUFFIX!r}"
                )
        unknown = set(self.modes) - set(SEARCH_MODES)
        if unknown or not self.modes:
            raise ConfigurationError(f"modes must be among {SEARCH_MODES}, got {self.modes}")
        if self.repeats < 1 or self.warmup < 0 or self.fit_docs < 0 or self.recall_depth < 0:
            raise ConfigurationError("repeats must be >= 1; warmup, fit_docs, recall_depth >= 0")
        if any(n < 1 for n in self.concurrency):
            raise ConfigurationError(f"thread counts must be >= 1, got {self.concurrency}")
        if self.mode_budget_s is not None and self.mode_budget_s <= 0:
            raise ConfigurationError("mode_budget_s must be positive")
        if self.batch_size < 1:
            raise ConfigurationError("batch_size must be at least 1")


@dataclass(frozen=True)
class Target:
    """One database to benchmark.

    Attributes:
        uri: A multivec URI. ``{tmp}`` in it is replaced by a fresh temporary folder, removed
            afterwards (``lancedb://{tmp}``).
        name: The label in results and plots; defaults to the URI's scheme and driver.
        container_image: The image, when the benchmark started the server in a container.
    """

    uri: str
    name: str | None = None
    container_image: str | None = None


@dataclass
class _Truth:
    """Exact MaxSim of every query against every document, and what follows from it."""

    scores: npt.NDArray[np.float32]
    thresholds: list[float]
    index: dict[str, int]
    ms_per_query: float

    def view(self, q: int) -> _ScoreView:
        return _ScoreView(self.index, self.scores[q])


class _ScoreView(Mapping[str, float]):
    """Query ``q``'s exact scores by document id, without building a dict per query."""

    def __init__(self, index: dict[str, int], row: npt.NDArray[np.float32]) -> None:
        self._index = index
        self._row = row

    def __getitem__(self, doc: str) -> float:
        return float(self._row[self._index[doc]])

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


@dataclass(frozen=True)
class _Fde:
    label: str
    config: FDEConfig
    fit_s: float | None


@dataclass
class _Search:
    """Runs one mode at one candidate count, with a shared time budget."""

    col: multivec.Collection
    dataset: Dataset
    mode: SearchMode
    candidates: int | None
    budget_s: float | None
    started: float = field(default_factory=time.perf_counter)

    def __call__(self, q: int, k: int) -> multivec.SearchResult:
        return self.col.search(
            self.dataset.query(q), k=k, candidates=self.candidates or k, mode=self.mode
        )

    def restart(self) -> None:
        self.started = time.perf_counter()

    def over_budget(self, share: float = 1.0) -> bool:
        if self.budget_s is None:
            return False
        return time.perf_counter() - self.started > self.budget_s * share


def run_benchmark(
    dataset: Dataset,
    targets: Sequence[Target | str],
    config: BenchConfig | None = None,
    *,
    progress: Progress | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """Benchmark ``targets`` on ``dataset``; return every measurement as a JSON-ready dict.

    A backend that fails (a missing extra, an unreachable server, an error mid-run) is recorded
    with its error and the run goes on with the others.

    Args:
        dataset: Documents, queries and optional judgements.
        targets: Databases, as :class:`Target` or plain URIs.
        config: What to measure; the defaults when ``None``.
        progress: Receives one line per step.
        notes: Extra statements for the report's list of what was not equal (for instance
            servers that could not be started).

    Returns:
        The results document (schema ``multivec-bench/1``; see :mod:`multivec.bench`).
    """
    cfg = config or BenchConfig()
    say = progress or (lambda _message: None)
    started_at = _now()
    load_before = _load_average()
    say(f"ground truth: exact MaxSim of {dataset.n_queries} queries x {dataset.n_docs} documents")
    truth = _ground_truth(dataset, cfg)
    fdes = _fit_fdes(dataset, cfg, say)
    results: dict[str, Any] = {
        "schema": RESULTS_SCHEMA,
        "command": cfg.command,
        "started_at": started_at,
        "machine": _machine(load_before),
        "versions": _versions(dataset),
        "dataset": _describe_dataset(dataset),
        "parameters": {
            **{key: value for key, value in asdict(cfg).items() if key != "command"},
            "ndcg_cutoff": min(cfg.k, 10),
            "latency": "wall clock around Collection.search after warm-up; stages from "
            "SearchResult.timings; each percentile is the median over the repeated passes",
        },
        "ground_truth": _truth_summary(dataset, truth, cfg),
        "fde": [{"label": f.label, "fde_dim": f.config.fde_dim, "fit_s": f.fit_s} for f in fdes],
        "backends": [],
        "notes": list(notes),
    }
    labels: set[str] = set()
    for target in targets:
        spec = Target(target) if isinstance(target, str) else target
        name = _unique(spec.name or _default_name(spec.uri), labels)
        say(f"{name}: {URI.parse(spec.uri).render()}")
        results["backends"].append(_run_target(spec, name, dataset, truth, fdes, cfg, say))
    results["finished_at"] = _now()
    results["machine"]["load_average_at_end"] = _load_average()
    results["notes"].extend(_inequalities(results, cfg))
    return results


def _run_target(
    spec: Target,
    name: str,
    dataset: Dataset,
    truth: _Truth,
    fdes: Sequence[_Fde],
    cfg: BenchConfig,
    say: Progress,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "uri": URI.parse(spec.uri).render(),
        "placement": None,
        "server": {"image": spec.container_image} if spec.container_image else None,
        "error": None,
        "collections": [],
    }
    with _resolved(spec.uri) as uri:
        try:
            _warm_up_backend(uri, dataset, fdes[0], cfg)
            for position, fde in enumerate(fdes):
                entry["collections"].append(
                    _run_collection(uri, entry, position, fde, dataset, truth, cfg, say)
                )
        except Exception as exc:  # one backend's failure must not lose the others' results
            entry["error"] = f"{type(exc).__name__}: {exc}"
            say(f"{name}: failed: {entry['error']}")
    return entry


def _run_collection(
    uri: str,
    entry: dict[str, Any],
    position: int,
    fde: _Fde,
    dataset: Dataset,
    truth: _Truth,
    cfg: BenchConfig,
    say: Progress,
) -> dict[str, Any]:
    before = _bytes_before(uri)
    container_before = _container_bytes(uri)
    collection = f"bench_{position}_{uuid.uuid4().hex[:8]}"
    connecting = time.perf_counter()
    col = multivec.connect(uri, collection, dim=dataset.dim, fde=fde.config, dtype=cfg.dtype)
    try:
        t0 = time.perf_counter()
        backend = col.backend
        local = _local_root(uri)
        in_process = not backend.persistent or local is not None
        entry["placement"] = "in-process" if in_process else "server"
        if not in_process and "version" not in (entry["server"] or {}):
            entry["server"] = entry["server"] or {}
            try:
                entry["server"]["version"] = backend.server_version()
            except Exception as exc:  # a version is worth a note, not the run
                entry["server"]["version"] = f"unknown ({type(exc).__name__}: {exc})"
        entry["capabilities"] = {
            "supports_native_multivector": backend.supports_native_multivector,
            "supports_native_prefetch": backend.supports_native_prefetch,
        }
        # The backend as it opened the collection (secrets masked): names what mode="native"
        # runs where a collection's layout chooses it (Weaviate's mv_encoding).
        entry["backend"] = repr(backend)
        for start in range(0, dataset.n_docs, cfg.batch_size):
            stop = min(start + cfg.batch_size, dataset.n_docs)
            col.upsert(dataset.doc_ids[start:stop], [dataset.doc(i) for i in range(start, stop)])
        upserted = time.perf_counter()
        col.optimize()
        optimized = time.perf_counter()
        _wait_searchable(col, dataset, cfg)
        searchable = time.perf_counter()
        if local is not None:
            stored: int | None = _tree_bytes(local) - before.get(local, 0)
        elif container_before is not None:
            stored = (_container_bytes(uri) or 0) - container_before
        else:
            stored = None
        load = {
            "documents": dataset.n_docs,
            "create_s": t0 - connecting,
            "upsert_s": upserted - t0,
            "docs_per_s": dataset.n_docs / (upserted - t0),
            "optimize_s": optimized - upserted,
            "searchable_s": searchable - t0,
            "storage_bytes": stored,
            "bytes_per_doc": None if stored is None else stored / dataset.n_docs,
            "storage_method": _storage_method(local, in_process, container_before is not None),
        }
        say(
            f"{entry['name']} [{fde.label}]: loaded {dataset.n_docs} documents in "
            f"{load['upsert_s']:.1f} s, searchable after {load['searchable_s']:.1f} s"
        )
        runs = []
        for mode, candidates in _mode_points(backend, cfg, primary=position == 0):
            search = _Search(col, dataset, mode, candidates, cfg.mode_budget_s)
            qps_point = position == 0 and candidates in (None, _qps_point(cfg))
            try:
                run = _measure(search, truth, cfg, with_throughput=qps_point)
            except Exception as exc:  # a mode can fail where others work (limits, timeouts)
                run = {
                    "mode": mode,
                    "candidates": candidates,
                    "error": f"{type(exc).__name__}: {exc}",
                }
            runs.append(run)
            say(f"  {_run_label(run)}: {_run_summary(run, cfg)}")
        return {"fde": fde.label, "load": load, "runs": runs}
    finally:
        with contextlib.suppress(Exception):  # cleanup must not hide the real error
            col.drop()
        col.close()


def _warm_up_backend(uri: str, dataset: Dataset, fde: _Fde, cfg: BenchConfig) -> None:
    """Load a few documents into a throwaway collection and search it in every mode, untimed.

    The first use of a backend pays for importing its SDK, opening the engine and compiling
    kernels; without this the first measured collection would carry those costs and the
    later ones would not.
    """
    col = multivec.connect(
        uri,
        f"bench_warmup_{uuid.uuid4().hex[:8]}",
        dim=dataset.dim,
        fde=fde.config,
        dtype=cfg.dtype,
    )
    try:
        n = min(cfg.batch_size, dataset.n_docs, 16)
        col.upsert(dataset.doc_ids[:n], [dataset.doc(i) for i in range(n)])
        col.optimize()
        for mode, candidates in _mode_points(col.backend, cfg, primary=True):
            col.search(dataset.query(0), k=cfg.k, candidates=candidates or cfg.k, mode=mode)
    finally:
        with contextlib.suppress(Exception):  # cleanup must not hide the real error
            col.drop()
        col.close()


def _mode_points(
    backend: Backend, cfg: BenchConfig, *, primary: bool
) -> list[tuple[SearchMode, int | None]]:
    points: list[tuple[SearchMode, int | None]] = []
    if "multivec" in cfg.modes:
        points += [("multivec", c) for c in cfg.candidates]
    if "native-prefetch" in cfg.modes and backend.supports_native_prefetch:
        points += [("native-prefetch", c) for c in cfg.candidates]
    if "native" in cfg.modes and backend.supports_native_multivector and primary:
        points.append(("native", None))
    return points


def _qps_point(cfg: BenchConfig) -> int:
    return min(cfg.candidates, key=lambda c: (abs(c - cfg.qps_candidates), c))


def _measure(
    search: _Search, truth: _Truth, cfg: BenchConfig, *, with_throughput: bool
) -> dict[str, Any]:
    dataset = search.dataset
    for q in range(min(cfg.warmup, dataset.n_queries)):
        # A quarter of the budget at most: warm-up must not eat the measured queries' time.
        if search.over_budget(0.25):
            break
        search(q, cfg.k)
    search.restart()
    walls: list[float] = []
    first: list[multivec.SearchResult] = []
    for q in range(dataset.n_queries):
        # At least one query runs, however small the budget: a mode is never left unmeasured.
        if q and search.over_budget():
            break
        t0 = time.perf_counter()
        first.append(search(q, cfg.k))
        walls.append(time.perf_counter() - t0)
    used = len(first)
    truncated = used < dataset.n_queries
    passes = [_latency(walls, [r.timings for r in first])]
    # A mode cut short by its budget runs once: repeating it would spend the budget again.
    for _ in range(0 if truncated else cfg.repeats - 1):
        walls, timings = [], []
        for q in range(used):
            t0 = time.perf_counter()
            timings.append(search(q, cfg.k).timings)
            walls.append(time.perf_counter() - t0)
        passes.append(_latency(walls, timings))
    run: dict[str, Any] = {
        "mode": search.mode,
        "candidates": search.candidates,
        # Where multivec's exact rerank ran: "engine" (inside the database, which does not
        # report its candidates, so first_stage_recall is None) or "client".
        "rerank": (
            ("engine" if search.col.backend.engine_rerank else "client")
            if search.mode == "multivec"
            else None
        ),
        "queries": used,
        "truncated_by_budget": truncated,
        "repeats": len(passes),
        "quality": _quality(search, first, truth, cfg),
        "latency_ms": _median_of(passes),
        "latency_passes_ms": [p["total"] for p in passes],
        "throughput": None,
        "error": None,
    }
    if with_throughput and cfg.concurrency and used:
        run["throughput"] = [
            _throughput(search, used, threads, cfg, repeats=len(passes))
            for threads in cfg.concurrency
        ]
    return run


def _latency(walls: Sequence[float], timings: Sequence[multivec.StageTimings]) -> dict[str, Any]:
    out = {"total": percentiles([w * 1e3 for w in walls])}
    for stage in STAGES:
        out[stage] = percentiles([getattr(t, stage) * 1e3 for t in timings])
    return out


def _median_of(passes: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {
        part: {stat: statistics.median(p[part][stat] for p in passes) for stat in passes[0][part]}
        for part in passes[0]
    }


def _quality(
    search: _Search, results: Sequence[multivec.SearchResult], truth: _Truth, cfg: BenchConfig
) -> dict[str, float | None]:
    dataset = search.dataset
    recalls, first_stage, ndcgs = [], [], []
    for q, result in enumerate(results):
        exact = truth.view(q)
        ranked = [str(i) for i in result.ids]
        recalls.append(recall_at_k(ranked, exact, truth.thresholds[q], cfg.k))
        if result.candidate_ids:
            candidates = [str(i) for i in result.candidate_ids]
            first_stage.append(recall_at_k(candidates, exact, truth.thresholds[q], cfg.k))
        if dataset.qrels is not None:
            ndcgs.append(
                ndcg_at_k(ranked, dataset.qrels.get(dataset.query_ids[q], {}), min(cfg.k, 10))
            )
    return {
        "recall": _mean(recalls),
        "first_stage_recall": _mean(first_stage),
        "ndcg": _mean(ndcgs),
        "judged_recall": _judged_recall(search, len(results), cfg),
    }


def _judged_recall(search: _Search, used: int, cfg: BenchConfig) -> float | None:
    """Recall@depth against the judgements, from an untimed pass asking for ``depth`` hits.

    Skipped (``None``) without judgements, or when fewer candidates than ``depth`` reach the
    rerank: the ranking would stop short of ``depth``.
    """
    dataset, depth = search.dataset, cfg.recall_depth
    if dataset.qrels is None or depth == 0:
        return None
    if search.candidates is not None and search.candidates < depth:
        return None
    search.restart()
    values = []
    for q in range(used):
        if q and search.over_budget():
            break
        ranked = [str(i) for i in search(q, depth).ids]
        values.append(
            judged_recall_at_k(ranked, dataset.qrels.get(dataset.query_ids[q], {}), depth)
        )
    return _mean(values)


def _throughput(
    search: _Search, used: int, threads: int, cfg: BenchConfig, *, repeats: int
) -> dict[str, Any]:
    """Queries per second with ``threads`` threads sharing one collection (the median pass).

    Each pass issues the measured queries, and at least two per thread (cycling), so every
    thread has work. With a time budget, all the throughput passes of a mode share one budget.
    """
    total = max(used, 2 * threads)
    share = 1 / (len(cfg.concurrency) * repeats)
    samples = [_throughput_pass(search, used, total, threads, cfg.k, share) for _ in range(repeats)]
    median = sorted(samples, key=lambda s: float(s["qps"]))[len(samples) // 2]
    return {"threads": threads, **median, "qps_passes": [s["qps"] for s in samples]}


def _throughput_pass(
    search: _Search, used: int, total: int, threads: int, k: int, share: float
) -> dict[str, Any]:
    counter = iter(range(total))
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    search.restart()

    def worker() -> None:
        # Each thread runs at least one query; the budget is checked after it.
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                return
            t0 = time.perf_counter()
            try:
                search(n % used, k)
            except Exception as exc:  # counted and reported, not raised from a thread
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
            else:
                with lock:
                    latencies.append(time.perf_counter() - t0)
            if search.over_budget(share):
                return

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    t0 = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    wall = time.perf_counter() - t0
    return {
        "qps": len(latencies) / wall if wall > 0 else 0.0,
        "queries": len(latencies),
        "planned": total,
        "p50_ms": float(np.percentile(latencies, 50)) * 1e3 if latencies else None,
        "p99_ms": float(np.percentile(latencies, 99)) * 1e3 if latencies else None,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def _wait_searchable(col: multivec.Collection, dataset: Dataset, cfg: BenchConfig) -> None:
    """Wait until the collection counts every document and a search returns ``k`` hits."""
    want = min(cfg.k, dataset.n_docs)
    deadline = time.perf_counter() + cfg.searchable_timeout_s
    while True:
        if col.count() == dataset.n_docs:
            hits = col.search(dataset.query(0), k=cfg.k, candidates=min(cfg.candidates))
            if len(hits) >= want:
                return
        if time.perf_counter() > deadline:
            raise TimeoutError(
                f"the collection was not searchable {cfg.searchable_timeout_s} s after loading"
            )
        time.sleep(0.05)


def _ground_truth(dataset: Dataset, cfg: BenchConfig) -> _Truth:
    tokens = dataset.doc_tokens
    if cfg.dtype == "float16" and tokens.dtype != np.float16:
        # The database holds float16 values; the exact scores must be of the same values.
        tokens = tokens.astype(np.float16)
    # The first call compiles the kernel; it must not count in the time per query.
    maxsim_packed(dataset.query(0), tokens[: dataset.doc_offsets[1]], dataset.doc_offsets[:2])
    t0 = time.perf_counter()
    scores = np.stack(
        [
            maxsim_packed(dataset.query(q), tokens, dataset.doc_offsets)
            for q in range(dataset.n_queries)
        ]
    )
    ms = (time.perf_counter() - t0) * 1e3 / dataset.n_queries
    return _Truth(
        scores=scores,
        thresholds=[exact_threshold(row, cfg.k) for row in scores],
        index={doc: i for i, doc in enumerate(dataset.doc_ids)},
        ms_per_query=ms,
    )


def _truth_summary(dataset: Dataset, truth: _Truth, cfg: BenchConfig) -> dict[str, Any]:
    """Exact MaxSim's own quality against the judgements: the ceiling of every mode."""
    out: dict[str, Any] = {
        "method": f"brute-force exact MaxSim over all loaded documents at {cfg.dtype}",
        "ms_per_query": truth.ms_per_query,
        "ndcg": None,
        "judged_recall": None,
    }
    if dataset.qrels is not None:
        depth = max(cfg.recall_depth, min(cfg.k, 10))
        ndcgs, recalls = [], []
        for q, row in enumerate(truth.scores):
            top = np.argsort(-row, kind="stable")[:depth]
            ranked = [dataset.doc_ids[i] for i in top]
            judged = dataset.qrels.get(dataset.query_ids[q], {})
            ndcgs.append(ndcg_at_k(ranked, judged, min(cfg.k, 10)))
            if cfg.recall_depth:
                recalls.append(judged_recall_at_k(ranked, judged, cfg.recall_depth))
        out["ndcg"] = _mean(ndcgs)
        out["judged_recall"] = _mean(recalls)
    return out


def _fit_fdes(dataset: Dataset, cfg: BenchConfig, say: Progress) -> list[_Fde]:
    sample = [
        np.asarray(dataset.doc(i), dtype=np.float32)
        for i in range(min(cfg.fit_docs, dataset.n_docs))
    ]
    out = []
    for spec in cfg.fde:
        preset = spec.removesuffix(_SIMHASH_SUFFIX)
        config = FDEConfig.preset(preset, dim=dataset.dim)
        if spec.endswith(_SIMHASH_SUFFIX) or not sample:
            out.append(_Fde(f"{preset} simhash", config, None))
            continue
        say(f"fitting {preset} on {len(sample)} documents")
        t0 = time.perf_counter()
        fitted = fit(config, sample)
        out.append(_Fde(f"{preset} fitted", fitted, time.perf_counter() - t0))
    for fde in out:
        # Compiles the encoding kernels now, so no measured load or query pays for it.
        FDEEncoder(fde.config).encode_documents([np.asarray(dataset.doc(0), dtype=np.float32)])
        FDEEncoder(fde.config.for_queries()).encode_queries([dataset.query(0)])
    return out


def _inequalities(results: dict[str, Any], cfg: BenchConfig) -> list[str]:
    """What was not the same for every backend, stated from the measurements themselves."""
    notes = []
    backends = [b for b in results["backends"] if b["placement"] is not None]
    placements = {b["placement"] for b in backends}
    if len(placements) > 1:
        servers = ", ".join(b["name"] for b in backends if b["placement"] == "server")
        notes.append(
            f"Servers ({servers}) answer over the network (a container on this machine when "
            "started by the benchmark) while in-process engines share the benchmark's process; "
            "both compete for the same cores."
        )
    for b in results["backends"]:
        if b["error"]:
            notes.append(f"{b['name']} failed and has partial or no results: {b['error']}")
        for c in b["collections"]:
            for r in c["runs"]:
                if r.get("error"):
                    notes.append(f"{b['name']} [{c['fde']}] {_run_label(r)} failed: {r['error']}")
                elif r["truncated_by_budget"]:
                    notes.append(
                        f"{b['name']} [{c['fde']}] {_run_label(r)} ran only the first "
                        f"{r['queries']} of {results['dataset']['queries']} queries (time budget "
                        f"{cfg.mode_budget_s} s), once; its numbers are over those queries."
                    )
                cut = [
                    t
                    for t in r.get("throughput") or []
                    if t["queries"] + t["errors"] < t["planned"]
                ]
                if cut:
                    notes.append(
                        f"{b['name']} [{c['fde']}] {_run_label(r)}: the throughput runs at "
                        f"{', '.join(str(t['threads']) for t in cut)} threads stopped at the time "
                        "budget before issuing all their queries (QPS over what completed)."
                    )
        loads = [c["load"] for c in b["collections"]]
        if loads and loads[0]["storage_bytes"] is None:
            notes.append(f"{b['name']}: storage not measured ({loads[0]['storage_method']}).")
        capabilities = b.get("capabilities") or {}
        if capabilities and not any(capabilities.values()):
            notes.append(f"{b['name']} has no native multi-vector scoring: multivec mode only.")
    if len(results["fde"]) > 1:
        notes.append(
            "The native exhaustive mode and the throughput runs use the first FDE configuration "
            f"only ({results['fde'][0]['label']}); the native mode does not read the FDE."
        )
    return notes


def _storage_method(local: Path | None, in_process: bool, container: bool) -> str:
    if local is not None:
        return f"bytes on disk added under {local} by the load, after optimize()"
    if in_process:
        return "held in the benchmark's own memory"
    if container:
        return "bytes added by the load to the server container's data directory (du -sk)"
    return "not measured: a server this run did not start reports no per-collection size"


def _container_bytes(uri: str) -> int | None:
    """Bytes in the data directory of a server container this run started, else ``None``."""
    try:
        from multivec.testing.servers import container_data_bytes
    except ImportError:  # the dev extra (pytest, testcontainers) is not installed
        return None
    return container_data_bytes(uri)


def _local_root(uri: str) -> Path | None:
    """The folder an embedded engine writes to (once opened), or ``None`` for servers and memory."""
    location = URI.parse(uri).location
    if not location:
        return None
    path = Path(location)
    if path.is_file():
        # A file-backed engine (milvus+lite://x/m.db) also writes beside the file.
        return path.parent
    return path if path.is_dir() else None


def _bytes_before(uri: str) -> dict[Path, int]:
    """Bytes already under each folder :func:`_local_root` may name once the engine opens."""
    location = URI.parse(uri).location
    if not location:
        return {}
    path = Path(location)
    roots = [path, path.parent] if path.suffix else [path]
    return {root: _tree_bytes(root) for root in roots if root.is_dir()}


def _tree_bytes(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@contextlib.contextmanager
def _resolved(uri: str) -> Iterator[str]:
    if TMP_PLACEHOLDER not in uri:
        yield uri
        return
    with tempfile.TemporaryDirectory(prefix="multivec-bench-") as tmp:
        yield uri.replace(TMP_PLACEHOLDER, tmp)


def _default_name(uri: str) -> str:
    parsed = URI.parse(uri)
    return f"{parsed.scheme}+{parsed.driver}" if parsed.driver else parsed.scheme


def _unique(name: str, taken: set[str]) -> str:
    label, n = name, 1
    while label in taken:
        n += 1
        label = f"{name}#{n}"
    taken.add(label)
    return label


def _run_label(run: Mapping[str, Any]) -> str:
    return str(run["mode"]) + (f"@{run['candidates']}" if run["candidates"] else "")


def _run_summary(run: Mapping[str, Any], cfg: BenchConfig) -> str:
    if run.get("error"):
        return f"failed: {run['error']}"
    total = run["latency_ms"]["total"]
    recall = run["quality"]["recall"]
    return (
        f"{run['queries']} queries, recall@{cfg.k} {recall:.3f}, "
        f"p50 {total['p50']:.1f} ms, p99 {total['p99']:.1f} ms"
    )


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _describe_dataset(dataset: Dataset) -> dict[str, Any]:
    return {
        "name": dataset.name,
        "model_id": dataset.model_id,
        "dim": dataset.dim,
        "documents": dataset.n_docs,
        "document_tokens": int(dataset.doc_offsets[-1]),
        "queries": dataset.n_queries,
        "query_tokens": int(dataset.query_offsets[-1]),
        "judged": dataset.qrels is not None,
        "meta": {k: v for k, v in dataset.meta.items() if k != "cache_key"},
    }


def _versions(dataset: Dataset) -> dict[str, Any]:
    packages: dict[str, str | None] = {}
    for name in _VERSIONED_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "multivec": multivec.__version__,
        "python": sys.version.split()[0],
        "model": dataset.model_id,
        "packages": packages,
    }


def _machine(load_average: list[float] | None) -> dict[str, Any]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = None
    if hasattr(os, "sysconf"):
        with contextlib.suppress(ValueError, OSError):
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpus": os.cpu_count(),
        "usable_cores": cores,
        "memory_bytes": memory,
        "load_average_at_start": load_average,
    }


def _load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
