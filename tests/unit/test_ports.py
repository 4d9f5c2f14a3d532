"""The tests' ports (support.proc.free_port): chosen by the kernel and held
until the test run ends, so no other process gets them between the test
choosing one and its server binding it; the server still can."""
from __future__ import annotations

import errno
import socket

import pytest

from support.proc import free_port, hold_port


def test_a_held_port_is_refused_to_other_binds_and_connects_are_refused():
    port = free_port()
    with socket.socket() as other:
        with pytest.raises(OSError) as e:
            other.bind(("127.0.0.1", port))
        assert e.value.errno == errno.EADDRINUSE
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_server_binding_with_reuseaddr_takes_the_port_over():
    port = free_port()
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen(4)
        with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
            a, _ = server.accept()
            a.sendall(b"x")
            assert c.recv(1) == b"x"
            a.close()


def test_ports_are_never_handed_out_twice():
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == 20


def test_hold_port_fails_on_a_port_in_use():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        assert not hold_port("127.0.0.1", busy.getsockname()[1])
