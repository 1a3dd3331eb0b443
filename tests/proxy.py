"""A TCP proxy on loopback for tests of clients whose connection breaks."""

from __future__ import annotations

import contextlib
import socket
import threading


class DroppingProxy:
    """A TCP proxy on a loopback port that closes its first `drops`
    connections at once and forwards the later ones to `target`."""

    def __init__(self, target: tuple[str, int], drops: int) -> None:
        self._target = target
        self._drops_left = drops
        self.dropped = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._drops_left > 0:
                self._drops_left -= 1
                self.dropped += 1
                client.close()
                continue
            server = socket.create_connection(self._target)
            self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes from `source` to `sink` until either side closes."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
