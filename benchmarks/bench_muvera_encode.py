"""Document-encoding throughput of multivec's MUVERA against fastembed's, side by side.

Both encode the same seeded documents (unit-norm tokens, 50-250 per document, 128-d by default) at
the same configuration: R=20 repetitions, k=5 SimHash bits, Count-Sketch/random projection to 16,
empty partitions filled, so 10240 values per document. Each is run several times in this one process
and the median throughput is reported. fastembed encodes one document per call (its only API), so it
is timed on a subset when the full set would be slow; multivec is timed on the whole batch and, for
reference, one document per call.

The two produce different numbers (different random matrices and projection scaling); only speed
is compared here. The tests check multivec's encodings against the reference's, value for value.

Usage::

    python benchmarks/bench_muvera_encode.py [--n 1000] [--dim 128] [--runs 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from multivec.muvera import FDEConfig, FDEEncoder
from multivec.muvera._kernels import _compiled_kernel

Docs = list[npt.NDArray[np.float32]]


def make_documents(n: int, dim: int, seed: int = 0) -> Docs:
    """Seeded documents of 50-250 unit-norm float32 token vectors."""
    rng = np.random.default_rng(seed)
    docs = []
    for length in rng.integers(50, 251, size=n):
        tokens = rng.standard_normal((int(length), dim)).astype(np.float32)
        tokens /= np.linalg.norm(tokens, axis=1, keepdims=True)
        docs.append(tokens)
    return docs


def median_rate(run: Callable[[], object], n_docs: int, runs: int) -> tuple[float, list[float]]:
    """Median documents per second over ``runs`` timed calls, after one warm-up call."""
    run()
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        rates.append(n_docs / (time.perf_counter() - start))
    return statistics.median(rates), rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="documents to encode (default 1000)")
    parser.add_argument("--dim", type=int, default=128, help="token dimension (default 128)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per method (default 5)")
    parser.add_argument(
        "--fastembed-n",
        type=int,
        default=200,
        help="documents fastembed encodes per run (default 200)",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()

    docs = make_documents(args.n, args.dim)
    n_tokens = sum(doc.shape[0] for doc in docs)
    config = FDEConfig(
        dim=args.dim,
        repetitions=20,
        simhash_projections=5,
        projection="countsketch",
        projection_dim=16,
        fill_empty=True,
    )
    encoder = FDEEncoder(config)
    # Both libraries spend much of their time in OpenBLAS, whose threading settings (and the load
    # on the machine) move these numbers a lot; record them next to the results.
    blas_env = {
        name: os.environ.get(name)
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT")
    }
    numba_kernel = _compiled_kernel() is not None
    print(
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
        f"BLAS settings {blas_env}; numba kernel {'on' if numba_kernel else 'off (numpy fallback)'}"
    )
    print(
        f"{args.n} documents, {n_tokens} tokens ({n_tokens / args.n:.0f}/doc), dim {args.dim}, "
        f"R=20 k=5 d'=16 fill -> {config.fde_dim} values; {args.runs} runs, median"
    )

    batch_rate, batch_runs = median_rate(lambda: encoder.encode_documents(docs), args.n, args.runs)
    print(f"multivec, one batch:        {batch_rate:10.0f} docs/s")

    single_docs = docs[: min(args.n, 500)]
    single_rate, single_runs = median_rate(
        lambda: [encoder.encode_document(doc) for doc in single_docs], len(single_docs), args.runs
    )
    print(f"multivec, one doc per call: {single_rate:10.0f} docs/s  ({len(single_docs)} docs)")

    results: dict[str, object] = {
        "n_docs": args.n,
        "n_tokens": n_tokens,
        "dim": args.dim,
        "config": {"R": 20, "k": 5, "d_proj": 16, "fill": True, "fde_dim": config.fde_dim},
        "runs": args.runs,
        "multivec_batch_docs_per_s": batch_rate,
        "multivec_batch_runs": batch_runs,
        "multivec_single_docs_per_s": single_rate,
        "multivec_single_runs": single_runs,
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "blas_env": blas_env,
        "numba_kernel": numba_kernel,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    try:
        from fastembed.postprocess import Muvera
    except ImportError:
        print("fastembed is not installed: pip install fastembed (comparison skipped)")
    else:
        muvera = Muvera(args.dim, k_sim=5, dim_proj=16, r_reps=20, random_seed=42)
        subset = docs[: min(args.n, args.fastembed_n)]
        fe_rate, fe_runs = median_rate(
            lambda: [muvera.process_document(doc) for doc in subset], len(subset), args.runs
        )
        print(f"fastembed Muvera:           {fe_rate:10.0f} docs/s  ({len(subset)} docs)")
        print(f"ratio (multivec batch / fastembed): {batch_rate / fe_rate:.1f}x")
        results.update(
            fastembed_docs_per_s=fe_rate,
            fastembed_runs=fe_runs,
            fastembed_n_docs=len(subset),
            ratio_batch_vs_fastembed=batch_rate / fe_rate,
            ratio_single_vs_fastembed=single_rate / fe_rate,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
