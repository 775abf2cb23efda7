"""MUVERA fixed dimensional encodings (FDEs) of token-vector sets.

An FDE turns a document's or a query's token vectors into one vector whose inner product with the
other side's FDE approximates the Chamfer (MaxSim) similarity, so an ordinary single-vector index
(inner product, never cosine) can fetch candidates for exact MaxSim reranking.

The encodings reproduce Google's reference implementation (google/graph-mining,
``sketching/point_cloud``) value for value, random matrices included, and are computed for a whole
batch at once::

    from multivec.muvera import FDEConfig, FDEEncoder

    config = FDEConfig.preset("muvera-10240", dim=128)        # store it with the collection
    doc_fdes = FDEEncoder(config).encode_documents(token_matrices)
    query_fdes = FDEEncoder(config.for_queries()).encode_queries(query_token_matrices)

FDE scores rank candidates; they are not calibrated similarities.
"""

from __future__ import annotations

from multivec.muvera._config import ALGORITHM_VERSION, PRESETS, FDEConfig
from multivec.muvera._encode import FDEEncoder, encode_documents, encode_queries, fit
from multivec.muvera._fitted import FittedPartitions
from multivec.muvera._matrices import CountSketch, FDEMatrices

__all__ = [
    "ALGORITHM_VERSION",
    "PRESETS",
    "CountSketch",
    "FDEConfig",
    "FDEEncoder",
    "FDEMatrices",
    "FittedPartitions",
    "encode_documents",
    "encode_queries",
    "fit",
]
