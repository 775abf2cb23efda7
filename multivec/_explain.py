"""Why a document matched: per query token, the document vector it matched and what it added.

A MaxSim score is a sum over the query's tokens of each token's best similarity with any
document vector. :func:`explain_match` keeps the two things that sum is made of: for query
token ``i``, the index of the document vector it matched (``doc_tokens[i]``) and its
contribution (``contributions[i]``, that best similarity), so the contributions add up to the
hit's score.

``Collection.search(query, explain=True)`` attaches an :class:`Explanation` to every hit,
computed from the token vectors already fetched for the rerank, for the final hits only:
a search without ``explain`` costs nothing more.

The explanation knows vector indices only. Two views turn them into something to look at:

* text: :func:`explain_text` maps each matched vector to its character span in the hit's
  text. The spans come from the encoder, at explain time, through its
  ``token_spans(text)`` method (one ``(start, end)`` or ``None`` per vector the encoder
  outputs for that text; ``OnnxLateInteractionEncoder`` and ``FastembedTextEncoder`` have
  it). Nothing extra is stored with documents. It needs the text stored with the document
  to be the text that was encoded, and the document's vectors not to be pooled;
* page images: :func:`explanation_heatmap` paints, over the page, how much each image patch
  contributed, given the encoder's :class:`PatchLayout` (which output rows are patches and
  their grid).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from multivec.errors import InvalidInputError, InvalidVectorsError, MissingDependencyError

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "Explanation",
    "PatchLayout",
    "SpanEncoder",
    "SpanMatch",
    "TokenSpans",
    "explain_match",
    "explain_text",
    "explanation_heatmap",
    "patch_scores",
]


@dataclass(frozen=True)
class Explanation:
    """How one document's MaxSim score is made: one entry per query token.

    Attributes:
        doc_tokens: For each query token, the index of the document vector (token, pooled
            vector or image patch) with the highest similarity to it.
        contributions: For each query token, that highest similarity: its term of the score.
        n_doc_vectors: How many vectors the document has, to check a span or patch mapping
            against.
    """

    doc_tokens: tuple[int, ...]
    contributions: tuple[float, ...]
    n_doc_vectors: int

    @property
    def score(self) -> float:
        """The sum of the contributions: the document's MaxSim score."""
        return float(sum(self.contributions))

    def per_doc_vector(self) -> npt.NDArray[np.float64]:
        """How much each document vector contributed, summed over the query tokens it won.

        Returns:
            ``(n_doc_vectors,)`` array; vectors no query token matched hold 0.
        """
        totals = np.zeros(self.n_doc_vectors, dtype=np.float64)
        np.add.at(totals, np.asarray(self.doc_tokens, dtype=np.intp), self.contributions)
        return totals


def explain_match(query: npt.ArrayLike, doc_vectors: npt.ArrayLike) -> Explanation:
    """Explain the MaxSim score of one document for one query.

    Similarities are computed in float32 (float16 document vectors are widened), as the
    rerank does, so the contributions sum to the score to float32 rounding.

    Example:
        >>> import numpy as np
        >>> q = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
        >>> d = np.array([[0.0, 0.5], [0.9, 0.1]], dtype=np.float32)
        >>> e = explain_match(q, d)
        >>> e.doc_tokens, [round(c, 2) for c in e.contributions]
        ((1, 0), [0.9, 0.5])

    Args:
        query: ``(n_q, dim)`` query token matrix.
        doc_vectors: ``(n_d, dim)`` document token matrix.

    Returns:
        The :class:`Explanation`; ties go to the lower document index.

    Raises:
        InvalidVectorsError: A matrix is empty or not 2-D, or the widths differ.
    """
    q = np.asarray(query, dtype=np.float32)
    d = np.asarray(doc_vectors, dtype=np.float32)
    if q.ndim != 2 or d.ndim != 2 or 0 in q.shape or 0 in d.shape:
        raise InvalidVectorsError(
            f"explain needs two non-empty 2-D matrices, got shapes {q.shape} and {d.shape}"
        )
    if q.shape[1] != d.shape[1]:
        raise InvalidVectorsError(
            f"query tokens are {q.shape[1]}-d but document vectors are {d.shape[1]}-d"
        )
    similarities = q @ d.T
    best = np.argmax(similarities, axis=1)
    values = similarities[np.arange(q.shape[0]), best]
    return Explanation(
        doc_tokens=tuple(int(i) for i in best),
        contributions=tuple(float(v) for v in values),
        n_doc_vectors=int(d.shape[0]),
    )


# --- text -----------------------------------------------------------------------------------

TokenSpans = Sequence[tuple[int, int] | None]
"""Per output vector of an encoder, its ``(start, end)`` character span, or ``None``."""


@runtime_checkable
class SpanEncoder(Protocol):
    """An encoder that can say which characters each of its document vectors stands for."""

    def token_spans(self, text: str) -> TokenSpans:
        """One ``(start, end)`` span or ``None`` per vector ``embed(text)`` yields."""
        ...


@dataclass(frozen=True)
class SpanMatch:
    """One query token's match, located in the document's text.

    Attributes:
        query_token: The query token's index.
        doc_token: The matched document vector's index.
        contribution: Its term of the score.
        start: Start character of the matched token in the text, or ``None`` for a vector
            with no text (``[CLS]``, ``[SEP]``, a ``[D]`` marker, a prefix).
        end: End character (exclusive), or ``None``.
        text: ``text[start:end]``, or ``""`` when there is no span.
    """

    query_token: int
    doc_token: int
    contribution: float
    start: int | None
    end: int | None
    text: str


