"""The no-op task every system under test runs: its first line tells the bench client, over a
UDP datagram on loopback, when it started. The same function body serves every system."""

from __future__ import annotations

import socket
import time

_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def report(run_key: str, port: int) -> None:
    """Send ``"<run_key> <time.time()>"`` to the bench client."""
    _sock.sendto(f"{run_key} {time.time():.6f}".encode(), ("127.0.0.1", port))
