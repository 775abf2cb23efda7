"""The FDE configuration: every choice that changes the numbers an encoding produces.

A collection stores its :class:`FDEConfig` (with :data:`ALGORITHM_VERSION`) beside the encodings and
refuses to mix encodings made under different configurations: a seed or shape mismatch between index
and query time does not fail loudly, it silently destroys recall.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from multivec.errors import ConfigurationError
from multivec.muvera._fitted import FittedPartitions

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["ALGORITHM_VERSION", "PRESETS", "FDEConfig"]

ALGORITHM_VERSION = "graph-mining-dca52ed/1"
"""Which algorithm (and random-number emulation) turns a configuration into matrices.

It names the reference it reproduces (google/graph-mining ``sketching/point_cloud`` at commit
dca52ed) and our revision of that emulation. It changes whenever the same configuration would
produce different encodings, so configurations stored by an incompatible version are refused instead
of silently producing encodings that no longer match the stored ones.
"""

_SUPPORTED_ALGORITHM_VERSIONS = frozenset({ALGORITHM_VERSION})

_MAX_SIMHASH_PROJECTIONS = 30
_MAX_SEED = 2**31 - 1
# The reference indexes its output with C++ ints; nothing larger could be encoded there either.
_MAX_RAW_FDE_DIM = 2**31 - 1


class _Preset(NamedTuple):
    repetitions: int
    simhash_projections: int
    projection_dim: int


PRESETS: Mapping[str, _Preset] = MappingProxyType(
    {
        "muvera-10240": _Preset(repetitions=20, simhash_projections=5, projection_dim=16),
        "muvera-5120": _Preset(repetitions=20, simhash_projections=5, projection_dim=8),
        "muvera-2560": _Preset(repetitions=20, simhash_projections=4, projection_dim=8),
        "muvera-1280": _Preset(repetitions=20, simhash_projections=3, projection_dim=8),
    }
)
"""Named (R, k, d') settings with Count-Sketch projection; the name gives the FDE length.

10240 is the paper's production choice (and fastembed's default); the others are the paper's
Pareto-optimal points on MS MARCO.
"""


class FDEConfig(BaseModel):
    """How token-vector sets are turned into fixed dimensional encodings (MUVERA).

    Field names are ours; their meaning follows the reference implementation (its names in
    brackets). The output has ``repetitions * 2**simhash_projections * d'`` values (``d' = dim`` for
    the identity projection), or ``final_dim`` values when a final Count-Sketch is set.

    Invalid values raise :class:`~multivec.errors.ConfigurationError` naming the field and what to
    do. The model is immutable and hashable; ``model_dump_json`` / ``model_validate_json``
    round-trip it.

    Attributes:
        dim: Width of each token vector (``dimension``).
        repetitions: Independent repetitions R, concatenated (``num_repetitions``).
        simhash_projections: Hyperplanes k per repetition, giving ``2**k`` partitions
            (``num_simhash_projections``); 0 to 30.
        seed: Seed of every random matrix; repetition r uses ``seed + r`` (``seed``).
        projection: ``"countsketch"`` (``AMS_SKETCH``) maps each token to ``projection_dim`` values
            before aggregation; ``"identity"`` (``DEFAULT_IDENTITY``) keeps all ``dim`` values.
        projection_dim: Output width d' of the Count-Sketch projection (``projection_dimension``);
            must be ``None`` with the identity projection, which is also its default there.
        fill_empty: For documents, fill each empty partition with the token whose SimHash signs are
            nearest to it (``fill_empty_partitions``). Queries must not use it: see
            :meth:`for_queries`.
        final_dim: If set, a final Count-Sketch maps the whole encoding to this length
            (``final_projection_dimension``), e.g. to fit a database's vector-size limit.
        partitioning: ``"simhash"`` (the reference) or ``"kmeans"``: centred tokens assigned to
            centroids fitted on the corpus, for anisotropic encoders. Build a k-means
            configuration with :func:`multivec.muvera.fit`, never by hand.
        fitted: The fitted mean and centroids of a ``"kmeans"`` configuration.
        algorithm_version: The algorithm that produced the encodings; see :data:`ALGORITHM_VERSION`.

    Example:
        >>> config = FDEConfig.preset("muvera-10240", dim=128)
        >>> config.fde_dim
        10240
        >>> FDEConfig.model_validate_json(config.model_dump_json()) == config
        True
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    dim: int
    repetitions: int = 20
    simhash_projections: int = 5
    seed: int = 1
    projection: Literal["identity", "countsketch"] = "countsketch"
    projection_dim: int | None = 16
    fill_empty: bool = True
    final_dim: int | None = None
    partitioning: Literal["simhash", "kmeans"] = "simhash"
    fitted: FittedPartitions | None = None
    algorithm_version: str = ALGORITHM_VERSION

    def __init__(self, **data: Any) -> None:
        """Validate the fields; see the class docstring for their meaning.

        Raises:
            ConfigurationError: A field is missing, of the wrong type, or out of range.
        """
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _configuration_error(exc) from exc

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        """Build a configuration from a mapping, e.g. one read back from storage.

        Raises:
            ConfigurationError: The stored configuration is not valid for this version of multivec.
        """
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise _configuration_error(exc) from exc

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> Self:
        """Build a configuration from the JSON that :meth:`model_dump_json` wrote.

        Raises:
            ConfigurationError: The JSON is malformed or not a valid configuration for this version.
        """
        try:
            return super().model_validate_json(json_data, **kwargs)
        except ValidationError as exc:
            raise _configuration_error(exc) from exc

    @model_validator(mode="before")
    @classmethod
    def _identity_has_no_projection_dim(cls, data: Any) -> Any:
        # projection_dim defaults to 16 for the default Count-Sketch; asking for the identity
        # projection without naming projection_dim should not trip over that default.
        if (
            isinstance(data, dict)
            and data.get("projection") == "identity"
            and "projection_dim" not in data
        ):
            return {**data, "projection_dim": None}
        return data

    @model_validator(mode="after")
    def _check_ranges(self) -> FDEConfig:
        if self.dim < 1:
            raise ValueError(f"dim must be the token width, a positive integer; got {self.dim}")
        if self.repetitions < 1:
            raise ValueError(f"repetitions must be at least 1; got {self.repetitions}")
        if not 0 <= self.simhash_projections <= _MAX_SIMHASH_PROJECTIONS:
            raise ValueError(
                f"simhash_projections must be between 0 and {_MAX_SIMHASH_PROJECTIONS} "
                f"(it gives 2**k partitions per repetition); got {self.simhash_projections}"
            )
        if self.seed < 0 or self.seed + self.repetitions - 1 > _MAX_SEED:
            raise ValueError(
                f"seed must be >= 0 and seed + repetitions - 1 must be <= {_MAX_SEED} (repetition "
                f"r uses seed + r); got seed={self.seed}, repetitions={self.repetitions}"
            )
        if self.projection == "countsketch" and (
            self.projection_dim is None or self.projection_dim < 1
        ):
            raise ValueError(
                "projection='countsketch' needs projection_dim, a positive integer; "
                f"got {self.projection_dim} (use projection='identity' to keep all dimensions)"
            )
        if self.projection == "identity" and self.projection_dim is not None:
            raise ValueError(
                f"projection_dim={self.projection_dim} is only used with projection='countsketch'; "
                "leave it unset (None) with projection='identity'"
            )
        if self.final_dim is not None and self.final_dim < 1:
            raise ValueError(
                "final_dim must be a positive integer, or None for no final projection; "
                f"got {self.final_dim}"
            )
        if self.raw_fde_dim > _MAX_RAW_FDE_DIM:
            raise ValueError(
                "the encoding would have repetitions * 2**simhash_projections * d' = "
                f"{self.raw_fde_dim} values, more than can be encoded; lower simhash_projections "
                "or repetitions"
            )
        if (self.partitioning == "kmeans") != (self.fitted is not None):
            raise ValueError(
                "partitioning='kmeans' needs fitted centroids and 'simhash' takes none; build a "
                "k-means configuration with multivec.muvera.fit(config, documents)"
            )
        if self.algorithm_version not in _SUPPORTED_ALGORITHM_VERSIONS:
            raise ValueError(
                f"algorithm_version {self.algorithm_version!r} is not supported by this version "
                f"of multivec (it supports {sorted(_SUPPORTED_ALGORITHM_VERSIONS)}); encodings "
                "made with it would not match. Re-encode the collection, or use the multivec "
                "version that wrote it"
            )
        return self

    @property
    def num_partitions(self) -> int:
        """Partitions (blocks) per repetition: ``2**simhash_projections``."""
        return 1 << self.simhash_projections

    @property
    def block_dim(self) -> int:
        """Values per block: ``projection_dim`` for Count-Sketch, ``dim`` for the identity."""
        if self.projection == "countsketch" and self.projection_dim is not None:
            return self.projection_dim
        return self.dim

    @property
    def raw_fde_dim(self) -> int:
        """Length before the final projection: ``repetitions * num_partitions * block_dim``."""
        return self.repetitions * self.num_partitions * self.block_dim

    @property
    def fde_dim(self) -> int:
        """Length of every encoding this configuration produces."""
        return self.final_dim if self.final_dim is not None else self.raw_fde_dim

    def for_queries(self) -> FDEConfig:
        """Return the same configuration with ``fill_empty=False``, the one queries must use.

        Filling empty partitions is defined for documents only; the reference rejects it for
        queries. Both configurations build the same random matrices, so query and document encodings
        match.
        """
        return self._replace(fill_empty=False)

    def fingerprint(self) -> str:
        """Return a stable hash of every field, the algorithm version included.

        Equal configurations have equal fingerprints and changing any field changes it, so it is a
        cheap check that a collection is queried the way it was built. It depends neither on the
        pydantic version nor on field order.

        Returns:
            A 64-character hexadecimal SHA-256 digest.
        """
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @classmethod
    def preset(
        cls, name: str, *, dim: int, seed: int = 1, final_dim: int | None = None
    ) -> FDEConfig:
        """Return a named document configuration (Count-Sketch projection, fill on).

        Args:
            name: One of :data:`PRESETS`: ``"muvera-10240"`` (R=20, k=5, d'=16), ``"muvera-5120"``
                (20, 5, 8), ``"muvera-2560"`` (20, 4, 8) or ``"muvera-1280"`` (20, 3, 8).
            dim: Width of the token vectors.
            seed: Seed of the random matrices.
            final_dim: Optional final Count-Sketch length, e.g. to stay under a database's
                vector-size limit (2,000 for a pgvector index).

        Returns:
            The configuration; use :meth:`for_queries` for the matching query configuration.

        Raises:
            ConfigurationError: ``name`` is not a preset, or a value is invalid.
        """
        settings = PRESETS.get(name)
        if settings is None:
            raise ConfigurationError(
                f"unknown FDE preset {name!r}; choose one of {sorted(PRESETS)} "
                "or build FDEConfig(...) with explicit values"
            )
        return cls(
            dim=dim,
            repetitions=settings.repetitions,
            simhash_projections=settings.simhash_projections,
            projection="countsketch",
            projection_dim=settings.projection_dim,
            seed=seed,
            fill_empty=True,
            final_dim=final_dim,
        )

    def _replace(self, **changes: Any) -> FDEConfig:
        # model_copy(update=...) would skip validation; rebuilding keeps the result valid.
        fields = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self)(**{**fields, **changes})


def _configuration_error(exc: ValidationError) -> ConfigurationError:
    """Turn pydantic's report into one readable ConfigurationError message."""
    problems = []
    for error in exc.errors(include_url=False):
        location = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{location}: {message}" if location else message)
    return ConfigurationError("invalid FDE configuration: " + "; ".join(problems))
