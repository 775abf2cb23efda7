"""Fault tests for the server flavours: unreachable, slow and dropping servers, and crashes.

What they prove (the issue's words): a server that is unreachable, slow or drops mid-batch gives
a clear, typed error after bounded retries with backoff; a partially failed batch reports
exactly which documents were and were not written; nothing is dropped silently.

The Milvus servers run here without Docker: Milvus Lite's own gRPC server in a child process
(:class:`~multivec.testing.servers.MilvusLiteServer`), and for the proxy faults also a real
Milvus 2.3.5 server (:func:`~multivec.testing.servers.embedded_milvus_server`); ``milvus://``
URIs take multivec's server code path for real. Faults come from killing the Lite server's
process, or from :class:`FaultProxy`, a TCP proxy in front of a port that can pass traffic
through, delay it, cut every connection after a byte budget, or swallow it (a black hole).
Qdrant and Weaviate are tested only where no server is needed: a closed port, or a black hole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("pymilvus", reason="the milvus extra is not installed")
pytest.importorskip("milvus_lite", reason="milvus-lite is not installed")

import multivec
from multivec import Collection
from multivec._validation import key_to_id
from multivec.backends import milvus as milvus_module
from multivec.backends._base import WriteBatch
from multivec.errors import BackendUnavailableError, PartialWriteError
from multivec.testing import DIM, SMALL_FDE, BackendConformance, make_corpus
from multivec.testing.servers import MilvusLiteServer, embedded_milvus_server, free_port

# The documented retry schedules: attempts, and the total of the backoff sleeps between them.
MILVUS_TRIES, MILVUS_BACKOFF_S = 4, 0.5 + 1 + 2
QDRANT_TRIES, QDRANT_BACKOFF_S = 3, 0.5 + 1
WEAVIATE_TRIES, WEAVIATE_BACKOFF_S = 5, 0.5 + 1 + 2 + 4
# Room for process start-up, imports and a busy shared machine on top of a schedule.
SLACK_S = 5.0
# Timers may fire a hair early; lower bounds allow this much.
EARLY_S = 0.2
# The per-call timeout of the slow-server tests (Milvus takes fractions of a second).
FAST_TIMEOUT_S = 0.5
# Small write requests for the mid-batch tests: about 5 corpus documents each.
SMALL_REQUEST_BYTES = 8_000


# --- the fault-injecting proxy ----------------------------------------------------------------


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of one server port, with faults switchable at run time.

    Modes: :meth:`pass_through`; :meth:`delay` (every client->server chunk waits first);
    :meth:`cut_after` (after a byte budget of client->server traffic every open connection is
    cut, and new ones are closed as soon as they are accepted); :meth:`black_hole` (connections
    are accepted and read, never answered). Only the standard library: one thread accepts, two
    pump each connection, all polling so :meth:`close` stops them within a moment.
    """

    _POLL_S = 0.05

    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._mode = "pass"
        self._delay = 0.0
        self._budget = 0
        self.forwarded = 0  # client->server bytes forwarded since the mode last changed
        self.accepted = 0  # connections accepted, in all
        self._sockets: set[socket.socket] = set()
        # Connections that lost bytes to the black hole: their streams are broken for good, so
        # they are cut when the black hole ends, as a healed network resets stale connections.
        self._swallowed: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._spawn(self._accept_loop)

    # --- modes ---------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """``pass``, ``delay``, ``cut_after``, ``refuse`` (after a cut) or ``black_hole``."""
        return self._mode

    def pass_through(self) -> None:
        """Forward everything as it comes."""
        self._set("pass")

    def delay(self, seconds: float) -> None:
        """Hold every client->server chunk for ``seconds`` before forwarding it."""
        self._set("delay", delay=seconds)

    def cut_after(self, nbytes: int) -> None:
        """Forward ``nbytes`` more client->server bytes, then cut everything and refuse."""
        self._set("cut_after", budget=nbytes)

    def black_hole(self) -> None:
        """Accept and read, never forward nor answer."""
        self._set("black_hole")

    def _set(self, mode: str, *, delay: float = 0.0, budget: int = 0) -> None:
        with self._lock:
            self._mode, self._delay, self._budget, self.forwarded = mode, delay, budget, 0
            broken, self._swallowed = self._swallowed, []
        if mode != "black_hole":
            self._close(*broken)

    # --- plumbing ------------------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _track(self, *socks: socket.socket) -> bool:
        with self._lock:
            if self._stopped.is_set():
                return False
            self._sockets.update(socks)
            return True

    def _close(self, *socks: socket.socket) -> None:
        for sock in socks:
            with self._lock:
                self._sockets.discard(sock)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _readable(self, sock: socket.socket) -> bool:
        """Wait a moment for data; raises once the socket was closed by another thread."""
        ready, _, _ = select.select([sock], [], [], self._POLL_S)
        return bool(ready)

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                if not self._readable(self._listener):
                    continue
                client, _ = self._listener.accept()
            except (OSError, ValueError):
                return
            with self._lock:
                self.accepted += 1
                mode = self._mode
            if mode == "refuse" or not self._track(client):
                self._close(client)
            elif mode == "black_hole":
                self._spawn(self._swallow, client)
            else:
                try:
                    upstream = socket.create_connection(self._target, timeout=5)
                except OSError:
                    self._close(client)
                    continue
                if not self._track(upstream):
                    self._close(client, upstream)
                    continue
                self._spawn(self._pump_up, client, upstream)
                self._spawn(self._pump_down, upstream, client)

    def _swallow(self, client: socket.socket) -> None:
        with self._lock:
            self._swallowed.append(client)
        try:
            while not self._stopped.is_set():
                if self._readable(client) and not client.recv(65536):
                    break
        except (OSError, ValueError):
            pass
        self._close(client)

    def _pump_up(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while not self._stopped.is_set():
                if not self._readable(client):
                    continue
                data = client.recv(65536)
                if not data:
                    break
                with self._lock:
                    mode, delay = self._mode, self._delay
                if mode == "black_hole":
                    with self._lock:
                        self._swallowed.append(client)
                    continue
                if mode == "delay" and self._stopped.wait(delay):
                    break
                with self._lock:
                    cut = False
                    if mode == "cut_after":
                        data = data[: max(self._budget - self.forwarded, 0)]
                        cut = self.forwarded + len(data) >= self._budget
                    self.forwarded += len(data)
                upstream.sendall(data)
                if cut:
                    self._cut()
                    break
        except (OSError, ValueError):
            pass
        self._close(client, upstream)

    def _pump_down(self, upstream: socket.socket, client: socket.socket) -> None:
        try:
            while not self._stopped.is_set():
                if not self._readable(upstream):
                    continue
                data = upstream.recv(65536)
                if not data:
                    break
                client.sendall(data)
        except (OSError, ValueError):
            pass
        self._close(upstream, client)

    def _cut(self) -> None:
        with self._lock:
            self._mode = "refuse"
            socks = list(self._sockets)
        self._close(*socks)

    def close(self) -> None:
        """Stop accepting, close every socket and join every thread."""
        self._stopped.set()
        self._close(self._listener)
        with self._lock:
            socks = list(self._sockets)
        self._close(*socks)
        for thread in list(self._threads):
            thread.join(timeout=5)
            assert not thread.is_alive(), "a proxy thread did not stop"

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def milvus_lite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusLiteServer]:
    """One Milvus Lite gRPC server for the module; tests use their own collections on it."""
    with MilvusLiteServer(str(tmp_path_factory.mktemp("milvus-server") / "data")) as server:
        yield server


