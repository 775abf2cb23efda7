"""Encoders: text in, one matrix of per-token vectors out.

Two kinds of object can encode for multivec:

* anything with fastembed's late-interaction shape, described by the
  :class:`LateInteractionEncoder` protocol. fastembed's ``LateInteractionTextEmbedding``
  satisfies it as it is, without knowing multivec;
* :class:`OnnxLateInteractionEncoder`, which runs a local ONNX transformer (``model.onnx``
  plus a HuggingFace ``tokenizer.json``) with onnxruntime and needs no model hub;
* :class:`FastembedTextEncoder`, fastembed's late-interaction text models (the ColBERT
  family) by name (fastembed downloads them where it can) or from a local folder, with the
  model's own query and document handling (``[Q]``/``[D]`` markers, ``[MASK]`` query
  augmentation).

The two multivec encoders also give ``token_spans(text)``: the character span of each
document vector, which match explanations use to point at the matched words.

:func:`default_encoder` picks the model the command line and the quick start use when none
is named, and logs which one it picked.

onnxruntime, tokenizers and fastembed are optional; they are imported only when an encoder
is built, and a missing one raises :class:`~multivec.errors.MissingDependencyError`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from multivec.errors import InvalidInputError, MissingDependencyError

if TYPE_CHECKING:
    from fastembed import LateInteractionTextEmbedding

__all__ = [
    "ANSWERAI_COLBERT_SMALL",
    "FASTEMBED_DEFAULT_MODEL",
    "MODEL_DIR_ENV",
    "FastembedTextEncoder",
    "LateInteractionEncoder",
    "OnnxLateInteractionEncoder",
    "default_encoder",
    "encoder_id",
    "load_fastembed_from_dir",
]

logger = logging.getLogger("multivec.ingest")

MODEL_DIR_ENV = "MULTIVEC_MODEL_DIR"
"""Environment variable naming a local model folder for :func:`default_encoder`."""

FASTEMBED_DEFAULT_MODEL = "colbert-ir/colbertv2.0"
"""The fastembed model :func:`default_encoder` uses when fastembed already has it on disk."""

ANSWERAI_COLBERT_SMALL = "answerdotai/answerai-colbert-small-v1"
"""fastembed's name for answerai-colbert-small-v1 (its ONNX file: ``vespa_colbert.onnx``)."""

# Where the repository's shared test models sit, relative to a checkout's root.
_SHARED_MINILM = Path("..") / "shared" / "models" / "all-minilm-l6-v2-onnx"
# multivec/ingest/_encoders.py -> the checkout root (harmless when installed: nothing is there).
_REPO_ROOT = Path(__file__).resolve().parents[2]
# Below this a norm is treated as zero, so a zeroed token is not divided into NaNs.
_NORM_FLOOR = 1e-12


@runtime_checkable
class LateInteractionEncoder(Protocol):
    """What multivec needs from an encoder: documents and queries to token matrices.

    Each yielded array is one input's token vectors, shape ``(n_tokens, dim)``, float32, in
    input order. Documents and queries are separate calls because late-interaction models
    encode them differently (markers, query augmentation). A plain string is one input.

    fastembed's ``LateInteractionTextEmbedding`` satisfies this protocol, and so does
    :class:`OnnxLateInteractionEncoder`. The runtime ``isinstance`` check only sees that both
    methods exist; the signatures are for type checkers.
    """

    def embed(
        self, documents: str | Iterable[str], batch_size: int = ..., **kwargs: Any
    ) -> Iterable[NDArray[Any]]:
        """Encode documents, one token matrix per document."""
        ...

    def query_embed(self, query: str | Iterable[str], **kwargs: Any) -> Iterable[NDArray[Any]]:
        """Encode queries, one token matrix per query."""
        ...


