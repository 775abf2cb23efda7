"""Database servers for the server tests: an existing one, or a pinned container.

For each server kind the tests use, in this order:

1. the URI in ``MULTIVEC_TEST_<KIND>_URI`` (e.g. ``MULTIVEC_TEST_QDRANT_URI=qdrant://db:6333``),
   for a server that already runs;
2. a container started with testcontainers from the image pinned in :data:`IMAGES` (the same
   tags as ``docker/compose.yaml``), removed afterwards;
3. otherwise the test is skipped, with a reason that says no Docker engine answered.

:class:`MilvusLiteServer` runs Milvus Lite's own gRPC server in a child process: a real Milvus
protocol server without Docker, for the server code path and its fault tests.
:func:`embedded_milvus_server` runs a real (older) Milvus server without Docker.
"""

from __future__ import annotations

import gc
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

__all__ = [
    "DATA_DIRS",
    "ENV_VARS",
    "IMAGES",
    "MilvusLiteServer",
    "container_data_bytes",
    "docker_unavailable_reason",
    "embedded_milvus_server",
    "free_port",
    "server_uri",
    "start_container",
]

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
    """Yield a multivec URI for a ``kind`` server (``qdrant``, ``weaviate`` or ``milvus``).

    The URI in ``MULTIVEC_TEST_<KIND>_URI`` if set, else a container from :func:`start_container`;
    without a Docker engine the calling test is skipped with the reason.
    """
    given = os.environ.get(ENV_VARS[kind])
    if given:
        yield given
        return
    reason = docker_unavailable_reason()
    if reason is not None:
        import pytest

        pytest.skip(f"{kind} server tests need a Docker engine or {ENV_VARS[kind]}: {reason}")
    with start_container(kind) as uri:
        yield uri


# Where each pinned image keeps its data.
DATA_DIRS = {
    "qdrant": "/qdrant/storage",
    "milvus": "/var/lib/milvus",
    "weaviate": "/var/lib/weaviate",
}
_DATA_BYTES: dict[str, Callable[[], int]] = {}


@contextmanager
def start_container(kind: str) -> Iterator[str]:
    """Start the pinned ``kind`` image with testcontainers; yield its URI once it serves.

    The container is removed on exit. Needs a Docker engine (see
    :func:`docker_unavailable_reason`) and the testcontainers package.
    """
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

        def measure() -> int:
            # -k: busybox's du (Weaviate's Alpine image) has no byte-exact option.
            result = container.exec(["du", "-sk", DATA_DIRS[kind]])
            if result.exit_code != 0:
                raise RuntimeError(f"du in the {kind} container failed: {result.output!r}")
            return 1024 * int(result.output.split()[0])

        _DATA_BYTES[uri] = measure
        try:
            yield uri
        finally:
            _DATA_BYTES.pop(uri, None)


def container_data_bytes(uri: str) -> int | None:
    """Bytes in the data directory of the container :func:`start_container` started for ``uri``.

    ``None`` for any other URI (a server this process did not start). A server reports no
    per-collection size through its API, so a benchmark measures the container's disk instead.
    """
    measure = _DATA_BYTES.get(uri)
    return None if measure is None else measure()


def _probe(uri: str) -> None:
    """Open and drop a throwaway collection: the server is ready when that works."""
    import multivec

    col = multivec.connect(uri, f"probe_{os.getpid()}", dim=4, fde="muvera-1280")
    col.drop()


