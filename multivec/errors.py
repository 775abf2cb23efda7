"""The exceptions multivec raises, as one tree.

Every error subclasses :class:`MultivecError` and, where it fits, the builtin a caller would
naturally catch (``ValueError`` for bad input, ``ImportError`` for a missing extra), so
``except ValueError`` keeps working for code that does not know multivec::

    MultivecError
    ├── InvalidInputError (ValueError)            bad data handed to multivec
    │   ├── DimensionMismatchError                token width differs from the collection's
    │   ├── InvalidVectorsError                   empty, ragged, NaN/inf, wrong rank
    │   ├── InvalidIdError                        unsupported or duplicated document ids
    │   ├── InvalidMetadataError                  metadata that is not a JSON object
    │   └── InvalidFilterError                    a malformed filter expression
    ├── ConfigurationError (ValueError)           an invalid FDE or collection configuration
    │   └── ConfigMismatchError                   stored and requested configurations differ
    ├── MissingDependencyError (ImportError)      an optional extra is not installed
    ├── CollectionNotFoundError (LookupError)     opening a collection that does not exist
    └── BackendError                              the database failed
        ├── BackendUnavailableError (ConnectionError)   unreachable after retries
        ├── CapacityError                         more than the database can hold (refused)
        └── PartialWriteError                     a batch was only partly written

Vendor exceptions are re-raised as one of these with ``raise ... from exc`` so the original
traceback is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "BackendError",
    "BackendUnavailableError",
    "CapacityError",
    "CollectionNotFoundError",
    "ConfigMismatchError",
    "ConfigurationError",
    "DimensionMismatchError",
    "InvalidFilterError",
    "InvalidIdError",
    "InvalidInputError",
    "InvalidMetadataError",
    "InvalidVectorsError",
    "MissingDependencyError",
    "MultivecError",
    "PartialWriteError",
]


class MultivecError(Exception):
    """Base class of every error multivec raises."""


class InvalidInputError(MultivecError, ValueError):
    """Data handed to multivec is not usable as it is."""


class DimensionMismatchError(InvalidInputError):
    """Token vectors have a different width from the one the collection or encoding expects."""


class InvalidVectorsError(InvalidInputError):
    """Token matrices that are empty, ragged, of the wrong rank, or hold NaN or infinity."""


class InvalidIdError(InvalidInputError):
    """Document ids of an unsupported type, or duplicated within one batch."""


class InvalidMetadataError(InvalidInputError):
    """Metadata that is not a JSON object with string keys and JSON values."""


class InvalidFilterError(InvalidInputError):
    """A filter expression that is malformed or uses an unsupported operator."""


class ConfigurationError(MultivecError, ValueError):
    """An FDE or collection configuration that is not valid."""


class ConfigMismatchError(ConfigurationError):
    """The configuration stored with a collection differs from the one requested."""


class MissingDependencyError(MultivecError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f'{package} is not installed; install it with: pip install "multivec[{extra}]"'
        )
        self.package = package
        self.extra = extra


class CollectionNotFoundError(MultivecError, LookupError):
    """The collection does not exist and creating it was not requested."""


class BackendError(MultivecError):
    """The database reported an error; the vendor exception is the ``__cause__``."""


class BackendUnavailableError(BackendError, ConnectionError):
    """The database could not be reached, even after retries."""


class CapacityError(BackendError):
    """A write was refused because the database could not hold it; nothing of it was sent."""


class PartialWriteError(BackendError):
    """A write failed part way; the ids fall into three lists.

    Attributes:
        written: Stored: the database acknowledged them.
        unconfirmed: Sent in the request that failed (a timeout or a dropped connection): the
            database may or may not have stored them.
        not_written: Never sent.

    Retrying the same upsert is safe: upserts replace rather than duplicate.
    """

    def __init__(
        self,
        message: str,
        written: Sequence[Any],
        not_written: Sequence[Any],
        unconfirmed: Sequence[Any] = (),
    ) -> None:
        super().__init__(
            f"{message} ({len(written)} documents written, {len(unconfirmed)} unconfirmed, "
            f"{len(not_written)} not written; retrying the same upsert is safe, it replaces "
            "rather than duplicates)"
        )
        self.written = list(written)
        self.unconfirmed = list(unconfirmed)
        self.not_written = list(not_written)