def explain_text(
    explanation: Explanation,
    text: str,
    spans: TokenSpans | SpanEncoder,
    *,
    allow_prefix: bool = False,
) -> list[SpanMatch]:
    """Locate each query token's matched document token in the document's text.

    Args:
        explanation: The hit's explanation (``hit.explanation``).
        text: The hit's text (``hit.text``): exactly what was encoded.
        spans: The encoder that encoded the text (its ``token_spans`` is called), or the spans
            themselves.
        allow_prefix: Accept a document that has fewer vectors than the text has tokens, when
            the vectors are the first ones (stored with :func:`~multivec.ingest.keep_first`).

    Returns:
        One :class:`SpanMatch` per query token, in query order.

    Raises:
        InvalidInputError: The number of spans does not match the document's vectors: the
            document was pooled, or encoded by another model or from another text.
    """
    token_spans = spans.token_spans(text) if isinstance(spans, SpanEncoder) else spans
    stored, found = explanation.n_doc_vectors, len(token_spans)
    if found != stored and not (allow_prefix and found > stored):
        raise InvalidInputError(
            f"the document has {stored} vectors but its text gives {found} token spans: its "
            "vectors were pooled, or encoded by another model or from another text. Explain "
            "unpooled documents with the encoder that indexed them "
            "(allow_prefix=True for documents cut with keep_first)"
        )
    matches = []
    for q, (d, c) in enumerate(zip(explanation.doc_tokens, explanation.contributions, strict=True)):
        span = token_spans[d]
        start, end = (None, None) if span is None else span
        snippet = "" if start is None or end is None else text[start:end]
        matches.append(SpanMatch(q, d, c, start, end, snippet))
    return matches


# --- page images ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PatchLayout:
    """Where an image encoder's patch vectors sit in its output, and their grid on the page.

    Rows ``first .. first + rows * cols - 1`` of a page's matrix are the patches, row-major:
    row ``first + r * cols + c`` covers the ``r``-th band from the top and ``c``-th from the left
    of the page, as the encoder resized it. Other rows (a model's text prompt tokens) have no
    place on the page.

    Attributes:
        rows: Patch rows.
        cols: Patch columns.
        first: Index of the first patch row in the output.
    """

    rows: int
    cols: int
    first: int = 0

    @property
    def patches(self) -> int:
        """How many patch vectors a page has."""
        return self.rows * self.cols


def patch_scores(explanation: Explanation, layout: PatchLayout) -> npt.NDArray[np.float64]:
    """Sum the contributions of the query tokens matched to each patch, as a grid.

    Args:
        explanation: The explanation of a page hit.
        layout: The encoder's patch layout (``encoder.patch_layout``).

    Returns:
        ``(rows, cols)`` array of contributions; contributions won by non-patch rows (prompt
        tokens) are left out.

    Raises:
        InvalidInputError: The page has fewer vectors than the layout needs.
    """
    end = layout.first + layout.patches
    if explanation.n_doc_vectors < end:
        raise InvalidInputError(
            f"the page has {explanation.n_doc_vectors} vectors, fewer than the layout's "
            f"{layout.patches} patches from row {layout.first}: was it pooled or cut?"
        )
    totals = explanation.per_doc_vector()[layout.first : end]
    return totals.reshape(layout.rows, layout.cols)


def explanation_heatmap(
    explanation: Explanation,
    page: Image.Image,
    layout: PatchLayout,
    *,
    alpha: float = 0.55,
    color: tuple[int, int, int] = (255, 0, 0),
) -> Image.Image:
    """Paint the patches that matched over the page: the stronger the match, the redder.

    The grid is stretched over the whole page, as ColPali's processor stretches the page to
    its square input.

    Example:
        ``explanation_heatmap(hit.explanation, page, encoder.patch_layout).save("why.png")``

    Args:
        explanation: The explanation of a page hit.
        page: The page image as it was encoded.
        layout: The encoder's patch layout.
        alpha: Opacity of the strongest patch.
        color: RGB colour of the overlay.

    Returns:
        A new RGB image of the page's size.

    Raises:
        InvalidInputError: The layout does not fit the explanation, or ``alpha`` is out of
            ``[0, 1]``.
        MissingDependencyError: pillow is not installed.
    """
    try:
        from PIL import Image
    except ImportError as exc:
        raise MissingDependencyError("pillow", "ingest") from exc
    if not 0.0 <= alpha <= 1.0:
        raise InvalidInputError(f"alpha must be between 0 and 1, got {alpha}")
    grid = np.clip(patch_scores(explanation, layout), 0.0, None)
    peak = float(grid.max())
    weights = grid / peak if peak > 0 else grid
    # A 2-D uint8 array becomes an 8-bit greyscale ("L") mask.
    mask_small = Image.fromarray(np.round(weights * alpha * 255).astype(np.uint8))
    # Nearest keeps patch edges sharp, so a viewer sees which patch matched.
    mask = mask_small.resize(page.size, resample=Image.Resampling.NEAREST)
    base = page.convert("RGB")
    overlay = Image.new("RGB", page.size, color)
    result: Image.Image = Image.composite(overlay, base, mask)
    return result