@dataclasses.dataclass(frozen=True)
class _Server:
    uri: str
    port: int


@pytest.fixture(scope="module", params=["lite-grpc", "milvus-2.3.5"])
def milvus_server(
    request: pytest.FixtureRequest, milvus_lite_server: MilvusLiteServer
) -> Iterator[_Server]:
    """Each Milvus server that runs here, for the proxy faults."""
    if request.param == "lite-grpc":
        yield _Server(milvus_lite_server.uri, milvus_lite_server.port)
        return
    pytest.importorskip("milvus", reason="the embedded Milvus server needs the 'milvus' package")
    with embedded_milvus_server() as uri:
        yield _Server(uri, int(uri.rsplit(":", 1)[1]))


@pytest.fixture
def proxy(milvus_server: _Server) -> Iterator[FaultProxy]:
    """A pass-through proxy in front of the server."""
    with FaultProxy(milvus_server.port) as fault_proxy:
        yield fault_proxy


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _record_requests(
    col: Collection, proxy: FaultProxy | None = None
) -> list[tuple[list[Any], int, int]]:
    """Record each write request of ``col``: its ids, and the proxy's byte count around it."""
    calls: list[tuple[list[Any], int, int]] = []
    backend = col.backend
    upsert = backend.upsert

    def spy(batch: WriteBatch) -> None:
        before = proxy.forwarded if proxy is not None else 0
        calls.append(([key_to_id(k) for k in batch.keys], before, -1))
        upsert(batch)
        after = proxy.forwarded if proxy is not None else 0
        calls[-1] = (calls[-1][0], before, after)

    backend.upsert = spy  # type: ignore[method-assign]
    return calls


