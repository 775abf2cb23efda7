"""multivec: late-interaction (multi-vector) retrieval on the vector databases you already run.

Each document's token vectors are stored in the database together with a MUVERA
fixed-dimensional encoding (FDE) that the database's own ANN index searches; the candidates are
then rescored client-side with exact MaxSim::

    import multivec
    col = multivec.connect("lancedb://./data", "papers", dim=384)
    col.upsert(ids, token_matrices, metadata)
    for hit in col.search(query_tokens, k=10, filter=multivec.Field("year") >= 2020):
        print(hit.id, hit.score, hit.metadata)
    multivec.migrate("lancedb://./data", "qdrant+edge://./qdrant", collection="papers")

Importing this package loads no database SDK; a backend's SDK is imported when a URI with its
scheme is first opened.
"""

from __future__ import annotations

from multivec._collection import Collection, connect
from multivec._explain import (
    Explanation,
    PatchLayout,
    SpanEncoder,
    SpanMatch,
    TokenSpans,
    explain_match,
    explain_text,
    explanation_heatmap,
    patch_scores,
)
from multivec._filters import Field, Filter
from multivec._migrate import (
    ExportReport,
    MigrationPlan,
    MigrationReport,
    VerifyReport,
    export_collection,
    import_collection,
    migrate,
    plan_migration,
    verify,
)
from multivec._models import CollectionInfo, Document, Hit, SearchResult, StageTimings
from multivec._uri import URI
from multivec.errors import (
    BackendError,
    CollectionNotFoundError,
    ConfigMismatchError,
    ConfigurationError,
    DimensionMismatchError,
    InvalidInputError,
    MultivecError,
)

__version__ = "0.1.0"

__all__ = [
    "URI",
    "BackendError",
    "Collection",
    "CollectionInfo",
    "CollectionNotFoundError",
    "ConfigMismatchError",
    "ConfigurationError",
    "DimensionMismatchError",
    "Document",
    "Explanation",
    "ExportReport",
    "Field",
    "Filter",
    "Hit",
    "InvalidInputError",
    "MigrationPlan",
    "MigrationReport",
    "MultivecError",
    "PatchLayout",
    "SearchResult",
    "SpanEncoder",
    "SpanMatch",
    "StageTimings",
    "TokenSpans",
    "VerifyReport",
    "__version__",
    "connect",
    "explain_match",
    "explain_text",
    "explanation_heatmap",
    "export_collection",
    "import_collection",
    "migrate",
    "patch_scores",
    "plan_migration",
    "verify",
]
