"""A TCP proxy a test can freeze: a database that accepts connections and never answers.

``FreezeProxy(port)`` forwards 127.0.0.1:<its port> to 127.0.0.1:``port`` in a thread per
direction. ``freeze()`` stops forwarding: connections stay open, new ones are accepted (and held
unconnected upstream), bytes sent either way wait; ``thaw()`` resumes; ``drop()`` closes every
connection held so far (a process killed while frozen leaves its connections behind).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading

_CHUNK = 65536
_TICK_S = 0.02


class FreezeProxy:
    def __init__(self, upstream_port: int) -> None:
        self._upstream = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._running = threading.Event()
        self._running.set()
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def url(self, template: str) -> str:
        """``template`` (a database URL) with its port replaced by the proxy's."""
        head, _, tail = template.rpartition(f":{self._upstream}/")
        return f"{head}:{self.port}/{tail}"

    def freeze(self) -> None:
        self._forwarding.clear()

    def thaw(self) -> None:
        self._forwarding.set()

    def drop(self) -> None:
        """Close every connection made so far."""
        with self._lock:
            held, self._sockets = self._sockets, []
        for sock in held:
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        with self._lock:  # after this, ``_keep`` closes what it is given
            self._running.clear()
        self._forwarding.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.drop()

    def _accept(self) -> None:
        while self._running.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._keep(client):
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _keep(self, *sockets: socket.socket) -> bool:
        """Hold ``sockets`` for ``drop``; closed at once once the proxy is closing (one accepted
        or connected as ``close`` ran was left to the collector: a ResourceWarning that failed
        whichever test was running then)."""
        with self._lock:
            if self._running.is_set():
                self._sockets.extend(sockets)
                return True
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
        return False

    def _connect(self, client: socket.socket) -> None:
        while not self._forwarding.wait(_TICK_S):  # frozen: accepted, never answered
            if not self._running.is_set():
                return  # ``close`` closes the client (``drop``)
        try:
            upstream = socket.create_connection(("127.0.0.1", self._upstream))
        except OSError:
            with contextlib.suppress(OSError):
                client.close()
            return
        if not self._keep(upstream):
            return
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while self._running.is_set():
                if not self._forwarding.wait(_TICK_S):
                    continue
                readable, _, _ = select.select([source], [], [], _TICK_S)
                if not readable:
                    continue
                data = source.recv(_CHUNK)
                if not data:
                    break
                while not self._forwarding.is_set() and self._running.is_set():
                    self._forwarding.wait(_TICK_S)  # frozen mid-message: hold the bytes
                sink.sendall(data)
        except (OSError, ValueError):  # ValueError: select() on a socket ``drop`` closed
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