def _assert_stored_exactly(
    col: Collection,
    ids: list[Any],
    vectors: list[npt.NDArray[np.float32]],
    metadata: list[dict[str, Any]],
) -> None:
    """Every id in ``ids`` is stored once, with exactly its float16 vectors and metadata."""
    docs = col.get(ids)
    assert [d.id for d in docs] == ids
    for doc, vec, meta in zip(docs, vectors, metadata, strict=True):
        assert doc.metadata == meta, doc.id
        np.testing.assert_array_equal(doc.vectors, vec.astype(np.float16), err_msg=str(doc.id))


def _assert_partition(err: PartialWriteError, ids: list[Any]) -> None:
    """The three lists of a partial write keep the batch's order and partition its ids."""
    together = err.written + err.unconfirmed + err.not_written
    assert sorted(map(repr, together)) == sorted(map(repr, ids))
    for part in (err.written, err.unconfirmed, err.not_written):
        positions = [ids.index(i) for i in part]
        assert positions == sorted(positions)


# --- unreachable ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind",
    ["milvus", "qdrant", "weaviate"],
)
def test_unreachable_server_raises_unavailable_after_retries(kind: str) -> None:
    """A closed port gives BackendUnavailableError naming the server, after the full backoff."""
    port = free_port()
    grpc_port = next(p for p in iter(free_port, None) if p != port)
    if kind == "milvus":
        uri, tries, backoff = f"milvus://127.0.0.1:{port}?timeout=2", MILVUS_TRIES, MILVUS_BACKOFF_S
    elif kind == "qdrant":
        pytest.importorskip("qdrant_client", reason="the qdrant extra is not installed")
        uri = f"qdrant://127.0.0.1:{port}?grpc_port={grpc_port}&timeout=2"
        tries, backoff = QDRANT_TRIES, QDRANT_BACKOFF_S
    else:
        pytest.importorskip("weaviate", reason="the weaviate extra is not installed")
        uri = f"weaviate://127.0.0.1:{port}?grpc_port={grpc_port}&timeout=2"
        tries, backoff = WEAVIATE_TRIES, WEAVIATE_BACKOFF_S
    start = time.monotonic()
    with pytest.raises(BackendUnavailableError) as info:
        multivec.connect(uri, "unreachable", dim=DIM, fde=SMALL_FDE)
    elapsed = time.monotonic() - start
    # At least the backoff sleeps (so it did retry), at most every try timing out plus them.
    assert backoff - EARLY_S <= elapsed < tries * 2 + backoff + SLACK_S, elapsed
    assert f"127.0.0.1:{port}" in str(info.value)
    assert re.search(f"{tries} (attempts|tries)", str(info.value))


# --- slow ----------------------------------------------------------------------------------------


