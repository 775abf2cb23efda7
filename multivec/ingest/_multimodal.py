"""Page images as multi-vector documents: fastembed's late-interaction multimodal models.

:class:`FastembedMultimodalEncoder` wraps fastembed's ``LateInteractionMultimodalEmbedding``
(the ColPali family): documents are page images (PDF pages rendered by the ingest pipeline,
PNG/JPEG files), queries are text. Each image becomes one matrix of vectors: for ColPali
v1.3, 1,024 image-patch vectors (a 32 x 32 grid over the page, which the processor stretches
to 448 x 448) followed by 6 vectors of the text prompt the model reads with every image.
:attr:`FastembedMultimodalEncoder.patch_layout` says which rows are patches and where they
sit on the page, which :func:`multivec._explain.explanation_heatmap` needs to draw why a page
matched.

The model loads by name (fastembed downloads it, about 6.5 GB for ColPali v1.3) or from a
local folder holding fastembed's files for it: ``model.onnx`` (and ``model.onnx_data``),
``tokenizer.json``, ``tokenizer_config.json``, ``preprocessor_config.json`` and optionally
``config.json`` and ``special_tokens_map.json``.

What has been run: the loading, image and query paths through fastembed's own ColPali code,
with a tiny ONNX model of the same inputs, outputs and layout built by the tests
(``tests/test_multimodal.py``). What has not: real ColPali weights, which cannot be fetched on
the machines this was written on; retrieval quality on page images is therefore untested
here.

fastembed and pillow are optional: imported when an encoder is built.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from multivec._explain import PatchLayout
from multivec.errors import InvalidInputError
from multivec.ingest._encoders import _available_cores, _import_optional

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["COLPALI_LAYOUT", "COLPALI_MODEL", "FastembedMultimodalEncoder"]

COLPALI_MODEL = "Qdrant/colpali-v1.3-fp16"
"""fastembed's name for ColPali v1.3 (fp16 ONNX export)."""

COLPALI_LAYOUT = PatchLayout(rows=32, cols=32, first=0)
"""ColPali v1.3 (PaliGemma 448, 14-pixel patches): rows 0-1023 are a 32 x 32 patch grid."""

# Patch layouts of the models whose output order is known; others get none (no heatmap).
_LAYOUTS = {COLPALI_MODEL.lower(): COLPALI_LAYOUT}
# Files fastembed reads from a local folder for a multimodal model, besides the ONNX file.
_FOLDER_FILES = ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json")


