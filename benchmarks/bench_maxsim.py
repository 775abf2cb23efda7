"""Exact MaxSim kernels side by side: multivec's numba kernel against NumPy and maxsim-cpu.

Usage::

    python benchmarks/bench_maxsim.py [--json PATH] [--repeat N] [--workloads a,b,c,c20]

Workloads (token width 128, seeded, unit-norm tokens):

* ``a``: query 32 x 128 against 1,000 documents of 256 tokens;
* ``b``: query 32 x 128 against 1,000 documents of 50 to 512 tokens (uniform);
* ``c``: query 32 x 128 against 200 documents of 1,030 tokens (page images);
* ``c20``: as ``c`` with a 20-token query (the size of the project's earlier measurements).

Every method is timed once per round, rounds interleave the methods (so drift and other work on
the machine hit them all alike), and the table shows the median over ``--repeat`` rounds after
one warm-up call each, with GFLOP/s = 2 * n_q * tokens * dim / time. A 2048 x 2048 float32
matrix product timed in the same rounds gives the machine's practical compute ceiling under the
same load (the "% sgemm" column).

Before NumPy is imported this script sets ``OPENBLAS_THREAD_TIMEOUT=20`` unless it is already
set. By default OpenBLAS threads keep spinning for about 0.1 s after each matrix product, which
halves the speed of a numba kernel started in that window (whatever follows a NumPy method in a
round would pay for it); with 20 they spin about 2**20 cycles (well under a millisecond): long
enough to stay awake between the back-to-back products of the per-document loop (the minimum, 4,
made that loop markedly slower here), short enough to be idle when the next method starts.
"""

from __future__ import annotations

import os

# Must happen before NumPy loads OpenBLAS, which reads it once.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from multivec.rerank import maxsim, maxsim_numpy, maxsim_packed, numba_available

DIM = 128

WORKLOADS: dict[str, dict[str, Any]] = {
    "a": {"n_q": 32, "n_docs": 1000, "lengths": (256, 256), "label": "1,000 docs x 256 tokens"},
    "b": {"n_q": 32, "n_docs": 1000, "lengths": (50, 512), "label": "1,000 docs x 50-512 tokens"},
    "c": {"n_q": 32, "n_docs": 200, "lengths": (1030, 1030), "label": "200 docs x 1,030 tokens"},
    "c20": {"n_q": 20, "n_docs": 200, "lengths": (1030, 1030), "label": "as c, 20-token query"},
}


