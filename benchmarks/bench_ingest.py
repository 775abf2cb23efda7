"""Ingest throughput: the whole pipeline against the encoder alone, side by side.

The SciFact corpus (``../shared/data/scifact/corpus.jsonl``, 5,183 abstracts; ``--docs N``
takes the first N) is ingested with the offline MiniLM model
(``../shared/models/all-minilm-l6-v2-onnx``) into a new embedded LanceDB collection in a
temporary folder (default FDE, ``muvera-10240``): reading the JSONL, chunking with the model's
tokenizer, content hashing, the lookup of already-stored chunks, encoding, FDE encoding and
writing, all of :func:`multivec.ingest.ingest`.

Against it, in the same process, the encoder alone encodes exactly the texts the pipeline
encodes (the same chunker on the same records), in the same batches. The difference is the
pipeline's own cost; the goal is under 10 % of the encoder's time. Each repeat runs both, in
alternating order, and medians are reported. A last run ingests the same corpus again into the
full collection, where every chunk is unchanged: the cost of a rerun that has nothing to do.

Throughput is given in documents (JSONL records) per second and tokens (token vectors the
encoder returned) per second.

Run: ``python benchmarks/bench_ingest.py [--docs N] [--repeats R] [--batch-size B] [--json PATH]``
(set ``OPENBLAS_THREAD_TIMEOUT=1`` on a shared machine).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import multivec
from benchmarks.bench_engines import versions
from multivec.ingest import (
    OnnxLateInteractionEncoder,
    chunk_text,
    ingest,
    iter_beir_corpus,
    token_counter,
)
from multivec.ingest._chunking import resolve_max_tokens

SHARED = Path(__file__).resolve().parents[2] / "shared"
CORPUS = SHARED / "data" / "scifact" / "corpus.jsonl"
MODEL = SHARED / "models" / "all-minilm-l6-v2-onnx"
PACKAGES = ("onnxruntime", "tokenizers", "lancedb", "numpy")


def prefix_corpus(docs: int | None, folder: Path) -> Path:
    """The first ``docs`` lines of SciFact, as a JSONL file of its own."""
    path = folder / "corpus.jsonl"
    with CORPUS.open(encoding="utf-8") as source, path.open("w", encoding="utf-8") as target:
        for line in itertools.islice(source, docs):
            target.write(line)
    return path


def encoder_texts(
    corpus: Path, encoder: OnnxLateInteractionEncoder, max_tokens: int | None
) -> list[str]:
    """What the pipeline encodes: each record chunked as ``ingest`` chunks JSONL records."""
    count, limit = token_counter(encoder)
    size = resolve_max_tokens(max_tokens, limit)
    texts = []
    for record in iter_beir_corpus(corpus):
        body, title = (record.text, record.title) if record.text.strip() else (record.title, "")
        chunks = chunk_text(body, count_tokens=count, max_tokens=size, title=title)
        texts.extend(c.embed_text for c in chunks)
    return texts


def time_encoder(
    encoder: OnnxLateInteractionEncoder, texts: list[str], batch_size: int
) -> tuple[float, int]:
    t0 = time.perf_counter()
    tokens = 0
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        tokens += sum(m.shape[0] for m in encoder.embed(batch, batch_size=len(batch)))
    return time.perf_counter() - t0, tokens


def time_pipeline(
    corpus: Path,
    encoder: OnnxLateInteractionEncoder,
    folder: Path,
    batch_size: int,
    max_tokens: int | None,
) -> dict[str, Any]:
    col = multivec.connect(f"lancedb://{folder}", "scifact", dim=encoder.dim)
    t0 = time.perf_counter()
    summary = ingest(corpus, col, encoder, batch_size=batch_size, max_tokens=max_tokens)
    seconds = time.perf_counter() - t0
    col.close()
    return {"seconds": seconds, "summary": summary}


def rates(seconds: float, docs: int, tokens: int) -> dict[str, float]:
    return {
        "seconds": round(seconds, 3),
        "docs_per_s": round(docs / seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=None, help="first N documents (default all)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (default 3)")
    parser.add_argument("--batch-size", type=int, default=32, help="chunks per batch (default 32)")
    parser.add_argument(
        "--max-tokens", type=int, default=None, help="tokens per chunk (default: model limit)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    load_avg = os.getloadavg()
    encoder = OnnxLateInteractionEncoder(MODEL)
    with tempfile.TemporaryDirectory(prefix="multivec-bench-ingest-") as tmp:
        corpus = prefix_corpus(args.docs, Path(tmp))
        n_docs = sum(1 for _ in iter_beir_corpus(corpus))
        texts = encoder_texts(corpus, encoder, args.max_tokens)
        print(
            f"{n_docs} documents -> {len(texts)} chunks; load average {load_avg[0]:.1f} on "
            f"{os.cpu_count()} CPUs; {args.repeats} repeats",
            flush=True,
        )
        # Warm-up: onnxruntime allocates its buffers on the first calls.
        time_encoder(encoder, texts[: 2 * args.batch_size], args.batch_size)
        encoder_runs: list[float] = []
        pipeline_runs: list[dict[str, Any]] = []
        tokens = 0
        for repeat in range(args.repeats):
            # Alternate which goes first, so neither always runs on a warmer machine.
            order = ("encoder", "pipeline") if repeat % 2 == 0 else ("pipeline", "encoder")
            for which in order:
                if which == "encoder":
                    seconds, tokens = time_encoder(encoder, texts, args.batch_size)
                    encoder_runs.append(seconds)
                else:
                    folder = Path(tmp) / f"db-{repeat}"
                    pipeline_runs.append(
                        time_pipeline(corpus, encoder, folder, args.batch_size, args.max_tokens)
                    )
                print(f"  repeat {repeat + 1}: {which} done", flush=True)
        last = pipeline_runs[-1]["summary"]
        if last.chunks != len(texts) or last.tokens != tokens or last.skipped:
            raise SystemExit(
                f"the pipeline encoded {last.chunks} chunks / {last.tokens} tokens, the encoder "
                f"alone {len(texts)} / {tokens}; skipped: {last.skipped}"
            )
        rerun = time_pipeline(
            corpus, encoder, Path(tmp) / f"db-{args.repeats - 1}", args.batch_size, args.max_tokens
        )
        if rerun["summary"].unchanged != len(texts):
            raise SystemExit(f"the rerun found {rerun['summary'].unchanged} unchanged chunks")

    encoder_s = statistics.median(encoder_runs)
    pipeline_s = statistics.median(r["seconds"] for r in pipeline_runs)
    stages = {
        stage: round(statistics.median(r["summary"].timings[stage] for r in pipeline_runs), 3)
        for stage in ("read", "lookup", "encode", "write")
    }
    report = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_at_start": list(load_avg),
        "versions": versions(PACKAGES),
        "parameters": {
            "corpus": "SciFact corpus.jsonl" + (f", first {args.docs}" if args.docs else ""),
            "encoder": encoder.model_id,
            "backend": "lancedb (embedded, temporary folder), FDE muvera-10240",
            "docs": n_docs,
            "chunks": len(texts),
            "tokens": tokens,
            "batch_size": args.batch_size,
            "max_tokens": args.max_tokens,
            "repeats": args.repeats,
        },
        "encoder_alone": rates(encoder_s, n_docs, tokens),
        "pipeline": rates(pipeline_s, n_docs, tokens),
        "pipeline_overhead_pct": round((pipeline_s / encoder_s - 1) * 100, 1),
        "pipeline_stage_seconds_median": stages,
        "rerun_unchanged_seconds": round(rerun["seconds"], 3),
        "runs": {
            "encoder_seconds": [round(s, 3) for s in encoder_runs],
            "pipeline_seconds": [round(r["seconds"], 3) for r in pipeline_runs],
        },
    }
    print(json.dumps({k: report[k] for k in list(report)[4:]}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
