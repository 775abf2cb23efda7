"""Page images through fastembed's ColPali code path, with a tiny model of ColPali's shape.

No ColPali weights can be fetched here, so the test builds a model with the same interface
as fastembed's ColPali ONNX export: inputs ``input_ids``, ``attention_mask`` and
``pixel_values`` (batch, 3, 448, 448); one output of (batch, seq, 128) vectors where the
positions holding the ``<image>`` token (id 257152) carry the 32 x 32 grid of 14-pixel patch
vectors in row-major order, and the other positions carry text-token vectors. Next to it sit
minimal ``tokenizer.json``, ``tokenizer_config.json``, ``preprocessor_config.json`` and
``config.json`` files. fastembed's own loader (``specific_model_path``), preprocessor and ColPali
pre/post-processing run unchanged. This checks the plumbing (shapes, order, patch layout,
heatmap placement), not retrieval quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import multivec
from multivec._explain import explain_match, explanation_heatmap, patch_scores
from multivec.errors import InvalidInputError
from multivec.ingest import LateInteractionEncoder, ingest
from multivec.ingest._multimodal import COLPALI_LAYOUT, COLPALI_MODEL, FastembedMultimodalEncoder

onnx = pytest.importorskip("onnx")
Image = pytest.importorskip("PIL.Image")
pytest.importorskip("fastembed")

DIM = 128
IMAGE_TOKEN = 257152
GRID = 32
PATCH = 14
VOCAB = 97  # text token ids are folded into a small embedding table
WORDS = ["<pad>", "<eos>", "<bos>", "<unk>", "Query", ":", "which", "page", "shows", "a", "chart"]


def _tiny_colpali_graph(seed: int = 0) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(size=(VOCAB, DIM)).astype(np.float32), "embeddings"),
        numpy_helper.from_array(
            rng.normal(size=(DIM, 3, PATCH, PATCH)).astype(np.float32) / PATCH, "patch_weight"
        ),
        numpy_helper.from_array(rng.normal(size=(DIM,)).astype(np.float32), "patch_bias"),
        numpy_helper.from_array(np.array(VOCAB, dtype=np.int64), "vocab"),
        numpy_helper.from_array(np.array(IMAGE_TOKEN, dtype=np.int64), "image_token"),
        numpy_helper.from_array(np.array([0, DIM, GRID * GRID], dtype=np.int64), "flat_shape"),
        numpy_helper.from_array(np.array(1, dtype=np.int64), "one"),
        numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"),
        numpy_helper.from_array(np.array(GRID * GRID - 1, dtype=np.int64), "last_patch"),
        numpy_helper.from_array(np.array(1, dtype=np.int64), "seq_axis"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "feature_axis"),
    ]
    nodes = [
        # Text positions: an embedding of the token id.
        helper.make_node("Mod", ["input_ids", "vocab"], ["folded_ids"]),
        helper.make_node("Gather", ["embeddings", "folded_ids"], ["text_vectors"]),
        # Image positions: one 14x14 patch each, in row-major order, as PaliGemma's SigLIP.
        helper.make_node(
            "Conv",
            ["pixel_values", "patch_weight", "patch_bias"],
            ["patch_map"],
            kernel_shape=[PATCH, PATCH],
            strides=[PATCH, PATCH],
        ),
        helper.make_node("Reshape", ["patch_map", "flat_shape"], ["patch_flat"]),
        helper.make_node("Transpose", ["patch_flat"], ["patch_vectors"], perm=[0, 2, 1]),
        helper.make_node("Equal", ["input_ids", "image_token"], ["is_image"]),
        helper.make_node("Cast", ["is_image"], ["is_image_int"], to=TensorProto.INT64),
        helper.make_node("CumSum", ["is_image_int", "seq_axis"], ["image_rank"]),
        helper.make_node("Sub", ["image_rank", "one"], ["image_index_raw"]),
        helper.make_node("Clip", ["image_index_raw", "zero", "last_patch"], ["image_index"]),
        helper.make_node("Unsqueeze", ["image_index", "feature_axis"], ["image_index_3d"]),
        helper.make_node(
            "GatherND", ["patch_vectors", "image_index_3d"], ["placed_patches"], batch_dims=1
        ),
        helper.make_node("Unsqueeze", ["is_image", "feature_axis"], ["is_image_3d"]),
        helper.make_node("Where", ["is_image_3d", "placed_patches", "text_vectors"], ["mixed"]),
        helper.make_node("LpNormalization", ["mixed"], ["last_hidden_state"], axis=-1, p=2),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_colpali",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info(
                "pixel_values", TensorProto.FLOAT, ["batch", 3, GRID * PATCH, GRID * PATCH]
            ),
        ],
        [
            helper.make_tensor_value_info(
                "last_hidden_state", TensorProto.FLOAT, ["batch", "seq", DIM]
            )
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    serialized: bytes = model.SerializeToString()
    return serialized


def _tiny_tokenizer_json() -> str:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tokenizer.add_special_tokens(["<pad>", "<bos>", "<eos>"])
    text: str = tokenizer.to_str()
    return text


@pytest.fixture(scope="module")
def tiny_colpali_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-colpali")
    (folder / "model.onnx").write_bytes(_tiny_colpali_graph())
    (folder / "tokenizer.json").write_text(_tiny_tokenizer_json(), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": 512, "pad_token": "<pad>", "padding_side": "right"})
    )
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>"})
    )
    (folder / "config.json").write_text(json.dumps({"pad_token_id": 0, "model_type": "tiny"}))
    # ColPali v1.3's processor: stretch to 448 x 448, scale to [-1, 1].
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "SiglipImageProcessor",
                "do_resize": True,
                "size": {"height": 448, "width": 448},
                "resample": 3,
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "do_normalize": True,
                "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.5, 0.5, 0.5],
            }
        )
    )
    return folder


@pytest.fixture(scope="module")
def encoder(tiny_colpali_dir: Path) -> FastembedMultimodalEncoder:
    return FastembedMultimodalEncoder(COLPALI_MODEL, model_dir=tiny_colpali_dir, threads=1)


def _page(width: int = 300, height: int = 420) -> Image.Image:
    page = Image.new("RGB", (width, height), "white")
    pixels = np.asarray(page).copy()
    pixels[40:120, 30:200] = (20, 40, 160)  # a dark block, as a chart would be
    return Image.fromarray(pixels)


def _noisy_page(width: int = 300, height: int = 420) -> Image.Image:
    # Every patch differs from every other, so each patch vector is its own best match.
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def test_loads_through_fastembeds_own_loader(encoder: FastembedMultimodalEncoder) -> None:
    from fastembed import LateInteractionMultimodalEmbedding
    from fastembed.late_interaction_multimodal.colpali import ColPali

    assert isinstance(encoder.model, LateInteractionMultimodalEmbedding)
    assert isinstance(encoder.model.model, ColPali)
    assert encoder.patch_layout == COLPALI_LAYOUT
    assert encoder.dim == DIM
    assert isinstance(encoder, LateInteractionEncoder)


def test_png_page_gives_patch_grid_then_prompt_rows(
    encoder: FastembedMultimodalEncoder, tmp_path: Path
) -> None:
    path = tmp_path / "page.png"
    _page().save(path)
    from_path, from_image = encoder.embed_image([path, _page()])
    # 1024 patches (32 x 32) and ColPali's 6 prompt tokens ("<bos>Describe the image.\n").
    assert from_path.shape == (GRID * GRID + 6, DIM)
    assert from_path.dtype == np.float32
    np.testing.assert_allclose(from_path, from_image, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(from_path, axis=1), 1.0, atol=1e-5)
    # The white patches are all alike; the patches of the dark block differ from them.
    patches = from_path[: GRID * GRID].reshape(GRID, GRID, DIM)
    white, dark = patches[31, 31], patches[5, 8]  # the block spans rows 3-8, cols 3-21
    np.testing.assert_allclose(patches[30, 0], white, atol=1e-5)
    assert float(white @ dark) < 0.99


def test_single_image_and_patches_only(tiny_colpali_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "single.png"
    _page().save(path)
    only = FastembedMultimodalEncoder(model_dir=tiny_colpali_dir, threads=1, patches_only=True)
    (matrix,) = list(only.embed_image(path))
    assert matrix.shape == (GRID * GRID, DIM)
    assert only.output_layout is not None
    assert only.output_layout.first == 0


def test_queries_use_colpalis_text_path(encoder: FastembedMultimodalEncoder) -> None:
    short, long = encoder.query_embed(["which page", "which page shows a chart"])
    # One batch: padded to one length; ColPali adds its prefix and 10 <pad> tokens.
    assert short.shape == long.shape
    assert short.shape[1] == DIM
    assert short.shape[0] >= 10 + 4
    assert not np.allclose(short, long)


def test_page_search_and_heatmap(encoder: FastembedMultimodalEncoder, tmp_path: Path) -> None:
    pages = [_noisy_page(), Image.new("RGB", (300, 420), "white")]
    matrices = list(encoder.embed_image(pages))
    col = multivec.connect("memory://", "pages", dim=DIM, fde="muvera-1280")
    col.upsert(["noisy", "blank"], matrices)
    # A query whose two tokens are two patches of the first page.
    targets = [0 * GRID + 0, 5 * GRID + 8]
    query = matrices[0][targets]
    hit = col.search(query, k=1, explain=True)[0]
    assert hit.id == "noisy"
    assert hit.explanation is not None
    assert hit.explanation.score == pytest.approx(hit.score, rel=1e-3)
    assert hit.explanation.doc_tokens == tuple(targets)
    grid = patch_scores(hit.explanation, encoder.patch_layout)  # type: ignore[arg-type]
    assert grid.shape == (GRID, GRID)
    assert grid[5, 8] == pytest.approx(hit.explanation.contributions[1], abs=1e-6)

    heat = explanation_heatmap(hit.explanation, pages[0], COLPALI_LAYOUT)
    out = tmp_path / "why.png"
    heat.save(out)
    reread = Image.open(out)
    assert reread.size == pages[0].size
    pixels = np.asarray(reread.convert("RGB")).astype(int)
    original = np.asarray(pages[0].convert("RGB")).astype(int)
    # Patch (5, 8) covers x in [75, 84), y in [65, 78) on the 300 x 420 page: painted red.
    y, x = int(5.5 * 420 / GRID), int(8.5 * 300 / GRID)
    assert pixels[y, x, 0] > pixels[y, x, 2]
    assert not np.array_equal(pixels[y, x], original[y, x])
    # Patches no query token matched are left as they were.
    np.testing.assert_array_equal(pixels[200:, 100:], original[200:, 100:])


def test_folder_errors_name_the_missing_files(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(InvalidInputError, match=r"model\.onnx, tokenizer_config\.json"):
        FastembedMultimodalEncoder(model_dir=tmp_path)
    with pytest.raises(InvalidInputError, match="no late-interaction multimodal model"):
        FastembedMultimodalEncoder("nobody/nothing", model_dir=tmp_path)


def test_explain_match_on_page_vectors_matches_brute_force(
    encoder: FastembedMultimodalEncoder,
) -> None:
    (page,) = encoder.embed_image([_page()])
    (query,) = encoder.query_embed(["which page shows a chart"])
    explanation = explain_match(query, page)
    sims = query @ page.T
    assert explanation.doc_tokens == tuple(int(i) for i in sims.argmax(axis=1))
    assert explanation.score == pytest.approx(float(sims.max(axis=1).sum()), rel=1e-5)


def test_pdf_and_png_through_the_ingest_pipeline_then_explained(
    encoder: FastembedMultimodalEncoder, tmp_path: Path
) -> None:
    """Files on disk -> ingest() -> fastembed's ColPali code (tiny model) -> search -> heatmap."""
    from tests.test_ingest_pipeline import write_pdf

    folder = tmp_path / "pages"
    folder.mkdir()
    _noisy_page().save(folder / "scan.png")
    write_pdf(folder / "paper.pdf", ["Page one about vectors.", "Page two about indexes."])
    col = multivec.connect("memory://", "ingested", dim=DIM, fde="muvera-1280")
    summary = ingest([folder], col, encoder, progress=False)
    assert summary.skipped == []
    ids = {d.id for batch in col.iter_documents() for d in batch}
    assert ids == {"scan.png#0", "paper.pdf#0", "paper.pdf#1"}
    [page2] = col.get(["paper.pdf#1"])
    assert page2.metadata["page"] == 2
    assert "Page two about indexes." in (page2.text or "")
    assert page2.vectors.shape == (GRID * GRID + 6, DIM)
    # A query made of two of the scan's patches finds the scan, and the heatmap marks them.
    [scan] = col.get(["scan.png#0"])
    query = scan.vectors[[3 * GRID + 4, 20 * GRID + 9]].astype(np.float32)
    hit = col.search(query, k=1, explain=True)[0]
    assert hit.id == "scan.png#0"
    assert hit.explanation is not None
    assert hit.explanation.doc_tokens == (3 * GRID + 4, 20 * GRID + 9)
    page = Image.open(folder / "scan.png")
    heat = explanation_heatmap(hit.explanation, page, COLPALI_LAYOUT)
    assert heat.size == page.size


def test_cli_ingest_takes_a_page_image_model_folder(tiny_colpali_dir: Path, tmp_path: Path) -> None:
    """`multivec ingest --encoder <ColPali folder>` picks the page-image encoder by itself."""
    from multivec.cli import main

    folder = tmp_path / "scans"
    folder.mkdir()
    _noisy_page().save(folder / "a.png")
    _page().save(folder / "b.jpg")
    uri = f"lancedb://{tmp_path}/db"
    args = ["ingest", str(folder), "--into", uri, "--collection", "scans"]
    assert main([*args, "--encoder", str(tiny_colpali_dir), "--no-progress"]) == 0
    with multivec.connect(uri, "scans") as col:
        assert col.count() == 2
        assert col.info.dim == DIM
        [doc] = col.get(["a.png#0"])
        assert doc.vectors.shape == (GRID * GRID + 6, DIM)