def encoder_id(encoder: object) -> str:
    """Return the identifier to store with a collection built by ``encoder``.

    Uses ``model_id`` when the encoder has one (:class:`OnnxLateInteractionEncoder` gives the
    folder name and a hash of the weights), else fastembed's ``model_name``, else the class name.

    Args:
        encoder: Any encoder.

    Returns:
        A short human-readable identifier.
    """
    for attribute in ("model_id", "model_name"):
        value = getattr(encoder, attribute, None)
        if isinstance(value, str) and value:
            return value
    return type(encoder).__name__


def _import_optional(package: str, extra: str) -> ModuleType:
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise MissingDependencyError(package, extra) from exc


def _available_cores() -> int:
    # sched_getaffinity sees container CPU limits that os.cpu_count() does not.
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _find_model_file(model_dir: Path, model_file: str | None) -> Path:
    if model_file is not None:
        path = model_dir / model_file
        if not path.is_file():
            raise InvalidInputError(f"model file {path} does not exist")
        return path
    default = model_dir / "model.onnx"
    if default.is_file():
        return default
    candidates = sorted(model_dir.glob("*.onnx"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise InvalidInputError(
            f"no .onnx file in {model_dir}: expected model.onnx and tokenizer.json"
        )
    names = ", ".join(c.name for c in candidates)
    raise InvalidInputError(
        f"several .onnx files in {model_dir} ({names}); pass model_file= to pick one"
    )


def _position_limit(model_dir: Path) -> int | None:
    """The model's longest input, from config.json, or None when it does not say."""
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        return None
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    limit = config.get("max_position_embeddings") if isinstance(config, dict) else None
    return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None


class OnnxLateInteractionEncoder:
    """A late-interaction encoder running a local ONNX transformer with onnxruntime.

    The folder must hold the ONNX model (``model.onnx``, or the only ``.onnx`` file there) and
    a HuggingFace ``tokenizer.json``. The model takes ``input_ids`` and ``attention_mask`` (and
    ``token_type_ids`` if it declares it, fed with zeros) and returns per-token vectors of
    shape ``(batch, seq, dim)``. Each batch is padded to its own longest input, and the padding
    positions are dropped with the attention mask, so a text gives the same vectors alone or
    next to a longer one. Special tokens (``[CLS]``, ``[SEP]``) are kept.

    Example:
        Run from the repository root, beside ``../shared``:

        >>> encoder = OnnxLateInteractionEncoder("../shared/models/all-minilm-l6-v2-onnx")
        >>> [m.shape for m in encoder.embed(["late interaction", "multi-vector retrieval"])]
        [(4, 384), (6, 384)]

    Attributes:
        model_dir: The model folder.
        model_file: The ONNX file inside it.
        model_name: The folder name.
        model_id: ``"<folder name>@sha256:<first 12 hex digits of the ONNX file's hash>"``, to
            store with a collection so a query is never encoded by other weights.
        dim: The width of each token vector.
        max_length: Truncation length of documents, special tokens included.
        query_max_length: Truncation length of queries, special tokens included.
        normalize: Whether token vectors are L2-normalised.
        batch_size: Default number of texts per model call.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        max_length: int = 512,
        query_max_length: int | None = None,
        batch_size: int = 32,
        normalize: bool = True,
        query_prefix: str = "",
        document_prefix: str = "",
        model_file: str | None = None,
        output_name: str | None = None,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
    ) -> None:
        """Load the model and its tokenizer.

        Args:
            model_dir: Folder holding the ONNX model and ``tokenizer.json``.
            max_length: Documents are truncated to this many tokens, special tokens included.
            query_max_length: The same for queries; defaults to ``max_length``.
            batch_size: Default number of texts per model call.
            normalize: L2-normalise each token vector. Harmless on a model that already does
                (such as the shared MiniLM export); turn it off to keep raw hidden states.
            query_prefix: Text put before every query, e.g. a ``"[Q] "`` marker. None by default.
            document_prefix: Text put before every document, e.g. ``"[D] "``. None by default.
            model_file: The ONNX file's name, when the folder holds several.
            output_name: The model output holding token vectors; defaults to
                ``last_hidden_state`` or else the first output of rank 3.
            threads: onnxruntime intra-op threads; defaults to the number of usable cores.
            providers: onnxruntime execution providers; defaults to the CPU provider.

        Raises:
            InvalidInputError: The folder, the model file or ``tokenizer.json`` is missing or
                unreadable, or a length or batch size is out of range.
            MissingDependencyError: onnxruntime or tokenizers is not installed.
        """
        ort = _import_optional("onnxruntime", "ingest")
        tokenizers = _import_optional("tokenizers", "ingest")

        folder = Path(model_dir).expanduser()
        if not folder.is_dir():
            raise InvalidInputError(f"model folder {folder} does not exist")
        onnx_path = _find_model_file(folder, model_file)
        tokenizer_path = folder / "tokenizer.json"
        if not tokenizer_path.is_file():
            raise InvalidInputError(f"no tokenizer.json in {folder}")

        query_max_length = max_length if query_max_length is None else query_max_length
        limit = _position_limit(folder)
        for name, value in (("max_length", max_length), ("query_max_length", query_max_length)):
            # Two tokens are [CLS] and [SEP]; fewer leaves no room for text.
            if value < 2:
                raise InvalidInputError(f"{name} must be at least 2, got {value}")
            if limit is not None and value > limit:
                raise InvalidInputError(f"{name}={value} exceeds the model's {limit} positions")
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be at least 1, got {batch_size}")

        self.model_dir = folder
        self.model_file = onnx_path.name
        self.model_name = folder.resolve().name
        self.model_id = f"{self.model_name}@sha256:{_sha256(onnx_path)[:12]}"
        self.max_length = max_length
        self.query_max_length = query_max_length
        self.batch_size = batch_size
        self.normalize = normalize
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix

        # The shared tokenizer.json ships with fixed 128-token truncation and padding; both
        # are replaced: no padding (batches are padded here), truncation per input kind.
        try:
            self._doc_tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_path))
            self._query_tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:  # tokenizers raises a bare Exception for a bad file
            raise InvalidInputError(f"tokenizers could not read {tokenizer_path}: {exc}") from exc
        self._doc_tokenizer.no_padding()
        self._doc_tokenizer.enable_truncation(max_length=max_length)
        self._query_tokenizer.no_padding()
        self._query_tokenizer.enable_truncation(max_length=query_max_length)
        pad_id = self._doc_tokenizer.token_to_id("[PAD]")
        # Padded positions are masked out, so the id only has to be a valid one.
        self._pad_id = 0 if pad_id is None else int(pad_id)

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads if threads is not None else _available_cores()
        # One graph runs at a time here; extra inter-op threads only compete for cores.
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                str(onnx_path),
                sess_options=options,
                providers=list(providers) if providers is not None else ["CPUExecutionProvider"],
            )
        except Exception as exc:  # onnxruntime's errors share no public base class
            raise InvalidInputError(f"onnxruntime could not load {onnx_path}: {exc}") from exc
        inputs = {node.name for node in self._session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - inputs
        if missing:
            raise InvalidInputError(f"{onnx_path} lacks the inputs {sorted(missing)}")
        self._wants_token_types = "token_type_ids" in inputs
        self._output_name = self._pick_output(output_name)
        self.dim = self._read_dim()

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}({str(self.model_dir)!r}, model_id={self.model_id!r}, dim={self.dim})"

    def _pick_output(self, requested: str | None) -> str:
        outputs = self._session.get_outputs()
        names = [node.name for node in outputs]
        if requested is not None:
            if requested not in names:
                raise InvalidInputError(f"the model has no output {requested!r}; it has {names}")
            return requested
        if "last_hidden_state" in names:
            return "last_hidden_state"
        for node in outputs:
            if len(node.shape) == 3:
                return str(node.name)
        raise InvalidInputError(
            f"no output of shape (batch, seq, dim) among {names}; pass output_name="
        )

    def _read_dim(self) -> int:
        for node in self._session.get_outputs():
            if node.name == self._output_name and isinstance(node.shape[-1], int):
                return int(node.shape[-1])
        # A symbolic width: run one tiny input and measure it.
        return int(self._run([self._doc_tokenizer.encode("dim")])[0].shape[1])

    def embed(
        self, documents: str | Iterable[str], batch_size: int | None = None, **kwargs: Any
    ) -> Iterator[NDArray[np.float32]]:
        """Encode documents into token matrices.

        Args:
            documents: One text, or any iterable of texts; it is read lazily, batch by batch.
            batch_size: Texts per model call; defaults to the encoder's ``batch_size``.
            **kwargs: Accepted so the signature matches fastembed's; none are used, and any
                given raises ``TypeError``.

        Yields:
            One float32 array of shape ``(n_tokens, dim)`` per document, in input order;
            ``n_tokens`` counts ``[CLS]`` and ``[SEP]`` and is at most ``max_length``.

        Raises:
            InvalidInputError: An item is not a string, or ``batch_size`` is below 1.
            TypeError: An unknown keyword argument was given.
        """
        _reject_kwargs("embed", kwargs)
        return self._encode(documents, self._doc_tokenizer, self.document_prefix, batch_size)

    def query_embed(
        self, query: str | Iterable[str], **kwargs: Any
    ) -> Iterator[NDArray[np.float32]]:
        """Encode queries into token matrices.

        Args:
            query: One text, or any iterable of texts.
            **kwargs: ``batch_size`` is honoured; any other keyword raises ``TypeError``.

        Yields:
            One float32 array of shape ``(n_tokens, dim)`` per query, in input order;
            ``n_tokens`` is at most ``query_max_length``.

        Raises:
            InvalidInputError: An item is not a string, or ``batch_size`` is below 1.
            TypeError: An unknown keyword argument was given.
        """
        batch_size = kwargs.pop("batch_size", None)
        _reject_kwargs("query_embed", kwargs)
        return self._encode(query, self._query_tokenizer, self.query_prefix, batch_size)

    def token_spans(self, text: str) -> list[tuple[int, int] | None]:
        """Return the character span in ``text`` of each vector ``embed(text)`` yields.

        Used to explain matches: the document vector a query token matched becomes the words
        it stands for. Computed by the document tokenizer, so it costs no model run.

        Args:
            text: One document text, exactly as it was encoded (without ``document_prefix``).

        Returns:
            One ``(start, end)`` per document vector, in order; ``None`` for special tokens
            (``[CLS]``, ``[SEP]``) and for tokens of the document prefix.

        Raises:
            InvalidInputError: ``text`` is not a string.
        """
        if not isinstance(text, str):
            raise InvalidInputError(f"token_spans needs a string, got {type(text).__name__}")
        shift = len(self.document_prefix)
        encoding = self._doc_tokenizer.encode(self.document_prefix + text)
        spans: list[tuple[int, int] | None] = []
        for (start, end), special in zip(
            encoding.offsets, encoding.special_tokens_mask, strict=True
        ):
            inside = not special and start >= shift and end > start
            spans.append((start - shift, end - shift) if inside else None)
        return spans

    def _encode(
        self, texts: str | Iterable[str], tokenizer: Any, prefix: str, batch_size: int | None
    ) -> Iterator[NDArray[np.float32]]:
        size = self.batch_size if batch_size is None else batch_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer, got {size!r}")
        items: Iterable[str] = [texts] if isinstance(texts, str) else texts
        # A generator keeps the validation above eager and the encoding lazy.
        return self._encode_batches(items, tokenizer, prefix, size)

    def _encode_batches(
        self, items: Iterable[str], tokenizer: Any, prefix: str, size: int
    ) -> Iterator[NDArray[np.float32]]:
        batch: list[str] = []
        for position, text in enumerate(items):
            if not isinstance(text, str):
                raise InvalidInputError(f"item {position} is a {type(text).__name__}, not a string")
            batch.append(prefix + text)
            if len(batch) == size:
                yield from self._run(tokenizer.encode_batch(batch))
                batch = []
        if batch:
            yield from self._run(tokenizer.encode_batch(batch))

    def _run(self, encodings: Sequence[Any]) -> list[NDArray[np.float32]]:
        lengths = [len(encoding.ids) for encoding in encodings]
        width = max(lengths)
        input_ids = np.full((len(encodings), width), self._pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            input_ids[row, : lengths[row]] = encoding.ids
            attention_mask[row, : lengths[row]] = 1
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self._wants_token_types:
            # Single-segment inputs: every token belongs to segment 0.
            feed["token_type_ids"] = np.zeros_like(input_ids)
        hidden = self._session.run([self._output_name], feed)[0]
        matrices: list[NDArray[np.float32]] = []
        for row, length in enumerate(lengths):
            # Padding sits at the end of each row, so the first `length` positions are the text.
            tokens = np.array(hidden[row, :length], dtype=np.float32)
            if self.normalize:
                norms = np.linalg.norm(tokens, axis=1, keepdims=True)
                tokens /= np.maximum(norms, _NORM_FLOOR)
            matrices.append(tokens)
        return matrices


def _reject_kwargs(method: str, kwargs: dict[str, Any]) -> None:
    if kwargs:
        names = ", ".join(sorted(kwargs))
        raise TypeError(f"{method}() got unexpected keyword arguments: {names}")


def load_fastembed_from_dir(
    model_dir: str | os.PathLike[str],
    model_name: str = ANSWERAI_COLBERT_SMALL,
    *,
    threads: int | None = None,
) -> LateInteractionTextEmbedding:
    """Load a fastembed late-interaction model from a local folder, without any download.

    fastembed looks for its own file name inside the folder: ``vespa_colbert.onnx`` for
    answerai-colbert-small-v1, ``model.onnx`` for colbertv2.0. It also needs
    ``tokenizer.json`` and ``tokenizer_config.json`` (``special_tokens_map.json`` and
    ``config.json`` are read when present).

    Note that fastembed's ``embedding_size`` is taken from its model table, not from the file:
    with a backbone-only answerai file it says 96 while the vectors are 384-d. Read the width
    from an actual output.

    Args:
        model_dir: The folder.
        model_name: fastembed's name for the model.
        threads: onnxruntime threads; defaults to the number of usable cores.

    Returns:
        A fastembed ``LateInteractionTextEmbedding``, which satisfies
        :class:`LateInteractionEncoder`.

    Raises:
        InvalidInputError: The folder or one of the files fastembed needs is missing.
        MissingDependencyError: fastembed is not installed.
    """
    fastembed = _import_optional("fastembed", "ingest")
    folder = Path(model_dir).expanduser()
    if not folder.is_dir():
        raise InvalidInputError(f"model folder {folder} does not exist")
    wanted = [
        _fastembed_model_file(fastembed, model_name),
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    missing = [name for name in wanted if not (folder / name).is_file()]
    if missing:
        raise InvalidInputError(
            f"{folder} lacks {', '.join(missing)}, which fastembed needs for {model_name}"
        )
    model: LateInteractionTextEmbedding = fastembed.LateInteractionTextEmbedding(
        model_name=model_name,
        specific_model_path=str(folder),
        threads=threads if threads is not None else _available_cores(),
        local_files_only=True,
    )
    return model


def _fastembed_model_file(fastembed: ModuleType, model_name: str) -> str:
    for description in fastembed.LateInteractionTextEmbedding.list_supported_models():
        if str(description.get("model", "")).lower() == model_name.lower():
            return str(description.get("model_file") or "model.onnx")
    raise InvalidInputError(f"fastembed has no late-interaction model named {model_name!r}")


class FastembedTextEncoder:
    """A fastembed late-interaction text model (ColBERT family) as a multivec encoder.

    Queries and documents go through fastembed's own code paths, so they are encoded exactly
    as the model expects: ColBERT models put a ``[Q]`` or ``[D]`` marker after ``[CLS]``,
    pad queries with ``[MASK]`` to their query length (query augmentation: 32 tokens for
    colbertv2.0 and answerai-colbert-small-v1) and drop punctuation and padding from
    documents. What this class adds to fastembed's ``LateInteractionTextEmbedding``:

    * loading either by name, with fastembed's normal download and cache, or from a local
      folder (``model_dir``) where no model hub can be reached; a failed download raises
      :class:`~multivec.errors.InvalidInputError` saying how to load from a folder instead;
    * the real vector width (``dim``), measured on a short input: fastembed's table gives the
      width of the full model, which a backbone-only export does not have;
    * ``model_id`` to store with a collection, and :meth:`token_spans` for explanations.

    Example:
        Run from the repository root, with the answerai folder built by the benchmarks:

        >>> from benchmarks._data import answerai_model_dir
        >>> encoder = FastembedTextEncoder(ANSWERAI_COLBERT_SMALL, model_dir=answerai_model_dir())
        >>> next(iter(encoder.query_embed("what is late interaction?"))).shape
        (32, 384)

    Attributes:
        model: The fastembed ``LateInteractionTextEmbedding``.
        model_name: fastembed's name for the model.
        model_id: ``model_name``, with ``@<folder name>`` when loaded from a folder.
        dim: The width of each token vector.
        query_max_length: Tokens in every query (``[MASK]``-padded), or ``None`` when the
            model does not augment queries.
    """

    def __init__(
        self,
        model_name: str = FASTEMBED_DEFAULT_MODEL,
        *,
        model_dir: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        threads: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Load the model.

        Args:
            model_name: fastembed's name for the model, e.g. ``"colbert-ir/colbertv2.0"`` or
                ``"answerdotai/answerai-colbert-small-v1"``.
            model_dir: A local folder holding the model's files as fastembed names them (see
                :func:`load_fastembed_from_dir`); nothing is downloaded then.
            cache_dir: fastembed's download cache (default: its own).
            local_files_only: Use only what fastembed's cache already has; never download.
            threads: onnxruntime threads; defaults to the number of usable cores.
            **kwargs: Passed to fastembed's ``LateInteractionTextEmbedding`` (e.g.
                ``providers``).

        Raises:
            InvalidInputError: fastembed does not know ``model_name``, ``model_dir`` lacks a
                file, or the model could not be downloaded or found in the cache.
            MissingDependencyError: fastembed is not installed.
        """
        fastembed = _import_optional("fastembed", "ingest")
        threads = threads if threads is not None else _available_cores()
        if model_dir is not None:
            self.model = load_fastembed_from_dir(model_dir, model_name, threads=threads)
            self.model_id = f"{model_name}@{Path(model_dir).expanduser().resolve().name}"
        else:
            _fastembed_model_file(fastembed, model_name)  # unknown names fail here, clearly
            try:
                self.model = fastembed.LateInteractionTextEmbedding(
                    model_name=model_name,
                    cache_dir=None if cache_dir is None else str(cache_dir),
                    threads=threads,
                    local_files_only=local_files_only,
                    **kwargs,
                )
            except ValueError as exc:
                where = "in fastembed's cache" if local_files_only else "by download"
                raise InvalidInputError(
                    f"fastembed could not get {model_name} {where} ({exc}). Without access to "
                    "the model hub, copy the model's files into a folder and pass "
                    "model_dir=<folder>"
                ) from exc
            self.model_id = model_name
        self.model_name = model_name
        inner = getattr(self.model, "model", None)
        min_query = getattr(inner, "MIN_QUERY_LENGTH", None)
        markers = int(getattr(inner, "RESERVED_MARKER_TOKENS", 0))
        self.query_max_length: int | None = None if min_query is None else int(min_query) + markers
        self.dim = int(next(iter(self.model.embed(["dim"]))).shape[1])

    def __repr__(self) -> str:
        return (
            f"FastembedTextEncoder({self.model_name!r}, model_id={self.model_id!r}, dim={self.dim})"
        )

    def embed(
        self, documents: str | Iterable[str], batch_size: int = 32, **kwargs: Any
    ) -> Iterator[NDArray[np.float32]]:
        """Encode documents with fastembed's document path (``[D]`` marker, punctuation dropped).

        Args:
            documents: One text or an iterable of texts.
            batch_size: Texts per model call.
            **kwargs: Passed to fastembed (e.g. ``parallel``).

        Yields:
            One float32 ``(n_tokens, dim)`` matrix per document, in input order.
        """
        for matrix in self.model.embed(documents, batch_size=batch_size, **kwargs):
            yield np.asarray(matrix, dtype=np.float32)

    def query_embed(
        self, query: str | Iterable[str], **kwargs: Any
    ) -> Iterator[NDArray[np.float32]]:
        """Encode queries with fastembed's query path (``[Q]`` marker, ``[MASK]`` padding).

        Args:
            query: One text or an iterable of texts.
            **kwargs: Passed to fastembed.

        Yields:
            One float32 ``(n_tokens, dim)`` matrix per query; ColBERT queries have
            ``query_max_length`` rows unless longer.
        """
        for matrix in self.model.query_embed(query, **kwargs):
            yield np.asarray(matrix, dtype=np.float32)

    def token_spans(self, text: str) -> list[tuple[int, int] | None]:
        """Return the character span in ``text`` of each vector ``embed(text)`` yields.

        fastembed's own tokenisation, marker insertion and post-processing are replayed on
        an identity matrix instead of the model's output, so the rows it keeps (and the
        punctuation and padding it drops) are exactly those of a real call, without one.

        Args:
            text: One document text.

        Returns:
            One ``(start, end)`` per document vector; ``None`` for special tokens and markers.

        Raises:
            InvalidInputError: ``text`` is not a string, or this fastembed model does not
                expose the tokenizer hooks this relies on (tested with fastembed 0.9).
        """
        if not isinstance(text, str):
            raise InvalidInputError(f"token_spans needs a string, got {type(text).__name__}")
        inner = getattr(self.model, "model", None)
        hooks = ("tokenize", "_preprocess_onnx_input", "_post_process_onnx_output")
        if inner is None or not all(hasattr(inner, name) for name in hooks):
            raise InvalidInputError(
                f"token_spans is not available for {self.model_name} with this fastembed version"
            )
        if hasattr(inner, "_ensure_tokenizer"):
            inner._ensure_tokenizer()
        from fastembed.common.onnx_model import OnnxOutputContext

        (encoding,) = inner.tokenize([text], is_doc=True)
        ids = np.array([encoding.ids], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.array([encoding.attention_mask])}
        feed = inner._preprocess_onnx_input(feed, is_doc=True)
        processed = [int(i) for i in feed["input_ids"][0]]
        # Align the processed ids with the tokenizer's: inserted markers get no span.
        aligned: list[tuple[int, int] | None] = []
        source = 0
        for token in processed:
            if source < len(encoding.ids) and token == encoding.ids[source]:
                start, end = encoding.offsets[source]
                special = encoding.special_tokens_mask[source]
                aligned.append(None if special or end <= start else (int(start), int(end)))
                source += 1
            else:
                aligned.append(None)
        width = len(processed)
        probe = OnnxOutputContext(
            model_output=np.eye(width, dtype=np.float32)[None].copy(),
            attention_mask=np.asarray(feed["attention_mask"], dtype=np.int64).copy(),
            input_ids=np.asarray(feed["input_ids"], dtype=np.int64),
        )
        (kept,) = list(inner._post_process_onnx_output(probe, is_doc=True))
        return [aligned[int(np.argmax(row))] for row in np.asarray(kept)]


def _fastembed_cache_has(model_name: str) -> bool:
    """Whether fastembed's cache seems to hold ``model_name``, checked without fastembed.

    fastembed logs an error for every model it fails to find, so it is only asked to load a
    model that looks present: either its HuggingFace cache folder or its unpacked folder.
    """
    cache = Path(
        os.environ.get("FASTEMBED_CACHE_PATH") or Path(tempfile.gettempdir()) / "fastembed_cache"
    )
    hub_folder = cache / ("models--" + model_name.replace("/", "--"))
    return hub_folder.is_dir() or (cache / model_name.split("/")[-1]).is_dir()


def _shared_minilm_candidates() -> list[Path]:
    return [Path.cwd() / _SHARED_MINILM, _REPO_ROOT / _SHARED_MINILM]


def default_encoder(model: str | os.PathLike[str] | None = None) -> LateInteractionEncoder:
    """Return the encoder to use when the caller named none, and log which one it is.

    The first that applies wins:

    1. ``model``, when given: a local model folder (ONNX encoder, or fastembed when the folder
       holds fastembed's answerai file ``vespa_colbert.onnx``), or else a fastembed model name
       that fastembed already has on disk;
    2. the folder named by the ``MULTIVEC_MODEL_DIR`` environment variable;
    3. fastembed's ``colbert-ir/colbertv2.0``, only if it is already in fastembed's cache
       (nothing is downloaded);
    4. the repository's offline MiniLM, ``../shared/models/all-minilm-l6-v2-onnx``, looked up
       from the current folder and from the checkout root.

    Args:
        model: A model folder or a fastembed model name; ``None`` to resolve as above.

    Returns:
        A ready encoder. :func:`encoder_id` names it.

    Raises:
        InvalidInputError: ``model`` or ``MULTIVEC_MODEL_DIR`` names nothing loadable, or no
            default model can be found.
        MissingDependencyError: The libraries the chosen model needs are missing.
    """
    if model is not None:
        return _encoder_for(model, source="the model argument")

    from_env = os.environ.get(MODEL_DIR_ENV)
    if from_env:
        return _encoder_for(from_env, source=f"${MODEL_DIR_ENV}")

    if _fastembed_cache_has(FASTEMBED_DEFAULT_MODEL):
        try:
            fastembed = importlib.import_module("fastembed")
            encoder: LateInteractionEncoder = fastembed.LateInteractionTextEmbedding(
                FASTEMBED_DEFAULT_MODEL, threads=_available_cores(), local_files_only=True
            )
        except Exception as exc:
            # Whatever the failure, the model is not usable offline: fall through to MiniLM.
            logger.debug("fastembed could not load %s offline: %s", FASTEMBED_DEFAULT_MODEL, exc)
        else:
            logger.info("multivec: using encoder %s (fastembed cache)", FASTEMBED_DEFAULT_MODEL)
            return encoder

    for candidate in _shared_minilm_candidates():
        if (candidate / "model.onnx").is_file():
            return _encoder_for(candidate, source="the shared offline MiniLM")

    tried = ", ".join(str(c) for c in _shared_minilm_candidates())
    raise InvalidInputError(
        "no encoder model found: pass a model folder, set "
        f"{MODEL_DIR_ENV}, or place the offline MiniLM at one of: {tried}"
    )


def _encoder_for(model: str | os.PathLike[str], *, source: str) -> LateInteractionEncoder:
    path = Path(model).expanduser()
    encoder: LateInteractionEncoder
    if path.is_dir():
        if (path / "vespa_colbert.onnx").is_file() and not (path / "model.onnx").is_file():
            encoder = load_fastembed_from_dir(path, ANSWERAI_COLBERT_SMALL)
            description = f"{ANSWERAI_COLBERT_SMALL} via fastembed from {path}"
        else:
            onnx_encoder = OnnxLateInteractionEncoder(path)
            encoder = onnx_encoder
            description = f"{onnx_encoder.model_id} (ONNX) from {path}"
    elif (
        isinstance(model, str)
        and "/" in model
        and not path.exists()
        and _fastembed_cache_has(model)
    ):
        fastembed = _import_optional("fastembed", "ingest")
        encoder = fastembed.LateInteractionTextEmbedding(
            model, threads=_available_cores(), local_files_only=True
        )
        description = f"{model} via fastembed's cache"
    else:
        raise InvalidInputError(
            f"{source} names {str(model)!r}, which is neither a model folder nor a fastembed "
            "model already downloaded (multivec never downloads models)"
        )
    logger.info("multivec: using encoder %s (chosen by %s)", description, source)
    return encoder
