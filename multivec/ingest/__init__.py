"""Ingest: from text to per-token vectors.

This package owns what comes before storage: the encoder protocol and the encoders that
satisfy it, and readers that stream corpora from disk. It knows nothing of databases.

* :class:`LateInteractionEncoder` is the protocol an encoder meets; fastembed's
  ``LateInteractionTextEmbedding`` meets it without importing multivec.
* :class:`OnnxLateInteractionEncoder` runs a local ONNX model, no model hub needed.
* :func:`default_encoder` picks (and logs) the model used when none is named.
* :func:`iter_beir_corpus`, :func:`iter_beir_queries` and :func:`load_beir_qrels` read the
  BEIR layout.

Importing this package imports neither onnxruntime, tokenizers nor fastembed; building an
encoder does.
"""

from __future__ import annotations

from multivec.ingest._encoders import (
    ANSWERAI_COLBERT_SMALL,
    FASTEMBED_DEFAULT_MODEL,
    MODEL_DIR_ENV,
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

__all__ = [
    "ANSWERAI_COLBERT_SMALL",
    "FASTEMBED_DEFAULT_MODEL",
    "MODEL_DIR_ENV",
    "CorpusRecord",
    "LateInteractionEncoder",
    "OnnxLateInteractionEncoder",
    "QrelRecord",
    "QueryRecord",
    "default_encoder",
    "encoder_id",
    "iter_beir_corpus",
    "iter_beir_qrels",
    "iter_beir_queries",
    "load_beir_qrels",
    "load_fastembed_from_dir",
]
