"""The chaos helpers themselves: the proxy forwards byte-exact and cuts for real, Redis restarts empty."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator

import psycopg
import pytest
import redis

from tests.integration.faults import RedisServer, TcpProxy, free_port

pytestmark = pytest.mark.integration

PG_PORT = 5432


@contextlib.contextmanager
def echo_server() -> Iterator[int]:
    """A tiny threaded echo server on 127.0.0.1: echoes until EOF, then half-closes and closes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    done = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def accept() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        done.set()
        thread.join(timeout=5)
        listener.close()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.settimeout(5)
    return sock


def round_trip(port: int, payload: bytes) -> bytes:
    """Send payload through a fresh connection (from a second thread), half-close, read the echo to EOF."""
    sock = connect(port)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except BaseException as exc:
            errors.append(exc)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    chunks = []
    with sock:
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    sender.join(timeout=10)
    assert not errors, errors
    return b"".join(chunks)


def test_proxy_forwards_cuts_and_comes_back() -> None:
    payload = os.urandom(5 * 1024 * 1024)
    with echo_server() as target_port, TcpProxy("127.0.0.1", target_port) as proxy:
        port = proxy.port
        assert proxy.is_up
        assert round_trip(port, payload) == payload

        held = connect(port)
        held.sendall(b"ping")
        assert held.recv(16) == b"ping"

        proxy.down()
        assert not proxy.is_up
        with pytest.raises(ConnectionRefusedError):
            connect(port).close()
        with contextlib.suppress(ConnectionResetError):  # a reset counts as cut too
            assert held.recv(16) == b""
        held.close()

        proxy.up()
        assert proxy.port == port
        assert round_trip(port, b"again" * 1000) == b"again" * 1000
        assert round_trip(port, payload) == payload


def test_proxy_many_concurrent_connections() -> None:
    payloads = [os.urandom(200_000 + i) for i in range(20)]
    results: dict[int, bytes] = {}
    with echo_server() as target_port, TcpProxy("127.0.0.1", target_port) as proxy:

        def one(i: int) -> None:
            results[i] = round_trip(proxy.port, payloads[i])

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(payloads))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    assert [results.get(i) == p for i, p in enumerate(payloads)] == [True] * len(payloads)


def test_proxy_in_front_of_postgres() -> None:
    try:
        socket.create_connection(("127.0.0.1", PG_PORT), timeout=2).close()
    except OSError:
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432: run scripts/services.sh")
    with TcpProxy("127.0.0.1", PG_PORT) as proxy:
        url = f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres"
        held = psycopg.connect(url, connect_timeout=5, autocommit=True)
        try:
            assert held.execute("select 1").fetchone() == (1,)

            proxy.down()
            with pytest.raises(psycopg.OperationalError):
                held.execute("select 1")
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(url, connect_timeout=5).close()

            proxy.up()
            with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
                assert conn.execute("select 1").fetchone() == (1,)
        finally:
            held.close()


def test_redis_server_restarts_empty_on_the_same_port() -> None:
    with RedisServer() as server:
        port = server.port
        assert server.url(3) == f"redis://127.0.0.1:{port}/3"
        client = redis.Redis.from_url(server.url(), socket_timeout=5)
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        client.set("chaos", "1")
        assert client.get("chaos") == b"1"
        pid = server.pid
        client.close()

        server.restart_empty()
        assert server.port == port
        assert server.pid != pid
        client = redis.Redis.from_url(server.url(), socket_timeout=5)
        assert client.ping()
        assert client.get("chaos") is None
        assert client.dbsize() == 0
        client.close()
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=2, retry=None).ping()


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
