"""Database servers for the server tests: an existing one, or a pinned container.

For each server kind the tests use, in this order:

1. the URI in ``MULTIVEC_TEST_<KIND>_URI`` (e.g. ``MULTIVEC_TEST_QDRANT_URI=qdrant://db:6333``),
   for a server that already runs;
2. a container started with testcontainers from the image pinned in :data:`IMAGES` (the same
   tags as ``docker/compose.yaml``), removed afterwards;
3. otherwise the test is skipped, with a reason that says no Docker engine answered.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

__all__ = ["ENV_VARS", "IMAGES", "docker_unavailable_reason", "server_uri"]

IMAGES = {
    "qdrant": "qdrant/qdrant:v1.19.0",
    "weaviate": "cr.weaviate.io/semitechnologies/weaviate:1.39.0",
    # StructArray multi-vector fields need 2.6.4 or later.
    "milvus": "milvusdb/milvus:v2.6.22",
}
ENV_VARS = {kind: f"MULTIVEC_TEST_{kind.upper()}_URI" for kind in IMAGES}
_READY_TIMEOUT_S = 180


def docker_unavailable_reason() -> str | None:
    """Return why containers cannot be started here, or ``None`` if a Docker engine answers.

    It asks the engine's ``/_ping`` endpoint over a plain socket: the docker SDK leaves a socket
    open when the engine is missing, which strict warning settings turn into test failures.
    """
    try:
        import testcontainers  # noqa: F401 (only checks that it is installed)
    except ImportError:
        return "testcontainers is not installed (pip install testcontainers)"
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: Any = host.removeprefix("unix://")
        else:
            hostport = host.split("://", 1)[-1]
            name, _, port = hostport.rpartition(":")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = (name, int(port))
        with sock:
            sock.settimeout(3)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = sock.recv(64)
    except (OSError, ValueError) as exc:
        return f"no Docker engine answered at {host} ({type(exc).__name__}: {exc})"
    if b" 200 " not in reply:
        return f"the Docker engine at {host} did not answer its ping: {reply[:40]!r}"
    return None


def _wait(check: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while True:
        try:
            check()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


@contextmanager
def server_uri(kind: str) -> Iterator[str]:
    """Yield a multivec URI for a ``kind`` server (``qdrant``, ``weaviate`` or ``milvus``)."""
    given = os.environ.get(ENV_VARS[kind])
    if given:
        yield given
        return
    reason = docker_unavailable_reason()
    if reason is not None:
        pytest.skip(f"{kind} server tests need a Docker engine or {ENV_VARS[kind]}: {reason}")
    from testcontainers.core.container import DockerContainer

    container = DockerContainer(IMAGES[kind])
    if kind == "qdrant":
        container.with_exposed_ports(6333, 6334)
    elif kind == "weaviate":
        container.with_exposed_ports(8080, 50051).with_command(
            "--host 0.0.0.0 --port 8080 --scheme http"
        )
        for key, value in {
            "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED": "true",
            "PERSISTENCE_DATA_PATH": "/var/lib/weaviate",
            "DEFAULT_VECTORIZER_MODULE": "none",
            "CLUSTER_HOSTNAME": "node1",
        }.items():
            container.with_env(key, value)
    else:
        container.with_exposed_ports(19530, 9091).with_command("milvus run standalone")
        for key, value in {
            "ETCD_USE_EMBED": "true",
            "ETCD_DATA_DIR": "/var/lib/milvus/etcd",
            "COMMON_STORAGETYPE": "local",
        }.items():
            container.with_env(key, value)
    with container:
        host = container.get_container_host_ip()
        if kind == "qdrant":
            uri = (
                f"qdrant://{host}:{container.get_exposed_port(6333)}"
                f"?grpc_port={container.get_exposed_port(6334)}"
            )
        elif kind == "weaviate":
            uri = (
                f"weaviate://{host}:{container.get_exposed_port(8080)}"
                f"?grpc_port={container.get_exposed_port(50051)}"
            )
        else:
            uri = f"milvus://{host}:{container.get_exposed_port(19530)}"
        _wait(lambda: _probe(uri), f"{kind} at {uri}")
        yield uri


def _probe(uri: str) -> None:
    """Open and drop a throwaway collection: the server is ready when that works."""
    import multivec

    col = multivec.connect(uri, f"probe_{os.getpid()}", dim=4, fde="muvera-1280")
    col.drop()
