"""The streaming ingest pipeline, end to end on real files, the real MiniLM model and real
embedded backends (``memory://`` and ``lancedb://``).

Image inputs (PNG, JPEG, PDF pages) go through :class:`FakePageEncoder`, a small stand-in
for a page-image model: the real fastembed multimodal path is tested with the encoders.
"""

from __future__ import annotations

import io
import json
import sys
import types
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import multivec
from multivec.cli import main
from multivec.errors import DimensionMismatchError, InvalidInputError
from multivec.ingest import OnnxLateInteractionEncoder, ingest

MINILM_DIR = (
    Path(__file__).resolve().parents[1].parent / "shared" / "models" / "all-minilm-l6-v2-onnx"
)
FAST_FDE = "muvera-1280"


@pytest.fixture(scope="module")
def minilm() -> OnnxLateInteractionEncoder:
    return OnnxLateInteractionEncoder(MINILM_DIR)


def memory_collection(dim: int = 384) -> multivec.Collection:
    return multivec.connect(f"memory://{uuid.uuid4().hex}", "c", dim=dim, fde=FAST_FDE)


def all_ids(collection: multivec.Collection) -> set[str]:
    return {str(d.id) for batch in collection.iter_documents() for d in batch}


def all_docs(collection: multivec.Collection) -> dict[str, Any]:
    return {str(d.id): d for batch in collection.iter_documents() for d in batch}


# --- fixture files ---------------------------------------------------------------------------


def write_pdf(path: Path, pages: list[str]) -> None:
    """A minimal PDF with one line of Helvetica text per page."""
    objects = {
        1: "<< /Type /Catalog /Pages 2 0 R >>",
        2: "<< /Type /Pages /Kids [{}] /Count {} >>".format(
            " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages))), len(pages)
        ),
        3: "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    }
    for i, text in enumerate(pages):
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET"
        objects[4 + 2 * i] = (
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>"
        )
        objects[5 + 2 * i] = f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream"
    out = b"%PDF-1.4\n"
    offsets = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += f"{number} 0 obj\n{objects[number]}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{offsets[n]:010d} 00000 n \n" for n in sorted(objects)).encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    path.write_bytes(out)


def write_png(path: Path, color: tuple[int, int, int]) -> None:
    Image.new("RGB", (32, 24), color).save(path, format="PNG")


def write_truncated_jpeg(path: Path) -> None:
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def markdown(sections: list[str]) -> str:
    return "\n\n".join(f"## Part {i}\n\n{body}" for i, body in enumerate(sections)) + "\n"


