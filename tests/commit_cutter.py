"""A TCP proxy in front of PostgreSQL that loses one commit's acknowledgement.

Services under test connect to the proxy instead of the server. Once a test
arms it with a piece of SQL, the first connection that sends that SQL has its
next COMMIT forwarded to the server; the proxy then waits for the server's
reply, so the transaction is committed, and closes the client's side of the
connection without passing the reply on. The service sees its connection
drop while COMMIT was on its way, as when a network or a server failover
loses the acknowledgement. Only one commit is cut per arming; every other
byte passes unchanged.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

#: The simple-query message that psycopg sends to commit a transaction.
COMMIT_MESSAGE = b"Q\x00\x00\x00\x0bCOMMIT\x00"


class CommitCutter:
    """A proxy from a loopback port to `target` (host, port)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._marker: bytes | None = None
        self.cut = threading.Event()
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, marker: bytes) -> None:
        """Cut the next COMMIT of the first connection that sends `marker`."""
        with self._lock:
            self._marker = marker
            self.cut.clear()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _close(sock)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._target)
            with self._lock:
                self._sockets += [client, server]
            _Connection(self, client, server).start()

    def _claim(self, data: bytes) -> bool:
        """Return whether this connection takes the armed cut."""
        with self._lock:
            if self._marker is None or self._marker not in data:
                return False
            self._marker = None
            return True


class _Connection:
    def __init__(self, cutter: CommitCutter, client, server) -> None:
        self._cutter = cutter
        self._client = client
        self._server = server
        self._cutting = False
        self._committed = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._upstream, daemon=True).start()
        threading.Thread(target=self._downstream, daemon=True).start()

    def _upstream(self) -> None:
        claimed = False
        try:
            while data := self._client.recv(65536):
                claimed = claimed or self._cutter._claim(data)
                if claimed and COMMIT_MESSAGE in data:
                    self._cutting = True
                    self._server.sendall(data)
                    # The server replies once it has committed.
                    self._committed.wait(10)
                    self._cutter.cut.set()
                    break
                self._server.sendall(data)
        except OSError:
            pass
        _close(self._client)
        _close(self._server)

    def _downstream(self) -> None:
        try:
            while data := self._server.recv(65536):
                if self._cutting:
                    self._committed.set()
                    break
                self._client.sendall(data)
        except OSError:
            pass
        self._committed.set()
        if not self._cutting:
            _close(self._client)


def _close(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@contextmanager
def cutting_proxy(url: str) -> Iterator[tuple[CommitCutter, str]]:
    """Run a cutter in front of the server of a PostgreSQL URL.

    Yields the cutter and the URL that goes through it.
    """
    scheme, rest = url.split("://", 1)
    credentials, location = rest.rsplit("@", 1)
    address, database = location.split("/", 1)
    host, port = address.rsplit(":", 1)
    cutter = CommitCutter((host, int(port)))
    try:
        yield cutter, f"{scheme}://{credentials}@127.0.0.1:{cutter.port}/{database}"
    finally:
        cutter.close()
