"""Chunking of prose and code, sized with the real MiniLM tokenizer from ``../shared``.

Every chunk must be an exact slice of its source (so hits point back into files), fit the
token limit with its prefix, and, for Python, parse on its own.
"""

from __future__ import annotations

import ast
import itertools
import re
import textwrap
from pathlib import Path

import pytest

from multivec.errors import InvalidInputError
from multivec.ingest import (
    CallableEncoder,
    Chunk,
    OnnxLateInteractionEncoder,
    TokenCounter,
    chunk_lines,
    chunk_python,
    chunk_text,
    estimate_tokens,
    token_counter,
)
from multivec.ingest._chunking import resolve_max_tokens

MINILM_DIR = (
    Path(__file__).resolve().parents[1].parent / "shared" / "models" / "all-minilm-l6-v2-onnx"
)

MARKDOWN = textwrap.dedent(
    """\
    # Multivec guide

    Multivec stores one vector per token. It searches in two stages! First an FDE index
    narrows the candidates down; then exact MaxSim reranks them.

    ## Install

    Install the package with pip. Then import it in Python.

    ```python
    # not a heading: this line is inside a fenced block
    import multivec

    col = multivec.connect("memory://")
    ```

    ### From source

    Clone the repository. Run the tests with pytest. Read the design notes first.

    ## Usage

    - connect to a database
    - upsert documents
    - search with a query

    Searching returns hits. Each hit has a score, metadata and text.
    """
)


@pytest.fixture(scope="module")
def minilm_counter() -> tuple[TokenCounter, int | None]:
    return token_counter(OnnxLateInteractionEncoder(MINILM_DIR))


@pytest.fixture
def count(minilm_counter: tuple[TokenCounter, int | None]) -> TokenCounter:
    return minilm_counter[0]


def assert_slices(source: str, chunks: list[Chunk]) -> None:
    """Each chunk is source[char_start:char_end] and its line numbers match."""
    for chunk in chunks:
        assert source[chunk.char_start : chunk.char_end] == chunk.text
        assert chunk.line_start == source.count("\n", 0, chunk.char_start) + 1
        assert chunk.line_end == source.count("\n", 0, chunk.char_end - 1) + 1
        assert chunk.embed_text == chunk.prefix + chunk.text


def words(text: str) -> list[str]:
    return re.findall(r"\S+", text)


# --- token counting ----------------------------------------------------------------------------


def test_token_counter_uses_the_onnx_tokenizer_without_its_128_token_truncation(
    minilm_counter: tuple[TokenCounter, int | None],
) -> None:
    count, limit = minilm_counter
    assert limit == 512  # OnnxLateInteractionEncoder's max_length, not tokenizer.json's 128
    long_text = "retrieval " * 300
    assert count(long_text) == 302  # one WordPiece per word, plus [CLS] and [SEP]
    assert count("") == 2


def test_token_counter_prefers_the_encoders_own_count_tokens() -> None:
    encoder = CallableEncoder(lambda texts: [], count_tokens=lambda text: 7, max_length=99)
    count, limit = token_counter(encoder)
    assert count("anything at all") == 7
    assert limit == 99


def test_token_counter_falls_back_to_a_conservative_estimate() -> None:
    count, limit = token_counter(object())
    assert count is estimate_tokens
    assert limit is None
    # Over-estimates real WordPiece counts on English prose.
    tokenizer_count = token_counter(OnnxLateInteractionEncoder(MINILM_DIR))[0]
    prose = MARKDOWN
    assert estimate_tokens(prose) >= tokenizer_count(prose)


def test_resolve_max_tokens_checks_the_model_limit() -> None:
    assert resolve_max_tokens(None, 512) == 512
    assert resolve_max_tokens(None, None) == 512
    assert resolve_max_tokens(128, 512) == 128
    with pytest.raises(InvalidInputError, match="exceeds the encoder's limit of 512"):
        resolve_max_tokens(1000, 512)
    with pytest.raises(InvalidInputError, match="at least 8"):
        resolve_max_tokens(4, None)


# --- prose -----------------------------------------------------------------------------------