def test_black_hole_on_connect_raises_unavailable(proxy: FaultProxy) -> None:
    """Milvus: connecting through a black hole gives BackendUnavailableError after 4 timeouts."""
    proxy.black_hole()
    uri = f"milvus://127.0.0.1:{proxy.port}?timeout={FAST_TIMEOUT_S}"
    start = time.monotonic()
    with pytest.raises(BackendUnavailableError, match=f"127.0.0.1:{proxy.port}"):
        multivec.connect(uri, "c", dim=DIM, fde=SMALL_FDE)
    elapsed = time.monotonic() - start
    # Every try waits out its whole timeout: that, plus the sleeps, is the lower bound.
    least = MILVUS_TRIES * FAST_TIMEOUT_S + MILVUS_BACKOFF_S
    assert least - EARLY_S <= elapsed < least + SLACK_S
    assert proxy.accepted >= 1


def test_delayed_server_times_out_then_recovers(proxy: FaultProxy, milvus_server: _Server) -> None:
    """Milvus: replies slower than the timeout give BackendUnavailableError; then it recovers."""
    name = _name("slow")
    ids, vectors, metadata = make_corpus(10)
    # Created directly: a create retried after a timeout is not what this test is about.
    with multivec.connect(milvus_server.uri, name, dim=DIM, fde=SMALL_FDE) as direct:
        direct.upsert(ids, vectors, metadata)
    col = multivec.connect(f"milvus://127.0.0.1:{proxy.port}?timeout={FAST_TIMEOUT_S}", name)
    try:
        proxy.delay(2 * FAST_TIMEOUT_S)
        start = time.monotonic()
        with pytest.raises(BackendUnavailableError, match=f"127.0.0.1:{proxy.port}"):
            col.search(vectors[0], k=3)
        elapsed = time.monotonic() - start
        least = MILVUS_TRIES * FAST_TIMEOUT_S + MILVUS_BACKOFF_S
        assert least - EARLY_S <= elapsed < least + SLACK_S
        proxy.pass_through()
        assert col.search(vectors[0], k=1).ids == [ids[0]]
        assert col.count() == 10
    finally:
        proxy.pass_through()
        col.drop()
        col.close()


def test_qdrant_black_hole_raises_unavailable() -> None:
    """Qdrant: a server that accepts but never answers gives BackendUnavailableError in time."""
    pytest.importorskip("qdrant_client", reason="the qdrant extra is not installed")
    with FaultProxy(free_port()) as hole:
        hole.black_hole()
        uri = f"qdrant://127.0.0.1:{hole.port}?grpc_port={hole.port}&timeout=1"
        start = time.monotonic()
        with pytest.raises(BackendUnavailableError, match=f"127.0.0.1:{hole.port}"):
            multivec.connect(uri, "hole", dim=DIM, fde=SMALL_FDE)
        elapsed = time.monotonic() - start
        least = QDRANT_TRIES * 1 + QDRANT_BACKOFF_S
        assert least - EARLY_S <= elapsed < least + SLACK_S
        assert hole.accepted >= 1


# --- drops mid-batch -----------------------------------------------------------------------------