def make_workload(
    name: str, seed: int = 0
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """The query, packed float32 tokens and offsets of one workload (seeded)."""
    spec = WORKLOADS[name]
    rng = np.random.default_rng(seed)
    lo, hi = spec["lengths"]
    lengths = rng.integers(lo, hi + 1, spec["n_docs"])
    offsets = np.zeros(spec["n_docs"] + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = rng.standard_normal((int(offsets[-1]), DIM), dtype=np.float32)
    tokens /= np.linalg.norm(tokens, axis=1, keepdims=True)
    query = rng.standard_normal((spec["n_q"], DIM), dtype=np.float32)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    return query, tokens, offsets


def numpy_loop(query: npt.NDArray[np.float32], docs: list[npt.NDArray[np.float32]]) -> np.ndarray:
    """NumPy, one matrix product per document."""
    return np.array([(query @ d.T).max(axis=1).sum() for d in docs], dtype=np.float32)


SGEMM = "sgemm 2048 (ceiling)"
"""The row that times a 2048 x 2048 float32 matrix product: the practical compute ceiling."""


def sgemm_call(n: int = 2048) -> tuple[Callable[[], object], float]:
    """A float32 ``n x n`` matrix product and its FLOP count."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    return (lambda: a @ b), 2.0 * n**3


def methods_for(
    query: npt.NDArray[np.float32], tokens: npt.NDArray[np.float32], offsets: npt.NDArray[np.int64]
) -> dict[str, Callable[[], object]]:
    """The methods compared on one workload, as zero-argument callables."""
    docs = [tokens[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
    half = tokens.astype(np.float16)
    methods: dict[str, Callable[[], object]] = {}
    if numba_available():
        methods["multivec numba f32"] = lambda: maxsim_packed(query, tokens, offsets)
        methods["multivec numba f16"] = lambda: maxsim_packed(query, half, offsets)
        methods["multivec numba f32 list"] = lambda: maxsim(query, docs)
    methods["numpy q@T+reduceat f32"] = lambda: maxsim_numpy(query, tokens, offsets)
    methods["numpy q@T+reduceat f16"] = lambda: maxsim_numpy(query, half, offsets)
    methods["numpy per-doc loop f32"] = lambda: numpy_loop(query, docs)
    try:
        import maxsim_cpu
    except ImportError:
        print("maxsim-cpu is not installed; skipping it (pip install maxsim-cpu)", file=sys.stderr)
    else:
        methods["maxsim-cpu variable"] = lambda: maxsim_cpu.maxsim_scores_variable(query, docs)
        if len({d.shape[0] for d in docs}) == 1:
            stacked = tokens.reshape(len(docs), -1, DIM)
            methods["maxsim-cpu fixed"] = lambda: maxsim_cpu.maxsim_scores(query, stacked)
    return methods


def run_workload(name: str, repeat: int) -> dict[str, Any]:
    """Time every method (and the sgemm ceiling) on one workload, interleaved, and summarise."""
    query, tokens, offsets = make_workload(name)
    flops = 2.0 * query.shape[0] * tokens.shape[0] * DIM
    methods = methods_for(query, tokens, offsets)
    reference = maxsim_numpy(query, tokens, offsets)
    for label, fn in methods.items():  # warm-up (compiles numba on a cold cache) and check
        result = np.asarray(fn(), dtype=np.float32)
        tol = 2e-3 if "f16" in label else 1e-4
        if not np.allclose(result, reference, rtol=tol, atol=tol * float(np.abs(reference).max())):
            raise SystemExit(f"{label} disagrees with the NumPy reference on workload {name}")
    # The ceiling is timed in the same rounds, so it sees the same load as the methods.
    sgemm, sgemm_flops = sgemm_call()
    sgemm()
    timed = {**methods, SGEMM: sgemm}
    times: dict[str, list[float]] = {label: [] for label in timed}
    for _ in range(repeat):
        for label, fn in timed.items():
            t0 = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - t0)
    rows = {
        label: {
            "ms_median": 1e3 * float(np.median(ts)),
            "ms_min": 1e3 * float(np.min(ts)),
            "gflops": (sgemm_flops if label == SGEMM else flops) / float(np.median(ts)) / 1e9,
        }
        for label, ts in times.items()
    }
    return {
        "label": WORKLOADS[name]["label"],
        "n_q": int(query.shape[0]),
        "tokens": int(tokens.shape[0]),
        "gflop": flops / 1e9,
        "methods": rows,
        "ratios": _ratios(rows),
    }


def _best(rows: dict[str, dict[str, float]], prefix: str) -> float | None:
    times = [r["ms_median"] for label, r in rows.items() if label.startswith(prefix)]
    return min(times) if times else None


def _ratios(rows: dict[str, dict[str, float]]) -> dict[str, float]:
    """Speed-ups of multivec (float32 and float16 storage) over the best of each competitor."""
    out = {}
    numpy_best = _best(rows, "numpy")  # the faster of the two NumPy formulations
    cpu_best = _best(rows, "maxsim-cpu")
    for ours in ("multivec numba f32", "multivec numba f16"):
        if ours not in rows:
            continue
        tag = ours.rsplit(" ", 1)[1]
        if numpy_best is not None:
            out[f"{tag} vs best numpy"] = numpy_best / rows[ours]["ms_median"]
        if cpu_best is not None:
            out[f"{tag} vs maxsim-cpu"] = cpu_best / rows[ours]["ms_median"]
    return out


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
        "openblas_thread_timeout": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
        "numba_kernel": numba_available(),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info["cpu"] = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None
            )
    except OSError:
        info["cpu"] = platform.processor()
    if info["numba_kernel"]:
        import numba

        info["numba"] = numba.__version__
        info["numba_threads"] = numba.get_num_threads()
    if hasattr(os, "getloadavg"):
        info["load_average_start"] = os.getloadavg()[0]
    return info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--repeat", type=int, default=15, help="timed rounds per workload")
    parser.add_argument("--workloads", default="a,b,c,c20", help="comma-separated: a,b,c,c20")
    args = parser.parse_args(argv)
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in names if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {sorted(WORKLOADS)}")

    info = machine()
    results = {name: run_workload(name, args.repeat) for name in names}
    if hasattr(os, "getloadavg"):
        info["load_average_end"] = os.getloadavg()[0]

    print(
        f"{info.get('cpu')}, {info['cpus']} CPUs, numba threads {info.get('numba_threads')}, "
        f"median of {args.repeat} rounds, load average {info.get('load_average_start')} "
        f"at start, {info.get('load_average_end')} at end"
    )
    for name, res in results.items():
        print(f"\n({name}) query {res['n_q']}x{DIM} vs {res['label']}: {res['gflop']:.2f} GFLOP")
        print(f"  {'method':<26}{'ms':>9}{'GFLOP/s':>10}{'% sgemm':>9}")
        ceiling = res["methods"][SGEMM]["gflops"]
        for label, row in res["methods"].items():
            share = 100 * row["gflops"] / ceiling
            print(f"  {label:<26}{row['ms_median']:>9.2f}{row['gflops']:>10.1f}{share:>9.0f}")
        for label, ratio in res["ratios"].items():
            print(f"  {label}: {ratio:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "workloads": results}, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
