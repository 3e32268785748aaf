"""Real servers on loopback for tests: an ASGI app served by uvicorn in a background thread."""

from __future__ import annotations

import asyncio
import contextlib
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
    """A free loopback port (released: a later ``free_port`` may return it again)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: each is held until all are chosen (one at a time, the
    kernel may hand out a port it just released, and two servers then race for it)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


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
