"""The messages between a node, its isolation helper and the child of each run.

Wire format (``SOCK_SEQPACKET``, so a killed writer never leaves half a record):
- node → helper, control socket: a fork request (the pickled run spec, the run's socket passed
  as a file descriptor) answered by ``{"pid": n}`` or ``{"error": "..."}``;
- child → node, the run's socket: JSON messages in frames ``M`` (more follows) / ``E`` (last);
- helper → node, the run's socket: one frame ``X`` with ``{"status": <wait status>}``;
- node → child, the run's socket: ``C`` + the cancel reason.
"""

from __future__ import annotations

CHUNK = 32 * 1024  # bytes of a JSON message per frame
RECV_SIZE = CHUNK + 64
MORE, END, EXIT, CANCEL = b"M", b"E", b"X", b"C"
