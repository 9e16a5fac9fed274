"""The messages between a node, its isolation helper and the child of each run.

Wire format (``SOCK_SEQPACKET``, so a killed writer never leaves half a record):
- node → helper, control socket: a fork request (the pickled run spec, the run's socket passed
  as a file descriptor) answered by ``{"pid": n}`` or ``{"error": "..."}``;
- child → node, the run's socket: JSON messages in frames ``M`` (more follows) / ``E`` (last);
- helper → node, the run's socket: one frame ``X`` with ``{"status": <wait status>}``;
- node → child, the run's socket: ``C`` + the cancel reason.
"""

from __future__ import annotations

import select

CHUNK = 32 * 1024  # bytes of a JSON message per frame
RECV_SIZE = CHUNK + 64
MORE, END, EXIT, CANCEL = b"M", b"E", b"X", b"C"


def readable(fds: list[int], timeout: float) -> list[int]:
    """Those of ``fds`` that can be read within ``timeout`` seconds. ``poll``, not ``select``:
    a process with more than 1,024 descriptors open (a busy web worker) gets numbers that
    ``select`` refuses."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return [fd for fd, _events in poller.poll(max(0.0, timeout) * 1000)]
