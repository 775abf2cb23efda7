"""The backend registry: URI scheme → adapter class, imported only when first used.

Importing this module imports no database SDK. Third-party backends plug in through the
``multivec.backends`` entry-point group (``name = "package.module:Class"``) or, at run time,
through :func:`register_backend`.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from multivec.backends._base import Backend, Fetched, WriteBatch
from multivec.errors import ConfigurationError, MissingDependencyError

__all__ = [
    "Backend",
    "Fetched",
    "WriteBatch",
    "available_backends",
    "get_backend",
    "register_backend",
]

# scheme: (module, class, the extra that installs its SDK). Keep sorted.
_KNOWN: dict[str, tuple[str, str, str | None]] = {
    "lancedb": ("multivec.backends.lancedb", "LanceDBBackend", "lancedb"),
    "memory": ("multivec.backends.memory", "MemoryBackend", None),
    "milvus": ("multivec.backends.milvus", "MilvusBackend", "milvus"),
    "qdrant": ("multivec.backends.qdrant", "QdrantBackend", "qdrant"),
    "weaviate": ("multivec.backends.weaviate", "WeaviateBackend", "weaviate"),
}
_loaded: dict[str, type[Backend]] = {}
_ENTRY_POINT_GROUP = "multivec.backends"


def register_backend(scheme: str, target: type[Backend] | str, *, replace: bool = False) -> None:
    """Register a backend class (or a ``"module:Class"`` path) for a URI scheme.

    Args:
        scheme: The URI scheme, lowercase.
        target: The class, or its import path, imported on first use.
        replace: Allow replacing an existing registration.
    """
    if not replace and (scheme in _KNOWN or scheme in _loaded):
        raise ConfigurationError(
            f"a backend for {scheme!r} is already registered; pass replace=True"
        )
    _loaded.pop(scheme, None)
    if isinstance(target, str):
        module, _, cls = target.partition(":")
        _KNOWN[scheme] = (module, cls, None)
    else:
        _KNOWN.pop(scheme, None)
        _loaded[scheme] = target


def _from_entry_points(scheme: str) -> None:
    for ep in entry_points(group=_ENTRY_POINT_GROUP):
        if ep.name == scheme:
            module, _, cls = ep.value.partition(":")
            _KNOWN[scheme] = (module, cls, None)


def get_backend(scheme: str) -> type[Backend]:
    """Return the backend class for ``scheme``, importing it (and its SDK) now."""
    if scheme in _loaded:
        return _loaded[scheme]
    if scheme not in _KNOWN:
        _from_entry_points(scheme)
    if scheme not in _KNOWN:
        raise ConfigurationError(
            f"no backend for URI scheme {scheme!r}; "
            f"known schemes: {', '.join(available_backends())}"
        )
    module_name, class_name, extra = _KNOWN[scheme]
    try:
        module = importlib.import_module(module_name)
    except MissingDependencyError:
        raise
    except ImportError as exc:
        if extra is None:
            raise
        raise MissingDependencyError(exc.name or module_name, extra) from exc
    cls: type[Backend] = getattr(module, class_name)
    _loaded[scheme] = cls
    return cls


def available_backends() -> list[str]:
    """All registered URI schemes, sorted (their SDKs may still be missing)."""
    names = set(_KNOWN) | set(_loaded) | {ep.name for ep in entry_points(group=_ENTRY_POINT_GROUP)}
    return sorted(names)
