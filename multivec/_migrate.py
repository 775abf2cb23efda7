"""Whole-collection operations: migrate, verify, export, import, and the dry-run plan.

They are built only on the collection API (``iter_documents``, ``upsert``, ``count``,
``search``) and the export format of :mod:`multivec._export`, so they work between any two
backends, and between a backend and an export directory.

**Migration** streams the source in key order, in batches sized by bytes, through a reader
thread and ``workers`` writer threads, and upserts into the target. Upserts replace by id on
every backend, so writing a document twice never duplicates it; what makes a migration
*exactly once* is the ledger.

**The ledger** is one JSON file per migration, outside the target, named by the SHA-256 of
(source URI, source collection, target URI, target collection), URIs with secrets masked. It
holds the last source id whose batch the target acknowledged, together with every batch
before it: the ``start_after`` cursor of a resumed run. It is rewritten atomically (temporary
file, fsync, rename) after each acknowledged batch, so a run killed at any point resumes where
the ledger says; the batch in flight is written again, which upserts make harmless. Batch
size and worker count are not part of it, so they may change between runs.

Into a target that was empty when the migration began, batches are *appended*
(``Backend.insert``), which LanceDB does faster than an upsert. The ledger makes that safe: it
records the highest id handed to a writer before the write starts, so a resumed run upserts
every batch that reaches up to that id (a write in flight when the run died may have landed)
and appends only past it, where nothing can have been written. A file lock keeps
two runs of the same migration apart. When the ledger claims more documents than the target
holds (the target was dropped, or lost writes), the run starts again from the beginning.

**Verification** reads both sides in key order and compares a checksum per document: the typed
id (``s:<text>`` / ``i:<decimal>``), the token count and dimension, and SHA-256s of the token
values (row-major, little-endian, at the stored precision; at float32 when the two sides store
different precisions, which float16 values convert to exactly), of the metadata as canonical
JSON (sorted keys, no spaces, UTF-8; so ``1`` and ``1.0`` differ) and of the text (``None``
and ``""`` differ). Keeping the parts apart lets a report say what differs. Then a seeded set
of queries runs on both sides and their top-k ids and scores are compared, tolerating ties, so
index drift can be told apart from data loss.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from multivec._collection import Collection, connect
from multivec._export import ExportReader, ExportWriter, atomic_write, canonical_json
from multivec._models import CollectionInfo, Document
from multivec._uri import URI
from multivec._validation import DocId, StorageDtype, id_to_key, key_to_id
from multivec.backends import get_backend
from multivec.errors import (
    CollectionNotFoundError,
    ConfigMismatchError,
    ConfigurationError,
    InvalidInputError,
)
from multivec.muvera import FDEConfig, FDEEncoder
from multivec.rerank import maxsim_packed

__all__ = [
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_PART_BYTES",
    "DocumentDifference",
    "ExportReport",
    "MigrationPlan",
    "MigrationReport",
    "PlanProblem",
    "SearchCheck",
    "VerifyReport",
    "default_ledger_dir",
    "export_collection",
    "import_collection",
    "migrate",
    "plan_migration",
    "verify",
]

DEFAULT_BATCH_BYTES = 32 << 20
DEFAULT_PART_BYTES = 256 << 20
LEDGER_VERSION = 1
# The first read of a run is this small, to learn the documents' size before sizing batches.
_PROBE_DOCS = 8
_MAX_BATCH_DOCS = 50_000
_LISTED = 100
# Scores of the same stored values agree to float32 rounding (kernels differ in summation
# order), except that Qdrant's own MaxSim (its default rerank) rounds the query to float16
# first: up to about 1e-4 relative. A real difference in the data shows in the checksums.
_SCORE_RTOL = 1e-3

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(done, total)`` with documents done so far and the total expected."""

Side = Collection | ExportReader
T = TypeVar("T")


# --- sides: a collection or an export directory ---------------------------------------------


def _open_side(spec: str | URI | os.PathLike[str], collection: str) -> Side:
    """A URI (``scheme://...``) opens a collection; anything else names an export directory."""
    if isinstance(spec, URI) or (isinstance(spec, str) and "://" in spec):
        return connect(spec, collection)
    return ExportReader(spec)


def _label(side: Side) -> str:
    if isinstance(side, ExportReader):
        return side.label
    return f"{side.backend.uri} collection {side.name!r}"


def _identity(side: Side) -> dict[str, str]:
    if isinstance(side, ExportReader):
        return {"export": str(side.directory.resolve())}
    return {"uri": side.backend.uri.render(), "collection": side.name}


def _persistent(side: Side) -> bool:
    return isinstance(side, ExportReader) or side.backend.persistent


def _doc_bytes(doc: Document) -> int:
    meta = len(json.dumps(doc.metadata, ensure_ascii=False).encode())
    return doc.vectors.nbytes + meta + len((doc.text or "").encode()) + len(str(doc.id))


Batch = tuple[list[Document], "npt.NDArray[np.float32] | None"]