def test_markdown_chunks_are_exact_slices_with_their_heading_path(count: TokenCounter) -> None:
    chunks = chunk_text(MARKDOWN, count_tokens=count, max_tokens=64, markdown=True)
    assert_slices(MARKDOWN, chunks)
    headings = [c.metadata.get("heading") for c in chunks]
    assert headings[0] == "Multivec guide"
    assert "Multivec guide > Install > From source" in headings
    assert headings[-1] == "Multivec guide > Usage"
    # The fenced block's "# not a heading" line did not start a section, and stayed whole.
    assert not any("not a heading" in (h or "") for h in headings)
    fenced = [c for c in chunks if "```python" in c.text]
    assert len(fenced) == 1
    assert fenced[0].text.count("```") == 2
    for chunk in chunks:
        assert chunk.prefix == f"{chunk.metadata['heading']}\n\n"
        assert count(chunk.embed_text) <= 64
    # Every word of the body is in some chunk; heading lines live in the prefixes.
    body_words = [
        w for line in MARKDOWN.splitlines() if not re.match("#+ [A-Z]", line) for w in words(line)
    ]
    assert [w for c in chunks for w in words(c.text)] == body_words


def test_sentences_are_packed_without_cutting_one(count: TokenCounter) -> None:
    text = " ".join(f"Sentence number {i} talks about token vectors." for i in range(40))
    chunks = chunk_text(text, count_tokens=count, max_tokens=40)
    assert len(chunks) > 3
    assert_slices(text, chunks)
    for chunk in chunks:
        assert chunk.text.startswith("Sentence number")
        assert chunk.text.endswith("vectors.")
        assert count(chunk.embed_text) <= 40
    assert [w for c in chunks for w in words(c.text)] == words(text)


def test_a_sentence_over_the_limit_is_split_between_words(count: TokenCounter) -> None:
    sentence = " ".join(f"word{i}" for i in range(200)) + "."
    chunks = chunk_text(sentence, count_tokens=count, max_tokens=32)
    assert len(chunks) > 1
    assert_slices(sentence, chunks)
    assert [w for c in chunks for w in words(c.text)] == words(sentence)  # nothing dropped
    for chunk in chunks:
        assert count(chunk.embed_text) <= 32
        assert not chunk.metadata.get("oversize")


def test_a_word_over_the_limit_is_split_between_characters() -> None:
    blob = "x" * 500
    chunks = chunk_text(blob, max_tokens=20)
    assert "".join(c.text for c in chunks) == blob
    assert all(estimate_tokens(c.embed_text) <= 20 for c in chunks)


def test_overlap_repeats_trailing_sentences(count: TokenCounter) -> None:
    text = " ".join(f"Fact {i} is stated here." for i in range(30))
    plain = chunk_text(text, count_tokens=count, max_tokens=40)
    overlapping = chunk_text(text, count_tokens=count, max_tokens=40, overlap=12)
    assert_slices(text, overlapping)
    assert len(overlapping) > len(plain)
    for before, after in itertools.pairwise(overlapping):
        assert after.char_start < before.char_end  # they share text
        assert after.char_start > before.char_start  # and always move forward
        shared = text[after.char_start : before.char_end]
        assert count(shared) - 2 <= 12
    assert overlapping[-1].char_end == len(text)


def test_title_is_carried_into_every_chunk() -> None:
    chunks = chunk_text("One. Two. Three. Four. Five. Six.", max_tokens=12, title="Numbers")
    assert len(chunks) > 1
    assert all(c.prefix == "Numbers\n\n" for c in chunks)


def test_blank_text_gives_no_chunks_and_bad_sizes_are_refused() -> None:
    assert chunk_text("  \n\n  ") == []
    with pytest.raises(InvalidInputError, match="overlap"):
        chunk_text("text", max_tokens=64, overlap=40)
    with pytest.raises(InvalidInputError, match="max_tokens"):
        chunk_text("text", max_tokens=2)


# --- code ---------------------------------------------------------------------------------------

PYTHON = textwrap.dedent(
    '''\
    """Storage helpers."""

    import json
    import os

    LIMIT = 10


    # Reads a file; the comment belongs to the function below.
    @staticmethod
    def read(path: str) -> str:
        """Return the file's text."""
        with open(path) as handle:
            return handle.read()


    class Store:
        """A key-value store on disk."""

        suffix = ".json"

        def __init__(self, root: str) -> None:
            """Remember the root folder."""
            self.root = root
            self.cache: dict[str, object] = {}

        def path(self, key: str) -> str:
            """Where a key lives."""
            return os.path.join(self.root, key + self.suffix)

        @property
        def size(self) -> int:
            """How many keys are cached."""
            return len(self.cache)

        def put(self, key: str, value: object) -> None:
            """Write a value."""
            with open(self.path(key), "w") as handle:
                json.dump(value, handle)
            self.cache[key] = value


    if __name__ == "__main__":
        print(read(__file__))
    '''
)


