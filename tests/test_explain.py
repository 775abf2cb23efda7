"""Match explanations: real MiniLM vectors in real embedded backends, checked by brute force."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import multivec
from multivec._explain import (
    Explanation,
    PatchLayout,
    explain_match,
    explain_text,
    explanation_heatmap,
    patch_scores,
)
from multivec.errors import InvalidInputError, InvalidVectorsError
from multivec.ingest import OnnxLateInteractionEncoder
from multivec.ingest._pooling import keep_first, pool_tokens

MINILM_DIR = (
    Path(__file__).resolve().parents[1].parent / "shared" / "models" / "all-minilm-l6-v2-onnx"
)
TEXTS = [
    "Insulin resistance rises in obese mice fed a high-fat diet.",
    "Vitamin D supplements did not lower the risk of fractures in older adults.",
    "Late interaction keeps one vector per token and scores with MaxSim.",
    "Tumour growth slowed when the mice received the inhibitor daily.",
    "Sleep deprivation impairs memory consolidation in healthy volunteers.",
    "The vaccine produced antibodies in ninety percent of the participants.",
    "Gut bacteria influence how the body stores fat.",
    "Statins reduce cholesterol but may raise blood sugar slightly.",
]
IDS = [f"doc-{i}" for i in range(len(TEXTS))]


@pytest.fixture(scope="module")
def minilm() -> OnnxLateInteractionEncoder:
    return OnnxLateInteractionEncoder(MINILM_DIR, max_length=64, query_max_length=32)


@pytest.fixture(params=["memory", "lancedb"])
def collection(
    request: pytest.FixtureRequest, tmp_path: Path, minilm: OnnxLateInteractionEncoder
) -> Iterator[multivec.Collection]:
    if request.param == "lancedb":
        pytest.importorskip("lancedb")
        uri = f"lancedb://{tmp_path}"
    else:
        uri = "memory://"
    col = multivec.connect(uri, f"explain-{request.param}", dim=minilm.dim, fde="muvera-1280")
    col.upsert(IDS, list(minilm.embed(TEXTS)), texts=TEXTS)
    yield col
    col.drop()


def test_contributions_sum_to_the_score_and_match_brute_force(
    collection: multivec.Collection, minilm: OnnxLateInteractionEncoder
) -> None:
    (query,) = minilm.query_embed(["does insulin resistance rise in obese mice?"])
    result = collection.search(query, k=4, explain=True)
    assert result.ids[0] == "doc-0"
    stored = {d.id: d.vectors for d in collection.get(result.ids)}
    for hit in result:
        explanation = hit.explanation
        assert explanation is not None
        # Vectors are stored as float16; the rerank and the explanation read the same values.
        assert explanation.score == pytest.approx(hit.score, rel=1e-4, abs=1e-4)
        similarities = query @ stored[hit.id].astype(np.float32).T
        assert explanation.doc_tokens == tuple(int(i) for i in similarities.argmax(axis=1))
        np.testing.assert_allclose(
            explanation.contributions, similarities.max(axis=1), rtol=1e-5, atol=1e-6
        )
        assert explanation.n_doc_vectors == stored[hit.id].shape[0]
        assert len(explanation.doc_tokens) == query.shape[0]


def test_no_explanation_unless_asked(
    collection: multivec.Collection, minilm: OnnxLateInteractionEncoder
) -> None:
    (query,) = minilm.query_embed(["vitamin D and fractures"])
    plain = collection.search(query, k=3)
    explained = collection.search(query, k=3, explain=True)
    assert all(hit.explanation is None for hit in plain)
    assert plain.ids == explained.ids
    assert [h.score for h in plain] == [h.score for h in explained]


def test_matched_spans_point_at_the_words(
    collection: multivec.Collection, minilm: OnnxLateInteractionEncoder
) -> None:
    (query,) = minilm.query_embed(["insulin mice"])
    hit = collection.search(query, k=1, explain=True)[0]
    assert hit.id == "doc-0"
    assert hit.text == TEXTS[0]
    assert hit.explanation is not None
    matches = explain_text(hit.explanation, hit.text, minilm)
    assert [m.query_token for m in matches] == list(range(query.shape[0]))
    words = {m.text.lower() for m in matches}
    # Query tokens: [CLS] insulin mice [SEP]; the two words find themselves in the text.
    assert {"insulin", "mice"} <= words
    for m in matches:
        if m.start is not None and m.end is not None:
            assert hit.text[m.start : m.end] == m.text
    assert sum(m.contribution for m in matches) == pytest.approx(hit.score, rel=1e-4)


def test_spans_of_pooled_documents_are_refused(minilm: OnnxLateInteractionEncoder) -> None:
    (doc,) = minilm.embed([TEXTS[2]])
    (query,) = minilm.query_embed(["late interaction"])
    pooled = explain_match(query, pool_tokens(doc, pool_factor=2))
    with pytest.raises(InvalidInputError, match="pooled"):
        explain_text(pooled, TEXTS[2], minilm)
    # keep_first keeps the first rows as they were: their spans stay valid when allowed.
    cut = explain_match(query, keep_first(doc, 5))
    with pytest.raises(InvalidInputError):
        explain_text(cut, TEXTS[2], minilm)
    matches = explain_text(cut, TEXTS[2], minilm, allow_prefix=True)
    assert {m.text.lower() for m in matches} >= {"late", "interaction"}


def test_onnx_token_spans_cover_every_vector(tmp_path: Path) -> None:
    encoder = OnnxLateInteractionEncoder(MINILM_DIR, document_prefix="passage: ")
    text = "MaxSim, in short: the best match per token!"  # "MaxSim" is three word pieces
    (doc,) = encoder.embed([text])
    spans = encoder.token_spans(text)
    assert len(spans) == doc.shape[0]
    # [CLS], the prefix's two tokens, then the text's own tokens, then [SEP].
    assert spans[:3] == [None, None, None]
    assert spans[-1] is None
    assert [text[s[0] : s[1]] for s in spans if s is not None][:3] == ["Max", "Si", "m"]


def test_explain_match_checks_its_input() -> None:
    with pytest.raises(InvalidVectorsError, match="non-empty"):
        explain_match(np.ones((0, 4)), np.ones((3, 4)))
    with pytest.raises(InvalidVectorsError, match="4-d"):
        explain_match(np.ones((2, 4)), np.ones((3, 5)))


def test_heatmap_has_the_page_size_and_paints_matched_patches(tmp_path: Path) -> None:
    Image = pytest.importorskip("PIL.Image")
    layout = PatchLayout(rows=2, cols=3, first=1)
    # 1 prompt row, then 6 patches; query token 0 won patch (1, 2), token 1 the prompt row.
    explanation = Explanation(doc_tokens=(1 + 5, 0), contributions=(0.8, 0.3), n_doc_vectors=7)
    grid = patch_scores(explanation, layout)
    assert grid.shape == (2, 3)
    assert grid[1, 2] == pytest.approx(0.8)
    assert grid.sum() == pytest.approx(0.8)
    page = Image.new("RGB", (90, 40), "white")
    heat = explanation_heatmap(explanation, page, layout)
    heat.save(tmp_path / "heat.png")
    reread = Image.open(tmp_path / "heat.png").convert("RGB")
    assert reread.size == (90, 40)
    pixels = np.asarray(reread)
    assert tuple(pixels[30, 75]) != (255, 255, 255)  # bottom-right patch, painted
    assert tuple(pixels[5, 5]) == (255, 255, 255)  # top-left patch, untouched
    with pytest.raises(InvalidInputError, match="alpha"):
        explanation_heatmap(explanation, page, layout, alpha=2.0)
    with pytest.raises(InvalidInputError, match="fewer than"):
        patch_scores(explanation, PatchLayout(rows=4, cols=4))


def test_native_mode_explains_with_the_fetched_vectors(
    tmp_path: Path, minilm: OnnxLateInteractionEncoder
) -> None:
    pytest.importorskip("lancedb")
    col = multivec.connect(f"lancedb://{tmp_path}", "native", dim=minilm.dim, fde="muvera-1280")
    col.upsert(IDS, list(minilm.embed(TEXTS)), texts=TEXTS)
    (query,) = minilm.query_embed(["sleep and memory"])
    native = col.search(query, k=2, mode="native", explain=True)
    exact = {h.id: h.score for h in col.search(query, k=len(IDS), candidates=len(IDS))}
    assert native.ids[0] == "doc-4"
    for hit in native:
        assert hit.explanation is not None
        # The explanation is multivec's exact MaxSim over the stored vectors.
        assert hit.explanation.score == pytest.approx(exact[hit.id], rel=1e-4, abs=1e-4)
    col.drop()
