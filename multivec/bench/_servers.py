"""Database servers for a benchmark run: started in containers from the pinned images.

``multivec bench --start qdrant,milvus,weaviate`` starts each server with testcontainers from
the image pinned in :data:`multivec.testing.servers.IMAGES` (the tags of
``docker/compose.yaml``), waits until it answers, and removes it when the run ends. Without a
Docker engine it says so and the run goes on with the other backends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from multivec.bench._dataset import Progress
from multivec.bench._harness import Target
from multivec.errors import ConfigurationError, MissingDependencyError

__all__ = ["SERVER_KINDS", "started_servers"]

SERVER_KINDS = ("qdrant", "milvus", "weaviate")
"""The servers ``--start`` can start."""


@contextlib.contextmanager
def started_servers(
    kinds: Sequence[str], progress: Progress
) -> Iterator[tuple[list[Target], list[str]]]:
    """Start a container per server kind; yield the targets and notes for the report.

    A server that cannot be started (no Docker engine, an image that cannot be pulled, a
    server that never becomes ready) is left out with a note; the others still run. Every
    container started is removed when the block exits.

    Args:
        kinds: Server kinds among :data:`SERVER_KINDS`.
        progress: Receives a line per server started or skipped.

    Yields:
        ``(targets, notes)``.

    Raises:
        ConfigurationError: An unknown kind.
        MissingDependencyError: The container helpers cannot be imported.
    """
    unknown = sorted(set(kinds) - set(SERVER_KINDS))
    if unknown:
        raise ConfigurationError(f"cannot start {unknown}; choose among {list(SERVER_KINDS)}")
    if not kinds:
        yield [], []
        return
    try:
        from multivec.testing.servers import IMAGES, docker_unavailable_reason, start_container
    except ImportError as exc:  # multivec.testing (pytest) and testcontainers: the dev extra
        raise MissingDependencyError(exc.name or "pytest", "dev") from exc
    reason = docker_unavailable_reason()
    if reason is not None:
        note = f"no Docker engine: skipping {', '.join(kinds)} ({reason})"
        progress(note)
        yield [], [note]
        return
    targets: list[Target] = []
    notes: list[str] = []
    with contextlib.ExitStack() as stack:
        for kind in kinds:
            progress(f"starting {kind} ({IMAGES[kind]})")
            try:
                uri = stack.enter_context(start_container(kind))
            except Exception as exc:  # one server that will not start must not stop the others
                note = f"could not start {kind} ({IMAGES[kind]}): {type(exc).__name__}: {exc}"
                progress(note)
                notes.append(note)
                continue
            targets.append(Target(uri, name=kind, container_image=IMAGES[kind]))
        yield targets, notes
