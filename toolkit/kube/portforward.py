"""A local TCP port that pipes each connection to a socket the caller opens (a pod port-forward).

psycopg needs a host and a port; the Kubernetes client gives a socket-like
object. This is the small piece `kubectl port-forward` does, on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
from collections.abc import Callable, Iterator

logger = logging.getLogger(__name__)


def _pipe(a, b) -> None:
    """Copy bytes both ways until either side closes."""
    try:
        while True:
            ready, _, _ = select.select([a, b], [], [], 1.0)
            for src in ready:
                data = src.recv(65536)
                if not data:
                    return
                (b if src is a else a).sendall(data)
    except OSError:
        return
    finally:
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.close()


@contextlib.contextmanager
def local_port(connect: Callable[[], socket.socket]) -> Iterator[tuple[str, int]]:
    """Yield (host, port) on loopback; every connection to it gets its own `connect()` socket."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.5)
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                remote = connect()
            except Exception as exc:  # report and refuse this one connection
                logger.warning("port-forward connection failed: %s", exc)
                client.close()
                continue
            threading.Thread(target=_pipe, args=(client, remote), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=2)
