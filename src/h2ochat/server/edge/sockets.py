"""The server's sockets: listening on an address, the open-file limit that the connections need,
and dropping a connection whose client stopped reading."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct

__all__ = ["BACKLOG", "RESERVED_FILES", "SLACK", "bind", "drop", "fit_open_files"]

log = logging.getLogger("h2ochat.server.edge.sockets")

BACKLOG = 128  # the listen() backlog, aiohttp's
# Descriptors kept free beyond the client connections: the database, upstream
# engines, log files, the listening sockets.
RESERVED_FILES = 64
# Sockets beyond the cap: connections just evicted, whose descriptors close on the
# next turn of the event loop, and the new ones that evicted them.
SLACK = 16

_NO_LINGER = struct.pack("ii", 1, 0)  # struct linger {on, 0 seconds}: close with a reset


def drop(transport: asyncio.Transport) -> None:
    """Close a connection at once, throwing away what its client has not taken.

    ``transport.close()`` waits until the unsent data is delivered, which a client that stopped
    reading never lets happen: the socket stays open for good. ``abort()`` frees the descriptor, but
    the kernel would still keep the socket and a full send buffer, trying to deliver, for minutes;
    with data left unsent, the close is a reset (no linger), and the kernel lets go of it too.
    """
    client = transport.get_extra_info("socket")
    if client is not None and transport.get_write_buffer_size() > 0:
        with contextlib.suppress(OSError):
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _NO_LINGER)
    transport.abort()


def fit_open_files(max_connections: int) -> int:
    """Raise the soft open-file limit towards the hard one for ``max_connections``; the cap that fits.

    Under a limit too low even so (``ulimit -n 256``), the cap shrinks to what
    fits: evicting a slow connection beats failing ``accept`` with EMFILE.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows: no such limit
        return max_connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    reserve = _files_in_use() + RESERVED_FILES
    needed = max_connections + SLACK + reserve
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return max_connections
    raised = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    if raised > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            log.info("raised the open-file limit from %d to %d for max_connections=%d", soft, raised, max_connections)
            soft = raised
    if soft >= needed:
        return max_connections
    cap = max(1, soft - reserve - SLACK)
    log.warning(
        "the open-file limit (%d, hard limit %d) leaves room for %d connections, not max_connections=%d; "
        "raise it (ulimit -n) to allow more",
        soft,
        hard,
        cap,
        max_connections,
    )
    return cap


def _files_in_use() -> int:
    for directory in ("/proc/self/fd", "/dev/fd"):
        with contextlib.suppress(OSError):
            return len(os.listdir(directory))
    return 0


def bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address of ``host``, as ``loop.create_server`` binds them."""
    addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    listeners: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(addresses):
            listener = socket.socket(family, kind, proto)
            listeners.append(listener)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # each family on its own socket
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listener.bind(address)
            listener.listen(BACKLOG)
            listener.setblocking(False)
    except OSError:
        for listener in listeners:
            listener.close()
        raise
    return listeners
