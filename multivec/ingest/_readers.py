"""Readers per file type: from a path on disk to text, page images or corpus records.

Each reader either returns what the file holds or raises
:class:`~multivec.errors.InvalidInputError` whose message says what is wrong with the file and
what to do about it; the pipeline reports that message with the path and goes on with the
next file. Nothing here knows about encoders or databases.

Which reader a file gets is decided by its extension (:func:`file_kind`):

========================  ===========================================================
kind                      extensions
========================  ===========================================================
``text``                  ``.txt .text .rst .log``
``markdown``              ``.md .markdown .mdx``
``python``                ``.py .pyi``
``code``                  other source files (``.js .ts .go .rs .java .c .h .cpp ...``)
``pdf``                   ``.pdf``
``image``                 ``.png .jpg .jpeg``
``jsonl``                 ``.jsonl`` (the BEIR corpus layout: ``_id``, ``title``, ``text``)
========================  ===========================================================

pypdfium2 and Pillow are imported only when a PDF or an image is read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from multivec.errors import InvalidInputError, MissingDependencyError
from multivec.ingest._jsonl import CorpusRecord, _required_id, _string_field

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = [
    "FileKind",
    "PdfFile",
    "file_kind",
    "iter_files",
    "iter_jsonl_records",
    "read_image",
    "read_pdf",
    "read_text_file",
]

FileKind = Literal["text", "markdown", "python", "code", "pdf", "image", "jsonl"]

# Source files read with the blank-line chunker (Python has its own, syntax-aware one).
_CODE_EXTENSIONS = [
    ".c",
    ".cc",
    ".cpp",
    ".cs",
    ".go",
    ".h",
    ".hpp",
    ".java",
    ".js",
    ".jsx",
    ".kt",
    ".lua",
    ".php",
    ".rb",
    ".rs",
    ".scala",
    ".sh",
    ".sql",
    ".swift",
    ".ts",
    ".tsx",
]

_KINDS: dict[str, FileKind] = {
    **dict.fromkeys((".txt", ".text", ".rst", ".log"), "text"),
    **dict.fromkeys((".md", ".markdown", ".mdx"), "markdown"),
    **dict.fromkeys((".py", ".pyi"), "python"),
    **dict.fromkeys(_CODE_EXTENSIONS, "code"),
    ".pdf": "pdf",
    **dict.fromkeys((".png", ".jpg", ".jpeg"), "image"),
    ".jsonl": "jsonl",
}


def file_kind(path: str | os.PathLike[str]) -> FileKind | None:
    """The reader a file gets, from its extension; ``None`` for a type multivec does not read.

    Args:
        path: A file path.

    Returns:
        The kind, or ``None``.

    Example:
        >>> file_kind("docs/guide.MD"), file_kind("photo.jpeg"), file_kind("data.bin")
        ('markdown', 'image', None)
    """
    return _KINDS.get(Path(path).suffix.lower())


def iter_files(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Walk a folder lazily, in sorted order, skipping hidden files and folders.

    Symbolic links to files are followed; links to folders are not (no cycles). A file path
    is yielded as it is.

    Args:
        path: A file or a folder.

    Yields:
        The files, folder by folder, names sorted within each.

    Raises:
        InvalidInputError: ``path`` does not exist.
    """
    root = Path(path)
    if root.is_file():
        yield root
        return
    if not root.is_dir():
        raise InvalidInputError(f"{root} does not exist; pass existing files or folders")
    for folder, dirnames, filenames in os.walk(root):
        # Sorting in place also fixes the order os.walk descends in.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(folder) / name


def read_text_file(path: str | os.PathLike[str]) -> str:
    """Read a UTF-8 text file (a byte-order mark is dropped).

    Args:
        path: The file.

    Returns:
        Its text, line endings untouched.

    Raises:
        InvalidInputError: The file cannot be read, is not UTF-8, holds NUL bytes (binary), or
            holds only whitespace.
    """
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read the file: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); convert it, e.g. "
            f"iconv -f latin1 -t utf-8"
        ) from exc
    if "\x00" in text:
        raise InvalidInputError("holds NUL bytes: a binary file with a text extension")
    if not text.strip():
        raise InvalidInputError("empty: no text to index")
    return text


def iter_jsonl_records(
    path: str | os.PathLike[str],
) -> Iterator[tuple[int, int, CorpusRecord | InvalidInputError]]:
    """Stream a BEIR-style ``corpus.jsonl``, reporting bad lines instead of stopping at them.

    Each line is validated as :func:`~multivec.ingest.iter_beir_corpus` validates it, but a bad
    line yields its error and reading goes on with the next one.

    Args:
        path: The JSONL file.

    Yields:
        ``(line_number, line_bytes, record_or_error)`` per non-blank line; ``line_bytes`` is
        the line's size, for progress.

    Raises:
        InvalidInputError: The file cannot be opened.
    """
    file = Path(path)
    try:
        handle = file.open("rb")
    except OSError as exc:
        raise InvalidInputError(f"cannot read the file: {exc.strerror or exc}") from exc
    with handle:
        for line_no, raw in enumerate(handle, start=1):
            line = raw[3:] if line_no == 1 and raw.startswith(b"\xef\xbb\xbf") else raw
            if not line.strip():
                continue
            yield line_no, len(raw), _jsonl_record(line, file, line_no)