class MilvusLiteServer:
    """Milvus Lite's gRPC server in a child process: a real Milvus protocol server, no Docker.

    ``python -m milvus_lite server`` serves the Milvus gRPC protocol over Milvus Lite's embedded
    engine. Through it, ``milvus://`` URIs take multivec's *server* code path (a network client,
    timeouts, retries, request limits) and faults can be injected for real: the process can be
    killed mid-write and restarted on the same data, and a proxy can sit in front of its port.
    The engine underneath is still Milvus Lite's, so this tests multivec's server client and its
    fault handling, not the behaviour of a Milvus server's own engine (use :func:`server_uri`
    for that).

    Use it as a context manager; it stops the server (and removes a data directory it created)
    on exit::

        with MilvusLiteServer() as server:
            col = multivec.connect(server.uri, "docs", dim=128)
            server.kill()  # SIGKILL, as a crash would
            server.start()  # same data directory, same port

    Args:
        data_dir: Where Milvus Lite keeps its data; a new temporary directory when ``None``.
        port: The port to listen on; a free one when ``None``. It stays the same on restart.
        ready_timeout: Seconds to wait for the server to accept connections.
    """

    host = "127.0.0.1"

    def __init__(
        self, data_dir: str | None = None, *, port: int | None = None, ready_timeout: float = 60.0
    ) -> None:
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="milvus-lite-server-")
        self.port = port or free_port()
        self.ready_timeout = ready_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def uri(self) -> str:
        """The multivec URI of the server, ``milvus://127.0.0.1:PORT``."""
        return f"milvus://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The child's process id, or ``None`` when it was never started or has been reaped."""
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        """Start the server (again) on the same data directory and port; wait until it listens.

        Raises:
            RuntimeError: The server exited, or did not accept connections within
                ``ready_timeout`` seconds; the message carries the end of its output.
        """
        if self.running:
            return
        self._reap()
        # Kept open for the life of the child (closed by _reap), so no context manager.
        self._log = tempfile.TemporaryFile(prefix="milvus-lite-server-", suffix=".log")  # noqa: SIM115
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "milvus_lite",
                "server",
                "--data-dir",
                self.data_dir,
                "--host",
                self.host,
                "--port",
                str(self.port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + self.ready_timeout
        while True:
            code = self._process.poll()
            if code is not None:
                output = self._output()
                self._reap()
                raise RuntimeError(
                    f"the Milvus Lite server on port {self.port} exited with code {code} before "
                    f"accepting connections; its output:\n{output}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                output = self._output()
                self.kill()
                raise RuntimeError(
                    f"the Milvus Lite server on port {self.port} did not accept connections "
                    f"within {self.ready_timeout} s; its output:\n{output}"
                )
            time.sleep(0.1)

    def kill(self) -> None:
        """Kill the server with SIGKILL, as a crash or an OOM kill would, and reap it."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        self._reap()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server cleanly, or kill it after ``timeout`` seconds.

        SIGINT makes it stop serving and close its data (releasing the data directory's lock).
        After that the process only waits out gRPC's 5 s shutdown grace timer, so once the lock
        is free it is killed rather than waited for.
        """
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            deadline = time.monotonic() + timeout
            while process.poll() is None and time.monotonic() < deadline:
                if self._data_released():
                    break
                time.sleep(0.05)
            if process.poll() is None:
                process.kill()
        self._reap()

    def _data_released(self) -> bool:
        """Whether nobody holds Milvus Lite's lock on the data directory (it closed its data)."""
        import fcntl  # POSIX only, like the signals used here

        try:
            fd = os.open(os.path.join(self.data_dir, "LOCK"), os.O_RDWR)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return True
        finally:
            os.close(fd)

    def _reap(self) -> None:
        if self._process is not None:
            self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _output(self, limit: int = 4000) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-limit:]

    def __enter__(self) -> MilvusLiteServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"MilvusLiteServer({self.uri!r}, data_dir={self.data_dir!r}, {state})"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def embedded_milvus_server(base_dir: str | None = None) -> Iterator[str]:
    """Run a real Milvus 2.3 server in a child process, without Docker; yield its multivec URI.

    The ``milvus`` package (Milvus's embedded distribution, discontinued after 2.3.5) ships the
    Milvus standalone binary with its own etcd and local storage: the server's own proxy, query
    and data nodes, so consistency levels, request limits, upserts and filter parsing are the
    real server's, unlike :class:`MilvusLiteServer`. It is older than the pinned image: it has
    no nullable fields (multivec then stores a missing text as ``""``) and no StructArray, so no
    ``native=maxsim``. Linux x86-64 and macOS arm64 only. The server stops on exit.

    Args:
        base_dir: Where it unpacks its binaries (``bin/``) and keeps its data (``data/``); a new
            temporary directory, removed on exit, when ``None``.

    Raises:
        RuntimeError: The server did not start; the message carries the end of its log.
    """
    from milvus import MilvusServer

    data_dir = base_dir or tempfile.mkdtemp(prefix="milvus-embedded-")
    server = MilvusServer()
    server.set_base_dir(data_dir)
    server.listen_port = free_port()
    try:
        try:
            with warnings.catch_warnings():
                # Its port probing leaves sockets to the garbage collector; collected here,
                # with their ResourceWarning ignored, they cannot fail a later test.
                warnings.simplefilter("ignore", ResourceWarning)
                server.start()  # waits for the server's health endpoint
                gc.collect()
        except (RuntimeError, TimeoutError) as exc:
            log = os.path.join(data_dir, "logs", "milvus-stderr.log")
            with open(log, errors="replace") as f:
                tail = f.read()[-4000:]
            raise RuntimeError(
                f"the embedded Milvus server did not start ({exc}):\n{tail}"
            ) from exc
        yield f"milvus://127.0.0.1:{server.listen_port}"
    finally:
        server.stop()
        if base_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
