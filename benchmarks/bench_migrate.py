"""Migration throughput and memory: ``multivec migrate`` between two embedded engines.

Data: the first ``--docs`` passages (default 50,000) of the grown SciFact corpus of
``bench_growth.py`` (5,183 real MiniLM passages, then synthetic ones made from them; about 177
tokens x 384 dims of float16 per passage, 136 KB), with small metadata and a short text each.
They are loaded into the source engine first (not timed) and the source is optimized. The FDE
is the default ``muvera-10240`` preset (40 KB per document), copied to the target unchanged.

Then ``multivec migrate SOURCE TARGET --json`` runs in a child process, as a user would run
it, so its peak resident memory (``ru_maxrss``) can be read. The copy rate is the report's own
(copy phase only: read, FDE encoding, write, ledger); optimize and verification are timed
separately. A second child that only imports multivec and the engines' SDKs gives the baseline
memory, so the migration's own memory is the difference. Compare: qdrant/migration publishes
about 880 points/s for a sequential Qdrant-to-Qdrant run (single-vector points, far smaller).

Run: ``python benchmarks/bench_migrate.py [--docs N] [--source lancedb] [--target qdrant-edge]
[--batch-mb 32] [--workers 2] [--verify] [--json PATH]`` (set ``OPENBLAS_THREAD_TIMEOUT=1`` on a
shared machine; ``--docs 2000`` is a smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=GROWN, help=f"documents (<= {GROWN})")
    parser.add_argument("--source", choices=sorted(ENGINES), default="lancedb")
    parser.add_argument("--target", choices=sorted(ENGINES), default="qdrant-edge")
    parser.add_argument("--batch-mb", type=float, default=32.0)
    parser.add_argument("--workers", type=int, default=2, help="writer threads (the default)")
    parser.add_argument("--verify", action="store_true", help="also time the verification")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if not 0 < args.docs <= GROWN:
        parser.error(f"--docs must be between 1 and {GROWN}")

    with tempfile.TemporaryDirectory(prefix="bench-migrate-") as tmp:
        src = ENGINES[args.source].format(dir=f"{tmp}/source")
        tgt = ENGINES[args.target].format(dir=f"{tmp}/target")
        print(f"loading {args.docs} documents into {args.source} (not timed) ...", flush=True)
        load_seconds = load_source(src, args.docs)
        schemes = sorted({src.split("+")[0].split(":")[0], tgt.split("+")[0].split(":")[0]})
        _, baseline_mb = run_measured(IMPORTS, schemes)
        cmd = ["migrate", src, tgt, "--collection", "bench", "--ledger", f"{tmp}/ledger"]
        cmd += ["--batch-mb", str(args.batch_mb), "--workers", str(args.workers), "--json"]
        if not args.verify:
            cmd.append("--no-verify")
        print(f"migrating {args.source} -> {args.target} in a child process ...", flush=True)
        t0 = time.perf_counter()
        stdout, peak_mb = run_measured("main(sys.argv[1:])", cmd)
        wall = time.perf_counter() - t0
        report = json.loads(stdout)
        verification: Any = report["verification"]
        results = {
            "benchmark": "migrate",
            "documents": args.docs,
            "source": args.source,
            "target": args.target,
            "batch_mb": args.batch_mb,
            "workers": args.workers,
            "load_source_seconds": round(load_seconds, 1),
            "copy_seconds": round(report["seconds"], 2),
            "documents_per_second": round(report["documents_per_second"], 1),
            "mib_per_second": round(report["bytes_per_second"] / 2**20, 1),
            "vectors": report["vectors"],
            "bytes": report["bytes"],
            "fde": report["fde"],
            "optimize_seconds": round(report["optimize_seconds"], 1),
            "verify_seconds": None if verification is None else round(verification["seconds"], 1),
            "verified_ok": None if verification is None else verification["ok"],
            "child_wall_seconds": round(wall, 1),
            "peak_rss_mb": round(peak_mb, 1),
            "import_baseline_rss_mb": round(baseline_mb, 1),
            "target_bytes_on_disk": dir_bytes(Path(tmp) / "target"),
            "speedup_vs_qdrant_migration_880": round(
                report["documents_per_second"] / QDRANT_MIGRATION_POINTS_PER_S, 2
            ),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "versions": versions(),
        }
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
