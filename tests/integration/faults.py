"""Fault injection for chaos tests with real sockets and real processes, nothing mocked.

`TcpProxy` is a small in-process TCP forwarder (like toxiproxy, but in-process) that sits between a client and a
real service: `down()` refuses new connections and cuts every open one, `up()` listens again on the same port.
`RedisServer` runs a private `redis-server` process that `restart_empty()` kills with SIGKILL and brings back,
empty, on the same port. Both use only the standard library plus the `redis` client for health checks.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

import redis

HOST = "127.0.0.1"
_POLL = 0.2  # the selector timeout: the longest a thread goes without checking its stop flag
_CHUNK = 256 * 1024
_MAX_BUFFERED = 1024 * 1024  # per direction: stop reading the sender while the receiver lags this far behind


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _quiet_shutdown(sock: socket.socket | None, how: int = socket.SHUT_RDWR) -> None:
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.shutdown(how)


def _quiet_close(sock: socket.socket | None) -> None:
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.close()


class _Link:
    """One forwarded connection: the accepted client socket and the socket to the target."""

    def __init__(self, proxy: TcpProxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: socket.socket | None = None
        self.lock = threading.Lock()
        self.cut_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"tcpproxy-{proxy.port}-link", daemon=True)

    def cut(self) -> None:
        """Stop forwarding: shut both sockets down so the thread and both peers see it at once."""
        with self.lock:
            self.cut_flag.set()
            _quiet_shutdown(self.client)
            _quiet_shutdown(self.upstream)

    def close(self) -> None:
        with self.lock:
            self.cut_flag.set()
            _quiet_close(self.client)
            _quiet_close(self.upstream)

    def _run(self) -> None:
        try:
            try:
                upstream = socket.create_connection((self.proxy.target_host, self.proxy.target_port), timeout=5)
            except OSError:
                return  # the target is down: the client sees its connection closed
            with self.lock:
                self.upstream = upstream
                if self.cut_flag.is_set():
                    return
            for sock in (self.client, upstream):
                sock.setblocking(False)
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._pump(self.client, upstream)
        finally:
            self.close()
            self.proxy._forget(self)

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        """Move bytes both ways until both sides have sent EOF and everything is delivered, or an error."""
        ends = (client, upstream)
        bufs = {client: bytearray(), upstream: bytearray()}  # bytes waiting to be written TO that socket
        eof = {client: False, upstream: False}  # that socket has sent EOF
        shut_wr = {client: False, upstream: False}  # EOF has been passed on to that socket
        registered: dict[socket.socket, int] = {}
        with selectors.DefaultSelector() as sel:
            while not self.cut_flag.is_set():
                for sock in ends:
                    other = upstream if sock is client else client
                    mask = 0
                    if not eof[sock] and len(bufs[other]) < _MAX_BUFFERED:
                        mask |= selectors.EVENT_READ
                    if bufs[sock]:
                        mask |= selectors.EVENT_WRITE
                    old = registered.get(sock, 0)
                    if mask == old:
                        continue
                    if not mask:
                        sel.unregister(sock)
                        del registered[sock]
                    elif not old:
                        sel.register(sock, mask)
                        registered[sock] = mask
                    else:
                        sel.modify(sock, mask)
                        registered[sock] = mask
                if not registered:
                    return  # both sides sent EOF and every byte was delivered
                try:
                    for key, events in sel.select(_POLL):
                        sock = key.fileobj
                        assert isinstance(sock, socket.socket)
                        other = upstream if sock is client else client
                        if events & selectors.EVENT_WRITE and bufs[sock]:
                            with contextlib.suppress(BlockingIOError, InterruptedError):
                                sent = sock.send(bufs[sock])
                                del bufs[sock][:sent]
                        if events & selectors.EVENT_READ:
                            try:
                                data = sock.recv(_CHUNK)
                            except (BlockingIOError, InterruptedError):
                                continue
                            if data:
                                bufs[other] += data
                            else:
                                eof[sock] = True
                    for sock in ends:
                        other = upstream if sock is client else client
                        if eof[other] and not bufs[sock] and not shut_wr[sock]:
                            sock.shutdown(socket.SHUT_WR)  # pass a half-close on once its data is out
                            shut_wr[sock] = True
                except OSError:
                    return  # a reset or a broken pipe on either side: drop the whole connection


class TcpProxy:
    """A thread-based TCP forwarder on 127.0.0.1 whose service can be taken down and brought back."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._stop_accepting = threading.Event()

    @property
    def is_up(self) -> bool:
        """Whether the proxy is listening now."""
        return self._acceptor is not None

    @property
    def address(self) -> tuple[str, int]:
        return HOST, self.port

    def start(self) -> TcpProxy:
        """Bind a free port (kept for the proxy's whole life) and start forwarding."""
        if self.port:
            raise RuntimeError("TcpProxy already started")
        self._listen(0)
        return self

    def up(self) -> None:
        """Listen again on the same port; a no-op while up."""
        if not self.port:
            raise RuntimeError("TcpProxy.up() before start()")
        if self.is_up:
            return
        self._listen(self.port)

    def down(self) -> None:
        """Refuse new connections (ECONNREFUSED) and cut every open one on both sides."""
        acceptor = self._acceptor
        if acceptor is not None:
            self._stop_accepting.set()
            acceptor.join()  # it closes the listener on its way out
            self._acceptor = None
        with self._lock:
            links = list(self._links)
        for link in links:
            link.cut()
        for link in links:
            link.thread.join(timeout=5)
            link.close()

    def stop(self) -> None:
        """Take the service down for good and wait for the threads."""
        self.down()

    def __enter__(self) -> TcpProxy:
        if not self.port:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "up" if self.is_up else "down"
        return f"TcpProxy({HOST}:{self.port} -> {self.target_host}:{self.target_port}, {state})"

    def _listen(self, port: int) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 5
        while True:
            try:
                listener.bind((HOST, port))
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    listener.close()
                    raise
                time.sleep(0.1)
        listener.listen(128)
        listener.setblocking(False)
        self.port = int(listener.getsockname()[1])
        self._listener = listener
        self._stop_accepting = threading.Event()
        self._acceptor = threading.Thread(
            target=self._accept_loop,
            args=(listener, self._stop_accepting),
            name=f"tcpproxy-{self.port}-accept",
            daemon=True,
        )
        self._acceptor.start()

    def _accept_loop(self, listener: socket.socket, stop: threading.Event) -> None:
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(listener, selectors.EVENT_READ)
                while not stop.is_set():
                    if not sel.select(_POLL):
                        continue
                    while not stop.is_set():
                        try:
                            client, _ = listener.accept()
                        except (BlockingIOError, InterruptedError):
                            break
                        except OSError:
                            break  # e.g. ECONNABORTED: the client gave up already
                        link = _Link(self, client)
                        with self._lock:
                            self._links.add(link)
                        link.thread.start()
        finally:
            listener.close()  # pending, unaccepted connections are reset with it

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)


