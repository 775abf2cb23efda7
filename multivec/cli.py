"""The ``multivec`` command: index, ingest, search, info, migrate, verify, export, import and bench.

It parses arguments, shows progress and prints results; the work is done by the library::

    multivec index ../shared/data/scifact/corpus.jsonl --into lancedb://./data --collection scifact
    multivec ingest ./docs ./papers --into lancedb://./data --collection notes --max-tokens 256
    multivec search "do statins reduce mortality?" --uri lancedb://./data --collection scifact
    multivec info lancedb://./data --collection scifact --json
    multivec migrate lancedb://./data qdrant+edge://./qdrant --collection scifact --dry-run
    multivec migrate lancedb://./data qdrant+edge://./qdrant --collection scifact
    multivec verify lancedb://./data qdrant+edge://./qdrant --collection scifact
    multivec export lancedb://./data ./backup --collection scifact
    multivec import ./backup milvus+lite://./milvus.db

``migrate`` and ``verify`` exit with 1 when documents differ and 3 when only searches differ
(index drift); ``ingest`` exits with 0 when every readable input went in (the files it skipped
are listed with the reason) and 1 when no document could be read; every command exits with 2
on an error.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import multivec
from multivec._collection import DEFAULT_FDE_PRESET
from multivec.bench import _cli as bench_cli
from multivec.errors import (
    CollectionNotFoundError,
    ConfigMismatchError,
    InvalidInputError,
    MultivecError,
)

__all__ = ["main"]


def _encoder(model: str | None) -> Any:
    from multivec.ingest import default_encoder

    return default_encoder(model)


def _ingest_encoder(model: str | None) -> Any:
    """A page-image model when ``model`` names one, else the text encoder :func:`_encoder` picks.

    A page-image model is a folder with an image preprocessor (``preprocessor_config.json``,
    fastembed's ColPali layout) or the name of one of fastembed's multimodal models.
    """
    from multivec.ingest import FastembedMultimodalEncoder

    if model is not None:
        folder = Path(model)
        if folder.is_dir() and (folder / "preprocessor_config.json").is_file():
            return FastembedMultimodalEncoder(model_dir=folder)
        if not folder.exists():
            from fastembed import LateInteractionMultimodalEmbedding

            names = {
                m["model"].lower()
                for m in LateInteractionMultimodalEmbedding.list_supported_models()
            }
            if model.lower() in names:
                return FastembedMultimodalEncoder(model)
    return _encoder(model)


def _batched(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while batch := list(itertools.islice(items, size)):
        yield batch


def _progress(total: int | None, unit: str) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # the cli extra brings tqdm; without it, run quietly
        return None
    return tqdm(total=total, unit=unit, dynamic_ncols=True, file=sys.stderr)


def _cmd_index(args: argparse.Namespace) -> int:
    from multivec.ingest import encoder_id, iter_beir_corpus

    encoder = _encoder(args.model)
    model = encoder_id(encoder)
    print(f"encoder: {model}", file=sys.stderr)
    records = iter_beir_corpus(args.corpus)
    if args.limit is not None:
        records = itertools.islice(records, args.limit)
    batches = _batched(iter(records), args.batch_size)
    timings = {"encode": 0.0, "fit": 0.0, "store": 0.0}
    # The bar counts encoded documents: encoding is the slow part, and a new collection encodes
    # its first --fit-docs documents before anything is written.
    bar = _progress(args.limit, "doc")

    def encode(batch: list[Any]) -> tuple[list[Any], list[str], list[Any]]:
        t0 = time.perf_counter()
        texts = [f"{r.title}. {r.text}" if r.title else r.text for r in batch]
        vectors = list(encoder.embed(texts, batch_size=args.batch_size))
        timings["encode"] += time.perf_counter() - t0
        if bar is not None:
            bar.update(len(batch))
        return batch, texts, vectors

    # Encoded batches not yet written: a new collection first fits its FDE on them.
    pending: list[tuple[list[Any], list[str], list[Any]]] = []
    try:
        col = multivec.connect(args.into, args.collection)
    except CollectionNotFoundError:
        col = None
    if col is not None:
        if args.fde is not None:
            raise ConfigMismatchError(
                f"collection {args.collection!r} exists; its FDE configuration was fixed when it "
                "was created, so drop --fde (or index into a new collection)"
            )
        if col.info.encoder not in (None, model):
            raise ConfigMismatchError(
                f"collection {args.collection!r} was indexed with {col.info.encoder}, not "
                f"{model}; use the same --model or another collection"
            )
    else:
        col = _create_fitted(args, batches, pending, encode, timings, model)

    n_docs = n_tokens = 0
    for batch, texts, vectors in itertools.chain(pending, (encode(b) for b in batches)):
        t0 = time.perf_counter()
        metadata = [{"title": r.title, **r.metadata} for r in batch]
        col.upsert([r.id for r in batch], vectors, metadata, texts=texts)
        timings["store"] += time.perf_counter() - t0
        n_docs += len(batch)
        n_tokens += sum(v.shape[0] for v in vectors)
    if bar is not None:
        bar.close()
    t0 = time.perf_counter()
    col.optimize()
    timings["optimize"] = time.perf_counter() - t0
    summary = {
        "collection": args.collection,
        "documents": n_docs,
        "tokens": n_tokens,
        "total_documents": col.count(),
        "fde": {"partitioning": col.info.fde.partitioning, "dim": col.info.fde_dim},
        "seconds": {k: round(v, 3) for k, v in timings.items()},
    }
    _emit(
        summary,
        args.json,
        lambda s: (
            f"indexed {s['documents']} documents ({s['tokens']} tokens) into {args.into} "
            f"collection {args.collection!r}; it now holds {s['total_documents']}.\n"
            f"FDE: {s['fde']['dim']}-d, {s['fde']['partitioning']} partitions\n"
            f"time: encode {timings['encode']:.1f} s, fit {timings['fit']:.1f} s, "
            f"FDE + store {timings['store']:.1f} s, optimize {timings['optimize']:.1f} s"
        ),
    )
    return 0


def _create_fitted(
    args: argparse.Namespace,
    batches: Iterator[list[Any]],
    pending: list[tuple[list[Any], list[str], list[Any]]],
    encode: Any,
    timings: dict[str, float],
    model: str,
) -> multivec.Collection:
    """Encode the first ``--fit-docs`` documents, fit the FDE on them, create the collection."""
    from multivec.muvera import FDEConfig, fit

    while not pending or sum(len(p[0]) for p in pending) < args.fit_docs:
        batch = next(batches, None)
        if batch is None:
            break
        pending.append(encode(batch))
    if not pending:
        raise InvalidInputError(f"{args.corpus} holds no documents")
    sample = [v for _, _, vectors in pending for v in vectors]
    config = FDEConfig.preset(args.fde or DEFAULT_FDE_PRESET, dim=sample[0].shape[1])
    if args.fit_docs > 0:
        t0 = time.perf_counter()
        config = fit(config, sample)
        timings["fit"] = time.perf_counter() - t0
    return multivec.connect(
        args.into, args.collection, dim=config.dim, fde=config, dtype=args.dtype, encoder=model
    )


def _cmd_search(args: argparse.Namespace) -> int:
    from multivec.ingest import encoder_id

    col = multivec.connect(args.uri, args.collection)
    encoder = _encoder(args.model)
    if col.info.encoder is not None and encoder_id(encoder) != col.info.encoder:
        raise ConfigMismatchError(
            f"collection {args.collection!r} was indexed with {col.info.encoder}, but the query "
            f"encoder is {encoder_id(encoder)}; pass the same --model"
        )
    filter_spec = json.loads(args.filter) if args.filter else None
    results = []
    for text in args.query:
        t0 = time.perf_counter()
        query = next(iter(encoder.query_embed(text)))
        t_query = time.perf_counter() - t0
        result = col.search(
            query, k=args.k, candidates=args.candidates, filter=filter_spec, explain=args.explain
        )
        hits: list[dict[str, Any]] = [
            {"id": h.id, "score": round(h.score, 4), "metadata": h.metadata, "text": h.text}
            for h in result
        ]
        if args.explain:
            for hit, found in zip(hits, result, strict=True):
                hit["matches"] = _matches(found, encoder)
        results.append(
            {
                "query": text,
                "timings_ms": {
                    "embed_query": round(t_query * 1e3, 2),
                    **{k: round(v, 2) for k, v in result.timings.as_ms().items()},
                },
                "candidates": result.candidates,
                "hits": hits,
            }
        )
    _emit(results, args.json, _render_search)
    return 0


def _matches(hit: multivec.Hit, encoder: Any) -> list[dict[str, Any]] | str:
    """Each query token's matched span of the hit's text, or why there are none."""
    if hit.explanation is None or not hit.text or not hasattr(encoder, "token_spans"):
        return "no text to point into (or the encoder gives no token spans)"
    try:
        found = multivec.explain_text(hit.explanation, hit.text, encoder)
    except InvalidInputError as exc:
        return str(exc)
    return [
        {"query_token": m.query_token, "contribution": round(m.contribution, 4), "text": m.text}
        for m in found
    ]


def _render_search(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        t = r["timings_ms"]
        lines.append(f"\nquery: {r['query']}")
        lines.append(
            f"  time: embed {t['embed_query']:.1f} ms | FDE encode {t['encode']:.1f} ms | "
            f"ANN {t['ann']:.1f} ms | fetch {t['fetch']:.1f} ms | rerank {t['rerank']:.1f} ms | "
            f"search total {t['total']:.1f} ms ({r['candidates']} candidates)"
        )
        for rank, hit in enumerate(r["hits"], 1):
            title = hit["metadata"].get("title") or (hit["text"] or "")[:80]
            lines.append(f"  {rank:>2}. {hit['score']:8.3f}  {hit['id']}  {title[:90]}")
            matches = hit.get("matches")
            if isinstance(matches, str):
                lines.append(f"      (not explained: {matches})")
            elif matches:
                # The spans that earned the most, each once.
                best: dict[str, float] = {}
                for m in matches:
                    if m["text"].strip():
                        best[m["text"]] = best.get(m["text"], 0.0) + m["contribution"]
                top = sorted(best.items(), key=lambda item: -item[1])[:8]
                lines.append("      matched: " + ", ".join(f"{t!r} {c:.2f}" for t, c in top))
    return "\n".join(lines)


def _cmd_ingest(args: argparse.Namespace) -> int:
    """Ingest files and folders; exit 0 when anything readable went in, 1 when nothing did."""
    import functools
    import importlib

    from multivec.ingest import encoder_id, ingest

    encoder = _ingest_encoder(args.encoder)
    model = encoder_id(encoder)
    print(f"encoder: {model}", file=sys.stderr)
    pool = None
    if args.pool_factor is not None and args.pool_factor > 1:
        # Token pooling lives beside the encoders; imported only when asked for.
        pooling = importlib.import_module("multivec.ingest._pooling")
        pool = functools.partial(pooling.pool_tokens, pool_factor=args.pool_factor)
    dim = getattr(encoder, "dim", None)
    if not isinstance(dim, int):
        # fastembed's embedding_size can be wrong for local files: read the width of an output.
        if hasattr(encoder, "embed"):
            probe = encoder.embed(["dimension probe"])
        else:
            from PIL import Image

            probe = encoder.embed_image([Image.new("RGB", (32, 32), "white")])
        dim = int(next(iter(probe)).shape[1])
    col = multivec.connect(args.into, args.collection, dim=dim, encoder=model)
    if col.info.encoder not in (None, model):
        raise ConfigMismatchError(
            f"collection {args.collection!r} was built with {col.info.encoder}, not {model}; "
            "use the same --encoder or another collection"
        )
    summary = ingest(
        args.paths,
        col,
        encoder,
        root=args.root,
        max_tokens=args.max_tokens,
        overlap=args.overlap,
        batch_size=args.batch_size,
        pool=pool,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    if summary.chunks or summary.relabelled or summary.deleted:
        col.optimize()
    payload = {"collection": args.collection, "total_documents": col.count(), **summary.as_dict()}
    _emit(
        payload,
        args.json,
        lambda p: (
            f"{summary.summary()}\n{args.into} collection {args.collection!r} now holds "
            f"{p['total_documents']} chunks"
        ),
    )
    return 0 if summary.documents else 1


def _cmd_info(args: argparse.Namespace) -> int:
    col = multivec.connect(args.uri, args.collection)
    backend = col.backend
    info = {
        "uri": str(backend.uri),
        "collection": col.name,
        "documents": col.count(),
        "configuration": _summarised(col.info),
        "fde_dim": col.info.fde_dim,
        "backend": {
            "class": type(backend).__name__,
            "persistent": backend.persistent,
            "supports_native_multivector": backend.supports_native_multivector,
            "max_vector_dim": backend.max_vector_dim,
            "max_request_bytes": backend.max_request_bytes,
        },
    }
    _emit(info, args.json, lambda i: json.dumps(i, indent=2))
    return 0


def _bar(unit: str) -> tuple[Any, Any]:
    """A tqdm bar and a ``progress(done, total)`` callback that moves it."""
    bar = _progress(None, unit)

    def update(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.refresh()

    return bar, update


def _mib(value: str) -> int:
    """An argparse type: a size in MiB, as bytes."""
    size = float(value)
    if size <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive size")
    return int(size * 2**20)


def _cmd_migrate(args: argparse.Namespace) -> int:
    if args.dry_run:
        plan = multivec.plan_migration(
            args.source,
            args.target,
            collection=args.collection,
            target_collection=args.target_collection,
            fde=args.fde,
            dtype=args.dtype,
            sample=None if args.full_scan else args.sample,
            ledger_dir=args.ledger,
        )
        _emit(plan.as_dict(), args.json, lambda _: plan.summary())
        return 0 if plan.ok else 1
    bar, update = _bar("doc")
    try:
        report = multivec.migrate(
            args.source,
            args.target,
            collection=args.collection,
            target_collection=args.target_collection,
            fde=args.fde,
            dtype=args.dtype,
            batch_bytes=args.batch_mb,
            workers=args.workers,
            ledger_dir=args.ledger,
            verify=not args.no_verify,
            optimize=not args.no_optimize,
            queries=args.queries,
            k=args.k,
            candidates=args.candidates,
            progress=update,
        )
    finally:
        if bar is not None:
            bar.close()
    _emit(report.as_dict(), args.json, lambda _: report.summary())
    return report.exit_code


def _cmd_import(args: argparse.Namespace) -> int:
    bar, update = _bar("doc")
    try:
        report = multivec.import_collection(
            args.directory,
            args.target,
            collection=args.collection,
            batch_bytes=args.batch_mb,
            workers=args.workers,
            ledger_dir=args.ledger,
            verify=not args.no_verify,
            optimize=not args.no_optimize,
            queries=args.queries,
            k=args.k,
            candidates=args.candidates,
            progress=update,
        )
    finally:
        if bar is not None:
            bar.close()
    _emit(report.as_dict(), args.json, lambda _: report.summary())
    return report.exit_code


def _cmd_verify(args: argparse.Namespace) -> int:
    bar, update = _bar("doc")
    try:
        report = multivec.verify(
            args.source,
            args.target,
            collection=args.collection,
            target_collection=args.target_collection,
            queries=args.queries,
            k=args.k,
            candidates=args.candidates,
            progress=update,
        )
    finally:
        if bar is not None:
            bar.close()
    _emit(report.as_dict(), args.json, lambda _: report.summary())
    return report.exit_code


def _cmd_export(args: argparse.Namespace) -> int:
    bar, update = _bar("doc")
    try:
        report = multivec.export_collection(
            args.uri,
            args.directory,
            collection=args.collection,
            part_bytes=args.part_mb,
            batch_bytes=args.batch_mb,
            progress=update,
        )
    finally:
        if bar is not None:
            bar.close()
    _emit(report.as_dict(), args.json, lambda _: report.summary())
    return 0


def _summarised(info: multivec.CollectionInfo) -> dict[str, Any]:
    """The stored configuration, with fitted arrays (hundreds of KB of base64) shown by digest."""
    config: dict[str, Any] = json.loads(info.model_dump_json())
    fitted = config["fde"].get("fitted")
    if fitted:
        config["fde"]["fitted"] = {
            k: v for k, v in fitted.items() if k not in ("mean", "centroids")
        }
    return config


def _emit(payload: Any, as_json: bool, render: Any) -> None:
    print(json.dumps(payload, indent=2, default=str) if as_json else render(payload))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="multivec", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"multivec {multivec.__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log which model and paths are used"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--collection", default="default", help="collection name (default: default)"
    )
    common.add_argument("--json", action="store_true", help="print JSON for scripts")

    model_help = (
        "local model folder (ONNX or fastembed answerai); default: $MULTIVEC_MODEL_DIR, "
        "fastembed's cache, or ../shared/models/all-minilm-l6-v2-onnx"
    )
    p = sub.add_parser(
        "index", parents=[common], help="encode a BEIR-style JSONL corpus and store it"
    )
    p.add_argument("corpus", help="JSONL file with _id, title, text per line")
    p.add_argument("--into", required=True, help="target URI, e.g. lancedb://./data")
    p.add_argument("--model", help=model_help)
    p.add_argument(
        "--fde", default=None, help="FDE preset for a new collection (default muvera-10240)"
    )
    p.add_argument(
        "--fit-docs",
        type=int,
        default=1000,
        help="a new collection fits its FDE (centring, k-means partitions) on the first N "
        "documents; 0 keeps the reference SimHash encoding (default 1000)",
    )
    p.add_argument(
        "--dtype", choices=["float16", "float32"], default=None, help="token storage precision"
    )
    p.add_argument("--limit", type=int, default=None, help="index only the first N documents")
    p.add_argument("--batch-size", type=int, default=32, help="documents per encode/write batch")
    p.set_defaults(func=_cmd_index)

    p = sub.add_parser("search", parents=[common], help="search a collection with text queries")
    p.add_argument("query", nargs="+", help="one or more query texts")
    p.add_argument("--uri", required=True, help="collection URI, e.g. lancedb://./data")
    p.add_argument("--model", help=model_help)
    p.add_argument("-k", type=int, default=10, help="hits per query")
    p.add_argument("--candidates", type=int, default=200, help="first-stage candidates to rerank")
    p.add_argument("--filter", help='metadata filter as JSON, e.g. \'{"year": {"$gte": 2020}}\'')
    p.add_argument(
        "--explain", action="store_true", help="show which words of each hit the query matched"
    )
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser(
        "ingest",
        parents=[common],
        help="chunk, encode and store files and folders (text, Markdown, code, PDF, images, "
        "JSONL); reruns skip what is stored",
    )
    p.add_argument("paths", nargs="+", help="files and folders (folders are walked)")
    p.add_argument("--into", required=True, help="target URI, e.g. lancedb://./data")
    p.add_argument("--encoder", help=model_help)
    p.add_argument(
        "--max-tokens", type=int, default=None, help="tokens per chunk (default: model limit)"
    )
    p.add_argument(
        "--overlap", type=int, default=0, help="tokens repeated between prose chunks (default 0)"
    )
    p.add_argument("--batch-size", type=int, default=32, help="chunks per encode/write batch")
    p.add_argument(
        "--pool-factor",
        type=int,
        default=None,
        help="pool document token vectors by this factor before storing (e.g. 2)",
    )
    p.add_argument(
        "--root",
        default=None,
        help="folder that document ids are relative to (default: each input)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_ingest)

    p = sub.add_parser("info", parents=[common], help="show a collection's configuration and size")
    p.add_argument("uri", help="collection URI")
    p.set_defaults(func=_cmd_info)

    _add_move_commands(sub, common)
    bench_cli.add_parser(sub)
    return parser


def _add_move_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``migrate``, ``verify``, ``export`` and ``import`` subcommands."""
    checks = argparse.ArgumentParser(add_help=False)
    checks.add_argument(
        "--queries", type=int, default=20, help="queries of the search check, 0 skips it"
    )
    checks.add_argument("-k", type=int, default=10, help="hits compared per query")
    checks.add_argument(
        "--candidates", type=int, default=200, help="first-stage candidates per query"
    )
    writes = argparse.ArgumentParser(add_help=False)
    writes.add_argument(
        "--batch-mb", type=_mib, default=32 * 2**20, help="MiB per read/write batch (default 32)"
    )
    writes.add_argument("--workers", type=int, default=2, help="concurrent writer threads")
    writes.add_argument(
        "--ledger",
        default=None,
        help="ledger directory (default $XDG_STATE_HOME/multivec/migrations or "
        "~/.local/state/multivec/migrations)",
    )
    writes.add_argument("--no-verify", action="store_true", help="skip the final verification")
    writes.add_argument(
        "--no-optimize", action="store_true", help="skip the target's optimize() at the end"
    )

    p = sub.add_parser(
        "migrate",
        parents=[common, writes, checks],
        help="copy a collection to another backend, resumably, then verify it",
    )
    p.add_argument("source", help="source URI")
    p.add_argument("target", help="target URI")
    p.add_argument(
        "--target-collection", default=None, help="target collection (default: --collection)"
    )
    p.add_argument(
        "--fde", default=None, help="FDE preset for a new target (default: the source's FDE)"
    )
    p.add_argument(
        "--dtype", choices=["float16", "float32"], default=None, help="precision of a new target"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="show the mapping, an estimate and any problem; write nothing",
    )
    p.add_argument(
        "--sample", type=int, default=1000, help="documents the dry run pre-scans (default 1000)"
    )
    p.add_argument("--full-scan", action="store_true", help="the dry run scans every document")
    p.set_defaults(func=_cmd_migrate)

    p = sub.add_parser(
        "verify",
        parents=[common, checks],
        help="compare two collections, or a collection and an export, document by document",
    )
    p.add_argument("source", help="source URI or export directory")
    p.add_argument("target", help="target URI or export directory")
    p.add_argument(
        "--target-collection", default=None, help="target collection (default: --collection)"
    )
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser(
        "export", parents=[common], help="write a collection to a portable Parquet directory"
    )
    p.add_argument("uri", help="collection URI")
    p.add_argument("directory", help="a new or empty directory")
    p.add_argument(
        "--part-mb", type=_mib, default=256 * 2**20, help="MiB per Parquet part (default 256)"
    )
    p.add_argument(
        "--batch-mb", type=_mib, default=32 * 2**20, help="MiB per row group (default 32)"
    )
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "import",
        parents=[writes, checks],
        help="load an export directory into a collection, resumably, then verify it",
    )
    p.add_argument("directory", help="an export directory")
    p.add_argument("target", help="target URI")
    p.add_argument(
        "--collection",
        default=None,
        help="target collection (default: the exported collection's name)",
    )
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=_cmd_import)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``multivec`` command; returns the process exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    try:
        return int(args.func(args))
    except MultivecError as exc:
        print(f"multivec: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