def test_connection_cut_mid_batch_reports_the_exact_split(
    proxy: FaultProxy, milvus_server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection cut inside the 3rd request: written = requests 1-2, unconfirmed = 3rd."""
    monkeypatch.setattr(milvus_module.MilvusBackend, "max_request_bytes", SMALL_REQUEST_BYTES)
    ids, vectors, metadata = make_corpus(40)
    uri = f"milvus://127.0.0.1:{proxy.port}?timeout=2"
    # Measure the requests on the wire: the same upsert into a twin collection (same name
    # length, so the same request sizes), counting the client->server bytes around each request.
    twin = multivec.connect(uri, _name("twin"), dim=DIM, fde=SMALL_FDE)
    measured = _record_requests(twin, proxy)
    proxy.pass_through()
    twin.upsert(ids, vectors, metadata)
    twin.drop()
    twin.close()
    assert len(measured) >= 6, "expected many small requests"
    start_of_third = measured[2][1] - measured[0][1]
    third = measured[2][2] - measured[2][1]
    budget = start_of_third + third // 2

    col = multivec.connect(uri, _name("drop"), dim=DIM, fde=SMALL_FDE)
    requests = _record_requests(col)
    proxy.cut_after(budget)
    with pytest.raises(PartialWriteError) as info:
        col.upsert(ids, vectors, metadata)
    col.close()
    err = info.value
    assert proxy.mode == "refuse", "the proxy never cut the connection"
    assert [r[0] for r in requests] == [m[0] for m in measured[:3]]
    assert err.written == requests[0][0] + requests[1][0]
    assert err.unconfirmed == requests[2][0]
    assert err.not_written == ids[len(err.written) + len(err.unconfirmed) :]
    _assert_partition(err, ids)
    assert isinstance(err.__cause__, BackendUnavailableError)

    direct = multivec.connect(milvus_server.uri, col.name)
    try:
        index = {i: n for n, i in enumerate(ids)}
        pick = [index[i] for i in err.written]
        _assert_stored_exactly(
            direct, err.written, [vectors[n] for n in pick], [metadata[n] for n in pick]
        )
        # The 3rd request was cut half way, so the server cannot have stored any of it.
        assert direct.get(err.unconfirmed + err.not_written) == []
        assert direct.count() == len(err.written)
        direct.upsert(ids, vectors, metadata)
        assert direct.count() == len(ids)
        _assert_stored_exactly(direct, ids, vectors, metadata)
    finally:
        direct.drop()
        direct.close()


def test_server_killed_mid_write_loses_nothing_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL during a multi-request upsert: acknowledged writes survive, the rest is named."""
    monkeypatch.setattr(milvus_module.MilvusBackend, "max_request_bytes", SMALL_REQUEST_BYTES)
    ids, vectors, metadata = make_corpus(60)
    with MilvusLiteServer(str(tmp_path / "data")) as server:
        col = multivec.connect(f"{server.uri}?timeout=2", "crash", dim=DIM, fde=SMALL_FDE)
        requests = _record_requests(col)
        second_started, killed = threading.Event(), threading.Event()
        upsert = col.backend.upsert

        def paced(batch: WriteBatch) -> None:
            # The kill races the 2nd request; from the 3rd on, wait for it, so it always lands.
            if len(requests) == 1:
                second_started.set()
            elif len(requests) > 1:
                killed.wait(10)
            upsert(batch)

        def killer() -> None:
            if second_started.wait(30):
                server.kill()
            killed.set()

        col.backend.upsert = paced  # type: ignore[method-assign]
        thread = threading.Thread(target=killer)
        thread.start()
        try:
            with pytest.raises(PartialWriteError) as info:
                col.upsert(ids, vectors, metadata)
        finally:
            second_started.set()
            thread.join()
            col.close()
        err = info.value
        _assert_partition(err, ids)
        assert len(requests) >= 2, "the first request was acknowledged"
        assert err.written == [i for request in requests[:-1] for i in request[0]]
        assert err.unconfirmed == requests[-1][0], "the failed request is unconfirmed"
        assert err.not_written == ids[len(err.written) + len(err.unconfirmed) :]
        assert isinstance(err.__cause__, BackendUnavailableError)

        server.start()
        direct = multivec.connect(server.uri, "crash")
        try:
            index = {i: n for n, i in enumerate(ids)}
            pick = [index[i] for i in err.written]
            _assert_stored_exactly(
                direct, err.written, [vectors[n] for n in pick], [metadata[n] for n in pick]
            )
            assert direct.get(err.not_written) == []
            direct.upsert(ids, vectors, metadata)
            assert direct.count() == len(ids)
            _assert_stored_exactly(direct, ids, vectors, metadata)
        finally:
            direct.close()


# --- conformance through the server code path ---------------------------------------------------


class TestMilvusOverGrpc(BackendConformance):
    """The conformance suite on ``milvus://`` against Milvus Lite's gRPC server (HNSW index)."""

    @pytest.fixture
    def uri(self, milvus_lite_server: MilvusLiteServer) -> str:
        return milvus_lite_server.uri
