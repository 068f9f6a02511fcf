"""Loopback networking helpers shared by the embedded stack, the trainer's torchrun launcher and tests."""
from __future__ import annotations

import random
import socket
from pathlib import Path

# Listening ports are picked below the kernel's ephemeral range: a port from inside it, free when
# picked, can be taken by any process's outgoing connection before the service binds it (CI saw
# a service's metrics port go that way).
LOWEST_PICKED_PORT = 20000

# Ports this process has handed out. A picked port is free but not held until its service binds
# it, so a second pick in the same burst (a stack picks two ports per service before starting
# any) could return it again: CI saw an evaluator fail to bind the port another service's pick
# had already been given.
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now and never before returned by this process, outside the
    ephemeral range when the kernel says where that is (else one the OS picks)."""
    low = _ephemeral_low()
    if low > LOWEST_PICKED_PORT + 100:
        for _ in range(200):
            port = random.randrange(LOWEST_PICKED_PORT, low)
            if port not in _handed_out and _bindable(host, port):
                _handed_out.add(port)
                return port
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind((host, 0))
            picked: int = sock.getsockname()[1]
        if picked not in _handed_out:
            _handed_out.add(picked)
            return picked
    raise OSError(f"no free port on {host} that this process has not handed out already")


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def advertised_address(bound_host: str, port: int, advertise: str = "") -> str:
    """host:port where others reach this process: `advertise` when set, else the bound host (this
    machine's name for a wildcard)."""
    host = socket.gethostname() if bound_host in ("0.0.0.0", "::", "") else bound_host
    return advertise or f"{host}:{port}"
