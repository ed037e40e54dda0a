"""runtime.answered: the hand-over's wait for a just-started container's port (no Docker needed)."""

import socket
import time
from contextlib import ExitStack

from toolkit.docker.runtime import answered


def test_a_listening_or_refusing_port_is_answered_at_once():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        t0 = time.monotonic()
        assert answered("127.0.0.1", port, 2.0, 0.02)
    assert answered("127.0.0.1", port, 2.0, 0.02)  # closed now: refused is an answer too
    assert time.monotonic() - t0 < 0.5


def test_a_port_that_drops_syns_is_tried_again_until_the_time_is_up():
    """A listener whose accept queue is full drops new SYNs, as a container whose network is not up
    yet loses them: each try gives up after 0.1 s (not after TCP's 1 s retransmission), and the wait
    ends, unanswered, after the time given."""
    with ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(8):  # fill the queue (never accepted) until a SYN goes unanswered
            client = stack.enter_context(socket.socket())
            client.settimeout(0.2)
            try:
                client.connect(("127.0.0.1", port))
            except TimeoutError:
                break
        else:
            raise AssertionError("the accept queue never filled")
        t0 = time.monotonic()
        assert not answered("127.0.0.1", port, 0.5, 0.02)
        assert 0.5 <= time.monotonic() - t0 < 1.0