def _byte_sized_batches(
    side: Side, start_after: DocId | None, batch_bytes: int, *, fdes: bool = False
) -> Iterator[Batch]:
    """Documents after ``start_after`` in key order, in batches of about ``batch_bytes``.

    Each batch comes with its FDEs when ``fdes`` is set (see ``iter_with_fdes``), else None.
    """
    if batch_bytes < 1:
        raise InvalidInputError("batch_bytes must be positive")

    def read(size: int, after: DocId | None) -> Iterator[Batch]:
        if fdes:
            return side.iter_with_fdes(size, start_after=after)
        return ((docs, None) for docs in side.iter_documents(size, start_after=after))

    probe, probe_fdes = next(read(_PROBE_DOCS, start_after), ([], None))
    if not probe:
        return
    yield probe, probe_fdes
    per_doc = max(1, sum(map(_doc_bytes, probe)) // len(probe))
    size = max(1, min(_MAX_BATCH_DOCS, batch_bytes // per_doc))
    yield from read(size, probe[-1].id)


def _prefetch(items: Iterator[T], depth: int, stop: threading.Event) -> Iterator[T]:
    """Run ``items`` in a thread, ``depth`` items ahead, so reading overlaps the consumer.

    The source's own I/O and decoding mostly release the GIL, so on two cores this overlaps
    reading one side with hashing or writing the other.
    """
    box: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
                del item  # the consumer owns it now; do not keep it alive during the next read
            put(("end", None))
        except BaseException as exc:
            put(("error", exc))

    thread = threading.Thread(target=run, name="multivec-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = box.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join()


# --- the ledger -----------------------------------------------------------------------------


def default_ledger_dir() -> Path:
    """Where migration ledgers live: ``$XDG_STATE_HOME/multivec/migrations``.

    Falls back to ``~/.local/state/multivec/migrations`` when ``XDG_STATE_HOME`` is unset.
    """
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(base) / "multivec" / "migrations"


@dataclass
class _LedgerState:
    cursor: DocId | None = None
    documents: int = 0
    vectors: int = 0
    bytes: int = 0
    complete: bool = False
    runs: int = 0
    source_documents: int | None = None
    # Whether the target was empty when the migration began (batches may be appended), and the
    # highest key handed to a writer: nothing after it can be in the target.
    append: bool = False
    dispatched: str | None = None


class _Ledger:
    """The progress record of one migration (see the module docstring).

    ``directory=None`` keeps it in memory only: a ``memory://`` side does not outlive the
    process, so there is nothing to resume.
    """

    def __init__(self, directory: Path | None, source: Side, target: URI, name: str) -> None:
        self.identity = {
            "source": _identity(source),
            "target": {"uri": target.render(), "collection": name},
        }
        self.key = hashlib.sha256(canonical_json(self.identity).encode()).hexdigest()
        self.path = None if directory is None else directory / f"{self.key}.json"

    def load(self) -> _LedgerState | None:
        if self.path is None or not self.path.is_file():
            return None
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"the migration ledger {self.path} cannot be read ({exc}); delete it to start "
                "the migration again from the beginning (upserts make that safe)"
            ) from exc
        if raw.get("ledger_version") != LEDGER_VERSION or raw.get("identity") != self.identity:
            raise ConfigurationError(
                f"{self.path} is not a ledger of this migration (version "
                f"{raw.get('ledger_version')}); delete it to start again"
            )
        cursor = raw["cursor"]
        return _LedgerState(
            cursor=None if cursor is None else key_to_id(cursor),
            documents=raw["documents"],
            vectors=raw["vectors"],
            bytes=raw["bytes"],
            complete=raw["complete"],
            runs=raw["runs"],
            source_documents=raw.get("source_documents"),
            append=raw.get("append", False),
            dispatched=raw.get("dispatched"),
        )

    def save(self, state: _LedgerState) -> None:
        if self.path is None:
            return
        record = {
            "ledger_version": LEDGER_VERSION,
            "identity": self.identity,
            # The cursor is stored as the typed key ("s:..." / "i:..."), so an id keeps its type.
            "cursor": None if state.cursor is None else id_to_key(state.cursor),
            "documents": state.documents,
            "vectors": state.vectors,
            "bytes": state.bytes,
            "complete": state.complete,
            "runs": state.runs,
            "source_documents": state.source_documents,
            "append": state.append,
            "dispatched": state.dispatched,
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write(self.path, (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode())

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold an exclusive lock on the ledger; a second run of the same migration is refused."""
        if self.path is None:
            yield
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # no advisory locks on this platform: run unguarded
            yield
            return
        lock_path = self.path.with_suffix(".lock")
        with lock_path.open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                raise ConfigurationError(
                    f"another run of this migration holds {lock_path}; wait for it to finish"
                ) from exc
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


# --- the target and its FDE configuration ---------------------------------------------------


def _with_final_dim(config: FDEConfig, final_dim: int) -> FDEConfig:
    fields = {name: getattr(config, name) for name in type(config).model_fields}
    return FDEConfig(**{**fields, "final_dim": final_dim})


def _target_info(
    source: CollectionInfo,
    fde: FDEConfig | str | None,
    dtype: StorageDtype | None,
    limit: int | None,
) -> tuple[CollectionInfo, str]:
    """The configuration a new target gets, and why its FDE is what it is."""
    if isinstance(fde, str):
        fde = FDEConfig.preset(fde, dim=source.dim)
    reason = "the target uses the source's FDE configuration"
    if fde is None:
        fde = source.fde
        if limit is not None and fde.fde_dim > limit:
            fde = _with_final_dim(fde, limit)
            reason = (
                f"the source's {source.fde_dim}-d FDE is over the target's limit of {limit} "
                f"dimensions, so FDEs are recomputed with final_dim={limit}"
            )
    elif fde != source.fde:
        reason = "a different FDE configuration was requested for the target"
    info = CollectionInfo(
        dim=source.dim, dtype=dtype or source.dtype, fde=fde, encoder=source.encoder
    )
    return info, reason


def _lossy_dtype(source: StorageDtype, target: StorageDtype) -> bool:
    return np.dtype(target).itemsize < np.dtype(source).itemsize


def _open_target(
    source: CollectionInfo,
    uri: URI,
    name: str,
    fde: FDEConfig | str | None,
    dtype: StorageDtype | None,
) -> tuple[Collection, str]:
    """Open or create the target; refuse configurations that cannot hold the source exactly."""
    try:
        target = connect(uri, name, fde=fde, dtype=dtype)
    except CollectionNotFoundError:
        limit = get_backend(uri.scheme).max_vector_dim
        info, reason = _target_info(source, fde, dtype, limit)
        if _lossy_dtype(source.dtype, info.dtype):
            raise ConfigurationError(
                f"the source stores {source.dtype} tokens; a {info.dtype} target would round "
                f"them. Migrate into a {source.dtype} (or wider) target"
            ) from None
        target = connect(
            uri, name, dim=info.dim, fde=info.fde, dtype=info.dtype, encoder=info.encoder
        )
        return target, reason
    if target.info.dim != source.dim:
        target.close()
        raise ConfigMismatchError(
            f"the target {uri} collection {name!r} exists with token dimension "
            f"{target.info.dim}; the source has {source.dim}"
        )
    if _lossy_dtype(source.dtype, target.info.dtype):
        target.close()
        raise ConfigMismatchError(
            f"the target {uri} collection {name!r} stores {target.info.dtype} tokens and the "
            f"source {source.dtype}: values would be rounded. Use another target collection"
        )
    return target, _existing_reason(source, target.info)


def _fde_action(source: CollectionInfo, target: CollectionInfo) -> Literal["copied", "recomputed"]:
    # FDEs are a deterministic function of the stored tokens and the configuration, so the
    # same configuration reproduces the source's FDEs bit for bit: a copy.
    return "copied" if source.fde == target.fde else "recomputed"


# --- reports --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DocumentDifference:
    """A document present on both sides whose checksums differ.

    Attributes:
        id: The document id.
        fields: What differs, among ``"tokens"`` (count, dimension or values), ``"metadata"``
            and ``"text"``.
        max_abs_diff: The largest difference between token values, when both matrices have the
            same shape and differ; ``None`` otherwise.
        detail: A readable account, e.g. the two token counts.
    """

    id: DocId
    fields: tuple[str, ...]
    max_abs_diff: float | None
    detail: str


@dataclass(frozen=True)
class SearchCheck:
    """The same queries run on both sides, top-k compared.

    Attributes:
        queries: How many queries ran (prefixes of seeded sample documents' token matrices).
        k: Hits compared per query.
        candidates: First-stage candidates per search.
        mean_overlap: Mean over queries of ``|top-k(source) ∩ top-k(target)| / k``.
        min_overlap: The worst query's overlap.
        max_score_diff: The largest difference between the scores at equal ranks.
        disagreements: Queries whose top-k differ beyond ties at the cut-off or whose scores
            differ beyond float32 rounding.
        exact_sides: The sides scored by exact brute force (export directories) rather than by
            their search.
    """

    queries: int
    k: int
    candidates: int
    mean_overlap: float
    min_overlap: float
    max_score_diff: float
    disagreements: int
    exact_sides: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether every query agreed."""
        return self.disagreements == 0


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify` found.

    ``missing`` are on the source and not on the target, ``extra`` the reverse; the lists hold
    at most the first 100 ids, the ``*_count`` fields the totals. ``duplicates`` counts ids a
    side returned more than once, or rows its ``count()`` reports beyond the ids it iterates.
    """

    source: str
    target: str
    source_documents: int
    target_documents: int
    identical: int
    missing_count: int
    extra_count: int
    different_count: int
    duplicates: int
    missing: tuple[DocId, ...]
    extra: tuple[DocId, ...]
    different: tuple[DocumentDifference, ...]
    max_abs_diff: float
    search: SearchCheck | None
    seconds: float
    fde_max_abs_diff: float | None = None

    @property
    def data_ok(self) -> bool:
        """No missing, extra, duplicated or different document."""
        return not (
            self.missing_count or self.extra_count or self.different_count or self.duplicates
        )

    @property
    def ok(self) -> bool:
        """The data agree and so do the searches."""
        return self.data_ok and (self.search is None or self.search.ok)

    @property
    def exit_code(self) -> int:
        """0 when all agree, 1 when documents differ, 3 when only the searches differ."""
        if not self.data_ok:
            return 1
        return 0 if self.ok else 3

    def summary(self) -> str:
        """A readable account, a few lines long."""
        lines = [
            f"verify {self.source} -> {self.target}",
            f"  documents: {self.source_documents} source, {self.target_documents} target, "
            f"{self.identical} identical; missing {self.missing_count}, extra "
            f"{self.extra_count}, different {self.different_count}, duplicated {self.duplicates}",
        ]
        if self.missing:
            lines.append(f"  missing (first {len(self.missing)}): {list(self.missing)}")
        if self.extra:
            lines.append(f"  extra (first {len(self.extra)}): {list(self.extra)}")
        for diff in self.different[:20]:
            lines.append(f"  different {diff.id!r}: {', '.join(diff.fields)}; {diff.detail}")
        if self.different_count:
            lines.append(f"  largest token value difference: {self.max_abs_diff:.6g}")
        if self.fde_max_abs_diff is not None:
            lines.append(
                f"  exported FDEs against a fresh encoding: max difference "
                f"{self.fde_max_abs_diff:.3g}"
            )
        if self.search is not None:
            s = self.search
            exact = f" (exact scoring on {', '.join(s.exact_sides)})" if s.exact_sides else ""
            lines.append(
                f"  search: {s.queries} queries, top-{s.k} of {s.candidates} candidates{exact}: "
                f"overlap@{s.k} mean {s.mean_overlap:.3f} min {s.min_overlap:.3f}, max score "
                f"difference {s.max_score_diff:.3g}, {s.disagreements} disagreeing"
            )
        verdict = {
            0: "OK: every document and every query agree",
            1: "DIFFERENT: documents are missing, extra, duplicated or changed (data loss)",
            3: "INDEX DRIFT: the documents are identical but searches differ; the indexes "
            "return other candidates (raise --candidates or optimize the collections)",
        }[self.exit_code]
        lines.append(f"  {verdict} ({self.seconds:.1f} s)")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, with the derived flags."""
        return {
            **dataclasses.asdict(self),
            "data_ok": self.data_ok,
            "ok": self.ok,
            "exit_code": self.exit_code,
        }


@dataclass(frozen=True)
class MigrationReport:
    """What :func:`migrate` (or :func:`import_collection`) did.

    Attributes:
        source: The source, secrets masked.
        target: The target, secrets masked.
        fde: ``"copied"`` when the target has the source's FDE configuration (its FDEs are
            bit-identical to the source's), ``"recomputed"`` otherwise.
        fde_reason: Why.
        documents: Documents written by this run.
        vectors: Token vectors written by this run.
        bytes: Token, metadata and text bytes written by this run.
        seconds: Time spent copying (without optimize and verification).
        total_documents: Documents acknowledged over all runs of this migration.
        resumed_after: The id this run resumed after, or ``None`` for a run from the start.
        already_complete: The ledger said the migration had finished and nothing new was
            found after its cursor: nothing was written.
        ledger: The ledger file, or ``None`` when a side does not outlive the process.
        notes: Anything the user should know (a restart, a source that changed).
        optimize_seconds: Time spent in the target's ``optimize()``.
        verification: The verification report, unless turned off.
    """

    source: str
    target: str
    fde: Literal["copied", "recomputed"]
    fde_reason: str
    documents: int
    vectors: int
    bytes: int
    seconds: float
    total_documents: int
    resumed_after: DocId | None
    already_complete: bool
    ledger: str | None
    notes: tuple[str, ...] = ()
    optimize_seconds: float = 0.0
    verification: VerifyReport | None = None

    @property
    def documents_per_second(self) -> float:
        """Copy rate of this run."""
        return self.documents / self.seconds if self.seconds > 0 else 0.0

    @property
    def bytes_per_second(self) -> float:
        """Copy rate of this run, in bytes."""
        return self.bytes / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        """Verification passed (or was not asked for)."""
        return self.verification is None or self.verification.ok

    @property
    def exit_code(self) -> int:
        """The verification's exit code, or 0 without one."""
        return 0 if self.verification is None else self.verification.exit_code

    def summary(self) -> str:
        """A readable account, a few lines long."""
        if self.already_complete:
            done = "already complete: nothing written"
        else:
            resumed = (
                f", resumed after id {self.resumed_after!r}"
                if self.resumed_after is not None
                else ""
            )
            done = (
                f"{self.documents} documents, {self.vectors} vectors, "
                f"{self.bytes / 2**20:.1f} MiB in {self.seconds:.1f} s "
                f"({self.documents_per_second:.0f} docs/s, "
                f"{self.bytes_per_second / 2**20:.1f} MiB/s){resumed}"
            )
        lines = [
            f"migrate {self.source} -> {self.target}",
            f"  {done}; {self.total_documents} documents in all",
            f"  FDEs {self.fde}: {self.fde_reason}",
            f"  ledger: {self.ledger or 'in memory only (a side does not outlive the process)'}",
        ]
        lines += [f"  note: {note}" for note in self.notes]
        if self.optimize_seconds:
            lines.append(f"  optimize: {self.optimize_seconds:.1f} s")
        if self.verification is not None:
            lines.append(self.verification.summary())
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, with the derived rates."""
        out = dataclasses.asdict(self)
        out["verification"] = None if self.verification is None else self.verification.as_dict()
        out["documents_per_second"] = self.documents_per_second
        out["bytes_per_second"] = self.bytes_per_second
        out["ok"] = self.ok
        return out


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_collection` wrote."""

    source: str
    directory: str
    documents: int
    vectors: int
    bytes: int
    parts: int
    seconds: float

    @property
    def documents_per_second(self) -> float:
        """Export rate."""
        return self.documents / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """A readable account."""
        return (
            f"export {self.source} -> {self.directory}\n"
            f"  {self.documents} documents, {self.vectors} vectors, {self.parts} parts, "
            f"{self.bytes / 2**20:.1f} MiB in {self.seconds:.1f} s "
            f"({self.documents_per_second:.0f} docs/s)"
        )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {**dataclasses.asdict(self), "documents_per_second": self.documents_per_second}


@dataclass(frozen=True)
class PlanProblem:
    """Something that cannot be carried over exactly, found before anything is written."""

    what: str
    fix: str
    ids: tuple[DocId, ...] = ()


@dataclass(frozen=True)
class MigrationPlan:
    """What :func:`plan_migration` (the dry run) found; nothing was written.

    The per-document figures come from the first ``sampled`` documents in key order (all of
    them with ``sample=None``); counts, configurations and limits are exact.
    """

    source: str
    target: str
    documents: int
    sampled: int
    id_types: dict[str, int]
    first_id: DocId | None
    last_sampled_id: DocId | None
    metadata_fields: dict[str, dict[str, int]]
    texts: int
    tokens_per_document: dict[str, float]
    bytes_per_document: dict[str, float]
    source_configuration: dict[str, Any]
    target_configuration: dict[str, Any]
    target_exists: bool
    target_documents: int
    target_limits: dict[str, Any]
    fde: Literal["copied", "recomputed"]
    fde_reason: str
    estimated_bytes: int
    estimated_read_encode_seconds: float
    resume: dict[str, Any] | None
    problems: tuple[PlanProblem, ...]
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Nothing blocks an exact migration."""
        return not self.problems

    def summary(self) -> str:
        """A readable account of the mapping, the estimate and any problem."""
        s = self
        fields = ", ".join(
            f"{name} ({'/'.join(sorted(kinds))}, {sum(kinds.values())} docs)"
            for name, kinds in sorted(s.metadata_fields.items())
        )
        tgt, src = s.target_configuration, s.source_configuration
        state = (
            f"exists with {s.target_documents} documents" if s.target_exists else "will be created"
        )
        lines = [
            f"dry run {s.source} -> {s.target} (nothing written)",
            f"  documents: {s.documents}; sampled the first {s.sampled} in key order",
            f"  ids: {s.id_types.get('int', 0)} int, {s.id_types.get('str', 0)} str in the "
            f"sample (first {s.first_id!r}, last sampled {s.last_sampled_id!r}); kept as given",
            f"  metadata fields: {fields or 'none'}; texts on {s.texts} sampled documents",
            f"  tokens per document: min {s.tokens_per_document['min']:.0f}, mean "
            f"{s.tokens_per_document['mean']:.1f}, max {s.tokens_per_document['max']:.0f}; "
            f"dim {src['dim']} {src['dtype']} -> dim {tgt['dim']} {tgt['dtype']}",
            f"  FDE: {src['fde_dim']}-d -> {tgt['fde_dim']}-d, {s.fde}: {s.fde_reason}",
            f"  target: {state}; "
            f"limits: max vector dim {s.target_limits['max_vector_dim']}, max request bytes "
            f"{s.target_limits['max_request_bytes']}, persistent {s.target_limits['persistent']}",
            f"  estimate: {s.estimated_bytes / 2**20:.1f} MiB of tokens, metadata and text; "
            f"reading and FDE encoding alone take about {s.estimated_read_encode_seconds:.0f} s "
            "(the target's write time comes on top)",
        ]
        if s.resume:
            lines.append(
                f"  a ledger exists: {s.resume['documents']} documents acknowledged, "
                f"resume after id {s.resume['cursor']!r}"
                + (" (complete)" if s.resume["complete"] else "")
            )
        lines += [f"  warning: {w}" for w in s.warnings]
        for p in s.problems:
            ids = f" (ids {list(p.ids)})" if p.ids else ""
            lines.append(f"  PROBLEM: {p.what}{ids}\n    what to do: {p.fix}")
        lines.append("  OK: nothing blocks an exact migration" if s.ok else "  NOT OK")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {**dataclasses.asdict(self), "ok": self.ok}


# --- migrate ----------------------------------------------------------------------------------


@dataclass
class _Done:
    """What one acknowledged batch carried: enough to advance the ledger, no vectors."""

    last_id: DocId
    documents: int
    vectors: int
    bytes: int


def _pipeline(
    batches: Iterator[Batch],
    write: Callable[[Batch], None],
    workers: int,
    commit: Callable[[_Done], None],
) -> None:
    """Read in one thread, write in ``workers`` threads, commit in order in this one.

    A batch is committed only once it and every batch before it are acknowledged, so the
    ledger never gets ahead of the target, whatever order the writers finish in. At most
    ``2 * workers + 1`` batches are alive at once (one being read, one queued and one being
    written per writer).
    """
    stop = threading.Event()
    # One batch waiting per writer: enough to keep writers busy, and each batch held costs
    # memory (tokens as read, their float32 copy for the FDE, the engine's request buffers).
    todo: queue.Queue[tuple[int, Batch] | None] = queue.Queue(maxsize=workers)
    done: queue.Queue[tuple[str, int, Any]] = queue.Queue()

    def read() -> None:
        n = 0
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        todo.put((n, batch), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
                n += 1
                # Drop this reference before reading the next batch: it belongs to a writer now.
                del batch
            done.put(("end", n, None))
        except BaseException as exc:
            done.put(("error", n, exc))
        finally:
            for _ in range(workers):
                with contextlib.suppress(queue.Full):
                    todo.put(None, timeout=1.0)

    def run_writer() -> None:
        while not stop.is_set():
            try:
                item = todo.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is None:
                return
            seq, batch = item
            del item
            try:
                write(batch)
            except BaseException as exc:
                done.put(("error", seq, exc))
                return
            docs = batch[0]
            summary = _Done(
                docs[-1].id,
                len(docs),
                sum(d.vectors.shape[0] for d in docs),
                sum(map(_doc_bytes, docs)),
            )
            del docs
            # Free the documents before waiting for the next batch, not after.
            del batch
            done.put(("done", seq, summary))

    threads = [threading.Thread(target=read, name="multivec-read", daemon=True)]
    threads += [
        threading.Thread(target=run_writer, name=f"multivec-write-{i}", daemon=True)
        for i in range(workers)
    ]
    for thread in threads:
        thread.start()
    finished: dict[int, _Done] = {}
    next_seq, total = 0, None
    try:
        while total is None or next_seq < total:
            kind, seq, value = done.get()
            if kind == "error":
                raise value
            if kind == "end":
                total = seq
                continue
            finished[seq] = value
            while next_seq in finished:
                commit(finished.pop(next_seq))
                next_seq += 1
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def _copy(
    source: Side,
    target: Collection,
    ledger: _Ledger,
    *,
    batch_bytes: int,
    workers: int,
    progress: ProgressCallback | None,
) -> tuple[_LedgerState, _LedgerState, list[str]]:
    """Copy what the ledger says is left; returns the state before, after, and notes."""
    notes: list[str] = []
    source_count = source.count()
    state = ledger.load() or _LedgerState()
    # Upserts only add or replace, so a target holding fewer documents than the ledger counts
    # lost some since (dropped, recreated, or writes that were acknowledged but not kept).
    held = target.count()
    if state.documents > held:
        notes.append(
            f"the ledger counted {state.documents} documents acknowledged but the target holds "
            f"{held} (dropped or recreated since?): started again from the beginning"
        )
        state = _LedgerState()
    if state.runs == 0:
        state.append = held == 0
    # Keys up to this one may be in the target already (see the module docstring).
    landed = state.dispatched
    saving = threading.Lock()
    before = dataclasses.replace(state)
    # A finished migration still reads past its cursor (one small page when nothing is new),
    # so documents added to the source since, with ids after it, are copied too.
    if state.source_documents is not None and state.source_documents != source_count:
        notes.append(
            f"the source held {state.source_documents} documents when this migration started "
            f"and holds {source_count} now; documents added before the resume point are not "
            "copied (verification reports them as missing)"
        )
    state.runs += 1
    state.source_documents = source_count
    ledger.save(state)

    def write(batch: Batch) -> None:
        docs, fdes = batch
        if fdes is not None and not np.array_equal(
            fdes[:1], encoder.encode_documents([docs[0].vectors.astype(np.float32)])
        ):
            # The stored FDEs do not follow from the stored tokens (written by another tool, or
            # under another configuration): encode this batch's again rather than copy them.
            mismatched.append(docs[0].id)
            fdes = None
        new = state.append and (landed is None or id_to_key(docs[0].id) > landed)
        if state.append:
            last = id_to_key(docs[-1].id)
            with saving:
                if state.dispatched is None or last > state.dispatched:
                    state.dispatched = last
                    ledger.save(state)
        try:
            target._write(
                [d.id for d in docs],
                [d.vectors for d in docs],
                [d.metadata for d in docs],
                [d.text for d in docs],
                fdes,
                new=new,
            )
        except InvalidInputError as exc:
            # The collection speaks of this batch only; say what holds for the migration.
            raise InvalidInputError(
                f"the target refused a document of the batch {docs[0].id!r}..{docs[-1].id!r}: "
                f"{exc} in that batch. Earlier batches stay written and recorded in the ledger: "
                "fix the document in the source and run the same migration again to resume "
                "(plan_migration, the dry run, lists such documents beforehand)"
            ) from exc

    def commit(batch: _Done) -> None:
        with saving:
            state.cursor = batch.last_id
            state.documents += batch.documents
            state.vectors += batch.vectors
            state.bytes += batch.bytes
            ledger.save(state)
        if progress is not None:
            progress(state.documents, source_count)

    if progress is not None:
        progress(state.documents, source_count)
    # Same configuration: the source's FDEs are the target's, so they are read and copied (one
    # document per batch encoded again to check it) instead of encoded.
    copy_fdes = _fde_action(source.info, target.info) == "copied"
    encoder = FDEEncoder(target.info.fde)
    mismatched: list[DocId] = []
    batches = _byte_sized_batches(source, state.cursor, batch_bytes, fdes=copy_fdes)
    _pipeline(batches, write, workers, commit)
    if mismatched:
        notes.append(
            f"{len(mismatched)} batches had stored FDEs that differ from an encoding of their "
            f"tokens (first: document {mismatched[0]!r}); their FDEs were encoded again"
        )
    state.complete = True
    ledger.save(state)
    return before, state, notes


def _run_migration(
    source: Side,
    target_uri: str | URI,
    target_collection: str,
    *,
    fde: FDEConfig | str | None,
    dtype: StorageDtype | None,
    batch_bytes: int,
    workers: int,
    ledger_dir: str | os.PathLike[str] | None,
    verify_after: bool,
    optimize: bool,
    queries: int,
    k: int,
    candidates: int,
    progress: ProgressCallback | None,
) -> MigrationReport:
    if workers < 1:
        raise InvalidInputError("workers must be at least 1")
    uri = URI.parse(target_uri)
    if _same_collection(source, uri, target_collection):
        raise ConfigurationError("the source and the target are the same collection")
    persistent = _persistent(source) and get_backend(uri.scheme).persistent
    directory = Path(ledger_dir) if ledger_dir is not None else default_ledger_dir()
    ledger = _Ledger(directory if persistent else None, source, uri, target_collection)
    with ledger.locked():
        target, reason = _open_target(source.info, uri, target_collection, fde, dtype)
        try:
            return _finish_migration(
                source,
                target,
                ledger,
                reason,
                batch_bytes=batch_bytes,
                workers=workers,
                verify_after=verify_after,
                optimize=optimize,
                queries=queries,
                k=k,
                candidates=candidates,
                progress=progress,
            )
        finally:
            target.close()


def _finish_migration(
    source: Side,
    target: Collection,
    ledger: _Ledger,
    reason: str,
    *,
    batch_bytes: int,
    workers: int,
    verify_after: bool,
    optimize: bool,
    queries: int,
    k: int,
    candidates: int,
    progress: ProgressCallback | None,
) -> MigrationReport:
    """Copy, optimize and verify, with the ledger held and the target open."""
    t0 = time.perf_counter()
    before, after, notes = _copy(
        source, target, ledger, batch_bytes=batch_bytes, workers=workers, progress=progress
    )
    seconds = time.perf_counter() - t0
    written = after.documents - before.documents
    optimize_seconds = 0.0
    if optimize and written:
        t1 = time.perf_counter()
        target.optimize()
        optimize_seconds = time.perf_counter() - t1
    report = None
    if verify_after:
        report = _verify_sides(
            source,
            target,
            queries=queries,
            k=k,
            candidates=candidates,
            query_tokens=32,
            seed=0,
            batch_bytes=batch_bytes,
            progress=None,
        )
    return MigrationReport(
        source=_label(source),
        target=_label(target),
        fde=_fde_action(source.info, target.info),
        fde_reason=reason,
        documents=written,
        vectors=after.vectors - before.vectors,
        bytes=after.bytes - before.bytes,
        seconds=seconds,
        total_documents=after.documents,
        resumed_after=before.cursor,
        already_complete=before.complete and not written,
        ledger=None if ledger.path is None else str(ledger.path),
        notes=tuple(notes),
        optimize_seconds=optimize_seconds,
        verification=report,
    )


def migrate(
    source: str | URI,
    target: str | URI,
    *,
    collection: str = "default",
    target_collection: str | None = None,
    fde: FDEConfig | str | None = None,
    dtype: StorageDtype | None = None,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    workers: int = 2,
    ledger_dir: str | os.PathLike[str] | None = None,
    verify: bool = True,
    optimize: bool = True,
    queries: int = 20,
    k: int = 10,
    candidates: int = 200,
    progress: ProgressCallback | None = None,
) -> MigrationReport:
    """Copy every document of a collection to another backend, resumably and exactly once.

    The target collection is created with the source's configuration (dimension, precision,
    FDE configuration, encoder id), so its FDEs are the source's bit for bit ("copied"). They
    are recomputed from the token vectors under another configuration when ``fde`` asks for
    one, when the target already exists with another, or when the source's FDE is longer than
    the target's ``max_vector_dim`` (then ``final_dim`` is set to that limit). The report says
    which happened.

    Run it again after a crash or a kill to continue where it stopped (see the module
    docstring for the ledger); running a finished migration again writes nothing.

    Args:
        source: The source URI.
        target: The target URI.
        collection: The source collection.
        target_collection: The target collection; the source's name by default.
        fde: An FDE configuration or preset name for a new target; ``None`` keeps the source's.
        dtype: Token precision of a new target; ``None`` keeps the source's. Narrowing
            (float32 to float16) is refused: it would change the values.
        batch_bytes: Bytes of documents read and written per batch; bounds memory together
            with ``workers``.
        workers: Concurrent writer threads, beside the reader thread. Two (the default)
            copied LanceDB to LanceDB 1.3 times faster than one on a 2-core machine; more
            suit servers. Embedded engines may serialise writes anyway.
        ledger_dir: Where the ledger lives; default :func:`default_ledger_dir`.
        verify: Run :func:`verify` at the end (the report is in ``verification``).
        optimize: Call the target's ``optimize()`` after writing (compaction, index build).
        queries: Queries of the verification's search check (0 skips it).
        k: Hits compared per query.
        candidates: First-stage candidates per verification query.
        progress: Called as ``progress(done, total)`` after each acknowledged batch.

    Returns:
        What was copied, how fast, whether FDEs were copied or recomputed, and the verification.

    Raises:
        CollectionNotFoundError: The source collection does not exist.
        ConfigMismatchError: The target exists with a configuration that cannot hold the source
            exactly (another dimension, a narrower precision, another requested FDE).
        ConfigurationError: Source and target are the same, or another run holds the ledger.
        InvalidInputError: The target refuses a document (one of its limits, see
            :func:`plan_migration`); earlier batches stay written, so running the same
            migration again after fixing the document resumes.
        BackendError: A database failed; what was acknowledged stays in the ledger, so running
            the same migration again resumes.
    """
    src = _open_side(source, collection)
    try:
        return _run_migration(
            src,
            target,
            target_collection or src.name,
            fde=fde,
            dtype=dtype,
            batch_bytes=batch_bytes,
            workers=workers,
            ledger_dir=ledger_dir,
            verify_after=verify,
            optimize=optimize,
            queries=queries,
            k=k,
            candidates=candidates,
            progress=progress,
        )
    finally:
        src.close()


def import_collection(
    directory: str | os.PathLike[str],
    target: str | URI,
    *,
    collection: str | None = None,
    fde: FDEConfig | str | None = None,
    dtype: StorageDtype | None = None,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    workers: int = 2,
    ledger_dir: str | os.PathLike[str] | None = None,
    verify: bool = True,
    optimize: bool = True,
    queries: int = 20,
    k: int = 10,
    candidates: int = 200,
    progress: ProgressCallback | None = None,
) -> MigrationReport:
    """Load an export directory into a collection: a migration whose source is the export.

    Every part's SHA-256 is checked before it is read. ``collection`` defaults to the name of
    the exported collection; the other arguments are those of :func:`migrate`, and an import
    resumes the same way.
    """
    reader = ExportReader(directory)
    return _run_migration(
        reader,
        target,
        collection or reader.name,
        fde=fde,
        dtype=dtype,
        batch_bytes=batch_bytes,
        workers=workers,
        ledger_dir=ledger_dir,
        verify_after=verify,
        optimize=optimize,
        queries=queries,
        k=k,
        candidates=candidates,
        progress=progress,
    )


def export_collection(
    source: str | URI,
    directory: str | os.PathLike[str],
    *,
    collection: str = "default",
    part_bytes: int = DEFAULT_PART_BYTES,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    progress: ProgressCallback | None = None,
) -> ExportReport:
    """Write a collection to a self-describing export directory (see :mod:`multivec._export`).

    Args:
        source: The collection's URI.
        directory: A new or empty directory.
        collection: The collection's name.
        part_bytes: Start a new Parquet part after about this many bytes.
        batch_bytes: Bytes per read batch (one row group each).
        progress: Called as ``progress(done, total)`` after each batch.

    Returns:
        Counts, bytes written and time.

    Raises:
        MissingDependencyError: pyarrow is missing (``pip install "multivec[lancedb]"``).
        InvalidInputError: ``directory`` is not empty.
    """
    col = connect(source, collection)
    t0 = time.perf_counter()
    writer = ExportWriter(
        Path(directory),
        col.info,
        source=str(col.backend.uri),
        collection=col.name,
        part_bytes=part_bytes,
    )
    total, done = col.count(), 0
    stop = threading.Event()
    try:
        for docs, fdes in _prefetch(
            _byte_sized_batches(col, None, batch_bytes, fdes=True), 2, stop
        ):
            assert fdes is not None  # asked for
            writer.write(docs, fdes)
            done += len(docs)
            if progress is not None:
                progress(done, total)
        manifest = writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        col.close()
    return ExportReport(
        source=f"{col.backend.uri} collection {col.name!r}",
        directory=str(directory),
        documents=manifest["documents"],
        vectors=manifest["vectors"],
        bytes=manifest["bytes"],
        parts=len(manifest["parts"]),
        seconds=time.perf_counter() - t0,
    )


# --- verify ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Digest:
    n_tokens: int
    dim: int
    tokens: bytes
    metadata: bytes
    text: bytes


def _digest(doc: Document, dtype: np.dtype[Any]) -> _Digest:
    tokens = np.ascontiguousarray(doc.vectors, dtype=dtype)
    text = b"\0" if doc.text is None else b"\1" + doc.text.encode("utf-8")
    return _Digest(
        int(tokens.shape[0]),
        int(tokens.shape[1]),
        hashlib.sha256(tokens.data).digest(),
        hashlib.sha256(canonical_json(doc.metadata).encode("utf-8")).digest(),
        hashlib.sha256(text).digest(),
    )


def _difference(
    doc_id: DocId, a: tuple[_Digest, Document], b: tuple[_Digest, Document]
) -> DocumentDifference:
    (da, doc_a), (db, doc_b) = a, b
    fields, details = [], []
    max_diff = None
    if (da.n_tokens, da.dim, da.tokens) != (db.n_tokens, db.dim, db.tokens):
        fields.append("tokens")
        if (da.n_tokens, da.dim) != (db.n_tokens, db.dim):
            details.append(f"shape {da.n_tokens}x{da.dim} vs {db.n_tokens}x{db.dim}")
        else:
            diff = np.abs(doc_a.vectors.astype(np.float64) - doc_b.vectors.astype(np.float64))
            max_diff = float(diff.max())
            details.append(f"{int((diff > 0).sum())} token values differ, by up to {max_diff:.6g}")
    if da.metadata != db.metadata:
        fields.append("metadata")
        keys = sorted(
            k
            for k in set(doc_a.metadata) | set(doc_b.metadata)
            if canonical_json(doc_a.metadata.get(k)) != canonical_json(doc_b.metadata.get(k))
            or (k in doc_a.metadata) != (k in doc_b.metadata)
        )
        details.append(f"metadata keys {keys}")
    if da.text != db.text:
        fields.append("text")
        details.append("text differs")
    return DocumentDifference(doc_id, tuple(fields), max_diff, "; ".join(details))


class _Sampler:
    """A seeded reservoir sample of documents' leading tokens, to use as queries."""

    def __init__(self, n: int, query_tokens: int, seed: int) -> None:
        self.n, self.query_tokens = n, query_tokens
        self.rng = np.random.default_rng(seed)
        self.seen = 0
        self.queries: list[npt.NDArray[np.float32]] = []

    def offer(self, doc: Document) -> None:
        if self.n <= 0:
            return
        query = np.array(doc.vectors[: self.query_tokens], dtype=np.float32)
        if len(self.queries) < self.n:
            self.queries.append(query)
        else:
            j = int(self.rng.integers(0, self.seen + 1))
            if j < self.n:
                self.queries[j] = query
        self.seen += 1


def _hashed(
    side: Side, dtype: np.dtype[Any], batch_bytes: int
) -> Iterator[list[tuple[str, _Digest, Document]]]:
    for docs, _ in _byte_sized_batches(side, None, batch_bytes):
        yield [(id_to_key(d.id), _digest(d, dtype), d) for d in docs]


def _compare_documents(
    a: Side,
    b: Side,
    *,
    sampler: _Sampler,
    batch_bytes: int,
    progress: ProgressCallback | None,
) -> dict[str, Any]:
    """Merge both sides' key-ordered streams and compare digests.

    Both sides iterate in key order, so a document waits in ``pending`` only until the other
    side reaches its key: memory stays about one batch per side.
    """
    wide = "float32" if a.info.dtype != b.info.dtype else a.info.dtype
    dtype = np.dtype(wide).newbyteorder("<")
    pending: tuple[dict[str, tuple[_Digest, Document]], ...] = ({}, {})
    streams = []
    stops = (threading.Event(), threading.Event())
    for side, stop in zip((a, b), stops, strict=True):
        streams.append(_prefetch(_hashed(side, dtype, batch_bytes), 1, stop))
    last: list[str | None] = [None, None]
    ended = [False, False]
    iterated = [0, 0]
    duplicates = identical = 0
    different: list[DocumentDifference] = []
    different_count = 0
    max_abs = 0.0
    total = a.count()
    try:
        while not all(ended):
            if ended[0] or ended[1]:
                i = 1 if ended[0] else 0
            elif last[0] is None or last[1] is None:
                i = 0 if last[0] is None else 1
            else:
                i = 0 if last[0] <= last[1] else 1
            batch = next(streams[i], None)
            if batch is None:
                ended[i] = True
                continue
            mine, theirs = pending[i], pending[1 - i]
            for key, digest, doc in batch:
                previous = last[i]
                if previous is not None and key <= previous:
                    duplicates += 1
                    continue
                last[i] = key
                iterated[i] += 1
                if i == 0:
                    sampler.offer(doc)
                other = theirs.pop(key, None)
                if other is None:
                    mine[key] = (digest, doc)
                    continue
                pair = ((digest, doc), other) if i == 0 else (other, (digest, doc))
                if pair[0][0] == pair[1][0]:
                    identical += 1
                    continue
                diff = _difference(doc.id, pair[0], pair[1])
                different_count += 1
                if diff.max_abs_diff is not None:
                    max_abs = max(max_abs, diff.max_abs_diff)
                if len(different) < _LISTED:
                    different.append(diff)
            if progress is not None and i == 0:
                progress(iterated[0], total)
    finally:
        for stop in stops:
            stop.set()
        for stream in streams:
            stream.close()  # type: ignore[attr-defined]
    counts = (a.count(), b.count())
    # A row that count() sees but iteration never returns is a duplicate the cursor skipped.
    duplicates += sum(max(0, c - n) for c, n in zip(counts, iterated, strict=True))
    missing = sorted(pending[0])
    extra = sorted(pending[1])
    return {
        "source_documents": counts[0],
        "target_documents": counts[1],
        "identical": identical,
        "missing_count": len(missing),
        "extra_count": len(extra),
        "different_count": different_count,
        "duplicates": duplicates,
        "missing": tuple(key_to_id(k) for k in missing[:_LISTED]),
        "extra": tuple(key_to_id(k) for k in extra[:_LISTED]),
        "different": tuple(different),
        "max_abs_diff": max_abs,
    }


def _exact_topk(
    side: ExportReader, queries: list[npt.NDArray[np.float32]], k: int, batch_bytes: int
) -> list[list[tuple[str, float]]]:
    """Exact MaxSim top-k over every document of an export, streamed."""
    best: list[list[tuple[str, float]]] = [[] for _ in queries]
    for docs, _ in _byte_sized_batches(side, None, batch_bytes):
        tokens = np.concatenate([d.vectors for d in docs])
        offsets = np.zeros(len(docs) + 1, dtype=np.int64)
        np.cumsum([d.vectors.shape[0] for d in docs], out=offsets[1:])
        keys = [id_to_key(d.id) for d in docs]
        for qi, query in enumerate(queries):
            scores = maxsim_packed(query, tokens, offsets)
            merged = best[qi] + [(key, float(s)) for key, s in zip(keys, scores, strict=True)]
            # The collection's tie-break: score descending, then key.
            best[qi] = sorted(merged, key=lambda h: (-h[1], h[0]))[:k]
    return best


def _topk(
    side: Side, queries: list[npt.NDArray[np.float32]], k: int, candidates: int, batch_bytes: int
) -> list[list[tuple[str, float]]]:
    if isinstance(side, ExportReader):
        return _exact_topk(side, queries, k, batch_bytes)
    out = []
    for query in queries:
        result = side.search(query, k=k, candidates=candidates)
        out.append([(id_to_key(h.id), h.score) for h in result])
    return out


def _agree(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> tuple[float, float, bool]:
    """Overlap, largest score difference at equal ranks, and agreement up to ties.

    Ids may differ only among hits whose score ties with the last one kept (which of several
    equal scores makes the cut is arbitrary); every rank's score must match.
    """
    n = max(len(a), len(b), 1)
    overlap = len({key for key, _ in a} & {key for key, _ in b}) / n
    if len(a) != len(b):
        return overlap, float("inf"), False
    if not a:
        return 1.0, 0.0, True
    sa, sb = np.array([s for _, s in a]), np.array([s for _, s in b])
    diffs = np.abs(sa - sb)
    tol = _SCORE_RTOL * np.maximum(1.0, np.abs(sa))
    tied = np.abs(sa - sa[-1]) <= tol
    same = {key for (key, _), t in zip(a, tied, strict=True) if not t} == {
        key for (key, _), t in zip(b, tied, strict=True) if not t
    }
    return overlap, float(diffs.max()), bool(same and (diffs <= tol).all())


def _search_check(
    a: Side,
    b: Side,
    queries: list[npt.NDArray[np.float32]],
    k: int,
    candidates: int,
    batch_bytes: int,
) -> SearchCheck:
    ra = _topk(a, queries, k, candidates, batch_bytes)
    rb = _topk(b, queries, k, candidates, batch_bytes)
    overlaps, diffs, disagreements = [], [], 0
    for hits_a, hits_b in zip(ra, rb, strict=True):
        overlap, diff, agrees = _agree(hits_a, hits_b)
        overlaps.append(overlap)
        diffs.append(diff)
        disagreements += not agrees
    exact = tuple(_label(s) for s in (a, b) if isinstance(s, ExportReader))
    return SearchCheck(
        queries=len(queries),
        k=k,
        candidates=candidates,
        mean_overlap=float(np.mean(overlaps)) if overlaps else 1.0,
        min_overlap=float(np.min(overlaps)) if overlaps else 1.0,
        max_score_diff=float(np.max(diffs)) if diffs else 0.0,
        disagreements=disagreements,
        exact_sides=exact,
    )


def _export_fde_check(side: Side) -> float | None:
    """Compare an export's stored FDEs (first batch) with a fresh encoding of its tokens."""
    if not isinstance(side, ExportReader):
        return None
    for docs, stored in side.iter_with_fdes(64):
        fresh = FDEEncoder(side.info.fde).encode_documents(
            [d.vectors.astype(np.float32) for d in docs]
        )
        return float(np.abs(fresh - stored).max())
    return None


def _verify_sides(
    a: Side,
    b: Side,
    *,
    queries: int,
    k: int,
    candidates: int,
    query_tokens: int,
    seed: int,
    batch_bytes: int,
    progress: ProgressCallback | None,
) -> VerifyReport:
    if a.info.dim != b.info.dim:
        raise ConfigMismatchError(
            f"{_label(a)} has token dimension {a.info.dim} and {_label(b)} {b.info.dim}: "
            "they cannot hold the same documents"
        )
    t0 = time.perf_counter()
    sampler = _Sampler(queries, query_tokens, seed)
    data = _compare_documents(a, b, sampler=sampler, batch_bytes=batch_bytes, progress=progress)
    search = None
    if queries > 0 and sampler.queries:
        search = _search_check(a, b, sampler.queries, k, candidates, batch_bytes)
    fde_diffs = [d for d in (_export_fde_check(a), _export_fde_check(b)) if d is not None]
    return VerifyReport(
        source=_label(a),
        target=_label(b),
        search=search,
        seconds=time.perf_counter() - t0,
        fde_max_abs_diff=max(fde_diffs) if fde_diffs else None,
        **data,
    )


def verify(
    source: str | URI | os.PathLike[str],
    target: str | URI | os.PathLike[str],
    *,
    collection: str = "default",
    target_collection: str | None = None,
    queries: int = 20,
    k: int = 10,
    candidates: int = 200,
    query_tokens: int = 32,
    seed: int = 0,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    progress: ProgressCallback | None = None,
) -> VerifyReport:
    """Compare two collections, or a collection and an export directory, document by document.

    First every document's checksum (see the module docstring) on both sides: the report lists
    missing, extra, duplicated and different documents, with what differs and the largest
    token value difference. Then ``queries`` searches run on both sides (the first
    ``query_tokens`` tokens of a seeded sample of source documents); their top-``k`` ids and
    scores are compared, tolerating ties. An export directory is scored by exact MaxSim over
    all its documents. Identical documents with disagreeing searches mean index drift, not
    data loss.

    Args:
        source: A URI (``scheme://...``) or an export directory.
        target: A URI or an export directory.
        collection: The source collection (ignored for a directory).
        target_collection: The target collection; by default the source's name (an export's
            recorded collection name).
        queries: Queries of the search check; 0 skips it.
        k: Hits compared per query.
        candidates: First-stage candidates per search.
        query_tokens: Leading tokens of a sampled document used as a query.
        seed: Seed of the query sample.
        batch_bytes: Bytes per read batch.
        progress: Called as ``progress(done, total)`` with source documents checked.

    Returns:
        The report; ``report.exit_code`` is 0 (all agree), 1 (documents differ) or 3 (only
        searches differ).
    """
    a = _open_side(source, collection)
    try:
        default_name = a.name
        b = _open_side(target, target_collection or default_name)
        try:
            return _verify_sides(
                a,
                b,
                queries=queries,
                k=k,
                candidates=candidates,
                query_tokens=query_tokens,
                seed=seed,
                batch_bytes=batch_bytes,
                progress=progress,
            )
        finally:
            b.close()
    finally:
        a.close()


# --- dry run ----------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "list" if isinstance(value, list) else "object"


@dataclass
class _Profile:
    """What a pre-scan learns about documents."""

    n: int = 0
    id_types: dict[str, int] = field(default_factory=lambda: {"int": 0, "str": 0})
    first_id: DocId | None = None
    last_id: DocId | None = None
    fields: dict[str, dict[str, int]] = field(default_factory=dict)
    texts: int = 0
    tokens: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    oversized: list[DocId] = field(default_factory=list)
    # Documents the target database cannot store exactly, with its reason.
    refused: list[tuple[DocId, str]] = field(default_factory=list)
    read_seconds: float = 0.0
    encode_seconds: float = 0.0


def _profile(
    source: Side,
    sample: int | None,
    encoder: FDEEncoder,
    request_bytes: int | None,
    document_problem: Callable[[str, dict[str, Any], str | None], str | None],
) -> _Profile:
    profile = _Profile()
    t = time.perf_counter()
    for docs, _ in _byte_sized_batches(source, None, DEFAULT_BATCH_BYTES):
        if sample is not None:
            docs = docs[: sample - profile.n]
        profile.read_seconds += time.perf_counter() - t
        t = time.perf_counter()
        encoder.encode_documents([d.vectors.astype(np.float32) for d in docs])
        profile.encode_seconds += time.perf_counter() - t
        for doc in docs:
            profile.id_types["int" if isinstance(doc.id, int) else "str"] += 1
            if profile.first_id is None:
                profile.first_id = doc.id
            profile.last_id = doc.id
            for key, value in doc.metadata.items():
                kinds = profile.fields.setdefault(key, {})
                kinds[_kind(value)] = kinds.get(_kind(value), 0) + 1
            profile.texts += doc.text is not None
            profile.tokens.append(doc.vectors.shape[0])
            profile.sizes.append(_doc_bytes(doc))
            # The collection refuses a document that alone outgrows a write request, counted
            # its way: FDE, tokens, metadata JSON, key, and 4 bytes per character of text.
            need = (
                4 * encoder.config.fde_dim
                + doc.vectors.nbytes
                + len(json.dumps(doc.metadata, ensure_ascii=False).encode())
                + len(id_to_key(doc.id))
                + 4 * len(doc.text or "")
            )
            if request_bytes is not None and need > request_bytes:
                profile.oversized.append(doc.id)
            problem = document_problem(id_to_key(doc.id), doc.metadata, doc.text)
            if problem is not None:
                profile.refused.append((doc.id, problem))
        profile.n += len(docs)
        if sample is not None and profile.n >= sample:
            break
        t = time.perf_counter()
    return profile


def _config_summary(info: CollectionInfo) -> dict[str, Any]:
    fde = info.fde
    return {
        "dim": info.dim,
        "dtype": info.dtype,
        "fde_dim": info.fde_dim,
        "fde": {
            "repetitions": fde.repetitions,
            "simhash_projections": fde.simhash_projections,
            "projection": fde.projection,
            "projection_dim": fde.projection_dim,
            "final_dim": fde.final_dim,
            "partitioning": fde.partitioning,
            "fingerprint": fde.fingerprint(),
        },
        "encoder": info.encoder,
    }


def _existing_reason(source: CollectionInfo, target: CollectionInfo) -> str:
    if source.fde == target.fde:
        return "the existing target has the source's FDE configuration"
    return "the existing target has a different FDE configuration"


def _same_collection(source: Side, uri: URI, name: str) -> bool:
    return (
        isinstance(source, Collection)
        and source.backend.uri.render(mask_secrets=False) == uri.render(mask_secrets=False)
        and source.name == name
    )


def _configuration_problems(
    source: CollectionInfo,
    stored: CollectionInfo | None,
    info: CollectionInfo,
    fde: FDEConfig | str | None,
    dtype: StorageDtype | None,
    limit: int | None,
) -> list[PlanProblem]:
    """What :func:`migrate` would refuse before writing, said with what to do instead."""
    problems = []
    if stored is not None:
        requested = FDEConfig.preset(fde, dim=source.dim) if isinstance(fde, str) else fde
        if requested is not None and requested != stored.fde:
            problems.append(
                PlanProblem(
                    "the target exists with another FDE configuration than the one asked for",
                    "leave the FDE out to use the target's, or migrate into a new collection",
                )
            )
        if dtype is not None and dtype != stored.dtype:
            problems.append(
                PlanProblem(
                    f"the target exists with dtype {stored.dtype}, not {dtype}",
                    "leave the dtype out, or migrate into a new collection",
                )
            )
        if stored.dim != source.dim:
            problems.append(
                PlanProblem(
                    f"the target exists with token dimension {stored.dim}; the source has "
                    f"{source.dim}",
                    "migrate into a new target collection",
                )
            )
    if _lossy_dtype(source.dtype, info.dtype):
        problems.append(
            PlanProblem(
                f"a {info.dtype} target would round the source's {source.dtype} tokens",
                f"create the target with dtype {source.dtype} (--dtype {source.dtype})",
            )
        )
    if limit is not None and source.dim > limit:
        problems.append(
            PlanProblem(
                f"token vectors have {source.dim} dimensions, over the target's limit of {limit}",
                "the target cannot hold these vectors; choose another backend",
            )
        )
    if limit is not None and info.fde_dim > limit:
        problems.append(
            PlanProblem(
                f"the requested FDE has {info.fde_dim} dimensions, over the target's limit "
                f"of {limit}",
                f"ask for an FDE with final_dim <= {limit}, or leave the FDE out",
            )
        )
    return problems


def plan_migration(
    source: str | URI | os.PathLike[str],
    target: str | URI,
    *,
    collection: str = "default",
    target_collection: str | None = None,
    fde: FDEConfig | str | None = None,
    dtype: StorageDtype | None = None,
    sample: int | None = 1000,
    ledger_dir: str | os.PathLike[str] | None = None,
) -> MigrationPlan:
    """The dry run of :func:`migrate` (or of an import): the mapping, an estimate, problems.

    Nothing is written to the target (opening it may create an empty database file where the
    engine does so on connect). The source is pre-scanned: counts, configurations and limits
    are exact; per-document checks (ids, metadata fields and their JSON kinds, texts, token
    counts, documents too large for one write request of the target) cover the first
    ``sample`` documents in key order, or all of them with ``sample=None``. The time estimate
    extrapolates the measured read and FDE-encoding time of the sample; the target's own
    write time is not included, because measuring it would mean writing.

    The target database's own per-document limits (``Backend.document_problem``: Milvus's
    65,535-byte text and 65,536-byte metadata limits, control characters in ids) are checked
    on the sample. Weaviate's one JSON kind per metadata key depends on what the target holds
    already and is not: keys of mixed kinds are reported as a warning.

    Returns:
        The plan; ``plan.problems`` lists what cannot be carried over exactly, with what to do.
    """
    if sample is not None and sample < 1:
        raise InvalidInputError("sample must be at least 1 (or None for a full scan)")
    src = _open_side(source, collection)
    try:
        name = target_collection or src.name
        uri = URI.parse(target)
        backend = get_backend(uri.scheme)(uri, name)
        try:
            stored = backend.load_info()
            target_documents = backend.count() if stored is not None else 0
            limit, request = backend.max_vector_dim, backend.max_request_bytes
            persistent = backend.persistent
        finally:
            backend.close()
        if stored is None:
            info, reason = _target_info(src.info, fde, dtype, limit)
        else:
            info, reason = stored, _existing_reason(src.info, stored)
        problems = _configuration_problems(src.info, stored, info, fde, dtype, limit)
        if _same_collection(src, uri, name):
            problems.append(
                PlanProblem("the source and the target are the same collection", "name another")
            )
        # The collection's own headroom under a backend's request cap (see Collection).
        request_bytes = None if request is None else int(request * 0.8)
        profile = _profile(
            src, sample, FDEEncoder(info.fde), request_bytes, backend.document_problem
        )
        if profile.refused:
            problems.append(
                PlanProblem(
                    f"the target refuses {len(profile.refused)} sampled documents; the first: "
                    f"{profile.refused[0][1]}",
                    "change those documents (or their ids) before migrating, or choose "
                    "another target",
                    tuple(doc_id for doc_id, _ in profile.refused[:_LISTED]),
                )
            )
        if profile.oversized:
            problems.append(
                PlanProblem(
                    f"{len(profile.oversized)} sampled documents need more than one write "
                    f"request of the target ({request_bytes} bytes)",
                    "split those documents or reduce their tokens (token pooling) before "
                    "migrating; the rest can be migrated",
                    tuple(profile.oversized[:_LISTED]),
                )
            )
        count = src.count()
        warnings = _plan_warnings(profile, count, target_documents, _persistent(src) and persistent)
        resume = None
        if stored is not None and _persistent(src) and persistent:
            directory = Path(ledger_dir) if ledger_dir is not None else default_ledger_dir()
            state = _Ledger(directory, src, uri, name).load()
            if state is not None:
                resume = {
                    "cursor": state.cursor,
                    "documents": state.documents,
                    "complete": state.complete,
                }
        per_doc_seconds = (profile.read_seconds + profile.encode_seconds) / max(profile.n, 1)
        tokens = profile.tokens or [0]
        sizes = profile.sizes or [0]
        return MigrationPlan(
            source=_label(src),
            target=f"{uri} collection {name!r}",
            documents=count,
            sampled=profile.n,
            id_types=profile.id_types,
            first_id=profile.first_id,
            last_sampled_id=profile.last_id,
            metadata_fields=profile.fields,
            texts=profile.texts,
            tokens_per_document={
                "min": float(min(tokens)),
                "mean": float(np.mean(tokens)),
                "max": float(max(tokens)),
            },
            bytes_per_document={"mean": float(np.mean(sizes)), "max": float(max(sizes))},
            source_configuration=_config_summary(src.info),
            target_configuration=_config_summary(info),
            target_exists=stored is not None,
            target_documents=target_documents,
            target_limits={
                "max_vector_dim": limit,
                "max_request_bytes": request,
                "persistent": persistent,
            },
            fde=_fde_action(src.info, info),
            fde_reason=reason,
            estimated_bytes=int(np.mean(sizes) * count),
            estimated_read_encode_seconds=per_doc_seconds * count,
            resume=resume,
            problems=tuple(problems),
            warnings=tuple(warnings),
        )
    finally:
        src.close()


def _plan_warnings(
    profile: _Profile, count: int, target_documents: int, resumable: bool
) -> list[str]:
    warnings = []
    if target_documents:
        warnings.append(
            f"the target already holds {target_documents} documents; those with source ids are "
            "replaced, any others stay and verification reports them as extra"
        )
    mixed = sorted(k for k, kinds in profile.fields.items() if len(set(kinds) - {"null"}) > 1)
    if mixed:
        warnings.append(
            f"metadata keys {mixed} hold values of several JSON kinds; they are copied as they "
            "are, but backends with typed properties (Weaviate) refuse a key whose kind changes"
        )
    if not resumable:
        warnings.append("a side does not outlive this process: the migration cannot resume")
    if profile.n < count:
        warnings.append(
            f"per-document checks covered the first {profile.n} of {count} documents; pass "
            "sample=None (--full-scan) to check them all"
        )
    return warnings