SECTIONS = [
    "Token vectors are stored per document. Each one is normalised.",
    "The first stage uses fixed dimensional encodings. They fit a normal index.",
    "Exact MaxSim reranks the candidates. It needs every token vector.",
    "Filters are pushed down to the database. Metadata is JSON.",
    "Collections remember their configuration. Queries are checked against it.",
]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A folder with one file of every kind the text pipeline reads, good and bad."""
    folder = tmp_path / "docs"
    (folder / "code").mkdir(parents=True)
    (folder / "guide.md").write_text(markdown(SECTIONS[:3]), encoding="utf-8")
    (folder / "notes.txt").write_text(
        "Plain notes about retrieval. They have two sentences.", encoding="utf-8"
    )
    (folder / "code" / "store.py").write_text(
        'import os\n\n\ndef home() -> str:\n    """Home."""\n    return os.getcwd()\n',
        encoding="utf-8",
    )
    (folder / "corpus.jsonl").write_text(
        '{"_id": "d1", "title": "Statins", "text": "Statins lower cholesterol."}\n'
        "{not json\n"
        '{"_id": "d2", "title": "", "text": "Aspirin thins blood."}\n',
        encoding="utf-8",
    )
    write_pdf(folder / "paper.pdf", ["Page one talks about vectors.", "Page two about indexes."])
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a PDF\n")
    write_png(folder / "figure.png", (200, 30, 30))
    write_truncated_jpeg(folder / "photo.jpg")
    (folder / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (folder / "empty.md").write_text("  \n", encoding="utf-8")
    (folder / "data.bin").write_bytes(b"\x00\x01")
    (folder / ".hidden.md").write_text("# Hidden\n\nNever read.\n", encoding="utf-8")
    return folder


# --- text pipeline ------------------------------------------------------------------------------


def test_a_mixed_folder_is_ingested_and_bad_files_are_listed(
    corpus: Path, minilm: OnnxLateInteractionEncoder
) -> None:
    col = memory_collection()
    summary = ingest(corpus, col, minilm, max_tokens=32)
    reasons = {Path(s.path).name: s.reason for s in summary.skipped}
    assert set(reasons) == {
        "corpus.jsonl:2",
        "broken.pdf",
        "figure.png",
        "photo.jpg",
        "latin1.txt",
        "empty.md",
    }
    assert "not valid JSON" in reasons["corpus.jsonl:2"]
    assert "not a readable PDF" in reasons["broken.pdf"]
    assert "no embed_image" in reasons["figure.png"]
    assert "no embed_image" in reasons["photo.jpg"]
    assert "not UTF-8 (byte 0xe9" in reasons["latin1.txt"]
    assert reasons["empty.md"].startswith("empty")
    assert summary.ignored == 1  # data.bin; the hidden file is not even counted
    assert summary.files == 5  # guide.md, notes.txt, store.py, corpus.jsonl, paper.pdf
    assert summary.documents == 6  # the JSONL file holds two good records
    ids = all_ids(col)
    assert summary.chunks == len(ids) == col.count()
    assert {"guide.md#0", "guide.md#2", "notes.txt#0", "code/store.py#1", "d1#0", "d2#0"} <= ids
    assert {"paper.pdf#0", "paper.pdf#1"} <= ids
    assert summary.vectors == summary.tokens > summary.chunks
    docs = all_docs(col)
    assert docs["paper.pdf#1"].metadata["page"] == 2
    assert "Page two about indexes." in docs["paper.pdf#1"].text
    assert docs["code/store.py#1"].metadata["symbol"] == "home"
    assert docs["d1#0"].text == "Statins\n\nStatins lower cholesterol."
    assert docs["d1#0"].metadata["doc_id"] == "d1"


def test_stored_positions_point_back_into_the_source(
    corpus: Path, minilm: OnnxLateInteractionEncoder
) -> None:
    col = memory_collection()
    ingest([corpus / "guide.md", corpus / "code"], col, minilm, max_tokens=32)
    for doc in all_docs(col).values():
        meta = doc.metadata
        source = (
            corpus / ("code/" if meta["kind"] == "python" else "") / meta["source"]
        ).read_text()
        body = doc.text[meta["text_offset"] :]
        assert source[meta["char_start"] : meta["char_end"]] == body
        assert meta["line_start"] == source.count("\n", 0, meta["char_start"]) + 1
    headings = {d.metadata.get("heading") for d in all_docs(col).values()}
    assert {"Part 0", "Part 1", "Part 2"} <= headings


def test_ids_are_relative_to_the_input_folder_or_to_root(
    corpus: Path, minilm: OnnxLateInteractionEncoder
) -> None:
    by_file, by_folder, by_root = memory_collection(), memory_collection(), memory_collection()
    ingest(corpus / "code" / "store.py", by_file, minilm)
    ingest(corpus / "code", by_folder, minilm)
    ingest(corpus / "code", by_root, minilm, root=corpus.parent)
    assert all_ids(by_file) == all_ids(by_folder) == {"store.py#0", "store.py#1"}
    assert all_ids(by_root) == {"docs/code/store.py#0", "docs/code/store.py#1"}


def test_rerunning_ingests_nothing(corpus: Path, minilm: OnnxLateInteractionEncoder) -> None:
    col = memory_collection()
    first = ingest(corpus, col, minilm, max_tokens=32)
    count = col.count()
    again = ingest(corpus, col, minilm, max_tokens=32)
    assert again.chunks == again.vectors == again.relabelled == again.deleted == 0
    assert again.unchanged == first.chunks == count == col.count()
    assert [s.path for s in again.skipped] == [s.path for s in first.skipped]


def test_changed_settings_re_encode_everything(
    corpus: Path, minilm: OnnxLateInteractionEncoder
) -> None:
    col = memory_collection()
    ingest(corpus / "guide.md", col, minilm, max_tokens=32)
    again = ingest(corpus / "guide.md", col, minilm, max_tokens=32, pool=lambda m: m[::2])
    assert again.unchanged == 0
    assert again.chunks == col.count() == 3
    assert again.vectors < again.tokens


def test_editing_one_file_re_encodes_only_its_changed_chunks(
    corpus: Path, minilm: OnnxLateInteractionEncoder
) -> None:
    col = memory_collection()
    first = ingest(corpus, col, minilm, max_tokens=32)
    before = all_docs(col)
    edited = SECTIONS[:3]
    edited[1] = edited[1].replace("normal index", "perfectly ordinary index")
    (corpus / "guide.md").write_text(markdown(edited), encoding="utf-8")
    again = ingest(corpus, col, minilm, max_tokens=32)
    assert again.chunks == 1  # guide.md#1 changed
    assert again.relabelled == 1  # guide.md#2 moved down the file: same vectors, new positions
    assert again.unchanged == first.chunks - 2
    after = all_docs(col)
    assert "perfectly ordinary" in after["guide.md#1"].text
    np.testing.assert_array_equal(after["guide.md#2"].vectors, before["guide.md#2"].vectors)
    assert after["guide.md#2"].metadata["char_start"] > before["guide.md#2"].metadata["char_start"]
    assert col.count() == first.chunks


def test_a_shrunk_file_loses_its_stale_chunks(
    tmp_path: Path, minilm: OnnxLateInteractionEncoder
) -> None:
    doc = tmp_path / "guide.md"
    doc.write_text(markdown(SECTIONS), encoding="utf-8")
    col = memory_collection()
    assert ingest(doc, col, minilm, max_tokens=32).chunks == 5
    doc.write_text(markdown(SECTIONS[:2]), encoding="utf-8")
    summary = ingest(doc, col, minilm, max_tokens=32)
    assert summary.deleted == 3
    # The two kept chunks have the same text, so their vectors are reused; only their
    # "chunks" count changes.
    assert (summary.chunks, summary.relabelled, summary.unchanged) == (0, 2, 0)
    assert all_ids(col) == {"guide.md#0", "guide.md#1"}
    assert all(d.metadata["chunks"] == 2 for d in all_docs(col).values())


class CrashingEncoder:
    """MiniLM that raises on its third call, like a process killed mid-run."""

    def __init__(self, inner: OnnxLateInteractionEncoder, calls_before_crash: int) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.model_dir = inner.model_dir
        self.max_length = inner.max_length
        self.left = calls_before_crash

    def embed(self, documents: Iterable[str], batch_size: int = 32, **kwargs: Any) -> Any:
        if self.left == 0:
            raise RuntimeError("simulated crash")
        self.left -= 1
        return self.inner.embed(documents, batch_size=batch_size)

    def query_embed(self, query: Any, **kwargs: Any) -> Any:
        return self.inner.query_embed(query)


def test_an_interrupted_run_resumes_to_exactly_the_right_ids(
    tmp_path: Path, minilm: OnnxLateInteractionEncoder
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(4):
        (folder / f"doc{i}.md").write_text(markdown(SECTIONS), encoding="utf-8")
    col = memory_collection()
    with pytest.raises(RuntimeError, match="simulated crash"):
        ingest(folder, col, CrashingEncoder(minilm, 2), max_tokens=32, batch_size=3)
    assert col.count() == 6  # the two batches encoded before the crash were written
    resumed = ingest(folder, col, minilm, max_tokens=32, batch_size=3)
    assert resumed.unchanged == 6
    assert resumed.chunks == 14
    reference = memory_collection()
    ingest(folder, reference, minilm, max_tokens=32)
    assert (
        all_ids(col) == all_ids(reference) == {f"doc{i}.md#{j}" for i in range(4) for j in range(5)}
    )
    for doc_id, doc in all_docs(reference).items():
        assert all_docs(col)[doc_id].metadata == doc.metadata


def test_an_interruption_then_a_shrink_leaves_no_stale_chunk(
    tmp_path: Path, minilm: OnnxLateInteractionEncoder
) -> None:
    doc = tmp_path / "a.md"
    doc.write_text(markdown(SECTIONS[:2]), encoding="utf-8")
    col = memory_collection()
    ingest(doc, col, minilm, max_tokens=32)
    doc.write_text(markdown([s + " Edited." for s in SECTIONS]), encoding="utf-8")
    with pytest.raises(RuntimeError):
        ingest(doc, col, CrashingEncoder(minilm, 1), max_tokens=32, batch_size=2)
    doc.write_text(markdown(SECTIONS[:1]), encoding="utf-8")
    ingest(doc, col, minilm, max_tokens=32)
    assert all_ids(col) == {"a.md#0"}


def test_the_encoder_must_match_the_collection_width(
    corpus: Path, minilm: OnnxLateInteractionEncoder
) -> None:
    col = memory_collection(dim=16)
    with pytest.raises(DimensionMismatchError):
        ingest(corpus / "notes.txt", col, minilm)
    assert col.count() == 0


def test_images_alone_are_refused_by_a_text_encoder(
    corpus: Path, minilm: OnnxLateInteractionEncoder
) -> None:
    with pytest.raises(InvalidInputError, match="every input is an image"):
        ingest([corpus / "figure.png", corpus / "photo.jpg"], memory_collection(), minilm)


def test_bad_arguments_are_refused(corpus: Path, minilm: OnnxLateInteractionEncoder) -> None:
    col = memory_collection()
    with pytest.raises(InvalidInputError, match="does not exist"):
        ingest(corpus / "missing", col, minilm)
    with pytest.raises(InvalidInputError, match="exceeds the encoder's limit"):
        ingest(corpus, col, minilm, max_tokens=4096)
    with pytest.raises(InvalidInputError, match="not an encoder"):
        ingest(corpus, col, object())


# --- plain functions, pooling, images ---------------------------------------------------------


def word_vectors(texts: list[str]) -> list[np.ndarray]:
    """A toy text encoder: one 8-d vector per word, seeded by the word."""
    out = []
    for text in texts:
        rows = [np.random.default_rng(sum(map(ord, w))).normal(size=8) for w in text.split()] or [
            np.ones(8)
        ]
        out.append(np.asarray(rows, dtype=np.float32))
    return out


def test_a_plain_function_and_a_pool_hook_are_accepted(corpus: Path) -> None:
    col = memory_collection(dim=8)
    summary = ingest(corpus / "guide.md", col, word_vectors, pool=lambda m: m[::2])
    assert summary.chunks == 3  # one per section: all fit the default 512 tokens
    docs = all_docs(col).values()
    for doc in docs:
        words = len(doc.text.split())
        assert doc.vectors.shape[0] == (words + 1) // 2  # every second word's vector
    assert summary.vectors == sum(d.vectors.shape[0] for d in docs) < summary.tokens


def test_writes_start_before_the_input_is_read_to_the_end(tmp_path: Path) -> None:
    """Streaming: with 40 files and batches of 2, chunks are stored while files remain unread."""
    for i in range(40):
        (tmp_path / f"note{i:02}.txt").write_text(f"Note {i} says something.", encoding="utf-8")
    col = memory_collection(dim=8)
    stored_at_call: list[int] = []

    def encode(texts: list[str]) -> list[np.ndarray]:
        stored_at_call.append(col.count())
        return word_vectors(texts)

    summary = ingest(tmp_path, col, encode, batch_size=2)
    assert summary.chunks == col.count() == 40
    assert len(stored_at_call) == 20
    assert stored_at_call == sorted(stored_at_call)
    assert stored_at_call[10] > 0  # half way through, earlier batches are already stored


class FakePageEncoder:
    """A stand-in page-image model: 8-d vectors from pixels, and from words for text."""

    model_id = "fake-page-encoder"

    def embed(self, documents: Iterable[str], batch_size: int = 32, **kwargs: Any) -> Iterator[Any]:
        return iter(word_vectors(list(documents)))

    def query_embed(self, query: Any, **kwargs: Any) -> Iterator[Any]:
        return self.embed([query] if isinstance(query, str) else query)

    def embed_image(
        self, images: Iterable[Image.Image], batch_size: int = 2, **kwargs: Any
    ) -> Iterator[np.ndarray]:
        for image in images:
            pixels = np.asarray(image.convert("RGB").resize((4, 2)), dtype=np.float32) / 255
            yield np.concatenate([pixels.reshape(8, 3), np.ones((8, 5), np.float32)], axis=1)


def test_an_image_encoder_gets_images_and_pdf_pages(corpus: Path) -> None:
    col = memory_collection(dim=8)
    summary = ingest(corpus, col, FakePageEncoder())
    reasons = {Path(s.path).name: s.reason for s in summary.skipped}
    assert "damaged image" in reasons["photo.jpg"]
    assert "not a readable PDF" in reasons["broken.pdf"]
    docs = all_docs(col)
    figure = docs["figure.png#0"]
    assert figure.text is None
    assert (figure.metadata["width"], figure.metadata["height"]) == (32, 24)
    assert figure.vectors[0, 0] == pytest.approx(200 / 255, abs=1e-2)  # red, as drawn
    pages = [docs["paper.pdf#0"], docs["paper.pdf#1"]]
    assert [p.metadata["page"] for p in pages] == [1, 2]
    assert [p.text for p in pages] == ["Page one talks about vectors.", "Page two about indexes."]
    assert "paper.pdf#2" not in docs
    # Text files still go to the same encoder's text side.
    assert "guide.md#0" in docs
    again = ingest(corpus, col, FakePageEncoder())
    assert again.chunks == 0
    assert again.unchanged == summary.chunks


# --- command line ---------------------------------------------------------------------------


def test_cli_ingest_reports_json_and_reruns_as_unchanged(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"lancedb://{tmp_path / 'db'}"
    argv = ["ingest", str(corpus), "--into", uri, "--collection", "notes"]
    argv += ["--encoder", str(MINILM_DIR), "--max-tokens", "48", "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["chunks"] > 0
    assert first["total_documents"] == first["chunks"]
    assert {Path(s["path"]).name for s in first["skipped"]} >= {"latin1.txt", "broken.pdf"}
    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["chunks"] == second["relabelled"] == 0
    assert second["unchanged"] == first["chunks"]
    assert second["total_documents"] == first["total_documents"]


def test_cli_ingest_exits_1_when_nothing_could_be_read(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["ingest", str(corpus / "latin1.txt"), str(corpus / "empty.md")]
    argv += ["--into", f"lancedb://{tmp_path / 'db'}", "--encoder", str(MINILM_DIR)]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "latin1.txt: not UTF-8" in out
    assert "empty.md: empty" in out


def test_cli_pool_factor_pools_before_storing(
    corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The wiring of --pool-factor, with a stand-in for multivec.ingest._pooling.pool_tokens."""
    calls: list[int] = []

    def pool_tokens(vectors: np.ndarray, pool_factor: int = 2) -> np.ndarray:
        calls.append(pool_factor)
        return vectors[::pool_factor]

    monkeypatch.setitem(
        sys.modules, "multivec.ingest._pooling", types.SimpleNamespace(pool_tokens=pool_tokens)
    )
    argv = ["ingest", str(corpus / "guide.md"), "--into", f"lancedb://{tmp_path / 'db'}"]
    argv += ["--encoder", str(MINILM_DIR), "--pool-factor", "3", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert calls == [3] * out["chunks"]
    assert out["vectors"] < out["tokens"]
