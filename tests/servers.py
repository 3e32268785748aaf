"""Real servers on loopback for tests: an ASGI app served by uvicorn in a background thread."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn


def free_port() -> int:
    """A free loopback port, reserved for about a minute (see ``free_ports``)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports, each reserved for about a minute: a server that
    binds it with ``SO_REUSEADDR`` (uvicorn, asyncio, Postgres, Redis, Go's net package all
    do) gets it, while the kernel hands it to no ``bind`` to port 0 meanwhile.

    A port merely bound and released could go to another test's server at once, and a
    gateway's start-up (imports, a 5 s check of a hung database) left seconds for that: its
    own bind then failed, and the other server answered its /readyz and its calls (CI saw a
    call cut off when that other test ended). The reservation is a connection accepted and
    closed on the port first, whose TIME_WAIT keeps the port taken for ``bind(0)`` (checked:
    19,800 binds to port 0 with 50 ports reserved got none of them); a listener with
    ``SO_REUSEADDR`` may still bind it. A server that binds without ``SO_REUSEADDR`` is
    refused the port for that minute."""
    return [_reserved_port() for _ in range(count)]


def _reserved_port() -> int:
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = int(listener.getsockname()[1])
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listener.accept()
            accepted.close()  # the side that closes first keeps TIME_WAIT: this one, on port
            client.recv(1)  # its FIN has arrived; the client's close then completes the pair
    return port


def wait_ready(url: str, proc: subprocess.Popen[bytes], *, timeout_s: float = 30.0) -> None:
    """Wait until the server ``proc`` answers ``url``/readyz with 200; fail if it exits first or
    takes longer than ``timeout_s`` (its captured output, if any, in the message)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url + "/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            output = proc.stdout.read().decode() if proc.stdout else ""
            raise AssertionError(f"the server exited with {proc.returncode}: {output}")
        assert time.monotonic() < deadline, f"{url} did not become ready in {timeout_s:.0f}s"
        time.sleep(0.1)


@contextmanager
def serve(app: Any, *, port: int | None = None) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 (lifespan included) and yield its base URL until exit."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on", loop="asyncio", http="h11", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server failed to start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def stop_processes(procs: list[subprocess.Popen[bytes]], *, timeout_s: float = 30) -> None:
    """SIGTERM every process still running, wait for each (killed past ``timeout_s``)."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