def _jsonl_record(line: bytes, file: Path, line_no: int) -> CorpusRecord | InvalidInputError:
    where = f"{file}:{line_no}"
    try:
        obj = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return InvalidInputError(f"{where}: not UTF-8 (byte 0x{line[exc.start]:02x})")
    except json.JSONDecodeError as exc:
        return InvalidInputError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})")
    if not isinstance(obj, dict):
        return InvalidInputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    try:
        doc_id = _required_id(obj, file, line_no)
        title = _string_field(obj, "title", file, line_no, required=False)
        text = _string_field(obj, "text", file, line_no, required=True)
    except InvalidInputError as exc:
        return exc
    if not (title.strip() or text.strip()):
        return InvalidInputError(f"{where}: empty title and text")
    extra = {k: v for k, v in obj.items() if k not in ("_id", "title", "text")}
    return CorpusRecord(id=doc_id, title=title, text=text, metadata=extra)


def _import(package: str) -> Any:
    try:
        return __import__(package)
    except ImportError as exc:
        raise MissingDependencyError(package, "ingest") from exc


@dataclass(frozen=True)
class PdfFile:
    """An opened PDF: its page texts now, its page images on demand.

    Attributes:
        path: The file.
        texts: The text layer of each page, in page order (``""`` for a page without one).
    """

    path: Path
    texts: tuple[str, ...]

    @property
    def pages(self) -> int:
        """The number of pages."""
        return len(self.texts)

    def render(self, page: int, dpi: int = 144) -> Image:
        """Render one page to an RGB image.

        Args:
            page: The page, counted from 0.
            dpi: Resolution; 72 is one pixel per PDF point.

        Returns:
            The page image.

        Raises:
            InvalidInputError: The page cannot be rendered (the file changed or is damaged).
        """
        pdfium = _import("pypdfium2")
        try:
            document = pdfium.PdfDocument(str(self.path))
            try:
                bitmap = document[page].render(scale=dpi / 72)
                image: Image = bitmap.to_pil().convert("RGB")
            finally:
                document.close()
        except pdfium.PdfiumError as exc:
            raise InvalidInputError(f"page {page + 1} cannot be rendered: {exc}") from exc
        return image


def read_pdf(path: str | os.PathLike[str]) -> PdfFile:
    """Open a PDF and extract the text layer of every page.

    Args:
        path: The file.

    Returns:
        The opened file; :meth:`PdfFile.render` draws a page when it is needed.

    Raises:
        InvalidInputError: The file is not a readable PDF (damaged, encrypted, not a PDF) or
            has no pages.
        MissingDependencyError: pypdfium2 is not installed.
    """
    pdfium = _import("pypdfium2")
    file = Path(path)
    try:
        document = pdfium.PdfDocument(str(file))
    except pdfium.PdfiumError as exc:
        raise InvalidInputError(
            f"not a readable PDF ({exc}); check that it opens in a viewer, or remove it"
        ) from exc
    except OSError as exc:
        raise InvalidInputError(f"cannot read the file: {exc.strerror or exc}") from exc
    try:
        texts = []
        for index in range(len(document)):
            textpage = document[index].get_textpage()
            # pdfium ends lines with CRLF; normalise so positions match what is stored.
            texts.append(textpage.get_text_range().replace("\r\n", "\n").replace("\r", "\n"))
    except pdfium.PdfiumError as exc:
        raise InvalidInputError(f"damaged PDF: {exc}") from exc
    finally:
        document.close()
    if not texts:
        raise InvalidInputError("the PDF has no pages")
    return PdfFile(file, tuple(texts))


def read_image(path: str | os.PathLike[str]) -> Image:
    """Read a PNG or JPEG image fully (so a truncated file fails here) as RGB.

    Args:
        path: The file.

    Returns:
        The decoded image.

    Raises:
        InvalidInputError: The file is not a readable image, or is truncated.
        MissingDependencyError: Pillow is not installed.
    """
    try:
        from PIL import Image as PILImage
        from PIL import UnidentifiedImageError
    except ImportError as exc:
        raise MissingDependencyError("pillow", "ingest") from exc
    try:
        with PILImage.open(Path(path)) as opened:
            opened.load()
            image: Image = opened.convert("RGB")
    except UnidentifiedImageError as exc:
        raise InvalidInputError("not a readable image (unknown or damaged format)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        # Pillow raises OSError for truncated data and SyntaxError for some broken headers.
        raise InvalidInputError(f"damaged image: {exc}") from exc
    return image
