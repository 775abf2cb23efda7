"""The multivec command, run for real: a small SciFact slice, the shared MiniLM, LanceDB."""

import json
from itertools import islice
from pathlib import Path

import pytest

from benchmarks._data import minilm_model_dir, scifact_dir
from multivec.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    with (scifact_dir() / "corpus.jsonl").open(encoding="utf-8") as src:
        path.write_text("".join(islice(src, 40)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def indexed(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = f"lancedb://{tmp_path_factory.mktemp('db')}"
    model = str(minilm_model_dir())
    assert (
        main(
            [
                "index",
                str(corpus),
                "--into",
                uri,
                "--collection",
                "sf",
                "--model",
                model,
                "--fde",
                "muvera-2560",
                "--batch-size",
                "16",
                "--fit-docs",
                "20",
            ]
        )
        == 0
    )
    return uri


def test_index_then_info(indexed: str, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["info", indexed, "--collection", "sf", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["documents"] == 40
    assert info["fde_dim"] == 2560
    assert info["configuration"]["dim"] == 384
    assert info["configuration"]["fde"]["partitioning"] == "kmeans"
    assert info["configuration"]["encoder"].startswith("all-minilm-l6-v2-onnx@sha256:")


def test_search_json(indexed: str, corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = json.loads(corpus.read_text(encoding="utf-8").splitlines()[3])
    capsys.readouterr()
    assert (
        main(
            [
                "search",
                first["title"],
                "--uri",
                indexed,
                "--collection",
                "sf",
                "-k",
                "3",
                "--model",
                str(minilm_model_dir()),
                "--json",
            ]
        )
        == 0
    )
    [result] = json.loads(capsys.readouterr().out)
    assert result["hits"][0]["id"] == first["_id"]
    assert result["hits"][0]["metadata"]["title"] == first["title"]
    assert set(result["timings_ms"]) >= {"embed_query", "encode", "ann", "fetch", "rerank", "total"}
    scores = [h["score"] for h in result["hits"]]
    assert scores == sorted(scores, reverse=True)


def test_search_text_output_and_filter(indexed: str, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    flt = json.dumps({"title": {"$in": ["no such title"]}})
    assert (
        main(
            [
                "search",
                "cells",
                "--uri",
                indexed,
                "--collection",
                "sf",
                "--filter",
                flt,
                "--model",
                str(minilm_model_dir()),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "query: cells" in out
    assert "rerank" in out
    assert " 1. " not in out  # the filter matches nothing


def test_errors_are_reported_not_raised(indexed: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", indexed, "--collection", "absent"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert (
        main(
            [
                "search",
                "x",
                "--uri",
                indexed,
                "--collection",
                "sf",
                "--filter",
                '{"a": {"$regex": "x"}}',
                "--model",
                str(minilm_model_dir()),
            ]
        )
        == 2
    )
    assert "unknown filter operator" in capsys.readouterr().err


def test_search_explain_shows_the_matched_words(
    indexed: str, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = json.loads(corpus.read_text(encoding="utf-8").splitlines()[3])
    args = ["search", first["title"], "--uri", indexed, "--collection", "sf", "-k", "2"]
    args += ["--model", str(minilm_model_dir()), "--explain"]
    capsys.readouterr()
    assert main([*args, "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    top = result["hits"][0]
    assert isinstance(top["matches"], list), top["matches"]
    # The contributions are the terms of the exact MaxSim score, one per query token.
    assert sum(m["contribution"] for m in top["matches"]) == pytest.approx(top["score"], abs=1e-2)
    matched = " ".join(m["text"] for m in top["matches"]).lower()
    assert first["title"].split()[0].lower()[:4] in matched
    assert main(args) == 0
    assert "matched: " in capsys.readouterr().out