class FastembedMultimodalEncoder:
    """fastembed's late-interaction multimodal model (ColPali family) as a multivec encoder.

    Images (documents) go through :meth:`embed_image`, text queries through
    :meth:`query_embed`, both through fastembed's own preprocessing, so they are encoded as
    the model expects (ColPali's ``<image>`` placeholders and prompt, its query prefix and
    ``<pad>`` augmentation). :meth:`embed` encodes text with the query path as well: ColPali
    has a single text encoder, so text chunks indexed next to pages are encoded like queries.

    Tested end to end with a tiny model of ColPali's shape only, not with real ColPali
    weights (see the module docstring).

    Attributes:
        model: fastembed's ``LateInteractionMultimodalEmbedding``.
        model_name: fastembed's name for the model.
        model_id: ``model_name``, with ``@<folder name>`` when loaded from a folder.
        dim: Width of every vector (fastembed's table; ColPali: 128).
        patch_layout: Where the patch vectors are in an image's matrix and their grid, or
            ``None`` for a model whose layout multivec does not know.
        patches_only: Whether :meth:`embed_image` keeps only the patch rows.
    """

    def __init__(
        self,
        model_name: str = COLPALI_MODEL,
        *,
        model_dir: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        threads: int | None = None,
        patches_only: bool = False,
        **kwargs: Any,
    ) -> None:
        """Load the model by name, or from ``model_dir`` without any download.

        Args:
            model_name: fastembed's name for the model (``Qdrant/colpali-v1.3-fp16``).
            model_dir: A local folder with the model's files (see the module docstring).
            cache_dir: fastembed's download cache (default: its own).
            local_files_only: Use only fastembed's cache; never download.
            threads: onnxruntime threads; defaults to the number of usable cores.
            patches_only: Drop the prompt-token rows from image matrices, keeping the patch
                grid only (needs a known ``patch_layout``). Off by default: ColPali scores
                pages with all of them.
            **kwargs: Passed to fastembed (e.g. ``providers``).

        Raises:
            InvalidInputError: Unknown model, a missing file in ``model_dir``, a failed
                download, or ``patches_only`` for a model without a known layout.
            MissingDependencyError: fastembed is not installed.
        """
        fastembed = _import_optional("fastembed", "ingest")
        cls = fastembed.LateInteractionMultimodalEmbedding
        descriptions = {str(d.get("model", "")).lower(): d for d in cls.list_supported_models()}
        description = descriptions.get(model_name.lower())
        if description is None:
            known = ", ".join(sorted(str(d["model"]) for d in descriptions.values()))
            raise InvalidInputError(
                f"fastembed has no late-interaction multimodal model {model_name!r}; it has {known}"
            )
        options: dict[str, Any] = {
            "threads": threads if threads is not None else _available_cores(),
            "cache_dir": None if cache_dir is None else str(cache_dir),
            **kwargs,
        }
        if model_dir is not None:
            folder = Path(model_dir).expanduser()
            _check_folder(folder, str(description.get("model_file") or "model.onnx"), model_name)
            options.update(specific_model_path=str(folder), local_files_only=True)
            self.model_id = f"{model_name}@{folder.resolve().name}"
        else:
            options.update(local_files_only=local_files_only)
            self.model_id = model_name
        try:
            self.model = cls(model_name, **options)
        except ValueError as exc:
            raise InvalidInputError(
                f"fastembed could not load {model_name} ({exc}). Without access to the model "
                "hub, copy its files into a folder and pass model_dir=<folder>"
            ) from exc
        self.model_name = model_name
        self.dim = int(description.get("dim") or 0)
        self.patch_layout: PatchLayout | None = _LAYOUTS.get(model_name.lower())
        if patches_only and self.patch_layout is None:
            raise InvalidInputError(
                f"patches_only needs a known patch layout, and {model_name} has none in multivec"
            )
        self.patches_only = patches_only

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}({self.model_name!r}, model_id={self.model_id!r}, dim={self.dim})"

    @property
    def image_token_rows(self) -> slice | None:
        """The patch rows of the matrices :meth:`embed_image` yields (``None``: unknown)."""
        layout = self.patch_layout
        if layout is None:
            return None
        if self.patches_only:
            return slice(0, layout.patches)
        return slice(layout.first, layout.first + layout.patches)

    @property
    def output_layout(self) -> PatchLayout | None:
        """The patch layout of the matrices this encoder yields (shifted by ``patches_only``)."""
        if self.patch_layout is None:
            return None
        if self.patches_only:
            return PatchLayout(self.patch_layout.rows, self.patch_layout.cols, 0)
        return self.patch_layout

    def embed_image(
        self,
        images: Image.Image
        | str
        | os.PathLike[str]
        | Iterable[Image.Image | str | os.PathLike[str]],
        batch_size: int = 2,
        **kwargs: Any,
    ) -> Iterator[NDArray[np.float32]]:
        """Encode page images, one matrix per image.

        Args:
            images: One image (a PIL image or a file path) or an iterable of them.
            batch_size: Images per model call.
            **kwargs: Passed to fastembed (e.g. ``parallel``).

        Yields:
            One float32 ``(n_vectors, dim)`` matrix per image, in input order: for ColPali,
            1,024 patch rows then 6 prompt rows (patch rows only with ``patches_only``).

        Raises:
            InvalidInputError: ``batch_size`` is below 1.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(images, os.PathLike):
            images = os.fspath(images)
        return self._images(images, batch_size, kwargs)

    def _images(
        self, images: Any, batch_size: int, kwargs: dict[str, Any]
    ) -> Iterator[NDArray[np.float32]]:
        layout = self.patch_layout
        # Rows of the model's own output that are patches (patch_layout is never None here
        # with patches_only: __init__ refuses that combination).
        keep = (
            slice(layout.first, layout.first + layout.patches)
            if self.patches_only and layout is not None
            else slice(None)
        )
        for matrix in self.model.embed_image(images, batch_size=batch_size, **kwargs):
            yield np.asarray(matrix, dtype=np.float32)[keep]

    def query_embed(
        self, query: str | Iterable[str], **kwargs: Any
    ) -> Iterator[NDArray[np.float32]]:
        """Encode text queries with fastembed's ``embed_text`` (the model's query path).

        Args:
            query: One text or an iterable of texts.
            **kwargs: Passed to fastembed (e.g. ``batch_size``).

        Yields:
            One float32 ``(n_tokens, dim)`` matrix per query. ColPali appends 10 ``<pad>``
            tokens as query augmentation; queries in one batch are padded to one length.
        """
        for matrix in self.model.embed_text(query, **kwargs):
            yield np.asarray(matrix, dtype=np.float32)

    def embed(
        self, documents: str | Iterable[str], batch_size: int = 32, **kwargs: Any
    ) -> Iterator[NDArray[np.float32]]:
        """Encode text documents; ColPali has one text path, so this is :meth:`query_embed`.

        Args:
            documents: One text or an iterable of texts.
            batch_size: Texts per model call.
            **kwargs: Passed to fastembed.

        Yields:
            One float32 ``(n_tokens, dim)`` matrix per text.
        """
        return self.query_embed(documents, batch_size=batch_size, **kwargs)


def _check_folder(folder: Path, model_file: str, model_name: str) -> None:
    if not folder.is_dir():
        raise InvalidInputError(f"model folder {folder} does not exist")
    missing = [name for name in (model_file, *_FOLDER_FILES) if not (folder / name).is_file()]
    if missing:
        raise InvalidInputError(
            f"{folder} lacks {', '.join(missing)}, which fastembed needs for {model_name}"
        )
