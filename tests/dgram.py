"""Unix datagram sockets in tests: a reader that fell behind."""

from __future__ import annotations

import socket


def fill_queue(path: str) -> list[str]:
    """Datagrams sent to `path` until its queue is full (net.unix.max_dgram_qlen:
    10 here, 512 where systemd's sysctl.d set it), as a reader that fell behind
    leaves it; what was sent. Several senders: each one's own send buffer
    holds ~200 datagrams until they are read; a new sender refused at once
    means the queue itself is full."""
    sent: list[str] = []
    fillers: list[socket.socket] = []
    try:
        while True:
            filler = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
            fillers.append(filler)
            before = len(sent)
            try:
                while True:
                    text = f"X_FILLER={len(sent)}"
                    filler.sendto(text.encode(), path)
                    sent.append(text)
            except BlockingIOError:
                if len(sent) == before:
                    return sent
    finally:
        for filler in fillers:
            filler.close()
