"""The report: a Markdown page and PNG plots, rendered from a results document alone.

Everything here reads the JSON written by a run (:func:`multivec.bench.run_benchmark`), so a
report can be re-rendered later, or on another machine, without running anything again.
matplotlib is needed for the plots (the ``multivec[bench]`` extra); it is imported only here,
through its object-oriented API, so no global plotting backend is switched.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from multivec.errors import MissingDependencyError

__all__ = ["PLOTS", "render_markdown", "write_report"]

PLOTS = {
    "recall_latency": "recall_latency.png",
    "stages": "stages.png",
    "throughput": "throughput.png",
    "storage": "storage.png",
}
"""The plot files a report folder holds, by name."""

_STAGES = ("encode", "ann", "fetch", "rerank")
_MODE_STYLES = {"multivec": "-", "native-prefetch": "--", "native": ":"}
_FDE_MARKERS = ("o", "s", "^", "D", "v", "P")


def write_report(results: Mapping[str, Any], folder: str | os.PathLike[str]) -> Path:
    """Write ``report.md`` and its PNG plots into ``folder``.

    Args:
        results: A results document.
        folder: Where to write; created if missing. Existing report files are replaced.

    Returns:
        The path of ``report.md``.

    Raises:
        MissingDependencyError: matplotlib is not installed.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = _plot_all(results, out)
    path = out / "report.md"
    path.write_text(render_markdown(results, written), encoding="utf-8")
    return path


