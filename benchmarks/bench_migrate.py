"""Migration throughput and memory: ``multivec migrate`` between two embedded engines.

Data: the first ``--docs`` passages (default 50,000) of the grown SciFact corpus of
``bench_growth.py`` (5,183 real MiniLM passages, then synthetic ones made from them; about 177
tokens x 384 dims of float16 per passage, 136 KB), with small metadata and a short text each.
They are loaded into the source engine first (not timed) and the source is optimized. The FDE
is the default ``muvera-10240`` preset (40 KB per document), copied to the target unchanged.

Then, ``--repeats`` times (default 3), into a fresh target each time:

* ``multivec migrate SOURCE TARGET --json --no-optimize --no-verify`` runs in a child process,
  as a user would run it, so its peak resident memory (VmHWM) can be read. The copy rate is
  the report's own (copy phase only: read, FDE check, write, ledger).
* For LanceDB to LanceDB, the baseline runs beside it: LanceDB's own streamed table copy
  (``create_table(data=<the source's record batches>)``) in a child process, with no ordering,
  no checks and no ledger; the engine's plain copy speed on the same data.

Medians are reported, with each run. The last target is then optimized (timed) and, with
``--verify``, verified (timed). A child that only imports multivec and the engines' SDKs
gives the baseline memory. Compare: qdrant/migration publishes about 880 points/s for a
sequential Qdrant-to-Qdrant run (single-vector points, far smaller than these documents).

Run: ``python benchmarks/bench_migrate.py [--docs N] [--source lancedb] [--target lancedb]
[--batch-mb 32] [--workers 2] [--repeats 3] [--verify] [--json PATH]`` (set
``OPENBLAS_THREAD_TIMEOUT=1`` on a shared machine; ``--docs 2000`` is a smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import multivec
from benchmarks._data import REPO_ROOT, scifact
from benchmarks.bench_engines import dir_bytes, versions
from benchmarks.bench_growth import grow

GROWN = 50_000
LOAD_BATCH = 500
QDRANT_MIGRATION_POINTS_PER_S = 880
# The URI of each engine, given the folder that holds its data.
ENGINES = {
    "lancedb": "lancedb://{dir}",
    "qdrant-edge": "qdrant+edge://{dir}",
    "milvus-lite": "milvus+lite://{dir}/m.db",
}
# A child's peak memory is its VmHWM at exit: ru_maxrss would also count the parent's pages,
# which a child started with vfork or fork carries until it execs (Linux only, like /proc).
PEAK = (
    "import sys; from multivec.cli import main; code = {call}; "
    "hwm = [x for x in open('/proc/self/status') if x.startswith('VmHWM')][0]; "
    "sys.stderr.write('\\nPEAK ' + hwm); sys.exit(code)"
)
# The baseline: multivec and the engines' SDKs imported, nothing done.
IMPORTS = "[__import__('multivec.backends').backends.get_backend(s) for s in sys.argv[1:]] and 0"


def load_source(uri: str, n: int) -> float:
    """Upsert the first ``n`` grown passages into ``uri`` collection ``bench``; seconds taken."""
    corpus = grow(scifact("minilm"), GROWN)
    t0 = time.perf_counter()
    col = multivec.connect(uri, "bench", dim=corpus.tokens.shape[1])
    for start in range(0, n, LOAD_BATCH):
        stop = min(start + LOAD_BATCH, n)
        ids = corpus.ids[start:stop]
        col.upsert(
            ids,
            corpus.docs(start, stop),
            [{"n": i, "real": i < 5183, "source": "scifact"} for i in range(start, stop)],
            texts=[f"passage {doc_id}" for doc_id in ids],
        )
    col.optimize()
    col.close()
    return time.perf_counter() - t0


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OPENBLAS_THREAD_TIMEOUT": "1"}


def run_measured(call: str, args: list[str]) -> tuple[str, float]:
    """Run ``call`` in a child with ``args``; return its stdout and peak memory in MB."""
    cmd = [sys.executable, "-c", PEAK.format(call=call), *args]
    done = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1, 3) or "PEAK VmHWM:" not in done.stderr:
        raise RuntimeError(f"{args[:3]} failed:\n{done.stderr[-3000:]}")
    kib = int(done.stderr.rsplit("PEAK VmHWM:", 1)[1].split()[0])
    return done.stdout, kib / 1024


def lance_copy(source_dir: str, target_dir: str) -> float:
    """LanceDB's own streamed copy of table ``bench`` in a child; the seconds it took."""
    code = (
        "import sys, time, lancedb; t = time.perf_counter(); "
        "src = lancedb.connect(sys.argv[1]).open_table('bench'); "
        "lancedb.connect(sys.argv[2]).create_table('bench', "
        "data=src.search().limit(None).to_batches(256), schema=src.schema); "
        "print(time.perf_counter() - t)"
    )
    cmd = [sys.executable, "-c", code, source_dir, target_dir]
    done = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=GROWN, help=f"documents (<= {GROWN})")
    parser.add_argument("--source", choices=sorted(ENGINES), default="lancedb")
    parser.add_argument("--target", choices=sorted(ENGINES), default="lancedb")
    parser.add_argument("--batch-mb", type=float, default=32.0)
    parser.add_argument("--workers", type=int, default=2, help="writer threads (the default)")
    parser.add_argument("--repeats", type=int, default=3, help="copies, each into a new target")
    parser.add_argument("--verify", action="store_true", help="also time the verification")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if not 0 < args.docs <= GROWN:
        parser.error(f"--docs must be between 1 and {GROWN}")
    baseline = args.source == args.target == "lancedb"

    with tempfile.TemporaryDirectory(prefix="bench-migrate-") as tmp:
        src = ENGINES[args.source].format(dir=f"{tmp}/source")
        print(f"loading {args.docs} documents into {args.source} (not timed) ...", flush=True)
        load_seconds = load_source(src, args.docs)
        schemes = sorted({src.split("+")[0].split(":")[0], args.target.split("-")[0]})
        _, import_mb = run_measured(IMPORTS, schemes)
        runs: list[dict[str, Any]] = []
        for repeat in range(args.repeats):
            target_dir = Path(tmp) / "target"
            tgt = ENGINES[args.target].format(dir=target_dir)
            cmd = ["migrate", src, tgt, "--collection", "bench", "--ledger", f"{tmp}/ledger"]
            cmd += ["--batch-mb", str(args.batch_mb), "--workers", str(args.workers)]
            cmd += ["--json", "--no-optimize", "--no-verify"]
            print(f"run {repeat + 1}: migrating {args.source} -> {args.target} ...", flush=True)
            t0 = time.perf_counter()
            stdout, peak_mb = run_measured("main(sys.argv[1:])", cmd)
            wall = time.perf_counter() - t0
            report = json.loads(stdout)
            run = {
                "copy_seconds": round(report["seconds"], 2),
                "documents_per_second": round(report["documents_per_second"], 1),
                "mib_per_second": round(report["bytes_per_second"] / 2**20, 1),
                "child_wall_seconds": round(wall, 1),
                "peak_rss_mb": round(peak_mb, 1),
            }
            if baseline:
                shutil.rmtree(f"{tmp}/raw", ignore_errors=True)
                raw = lance_copy(f"{tmp}/source", f"{tmp}/raw")
                run["lancedb_copy_seconds"] = round(raw, 2)
                run["lancedb_copy_documents_per_second"] = round(args.docs / raw, 1)
                run["ratio_vs_lancedb_copy"] = round(raw / report["seconds"], 2)
                shutil.rmtree(f"{tmp}/raw")
            print(json.dumps(run), flush=True)
            runs.append(run)
            if repeat + 1 < args.repeats:
                shutil.rmtree(target_dir)
                shutil.rmtree(f"{tmp}/ledger")
        with multivec.connect(tgt, "bench") as target:
            t0 = time.perf_counter()
            target.optimize()
            optimize_seconds = time.perf_counter() - t0
        verify_seconds = verified_ok = None
        if args.verify:
            report_v = multivec.verify(src, tgt, collection="bench")
            verify_seconds, verified_ok = round(report_v.seconds, 1), report_v.ok

        def median(key: str) -> float:
            return round(float(statistics.median(r[key] for r in runs)), 2)

        results: dict[str, Any] = {
            "benchmark": "migrate",
            "documents": args.docs,
            "source": args.source,
            "target": args.target,
            "batch_mb": args.batch_mb,
            "workers": args.workers,
            "repeats": args.repeats,
            "load_source_seconds": round(load_seconds, 1),
            "median": {key: median(key) for key in runs[0] if key not in ("child_wall_seconds",)},
            "runs": runs,
            "vectors": report["vectors"],
            "bytes": report["bytes"],
            "fde": report["fde"],
            "optimize_seconds": round(optimize_seconds, 1),
            "verify_seconds": verify_seconds,
            "verified_ok": verified_ok,
            "import_baseline_rss_mb": round(import_mb, 1),
            "target_bytes_on_disk": dir_bytes(target_dir),
            "speedup_vs_qdrant_migration_880": round(
                median("documents_per_second") / QDRANT_MIGRATION_POINTS_PER_S, 2
            ),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "versions": versions(),
        }
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