def test_python_definitions_are_chunks_that_parse_alone(count: TokenCounter) -> None:
    chunks = chunk_python(PYTHON, count_tokens=count, max_tokens=512)
    assert_slices(PYTHON, chunks)
    symbols = [(c.metadata["symbol"], c.metadata["symbol_kind"]) for c in chunks]
    assert symbols == [
        ("<module>", "module"),
        ("read", "function"),
        ("Store", "class"),
        ("<module>", "module"),
    ]
    read = chunks[1]
    assert read.text.startswith("# Reads a file")  # the comment and decorator come along
    assert "@staticmethod" in read.text
    assert '"""Return the file\'s text."""' in read.text
    assert chunks[0].text.startswith('"""Storage helpers."""')
    assert chunks[-1].text.startswith("if __name__")
    for chunk in chunks:
        ast.parse(chunk.embed_text)
    # Whole lines only, in order, and nothing but blank lines between them.
    for before, after in itertools.pairwise(chunks):
        assert not PYTHON[before.char_end : after.char_start].strip()


def test_a_big_class_is_split_per_method_with_its_signature(count: TokenCounter) -> None:
    chunks = chunk_python(PYTHON, count_tokens=count, max_tokens=60)
    assert_slices(PYTHON, chunks)
    in_store = [c for c in chunks if str(c.metadata["symbol"]).startswith("Store")]
    assert list(dict.fromkeys(c.metadata["symbol"] for c in in_store)) == [
        "Store",
        "Store.__init__",
        "Store.path",
        "Store.size",
        "Store.put",
    ]
    assert in_store[0].text.lstrip().startswith('"""A key-value store on disk."""')
    assert in_store[3].text.lstrip().startswith("@property")
    for chunk in in_store:
        assert chunk.prefix.startswith("class Store:\n")
        tree = ast.parse(chunk.embed_text)
        assert isinstance(tree.body[0], ast.ClassDef)
    for chunk in in_store[1:4]:
        assert chunk.prefix == "class Store:\n"
        assert chunk.metadata["symbol_kind"] == "method"
    # put() alone is over 60 tokens: cut between its statements, under both signatures.
    put = in_store[4:]
    assert len(put) > 1
    for chunk in put:
        assert chunk.metadata["symbol_kind"] == "method"
        assert chunk.prefix.startswith("class Store:\n    def put(self, key: str, value: object)")
    for chunk in chunks:
        ast.parse(chunk.embed_text)
        if not chunk.metadata.get("oversize"):
            assert count(chunk.embed_text) <= 60


def test_a_big_function_is_split_between_statements() -> None:
    body = "\n".join(f"    value_{i} = compute({i}, scale={i * 3})" for i in range(60))
    source = f'def build(compute):\n    """Build values."""\n{body}\n    return value_59\n'
    chunks = chunk_python(source, max_tokens=120)
    assert len(chunks) > 2
    assert_slices(source, chunks)
    for chunk in chunks:
        assert chunk.prefix == "def build(compute):\n"
        ast.parse(chunk.embed_text)
        # No statement is cut: every chunk is whole lines of whole statements.
        assert chunk.text.endswith("\n")
    covered = "".join(c.text for c in chunks)
    assert covered == source[len("def build(compute):\n") :]


def test_unparseable_python_falls_back_to_blank_line_chunks() -> None:
    source = "def broken(:\n    pass\n\n\nx = 1\ny = 2\n"
    chunks = chunk_python(source, max_tokens=64)
    assert_slices(source, chunks)
    assert chunks
    assert all("syntax error at line 1" in c.metadata["fallback"] for c in chunks)
    assert all(c.metadata["symbol_kind"] == "lines" for c in chunks)


def test_line_chunks_split_at_blank_lines_and_keep_everything() -> None:
    blocks = ["\n".join(f"let v{b}_{i} = f({i});" for i in range(8)) for b in range(6)]
    source = "\n\n".join(blocks) + "\n"
    chunks = chunk_lines(source, max_tokens=120)
    assert len(chunks) > 1
    assert_slices(source, chunks)
    assert [w for c in chunks for w in words(c.text)] == words(source)
    # Cuts fall on blank lines when a block fits.
    for before, after in itertools.pairwise(chunks):
        assert "\n\n" in source[before.char_end - 1 : after.char_start + 1]


def test_windows_line_endings_split_paragraphs_and_headings() -> None:
    source = "# A\r\n\r\nFirst paragraph here.\r\n\r\nSecond one.\r\n\r\n## B\r\n\r\nThird.\r\n"
    chunks = chunk_text(source, max_tokens=14, markdown=True)
    assert_slices(source, chunks)
    assert [(c.text, c.metadata["heading"]) for c in chunks] == [
        ("First paragraph here.", "A"),
        ("Second one.", "A"),
        ("Third.", "A > B"),
    ]