def render_markdown(results: Mapping[str, Any], plots: Sequence[str] = ()) -> str:
    """The report as Markdown; ``plots`` names the plot files written beside it."""
    p = results["parameters"]
    d = results["dataset"]
    k, cut, depth = p["k"], p["ndcg_cutoff"], p["recall_depth"]
    lines = [
        f"# multivec bench: {d['name']}, {d['documents']:,} documents, {d['queries']:,} queries",
        "",
        "Regenerate these results and this report with:",
        "",
        "```bash",
        results.get("command") or "(run from Python; no command line was recorded)",
        "```",
        "",
        *_setup(results),
        "",
        "## What was not equal",
        "",
        *([f"- {note}" for note in results["notes"]] or ["- Nothing that the run detected."]),
        "",
        "## Load",
        "",
        "| backend | placement | FDE | docs/s | searchable after s | optimize s | bytes/doc |",
        "|---|---|---|---|---|---|---|",
    ]
    for backend, collection in _collections(results):
        load = collection["load"]
        lines.append(
            f"| {backend['name']} | {backend['placement']} | {collection['fde']} | "
            f"{load['docs_per_s']:,.1f} | {load['searchable_s']:.2f} | {load['optimize_s']:.2f} | "
            f"{_num(load['bytes_per_doc'], ',.0f')} |"
        )
    lines += [
        "",
        "Storage: " + "; ".join(_storage_methods(results)) + ".",
        "",
        "## Quality and latency",
        "",
        f"Recall@{k} is against exact MaxSim (ties at rank {k} count as hits); first stage: the "
        f"share of the exact top {k} among the candidates handed to the rerank (multivec mode). "
        f"nDCG@{cut} and recall@{depth} are against the judgements; recall@{depth} is left out "
        f"where fewer than {depth} candidates reach the rerank. Latency: wall clock per query, ms.",
        "",
        *_plot_line(plots, "recall_latency", "recall against latency"),
        f"| backend | FDE | mode | queries | first stage R@{k} | R@{k} | nDCG@{cut} | "
        f"R@{depth} | p50 | p95 | p99 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for backend, collection, run in _runs(results):
        if run.get("error"):
            lines.append(
                f"| {backend['name']} | {collection['fde']} | {_label(run)} | failed: "
                f"{run['error']} | | | | | | | |"
            )
            continue
        q, t = run["quality"], run["latency_ms"]["total"]
        queries = f"{run['queries']}" + (" (budget)" if run["truncated_by_budget"] else "")
        lines.append(
            f"| {backend['name']} | {collection['fde']} | {_label(run)} | {queries} | "
            f"{_num(q['first_stage_recall'])} | {_num(q['recall'])} | {_num(q['ndcg'])} | "
            f"{_num(q['judged_recall'])} | {t['p50']:.1f} | {t['p95']:.1f} | {t['p99']:.1f} |"
        )
    lines += [
        "",
        "## Latency by stage",
        "",
        "Medians (p50) per stage at each mode's throughput operating point, first FDE "
        "configuration. Native modes report the database's search as `ann` and the fetch of "
        "the hits' data as `fetch`.",
        "",
        *_plot_line(plots, "stages", "latency by stage"),
        "| backend | mode | encode | ann | fetch | rerank | total p50 | total p99 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for backend, run in _operating_points(results):
        lat = run["latency_ms"]
        stages = " | ".join(f"{lat[s]['p50']:.1f}" for s in _STAGES)
        lines.append(
            f"| {backend['name']} | {_label(run)} | {stages} | {lat['total']['p50']:.1f} | "
            f"{lat['total']['p99']:.1f} |"
        )
    threads = p["concurrency"]
    lines += [
        "",
        "## Throughput",
        "",
        "Queries per second with N threads searching one collection (median pass).",
        "",
        *_plot_line(plots, "throughput", "throughput against threads"),
        "| backend | mode | " + " | ".join(f"{n} thr." for n in threads) + " |",
        "|---|---|" + "---|" * len(threads),
    ]
    for backend, run in _operating_points(results):
        by_threads = {t["threads"]: t for t in run["throughput"]}
        cells = [_qps(by_threads.get(n)) for n in threads]
        lines.append(f"| {backend['name']} | {_label(run)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Storage",
        "",
        "Bytes per document are in the Load table, with how each backend's were measured below "
        "it. They include each engine's fixed overhead (preallocated segments, logs, index "
        "metadata) spread over the documents, so a small run overstates them.",
        "",
        *_plot_line(plots, "storage", "storage per document"),
        "## Versions",
        "",
        *_versions(results),
        "",
    ]
    return "\n".join(lines)


def _setup(results: Mapping[str, Any]) -> list[str]:
    p, d, m, g = (
        results["parameters"],
        results["dataset"],
        results["machine"],
        results["ground_truth"],
    )
    memory = m.get("memory_bytes")
    fdes = ", ".join(
        f"{f['label']} ({f['fde_dim']:,}-d"
        + (f", fitted in {f['fit_s']:.1f} s" if f["fit_s"] is not None else "")
        + ")"
        for f in results["fde"]
    )
    budget = p["mode_budget_s"]
    return [
        "## Setup",
        "",
        f"- Machine: {m['platform']}, {m['usable_cores']} usable cores"
        + (f", {memory / 2**30:.0f} GiB memory" if memory else "")
        + f"; load average {_loads(m.get('load_average_at_start'))} at start, "
        f"{_loads(m.get('load_average_at_end'))} at end. "
        f"Run {results['started_at']} to {results.get('finished_at', '?')}.",
        f"- Data: {d['name']}, encoded by {d['model_id']} ({d['dim']}-d tokens): "
        f"{d['documents']:,} documents ({d['document_tokens'] / d['documents']:.0f} tokens each on "
        f"average), {d['queries']:,} queries"
        + (", with relevance judgements." if d["judged"] else ", no relevance judgements."),
        f"- Every backend: the same documents, queries, k={p['k']}, candidate counts "
        f"{', '.join(str(c) for c in p['candidates'])}, storage {p['dtype']}, upserts of "
        f"{p['batch_size']} documents; {p['warmup']} warm-up queries, then {p['repeats']} timed "
        f"passes (percentiles are medians over passes).",
        f"- FDE configurations: {fdes}.",
        f"- Time budget per mode: {f'{budget} s' if budget else 'none'}. Throughput at "
        f"{', '.join(str(n) for n in p['concurrency']) or 'no'} threads, at the candidate count "
        f"nearest {p['qps_candidates']}.",
        f"- Ground truth: {g['method']} ({g['ms_per_query']:.1f} ms per query)."
        + (
            f" Its own nDCG@{p['ndcg_cutoff']} = {_num(g['ndcg'])}, recall@{p['recall_depth']}"
            f" = {_num(g['judged_recall'])}: the ceiling of every mode."
            if d["judged"]
            else ""
        ),
    ]


def _versions(results: Mapping[str, Any]) -> list[str]:
    v = results["versions"]
    lines = [
        f"multivec {v['multivec']}, Python {v['python']}, model {v['model']}.",
        "",
        "| package | version |",
        "|---|---|",
    ]
    lines += [f"| {name} | {version} |" for name, version in v["packages"].items() if version]
    servers = [b for b in results["backends"] if b["placement"] == "server"]
    if servers:
        lines += ["", "| server | image | version reported |", "|---|---|---|"]
        lines += [
            f"| {b['name']} ({b['uri']}) | "
            f"{(b['server'] or {}).get('image') or 'already running'} | "
            f"{(b['server'] or {}).get('version') or '—'} |"
            for b in servers
        ]
    return lines


def _plot_all(results: Mapping[str, Any], out: Path) -> list[str]:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingDependencyError("matplotlib", "bench") from exc
    written = []
    for name, draw in (
        ("recall_latency", _plot_recall_latency),
        ("stages", _plot_stages),
        ("throughput", _plot_throughput),
        ("storage", _plot_storage),
    ):
        fig = Figure(figsize=(10, 5.5), layout="constrained")
        if draw(fig, results):
            fig.savefig(out / PLOTS[name], dpi=110)
            written.append(name)
        else:
            (out / PLOTS[name]).unlink(missing_ok=True)
    return written


def _plot_recall_latency(fig: Any, results: Mapping[str, Any]) -> bool:
    ax = fig.subplots()
    colors = _colors(results)
    markers = {
        f["label"]: _FDE_MARKERS[i % len(_FDE_MARKERS)] for i, f in enumerate(results["fde"])
    }
    series: dict[tuple[str, str, str], list[tuple[float, float, Any]]] = {}
    for backend, collection, run in _runs(results):
        if run.get("error"):
            continue
        key = (backend["name"], collection["fde"], run["mode"])
        point = (run["latency_ms"]["total"]["p50"], run["quality"]["recall"], run["candidates"])
        series.setdefault(key, []).append(point)
    for (name, fde, mode), points in series.items():
        # In sweep order: noisy latencies must not make the curve zig-zag.
        points.sort(key=lambda pt: pt[2] or 0)
        ax.plot(
            [pt[0] for pt in points],
            [pt[1] for pt in points],
            linestyle=_MODE_STYLES.get(mode, "-"),
            marker=markers.get(fde, "o"),
            color=colors[name],
            label=f"{name} · {mode}" + (f" · {fde}" if len(results["fde"]) > 1 else ""),
        )
        for x, y, candidates in points:
            if candidates:
                ax.annotate(
                    str(candidates), (x, y), fontsize=7, xytext=(3, -9), textcoords="offset points"
                )
    if not series:
        return False
    k = results["parameters"]["k"]
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency per query, ms (log scale)")
    ax.set_ylabel(f"recall@{k} against exact MaxSim")
    ax.set_title(f"Recall against latency (labels: candidates), {results['dataset']['name']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return True


def _plot_stages(fig: Any, results: Mapping[str, Any]) -> bool:
    points = list(_operating_points(results))
    if not points:
        return False
    ax = fig.subplots()
    labels = [f"{b['name']} · {_label(r)}" for b, r in points]
    left = [0.0] * len(points)
    for stage in _STAGES:
        widths = [r["latency_ms"][stage]["p50"] for _, r in points]
        ax.barh(labels, widths, left=left, label=stage)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("median ms per query")
    ax.set_title("Latency by stage (p50 of each stage)")
    ax.legend(fontsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    return True


def _plot_throughput(fig: Any, results: Mapping[str, Any]) -> bool:
    points = [(b, r) for b, r in _operating_points(results) if r["throughput"]]
    if not points:
        return False
    ax = fig.subplots()
    colors = _colors(results)
    for backend, run in points:
        ax.plot(
            [t["threads"] for t in run["throughput"]],
            [t["qps"] for t in run["throughput"]],
            linestyle=_MODE_STYLES.get(run["mode"], "-"),
            marker="o",
            color=colors[backend["name"]],
            label=f"{backend['name']} · {_label(run)}",
        )
    ax.set_xscale("log", base=2)
    threads = sorted({t["threads"] for _, run in points for t in run["throughput"]})
    ax.set_xticks(threads, [str(n) for n in threads])
    ax.set_xlabel("threads")
    ax.set_ylabel("queries per second")
    ax.set_title("Throughput against concurrency")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return True


def _plot_storage(fig: Any, results: Mapping[str, Any]) -> bool:
    colors = _colors(results)
    bars = [
        (f"{b['name']} · {c['fde']}", c["load"]["bytes_per_doc"] / 1024, colors[b["name"]])
        for b, c in _collections(results)
        if c["load"]["bytes_per_doc"] is not None
    ]
    if not bars:
        return False
    ax = fig.subplots()
    ax.barh([bar[0] for bar in bars], [bar[1] for bar in bars], color=[bar[2] for bar in bars])
    ax.invert_yaxis()
    ax.set_xlabel("KiB per document (on disk, after optimize)")
    ax.set_title("Storage per document")
    ax.grid(True, axis="x", alpha=0.3)
    return True


def _collections(results: Mapping[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for backend in results["backends"]:
        for collection in backend["collections"]:
            yield backend, collection


def _runs(
    results: Mapping[str, Any],
) -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    for backend, collection in _collections(results):
        for run in collection["runs"]:
            yield backend, collection, run


def _operating_points(
    results: Mapping[str, Any],
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """The runs that carry throughput: one per backend and mode, first FDE configuration."""
    for backend, _, run in _runs(results):
        if not run.get("error") and run.get("throughput") is not None:
            yield backend, run


def _storage_methods(results: Mapping[str, Any]) -> list[str]:
    methods = []
    for backend in results["backends"]:
        if backend["collections"]:
            method = backend["collections"][0]["load"]["storage_method"]
            methods.append(f"{backend['name']}: {method}")
    return methods or ["no backend loaded"]


def _colors(results: Mapping[str, Any]) -> dict[str, str]:
    return {b["name"]: f"C{i % 10}" for i, b in enumerate(results["backends"])}


def _plot_line(plots: Sequence[str], name: str, title: str) -> list[str]:
    return [f"![{title}]({PLOTS[name]})", ""] if name in plots else []


def _label(run: Mapping[str, Any]) -> str:
    return str(run["mode"]) + (f"@{run['candidates']}" if run["candidates"] else "")


def _qps(entry: Mapping[str, Any] | None) -> str:
    if entry is None:
        return "—"
    text = f"{entry['qps']:,.1f}"
    return text + (f" ({entry['errors']} errors)" if entry["errors"] else "")


def _num(value: float | None, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)


def _loads(values: Sequence[float] | None) -> str:
    return "/".join(f"{v:.2f}" for v in values) if values else "unknown"
