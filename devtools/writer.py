"""A bounded writer for measuring a write pause from the client's side (tests and scripts/bench).

It talks only to a port published on 127.0.0.1, a few hundred writes a second at most, and stops
by itself after a bounded count and time. Every acknowledged write is recorded with its time, so
the longest gap between two acknowledged writes is the pause a client saw.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

# The table the writer fills: one row per write, the server's version recorded by the server itself.
WRITES_TABLE = "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, n int UNIQUE NOT NULL, side text)"


@dataclass
class Writer:
    """Inserts (and, with `notes`, updates a note) through 127.0.0.1:port; records every acknowledged write."""

    port: int
    user: str
    password: str = field(repr=False)
    dbname: str = ""  # the user's name when empty (the image's POSTGRES_DB default)
    table: str = "writes"
    notes: bool = True  # every 10th write also updates a row of `notes` (a table without primary key)
    limit: int = 20000
    seconds: float = 240.0
    interval: float = 0.004  # the sleep between two writes
    # After a failed write or connect: a pooled client retries at once, a few times a 10 ms apart;
    # 0.05 s here made the pause seen up to 0.05 s longer than the server's. The connect timeout
    # is libpq's and psycopg's smallest (2 s): a try that hangs (Docker's port proxy reaching the
    # new container before its network is up: ~1 s) is waited for, as a real client does.
    retry: float = 0.01
    acked: dict[int, float] = field(default_factory=dict)
    errors: int = 0
    sides: dict[int, str] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        n, conn, start = 0, None, time.monotonic()
        insert = sql.SQL(
            "INSERT INTO {} (n, side) VALUES (%s, current_setting('server_version')) RETURNING side"
        ).format(sql.Identifier(self.table))
        while not self.stop.is_set() and n < self.limit and time.monotonic() - start < self.seconds:
            try:
                if conn is None:
                    conn = psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                                           dbname=self.dbname or self.user, autocommit=True, connect_timeout=2)  # fmt: skip
                n += 1
                self.sides[n] = conn.execute(insert, (n,)).fetchone()[0]
                if self.notes and n % 10 == 0:
                    conn.execute(
                        "UPDATE notes SET body = body || '.' WHERE body = 'note 7' OR body LIKE 'note 7.%%'"
                    )
                self.acked[n] = time.monotonic()
                time.sleep(self.interval)
            except psycopg.Error:
                self.errors += 1
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(self.retry)
        if conn is not None:
            conn.close()

    def gaps(self) -> list[float]:
        times = sorted(self.acked.values())
        return [b - a for a, b in itertools.pairwise(times)]

    def longest_gap(self, after: float = 0.0) -> tuple[float, float]:
        """(seconds, start) of the longest gap between acknowledged writes, among those after `after`."""
        times = sorted(t for t in self.acked.values() if t >= after)
        pairs = [(b - a, a) for a, b in itertools.pairwise(times)]
        return max(pairs, default=(0.0, 0.0))


def start(writer: Writer, warmup: float = 1.0) -> threading.Thread:
    """The writer in a daemon thread, given `warmup` seconds to make its first writes."""
    thread = threading.Thread(target=writer.run, daemon=True)
    thread.start()
    time.sleep(warmup)
    return thread


def stop(writer: Writer, thread: threading.Thread) -> None:
    writer.stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the writer did not stop"
