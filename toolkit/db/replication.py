"""Can a server be cloned by pg_basebackup? The role, wal_level, wal senders, pg_hba.conf.

Asked by both rehearsals (Docker: the clone container on the server's network; Kubernetes:
a pod on the pod network) before anything is created, so a missing permission is a refusal
with the exact line to add, not a failed clone.
"""

from __future__ import annotations

import ipaddress
import re

from psycopg import sql

from toolkit.db.sql import Server


def replication_problems(
    server: Server, source_ip: str, *, network: str = "the container network", address: str = "samenet"
) -> list[str]:
    """What keeps pg_basebackup from connecting: the role, wal_level, wal senders, pg_hba.conf.

    `network`/`address` word the pg_hba.conf advice (Docker: samenet; Kubernetes: the pod CIDR)."""
    problems = []
    with server.connect("postgres") as conn:
        can, name = conn.execute(
            "SELECT rolreplication OR rolsuper, rolname FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        if not can:
            alter = sql.SQL("ALTER ROLE {} REPLICATION").format(sql.Identifier(name)).as_string(None)
            problems.append(f"role {name} may not replicate: {alter} (or give a role that may)")
        if conn.execute("SHOW wal_level").fetchone()[0] == "minimal":
            problems.append("wal_level is minimal: set wal_level = replica and restart the server")
        if int(conn.execute("SHOW max_wal_senders").fetchone()[0]) < 1:
            problems.append("max_wal_senders is 0: set it to at least 2 and restart the server")
        rules = conn.execute(
            "SELECT type, user_name, address, netmask FROM pg_hba_file_rules "
            "WHERE error IS NULL AND 'replication' = ANY(database) AND type IN ('host', 'hostnossl')"
        ).fetchall()
        method = _password_method(conn, name)
    if not any(
        _hba_covers(kind, users, address, mask, name, source_ip) for kind, users, address, mask in rules
    ):
        problems.append(
            f"pg_hba.conf has no `host replication` line for {name} from {network}: add "
            f"`host replication {hba_user(name)} {address} {method}` to pg_hba.conf, then SELECT pg_reload_conf()"
        )
    return problems


def hba_user(name: str) -> str:
    """A role name as a pg_hba.conf field: double-quoted unless it is a plain lower-case name."""
    return name if re.fullmatch(r"[a-z_][a-z0-9_]*", name) and name != "all" else f'"{name}"'


def _password_method(conn, role: str) -> str:
    """The auth method the role's network logins already use (so its stored password fits):
    scram-sha-256 cannot check an md5-stored password, as PostgreSQL 13 images store them."""
    row = conn.execute(
        "SELECT auth_method FROM pg_hba_file_rules WHERE error IS NULL AND type LIKE 'host%%' "
        "AND NOT 'replication' = ANY(database) AND user_name && ARRAY['all', %s]::text[] "
        "ORDER BY line_number LIMIT 1",
        (role,),
    ).fetchone()
    if row and row[0] in ("md5", "scram-sha-256"):
        return row[0]
    encryption = conn.execute("SHOW password_encryption").fetchone()[0]
    return "scram-sha-256" if encryption == "scram-sha-256" else "md5"


def _hba_covers(kind, users, address, mask, role, source_ip) -> bool:
    if not (set(users or []) & {"all", role}):
        return False
    if address in ("all", "samenet"):
        return True
    try:
        net = ipaddress.ip_network(f"{address}/{mask}" if mask else address, strict=False)
        # the clone container gets an address on the server's own network
        return ipaddress.ip_network(f"{source_ip}/16", strict=False).overlaps(net)
    except (ValueError, TypeError):
        return False
