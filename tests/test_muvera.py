"""Tests of multivec.muvera: reference goldens, invariants, validation, both kernels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import multivec.muvera
from multivec.errors import ConfigurationError, DimensionMismatchError, InvalidVectorsError
from multivec.muvera import (
    ALGORITHM_VERSION,
    FDEConfig,
    FDEEncoder,
    _kernels,
    encode_documents,
    encode_queries,
)
from multivec.muvera._matrices import generate_matrices
from multivec.muvera._partition import SimHashPartitioner
from multivec.muvera._rng import RawStream, _bernoulli_half, uniform_ints_and_signs

GOLDENS = Path(__file__).resolve().parents[1].parent / "shared" / "goldens" / "muvera-reference"
GOLDEN_CASES = [
    "q_colbert_R20_k5_ams16",
    "d_colbert_R20_k5_ams16_fill",
    "d_colbert_R20_k5_ams16_nofill",
    "q_colbert_R40_k6_id_final10240",
    "d_colbert_R40_k6_id_fill_final10240",
    "q_small_R2_k3_id",
    "d_small_R2_k3_id_fill",
    "d_small_R1_k0_id",
]


def unit_tokens(rng: np.random.Generator, n: int, dim: int) -> npt.NDArray[np.float32]:
    tokens = rng.standard_normal((n, dim)).astype(np.float32)
    tokens /= np.linalg.norm(tokens, axis=1, keepdims=True)
    return tokens


def chamfer(query: npt.NDArray[np.float32], doc: npt.NDArray[np.float32]) -> float:
    return float((query.astype(np.float64) @ doc.astype(np.float64).T).max(axis=1).sum())


def identity_config(**changes: Any) -> FDEConfig:
    settings: dict[str, Any] = {
        "dim": 16,
        "repetitions": 4,
        "simhash_projections": 3,
        "projection": "identity",
    }
    return FDEConfig(**{**settings, **changes})


# --- the reference ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def goldens() -> tuple[dict[str, Any], Any]:
    # ../shared is part of every checkout and of CI: missing goldens are a failure, not a skip.
    assert GOLDENS.is_dir(), f"the shared goldens are not at {GOLDENS}"
    cases = json.loads((GOLDENS / "graph_mining_fde_goldens.json").read_text())["cases"]
    return cases, np.load(GOLDENS / "graph_mining_fde_goldens.npz")


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_reproduces_reference_golden(case: str, goldens: tuple[dict[str, Any], Any]) -> None:
    cases, arrays = goldens
    spec = cases[case]
    projection = (
        {"projection": "countsketch", "projection_dim": spec["proj"]}
        if "proj" in spec
        else {"projection": "identity"}
    )
    config = FDEConfig(
        dim=spec["dim"],
        repetitions=spec["R"],
        simhash_projections=spec["k"],
        seed=spec["seed"],
        fill_empty=bool(spec.get("fill", False)),
        final_dim=spec.get("final"),
        **projection,
    )
    tokens = arrays[f"{case}__input"]
    encoder = FDEEncoder(config)
    fde = encoder.encode_documents([tokens]) if spec["is_doc"] else encoder.encode_queries([tokens])
    expected = arrays[f"{case}__fde"]
    assert fde.shape == (1, spec["fde_len"]) == (1, config.fde_dim)
    assert fde.dtype == np.float32
    np.testing.assert_allclose(fde[0], expected, rtol=0, atol=1e-5)


def test_mt19937_stream_is_the_cpp_standard_one() -> None:
    # The C++ standard requires the 10000th output of a default-constructed mt19937 (seed 5489).
    assert int(RawStream(5489).take(10000)[-1]) == 4123659995


def test_uniform_ints_replay_lemire_rejections() -> None:
    # With bound = 3 * 2**30 a quarter of the draws are rejected, so the vectorised path must fall
    # back to redraws often; a one-draw-at-a-time transcription of libstdc++ is the oracle.
    bound = 3 * 2**30
    buckets, signs = uniform_ints_and_signs(RawStream(11), bound, 500)
    stream = RawStream(11)
    threshold = (2**32 - bound) % bound
    for bucket, sign in zip(buckets.tolist(), signs.tolist(), strict=True):
        product = int(stream.take(1)[0]) * bound
        while product % 2**32 < threshold:
            product = int(stream.take(1)[0]) * bound
        low, high = (int(x) for x in stream.take(2))
        positive = float(low) + float(high) * 2.0**32 < 2.0**63
        assert bucket == product >> 32
        assert sign == (1.0 if positive else -1.0)


def test_bernoulli_rounds_like_double_arithmetic() -> None:
    # (2**32 - 1) + (2**31 - 1) * 2**32 rounds up to exactly 2**63 in double, which is not < 0.5.
    first = np.array([2**32 - 1, 0], dtype=np.uint64)
    second = np.array([2**31 - 1, 2**31 - 1], dtype=np.uint64)
    assert _bernoulli_half(first, second).tolist() == [False, True]


def test_gray_code_inverse_gives_each_blocks_sign_pattern() -> None:
    # Hyperplanes = the unit axes, so a token's sign bits are its own signs (axis 0 = bit 0).
    bits = 4
    partitioner = SimHashPartitioner(np.eye(bits, dtype=np.float32)[None])
    for block in range(2**bits):
        pattern = block ^ (block >> 1)
        token = np.array(
            [1.0 if pattern >> (bits - 1 - j) & 1 else -1.0 for j in range(bits)], dtype=np.float32
        )
        assert int(partitioner.assign(token[None])[0, 0]) == block


def test_zero_score_is_a_zero_bit() -> None:
    partitioner = SimHashPartitioner(np.eye(2, dtype=np.float32)[None])
    assert int(partitioner.assign(np.zeros((1, 2), dtype=np.float32))[0, 0]) == 0


def test_fill_takes_hamming_nearest_token_and_first_on_ties() -> None:
    partitioner = SimHashPartitioner(np.zeros((1, 4, 3), dtype=np.float32))
    # One document; tokens 0 and 1 in block 5 (pattern 7), token 2 in block 6 (pattern 5).
    blocks = np.array([[5], [5], [6]])
    token_doc = np.zeros(3, dtype=np.int64)
    # Block 4 (pattern 6) is 1 bit from both occupied patterns: the tie goes to token 0.
    # Block 7 (pattern 4) is 1 bit from pattern 5 and 2 bits from pattern 7: token 2.
    empty = (np.array([0, 0]), np.array([0, 0]), np.array([4, 7]))
    scores = np.zeros((3, 3), dtype=np.float32)
    assert partitioner.fill_sources(scores, blocks, token_doc, empty).tolist() == [0, 2]


def test_fill_works_without_numpy_bitwise_count(monkeypatch: pytest.MonkeyPatch) -> None:
    # numpy < 2.0 has no np.bitwise_count; the byte-table fallback must give the same encodings.
    rng = np.random.default_rng(15)
    docs = [unit_tokens(rng, int(n), 16) for n in rng.integers(1, 20, size=10)]
    config = FDEConfig(dim=16, repetitions=3, simhash_projections=5, projection_dim=4)
    expected = encode_documents(docs, config)
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    np.testing.assert_array_equal(FDEEncoder(config).encode_documents(docs), expected)


# --- invariants that hold for any seed (spec section 5) -----------------------------------------


@pytest.mark.parametrize("fill", [True, False])
def test_one_partition_one_repetition_is_sum_and_mean(fill: bool) -> None:
    rng = np.random.default_rng(0)
    config = identity_config(repetitions=1, simhash_projections=0, fill_empty=fill, seed=5)
    query, doc = unit_tokens(rng, 7, 16), unit_tokens(rng, 11, 16)
    np.testing.assert_allclose(
        encode_queries([query], config.for_queries())[0], query.sum(axis=0), atol=1e-6
    )
    np.testing.assert_allclose(encode_documents([doc], config)[0], doc.mean(axis=0), atol=1e-6)


def fde_scores(
    config: FDEConfig, queries: list[npt.NDArray[np.float32]], docs: list[npt.NDArray[np.float32]]
) -> npt.NDArray[np.float32]:
    scores: npt.NDArray[np.float32] = (
        encode_queries(queries, config.for_queries()) @ encode_documents(docs, config).T
    )
    return scores


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fde_score_never_exceeds_r_times_chamfer_with_fill(seed: int) -> None:
    # Every query token meets a centroid or a token of the document in its block, and neither can
    # beat the document's best token.
    rng = np.random.default_rng(seed)
    config = identity_config(seed=seed, fill_empty=True)
    queries = [unit_tokens(rng, int(n), 16) for n in rng.integers(1, 12, size=20)]
    docs = [unit_tokens(rng, int(n), 16) for n in rng.integers(1, 40, size=20)]
    scores = fde_scores(config, queries, docs)
    for i, query in enumerate(queries):
        for j, doc in enumerate(docs):
            bound = config.repetitions * chamfer(query, doc)
            assert scores[i, j] <= bound + 1e-4 * (1 + abs(bound))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fde_score_without_fill_is_bounded_by_positive_part_of_chamfer(seed: int) -> None:
    # Without fill a query token whose document block is empty scores 0, which can exceed its best
    # (negative) similarity: the bound R * Chamfer holds only for non-negative similarities, and in
    # general with each token's best similarity clipped at 0.
    rng = np.random.default_rng(seed)
    config = identity_config(seed=seed, fill_empty=False)
    queries = [unit_tokens(rng, int(n), 16) for n in rng.integers(1, 12, size=20)]
    docs = [unit_tokens(rng, int(n), 16) for n in rng.integers(1, 40, size=20)]
    scores = fde_scores(config, queries, docs)
    for i, query in enumerate(queries):
        for j, doc in enumerate(docs):
            best = (query.astype(np.float64) @ doc.astype(np.float64).T).max(axis=1)
            bound = config.repetitions * float(np.maximum(best, 0).sum())
            assert scores[i, j] <= bound + 1e-4 * (1 + bound)

    positive_queries = [np.abs(q) for q in queries]
    positive_docs = [np.abs(d) for d in docs]
    scores = fde_scores(config, positive_queries, positive_docs)
    for i, query in enumerate(positive_queries):
        for j, doc in enumerate(positive_docs):
            bound = config.repetitions * chamfer(query, doc)
            assert scores[i, j] <= bound + 1e-4 * (1 + bound)


def test_one_token_document_with_fill_scores_exactly_r_times_chamfer() -> None:
    rng = np.random.default_rng(4)
    config = identity_config(repetitions=6, simhash_projections=4)
    doc = unit_tokens(rng, 1, 16)
    doc_fde = encode_documents([doc], config)[0]
    # Every block of every repetition holds the one token.
    np.testing.assert_allclose(doc_fde.reshape(-1, 16), np.repeat(doc, 6 * 16, axis=0), atol=1e-7)
    for _ in range(5):
        query = unit_tokens(rng, int(rng.integers(1, 10)), 16)
        score = float(encode_queries([query], config.for_queries())[0] @ doc_fde)
        assert score == pytest.approx(6 * chamfer(query, doc), rel=1e-5, abs=1e-5)


def test_query_fde_has_at_most_r_blocks_per_token() -> None:
    rng = np.random.default_rng(5)
    config = FDEConfig(dim=32, repetitions=10, simhash_projections=6, fill_empty=False)
    for n_tokens in (1, 3, 8):
        fde = encode_queries([unit_tokens(rng, n_tokens, 32)], config)[0]
        nonzero_blocks = np.count_nonzero(np.abs(fde.reshape(-1, config.block_dim)).sum(axis=1))
        assert 0 < nonzero_blocks <= config.repetitions * n_tokens


def test_count_sketch_projection_is_unbiased() -> None:
    # With k = 0 each repetition contributes <A_r^T sum(Q), A_r^T mean(P)>, and E[A A^T] = I; the
    # repetitions use independent seeds, so their average estimates <sum(Q), mean(P)>.
    rng = np.random.default_rng(6)
    query, doc = unit_tokens(rng, 5, 16), unit_tokens(rng, 9, 16)
    repetitions = 2000
    config = FDEConfig(
        dim=16, repetitions=repetitions, simhash_projections=0, projection_dim=4, fill_empty=False
    )
    estimate = float(encode_queries([query], config)[0] @ encode_documents([doc], config)[0])
    exact = float(query.sum(axis=0) @ doc.mean(axis=0))
    # Per repetition the error has variance <= 2 |q|^2 |p|^2 / d'; allow five standard errors.
    scale = np.linalg.norm(query.sum(axis=0)) * np.linalg.norm(doc.mean(axis=0))
    tolerance = 5 * scale * np.sqrt(2 / 4 / repetitions)
    assert estimate / repetitions == pytest.approx(exact, abs=tolerance)
    assert abs(estimate / repetitions - exact) > 0  # a real estimate, not an exact identity


def test_final_projection_is_unbiased() -> None:
    rng = np.random.default_rng(7)
    query, doc = unit_tokens(rng, 4, 8), unit_tokens(rng, 6, 8)
    base = FDEConfig(
        dim=8, repetitions=1, simhash_projections=0, projection="identity", fill_empty=False
    )
    exact = float(encode_queries([query], base)[0] @ encode_documents([doc], base)[0])
    estimates = []
    for seed in range(1, 801):
        config = FDEConfig(**{**base.model_dump(), "seed": seed, "final_dim": 4})
        encoder = FDEEncoder(config)
        estimates.append(
            float(encoder.encode_queries([query])[0] @ encoder.encode_documents([doc])[0])
        )
    scale = np.linalg.norm(query.sum(axis=0)) * np.linalg.norm(doc.mean(axis=0))
    tolerance = 5 * scale * np.sqrt(2 / 4 / len(estimates))
    assert np.mean(estimates) == pytest.approx(exact, abs=tolerance)
    assert np.std(estimates) > 0


# --- batching, dtypes, determinism --------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        FDEConfig(dim=24, repetitions=5, simhash_projections=4, projection_dim=6),
        FDEConfig(
            dim=24, repetitions=3, simhash_projections=3, projection="identity", final_dim=50
        ),
        FDEConfig(dim=24, repetitions=4, simhash_projections=5, fill_empty=False, final_dim=100),
    ],
    ids=["countsketch-fill", "identity-final", "nofill-final"],
)
def test_batch_equals_one_document_at_a_time(config: FDEConfig) -> None:
    rng = np.random.default_rng(8)
    docs = [unit_tokens(rng, int(n), 24) for n in rng.integers(1, 60, size=25)]
    batch = FDEEncoder(config).encode_documents(docs)
    single = np.stack([FDEEncoder(config).encode_document(doc) for doc in docs])
    np.testing.assert_allclose(batch, single, rtol=0, atol=1e-6)
    # Tiny chunks split the batch into many pieces; the result must not depend on where.
    chunked = FDEEncoder(config, chunk_bytes=5000).encode_documents(docs)
    np.testing.assert_allclose(chunked, batch, rtol=0, atol=1e-6)

    query_config = config.for_queries()
    queries = docs[:10]
    np.testing.assert_allclose(
        encode_queries(queries, query_config),
        np.stack([FDEEncoder(query_config).encode_query(q) for q in queries]),
        rtol=0,
        atol=1e-6,
    )


def test_numba_kernel_matches_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("numba", reason="numba is an optional extra; without it only numpy runs")
    rng = np.random.default_rng(9)
    docs = [unit_tokens(rng, int(n), 32) for n in rng.integers(1, 80, size=30)]
    for config in (
        FDEConfig(dim=32, repetitions=6, simhash_projections=4, projection_dim=8),
        FDEConfig(dim=32, repetitions=3, simhash_projections=2, projection="identity"),
    ):
        compiled = FDEEncoder(config).encode_documents(docs)
        monkeypatch.setattr(_kernels, "_compiled_kernel", lambda: None)
        plain = FDEEncoder(config).encode_documents(docs)
        monkeypatch.undo()
        np.testing.assert_allclose(compiled, plain, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float16, np.float64, np.int32])
def test_other_dtypes_are_converted_to_float32(dtype: type[np.generic]) -> None:
    rng = np.random.default_rng(10)
    docs = [(rng.standard_normal((n, 16)) * 4).astype(dtype) for n in (3, 9)]
    config = identity_config()
    expected = encode_documents([doc.astype(np.float32) for doc in docs], config)
    np.testing.assert_array_equal(encode_documents(docs, config), expected)


def test_three_dimensional_array_is_a_batch_of_equal_documents() -> None:
    rng = np.random.default_rng(11)
    batch = rng.standard_normal((4, 5, 16)).astype(np.float32)
    config = identity_config()
    np.testing.assert_array_equal(
        encode_documents(batch, config), encode_documents(list(batch), config)
    )


def test_empty_batch_gives_no_rows() -> None:
    assert encode_documents([], FDEConfig(dim=8)).shape == (0, FDEConfig(dim=8).fde_dim)


def test_same_configuration_gives_identical_matrices_and_encodings() -> None:
    config = FDEConfig(dim=32, repetitions=4, simhash_projections=3, projection_dim=8, final_dim=64)
    first, second = generate_matrices(config), generate_matrices(config)
    np.testing.assert_array_equal(first.hyperplanes, second.hyperplanes)
    assert first.inner is not None
    assert second.inner is not None
    for a, b in zip(first.inner, second.inner, strict=True):
        np.testing.assert_array_equal(a.buckets, b.buckets)
        np.testing.assert_array_equal(a.signs, b.signs)
    assert first.final is not None
    assert second.final is not None
    np.testing.assert_array_equal(first.final.buckets, second.final.buckets)
    np.testing.assert_array_equal(first.final.signs, second.final.signs)

    rng = np.random.default_rng(12)
    docs = [unit_tokens(rng, 20, 32)]
    np.testing.assert_array_equal(
        FDEEncoder(config).encode_documents(docs), FDEEncoder(config).encode_documents(docs)
    )


def test_matrices_are_generated_once_and_shared_with_the_query_config() -> None:
    config = FDEConfig(dim=16)
    assert FDEEncoder(config).matrices is FDEEncoder(config.for_queries()).matrices
    assert not FDEEncoder(config).matrices.hyperplanes.flags.writeable


def test_different_seeds_give_different_encodings() -> None:
    rng = np.random.default_rng(13)
    docs = [unit_tokens(rng, 30, 16)]
    a = encode_documents(docs, FDEConfig(dim=16, seed=1))
    b = encode_documents(docs, FDEConfig(dim=16, seed=2))
    assert not np.allclose(a, b)


# --- input validation ----------------------------------------------------------------------------


def test_fill_on_query_is_refused_with_the_fix_in_the_message() -> None:
    config = FDEConfig(dim=8)
    with pytest.raises(ConfigurationError, match=r"for_queries\(\)"):
        encode_queries([np.ones((2, 8), dtype=np.float32)], config)
    with pytest.raises(ConfigurationError, match=r"for_queries\(\)"):
        FDEEncoder(config).encode_query(np.ones((2, 8), dtype=np.float32))
    assert encode_queries([np.ones((2, 8), dtype=np.float32)], config.for_queries()).shape == (
        1,
        config.fde_dim,
    )


@pytest.mark.parametrize(
    ("docs", "error", "message"),
    [
        ([np.ones((3, 8)), np.ones((0, 8))], InvalidVectorsError, "document 1 has no token"),
        (
            [np.ones((3, 8)), np.ones((2, 7))],
            DimensionMismatchError,
            "document 1 has tokens of width 7",
        ),
        ([np.ones((3, 8)), np.ones(8)], InvalidVectorsError, r"document 1 has shape \(8,\)"),
        ([np.ones((3, 8)), np.ones((1, 2, 8))], InvalidVectorsError, "document 1 has shape"),
        ([np.array([["a"] * 8])], InvalidVectorsError, "document 0: token vectors must be real"),
        (
            [np.ones((2, 8), dtype=bool)],
            InvalidVectorsError,
            "document 0: token vectors must be real",
        ),
        (np.ones((3, 8)), InvalidVectorsError, "wrap it in a list"),
    ],
    ids=["empty", "ragged", "rank-1", "rank-3", "strings", "bool", "single-2d-array"],
)
def test_bad_documents_are_named_by_index(docs: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        encode_documents(docs, FDEConfig(dim=8))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e39])
def test_non_finite_values_are_named_by_document_and_token(bad: float) -> None:
    docs = [np.ones((4, 8)) for _ in range(3)]
    docs[2][3, 5] = bad
    with pytest.raises(
        InvalidVectorsError, match="document 2 has a NaN or infinite value in token 3"
    ):
        encode_documents(docs, FDEConfig(dim=8))
    with pytest.raises(InvalidVectorsError, match="query 2 has a NaN"):
        encode_queries(docs, FDEConfig(dim=8, fill_empty=False))


def test_input_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="no token vectors"):
        encode_documents([np.ones((0, 8))], FDEConfig(dim=8))


# --- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dim": 0}, "dim must be"),
        ({"dim": 8.0}, "dim"),
        ({"repetitions": 0}, "repetitions must be at least 1"),
        ({"simhash_projections": 31}, "between 0 and 30"),
        ({"simhash_projections": -1}, "between 0 and 30"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"seed": 2**31 - 5}, "seed \\+ repetitions - 1"),
        ({"projection": "gaussian"}, "projection"),
        ({"projection_dim": 0}, "needs projection_dim"),
        ({"projection_dim": None}, "needs projection_dim"),
        (
            {"projection": "identity", "projection_dim": 16},
            "only used with projection='countsketch'",
        ),
        ({"final_dim": 0}, "final_dim must be"),
        ({"fill_empty": "yes"}, "fill_empty"),
        ({"num_repetitions": 20}, "num_repetitions"),
        ({"algorithm_version": "graph-mining-dca52ed/0"}, "not supported"),
        ({"simhash_projections": 30, "projection_dim": 64}, "lower simhash_projections"),
    ],
)
def test_invalid_configurations_say_what_is_wrong(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        FDEConfig(**{"dim": 8, **changes})


def test_missing_dim_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="dim"):
        FDEConfig()


def test_identity_projection_needs_no_projection_dim() -> None:
    config = FDEConfig(dim=12, projection="identity")
    assert config.projection_dim is None
    assert config.block_dim == 12
    assert config.fde_dim == 20 * 32 * 12


def test_configuration_is_immutable_and_hashable() -> None:
    config = FDEConfig(dim=8)
    with pytest.raises(ValueError, match="frozen"):
        config.seed = 2  # type: ignore[misc]
    assert hash(config) == hash(FDEConfig(dim=8))


@pytest.mark.parametrize(
    ("name", "fde_dim"),
    [("muvera-10240", 10240), ("muvera-5120", 5120), ("muvera-2560", 2560), ("muvera-1280", 1280)],
)
def test_presets_have_their_named_length(name: str, fde_dim: int) -> None:
    config = FDEConfig.preset(name, dim=128)
    assert config.fde_dim == fde_dim
    assert config.projection == "countsketch"
    assert config.fill_empty
    assert config.dim == 128


def test_preset_with_final_dim_fits_a_backend_limit() -> None:
    config = FDEConfig.preset("muvera-10240", dim=96, final_dim=2000)
    assert config.raw_fde_dim == 10240
    assert config.fde_dim == 2000
    rng = np.random.default_rng(14)
    assert encode_documents([unit_tokens(rng, 10, 96)], config).shape == (1, 2000)


def test_unknown_preset_lists_the_valid_names() -> None:
    with pytest.raises(ConfigurationError, match="muvera-10240"):
        FDEConfig.preset("muvera-9999", dim=128)


def test_json_round_trip_keeps_everything() -> None:
    config = FDEConfig(dim=48, repetitions=7, simhash_projections=3, seed=9, final_dim=300)
    text = config.model_dump_json()
    assert json.loads(text)["algorithm_version"] == ALGORITHM_VERSION
    restored = FDEConfig.model_validate_json(text)
    assert restored == config
    assert restored.fingerprint() == config.fingerprint()
    assert FDEConfig.model_validate(json.loads(text)) == config


def test_stored_configuration_from_another_algorithm_version_is_refused() -> None:
    stored = json.loads(FDEConfig(dim=8).model_dump_json())
    stored["algorithm_version"] = "some-future-version"
    with pytest.raises(ConfigurationError, match="Re-encode"):
        FDEConfig.model_validate_json(json.dumps(stored))
    with pytest.raises(ConfigurationError, match="Re-encode"):
        FDEConfig.model_validate(stored)


def test_fingerprint_changes_with_any_field() -> None:
    config = FDEConfig(dim=8)
    fingerprint = config.fingerprint()
    assert len(fingerprint) == 64
    assert FDEConfig(dim=8).fingerprint() == fingerprint
    for changes in ({"seed": 2}, {"fill_empty": False}, {"final_dim": 100}, {"projection_dim": 8}):
        assert FDEConfig(**{"dim": 8, **changes}).fingerprint() != fingerprint


def test_public_names() -> None:
    assert sorted(multivec.muvera.__all__) == [
        "ALGORITHM_VERSION",
        "CountSketch",
        "FDEConfig",
        "FDEEncoder",
        "FDEMatrices",
        "FittedPartitions",
        "PRESETS",
        "encode_documents",
        "encode_queries",
        "fit",
    ]
