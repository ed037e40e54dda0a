"""How steps reach a server: a factory of psycopg connections per database.

Connection parameters (which may hold a password) stay inside this object:
they are never logged, printed or put in an error message.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from toolkit.errors import PgleapError

# What a server that died or refused under a step raises: the CLI maps it to one line and exit 1
# (and may restore the old cluster) without importing psycopg itself.
DatabaseError = psycopg.Error


@dataclass
class Server:
    """A reachable server: host (or socket directory), port, user; password kept private."""

    host: str
    port: int
    user: str
    password: str | None = field(default=None, repr=False)
    label: str = "server"

    def _params(self, dbname: str) -> dict:
        params = {"host": self.host, "port": self.port, "user": self.user, "dbname": dbname}
        if self.password:
            params["password"] = self.password
        return params

    @contextmanager
    def connect(self, dbname: str = "postgres", *, autocommit: bool = True) -> Iterator[psycopg.Connection]:
        try:
            conn = psycopg.connect(**self._params(dbname), autocommit=autocommit, connect_timeout=10)
        except psycopg.OperationalError as exc:
            # psycopg's message names host/user but never the password.
            raise PgleapError(f"cannot connect to database {dbname!r} on the {self.label}: {exc}") from None
        try:
            yield conn
        finally:
            conn.close()

    def query(self, dbname: str, statement: str | sql.Composable, params: tuple = ()) -> list[tuple]:
        with self.connect(dbname) as conn:
            return conn.execute(statement, params).fetchall()

    def wait_ready(self, timeout: float = 60.0, poll: float = 0.1) -> None:
        """Wait until the server accepts a real connection (not just a socket); `poll` between tries."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(**self._params("postgres"), connect_timeout=3) as conn:
                    conn.execute("SELECT 1")
                    return
            except psycopg.OperationalError as exc:
                last = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                time.sleep(poll)
        raise PgleapError(f"the {self.label} did not accept connections within {timeout:.0f} s: {last}")

    def databases(self) -> list[str]:
        """Databases that accept connections (template0 never does)."""
        rows = self.query("postgres", "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname")
        return [r[0] for r in rows]


def ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)
