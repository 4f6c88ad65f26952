"""Loopback ports: pick free ones, and say clearly when a requested one is taken."""

from __future__ import annotations

import contextlib
import socket

from ttsrec.errors import UserError


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free right now (another process may still take it before we do)."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free ports: every socket stays bound until all are picked, so the OS cannot
    hand the same port out twice (one server's http and metrics ports once came out equal)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in socks:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in socks]


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # like tritonserver does
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def check_ports(host: str, ports: dict[str, int]) -> None:
    """Raise a UserError naming the first busy port among {"http": 8000, ...}."""
    for name, port in ports.items():
        if not 0 < port < 65536:
            raise UserError(f"--{name}-port {port} is not a valid port (1-65535)")
        if not port_is_free(host, port):
            raise UserError(f"{name} port {port} on {host} is already in use "
                            f"(another server running? pick another --{name}-port)")