class RedisServer:
    """A private `redis-server` process on a free port, without persistence, in its own temp dir."""

    def __init__(self, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run scripts/services.sh (it installs Redis)")
        self.binary = binary
        self.port = port or 0
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://{HOST}:{self.port}/{db}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 15) -> RedisServer:
        """Start the server and wait until it answers PING."""
        if self._proc is not None:
            raise RuntimeError("RedisServer already started")
        self._dir = Path(tempfile.mkdtemp(prefix="chaos-redis-"))
        fixed = bool(self.port)
        for _ in range(5):
            if not fixed:
                self.port = free_port()
            try:
                self._spawn(timeout)
                return self
            except _PortTaken:
                if fixed:
                    break
        raise RuntimeError(f"redis-server could not bind a port:\n{self._log_tail()}")

    def restart_empty(self, timeout: float = 15) -> None:
        """SIGKILL the server and start a new, empty one on the same port."""
        if self._proc is None:
            raise RuntimeError("RedisServer not started")
        self._kill()
        assert self._dir is not None
        for stale in self._dir.glob("*.rdb"):
            stale.unlink()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._spawn(max(deadline - time.monotonic(), 1.0))
                return
            except _PortTaken:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server could not bind port {self.port} again:\n{self._log_tail()}"
                    ) from None
                time.sleep(0.2)

    def stop(self) -> None:
        """Kill the server and remove its temp dir."""
        if self._proc is not None:
            self._kill()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> RedisServer:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RedisServer({self.url()}, pid={self.pid})"

    @property
    def _log(self) -> Path:
        assert self._dir is not None
        return self._dir / "redis.log"

    def _log_tail(self) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"

    def _spawn(self, timeout: float) -> None:
        assert self._dir is not None
        self._log.unlink(missing_ok=True)
        cmd = [
            self.binary,
            "--port", str(self.port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._dir),
            "--logfile", str(self._log),
            "--daemonize", "no",
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        client = redis.Redis(host=HOST, port=self.port, socket_timeout=2, socket_connect_timeout=2)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self._proc.poll() is not None:
                    self._proc = None
                    if "in use" in self._log_tail():
                        raise _PortTaken
                    raise RuntimeError(f"redis-server exited at start:\n{self._log_tail()}")
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    self._kill()
                    raise RuntimeError(f"redis-server did not answer PING within {timeout:.0f} s:\n{self._log_tail()}")
                time.sleep(0.1)
        finally:
            client.close()

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)


class _PortTaken(Exception):
    """redis-server exited because its port was in use."""
