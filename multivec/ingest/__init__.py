r"""Ingest: from text to per-token vectors.

This package owns what comes before storage: the encoder protocol and the encoders that
satisfy it, and readers that stream corpora from disk. It knows nothing of databases.

* :class:`LateInteractionEncoder` is the protocol an encoder meets; fastembed's
  ``LateInteractionTextEmbedding`` meets it without importing multivec.
* :class:`OnnxLateInteractionEncoder` runs a local ONNX model, no model hub needed;
  :class:`FastembedTextEncoder` runs fastembed's ColBERT family and
  :class:`FastembedMultimodalEncoder` its ColPali family (page images), by name or from a
  local folder.
* :func:`default_encoder` picks (and logs) the model used when none is named.
* :func:`iter_beir_corpus`, :func:`iter_beir_queries` and :func:`load_beir_qrels` read the
  BEIR layout.
* :func:`ingest` streams files and folders (text, Markdown, Python and other code, PDF,
  PNG/JPEG, JSONL) through chunking and an encoder into a collection, resumably, and returns
  an :class:`IngestSummary`; :class:`CallableEncoder` turns a plain function into an encoder.
* :func:`pool_tokens` and :func:`keep_first` store fewer vectors per document (``pool=`` of
  :func:`ingest`).
* :func:`chunk_text`, :func:`chunk_python` and :func:`chunk_lines` are its chunkers, sized by
  a :data:`TokenCounter` (:func:`token_counter`, :func:`estimate_tokens`), into
  :class:`Chunk` values.

Importing this package imports neither onnxruntime, tokenizers nor fastembed; building an
encoder does.
"""

from __future__ import annotations

from multivec.ingest._chunking import (
    Chunk,
    TokenCounter,
    chunk_lines,
    chunk_python,
    chunk_text,
    estimate_tokens,
    token_counter,
)
from multivec.ingest._encoders import (
    ANSWERAI_COLBERT_SMALL,
    FASTEMBED_DEFAULT_MODEL,
    MODEL_DIR_ENV,
    FastembedTextEncoder,
    LateInteractionEncoder,
    OnnxLateInteractionEncoder,
    default_encoder,
    encoder_id,
    load_fastembed_from_dir,
)
from multivec.ingest._jsonl import (
    CorpusRecord,
    QrelRecord,
    QueryRecord,
    iter_beir_corpus,
    iter_beir_qrels,
    iter_beir_queries,
    load_beir_qrels,
)
from multivec.ingest._multimodal import COLPALI_LAYOUT, COLPALI_MODEL, FastembedMultimodalEncoder
from multivec.ingest._pipeline import CallableEncoder, IngestSummary, SkippedInput, ingest
from multivec.ingest._pooling import cluster_labels, keep_first, pool_tokens

__all__ = [
    "ANSWERAI_COLBERT_SMALL",
    "COLPALI_LAYOUT",
    "COLPALI_MODEL",
    "FASTEMBED_DEFAULT_MODEL",
    "MODEL_DIR_ENV",
    "CallableEncoder",
    "Chunk",
    "CorpusRecord",
    "FastembedMultimodalEncoder",
    "FastembedTextEncoder",
    "IngestSummary",
    "LateInteractionEncoder",
    "OnnxLateInteractionEncoder",
    "QrelRecord",
    "QueryRecord",
    "SkippedInput",
    "TokenCounter",
    "chunk_lines",
    "chunk_python",
    "chunk_text",
    "cluster_labels",
    "default_encoder",
    "encoder_id",
    "estimate_tokens",
    "ingest",
    "iter_beir_corpus",
    "iter_beir_qrels",
    "iter_beir_queries",
    "keep_first",
    "load_beir_qrels",
    "load_fastembed_from_dir",
    "pool_tokens",
    "token_counter",
]
