"""The test helper ``free_ports``: a port it returns stays taken for other binds until the
server it is meant for binds it (a released port went to another test's server in CI)."""

from __future__ import annotations

import socket

from tests.servers import free_ports


def test_a_free_port_is_refused_to_plain_binds_and_given_to_a_server() -> None:
    ports = free_ports(3)
    assert len(set(ports)) == 3
    for port in ports:
        plain = socket.socket()
        try:
            # a port merely bound and released would be free here: this bind is what a
            # server without SO_REUSEADDR, or the kernel's choice for port 0, runs into
            try:
                plain.bind(("127.0.0.1", port))
            except OSError:
                pass
            else:
                raise AssertionError(f"port {port} was not reserved")
        finally:
            plain.close()
        with socket.create_server(("127.0.0.1", port)) as server:  # SO_REUSEADDR, as servers
            assert server.getsockname()[1] == port
