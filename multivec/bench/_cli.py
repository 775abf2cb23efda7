"""The ``multivec bench`` subcommand: parse options, run the benchmark, write JSON and report.

``multivec.cli`` adds it with :func:`add_parser` and calls :func:`run`. The results and the
report land in ``--out``: ``results.json``, ``report.md`` and the PNG plots. The exact command
that reproduces a run (every option spelled out) is recorded in both.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from multivec._collection import SEARCH_MODES, SearchMode
from multivec.bench._dataset import Dataset, load_beir, load_vectors
from multivec.bench._harness import TMP_PLACEHOLDER, BenchConfig, Target, run_benchmark
from multivec.bench._report import write_report
from multivec.bench._servers import SERVER_KINDS, started_servers
from multivec.errors import InvalidInputError

__all__ = ["DEFAULT_BACKENDS", "add_parser", "run"]

DEFAULT_BACKENDS = (
    "memory://",
    f"lancedb://{TMP_PLACEHOLDER}",
    f"qdrant+edge://{TMP_PLACEHOLDER}",
    f"milvus+lite://{TMP_PLACEHOLDER}/milvus.db",
)
"""The embedded engines benchmarked when no ``--backend`` is given, each in a temporary folder."""

_T = TypeVar("_T")


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "multivec" / "bench"


def _list_of(kind: Callable[[str], _T]) -> Callable[[str], tuple[_T, ...]]:
    """An argparse type for comma-separated values: ``"50,100,200"``."""

    def parse(text: str) -> tuple[_T, ...]:
        try:
            return tuple(kind(part.strip()) for part in text.split(",") if part.strip())
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from exc

    return parse


def _mode(text: str) -> SearchMode:
    if text not in SEARCH_MODES:
        raise ValueError(f"unknown mode {text!r}; use {', '.join(SEARCH_MODES)}")
    return text


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``bench`` subcommand and its options to ``multivec``'s subparsers."""
    defaults = BenchConfig()
    p = subparsers.add_parser(
        "bench",
        help="benchmark backends and search modes on one dataset; write JSON and a report",
        description="Load the same documents into each backend, run the same queries in every "
        "search mode, and measure load, quality and speed. Writes results.json, report.md and "
        "PNG plots into --out.",
    )
    data = p.add_argument_group("data")
    source = data.add_mutually_exclusive_group()
    source.add_argument(
        "--dataset", type=Path, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv"
    )
    source.add_argument(
        "--vectors", type=Path, help="precomputed vectors folder (multivec.bench.save_vectors)"
    )
    data.add_argument("--model", help="encoder: local model folder (default: the offline MiniLM)")
    data.add_argument("--split", default="test", help="qrels split judging the queries")
    data.add_argument("--docs", type=int, default=None, help="use at most N documents")
    data.add_argument("--queries", type=int, default=None, help="use at most N queries")
    data.add_argument("--doc-max-tokens", type=int, default=180, help="document truncation")
    data.add_argument("--query-max-tokens", type=int, default=64, help="query truncation")
    data.add_argument(
        "--cache",
        type=Path,
        default=_default_cache(),
        help="where encoded datasets are cached (default: %(default)s)",
    )
    data.add_argument("--no-cache", action="store_true", help="encode without caching")

    where = p.add_argument_group("backends")
    where.add_argument(
        "--backend",
        action="append",
        metavar="URI",
        help="a backend URI, repeatable; {tmp} becomes a temporary folder (default: "
        + ", ".join(DEFAULT_BACKENDS)
        + ")",
    )
    where.add_argument(
        "--start",
        type=_list_of(str),
        default=(),
        metavar="KINDS",
        help=f"start these servers in containers for the run: {','.join(SERVER_KINDS)}",
    )

    what = p.add_argument_group("measurements")
    what.add_argument("-k", type=int, default=defaults.k, help="hits per query")
    what.add_argument(
        "--candidates",
        type=_list_of(int),
        default=defaults.candidates,
        help="candidate counts to sweep (default: %(default)s)",
    )
    what.add_argument(
        "--fde",
        type=_list_of(str),
        default=defaults.fde,
        help="FDE presets to sweep; append :simhash for the unfitted reference",
    )
    what.add_argument(
        "--fit-docs", type=int, default=defaults.fit_docs, help="fit FDEs on the first N documents"
    )
    what.add_argument(
        "--modes", type=_list_of(_mode), default=defaults.modes, help="search modes to run"
    )
    what.add_argument("--warmup", type=int, default=defaults.warmup, help="warm-up queries")
    what.add_argument("--repeats", type=int, default=defaults.repeats, help="timed passes")
    what.add_argument(
        "--concurrency",
        type=_list_of(int),
        default=defaults.concurrency,
        help="thread counts for throughput (empty string: skip)",
    )
    what.add_argument(
        "--qps-candidates",
        type=int,
        default=defaults.qps_candidates,
        help="throughput at the swept candidate count nearest this",
    )
    what.add_argument(
        "--mode-budget-s",
        type=float,
        default=defaults.mode_budget_s,
        help="seconds a mode may spend on its queries (slow exhaustive modes run a prefix)",
    )
    what.add_argument(
        "--recall-depth",
        type=int,
        default=defaults.recall_depth,
        help="recall@N against the judgements from an untimed pass; 0 skips it",
    )
    what.add_argument("--batch-size", type=int, default=defaults.batch_size, help="upsert batch")
    what.add_argument(
        "--dtype", choices=["float16", "float32"], default=defaults.dtype, help="token storage"
    )

    out = p.add_argument_group("output")
    out.add_argument(
        "--out",
        type=Path,
        default=Path("bench-results"),
        help="output folder (default: %(default)s)",
    )
    out.add_argument(
        "--render",
        type=Path,
        metavar="RESULTS_JSON",
        help="only re-render the report of an earlier results.json into --out",
    )
    out.add_argument("--json", action="store_true", help="print the output paths as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``multivec bench`` with parsed ``args``; return the exit status.

    Returns:
        0 when at least one backend produced results (or a report was re-rendered), else 1.

    Raises:
        InvalidInputError: Neither ``--dataset`` nor ``--vectors`` was given, or they are unusable.
        MissingDependencyError: matplotlib (the ``bench`` extra) or an encoder library is missing.
    """
    if args.render is not None:
        results = json.loads(Path(args.render).read_text(encoding="utf-8"))
        report = write_report(results, args.out)
        _emit({"report": str(report)}, args.json)
        return 0
    dataset = _dataset(args)
    config = BenchConfig(
        k=args.k,
        candidates=args.candidates,
        fde=args.fde,
        fit_docs=args.fit_docs,
        modes=args.modes,
        warmup=args.warmup,
        repeats=args.repeats,
        concurrency=args.concurrency,
        qps_candidates=args.qps_candidates,
        mode_budget_s=args.mode_budget_s,
        recall_depth=args.recall_depth,
        batch_size=args.batch_size,
        dtype=args.dtype,
        command=command_line(args),
    )
    targets = [Target(uri) for uri in args.backend or DEFAULT_BACKENDS]
    with started_servers(args.start, _stderr) as (servers, notes):
        results = run_benchmark(dataset, targets + servers, config, progress=_stderr, notes=notes)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results_path.write_text(json.dumps(results, indent=2), encoding="utf-8")
    # The JSON is saved before plotting, so a missing matplotlib loses no measurement.
    report = write_report(results, args.out)
    _emit({"results": str(results_path), "report": str(report)}, args.json)
    return 0 if any(b["collections"] for b in results["backends"]) else 1


def _dataset(args: argparse.Namespace) -> Dataset:
    if args.vectors is not None:
        return load_vectors(args.vectors)
    if args.dataset is None:
        raise InvalidInputError(
            "give --dataset (a BEIR folder, e.g. ../shared/data/scifact) or --vectors"
        )
    return load_beir(
        args.dataset,
        model=args.model,
        split=args.split,
        max_docs=args.docs,
        max_queries=args.queries,
        doc_max_tokens=args.doc_max_tokens,
        query_max_tokens=args.query_max_tokens,
        cache_dir=None if args.no_cache else args.cache,
        progress=_stderr,
    )


def command_line(args: argparse.Namespace) -> str:
    """The ``multivec bench`` command reproducing ``args``, with every option spelled out."""
    words = ["multivec", "bench"]
    if args.vectors is not None:
        words += ["--vectors", str(args.vectors)]
    elif args.dataset is not None:
        words += ["--dataset", str(args.dataset), "--split", args.split]
        words += _option("--model", args.model)
        words += _option("--docs", args.docs) + _option("--queries", args.queries)
        words += ["--doc-max-tokens", str(args.doc_max_tokens)]
        words += ["--query-max-tokens", str(args.query_max_tokens)]
    for uri in args.backend or DEFAULT_BACKENDS:
        words += ["--backend", uri]
    if args.start:
        words += ["--start", ",".join(args.start)]
    words += ["-k", str(args.k), "--candidates", _joined(args.candidates)]
    words += ["--fde", _joined(args.fde), "--fit-docs", str(args.fit_docs)]
    words += ["--modes", _joined(args.modes), "--warmup", str(args.warmup)]
    words += ["--repeats", str(args.repeats), "--concurrency", _joined(args.concurrency)]
    words += ["--qps-candidates", str(args.qps_candidates)]
    words += _option("--mode-budget-s", args.mode_budget_s)
    words += ["--recall-depth", str(args.recall_depth), "--batch-size", str(args.batch_size)]
    words += ["--dtype", args.dtype, "--out", str(args.out)]
    return shlex.join(words)


def _option(flag: str, value: Any) -> list[str]:
    return [] if value is None else [flag, str(value)]


def _joined(values: Sequence[Any]) -> str:
    return ",".join(str(v) for v in values)


def _emit(paths: dict[str, str], as_json: bool) -> None:
    if as_json:
        print(json.dumps(paths))
    else:
        for what, path in paths.items():
            print(f"{what}: {path}")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
