"""Loopback port picking: the embedded stack picks every service's ports before it starts any."""
from __future__ import annotations

import socket

from openautoglm.common.net import free_port


def test_a_burst_of_picks_never_hands_out_the_same_port_twice():
    """Picked ports are not held until their service binds them, so a repeat inside one burst would
    make one service fail to bind (CI saw exactly that); 500 picks must all differ and all bind."""
    picked = [free_port() for _ in range(500)]
    assert len(set(picked)) == len(picked)
    for port in picked[:20]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
